//! `barrier`: three kinds of barrier, each keyed by a name. The full reference (layout,
//! errors) is the "## barrier" section of docs/RECIPES.md.
//!
//! | function | arguments | reply |
//! | --- | --- | --- |
//! | `enter` | `{name, parties}` | N-party barrier: parked until `parties` sessions wait at `name`, then all of them get `{generation, parties}` and the barrier starts over. A session waits once: entering again replaces its earlier parked call (which fails "superseded ...") |
//! | `double_enter` | `{name, parties}` | double barrier (Curator's `DistributedDoubleBarrier.enter`): parked until `parties` sessions entered, then all get `{generation, parties}`. Fails while the barrier is in progress (its members are inside). Entering again replaces the session's parked call, or, once inside, replies the release again |
//! | `double_leave` | `{name}` | parked until every session that entered has left (called `double_leave` or ended), then all leavers get `{generation, parties}` (`parties`: how many left by `double_leave`) and the double barrier starts over. Leaving again replaces the session's parked call |
//! | `set` | `{name}` | Curator's `DistributedBarrier.setBarrier`: sets the barrier (idempotent); nil |
//! | `remove` | `{name}` | `removeBarrier`: clears it and completes every `wait`; `{released}` (how many waits) |
//! | `wait` | `{name}` | `waitOnBarrier`: nil at once when the barrier is not set, else parked until `remove` |
//!
//! Members of the N-party and double barriers are ephemeral znodes of their sessions, and
//! the waiting calls are parked calls, so a session that ends leaves the barrier by
//! itself: it no longer counts towards `parties`, and a double barrier whose remaining
//! members all wait in `double_leave` releases them.
//!
//! State, under `/wazoo/recipes/barrier/<name>/`:
//! - `party` (`{parties}`) and `party/<session as 16 hex digits>` (ephemeral,
//!   `{call_id}`): the sessions waiting in `enter`;
//! - `double` (`{parties, phase: "entering" or "inside"}`) and `double/<session>`
//!   (ephemeral, `{state: "entering", "inside" or "leaving", call_id}`);
//! - `set` (`{session, zxid}`: who set it, when) while the set/remove barrier is set;
//! - `/wazoo/recipes/barrier/.sessions/<session>/<name>`: the double barriers a session
//!   entered (until it ends), so that its end visits only those and the barriers of its
//!   cancelled calls (names cannot start with '.').

use serde::{Deserialize, Serialize};
use wazoo_sdk::{children_or_empty as list, delete_if_empty};
use wazoo_sdk::{Call, CreateMode, Error, Event, ParkedCall, Recipe, Result, WriteOp};

/// Where the barriers live.
pub const ROOT: &str = "/wazoo/recipes/barrier";

/// The double barriers each session entered (`.sessions/<session>/<name>`), so that the
/// session's end visits only those. Barrier names cannot start with '.'.
pub const SESSIONS: &str = "/wazoo/recipes/barrier/.sessions";

/// The most parties an N-party or double barrier accepts: releasing one writes a znode
/// and completes a call per party, within the server's 1,000 writes and 1,000
/// completions per invocation.
pub const MAX_PARTIES: u32 = 400;

/// The most calls that may wait on one set/remove barrier (completions per invocation).
pub const MAX_WAITERS: usize = 900;

#[derive(Debug, Serialize, Deserialize)]
pub struct NameArgs {
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EnterArgs {
    pub name: String,
    pub parties: u32,
}

/// The reply of `enter`, `double_enter` and `double_leave`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Released {
    /// The zxid of the operation that released the barrier: the same for every member
    /// released together, and increasing from one release to the next.
    pub generation: i64,
    pub parties: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoveReply {
    pub released: u32,
}

/// The data of `party` and `double`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub parties: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The double barrier's release ("inside" phase): what `double_enter` replied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

/// The data of a member of the N-party barrier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartyMember {
    pub call_id: i64,
}

/// The data of a member of the double barrier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoubleMember {
    pub state: String,
    /// The parked `double_enter` (state "entering") or `double_leave` (state "leaving");
    /// none while "inside".
    pub call_id: Option<i64>,
}

/// The data of `set`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetBy {
    pub session: i64,
    pub zxid: i64,
}

pub const ENTERING: &str = "entering";
pub const INSIDE: &str = "inside";
pub const LEAVING: &str = "leaving";

pub struct Barrier;

impl Recipe for Barrier {
    fn call(call: &Call) -> Result<()> {
        match call.function() {
            "enter" => {
                let EnterArgs { name, parties } = call.args()?;
                check_name(&name)?;
                check_parties(parties)?;
                enter(call, &name, parties)
            }
            "double_enter" => {
                let EnterArgs { name, parties } = call.args()?;
                check_name(&name)?;
                check_parties(parties)?;
                double_enter(call, &name, parties)
            }
            "double_leave" => {
                let NameArgs { name } = call.args()?;
                check_name(&name)?;
                double_leave(call, &name)
            }
            "set" => {
                let NameArgs { name } = call.args()?;
                check_name(&name)?;
                let path = set_path(&name);
                if wazoo_sdk::exists(&path)?.is_none() {
                    wazoo_sdk::create_all(&dir(&name))?;
                    let by = SetBy {
                        session: call.session_id(),
                        zxid: wazoo_sdk::zxid(),
                    };
                    wazoo_sdk::create(&path, &wazoo_sdk::encode(&by)?, CreateMode::PERSISTENT)?;
                }
                call.reply(&())
            }
            "remove" => {
                let NameArgs { name } = call.args()?;
                check_name(&name)?;
                if wazoo_sdk::exists(&set_path(&name))?.is_some() {
                    wazoo_sdk::delete(&set_path(&name), -1)?;
                }
                let waiters = waiters(&name)?;
                for w in &waiters {
                    wazoo_sdk::complete(w.call_id, Ok(()))?;
                }
                tidy(&name)?;
                call.reply(&RemoveReply {
                    released: waiters.len() as u32,
                })
            }
            "wait" => {
                let NameArgs { name } = call.args()?;
                check_name(&name)?;
                if wazoo_sdk::exists(&set_path(&name))?.is_none() {
                    return call.reply(&());
                }
                if waiters(&name)?.len() >= MAX_WAITERS {
                    return Err(Error::msg(format!(
                        "barrier {name} has too many waiters ({MAX_WAITERS})"
                    )));
                }
                call.park()
            }
            other => Err(Error::UnknownFunction(other.to_string())),
        }
    }

    fn event(event: &Event) -> Result<()> {
        let Event::SessionClosed {
            session_id,
            cancelled,
        } = event
        else {
            return Ok(());
        };
        // The server already deleted the session's member znodes and cancelled its
        // parked calls. In the barriers it was part of (those of its cancelled calls,
        // and the double barriers it entered), release double barriers whose remaining
        // members all wait to leave, and drop what became empty.
        let index = format!("{SESSIONS}/{session_id:016x}");
        let tracked = list(&index)?;
        let mut names: std::collections::BTreeSet<String> = tracked.iter().cloned().collect();
        for call in cancelled {
            if let Ok(NameArgs { name }) = call.decode_args() {
                names.insert(name);
            }
        }
        for name in names {
            if check_name(&name).is_err() {
                continue;
            }
            settle_double(&name)?;
            tidy(&name)?;
        }
        for name in tracked {
            wazoo_sdk::delete(&format!("{index}/{name}"), -1)?;
        }
        delete_if_empty(&index)?;
        delete_if_empty(SESSIONS)
    }
}

wazoo_sdk::recipe!(Barrier);

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(Error::msg(format!("bad barrier name {name:?}")));
    }
    Ok(())
}

fn check_parties(parties: u32) -> Result<()> {
    if parties == 0 || parties > MAX_PARTIES {
        return Err(Error::msg(format!(
            "parties must be between 1 and {MAX_PARTIES}, not {parties}"
        )));
    }
    Ok(())
}

fn dir(name: &str) -> String {
    format!("{ROOT}/{name}")
}

fn party_dir(name: &str) -> String {
    format!("{ROOT}/{name}/party")
}

fn double_dir(name: &str) -> String {
    format!("{ROOT}/{name}/double")
}

fn set_path(name: &str) -> String {
    format!("{ROOT}/{name}/set")
}

fn member(session: i64) -> String {
    format!("{session:016x}")
}

/// Children of `path`, sorted; empty if it does not exist.
fn read<T: serde::de::DeserializeOwned>(path: &str) -> Result<Option<T>> {
    match wazoo_sdk::get(path)? {
        Some(node) => Ok(Some(node.decode()?)),
        None => Ok(None),
    }
}

/// Removes the barrier's znodes that hold nothing any more.
fn tidy(name: &str) -> Result<()> {
    delete_if_empty(&party_dir(name))?;
    if list(&double_dir(name))?.is_empty() {
        // Without members a double barrier starts over, whatever its phase was.
        delete_if_empty(&double_dir(name))?;
    }
    delete_if_empty(&dir(name))
}

fn parked_ids() -> Result<Vec<i64>> {
    Ok(wazoo_sdk::list_parked()?
        .into_iter()
        .map(|p| p.call_id)
        .collect())
}

/// Deletes the children of `dir` and `dir` itself in one multi.
fn delete_group(dir: &str, members: &[String]) -> Result<()> {
    let mut ops: Vec<WriteOp> = members
        .iter()
        .map(|m| WriteOp::Delete {
            path: format!("{dir}/{m}"),
            version: -1,
        })
        .collect();
    ops.push(WriteOp::Delete {
        path: dir.to_string(),
        version: -1,
    });
    wazoo_sdk::multi(ops)?;
    Ok(())
}

// --- the N-party barrier ---

fn enter(call: &Call, name: &str, parties: u32) -> Result<()> {
    let me = call.session_id();
    let dir = party_dir(name);
    // The common case, in O(1): others wait, this session does not yet, and it is
    // not the last party. (The full pass below, which reads every member and the
    // module's parked calls, runs once per generation, for the last party.)
    if let Some(node) = wazoo_sdk::get(&dir)? {
        let waiting = u32::try_from(node.stat.num_children).unwrap_or(0);
        if waiting > 0 && waiting + 1 < parties {
            let group: Group = node.decode()?;
            if group.parties != parties {
                return Err(Error::msg(format!(
                    "barrier {name} waits for {} parties, not {parties}",
                    group.parties
                )));
            }
            let mine = format!("{dir}/{}", member(me));
            if wazoo_sdk::exists(&mine)?.is_none() {
                wazoo_sdk::create(
                    &mine,
                    &wazoo_sdk::encode(&PartyMember { call_id: call.id() })?,
                    CreateMode::ephemeral(me),
                )?;
                return call.park();
            }
        }
    }
    let parked = parked_ids()?;
    // The members, each with its parked enter (a member whose call is gone is stale).
    let mut members: Vec<(String, PartyMember)> = Vec::new();
    for m in list(&dir)? {
        let path = format!("{dir}/{m}");
        match read::<PartyMember>(&path)? {
            Some(pm) if parked.contains(&pm.call_id) => members.push((m, pm)),
            Some(_) => wazoo_sdk::delete(&path, -1)?,
            None => {}
        }
    }
    if !members.is_empty() {
        let group: Group = read(&dir)?.ok_or_else(|| Error::msg("party znode vanished"))?;
        if group.parties != parties {
            return Err(Error::msg(format!(
                "barrier {name} waits for {} parties, not {parties}",
                group.parties
            )));
        }
    }
    if let Some((m, pm)) = members.iter().find(|(m, _)| *m == member(me)) {
        // Already waiting (a retry after a lost connection?): this call takes the
        // place of the earlier one, which fails.
        supersede(pm.call_id)?;
        wazoo_sdk::set(
            &format!("{dir}/{m}"),
            &wazoo_sdk::encode(&PartyMember { call_id: call.id() })?,
            -1,
        )?;
        return call.park();
    }
    if members.len() as u32 + 1 >= parties {
        let released = Released {
            generation: wazoo_sdk::zxid(),
            parties,
        };
        for (_, pm) in &members {
            wazoo_sdk::complete(pm.call_id, Ok(released.clone()))?;
        }
        if wazoo_sdk::exists(&dir)?.is_some() {
            let names: Vec<String> = members.into_iter().map(|(m, _)| m).collect();
            delete_group(&dir, &names)?;
        }
        tidy(name)?;
        return call.reply(&released);
    }
    let group = wazoo_sdk::encode(&Group {
        parties,
        phase: None,
        generation: None,
    })?;
    if wazoo_sdk::exists(&dir)?.is_some() {
        wazoo_sdk::set(&dir, &group, -1)?;
    } else {
        wazoo_sdk::create_all(&self::dir(name))?;
        wazoo_sdk::create(&dir, &group, CreateMode::PERSISTENT)?;
    }
    wazoo_sdk::create(
        &format!("{dir}/{}", member(me)),
        &wazoo_sdk::encode(&PartyMember { call_id: call.id() })?,
        CreateMode::ephemeral(me),
    )?;
    call.park()
}

// --- the double barrier ---

fn double_members(name: &str) -> Result<Vec<(String, DoubleMember)>> {
    let dir = double_dir(name);
    let mut out = Vec::new();
    for m in list(&dir)? {
        if let Some(dm) = read::<DoubleMember>(&format!("{dir}/{m}"))? {
            out.push((m, dm));
        }
    }
    Ok(out)
}

fn double_enter(call: &Call, name: &str, parties: u32) -> Result<()> {
    let me = call.session_id();
    let dir = double_dir(name);
    let members = double_members(name)?;
    let group: Option<Group> = if members.is_empty() {
        None
    } else {
        read(&dir)?
    };
    if let Some((m, dm)) = members.iter().find(|(m, _)| *m == member(me)) {
        // Entered already (a retry after a lost connection?).
        return match dm.state.as_str() {
            ENTERING => {
                supersede_double(call, name, m, dm, ENTERING)?;
                call.park()
            }
            INSIDE => {
                let g = group.ok_or_else(|| Error::msg("double znode vanished"))?;
                call.reply(&Released {
                    generation: g.generation.unwrap_or_default(),
                    parties: g.parties,
                })
            }
            _ => Err(Error::msg(format!(
                "session is leaving double barrier {name}"
            ))),
        };
    }
    if let Some(g) = &group {
        if g.phase.as_deref() == Some(INSIDE) {
            return Err(Error::msg(format!(
                "double barrier {name} is in progress: enter once its members have left"
            )));
        }
        if g.parties != parties {
            return Err(Error::msg(format!(
                "double barrier {name} waits for {} parties, not {parties}",
                g.parties
            )));
        }
    }
    wazoo_sdk::create_all(&self::dir(name))?;
    if members.len() as u32 + 1 >= parties {
        // Everyone is here: all go inside.
        let released = Released {
            generation: wazoo_sdk::zxid(),
            parties,
        };
        write_group(&dir, parties, INSIDE, Some(released.generation))?;
        let inside = wazoo_sdk::encode(&DoubleMember {
            state: INSIDE.into(),
            call_id: None,
        })?;
        for (m, dm) in &members {
            if let Some(id) = dm.call_id {
                wazoo_sdk::complete(id, Ok(released.clone()))?;
            }
            wazoo_sdk::set(&format!("{dir}/{m}"), &inside, -1)?;
        }
        wazoo_sdk::create(
            &format!("{dir}/{}", member(me)),
            &inside,
            CreateMode::ephemeral(me),
        )?;
        track_session(me, name)?;
        return call.reply(&released);
    }
    write_group(&dir, parties, ENTERING, None)?;
    wazoo_sdk::create(
        &format!("{dir}/{}", member(me)),
        &wazoo_sdk::encode(&DoubleMember {
            state: ENTERING.into(),
            call_id: Some(call.id()),
        })?,
        CreateMode::ephemeral(me),
    )?;
    track_session(me, name)?;
    call.park()
}

/// Watches the session and notes that it entered double barrier `name` (the entry
/// stays until the session ends).
fn track_session(session: i64, name: &str) -> Result<()> {
    let index = format!("{SESSIONS}/{session:016x}");
    let entry = format!("{index}/{name}");
    if wazoo_sdk::exists(&entry)?.is_none() {
        wazoo_sdk::create_all(&index)?;
        wazoo_sdk::create(&entry, &[], CreateMode::PERSISTENT)?;
    }
    wazoo_sdk::watch_session(session)
}

fn write_group(dir: &str, parties: u32, phase: &str, generation: Option<i64>) -> Result<()> {
    let data = wazoo_sdk::encode(&Group {
        parties,
        phase: Some(phase.to_string()),
        generation,
    })?;
    if wazoo_sdk::exists(dir)?.is_some() {
        wazoo_sdk::set(dir, &data, -1)?;
    } else {
        wazoo_sdk::create(dir, &data, CreateMode::PERSISTENT)?;
    }
    Ok(())
}

fn double_leave(call: &Call, name: &str) -> Result<()> {
    let me = call.session_id();
    let dir = double_dir(name);
    let members = double_members(name)?;
    let mine = members.iter().find(|(m, _)| *m == member(me));
    match mine {
        Some((_, dm)) if dm.state == INSIDE => {}
        Some((m, dm)) if dm.state == LEAVING => {
            // Leaving already (a retry?): this call waits instead of the earlier one.
            supersede_double(call, name, m, dm, LEAVING)?;
            return call.park();
        }
        _ => {
            return Err(Error::msg(format!(
                "session is not inside double barrier {name}"
            )))
        }
    }
    wazoo_sdk::set(
        &format!("{dir}/{}", member(me)),
        &wazoo_sdk::encode(&DoubleMember {
            state: LEAVING.into(),
            call_id: Some(call.id()),
        })?,
        -1,
    )?;
    if members
        .iter()
        .all(|(m, dm)| *m == member(me) || dm.state == LEAVING)
    {
        let released = release_leavers(name)?;
        return call.reply(&released);
    }
    call.park()
}

/// Fails a parked call that a later call of the same session replaces.
fn supersede(call_id: i64) -> Result<()> {
    match wazoo_sdk::complete(
        call_id,
        Err::<(), _>("superseded by a later call of the same session".to_string()),
    ) {
        Err(e) if e.is_no_node() => Ok(()),
        other => other,
    }
}

/// A double barrier member's parked call is replaced by the current call.
fn supersede_double(
    call: &Call,
    name: &str,
    m: &str,
    dm: &DoubleMember,
    state: &str,
) -> Result<()> {
    if let Some(old) = dm.call_id {
        supersede(old)?;
    }
    wazoo_sdk::set(
        &format!("{}/{m}", double_dir(name)),
        &wazoo_sdk::encode(&DoubleMember {
            state: state.to_string(),
            call_id: Some(call.id()),
        })?,
        -1,
    )?;
    Ok(())
}

/// Every member left or waits to leave: completes the parked leaves, deletes the
/// members (the round is over). The caller, if it is one of them, is skipped (it is not
/// parked). Returns what the leavers get.
fn release_leavers(name: &str) -> Result<Released> {
    let dir = double_dir(name);
    let members = double_members(name)?;
    let released = Released {
        generation: wazoo_sdk::zxid(),
        parties: members.len() as u32,
    };
    let current = if wazoo_sdk::in_call() {
        Some(wazoo_sdk::zxid())
    } else {
        None
    };
    for (_, dm) in &members {
        match dm.call_id {
            Some(id) if Some(id) != current => {
                match wazoo_sdk::complete(id, Ok(released.clone())) {
                    // Its session ended in this very operation: nobody to answer.
                    Err(e) if e.is_no_node() => {}
                    other => other?,
                }
            }
            _ => {}
        }
    }
    let names: Vec<String> = members.into_iter().map(|(m, _)| m).collect();
    delete_group(&dir, &names)?;
    tidy(name)?;
    Ok(released)
}

/// After members went away: a double barrier inside whose members all wait to leave
/// releases them.
fn settle_double(name: &str) -> Result<()> {
    let dir = double_dir(name);
    let Some(group) = read::<Group>(&dir)? else {
        return Ok(());
    };
    let members = double_members(name)?;
    if group.phase.as_deref() == Some(INSIDE)
        && !members.is_empty()
        && members.iter().all(|(_, dm)| dm.state == LEAVING)
    {
        release_leavers(name)?;
    }
    Ok(())
}

// --- the set/remove barrier ---

/// The parked `wait` calls of `name`, oldest first.
fn waiters(name: &str) -> Result<Vec<ParkedCall>> {
    let mut out = Vec::new();
    for parked in wazoo_sdk::list_parked()? {
        if parked.function != "wait" {
            continue;
        }
        if let Ok(NameArgs { name: n }) = parked.decode_args() {
            if n == name {
                out.push(parked);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
