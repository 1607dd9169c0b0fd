//! A native test double of the Wazoo host, to unit-test recipes with `cargo test`.
//!
//! ```ignore
//! use wazoo_sdk::testing::Harness;
//!
//! let mut h = Harness::new::<MyRecipe>();
//! let s = h.open_session();
//! let r = h.call(s, "acquire", &Args { name: "a".into() });
//! assert!(r.is_parked());
//! h.close_session(s);
//! h.fire_timers(h.now_ms() + 1_000);
//! assert_eq!(h.notifications_for::<String>(s), vec!["hello".to_string()]);
//! ```
//!
//! The recipe runs in-process: host calls go through [`crate::transport`] to an
//! in-memory host (MessagePack-encoded both ways, as on the real ABI).
//!
//! Like the server, the harness works in operations (log entries): a call, a client
//! write ([`Harness::create`], ...), a session closing, a timer tick
//! ([`Harness::fire_timers`]). Each gets the next zxid, which every invocation it causes
//! shares (`Context.zxid`, the call's `call_id`, and `seed`, derived from the zxid), with
//! `now_ms` from the harness clock. Everything an invocation changes (znodes, parked
//! calls, completions, notifications, subscriptions, watches, timers) is staged and rolled
//! back when it fails (`Err`, `Fail`, non-zero return, a call that neither replied nor
//! parked, or a panic, which stands for a trap).
//!
//! It follows the server (host/src/recipe/apply.rs) on:
//! - `Reply`, `Park` and `Fail` end a call once: a second one of any of them, or any of
//!   them in an event, answers `NotAllowed`;
//! - node events go to the module for every change at or under a subscribed prefix,
//!   including its own writes, after the operation's invocation commits, in generations
//!   (the events of the operation, then those its event handlers caused, ...) up to
//!   [`MAX_CASCADE_DEPTH`] generations and [`MAX_EVENT_INVOCATIONS`] handlers per
//!   operation; the rest are dropped (see [`Harness::dropped_events`]);
//! - closing a session cancels its parked calls and deletes its ephemerals, then runs
//!   `SessionClosed` (if the module watched it or had calls parked by it), then delivers
//!   the node events;
//! - a timer tick fires the timers due at its time, earliest first; a timer set for an
//!   already passed time by one of them fires at the next tick.
//!
//! Where it differs (it is a test double, not a model of the server):
//! - no ACLs, quotas, fuel, memory or size limits (`spin`-style infinite loops hang), no
//!   system znodes (`/wazoo/parked`, ...): the tree starts with just `/`;
//! - no ZooKeeper clients or watches: [`Harness::create`] and friends stand in for client
//!   writes, and notifications and completions are recorded, not delivered;
//! - timers fire only when the test calls [`Harness::fire_timers`];
//! - a panic in the handler is reported as [`Outcome::Trapped`] instead of unwinding;
//! - one module per harness.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::abi::{
    self, Caller, Context, CreateMode, ErrorCode, Event, HostRequest, HostResponse, Identity,
    Input, Invocation, NodeChange, OpResult, ParkedCall, Stat, WriteOp,
};
use crate::recipe::Recipe;

/// How a call ended, as the client would see it right away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Replied with these (MessagePack) bytes.
    Replied(Vec<u8>),
    /// Parked: look for its completion later with [`Harness::completion`].
    Parked,
    /// Failed with this message (`RecipeFailed`); its writes were discarded.
    Failed(String),
    /// The handler panicked (a trap on the server); its writes were discarded.
    Trapped(String),
}

/// The result of [`Harness::call`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallResult {
    /// The call's id (its zxid), as [`crate::Call::id`] saw it.
    pub call_id: i64,
    pub outcome: Outcome,
}

impl CallResult {
    /// The decoded reply. Panics if the call did not reply.
    #[track_caller]
    pub fn reply<T: DeserializeOwned>(&self) -> T {
        match &self.outcome {
            Outcome::Replied(bytes) => rmp_serde::from_slice(bytes)
                .unwrap_or_else(|e| panic!("reply of call {} does not decode: {e}", self.call_id)),
            other => panic!("call {} did not reply: {other:?}", self.call_id),
        }
    }

    /// The raw reply, if the call replied.
    pub fn reply_bytes(&self) -> Option<&[u8]> {
        match &self.outcome {
            Outcome::Replied(bytes) => Some(bytes),
            _ => None,
        }
    }

    pub fn is_replied(&self) -> bool {
        matches!(self.outcome, Outcome::Replied(_))
    }

    pub fn is_parked(&self) -> bool {
        self.outcome == Outcome::Parked
    }

    /// The failure message, if the call failed or trapped.
    pub fn failure(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Failed(m) | Outcome::Trapped(m) => Some(m),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Znode {
    data: Vec<u8>,
    stat: Stat,
}

/// Everything an invocation may change: cloned before it, restored if it fails.
#[derive(Debug, Clone, Default)]
struct State {
    nodes: BTreeMap<String, Znode>,
    sessions: BTreeMap<i64, Vec<Identity>>,
    parked: Vec<ParkedCall>,
    completions: Vec<(i64, Result<Vec<u8>, String>)>,
    notifications: Vec<(i64, Vec<u8>)>,
    subscriptions: BTreeSet<String>,
    watched_sessions: BTreeSet<i64>,
    timers: BTreeMap<String, i64>,
    /// Node events caused by the current invocation, delivered after it commits.
    events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum InvOutcome {
    None,
    Replied(Vec<u8>),
    Parked,
    Failed(String),
}

/// The invocation in progress.
#[derive(Debug, Clone)]
struct Inv {
    zxid: i64,
    now_ms: i64,
    call: Option<abi::Call>,
    outcome: InvOutcome,
}

#[derive(Debug)]
struct Shared {
    state: State,
    inv: Option<Inv>,
    logs: Vec<String>,
}

/// The in-memory host. See the [module docs](self).
pub struct Harness {
    handler: fn(&[u8]) -> i32,
    shared: Rc<RefCell<Shared>>,
    module: String,
    version: i32,
    now_ms: i64,
    zxid: i64,
    next_session: i64,
    closed_sessions: BTreeSet<i64>,
    event_failures: Vec<(Event, String)>,
    dropped: Vec<Event>,
}

/// Generations of node events delivered per operation (as the server's
/// `MAX_CASCADE_DEPTH`).
pub const MAX_CASCADE_DEPTH: usize = 4;
/// Event handlers run per operation at most (as the server's `MAX_EVENT_INVOCATIONS`).
pub const MAX_EVENT_INVOCATIONS: usize = 256;

/// The harness clock's start: 2024-01-01T00:00:00Z.
pub const START_MS: i64 = 1_704_067_200_000;

impl Harness {
    /// A harness running recipe `R`, registered as module "test" version 1, with an empty
    /// tree (just `/`) and the clock at [`START_MS`].
    pub fn new<R: Recipe>() -> Harness {
        let mut state = State::default();
        state.nodes.insert(
            "/".to_string(),
            Znode {
                data: Vec::new(),
                stat: Stat::default(),
            },
        );
        Harness {
            handler: crate::recipe::run::<R>,
            shared: Rc::new(RefCell::new(Shared {
                state,
                inv: None,
                logs: Vec::new(),
            })),
            module: "test".to_string(),
            version: 1,
            now_ms: START_MS,
            zxid: 0,
            next_session: 0x1000,
            closed_sessions: BTreeSet::new(),
            event_failures: Vec::new(),
            dropped: Vec::new(),
        }
    }

    /// Sets the module name and version the context reports.
    pub fn with_module(mut self, name: &str, version: i32) -> Harness {
        self.module = name.to_string();
        self.version = version;
        self
    }

    // --- clock ---

    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// Sets the clock (it never goes backwards).
    pub fn set_now_ms(&mut self, now_ms: i64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// Moves the clock forward by `ms`, without firing timers.
    pub fn advance(&mut self, ms: i64) {
        self.now_ms += ms.max(0);
    }

    /// The zxid of the last operation.
    pub fn last_zxid(&self) -> i64 {
        self.zxid
    }

    // --- sessions ---

    /// Opens a session without auth; returns its id.
    pub fn open_session(&mut self) -> i64 {
        self.open_session_with_auth(Vec::new())
    }

    /// Opens a session with these authenticated identities.
    pub fn open_session_with_auth(&mut self, auth: Vec<Identity>) -> i64 {
        let id = self.next_session;
        self.next_session += 1;
        self.shared.borrow_mut().state.sessions.insert(id, auth);
        id
    }

    /// Adds an identity to a session (as ZooKeeper's addAuth does).
    pub fn add_auth(&mut self, session: i64, scheme: &str, id: &str) {
        let mut shared = self.shared.borrow_mut();
        let auth = shared
            .state
            .sessions
            .get_mut(&session)
            .expect("no such session");
        auth.push(Identity {
            scheme: scheme.to_string(),
            id: id.to_string(),
        });
    }

    pub fn session_alive(&self, session: i64) -> bool {
        self.shared.borrow().state.sessions.contains_key(&session)
    }

    /// Ends a session: cancels its parked calls, runs `SessionClosed` if the recipe
    /// watched it or had calls parked by it, deletes its ephemerals (node events follow).
    pub fn close_session(&mut self, session: i64) {
        self.zxid += 1;
        let zxid = self.zxid;
        let (cancelled, watched, node_events) = {
            let mut shared = self.shared.borrow_mut();
            let state = &mut shared.state;
            if state.sessions.remove(&session).is_none() {
                return;
            }
            let (cancelled, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut state.parked)
                .into_iter()
                .partition(|p| p.session_id == session);
            state.parked = kept;
            let watched = state.watched_sessions.remove(&session);
            let ephemerals: Vec<String> = state
                .nodes
                .iter()
                .filter(|(_, n)| n.stat.ephemeral_owner == session)
                .map(|(p, _)| p.clone())
                .collect();
            for path in ephemerals {
                let _ = state.delete(&path, -1, zxid);
            }
            (cancelled, watched, std::mem::take(&mut state.events))
        };
        self.closed_sessions.insert(session);
        let mut pending = node_events;
        if watched || !cancelled.is_empty() {
            let event = Event::SessionClosed {
                session_id: session,
                cancelled,
            };
            self.run_event(event, zxid, &mut pending);
        }
        self.flush(pending, zxid);
    }

    // --- calls ---

    /// Calls `function` with MessagePack-encoded `args` from `session` (opened on the fly
    /// if the harness has never seen it; a closed session panics), then delivers the
    /// events it caused.
    #[track_caller]
    pub fn call<A: Serialize + ?Sized>(
        &mut self,
        session: i64,
        function: &str,
        args: &A,
    ) -> CallResult {
        let args = rmp_serde::to_vec_named(args).expect("encode call arguments");
        self.call_raw(session, function, args)
    }

    /// [`Harness::call`] with already-encoded arguments (empty: no arguments).
    #[track_caller]
    pub fn call_raw(&mut self, session: i64, function: &str, args: Vec<u8>) -> CallResult {
        assert!(
            !self.closed_sessions.contains(&session),
            "session {session:#x} is closed"
        );
        let auth = {
            let mut shared = self.shared.borrow_mut();
            shared.state.sessions.entry(session).or_default().clone()
        };
        self.zxid += 1;
        let zxid = self.zxid;
        let call = abi::Call {
            call_id: zxid,
            function: function.to_string(),
            args,
            caller: Caller {
                session_id: session,
                auth,
            },
        };
        let call_id = call.call_id;
        let mut pending = Vec::new();
        let outcome = self.invoke(Invocation::Call(call), zxid, &mut pending);
        self.flush(pending, zxid);
        CallResult { call_id, outcome }
    }

    // --- timers ---

    /// Moves the clock to `now_ms` (if later) and runs a timer tick: fires the timers due
    /// by then, earliest first (then by name), in one operation. Returns the names fired.
    pub fn fire_timers(&mut self, now_ms: i64) -> Vec<String> {
        self.set_now_ms(now_ms);
        let mut due: Vec<(i64, String)> = {
            let shared = self.shared.borrow();
            shared
                .state
                .timers
                .iter()
                .filter(|(_, at)| **at <= self.now_ms)
                .map(|(n, at)| (*at, n.clone()))
                .collect()
        };
        if due.is_empty() {
            return Vec::new();
        }
        due.sort();
        self.zxid += 1;
        let zxid = self.zxid;
        let mut pending = Vec::new();
        let mut fired = Vec::new();
        for (_, name) in due {
            // An earlier handler of this tick may have cancelled it.
            if self
                .shared
                .borrow_mut()
                .state
                .timers
                .remove(&name)
                .is_none()
            {
                continue;
            }
            fired.push(name.clone());
            self.run_event(Event::Timer { name }, zxid, &mut pending);
        }
        self.flush(pending, zxid);
        fired
    }

    /// Pending timers: name -> due time.
    pub fn timers(&self) -> BTreeMap<String, i64> {
        self.shared.borrow().state.timers.clone()
    }

    /// Sets or cancels (`at_ms` None) a timer of the recipe as if the recipe had, e.g.
    /// to stand for state left by an earlier version of it. Returns the previous due
    /// time.
    pub fn set_timer(&mut self, name: &str, at_ms: Option<i64>) -> Option<i64> {
        let timers = &mut self.shared.borrow_mut().state.timers;
        match at_ms {
            Some(at) => timers.insert(name.to_string(), at),
            None => timers.remove(name),
        }
    }

    // --- client-side znode access (stands in for ZooKeeper clients) ---

    /// Creates a znode as a client would (node events follow); returns its path.
    pub fn create(
        &mut self,
        path: &str,
        data: &[u8],
        mode: CreateMode,
    ) -> Result<String, ErrorCode> {
        self.client_write(|state, zxid, now| {
            state.create(path, data, mode, zxid, now).map(|(p, _)| p)
        })
    }

    /// Sets a znode's data as a client would (version -1: any).
    pub fn set(&mut self, path: &str, data: &[u8], version: i32) -> Result<Stat, ErrorCode> {
        self.client_write(|state, zxid, now| state.set(path, data, version, zxid, now))
    }

    /// Deletes a znode as a client would (version -1: any).
    pub fn delete(&mut self, path: &str, version: i32) -> Result<(), ErrorCode> {
        self.client_write(|state, zxid, _| state.delete(path, version, zxid))
    }

    fn client_write<T>(
        &mut self,
        f: impl FnOnce(&mut State, i64, i64) -> Result<T, ErrorCode>,
    ) -> Result<T, ErrorCode> {
        self.zxid += 1;
        let (zxid, now) = (self.zxid, self.now_ms);
        let (result, events) = {
            let mut shared = self.shared.borrow_mut();
            let result = f(&mut shared.state, zxid, now);
            (result, std::mem::take(&mut shared.state.events))
        };
        self.flush(events, zxid);
        result
    }

    /// A znode's data, or `None`.
    pub fn get(&self, path: &str) -> Option<Vec<u8>> {
        self.shared
            .borrow()
            .state
            .nodes
            .get(path)
            .map(|n| n.data.clone())
    }

    /// A znode's data decoded as MessagePack. Panics if it does not decode.
    #[track_caller]
    pub fn get_as<T: DeserializeOwned>(&self, path: &str) -> Option<T> {
        self.get(path)
            .map(|d| rmp_serde::from_slice(&d).expect("znode data does not decode"))
    }

    pub fn stat(&self, path: &str) -> Option<Stat> {
        self.shared.borrow().state.nodes.get(path).map(|n| n.stat)
    }

    /// Sorted child names; `None` if the znode does not exist.
    pub fn children(&self, path: &str) -> Option<Vec<String>> {
        let shared = self.shared.borrow();
        shared
            .state
            .nodes
            .contains_key(path)
            .then(|| shared.state.children(path))
    }

    /// Every znode path, sorted.
    pub fn paths(&self) -> Vec<String> {
        self.shared.borrow().state.nodes.keys().cloned().collect()
    }

    // --- what the recipe did ---

    /// Calls parked in the module, oldest first.
    pub fn parked(&self) -> Vec<ParkedCall> {
        self.shared.borrow().state.parked.clone()
    }

    /// Every completion so far: (call id, reply bytes or failure message), in order.
    pub fn completions(&self) -> Vec<(i64, Result<Vec<u8>, String>)> {
        self.shared.borrow().state.completions.clone()
    }

    /// The completion of a parked call, if any.
    pub fn completion(&self, call_id: i64) -> Option<Result<Vec<u8>, String>> {
        let shared = self.shared.borrow();
        shared
            .state
            .completions
            .iter()
            .find(|(id, _)| *id == call_id)
            .map(|(_, r)| r.clone())
    }

    /// The completion of a parked call, decoded. Panics if the reply does not decode.
    #[track_caller]
    pub fn completion_as<T: DeserializeOwned>(&self, call_id: i64) -> Option<Result<T, String>> {
        self.completion(call_id)
            .map(|r| r.map(|b| rmp_serde::from_slice(&b).expect("completion does not decode")))
    }

    /// Every notification so far: (session, payload), in order.
    pub fn notifications(&self) -> Vec<(i64, Vec<u8>)> {
        self.shared.borrow().state.notifications.clone()
    }

    /// The notifications sent to `session`, decoded. Panics if one does not decode.
    #[track_caller]
    pub fn notifications_for<T: DeserializeOwned>(&self, session: i64) -> Vec<T> {
        self.notifications()
            .into_iter()
            .filter(|(s, _)| *s == session)
            .map(|(_, p)| rmp_serde::from_slice(&p).expect("notification does not decode"))
            .collect()
    }

    /// Forgets the notifications and completions recorded so far.
    pub fn clear_outputs(&mut self) {
        let mut shared = self.shared.borrow_mut();
        shared.state.notifications.clear();
        shared.state.completions.clear();
    }

    /// The recipe's `Log` lines (also those of failed invocations).
    pub fn logs(&self) -> Vec<String> {
        self.shared.borrow().logs.clone()
    }

    /// Events whose handler failed, with the reason.
    pub fn event_failures(&self) -> Vec<(Event, String)> {
        self.event_failures.clone()
    }

    /// Node events dropped because an operation's cascade went past
    /// [`MAX_CASCADE_DEPTH`] or [`MAX_EVENT_INVOCATIONS`] (the recipe reacts to its own
    /// writes in a loop?).
    pub fn dropped_events(&self) -> Vec<Event> {
        self.dropped.clone()
    }

    pub fn subscriptions(&self) -> BTreeSet<String> {
        self.shared.borrow().state.subscriptions.clone()
    }

    pub fn watched_sessions(&self) -> BTreeSet<i64> {
        self.shared.borrow().state.watched_sessions.clone()
    }

    // --- machinery ---

    /// Delivers an operation's node events to the module, generation by generation.
    fn flush(&mut self, mut events: Vec<Event>, zxid: i64) {
        let mut budget = MAX_EVENT_INVOCATIONS;
        let mut depth = 0;
        while !events.is_empty() {
            let triggered: Vec<Event> = {
                let shared = self.shared.borrow();
                let subs = &shared.state.subscriptions;
                events
                    .drain(..)
                    .filter(|e| match e {
                        Event::Node { path, .. } => {
                            subs.iter().any(|prefix| under_prefix(path, prefix))
                        }
                        _ => true,
                    })
                    .collect()
            };
            let mut next = Vec::new();
            for event in triggered {
                if depth >= MAX_CASCADE_DEPTH || budget == 0 {
                    self.dropped.push(event);
                    continue;
                }
                budget -= 1;
                self.run_event(event, zxid, &mut next);
            }
            events = next;
            depth += 1;
        }
    }

    /// Runs an event handler; the node events it caused go to `pending`.
    fn run_event(&mut self, event: Event, zxid: i64, pending: &mut Vec<Event>) {
        if let Outcome::Failed(m) | Outcome::Trapped(m) =
            self.invoke(Invocation::Event(event.clone()), zxid, pending)
        {
            self.event_failures.push((event, m));
        }
    }

    /// Runs one invocation; commits or rolls back; queues the events it caused.
    fn invoke(&mut self, invocation: Invocation, zxid: i64, pending: &mut Vec<Event>) -> Outcome {
        let context = Context {
            module: self.module.clone(),
            version: self.version,
            now_ms: self.now_ms,
            zxid,
            seed: splitmix(zxid as u64 ^ 0x5741_5a4f_4f00_0000),
        };
        let call = match &invocation {
            Invocation::Call(call) => Some(call.clone()),
            Invocation::Event(_) => None,
        };
        let snapshot = {
            let mut shared = self.shared.borrow_mut();
            shared.inv = Some(Inv {
                zxid,
                now_ms: self.now_ms,
                call,
                outcome: InvOutcome::None,
            });
            shared.state.clone()
        };
        let input = rmp_serde::to_vec_named(&Input {
            context,
            invocation,
        })
        .expect("encode Input");
        let host = Rc::clone(&self.shared);
        let handler = self.handler;
        let result = {
            let _guard = crate::transport::install_host(Box::new(move |request: &[u8]| {
                let request: HostRequest = rmp_serde::from_slice(request)
                    .unwrap_or_else(|e| panic!("ABI violation: undecodable HostRequest: {e}"));
                let response = host.borrow_mut().process(request);
                rmp_serde::to_vec_named(&response).expect("encode HostResponse")
            }));
            catch_unwind(AssertUnwindSafe(|| handler(&input)))
        };
        let mut shared = self.shared.borrow_mut();
        let inv = shared.inv.take().expect("invocation state");
        let is_call = inv.call.is_some();
        let outcome = match (result, inv.outcome) {
            (Err(panic), _) => Outcome::Trapped(panic_message(&panic)),
            (Ok(_), InvOutcome::Failed(m)) => Outcome::Failed(m),
            (Ok(0), InvOutcome::Replied(bytes)) => Outcome::Replied(bytes),
            (Ok(0), InvOutcome::Parked) => Outcome::Parked,
            (Ok(0), InvOutcome::None) if is_call => Outcome::Failed(format!(
                "{}: the handler returned without reply, park or fail",
                self.module
            )),
            (Ok(0), InvOutcome::None) => Outcome::Replied(Vec::new()),
            (Ok(rc), _) => Outcome::Failed(format!("handler returned status {rc}")),
        };
        match outcome {
            Outcome::Failed(_) | Outcome::Trapped(_) => shared.state = snapshot,
            _ => {
                pending.append(&mut shared.state.events);
            }
        }
        outcome
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("panic: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("panic: {s}")
    } else {
        "panic".to_string()
    }
}

fn splitmix(x: u64) -> u64 {
    crate::Rng::new(x).next_u64()
}

/// Whether `path` is at or under `prefix`.
fn under_prefix(path: &str, prefix: &str) -> bool {
    if prefix == "/" || path == prefix {
        return true;
    }
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.starts_with('/'))
}

fn valid_path(path: &str) -> bool {
    if path == "/" {
        return true;
    }
    path.starts_with('/')
        && !path.ends_with('/')
        && !path.contains('\0')
        && path[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => "/",
    }
}

impl State {
    fn node(&self, path: &str) -> Result<&Znode, ErrorCode> {
        if !valid_path(path) {
            return Err(ErrorCode::BadArguments);
        }
        self.nodes.get(path).ok_or(ErrorCode::NoNode)
    }

    fn children(&self, path: &str) -> Vec<String> {
        let prefix = if path == "/" {
            "/".to_string()
        } else {
            format!("{path}/")
        };
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter(|(p, _)| p.len() > prefix.len() && !p[prefix.len()..].contains('/'))
            .map(|(p, _)| p[prefix.len()..].to_string())
            .collect()
    }

    fn event(&mut self, path: &str, change: NodeChange) {
        self.events.push(Event::Node {
            path: path.to_string(),
            change,
        });
    }

    fn create(
        &mut self,
        path: &str,
        data: &[u8],
        mode: CreateMode,
        zxid: i64,
        now: i64,
    ) -> Result<(String, Stat), ErrorCode> {
        if !path.starts_with('/') {
            return Err(ErrorCode::BadArguments);
        }
        let parent_path = parent_of(path).to_string();
        if path == "/" {
            return Err(ErrorCode::NodeExists);
        }
        let parent = self.nodes.get(&parent_path);
        let final_path = match (mode.sequential, parent) {
            (true, Some(p)) => format!("{path}{:010}", p.stat.cversion),
            _ => path.to_string(),
        };
        if !valid_path(&final_path) || !valid_path(&parent_path) {
            return Err(ErrorCode::BadArguments);
        }
        let parent = parent.ok_or(ErrorCode::NoNode)?;
        if parent.stat.ephemeral_owner != 0 {
            return Err(ErrorCode::NoChildrenForEphemerals);
        }
        if self.nodes.contains_key(&final_path) {
            return Err(ErrorCode::NodeExists);
        }
        if let Some(owner) = mode.ephemeral_owner {
            if !self.sessions.contains_key(&owner) {
                return Err(ErrorCode::SessionExpired);
            }
        }
        let stat = Stat {
            czxid: zxid,
            mzxid: zxid,
            ctime: now,
            mtime: now,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: mode.ephemeral_owner.unwrap_or(0),
            data_length: data.len() as i32,
            num_children: 0,
            pzxid: zxid,
        };
        let parent = self.nodes.get_mut(&parent_path).expect("parent");
        parent.stat.cversion += 1;
        parent.stat.num_children += 1;
        parent.stat.pzxid = zxid;
        self.nodes.insert(
            final_path.clone(),
            Znode {
                data: data.to_vec(),
                stat,
            },
        );
        self.event(&final_path, NodeChange::Created);
        self.event(&parent_path, NodeChange::ChildrenChanged);
        Ok((final_path, stat))
    }

    fn set(
        &mut self,
        path: &str,
        data: &[u8],
        version: i32,
        zxid: i64,
        now: i64,
    ) -> Result<Stat, ErrorCode> {
        let node = self.node(path)?;
        if version != -1 && version != node.stat.version {
            return Err(ErrorCode::BadVersion);
        }
        let node = self.nodes.get_mut(path).expect("node");
        node.data = data.to_vec();
        node.stat.version += 1;
        node.stat.mzxid = zxid;
        node.stat.mtime = now;
        node.stat.data_length = data.len() as i32;
        let stat = node.stat;
        self.event(path, NodeChange::DataChanged);
        Ok(stat)
    }

    fn delete(&mut self, path: &str, version: i32, zxid: i64) -> Result<(), ErrorCode> {
        if path == "/" {
            return Err(ErrorCode::BadArguments);
        }
        let node = self.node(path)?;
        if version != -1 && version != node.stat.version {
            return Err(ErrorCode::BadVersion);
        }
        if node.stat.num_children > 0 {
            return Err(ErrorCode::NotEmpty);
        }
        self.nodes.remove(path);
        let parent_path = parent_of(path).to_string();
        if let Some(parent) = self.nodes.get_mut(&parent_path) {
            parent.stat.cversion += 1;
            parent.stat.num_children -= 1;
            parent.stat.pzxid = zxid;
        }
        self.event(path, NodeChange::Deleted);
        self.event(&parent_path, NodeChange::ChildrenChanged);
        Ok(())
    }

    fn check(&self, path: &str, version: i32) -> Result<(), ErrorCode> {
        let node = self.node(path)?;
        if version != -1 && version != node.stat.version {
            return Err(ErrorCode::BadVersion);
        }
        Ok(())
    }

    fn apply(&mut self, op: &WriteOp, zxid: i64, now: i64) -> Result<OpResult, ErrorCode> {
        match op {
            WriteOp::Create { path, data, mode } => self
                .create(path, data, *mode, zxid, now)
                .map(|(path, _)| OpResult::Created { path }),
            WriteOp::Set {
                path,
                data,
                version,
            } => self
                .set(path, data, *version, zxid, now)
                .map(|stat| OpResult::Set { stat }),
            WriteOp::Delete { path, version } => self
                .delete(path, *version, zxid)
                .map(|()| OpResult::Deleted),
            WriteOp::Check { path, version } => {
                self.check(path, *version).map(|()| OpResult::Checked)
            }
        }
    }
}

impl Shared {
    fn process(&mut self, request: HostRequest) -> HostResponse {
        use HostResponse as R;
        let inv = self.inv.as_mut().expect("host call outside an invocation");
        let (zxid, now) = (inv.zxid, inv.now_ms);
        let state = &mut self.state;
        let err = R::Error;
        match request {
            HostRequest::Get { path } => match state.node(&path) {
                Ok(n) => R::Data {
                    data: Some(serde_bytes::ByteBuf::from(n.data.clone())),
                    stat: n.stat,
                },
                Err(e) => err(e),
            },
            HostRequest::Exists { path } => match state.node(&path) {
                Ok(n) => R::Stat(Some(n.stat)),
                Err(ErrorCode::NoNode) => R::Stat(None),
                Err(e) => err(e),
            },
            HostRequest::Children { path } => match state.node(&path) {
                Ok(_) => R::Children(state.children(&path)),
                Err(e) => err(e),
            },
            HostRequest::Create { path, data, mode } => {
                match state.create(&path, &data, mode, zxid, now) {
                    Ok((path, stat)) => R::Created { path, stat },
                    Err(e) => err(e),
                }
            }
            HostRequest::Set {
                path,
                data,
                version,
            } => match state.set(&path, &data, version, zxid, now) {
                Ok(stat) => R::Stat(Some(stat)),
                Err(e) => err(e),
            },
            HostRequest::Delete { path, version } => match state.delete(&path, version, zxid) {
                Ok(()) => R::Done,
                Err(e) => err(e),
            },
            HostRequest::Multi(ops) => {
                let before = state.clone();
                let mut results = Vec::with_capacity(ops.len());
                let mut failed = None;
                for (i, op) in ops.iter().enumerate() {
                    match state.apply(op, zxid, now) {
                        Ok(r) => results.push(Ok(r)),
                        Err(e) => {
                            failed = Some((i, e));
                            break;
                        }
                    }
                }
                match failed {
                    None => R::Multi(results),
                    Some((index, code)) => {
                        *state = before;
                        R::Multi(
                            (0..ops.len())
                                .map(|i| match i.cmp(&index) {
                                    std::cmp::Ordering::Less => Err(ErrorCode::Ok),
                                    std::cmp::Ordering::Equal => Err(code),
                                    std::cmp::Ordering::Greater => {
                                        Err(ErrorCode::RuntimeInconsistency)
                                    }
                                })
                                .collect(),
                        )
                    }
                }
            }
            HostRequest::Reply(bytes) => match (&inv.call, &inv.outcome) {
                (Some(_), InvOutcome::None) => {
                    inv.outcome = InvOutcome::Replied(bytes);
                    R::Done
                }
                _ => err(ErrorCode::NotAllowed),
            },
            HostRequest::Fail(message) => match (&inv.call, &inv.outcome) {
                (Some(_), InvOutcome::None) => {
                    inv.outcome = InvOutcome::Failed(message);
                    R::Done
                }
                _ => err(ErrorCode::NotAllowed),
            },
            HostRequest::Park => match (&inv.call, &inv.outcome) {
                (Some(call), InvOutcome::None) => {
                    state.parked.push(ParkedCall {
                        call_id: call.call_id,
                        session_id: call.caller.session_id,
                        function: call.function.clone(),
                        args: call.args.clone(),
                        auth: call.caller.auth.clone(),
                    });
                    inv.outcome = InvOutcome::Parked;
                    R::Done
                }
                _ => err(ErrorCode::NotAllowed),
            },
            HostRequest::Complete { call_id, result } => {
                match state.parked.iter().position(|p| p.call_id == call_id) {
                    Some(i) => {
                        state.parked.remove(i);
                        state
                            .completions
                            .push((call_id, result.map(|b| b.into_vec())));
                        R::Done
                    }
                    None => err(ErrorCode::NoNode),
                }
            }
            HostRequest::ListParked => R::Parked(state.parked.clone()),
            HostRequest::Notify {
                session_id,
                payload,
            } => {
                if state.sessions.contains_key(&session_id) {
                    state.notifications.push((session_id, payload));
                    R::Done
                } else {
                    err(ErrorCode::SessionExpired)
                }
            }
            HostRequest::Subscribe { prefix } => {
                state.subscriptions.insert(prefix);
                R::Done
            }
            HostRequest::Unsubscribe { prefix } => {
                state.subscriptions.remove(&prefix);
                R::Done
            }
            HostRequest::WatchSession { session_id } => {
                if state.sessions.contains_key(&session_id) {
                    state.watched_sessions.insert(session_id);
                    R::Done
                } else {
                    err(ErrorCode::SessionExpired)
                }
            }
            HostRequest::UnwatchSession { session_id } => {
                state.watched_sessions.remove(&session_id);
                R::Done
            }
            HostRequest::SessionAlive { session_id } => {
                R::Bool(state.sessions.contains_key(&session_id))
            }
            HostRequest::SetTimer { name, at_ms } => {
                state.timers.insert(name, at_ms);
                R::Done
            }
            HostRequest::CancelTimer { name } => {
                state.timers.remove(&name);
                R::Done
            }
            HostRequest::Log(line) => {
                eprintln!("[recipe log] {line}");
                self.logs.push(line);
                R::Done
            }
        }
    }
}

/// The seed of a randomized recipe test: `$<env_var>` when set, else the clock.
/// Printed with the test's name, so a failing run can be replayed.
pub fn test_seed(test: &str, env_var: &str) -> u64 {
    let seed = std::env::var(env_var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    println!("{test}: seed {seed} (replay with {env_var}={seed})");
    seed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert!(under_prefix("/a", "/"));
        assert!(under_prefix("/a", "/a"));
        assert!(under_prefix("/a/b", "/a"));
        assert!(under_prefix("/a/b", "/a/"));
        assert!(!under_prefix("/ab", "/a"));
        assert!(!under_prefix("/a", "/a/b"));
    }

    #[test]
    fn paths() {
        assert!(valid_path("/"));
        assert!(valid_path("/a/b"));
        for bad in ["", "a", "/a/", "//a", "/a//b", "/a/./b", "/a/..", "/a\0"] {
            assert!(!valid_path(bad), "{bad:?}");
        }
        assert_eq!(parent_of("/a"), "/");
        assert_eq!(parent_of("/a/b"), "/a");
    }
}
