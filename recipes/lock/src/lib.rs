//! `lock`: an exclusive, FIFO lock with fencing tokens, to show how parking works.
//!
//! | function | arguments | reply |
//! | --- | --- | --- |
//! | `acquire` | `{name}` | `{token}` at once if the lock is free, else the call is parked and replied `{token}` when it is this caller's turn |
//! | `release` | `{name}` | nil; the oldest waiting `acquire` of `name` gets the lock. Fails unless the caller holds it |
//! | `holder` | `{name}` | `{session_id, token}` or nil |
//!
//! Waiters are the parked `acquire` calls themselves: the host keeps them oldest first,
//! and cancels those of a session that ends, so a waiter that went away is never granted
//! the lock. The holder lives in the znode `/wazoo/recipes/lock/<name>/holder`
//! (`{session_id, token}`); the recipe watches the holder's session and, when it ends,
//! hands the lock to the next waiter.
//!
//! Tokens are the zxid of the operation that granted the lock, so each grant of a lock
//! gets a larger token than the last: pass it to the resource the lock protects, which
//! rejects any request with a token smaller than one it has seen (fencing).
//!
//! A session cannot acquire a lock it holds (the call fails): this lock is not
//! reentrant.

use serde::{Deserialize, Serialize};
use wazoo_sdk::{Call, CreateMode, Error, Event, ParkedCall, Recipe, Result};

/// Where the locks live.
pub const ROOT: &str = "/wazoo/recipes/lock";

#[derive(Debug, Serialize, Deserialize)]
pub struct NameArgs {
    pub name: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Granted {
    pub token: i64,
}

/// The holder znode's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub session_id: i64,
    pub token: i64,
}

pub struct Lock;

impl Recipe for Lock {
    fn call(call: &Call) -> Result<()> {
        match call.function() {
            "acquire" => {
                let NameArgs { name } = call.args()?;
                check_name(&name)?;
                match holder(&name)? {
                    Some(h) if h.session_id == call.session_id() => Err(Error::msg(format!(
                        "lock {name} is already held by this session"
                    ))),
                    // Held by a live session: wait in line.
                    Some(h) if wazoo_sdk::session_alive(h.session_id)? => call.park(),
                    // Its holder is gone and the event has not run yet: the oldest
                    // waiter goes first, this caller only gets the lock if none is left.
                    Some(_) => {
                        hand_over(&name)?;
                        if holder(&name)?.is_some() {
                            call.park()
                        } else {
                            let token = grant(&name, call.session_id())?;
                            call.reply(&Granted { token })
                        }
                    }
                    None => {
                        let token = grant(&name, call.session_id())?;
                        call.reply(&Granted { token })
                    }
                }
            }
            "release" => {
                let NameArgs { name } = call.args()?;
                check_name(&name)?;
                match holder(&name)? {
                    Some(h) if h.session_id == call.session_id() => {
                        hand_over(&name)?;
                        call.reply(&())
                    }
                    _ => Err(Error::msg(format!(
                        "lock {name} is not held by this session"
                    ))),
                }
            }
            "holder" => {
                let NameArgs { name } = call.args()?;
                check_name(&name)?;
                call.reply(&holder(&name)?)
            }
            other => Err(Error::UnknownFunction(other.to_string())),
        }
    }

    fn event(event: &Event) -> Result<()> {
        let Event::SessionClosed { session_id, .. } = event else {
            return Ok(());
        };
        // Its waiters were cancelled by the host already; release what it held.
        let names = match wazoo_sdk::children(ROOT) {
            Ok(names) => names,
            Err(e) if e.is_no_node() => return Ok(()),
            Err(e) => return Err(e),
        };
        for name in names {
            if holder(&name)?.is_some_and(|h| h.session_id == *session_id) {
                wazoo_sdk::log(format!("lock {name}: holder session {session_id:#x} ended"));
                hand_over(&name)?;
            }
        }
        Ok(())
    }
}

wazoo_sdk::recipe!(Lock);

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(Error::msg(format!("bad lock name {name:?}")));
    }
    Ok(())
}

fn holder_path(name: &str) -> String {
    format!("{ROOT}/{name}/holder")
}

fn holder(name: &str) -> Result<Option<Holder>> {
    match wazoo_sdk::get(&holder_path(name))? {
        Some(node) => Ok(Some(node.decode()?)),
        None => Ok(None),
    }
}

/// Makes `session` the holder with a fresh token; returns the token.
fn grant(name: &str, session: i64) -> Result<i64> {
    let holder = Holder {
        session_id: session,
        token: wazoo_sdk::zxid(),
    };
    let data = wazoo_sdk::encode(&holder)?;
    let path = holder_path(name);
    if wazoo_sdk::exists(&path)?.is_some() {
        wazoo_sdk::set(&path, &data, -1)?;
    } else {
        wazoo_sdk::create_all(&format!("{ROOT}/{name}"))?;
        wazoo_sdk::create(&path, &data, CreateMode::PERSISTENT)?;
    }
    wazoo_sdk::watch_session(session)?;
    Ok(holder.token)
}

/// The oldest parked `acquire` of `name` whose session is still there.
fn next_waiter(name: &str) -> Result<Option<ParkedCall>> {
    for parked in wazoo_sdk::list_parked()? {
        if parked.function != "acquire" {
            continue;
        }
        let Ok(NameArgs { name: wanted }) = parked.decode_args() else {
            continue;
        };
        if wanted == name && wazoo_sdk::session_alive(parked.session_id)? {
            return Ok(Some(parked));
        }
    }
    Ok(None)
}

/// Gives the lock to the next waiter, or frees it.
fn hand_over(name: &str) -> Result<()> {
    match next_waiter(name)? {
        Some(waiter) => {
            let token = grant(name, waiter.session_id)?;
            wazoo_sdk::complete(waiter.call_id, Ok(Granted { token }))
        }
        None => {
            wazoo_sdk::delete(&holder_path(name), -1)?;
            // Keep the tree tidy: the lock's own znode goes when it is free.
            match wazoo_sdk::delete(&format!("{ROOT}/{name}"), -1) {
                Err(e) if e.code() != Some(wazoo_sdk::ErrorCode::NotEmpty) => Err(e),
                _ => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wazoo_sdk::testing::Harness;

    fn name(n: &str) -> NameArgs {
        NameArgs { name: n.into() }
    }

    #[test]
    fn free_lock_is_granted_at_once() {
        let mut h = Harness::new::<Lock>();
        let s = h.open_session();
        let r = h.call(s, "acquire", &name("a"));
        let g: Granted = r.reply();
        assert_eq!(g.token, r.call_id);
        assert_eq!(
            h.call(s, "holder", &name("a")).reply::<Option<Holder>>(),
            Some(Holder {
                session_id: s,
                token: g.token
            })
        );
        assert!(h
            .call(s, "acquire", &name("a"))
            .failure()
            .unwrap()
            .contains("already held"));
        h.call(s, "release", &name("a")).reply::<()>();
        assert_eq!(
            h.call(s, "holder", &name("a")).reply::<Option<Holder>>(),
            None
        );
        assert!(h.stat("/wazoo/recipes/lock/a").is_none());
        assert!(h
            .call(s, "release", &name("a"))
            .failure()
            .unwrap()
            .contains("not held"));
        assert!(h
            .call(s, "acquire", &name("x/y"))
            .failure()
            .unwrap()
            .contains("bad lock name"));
    }

    #[test]
    fn waiters_are_served_in_fifo_order_with_increasing_tokens() {
        let mut h = Harness::new::<Lock>();
        let sessions: Vec<i64> = (0..4).map(|_| h.open_session()).collect();
        let first: Granted = h.call(sessions[0], "acquire", &name("a")).reply();
        let waits: Vec<_> = sessions[1..]
            .iter()
            .map(|s| h.call(*s, "acquire", &name("a")))
            .collect();
        assert!(waits.iter().all(|w| w.is_parked()));
        // Another lock is independent.
        h.call(sessions[3], "acquire", &name("b"))
            .reply::<Granted>();

        let mut last = first.token;
        let mut holder = sessions[0];
        for (i, w) in waits.iter().enumerate() {
            h.call(holder, "release", &name("a")).reply::<()>();
            let g: Granted = h.completion_as(w.call_id).expect("granted").unwrap();
            assert!(g.token > last);
            last = g.token;
            holder = sessions[i + 1];
            assert_eq!(
                h.call(holder, "holder", &name("a"))
                    .reply::<Option<Holder>>()
                    .unwrap()
                    .session_id,
                holder
            );
            // Only the next waiter was woken.
            for later in &waits[i + 1..] {
                assert_eq!(h.completion(later.call_id), None);
            }
        }
        h.call(holder, "release", &name("a")).reply::<()>();
        assert_eq!(
            h.call(holder, "holder", &name("a"))
                .reply::<Option<Holder>>(),
            None
        );
        assert!(h.parked().is_empty());
    }

    #[test]
    fn holder_session_closing_wakes_exactly_one_waiter() {
        let mut h = Harness::new::<Lock>();
        let owner = h.open_session();
        let w1 = h.open_session();
        let w2 = h.open_session();
        h.call(owner, "acquire", &name("a")).reply::<Granted>();
        let c1 = h.call(w1, "acquire", &name("a"));
        let c2 = h.call(w2, "acquire", &name("a"));
        h.close_session(owner);
        assert!(h.completion_as::<Granted>(c1.call_id).unwrap().is_ok());
        assert_eq!(h.completion(c2.call_id), None);
        assert_eq!(h.parked().len(), 1);
        assert_eq!(
            h.call(w2, "holder", &name("a"))
                .reply::<Option<Holder>>()
                .unwrap()
                .session_id,
            w1
        );
        assert!(h.event_failures().is_empty());
    }

    #[test]
    fn a_holder_that_is_gone_does_not_block() {
        let mut h = Harness::new::<Lock>();
        // A holder whose session ended without the recipe hearing of it.
        let stale = wazoo_sdk::api::encode(&Holder {
            session_id: 0x999,
            token: 1,
        })
        .unwrap();
        for p in ["/wazoo", "/wazoo/recipes", ROOT, "/wazoo/recipes/lock/a"] {
            h.create(p, b"", CreateMode::PERSISTENT).unwrap();
        }
        h.create(&holder_path("a"), &stale, CreateMode::PERSISTENT)
            .unwrap();
        let s = h.open_session();
        let g: Granted = h.call(s, "acquire", &name("a")).reply();
        assert!(g.token > 1);
        assert_eq!(
            h.call(s, "holder", &name("a"))
                .reply::<Option<Holder>>()
                .unwrap()
                .session_id,
            s
        );
    }

    #[test]
    fn cancelled_waiters_are_skipped() {
        let mut h = Harness::new::<Lock>();
        let owner = h.open_session();
        let gone = h.open_session();
        let next = h.open_session();
        h.call(owner, "acquire", &name("a")).reply::<Granted>();
        let c_gone = h.call(gone, "acquire", &name("a"));
        let c_next = h.call(next, "acquire", &name("a"));
        h.close_session(gone);
        h.call(owner, "release", &name("a")).reply::<()>();
        assert_eq!(h.completion(c_gone.call_id), None);
        assert!(h.completion_as::<Granted>(c_next.call_id).unwrap().is_ok());
        // The last holder leaving frees the lock.
        h.close_session(next);
        assert!(h.stat(&holder_path("a")).is_none());
        let s = h.open_session();
        h.call(s, "acquire", &name("a")).reply::<Granted>();
    }
}
