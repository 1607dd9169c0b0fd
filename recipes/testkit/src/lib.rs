//! `testkit`: exercises every host call, for the server's integration tests.
//!
//! Arguments and replies are MessagePack; `{a, b}` below is a map with those keys
//! (optional ones marked `?`), `bin` accepts MessagePack bin or str. Errors from the
//! host (e.g. `NodeExists`) fail the call with the message "host error NodeExists".
//! Everything testkit keeps for itself lives under `/testkit`; node events under it, and
//! changes of a subscription's log znode, are ignored, so subscribing to `/` cannot loop.
//!
//! | function | arguments | effect and reply |
//! | --- | --- | --- |
//! | `echo` | anything | replies its arguments, byte for byte (nil when empty) |
//! | `put` | `{path, data?: bin}` | creates `path` (and missing parents) or sets its data; replies `{path, version}` |
//! | `put_then_fail` | `{path, data?: bin}` | as `put`, then fails: nothing is written |
//! | `create` | `{path, data?: bin, sequential?: bool, ephemeral?: bool}` | creates one znode (ephemeral: owned by the caller); replies the path |
//! | `get` | `{path}` | replies `{data: bin, version}` or nil |
//! | `delete` | `{path, version?}` | deletes; replies nil |
//! | `park` | anything | parks the call |
//! | `complete` | `{call_id, value?, error?}` | completes a parked call with `value` (or fails it with `error`); replies nil; fails "no parked call N" |
//! | `complete_all` | `{value?}`, or nil | completes every parked call, oldest first, with `value` or, without one, the parked call's own arguments; replies the count |
//! | `list_parked` | nil | replies `[{call_id, session_id, function}]`, oldest first |
//! | `notify` | `{session, msg}` | pushes `msg` to `session`; replies nil |
//! | `subscribe` | `{prefix, log?: str, notify?: session}` | subscribes; on each node event at or under `prefix` appends the line "`<Change> <path>`\n" to the znode `log` (default `/testkit/log`, created as needed) and, with `notify`, pushes `{path, change}` to that session; replies nil |
//! | `unsubscribe` | `{prefix}` | unsubscribes and forgets the prefix's settings; replies nil |
//! | `watch_session` | `{session?}` (default: the caller) | watches the session; when it ends, creates `/testkit/closed/<session>` holding the cancelled call ids (MessagePack array); replies nil |
//! | `unwatch_session` | `{session}` | replies nil |
//! | `session_alive` | `{session}` | replies a bool |
//! | `set_timer` | `{name, at_ms}` | sets a timer; when it fires, creates (or sets) `/testkit/timers/<name>` holding the event's `now_ms` (MessagePack int); replies nil |
//! | `cancel_timer` | `{name}` | replies nil |
//! | `whoami` | nil | replies `{session_id, auth: [{scheme, id}]}` |
//! | `now` | nil | replies `{call_id, now_ms, zxid, seed, module, version}` from the context |
//! | `random` | nil | replies 4 numbers from the SDK PRNG seeded by the context |
//! | `log` | `{msg}` | a line in the server log; replies nil |
//! | `fail` | `{message}` | fails the call with `message` (`RecipeFailed`) |
//! | `trap` | nil | panics: the module traps (`RecipeTrap`) |
//! | `no_reply` | nil | returns without replying (`RecipeFailed`) |
//! | `spin` | nil | loops forever: only the fuel budget stops it (`RecipeFuelExhausted`) |
//! | `alloc` | `{bytes}` | allocates and touches `bytes` bytes of memory; replies the count (memory limit tests) |
//! | `big_reply` | `{len}` | replies a bin of `len` bytes (reply size limit tests) |
//! | `many_writes` | `{prefix, count}` | creates `prefix` and `count` children `n0..`; replies nil (writes-per-invocation limit tests) |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use wazoo_sdk::rmp_serde;
use wazoo_sdk::{Call, CreateMode, Error, Event, Recipe, Result};

/// An arbitrary MessagePack value.
pub use rmpv::Value;

/// Where testkit keeps its own state.
pub const ROOT: &str = "/testkit";
pub const SUBS: &str = "/testkit/subs";
pub const DEFAULT_LOG: &str = "/testkit/log";

#[derive(Serialize, Deserialize)]
pub struct PutArgs {
    pub path: String,
    #[serde(default)]
    pub data: ByteBuf,
}

#[derive(Serialize, Deserialize)]
pub struct CreateArgs {
    pub path: String,
    #[serde(default)]
    pub data: ByteBuf,
    #[serde(default)]
    pub sequential: bool,
    #[serde(default)]
    pub ephemeral: bool,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct PutReply {
    pub path: String,
    pub version: i32,
}

#[derive(Serialize, Deserialize)]
pub struct PathArgs {
    pub path: String,
    #[serde(default = "any_version")]
    pub version: i32,
}

fn any_version() -> i32 {
    -1
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct GetReply {
    pub data: ByteBuf,
    pub version: i32,
}

#[derive(Serialize, Deserialize)]
pub struct CompleteArgs {
    pub call_id: i64,
    #[serde(default)]
    pub value: Option<Value>,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Default, Serialize, Deserialize)]
pub struct CompleteAllArgs {
    #[serde(default)]
    pub value: Option<Value>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct ParkedInfo {
    pub call_id: i64,
    pub session_id: i64,
    pub function: String,
}

#[derive(Serialize, Deserialize)]
pub struct NotifyArgs {
    pub session: i64,
    pub msg: Value,
}

/// A subscription's settings, kept in `/testkit/subs/<hex of prefix>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscribeArgs {
    pub prefix: String,
    #[serde(default)]
    pub log: Option<String>,
    #[serde(default)]
    pub notify: Option<i64>,
}

#[derive(Serialize, Deserialize)]
pub struct PrefixArgs {
    pub prefix: String,
}

/// What a subscriber session receives for each node event.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeNotification {
    pub path: String,
    pub change: String,
}

#[derive(Default, Serialize, Deserialize)]
pub struct SessionArgs {
    #[serde(default)]
    pub session: Option<i64>,
}

#[derive(Serialize, Deserialize)]
pub struct TimerArgs {
    pub name: String,
    #[serde(default)]
    pub at_ms: i64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Whoami {
    pub session_id: i64,
    pub auth: Vec<wazoo_sdk::Identity>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Now {
    pub call_id: i64,
    pub now_ms: i64,
    pub zxid: i64,
    pub seed: u64,
    pub module: String,
    pub version: i32,
}

#[derive(Serialize, Deserialize)]
pub struct LogArgs {
    pub msg: String,
}

#[derive(Serialize, Deserialize)]
pub struct FailArgs {
    pub message: String,
}

#[derive(Serialize, Deserialize)]
pub struct AllocArgs {
    pub bytes: u64,
}

#[derive(Serialize, Deserialize)]
pub struct BigReplyArgs {
    pub len: u64,
}

#[derive(Serialize, Deserialize)]
pub struct ManyWritesArgs {
    pub prefix: String,
    pub count: u32,
}

pub struct Testkit;

impl Recipe for Testkit {
    fn call(call: &Call) -> Result<()> {
        match call.function() {
            "echo" => {
                let args = call.raw_args();
                wazoo_sdk::reply_raw(if args.is_empty() {
                    vec![0xc0]
                } else {
                    args.to_vec()
                })
            }
            "put" => {
                let a: PutArgs = call.args()?;
                call.reply(&put(&a.path, &a.data)?)
            }
            "put_then_fail" => {
                let a: PutArgs = call.args()?;
                put(&a.path, &a.data)?;
                Err(Error::msg("put_then_fail: failing on purpose"))
            }
            "create" => {
                let a: CreateArgs = call.args()?;
                let mode = CreateMode {
                    sequential: a.sequential,
                    ephemeral_owner: a.ephemeral.then(|| call.session_id()),
                };
                call.reply(&wazoo_sdk::create(&a.path, &a.data, mode)?)
            }
            "get" => {
                let a: PathArgs = call.args()?;
                let node = wazoo_sdk::get(&a.path)?;
                call.reply(&node.map(|n| GetReply {
                    data: ByteBuf::from(n.data),
                    version: n.stat.version,
                }))
            }
            "delete" => {
                let a: PathArgs = call.args()?;
                wazoo_sdk::delete(&a.path, a.version)?;
                call.reply(&())
            }
            "park" => call.park(),
            "complete" => {
                let a: CompleteArgs = call.args()?;
                let result = match a.error {
                    Some(message) => Err(message),
                    None => Ok(a.value.unwrap_or(Value::Nil)),
                };
                match wazoo_sdk::complete(a.call_id, result.as_ref().map_err(Clone::clone)) {
                    Err(e) if e.is_no_node() => {
                        Err(Error::msg(format!("no parked call {}", a.call_id)))
                    }
                    other => other,
                }?;
                call.reply(&())
            }
            "complete_all" => {
                let a: Option<CompleteAllArgs> = call.args()?;
                let value = a.unwrap_or_default().value;
                let parked = wazoo_sdk::list_parked()?;
                for p in &parked {
                    match &value {
                        Some(v) => wazoo_sdk::complete(p.call_id, Ok(v))?,
                        None if p.args.is_empty() => {
                            wazoo_sdk::complete_raw(p.call_id, Ok(vec![0xc0]))?
                        }
                        None => wazoo_sdk::complete_raw(p.call_id, Ok(p.args.clone()))?,
                    }
                }
                call.reply(&parked.len())
            }
            "list_parked" => {
                let parked = wazoo_sdk::list_parked()?;
                call.reply(
                    &parked
                        .into_iter()
                        .map(|p| ParkedInfo {
                            call_id: p.call_id,
                            session_id: p.session_id,
                            function: p.function,
                        })
                        .collect::<Vec<_>>(),
                )
            }
            "notify" => {
                let a: NotifyArgs = call.args()?;
                wazoo_sdk::notify(a.session, &a.msg)?;
                call.reply(&())
            }
            "subscribe" => {
                let a: SubscribeArgs = call.args()?;
                wazoo_sdk::create_all(SUBS)?;
                let path = sub_path(&a.prefix);
                let data = wazoo_sdk::encode(&a)?;
                match wazoo_sdk::exists(&path)? {
                    Some(_) => wazoo_sdk::set(&path, &data, -1).map(drop)?,
                    None => wazoo_sdk::create(&path, &data, CreateMode::PERSISTENT).map(drop)?,
                }
                wazoo_sdk::subscribe(&a.prefix)?;
                call.reply(&())
            }
            "unsubscribe" => {
                let a: PrefixArgs = call.args()?;
                wazoo_sdk::unsubscribe(&a.prefix)?;
                let path = sub_path(&a.prefix);
                if wazoo_sdk::exists(&path)?.is_some() {
                    wazoo_sdk::delete(&path, -1)?;
                }
                call.reply(&())
            }
            "watch_session" => {
                let a: Option<SessionArgs> = call.args()?;
                let session = a.unwrap_or_default().session.unwrap_or(call.session_id());
                wazoo_sdk::watch_session(session)?;
                call.reply(&())
            }
            "unwatch_session" => {
                let a: SessionArgs = call.args()?;
                wazoo_sdk::unwatch_session(a.session.unwrap_or(call.session_id()))?;
                call.reply(&())
            }
            "session_alive" => {
                let a: SessionArgs = call.args()?;
                call.reply(&wazoo_sdk::session_alive(
                    a.session.unwrap_or(call.session_id()),
                )?)
            }
            "set_timer" => {
                let a: TimerArgs = call.args()?;
                wazoo_sdk::set_timer(&a.name, a.at_ms)?;
                call.reply(&())
            }
            "cancel_timer" => {
                let a: TimerArgs = call.args()?;
                wazoo_sdk::cancel_timer(&a.name)?;
                call.reply(&())
            }
            "whoami" => call.reply(&Whoami {
                session_id: call.session_id(),
                auth: call.auth().to_vec(),
            }),
            "now" => call.reply(&Now {
                call_id: call.id(),
                now_ms: wazoo_sdk::now_ms(),
                zxid: wazoo_sdk::zxid(),
                seed: wazoo_sdk::seed(),
                module: wazoo_sdk::module_name(),
                version: wazoo_sdk::module_version(),
            }),
            "random" => {
                let mut rng = wazoo_sdk::Rng::from_context();
                call.reply(&[
                    rng.next_u64(),
                    rng.next_u64(),
                    rng.next_u64(),
                    rng.next_u64(),
                ])
            }
            "log" => {
                let a: LogArgs = call.args()?;
                wazoo_sdk::log(a.msg);
                call.reply(&())
            }
            "fail" => {
                let a: FailArgs = call.args()?;
                Err(Error::msg(a.message))
            }
            "trap" => panic!("testkit: trap on purpose"),
            "no_reply" => Ok(()),
            "spin" => {
                let mut i: u64 = 0;
                loop {
                    i = std::hint::black_box(i.wrapping_add(1));
                }
            }
            "alloc" => {
                let a: AllocArgs = call.args()?;
                let mut v = vec![0u8; a.bytes as usize];
                // Touch every page so the memory is really there.
                for i in (0..v.len()).step_by(4096) {
                    v[i] = 1;
                }
                call.reply(&std::hint::black_box(v).len())
            }
            "big_reply" => {
                let a: BigReplyArgs = call.args()?;
                call.reply(&ByteBuf::from(vec![0x5a; a.len as usize]))
            }
            "many_writes" => {
                let a: ManyWritesArgs = call.args()?;
                wazoo_sdk::create_all(&a.prefix)?;
                for i in 0..a.count {
                    wazoo_sdk::create(&format!("{}/n{i}", a.prefix), b"", CreateMode::PERSISTENT)?;
                }
                call.reply(&())
            }
            other => Err(Error::UnknownFunction(other.to_string())),
        }
    }

    fn event(event: &Event) -> Result<()> {
        match event {
            Event::Node { path, change } => {
                if path == ROOT || path.starts_with("/testkit/") {
                    return Ok(());
                }
                let subs = subscriptions()?;
                // Changes of a log znode are not logged: that would loop.
                if subs
                    .iter()
                    .any(|s| s.log.as_deref().unwrap_or(DEFAULT_LOG) == path)
                {
                    return Ok(());
                }
                for sub in subs {
                    if !under(path, &sub.prefix) {
                        continue;
                    }
                    let change = format!("{change:?}");
                    let log = sub.log.as_deref().unwrap_or(DEFAULT_LOG);
                    append_line(log, &format!("{change} {path}"))?;
                    if let Some(session) = sub.notify {
                        // The subscriber may be gone: that is not the event's fault.
                        let _ = wazoo_sdk::notify(
                            session,
                            &NodeNotification {
                                path: path.clone(),
                                change,
                            },
                        );
                    }
                }
                Ok(())
            }
            Event::SessionClosed {
                session_id,
                cancelled,
            } => {
                let ids: Vec<i64> = cancelled.iter().map(|c| c.call_id).collect();
                put(
                    &format!("/testkit/closed/{session_id}"),
                    &wazoo_sdk::encode(&ids)?,
                )?;
                Ok(())
            }
            Event::Timer { name } => {
                put(
                    &format!("/testkit/timers/{name}"),
                    &wazoo_sdk::encode(&wazoo_sdk::now_ms())?,
                )?;
                Ok(())
            }
        }
    }
}

wazoo_sdk::recipe!(Testkit);

/// Creates `path` (and missing parents) with `data`, or sets its data.
fn put(path: &str, data: &[u8]) -> Result<PutReply> {
    match wazoo_sdk::exists(path)? {
        Some(_) => {
            let stat = wazoo_sdk::set(path, data, -1)?;
            Ok(PutReply {
                path: path.to_string(),
                version: stat.version,
            })
        }
        None => {
            if let Some(i) = path.rfind('/').filter(|i| *i > 0) {
                wazoo_sdk::create_all(&path[..i])?;
            }
            let path = wazoo_sdk::create(path, data, CreateMode::PERSISTENT)?;
            Ok(PutReply { path, version: 0 })
        }
    }
}

fn append_line(path: &str, line: &str) -> Result<()> {
    match wazoo_sdk::get(path)? {
        Some(node) => {
            let mut data = node.data;
            data.extend_from_slice(line.as_bytes());
            data.push(b'\n');
            wazoo_sdk::set(path, &data, node.stat.version)?;
        }
        None => {
            put(path, format!("{line}\n").as_bytes())?;
        }
    }
    Ok(())
}

/// `/testkit/subs/<prefix in hex>`: a prefix is a path, not a znode name.
fn sub_path(prefix: &str) -> String {
    let hex: String = prefix.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{SUBS}/{hex}")
}

fn subscriptions() -> Result<Vec<SubscribeArgs>> {
    let names = match wazoo_sdk::children(SUBS) {
        Ok(names) => names,
        Err(e) if e.is_no_node() => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut subs = BTreeMap::new();
    for name in names {
        if let Some(node) = wazoo_sdk::get(&format!("{SUBS}/{name}"))? {
            let sub: SubscribeArgs = rmp_serde::from_slice(&node.data)?;
            subs.insert(name, sub);
        }
    }
    Ok(subs.into_values().collect())
}

fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|r| r.starts_with('/'))
}

#[cfg(test)]
mod tests;
