//! The safe API: one function per host call, plus the invocation's context. All of it is
//! re-exported at the crate root (`wazoo_sdk::get`, `wazoo_sdk::reply`, ...).
//!
//! Writes (`create`, `set`, `delete`, `multi`) are staged: later calls of the same
//! invocation see them, and they are applied atomically when the handler succeeds, or
//! discarded when it fails.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::abi::{
    Context, CreateMode, ErrorCode, HostRequest, HostResponse, OpResult, ParkedCall, Stat, WriteOp,
};
use crate::error::{Error, Result};
use crate::recipe::{set_outcome, Outcome, CURRENT};
use crate::transport::host_call;

/// A znode's data and stat, as [`get`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The data (ZooKeeper's null data reads as empty).
    pub data: Vec<u8>,
    pub stat: Stat,
}

impl Node {
    /// Decodes the data as MessagePack.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(rmp_serde::from_slice(&self.data)?)
    }
}

impl CreateMode {
    /// A plain persistent znode.
    pub const PERSISTENT: CreateMode = CreateMode {
        sequential: false,
        ephemeral_owner: None,
    };
    /// A persistent znode with a sequence suffix.
    pub const PERSISTENT_SEQUENTIAL: CreateMode = CreateMode {
        sequential: true,
        ephemeral_owner: None,
    };

    /// A znode owned by `session` (deleted when it ends).
    pub fn ephemeral(session: i64) -> CreateMode {
        CreateMode {
            sequential: false,
            ephemeral_owner: Some(session),
        }
    }

    /// An ephemeral znode with a sequence suffix.
    pub fn ephemeral_sequential(session: i64) -> CreateMode {
        CreateMode {
            sequential: true,
            ephemeral_owner: Some(session),
        }
    }
}

impl ParkedCall {
    /// Decodes the parked call's arguments, as [`crate::Call::args`] does.
    pub fn decode_args<T: DeserializeOwned>(&self) -> Result<T> {
        crate::recipe::decode_args(&self.args)
    }
}

/// Encodes a value the way the ABI does (MessagePack, structs as maps).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    Ok(rmp_serde::to_vec_named(value)?)
}

/// Decodes MessagePack.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    Ok(rmp_serde::from_slice(bytes)?)
}

fn unexpected(request: &str, response: HostResponse) -> Error {
    match response {
        HostResponse::Error(code) => Error::Host(code),
        other => Error::Decode(format!("unexpected response to {request}: {other:?}")),
    }
}

fn done(request: &'static str, req: HostRequest) -> Result<()> {
    match host_call(&req) {
        HostResponse::Done => Ok(()),
        other => Err(unexpected(request, other)),
    }
}

// --- reads ---

/// The znode at `path`, or `None` if it does not exist.
pub fn get(path: &str) -> Result<Option<Node>> {
    match host_call(&HostRequest::Get {
        path: path.to_string(),
    }) {
        HostResponse::Data { data, stat } => Ok(Some(Node {
            data: data.map(|d| d.into_vec()).unwrap_or_default(),
            stat,
        })),
        HostResponse::Error(ErrorCode::NoNode) => Ok(None),
        other => Err(unexpected("Get", other)),
    }
}

/// The znode's stat, or `None` if it does not exist.
pub fn exists(path: &str) -> Result<Option<Stat>> {
    match host_call(&HostRequest::Exists {
        path: path.to_string(),
    }) {
        HostResponse::Stat(stat) => Ok(stat),
        other => Err(unexpected("Exists", other)),
    }
}

/// The names of the znode's children, sorted. `Err(Host(NoNode))` if it does not exist.
pub fn children(path: &str) -> Result<Vec<String>> {
    match host_call(&HostRequest::Children {
        path: path.to_string(),
    }) {
        HostResponse::Children(names) => Ok(names),
        other => Err(unexpected("Children", other)),
    }
}

/// The children of `path`, or none when it does not exist.
pub fn children_or_empty(path: &str) -> Result<Vec<String>> {
    match children(path) {
        Err(e) if e.is_no_node() => Ok(Vec::new()),
        other => other,
    }
}

// --- writes ---

/// Creates a znode; returns its path (with the sequence suffix for sequential modes).
pub fn create(path: &str, data: &[u8], mode: CreateMode) -> Result<String> {
    create_with_stat(path, data, mode).map(|(path, _)| path)
}

/// Creates a znode; returns its path and stat.
pub fn create_with_stat(path: &str, data: &[u8], mode: CreateMode) -> Result<(String, Stat)> {
    match host_call(&HostRequest::Create {
        path: path.to_string(),
        data: data.to_vec(),
        mode,
    }) {
        HostResponse::Created { path, stat } => Ok((path, stat)),
        other => Err(unexpected("Create", other)),
    }
}

/// Creates `path` and its missing ancestors as empty persistent znodes; existing ones are
/// left alone.
pub fn create_all(path: &str) -> Result<()> {
    if path == "/" || exists(path)?.is_some() {
        return Ok(());
    }
    let mut prefix = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        prefix.push('/');
        prefix.push_str(part);
        // Existing ancestors are skipped rather than created: ZooKeeper checks the
        // parent's CREATE permission before NodeExists, so creating an existing node
        // under a read-only parent (such as /wazoo) fails with NoAuth.
        if exists(&prefix)?.is_some() {
            continue;
        }
        match create(&prefix, &[], CreateMode::PERSISTENT) {
            Ok(_) => {}
            Err(e) if e.is_node_exists() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sets a znode's data if its version is `version` (-1: any); returns the new stat.
pub fn set(path: &str, data: &[u8], version: i32) -> Result<Stat> {
    match host_call(&HostRequest::Set {
        path: path.to_string(),
        data: data.to_vec(),
        version,
    }) {
        HostResponse::Stat(Some(stat)) => Ok(stat),
        other => Err(unexpected("Set", other)),
    }
}

/// Deletes `path` if it exists and has no children (any version); otherwise does
/// nothing. For tidying bookkeeping znodes nobody uses any more.
pub fn delete_if_empty(path: &str) -> Result<()> {
    match delete(path, -1) {
        Err(e) if e.is_no_node() || e.code() == Some(ErrorCode::NotEmpty) => Ok(()),
        other => other,
    }
}

/// Deletes a znode if its version is `version` (-1: any).
pub fn delete(path: &str, version: i32) -> Result<()> {
    done(
        "Delete",
        HostRequest::Delete {
            path: path.to_string(),
            version,
        },
    )
}

/// Applies `ops` all or nothing. On failure, `Err(Error::Multi { index, code })` names
/// the first op that failed.
pub fn multi(ops: Vec<WriteOp>) -> Result<Vec<OpResult>> {
    match host_call(&HostRequest::Multi(ops)) {
        HostResponse::Multi(results) => {
            let mut out = Vec::with_capacity(results.len());
            for (index, r) in results.into_iter().enumerate() {
                match r {
                    Ok(op) => out.push(op),
                    Err(ErrorCode::Ok) | Err(ErrorCode::RuntimeInconsistency) => {}
                    Err(code) => return Err(Error::Multi { index, code }),
                }
            }
            Ok(out)
        }
        other => Err(unexpected("Multi", other)),
    }
}

// --- ending the current call ---

/// Replies to the current call with `value` (MessagePack, structs as maps).
pub fn reply<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    reply_raw(encode(value)?)
}

/// Replies to the current call with already-encoded bytes.
pub fn reply_raw(bytes: Vec<u8>) -> Result<()> {
    done("Reply", HostRequest::Reply(bytes))?;
    set_outcome(Outcome::Replied);
    Ok(())
}

/// Fails the current call with `message`; the invocation's writes are discarded. Usually
/// returning `Err(...)` from the handler is simpler (the SDK then calls this).
pub fn fail(message: impl Into<String>) -> Result<()> {
    done("Fail", HostRequest::Fail(message.into()))?;
    set_outcome(Outcome::Failed);
    Ok(())
}

/// Leaves the current call waiting: a later invocation completes it with [`complete`]
/// (its id is [`crate::Call::id`]). Parked calls of a session are cancelled when it ends.
pub fn park() -> Result<()> {
    done("Park", HostRequest::Park)?;
    set_outcome(Outcome::Parked);
    Ok(())
}

/// Completes a call parked in this module: `Ok(value)` replies, `Err(message)` fails it.
/// `Err(Host(NoNode))` when there is no such parked call.
pub fn complete<T: Serialize>(call_id: i64, result: Result<T, String>) -> Result<()> {
    let result = match result {
        Ok(value) => Ok(encode(&value)?),
        Err(message) => Err(message),
    };
    complete_raw(call_id, result)
}

/// [`complete`] with an already-encoded reply.
pub fn complete_raw(call_id: i64, result: Result<Vec<u8>, String>) -> Result<()> {
    let result = result.map(serde_bytes::ByteBuf::from);
    done("Complete", HostRequest::Complete { call_id, result })
}

/// This module's parked calls, oldest first.
pub fn list_parked() -> Result<Vec<ParkedCall>> {
    match host_call(&HostRequest::ListParked) {
        HostResponse::Parked(calls) => Ok(calls),
        other => Err(unexpected("ListParked", other)),
    }
}

// --- sessions, subscriptions, timers ---

/// Pushes `message` to a session. `Err(Host(SessionExpired))` if it does not exist.
pub fn notify<T: Serialize + ?Sized>(session_id: i64, message: &T) -> Result<()> {
    notify_raw(session_id, encode(message)?)
}

/// [`notify`] with already-encoded bytes.
pub fn notify_raw(session_id: i64, payload: Vec<u8>) -> Result<()> {
    done(
        "Notify",
        HostRequest::Notify {
            session_id,
            payload,
        },
    )
}

/// Receive `Event::Node` for znodes at or under `prefix`.
pub fn subscribe(prefix: &str) -> Result<()> {
    done(
        "Subscribe",
        HostRequest::Subscribe {
            prefix: prefix.to_string(),
        },
    )
}

pub fn unsubscribe(prefix: &str) -> Result<()> {
    done(
        "Unsubscribe",
        HostRequest::Unsubscribe {
            prefix: prefix.to_string(),
        },
    )
}

/// Receive `Event::SessionClosed` when the session ends. `Err(Host(SessionExpired))` if it
/// already has.
pub fn watch_session(session_id: i64) -> Result<()> {
    done("WatchSession", HostRequest::WatchSession { session_id })
}

pub fn unwatch_session(session_id: i64) -> Result<()> {
    done("UnwatchSession", HostRequest::UnwatchSession { session_id })
}

/// Whether the session exists.
pub fn session_alive(session_id: i64) -> Result<bool> {
    match host_call(&HostRequest::SessionAlive { session_id }) {
        HostResponse::Bool(alive) => Ok(alive),
        other => Err(unexpected("SessionAlive", other)),
    }
}

/// Fire `Event::Timer { name }` at or after `at_ms` (replaces a timer of the same name).
pub fn set_timer(name: &str, at_ms: i64) -> Result<()> {
    done(
        "SetTimer",
        HostRequest::SetTimer {
            name: name.to_string(),
            at_ms,
        },
    )
}

pub fn cancel_timer(name: &str) -> Result<()> {
    done(
        "CancelTimer",
        HostRequest::CancelTimer {
            name: name.to_string(),
        },
    )
}

/// A debug line in the server log.
pub fn log(message: impl Into<String>) {
    // Logging never fails in a way a recipe could act on.
    let _ = done("Log", HostRequest::Log(message.into()));
}

// --- context ---

fn with_context<T>(f: impl FnOnce(&Context) -> T) -> T {
    CURRENT.with(|c| {
        let current = c.borrow();
        let current = current
            .as_ref()
            .expect("wazoo_sdk context used outside an invocation");
        f(&current.context)
    })
}

/// The context of the current invocation.
pub fn context() -> Context {
    with_context(Context::clone)
}

/// The log entry's timestamp (ms since the Unix epoch): the recipe's only clock.
pub fn now_ms() -> i64 {
    with_context(|c| c.now_ms)
}

/// The zxid of the operation being applied (increasing: usable as a fencing token).
pub fn zxid() -> i64 {
    with_context(|c| c.zxid)
}

/// The entry's seed (same on every replica): the recipe's only randomness. See
/// [`crate::Rng`].
pub fn seed() -> u64 {
    with_context(|c| c.seed)
}

/// The recipe's registered name.
pub fn module_name() -> String {
    with_context(|c| c.module.clone())
}

/// The version of the recipe being run.
pub fn module_version() -> i32 {
    with_context(|c| c.version)
}

/// Whether the current invocation is a call (as opposed to an event).
pub fn in_call() -> bool {
    CURRENT.with(|c| c.borrow().as_ref().is_some_and(|cur| cur.is_call))
}
