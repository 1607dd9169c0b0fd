//! `lock`: the lock family (exclusive lock, read-write lock, counting semaphore), FIFO,
//! with fencing tokens. The full reference (layout, errors, the fencing guarantee) is
//! the "## lock" section of docs/RECIPES.md.
//!
//! Arguments and replies are MessagePack maps; optional keys are marked `?`. Every
//! function that names a lock takes `name` (not empty, no `/`, not starting with `.`).
//!
//! | function | arguments | reply |
//! | --- | --- | --- |
//! | `acquire` | `{name, timeout_ms?, resume?}` | `Granted` at once if the lock is free and nobody waits; else the call parks and is completed with `Granted` when its turn comes (FIFO), or failed with `timeout` after `timeout_ms` (0: fail at once instead of parking) |
//! | `try_acquire` | `{name}` | never parks: `Granted`, or `{granted: false, name, token: nil, path: nil, since: nil}` |
//! | `release` | `{name, token?}` | nil; the oldest waiter gets the lock. Fails `not the holder` unless the caller holds it (with that token, if given) |
//! | `read_acquire` / `write_acquire` | `{name, timeout_ms?}` | as `acquire`, for a read-write lock: many readers or one writer, FIFO (a waiting writer blocks the readers behind it) |
//! | `try_read_acquire` / `try_write_acquire` | `{name}` | as `try_acquire` |
//! | `read_release` / `write_release` | `{name, token?}` | as `release`; wakes the oldest waiters that fit (a run of readers, or one writer) |
//! | `sem_init` | `{name, permits}` | nil; declares a semaphore of `permits` (>= 1) holders, kept while unused; on an existing semaphore changes its permits (waiters that now fit are granted) |
//! | `sem_acquire` | `{name, permits?, timeout_ms?}` | as `acquire`, for a semaphore: up to `permits` holders. `permits` creates the semaphore if needed (the first acquirer's value) and must match it otherwise |
//! | `sem_try_acquire` | `{name, permits?}` | as `try_acquire` |
//! | `sem_release` | `{name, token?}` | as `release`: gives back the caller's permit |
//! | `revoke` | `{name, session_id?}` | `[Holder]`: takes the lock from every holder (or only `session_id`'s) from any session; each revoked holder whose session is alive gets the notification `{event: "revoked", name, token, path}`; waiters that now fit are granted |
//! | `holder` | `{name}` | the oldest holder `Holder` or nil |
//! | `holders` | `{name}` | `[Holder]`, oldest grant first |
//! | `waiters` | `{name}` | `[{call_id, session_id, function, mode}]`, the queue, oldest first |
//!
//! `Granted` = `{granted: true, name, token, path, since}` and `Holder` =
//! `{session_id, token, since, mode, path}`: `token` is the zxid of the operation that
//! granted the lock (also the `czxid` of the holder znode at `path`), `since` its time
//! (ms since the epoch), `mode` one of `exclusive`, `read`, `write`, `permit`.
//!
//! A session holds a lock at most once (asking again fails `already held`: no
//! reentrancy, no upgrade). An acquire with `resume: true` (a retry after a lost
//! connection) replies the session's current grant, or waits with its earlier parked
//! call of the same function (same place in the queue, same outcome). Names are one namespace: using a lock as another kind than
//! it was created as fails.
//!
//! State, under `/wazoo/recipes/lock/`:
//! - `<name>`: `{kind, permits, declared}` while the lock is held or waited for (or
//!   forever for a `sem_init` semaphore);
//! - `<name>/holders/<token as 19 digits>-<session as 16 hex digits>-<mode>`: one
//!   ephemeral znode per holder, owned by its session, data `Holder`;
//! - `<name>/queue/<call id as 19 digits>-<session as 16 hex digits>-<mode>[-t][-r]`:
//!   one ephemeral znode per waiting acquire, owned by the waiter's session (so it
//!   goes with the session), no data; oldest call first. `-t`: the call has a timeout
//!   timer; `-r`: a resumed call waiting with the session's earlier call (a shadow);
//! - `.sessions/<session as 16 hex digits>`: the names of the locks a session has
//!   been granted (MessagePack array), so that the recipe can wake their waiters when
//!   it ends. Kept until the session ends (a lock released since is harmless there:
//!   waking it grants nothing), pruned to the locks still held when it passes
//!   [`INDEX_PRUNE_AT`] names; keeping it saves two writes per grant.
//!
//! The queue is the lock's own index of its parked calls: a call parks and gets its
//! queue znode in the same invocation, and leaves it when completed, failed or timed
//! out. Each operation therefore reads one lock's queue (its znode names), never the
//! module's whole list of parked calls: an acquire that must wait reads only the
//! queue's child count, and a release the queue's names. A lock created by an earlier
//! version of this recipe (no `queue` znode) gets its queue built from `list_parked`
//! on first use.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use wazoo_sdk::{Call, CreateMode, Error, ErrorCode, Event, ParkedCall, Recipe, Result};

/// Where the locks live.
pub const ROOT: &str = "/wazoo/recipes/lock";
/// Per-session index of the locks held.
pub const SESSIONS: &str = "/wazoo/recipes/lock/.sessions";
/// A session index longer than this is pruned to the locks the session still holds.
pub const INDEX_PRUNE_AT: usize = 32;

/// The failure message of a release (or revoke target) by someone who does not hold.
pub const NOT_THE_HOLDER: &str = "not the holder";
/// The failure message of a parked call whose `timeout_ms` passed.
pub const TIMEOUT: &str = "timeout";
/// The failure message of an acquire by a session that holds the lock already.
pub const ALREADY_HELD: &str = "already held";

/// What a lock is; fixed when its znode is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Mutex,
    Rwlock,
    Semaphore,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Mutex => "mutex",
            Kind::Rwlock => "rwlock",
            Kind::Semaphore => "semaphore",
        }
    }
}

/// How a holder holds a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The exclusive lock.
    Exclusive,
    /// A reader of a read-write lock.
    Read,
    /// The writer of a read-write lock.
    Write,
    /// A permit of a semaphore.
    Permit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Exclusive => "exclusive",
            Mode::Read => "read",
            Mode::Write => "write",
            Mode::Permit => "permit",
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Mode::Exclusive => Kind::Mutex,
            Mode::Read | Mode::Write => Kind::Rwlock,
            Mode::Permit => Kind::Semaphore,
        }
    }

    /// The function that acquires in this mode (the parked calls' name).
    pub fn acquire_function(self) -> &'static str {
        match self {
            Mode::Exclusive => "acquire",
            Mode::Read => "read_acquire",
            Mode::Write => "write_acquire",
            Mode::Permit => "sem_acquire",
        }
    }

    /// The function that releases this mode.
    pub fn release_function(self) -> &'static str {
        match self {
            Mode::Exclusive => "release",
            Mode::Read => "read_release",
            Mode::Write => "write_release",
            Mode::Permit => "sem_release",
        }
    }

    /// The mode of a parkable acquire function.
    pub fn of_acquire(function: &str) -> Option<Mode> {
        [Mode::Exclusive, Mode::Read, Mode::Write, Mode::Permit]
            .into_iter()
            .find(|m| m.acquire_function() == function)
    }
}

// --- arguments ---

/// `{name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NameArgs {
    pub name: String,
}

/// `{name, timeout_ms?, permits?}`: every acquire function (`permits` only for the
/// semaphore's).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AcquireArgs {
    pub name: String,
    #[serde(default)]
    pub timeout_ms: Option<i64>,
    #[serde(default)]
    pub permits: Option<u32>,
    /// A retry after a lost connection: reply the session's current grant, or wait
    /// with (as a shadow of) the session's earlier parked acquire. See [`acquire`].
    #[serde(default)]
    pub resume: Option<bool>,
}

/// `{name, token?}`: every release function.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReleaseArgs {
    pub name: String,
    #[serde(default)]
    pub token: Option<i64>,
}

/// `{name, permits}`: `sem_init`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SemInitArgs {
    pub name: String,
    pub permits: u32,
}

/// `{name, session_id?}`: `revoke`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RevokeArgs {
    pub name: String,
    #[serde(default)]
    pub session_id: Option<i64>,
}

// --- replies and state ---

/// The reply of a granted acquire (and of a granted try).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    /// Always true (so that one type decodes tries too: see [`TryGrant`]).
    pub granted: bool,
    pub name: String,
    /// The fencing token: the zxid of the grant, the holder znode's czxid.
    pub token: i64,
    /// The holder znode.
    pub path: String,
    /// When it was granted (ms since the epoch).
    pub since: i64,
}

/// The reply of the `try_*` functions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TryGrant {
    pub granted: bool,
    pub name: String,
    pub token: Option<i64>,
    pub path: Option<String>,
    pub since: Option<i64>,
}

/// A holder: the data of its znode, and what `holder`, `holders` and `revoke` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub session_id: i64,
    pub token: i64,
    pub since: i64,
    pub mode: Mode,
    pub path: String,
}

/// A waiter, as `waiters` replies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    pub call_id: i64,
    pub session_id: i64,
    pub function: String,
    pub mode: Mode,
}

/// The notification a revoked holder gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// "revoked".
    pub event: String,
    pub name: String,
    pub token: i64,
    pub path: String,
}

/// The lock znode's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub kind: Kind,
    /// The semaphore's number of permits (nil for the other kinds).
    #[serde(default)]
    pub permits: Option<u32>,
    /// Created by `sem_init`: kept when unused.
    #[serde(default)]
    pub declared: bool,
}

pub struct Lock;

impl Recipe for Lock {
    fn call(call: &Call) -> Result<()> {
        let f = call.function();
        match f {
            "acquire" | "read_acquire" | "write_acquire" | "sem_acquire" => {
                let mode = Mode::of_acquire(f).expect("acquire function");
                acquire(call, mode, false)
            }
            "try_acquire" => acquire(call, Mode::Exclusive, true),
            "try_read_acquire" => acquire(call, Mode::Read, true),
            "try_write_acquire" => acquire(call, Mode::Write, true),
            "sem_try_acquire" => acquire(call, Mode::Permit, true),
            "release" => release(call, Mode::Exclusive),
            "read_release" => release(call, Mode::Read),
            "write_release" => release(call, Mode::Write),
            "sem_release" => release(call, Mode::Permit),
            "sem_init" => sem_init(call),
            "revoke" => revoke(call),
            "holder" => {
                let NameArgs { name } = call.args()?;
                check_name(&name)?;
                let first = list_holders(&name)?.into_iter().next();
                let first = match first {
                    Some(h) => wazoo_sdk::get(&h.path)?
                        .map(|n| n.decode::<Holder>())
                        .transpose()?,
                    None => None,
                };
                call.reply(&first)
            }
            "holders" => {
                let NameArgs { name } = call.args()?;
                check_name(&name)?;
                call.reply(&list_holders_full(&name)?)
            }
            "waiters" => {
                let NameArgs { name } = call.args()?;
                check_name(&name)?;
                let entries = match load_info(&name)? {
                    Some(_) => queue_entries(&name)?,
                    None => Vec::new(),
                };
                let waiters: Vec<Waiter> = entries
                    .into_iter()
                    .map(|e| Waiter {
                        call_id: e.call_id,
                        session_id: e.session_id,
                        function: e.mode.acquire_function().to_string(),
                        mode: e.mode,
                    })
                    .collect();
                call.reply(&waiters)
            }
            other => Err(Error::UnknownFunction(other.to_string())),
        }
    }

    fn event(event: &Event) -> Result<()> {
        match event {
            Event::SessionClosed {
                session_id,
                cancelled,
            } => session_closed(*session_id, cancelled),
            Event::Timer { name } => match parse_timer(name) {
                Some((call_id, lock)) => timed_out(call_id, lock),
                None => Ok(()),
            },
            Event::Node { .. } => Ok(()),
        }
    }
}

wazoo_sdk::recipe!(Lock);

// --- functions ---

fn acquire(call: &Call, mode: Mode, try_only: bool) -> Result<()> {
    let args: AcquireArgs = call.args()?;
    let name = &args.name;
    check_name(name)?;
    if args.timeout_ms.is_some_and(|t| t < 0) {
        return Err(Error::msg("bad arguments: timeout_ms must be >= 0"));
    }
    let permits = if mode == Mode::Permit {
        args.permits
    } else {
        None
    };
    let info = ensure_lock(name, mode.kind(), permits, false)?;
    let mut holders = list_holders(name)?;
    if args.resume == Some(true) {
        // A retry after a lost connection. The server never cancels a parked call
        // when its connection drops (only when its session ends), so the session's
        // place is still its earlier call, or that call was granted meanwhile and
        // its completion went to the lost connection.
        if holders
            .iter()
            .any(|h| h.session_id == call.session_id() && h.mode == mode)
        {
            // The holder znode's data has the grant's time (`since`).
            if let Some(h) = list_holders_full(name)?
                .into_iter()
                .find(|h| h.session_id == call.session_id() && h.mode == mode)
            {
                return call.reply(&granted(name, &h));
            }
        }
        // (A try never parks: for it, only the grant above can be resumed.)
        let waits = !try_only
            && queue_entries(name)?
                .iter()
                .any(|e| e.session_id == call.session_id() && e.mode == mode && !e.shadow);
        if waits {
            // A shadow: no place of its own; completed together with the earlier
            // call (see `settle`), which keeps its place and its timer.
            call.park()?;
            return enqueue(name, call, mode, false, true);
        }
    }
    if holders.iter().any(|h| h.session_id == call.session_id()) {
        return Err(Error::msg(ALREADY_HELD));
    }
    let mut waiting = queue_len(name)? > 0;
    // Waiters that fit are granted when a holder leaves, so a queue whose head fits
    // means a lost wake-up: let the queue go first. (Never for an exclusive lock
    // that is held, the contended case: nothing fits there.)
    if waiting && (info.kind != Kind::Mutex || holders.is_empty()) {
        (holders, waiting) = settle(name, &info)?;
        if holders.iter().any(|h| h.session_id == call.session_id()) {
            return Err(Error::msg(ALREADY_HELD));
        }
    }
    if !waiting && compatible(&info, &holders, mode) {
        let h = grant(name, call.session_id(), mode)?;
        return call.reply(&granted(name, &h));
    }
    if try_only {
        return call.reply(&TryGrant {
            granted: false,
            name: name.clone(),
            token: None,
            path: None,
            since: None,
        });
    }
    match args.timeout_ms {
        Some(0) => Err(Error::msg(TIMEOUT)),
        Some(t) => {
            call.park()?;
            enqueue(name, call, mode, true, false)?;
            wazoo_sdk::set_timer(
                &timer_name(call.id(), name),
                wazoo_sdk::now_ms().saturating_add(t),
            )
        }
        None => {
            call.park()?;
            enqueue(name, call, mode, false, false)
        }
    }
}

fn release(call: &Call, mode: Mode) -> Result<()> {
    let ReleaseArgs { name, token } = call.args()?;
    check_name(&name)?;
    let Some(info) = load_info(&name)? else {
        return Err(Error::msg(NOT_THE_HOLDER));
    };
    check_kind(&name, &info, mode.kind())?;
    let holder = list_holders(&name)?
        .into_iter()
        .find(|h| h.session_id == call.session_id() && h.mode == mode);
    match holder {
        Some(h) if token.is_none_or(|t| t == h.token) => {
            drop_holder(&h)?;
            wake(&name, &info)?;
            call.reply(&())
        }
        _ => Err(Error::msg(NOT_THE_HOLDER)),
    }
}

fn sem_init(call: &Call) -> Result<()> {
    let SemInitArgs { name, permits } = call.args()?;
    check_name(&name)?;
    check_permits(permits)?;
    let info = match load_info(&name)? {
        None => ensure_lock(&name, Kind::Semaphore, Some(permits), true)?,
        Some(old) => {
            check_kind(&name, &old, Kind::Semaphore)?;
            let info = LockInfo {
                kind: Kind::Semaphore,
                permits: Some(permits),
                declared: true,
            };
            if info != old {
                wazoo_sdk::set(&lock_path(&name), &wazoo_sdk::encode(&info)?, -1)?;
            }
            info
        }
    };
    // More permits may let waiters in.
    settle(&name, &info)?;
    call.reply(&())
}

fn revoke(call: &Call) -> Result<()> {
    let RevokeArgs { name, session_id } = call.args()?;
    check_name(&name)?;
    let Some(info) = load_info(&name)? else {
        return call.reply(&Vec::<Holder>::new());
    };
    let revoked: Vec<Holder> = list_holders_full(&name)?
        .into_iter()
        .filter(|h| session_id.is_none_or(|s| s == h.session_id))
        .collect();
    for h in &revoked {
        drop_holder(h)?;
        if wazoo_sdk::session_alive(h.session_id)? {
            wazoo_sdk::notify(
                h.session_id,
                &Notice {
                    event: "revoked".to_string(),
                    name: name.clone(),
                    token: h.token,
                    path: h.path.clone(),
                },
            )?;
        }
    }
    if !revoked.is_empty() {
        wazoo_sdk::log(format!(
            "lock {name}: revoked by session {:#x}: {} holder(s)",
            call.session_id(),
            revoked.len()
        ));
    }
    wake(&name, &info)?;
    call.reply(&revoked)
}

// --- events ---

fn session_closed(session: i64, cancelled: &[ParkedCall]) -> Result<()> {
    // Its waiters were cancelled by the host: their timers go, and their locks may now
    // let the waiters behind them in (a cancelled writer blocked readers).
    let mut names = BTreeSet::new();
    for c in cancelled {
        if Mode::of_acquire(&c.function).is_none() {
            continue;
        }
        if let Ok(args) = c.decode_args::<AcquireArgs>() {
            if args.timeout_ms.is_some() {
                wazoo_sdk::cancel_timer(&timer_name(c.call_id, &args.name))?;
                // (A timer set by an earlier version of this recipe.)
                wazoo_sdk::cancel_timer(&format!("timeout/{}", c.call_id))?;
            }
            names.insert(args.name);
        }
    }
    // Its holder and queue znodes are ephemerals, gone already: wake the waiters of
    // its locks.
    let index = index_path(session);
    if let Some(node) = wazoo_sdk::get(&index)? {
        let held: Vec<String> = node.decode().unwrap_or_default();
        names.extend(held);
        wazoo_sdk::delete(&index, -1)?;
    }
    for name in names {
        let Some(info) = load_info(&name)? else {
            continue;
        };
        for h in list_holders(&name)? {
            if h.session_id == session {
                ignore_no_node(wazoo_sdk::delete(&h.path, -1))?;
            }
        }
        wazoo_sdk::log(format!("lock {name}: session {session:#x} ended"));
        wake(&name, &info)?;
    }
    Ok(())
}

fn timed_out(call_id: i64, lock: Option<&str>) -> Result<()> {
    let name = match lock {
        Some(name) => name.to_string(),
        // A timer set by an earlier version of this recipe names only the call.
        None => {
            let Some(parked) = wazoo_sdk::list_parked()?
                .into_iter()
                .find(|p| p.call_id == call_id)
            else {
                // Granted or cancelled meanwhile.
                return Ok(());
            };
            match parked.decode_args::<AcquireArgs>() {
                Ok(args) => args.name,
                Err(_) => return Ok(()),
            }
        }
    };
    let Some(info) = load_info(&name)? else {
        return Ok(());
    };
    let entries = queue_entries(&name)?;
    let Some(first) = entries.iter().find(|e| e.call_id == call_id && !e.shadow) else {
        // Granted or cancelled meanwhile.
        return Ok(());
    };
    finish(&name, first, Err(TIMEOUT.to_string()))?;
    // Its shadows (resumed calls of the same session) time out with it.
    for e in &entries {
        if e.shadow
            && e.session_id == first.session_id
            && e.mode == first.mode
            && e.call_id > call_id
        {
            finish(&name, e, Err(TIMEOUT.to_string()))?;
        }
    }
    // It may have been the head of the queue, blocking others that fit now.
    wake(&name, &info)
}

// --- the lock's state ---

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') || name.contains('\0') {
        return Err(Error::msg(format!("bad lock name {name:?}")));
    }
    Ok(())
}

fn check_permits(permits: u32) -> Result<()> {
    if permits == 0 {
        return Err(Error::msg("bad arguments: permits must be >= 1"));
    }
    Ok(())
}

fn check_kind(name: &str, info: &LockInfo, kind: Kind) -> Result<()> {
    if info.kind != kind {
        return Err(Error::msg(format!(
            "wrong kind: lock {name} is a {}, not a {}",
            info.kind.as_str(),
            kind.as_str()
        )));
    }
    Ok(())
}

pub fn lock_path(name: &str) -> String {
    format!("{ROOT}/{name}")
}

pub fn holders_path(name: &str) -> String {
    format!("{ROOT}/{name}/holders")
}

pub fn queue_path(name: &str) -> String {
    format!("{ROOT}/{name}/queue")
}

pub fn holder_path(name: &str, token: i64, session: i64, mode: Mode) -> String {
    format!(
        "{ROOT}/{name}/holders/{token:019}-{session:016x}-{}",
        mode.as_str()
    )
}

/// Reads a holder znode's name: (token, session, mode).
fn parse_holder(child: &str) -> Option<(i64, i64, Mode)> {
    let mut parts = child.splitn(3, '-');
    let token = parts.next()?.parse().ok()?;
    // Written with {:016x}: two's complement for a negative id.
    let session = u64::from_str_radix(parts.next()?, 16).ok()? as i64;
    let mode = match parts.next()? {
        "exclusive" => Mode::Exclusive,
        "read" => Mode::Read,
        "write" => Mode::Write,
        "permit" => Mode::Permit,
        _ => return None,
    };
    Some((token, session, mode))
}

pub fn index_path(session: i64) -> String {
    format!("{SESSIONS}/{session:016x}")
}

fn timer_name(call_id: i64, lock: &str) -> String {
    format!("timeout/{call_id}/{lock}")
}

/// A timer's call id and lock name (`None` for a timer set by an earlier version of
/// this recipe, which named only the call).
fn parse_timer(name: &str) -> Option<(i64, Option<&str>)> {
    let rest = name.strip_prefix("timeout/")?;
    match rest.split_once('/') {
        Some((id, lock)) => Some((id.parse().ok()?, Some(lock))),
        None => Some((rest.parse().ok()?, None)),
    }
}

fn ignore_no_node(r: Result<()>) -> Result<()> {
    match r {
        Err(e) if e.is_no_node() => Ok(()),
        other => other,
    }
}

fn load_info(name: &str) -> Result<Option<LockInfo>> {
    match wazoo_sdk::get(&lock_path(name))? {
        Some(node) => Ok(Some(node.decode()?)),
        None => Ok(None),
    }
}

/// The lock's info, creating its znodes if needed; fails on a kind or permits mismatch.
fn ensure_lock(name: &str, kind: Kind, permits: Option<u32>, declared: bool) -> Result<LockInfo> {
    if let Some(info) = load_info(name)? {
        check_kind(name, &info, kind)?;
        if let (Some(p), Some(have)) = (permits, info.permits) {
            if p != have {
                return Err(Error::msg(format!(
                    "wrong permits: semaphore {name} has {have} permits, not {p}"
                )));
            }
        }
        return Ok(info);
    }
    let permits = match kind {
        Kind::Semaphore => {
            let p = permits.ok_or_else(|| {
                Error::msg(format!(
                    "permits required: semaphore {name} does not exist (pass permits or call sem_init)"
                ))
            })?;
            check_permits(p)?;
            Some(p)
        }
        _ => None,
    };
    let info = LockInfo {
        kind,
        permits,
        declared,
    };
    wazoo_sdk::create_all(ROOT)?;
    wazoo_sdk::create(
        &lock_path(name),
        &wazoo_sdk::encode(&info)?,
        CreateMode::PERSISTENT,
    )?;
    wazoo_sdk::create(&holders_path(name), &[], CreateMode::PERSISTENT)?;
    wazoo_sdk::create(&queue_path(name), &[], CreateMode::PERSISTENT)?;
    Ok(info)
}

/// The holders, oldest grant first, from the holder znodes' names alone (one host
/// call however many holders): `since` is 0. See [`list_holders_full`].
fn list_holders(name: &str) -> Result<Vec<Holder>> {
    let dir = holders_path(name);
    let children = match wazoo_sdk::children(&dir) {
        Ok(c) => c,
        Err(e) if e.is_no_node() => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(children
        .iter()
        .filter_map(|child| {
            let (token, session_id, mode) = parse_holder(child)?;
            Some(Holder {
                session_id,
                token,
                since: 0,
                mode,
                path: format!("{dir}/{child}"),
            })
        })
        .collect())
}

/// The holders with their data (`since`), for replies.
fn list_holders_full(name: &str) -> Result<Vec<Holder>> {
    let mut holders = Vec::new();
    for h in list_holders(name)? {
        if let Some(node) = wazoo_sdk::get(&h.path)? {
            holders.push(node.decode()?);
        }
    }
    Ok(holders)
}

/// A waiting acquire: a znode of the lock's queue, named after the parked call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub call_id: i64,
    pub session_id: i64,
    pub mode: Mode,
    /// The call has a timeout timer.
    pub timeout: bool,
    /// A resumed call waiting with its session's earlier call of this mode.
    pub shadow: bool,
}

impl QueueEntry {
    pub fn child_name(&self) -> String {
        format!(
            "{:019}-{:016x}-{}{}{}",
            self.call_id,
            self.session_id,
            self.mode.as_str(),
            if self.timeout { "-t" } else { "" },
            if self.shadow { "-r" } else { "" },
        )
    }

    pub fn parse(child: &str) -> Option<QueueEntry> {
        let mut parts = child.split('-');
        let call_id = parts.next()?.parse().ok()?;
        // Written with {:016x}: two's complement for a negative id.
        let session_id = u64::from_str_radix(parts.next()?, 16).ok()? as i64;
        let mode = Mode::of_acquire(parts.next().map(|m| match m {
            "exclusive" => "acquire",
            "read" => "read_acquire",
            "write" => "write_acquire",
            "permit" => "sem_acquire",
            _ => "",
        })?)?;
        let mut entry = QueueEntry {
            call_id,
            session_id,
            mode,
            timeout: false,
            shadow: false,
        };
        for flag in parts {
            match flag {
                "t" => entry.timeout = true,
                "r" => entry.shadow = true,
                _ => return None,
            }
        }
        Some(entry)
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{}", queue_path(name), self.child_name())
    }
}

/// Puts the call being run (parked by the caller) at the back of `name`'s queue.
fn enqueue(name: &str, call: &Call, mode: Mode, timeout: bool, shadow: bool) -> Result<()> {
    let entry = QueueEntry {
        call_id: call.id(),
        session_id: call.session_id(),
        mode,
        timeout,
        shadow,
    };
    wazoo_sdk::create(
        &entry.path(name),
        &[],
        CreateMode::ephemeral(call.session_id()),
    )?;
    Ok(())
}

/// The queue of an existing lock, oldest call first.
fn queue_entries(name: &str) -> Result<Vec<QueueEntry>> {
    let children = match wazoo_sdk::children(&queue_path(name)) {
        Ok(c) => c,
        Err(e) if e.is_no_node() => return migrate_queue(name),
        Err(e) => return Err(e),
    };
    // (`Children` is sorted, and zero-padded call ids sort as numbers; sorting again
    // only guards against a hand-made name.)
    let mut entries: Vec<QueueEntry> = children
        .iter()
        .filter_map(|c| QueueEntry::parse(c))
        .collect();
    entries.sort_by_key(|e| e.call_id);
    Ok(entries)
}

/// The places of `name`'s queue in order, parsed only as far as the caller reads them
/// (a release usually needs the first one): the queue's names are read in one host
/// call, but parsing them all would cost fuel in proportion to the queue's length.
/// With a shadow in the queue (rare: a resumed call) every entry is parsed, so that
/// each place gets its shadows.
fn queue_places(name: &str) -> Result<Box<dyn Iterator<Item = Place>>> {
    let children = match wazoo_sdk::children(&queue_path(name)) {
        Ok(c) => c,
        Err(e) if e.is_no_node() => return Ok(Box::new(places(migrate_queue(name)?).into_iter())),
        Err(e) => return Err(e),
    };
    if children.iter().any(|c| c.ends_with("-r")) {
        let mut entries: Vec<QueueEntry> = children
            .iter()
            .filter_map(|c| QueueEntry::parse(c))
            .collect();
        entries.sort_by_key(|e| e.call_id);
        return Ok(Box::new(places(entries).into_iter()));
    }
    Ok(Box::new(children.into_iter().filter_map(|c| {
        QueueEntry::parse(&c).map(|first| Place {
            first,
            shadows: Vec::new(),
        })
    })))
}

/// How many calls wait for an existing lock (one read).
fn queue_len(name: &str) -> Result<usize> {
    match wazoo_sdk::exists(&queue_path(name))? {
        Some(stat) => Ok(usize::try_from(stat.num_children).unwrap_or(0)),
        None => Ok(migrate_queue(name)?.len()),
    }
}

/// Builds the queue of a lock created by an earlier version of this recipe, whose
/// queue was only the module's parked calls.
fn migrate_queue(name: &str) -> Result<Vec<QueueEntry>> {
    let mut entries = Vec::new();
    let mut places: Vec<(i64, Mode)> = Vec::new();
    for call in wazoo_sdk::list_parked()? {
        let Some(mode) = Mode::of_acquire(&call.function) else {
            continue;
        };
        let Ok(args) = call.decode_args::<AcquireArgs>() else {
            continue;
        };
        if args.name != name {
            continue;
        }
        let shadow = args.resume == Some(true)
            && places
                .iter()
                .any(|&(s, m)| s == call.session_id && m == mode);
        if !shadow {
            places.push((call.session_id, mode));
        }
        entries.push(QueueEntry {
            call_id: call.call_id,
            session_id: call.session_id,
            mode,
            timeout: args.timeout_ms.is_some(),
            shadow,
        });
    }
    wazoo_sdk::create(&queue_path(name), &[], CreateMode::PERSISTENT)?;
    for e in &entries {
        // (Its timer keeps its old name and is found through `list_parked`.)
        wazoo_sdk::create(&e.path(name), &[], CreateMode::ephemeral(e.session_id))?;
    }
    entries.sort_by_key(|e| e.call_id);
    Ok(entries)
}

/// A place in the queue: a waiting acquire and the resumed calls (retries after a
/// lost connection) waiting with it, which get its outcome.
struct Place {
    first: QueueEntry,
    shadows: Vec<QueueEntry>,
}

/// The places of a queue: each shadow folded into the earlier call of its session
/// and mode (a shadow whose call is gone takes a place of its own).
fn places(entries: Vec<QueueEntry>) -> Vec<Place> {
    let mut places: Vec<Place> = Vec::new();
    for e in entries {
        if e.shadow {
            if let Some(p) = places
                .iter_mut()
                .find(|p| p.first.session_id == e.session_id && p.first.mode == e.mode)
            {
                p.shadows.push(e);
                continue;
            }
        }
        places.push(Place {
            first: e,
            shadows: Vec::new(),
        });
    }
    places
}

/// Completes a place: its parked call and every shadow of it, with the same result.
/// Returns whether any of them was still parked.
fn finish_place(
    name: &str,
    place: &Place,
    result: std::result::Result<Granted, String>,
) -> Result<bool> {
    let mut any = false;
    for e in std::iter::once(&place.first).chain(&place.shadows) {
        any |= finish(name, e, result.clone())?;
    }
    Ok(any)
}

/// Whether a new holder in `mode` fits next to `holders`.
fn compatible(info: &LockInfo, holders: &[Holder], mode: Mode) -> bool {
    match mode {
        Mode::Exclusive | Mode::Write => holders.is_empty(),
        Mode::Read => holders.iter().all(|h| h.mode == Mode::Read),
        Mode::Permit => (holders.len() as u64) < u64::from(info.permits.unwrap_or(1)),
    }
}

/// Makes `session` a holder with a fresh token (the zxid of this operation).
fn grant(name: &str, session: i64, mode: Mode) -> Result<Holder> {
    let token = wazoo_sdk::zxid();
    let holder = Holder {
        session_id: session,
        token,
        since: wazoo_sdk::now_ms(),
        mode,
        path: holder_path(name, token, session, mode),
    };
    wazoo_sdk::create(
        &holder.path,
        &wazoo_sdk::encode(&holder)?,
        CreateMode::ephemeral(session),
    )?;
    // Remember it for the session's end (see the layout above: kept until then).
    let index = index_path(session);
    match wazoo_sdk::get(&index)? {
        Some(node) => {
            let mut names: Vec<String> = node.decode().unwrap_or_default();
            if !names.iter().any(|n| n == name) {
                if names.len() >= INDEX_PRUNE_AT {
                    let mut held = Vec::with_capacity(names.len());
                    for n in names {
                        if list_holders(&n)?.iter().any(|h| h.session_id == session) {
                            held.push(n);
                        }
                    }
                    names = held;
                }
                names.push(name.to_string());
                wazoo_sdk::set(&index, &wazoo_sdk::encode(&names)?, -1)?;
            }
        }
        None => {
            let data = wazoo_sdk::encode(&[name])?;
            match wazoo_sdk::create(&index, &data, CreateMode::PERSISTENT) {
                Err(e) if e.is_no_node() => {
                    wazoo_sdk::create_all(SESSIONS)?;
                    wazoo_sdk::create(&index, &data, CreateMode::PERSISTENT)?;
                }
                other => {
                    other?;
                }
            }
            wazoo_sdk::watch_session(session)?;
        }
    }
    Ok(holder)
}

fn granted(name: &str, h: &Holder) -> Granted {
    Granted {
        granted: true,
        name: name.to_string(),
        token: h.token,
        path: h.path.clone(),
        since: h.since,
    }
}

/// Removes a holder (release, revoke). Its session's index keeps the name (see
/// the layout above).
fn drop_holder(h: &Holder) -> Result<()> {
    ignore_no_node(wazoo_sdk::delete(&h.path, -1))
}

/// Grants the lock to the oldest waiters while they fit (FIFO: the first that does not
/// fit stops the rest). Returns the holders and whether anyone is left waiting.
fn settle(name: &str, info: &LockInfo) -> Result<(Vec<Holder>, bool)> {
    let mut holders = list_holders(name)?;
    for place in queue_places(name)? {
        let w = &place.first;
        let session = w.session_id;
        if w.mode.kind() != info.kind {
            // Cannot happen (the kind is checked before parking); never block on it.
            finish_place(
                name,
                &place,
                Err(format!(
                    "wrong kind: lock {name} is a {}",
                    info.kind.as_str()
                )),
            )?;
            continue;
        }
        if !wazoo_sdk::session_alive(session)? {
            // Its znodes go with the session; never block on them meanwhile.
            continue;
        }
        if holders.iter().any(|h| h.session_id == session) {
            finish_place(name, &place, Err(ALREADY_HELD.to_string()))?;
            continue;
        }
        if !compatible(info, &holders, w.mode) {
            return Ok((holders, true));
        }
        let h = grant(name, session, w.mode)?;
        if finish_place(name, &place, Ok(granted(name, &h)))? {
            holders.push(h);
        } else {
            // A stale queue entry (its call is gone, e.g. with an earlier version
            // of the module): nobody to grant to.
            drop_holder(&h)?;
        }
    }
    Ok((holders, false))
}

/// Completes a parked acquire, cancels its timeout and takes it out of the queue.
/// Returns whether the call was still parked.
fn finish(
    name: &str,
    entry: &QueueEntry,
    result: std::result::Result<Granted, String>,
) -> Result<bool> {
    let parked = match wazoo_sdk::complete(entry.call_id, result) {
        Ok(()) => true,
        Err(e) if e.is_no_node() => false,
        Err(e) => return Err(e),
    };
    if entry.timeout {
        wazoo_sdk::cancel_timer(&timer_name(entry.call_id, name))?;
        wazoo_sdk::cancel_timer(&format!("timeout/{}", entry.call_id))?;
    }
    ignore_no_node(wazoo_sdk::delete(&entry.path(name), -1))?;
    Ok(parked)
}

/// After a holder or a waiter left: grants what fits, and removes the lock's znodes
/// when nobody holds or waits (unless `sem_init` declared it).
fn wake(name: &str, info: &LockInfo) -> Result<()> {
    let (holders, waiting) = settle(name, info)?;
    if holders.is_empty() && !waiting && !info.declared {
        ignore_no_node(wazoo_sdk::delete(&holders_path(name), -1))?;
        match wazoo_sdk::delete(&queue_path(name), -1) {
            // (Ephemerals of sessions ending in this very operation.)
            Err(e) if e.code() == Some(ErrorCode::NotEmpty) => {}
            other => ignore_no_node(other)?,
        }
        match wazoo_sdk::delete(&lock_path(name), -1) {
            Err(e) if e.code() == Some(ErrorCode::NotEmpty) => {}
            other => ignore_no_node(other)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
