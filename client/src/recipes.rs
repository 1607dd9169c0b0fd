//! Typed wrappers for the built-in recipes (docs/RECIPES.md): [`Client::lock`],
//! [`Client::rw_lock`], [`Client::semaphore`], [`Client::election`],
//! [`Client::barrier`] and [`Client::config`].
//!
//! Every handle is a cheap value holding a [`Client`] clone, the recipe's module name
//! (the built-in name by default, [`Lock::with_module`] and friends for a recipe
//! uploaded under another name) and the resource name. Calls go through
//! [`Client::recipe_call_typed`]; failures are [`RecipeError`], whose variants name the
//! recipe errors a caller can act on (a lock timeout, a config version mismatch, ...).
//!
//! # Notifications
//!
//! Recipes push messages to the session (a promotion, a leader change, a config
//! change, a revoked lock), and a client has one channel of them
//! ([`Client::take_recipe_messages`]). So that several handles on one client can each
//! get theirs, the first handle that needs notifications takes that channel and starts
//! a dispatcher task for the client; it routes each message by module and resource
//! name (`name`, or `key` for config) to the handles that registered for it. Messages
//! nobody registered for go to [`Client::unrouted_recipe_messages`]. A client whose
//! messages were already taken by its user cannot use the wrappers that need them
//! ([`RecipeError::MessagesTaken`]). A handle registers before it sends the call that
//! subscribes, so no message that follows the reply is missed.
//!
//! # Connection loss
//!
//! A message sent while the session is reconnecting is lost (docs/RECIPES.md,
//! "Conventions"). The wrappers that wait for messages catch up by themselves after a
//! reconnect ([`Client::reconnects`] moved): [`Candidacy::leadership`] re-`join`s
//! (which replies the standing), [`LeaderWatch::next`] re-reads the leader and
//! [`ConfigSubscription::next`] re-subscribes (which replies the current values,
//! flagged [`ConfigUpdate::coalesced`] when versions were skipped). Calls the recipes
//! make safe to retry (barrier `enter`, `double_enter`, `double_leave`, `wait`,
//! election `join`) are retried after a reconnect on a reconnecting client
//! ([`crate::Failover::reconnect`]). So are lock acquires and releases: an acquire is
//! retried with `resume` (the lock recipe then waits with the session's earlier parked
//! call, keeping its place in the queue, or replies the grant that call got while the
//! client was away), a release with its token. The others (`publish`, ...) return the
//! ConnectionLoss error ([`RecipeError::Client`]): whether they took effect is
//! unknown, and the caller decides.

use crate::{Client, ClientError, ConnState, Inner, RecipeMessage};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use wazoo_proto::recipe::CALL_COMPLETED;
use wazoo_proto::{ErrorCode, Request, Response};

/// Module names of the built-in recipes (`recipe.builtinDir`).
pub mod builtin {
    pub const LOCK: &str = "lock";
    pub const ELECTION: &str = "election";
    pub const BARRIER: &str = "barrier";
    pub const CONFIG: &str = "config";
}

// ---------------------------------------------------------------------------
// Errors

/// Failures of the recipe wrappers. The variant names are stable (also as strings,
/// [`RecipeError::name`]); recipe failures without a variant of their own are
/// [`RecipeError::Failed`] with the recipe's message.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// A lock acquire with a timeout did not get the lock in time (recipe `timeout`).
    #[error("timed out waiting for the lock")]
    Timeout,
    /// The session holds this lock already (locks are not reentrant).
    #[error("the session holds the lock already")]
    AlreadyHeld,
    /// A release by a session that does not hold the grant (released, revoked, or
    /// lost with the session).
    #[error("not the holder of the lock")]
    NotHolder,
    /// The name is used by another kind of lock (mutex, rwlock, semaphore).
    #[error("{0}")]
    WrongKind(String),
    /// A conditional config publish found another version.
    #[error("version mismatch: key {key} is at version {current}, not {expected}")]
    VersionMismatch {
        key: String,
        current: i64,
        expected: i64,
    },
    /// The recipe refused the name (empty, with `/`, starting with `.`...).
    #[error("{0}")]
    BadName(String),
    /// `resign` by a session that is not a candidate.
    #[error("{0}")]
    NotCandidate(String),
    /// Another recipe failure (`RecipeFailed`), with the recipe's message.
    #[error("recipe failed: {0}")]
    Failed(String),
    /// The client's recipe messages were taken by [`Client::take_recipe_messages`], so
    /// the wrappers cannot receive notifications.
    #[error("the client's recipe messages were taken by take_recipe_messages()")]
    MessagesTaken,
    /// Called outside a tokio runtime, which the notification dispatcher needs.
    #[error("no tokio runtime to run the recipe notification dispatcher on")]
    NoRuntime,
    /// The session ended (closed or expired) or the client is gone: no more
    /// notifications will come.
    #[error("the session ended")]
    SessionEnded,
    /// A reply or notification that does not have the documented shape.
    #[error("unexpected recipe payload: {0}")]
    Decode(String),
    /// Anything else from the client: connection loss (code ConnectionLoss), a
    /// ZooKeeper or recipe-runtime error (RecipeNotFound, RecipeTrap, ...).
    #[error(transparent)]
    Client(ClientError),
}

impl RecipeError {
    /// The variant's name, stable across releases (for logs and metrics).
    pub fn name(&self) -> &'static str {
        match self {
            RecipeError::Timeout => "Timeout",
            RecipeError::AlreadyHeld => "AlreadyHeld",
            RecipeError::NotHolder => "NotHolder",
            RecipeError::WrongKind(_) => "WrongKind",
            RecipeError::VersionMismatch { .. } => "VersionMismatch",
            RecipeError::BadName(_) => "BadName",
            RecipeError::NotCandidate(_) => "NotCandidate",
            RecipeError::Failed(_) => "Failed",
            RecipeError::MessagesTaken => "MessagesTaken",
            RecipeError::NoRuntime => "NoRuntime",
            RecipeError::SessionEnded => "SessionEnded",
            RecipeError::Decode(_) => "Decode",
            RecipeError::Client(_) => "Client",
        }
    }

    /// Whether this is a lost connection (the call may or may not have taken effect).
    pub fn is_connection_loss(&self) -> bool {
        matches!(self, RecipeError::Client(e) if is_connection_loss(e))
    }
}

fn is_connection_loss(e: &ClientError) -> bool {
    e.code() == Some(ErrorCode::ConnectionLoss)
}

impl From<ClientError> for RecipeError {
    /// Maps the recipes' documented `RecipeFailed` messages to variants.
    fn from(e: ClientError) -> Self {
        let ClientError::Recipe {
            code: ErrorCode::RecipeFailed,
            message,
        } = &e
        else {
            return match e {
                ClientError::MessagePack(m) => RecipeError::Decode(m),
                e => RecipeError::Client(e),
            };
        };
        let m = message.as_str();
        if m == "timeout" {
            RecipeError::Timeout
        } else if m == "already held" {
            RecipeError::AlreadyHeld
        } else if m == "not the holder" {
            RecipeError::NotHolder
        } else if m.starts_with("wrong kind") {
            RecipeError::WrongKind(m.to_string())
        } else if m.starts_with("bad lock name")
            || m.starts_with("bad election name")
            || m.starts_with("bad barrier name")
            || m.starts_with("bad key")
            || m.starts_with("bad prefix")
        {
            RecipeError::BadName(m.to_string())
        } else if m.starts_with("session is not a candidate") {
            RecipeError::NotCandidate(m.to_string())
        } else if let Some(v) = parse_version_mismatch(m) {
            v
        } else {
            RecipeError::Failed(m.to_string())
        }
    }
}

/// `version mismatch: key K is at version V, not E`.
fn parse_version_mismatch(m: &str) -> Option<RecipeError> {
    let rest = m.strip_prefix("version mismatch: key ")?;
    let (key, rest) = rest.rsplit_once(" is at version ")?;
    let (current, expected) = rest.split_once(", not ")?;
    Some(RecipeError::VersionMismatch {
        key: key.to_string(),
        current: current.trim().parse().ok()?,
        expected: expected.trim().parse().ok()?,
    })
}

// ---------------------------------------------------------------------------
// MessagePack helpers

/// Bytes as MessagePack `bin` (a `Vec<u8>` would travel as an array of integers,
/// which the recipes' `bin` fields refuse). Decodes bin, str or an array of bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Bin(Vec<u8>);

impl Serialize for Bin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Bin;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Bin, E> {
                Ok(Bin(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bin, E> {
                Ok(Bin(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Bin, E> {
                Ok(Bin(v.as_bytes().to_vec()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Bin, A::Error> {
                let mut v = Vec::new();
                while let Some(b) = a.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(Bin(v))
            }
        }
        d.deserialize_any(V)
    }
}

fn decode<T: DeserializeOwned>(what: &str, payload: &[u8]) -> Result<T, RecipeError> {
    rmp_serde::from_slice(payload).map_err(|e| RecipeError::Decode(format!("{what}: {e}")))
}

/// What the dispatcher reads of every message: the event and the resource it is about.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

// ---------------------------------------------------------------------------
// Dispatcher

/// Which messages of a module a route takes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    /// `name` equal to this (lock, election).
    Name(String),
    /// `key` equal to this (config key subscription).
    Key(String),
    /// `key` starting with this (config prefix subscription).
    KeyPrefix(String),
}

impl Matcher {
    fn matches(&self, env: &Envelope) -> bool {
        match self {
            Matcher::Name(n) => env.name.as_deref() == Some(n),
            Matcher::Key(k) => env.key.as_deref() == Some(k),
            Matcher::KeyPrefix(p) => env.key.as_deref().is_some_and(|k| k.starts_with(p)),
        }
    }
}

/// A message routed to a handle: its event name and the raw payload.
#[derive(Debug)]
struct Routed {
    event: String,
    payload: Vec<u8>,
    zxid: i64,
}

struct Route {
    id: u64,
    module: String,
    matcher: Matcher,
    tx: UnboundedSender<Routed>,
}

struct Dispatcher {
    routes: Mutex<Vec<Route>>,
    next_id: AtomicU64,
    /// Where messages no route takes go: `None` until
    /// [`Client::unrouted_recipe_messages`] was called (they are dropped until then,
    /// rather than piling up in a channel nobody reads); `Some(None)` once taken.
    unrouted: Mutex<Option<UnboundedSender<RecipeMessage>>>,
    unrouted_taken: std::sync::atomic::AtomicBool,
    /// Locks (module, name) this client is acquiring or holds through a guard: see
    /// [`LocalClaim`].
    claims: Mutex<std::collections::BTreeSet<(String, String)>>,
    /// Releases sent by dropped guards whose outcome is not known yet, per lock
    /// (module, name): see [`ReleaseInDoubt`].
    releasing: Mutex<HashMap<(String, String), usize>>,
    /// Signalled when a release in doubt settles.
    release_settled: tokio::sync::Notify,
}

/// One dispatcher per client session, found by the client's shared state. Weak keys:
/// the registry does not keep a client alive, and an entry whose client is gone is
/// pruned at the next lookup (the `Weak` also keeps the address from being reused).
type Registry = Vec<(Weak<Inner>, Arc<Dispatcher>)>;
static REGISTRY: Mutex<Registry> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks leaves consistent data (plain pushes and
    // retains), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Dispatcher {
    /// The client's dispatcher, started on first use (needs a tokio runtime, as the
    /// client itself does).
    fn of(client: &Client) -> Result<Arc<Dispatcher>, RecipeError> {
        let mut reg = lock(&REGISTRY);
        reg.retain(|(w, _)| w.strong_count() > 0);
        let me = Arc::downgrade(&client.inner);
        if let Some((_, d)) = reg.iter().find(|(w, _)| w.ptr_eq(&me)) {
            return Ok(d.clone());
        }
        let rt = tokio::runtime::Handle::try_current().map_err(|_| RecipeError::NoRuntime)?;
        let rx = client
            .take_recipe_messages()
            .ok_or(RecipeError::MessagesTaken)?;
        let d = Arc::new(Dispatcher {
            routes: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            unrouted: Mutex::new(None),
            unrouted_taken: std::sync::atomic::AtomicBool::new(false),
            claims: Mutex::new(std::collections::BTreeSet::new()),
            releasing: Mutex::new(HashMap::new()),
            release_settled: tokio::sync::Notify::new(),
        });
        reg.push((me, d.clone()));
        rt.spawn(dispatch(Arc::downgrade(&d), rx));
        Ok(d)
    }

    fn register(self: &Arc<Self>, module: &str, matcher: Matcher) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.routes).push(Route {
            id,
            module: module.to_string(),
            matcher,
            tx,
        });
        Subscription {
            dispatcher: self.clone(),
            id,
            rx,
        }
    }

    /// How many routes other than `except` take exactly these messages: a handle ending
    /// a session-wide subscription (config `unsubscribe`, election `unobserve`) must
    /// not end it under another handle of the same client.
    fn others(&self, module: &str, matcher: &Matcher, except: u64) -> usize {
        lock(&self.routes)
            .iter()
            .filter(|r| r.id != except && r.module == module && &r.matcher == matcher)
            .count()
    }
}

/// Routes until the client's message channel ends (the session ended or the client is
/// gone); the routes' channels then end too, which handles see as
/// [`RecipeError::SessionEnded`].
async fn dispatch(d: Weak<Dispatcher>, mut rx: UnboundedReceiver<RecipeMessage>) {
    while let Some(m) = rx.recv().await {
        let Some(d) = d.upgrade() else { return };
        let env: Option<Envelope> = rmp_serde::from_slice(&m.payload).ok();
        let mut delivered = false;
        if let Some(env) = &env {
            let mut routes = lock(&d.routes);
            routes.retain(|r| {
                if r.module != m.module || !r.matcher.matches(env) {
                    return true;
                }
                let ok =
                    r.tx.send(Routed {
                        event: env.event.clone().unwrap_or_default(),
                        payload: m.payload.clone(),
                        zxid: m.zxid,
                    })
                    .is_ok();
                delivered |= ok;
                ok
            });
        }
        if !delivered {
            match lock(&d.unrouted).as_ref() {
                Some(tx) => {
                    let _ = tx.send(m);
                }
                None => {
                    tracing::trace!(module = %m.module, zxid = m.zxid, "recipe message nobody registered for; dropped")
                }
            }
        }
    }
    if let Some(d) = d.upgrade() {
        lock(&d.routes).clear();
    }
}

/// A handle's registration with the dispatcher; removed on drop.
struct Subscription {
    dispatcher: Arc<Dispatcher>,
    id: u64,
    rx: UnboundedReceiver<Routed>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        lock(&self.dispatcher.routes).retain(|r| r.id != self.id);
    }
}

impl Client {
    /// Recipe messages that no wrapper handle registered for, from now on (earlier
    /// ones were dropped), once the wrappers' dispatcher has taken
    /// [`take_recipe_messages`](Self::take_recipe_messages) (it starts it if need be). Call once; later calls return
    /// [`RecipeError::MessagesTaken`]. Outside a tokio runtime:
    /// [`RecipeError::NoRuntime`].
    pub fn unrouted_recipe_messages(
        &self,
    ) -> Result<UnboundedReceiver<RecipeMessage>, RecipeError> {
        let d = Dispatcher::of(self)?;
        if d.unrouted_taken.swap(true, Ordering::SeqCst) {
            return Err(RecipeError::MessagesTaken);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        *lock(&d.unrouted) = Some(tx);
        Ok(rx)
    }

    /// An exclusive FIFO lock with fencing tokens (`lock` recipe, kind mutex).
    pub fn lock(&self, name: &str) -> Lock {
        Lock {
            h: Handle::new(self, builtin::LOCK, name),
        }
    }

    /// A read-write lock (`lock` recipe, kind rwlock): many readers or one writer.
    pub fn rw_lock(&self, name: &str) -> RwLock {
        RwLock {
            h: Handle::new(self, builtin::LOCK, name),
        }
    }

    /// A counting semaphore of `permits` holders (`lock` recipe, kind semaphore). The
    /// first acquirer (or [`Semaphore::init`]) decides the number of permits; later
    /// acquires with another number fail (`RecipeError::Failed`, "wrong permits").
    pub fn semaphore(&self, name: &str, permits: u32) -> Semaphore {
        Semaphore {
            h: Handle::new(self, builtin::LOCK, name),
            permits,
        }
    }

    /// A leader election (`election` recipe).
    pub fn election(&self, name: &str) -> Election {
        Election {
            h: Handle::new(self, builtin::ELECTION, name),
        }
    }

    /// The barriers named `name` (`barrier` recipe): N-party, double and set/remove.
    pub fn barrier(&self, name: &str) -> Barrier {
        Barrier {
            h: Handle::new(self, builtin::BARRIER, name),
        }
    }

    /// Configuration broadcast (`config` recipe).
    pub fn config(&self) -> ConfigStore {
        ConfigStore {
            h: Handle::new(self, builtin::CONFIG, ""),
        }
    }
}

// ---------------------------------------------------------------------------
// Shared plumbing

/// Client, module and resource name: what every wrapper holds.
#[derive(Debug, Clone)]
struct Handle {
    client: Client,
    module: String,
    name: String,
}

impl Handle {
    fn new(client: &Client, module: &str, name: &str) -> Handle {
        Handle {
            client: client.clone(),
            module: module.to_string(),
            name: name.to_string(),
        }
    }

    async fn call<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        function: &str,
        args: &A,
    ) -> Result<R, RecipeError> {
        Ok(self
            .client
            .recipe_call_typed(&self.module, -1, function, args)
            .await?)
    }

    /// A call that never parks, with the zxid of its reply: recipe messages with a
    /// larger zxid were sent by later operations, those with a smaller or equal one
    /// are already reflected in the reply.
    async fn call_at<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        function: &str,
        args: &A,
    ) -> Result<(R, i64), RecipeError> {
        let args = rmp_serde::to_vec_named(args).map_err(|e| {
            RecipeError::Decode(format!("encoding the arguments of {function}: {e}"))
        })?;
        let req = Request::RecipeCall {
            name: self.module.clone(),
            version: -1,
            function: function.to_string(),
            args,
            flags: 0,
        };
        let r = self.client.send_request(&req).await?;
        match r.result {
            Ok(Response::RecipeCall {
                state: CALL_COMPLETED,
                reply,
                ..
            }) => Ok((decode(function, &reply)?, r.zxid)),
            Ok(_) => Err(RecipeError::Decode(format!(
                "{function}: a reply other than a completed call"
            ))),
            Err(code) => Err(ClientError::Recipe {
                code,
                message: r.error_message.unwrap_or_default(),
            }
            .into()),
        }
    }

    /// [`call_at`](Self::call_at), retried after a reconnect as
    /// [`call_retrying`](Self::call_retrying).
    async fn call_at_retrying<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        function: &str,
        args: &A,
    ) -> Result<(R, i64), RecipeError> {
        loop {
            match self.call_at(function, args).await {
                Err(e) if e.is_connection_loss() && self.client.inner.reconnect => {
                    wait_connected(&self.client).await?;
                }
                r => return r,
            }
        }
    }

    /// [`call`](Self::call), retried after a reconnect when the connection is lost:
    /// only for calls the recipe makes safe to retry.
    async fn call_retrying<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        function: &str,
        args: &A,
    ) -> Result<R, RecipeError> {
        loop {
            match self.call(function, args).await {
                Err(e) if e.is_connection_loss() && self.client.inner.reconnect => {
                    wait_connected(&self.client).await?;
                }
                r => return r,
            }
        }
    }

    fn subscribe(&self, matcher: Matcher) -> Result<Subscription, RecipeError> {
        Ok(Dispatcher::of(&self.client)?.register(&self.module, matcher))
    }
}

/// Waits until the client is connected; [`RecipeError::SessionEnded`] if the session
/// ended.
async fn wait_connected(client: &Client) -> Result<(), RecipeError> {
    let mut state = client.state();
    loop {
        let s = *state.borrow_and_update();
        match s {
            ConnState::Connected => return Ok(()),
            s if s.is_terminal() => return Err(RecipeError::SessionEnded),
            _ => {}
        }
        if state.changed().await.is_err() {
            return Err(RecipeError::SessionEnded);
        }
    }
}

/// What a waiting handle wakes up for.
enum Wake {
    Message(Routed),
    /// The client reconnected since `seen` (or the state changed: re-check).
    StateChanged,
    Ended,
}

/// Waits for the next routed message or a state change of the client.
async fn next_wake(
    sub: &mut Subscription,
    state: &mut tokio::sync::watch::Receiver<ConnState>,
) -> Wake {
    tokio::select! {
        biased;
        m = sub.rx.recv() => match m {
            Some(m) => Wake::Message(m),
            None => Wake::Ended,
        },
        r = state.changed() => match r {
            Ok(()) if !state.borrow_and_update().is_terminal() => Wake::StateChanged,
            _ => Wake::Ended,
        },
    }
}

// ---------------------------------------------------------------------------
// Locks

#[derive(Serialize)]
struct LockArgs<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    permits: Option<u32>,
    /// A retry after a lost connection (see [`acquire_mode`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    resume: Option<bool>,
}

/// This client's claim on a lock, from the start of an acquire until its guard is
/// released or dropped (or the acquire failed). A second acquire of the same lock in
/// the same client fails [`RecipeError::AlreadyHeld`] at once, as the server would
/// (a session holds a lock at most once). It is what makes a resumed acquire safe:
/// the server matches a `resume` by session, so two acquires of one lock in flight in
/// one session could otherwise both be handed the same grant.
struct LocalClaim {
    dispatcher: Arc<Dispatcher>,
    key: (String, String),
}

impl LocalClaim {
    fn take(h: &Handle) -> Result<Option<LocalClaim>, RecipeError> {
        // Without a dispatcher (messages taken by the user) there is no claim, and
        // acquires are not resumed.
        let Ok(dispatcher) = Dispatcher::of(&h.client) else {
            return Ok(None);
        };
        let key = (h.module.clone(), h.name.clone());
        if !lock(&dispatcher.claims).insert(key.clone()) {
            return Err(RecipeError::AlreadyHeld);
        }
        Ok(Some(LocalClaim { dispatcher, key }))
    }
}

/// A release a dropped [`LockGuard`] sent without waiting (a quiet call), counted
/// from when it is written until its outcome is known (a later reply showed it
/// applied, or it was sent again after a lost connection).
///
/// The guard's [`LocalClaim`] ends as soon as the release is written: every later
/// call of the session is applied after it, so a new acquire may follow at once. Only
/// a *resumed* acquire (the retry after a lost connection) must wait for it: if the
/// connection was lost before the release was applied, the session still holds the
/// old grant, and `resume` would hand that grant back to the new acquire while the
/// release retry is about to end it.
struct ReleaseInDoubt {
    dispatcher: Arc<Dispatcher>,
    key: (String, String),
}

impl ReleaseInDoubt {
    fn new(dispatcher: &Arc<Dispatcher>, key: &(String, String)) -> ReleaseInDoubt {
        *lock(&dispatcher.releasing).entry(key.clone()).or_default() += 1;
        ReleaseInDoubt {
            dispatcher: dispatcher.clone(),
            key: key.clone(),
        }
    }
}

impl Drop for ReleaseInDoubt {
    fn drop(&mut self) {
        let mut r = lock(&self.dispatcher.releasing);
        if let Some(n) = r.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                r.remove(&self.key);
            }
        }
        drop(r);
        self.dispatcher.release_settled.notify_waiters();
    }
}

/// Waits until no release of this client's for `h`'s lock is in doubt (see
/// [`ReleaseInDoubt`]); at once without a dispatcher.
async fn settle_releases(h: &Handle) {
    let Ok(d) = Dispatcher::of(&h.client) else {
        return;
    };
    let key = (h.module.clone(), h.name.clone());
    loop {
        let settled = d.release_settled.notified();
        tokio::pin!(settled);
        settled.as_mut().enable();
        if !lock(&d.releasing).contains_key(&key) {
            return;
        }
        settled.await;
    }
}

impl std::fmt::Debug for LocalClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalClaim")
            .field("key", &self.key)
            .finish()
    }
}

impl Drop for LocalClaim {
    fn drop(&mut self) {
        lock(&self.dispatcher.claims).remove(&self.key);
    }
}

#[derive(Serialize)]
struct ReleaseArgs<'a> {
    name: &'a str,
    token: i64,
}

#[derive(Serialize)]
struct NameArgs<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct RevokeArgs<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<i64>,
}

/// `Granted` and `TryGrant` (same keys).
#[derive(Deserialize)]
struct GrantReply {
    granted: bool,
    #[serde(default)]
    token: Option<i64>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    since: Option<i64>,
}

#[derive(Deserialize)]
struct RevokedNotice {
    token: i64,
}

/// How a [`LockGuard`] holds its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// [`Lock`].
    Exclusive,
    /// A reader of a [`RwLock`].
    Read,
    /// The writer of a [`RwLock`].
    Write,
    /// A permit of a [`Semaphore`].
    Permit,
}

impl LockMode {
    fn release_function(self) -> &'static str {
        match self {
            LockMode::Exclusive => "release",
            LockMode::Read => "read_release",
            LockMode::Write => "write_release",
            LockMode::Permit => "sem_release",
        }
    }
}

/// A holder of a lock, as `holders` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LockHolder {
    pub session_id: i64,
    /// The grant's fencing token.
    pub token: i64,
    /// When the lock was granted (ms since the epoch, the log entry's time).
    pub since: i64,
    pub mode: LockMode,
    /// The holder znode.
    pub path: String,
}

/// A queued acquire, as `waiters` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LockWaiter {
    /// The parked call's id.
    pub call_id: i64,
    pub session_id: i64,
    /// The acquire function called (`acquire`, `read_acquire`, ...).
    pub function: String,
    pub mode: LockMode,
}

/// Acquires in one mode: the calls shared by [`Lock`], [`RwLock`] and [`Semaphore`].
async fn acquire_mode(
    h: &Handle,
    mode: LockMode,
    function: &str,
    timeout: Option<Duration>,
    permits: Option<u32>,
) -> Result<LockGuard, RecipeError> {
    // Registered first, so a revocation that follows the grant is not missed; a client
    // whose messages were taken still gets its locks, only without `revoked()`.
    let sub = h.subscribe(Matcher::Name(h.name.clone())).ok();
    let claim = LocalClaim::take(h)?;
    let timeout_ms = timeout.map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX));
    let mut args = LockArgs {
        name: &h.name,
        timeout_ms,
        permits,
        resume: None,
    };
    // On a reconnecting client a lost connection does not lose the place: the server
    // keeps a parked call until its session ends, so the retry (`resume`) waits with
    // the earlier call, or gets the grant it was given meanwhile.
    let g: GrantReply = loop {
        match h.call(function, &args).await {
            Err(e) if e.is_connection_loss() && h.client.inner.reconnect && claim.is_some() => {
                wait_connected(&h.client).await?;
                settle_releases(h).await;
                args.resume = Some(true);
            }
            r => break r?,
        }
    };
    let mut guard = LockGuard::from_reply(h, mode, g, sub)?
        .ok_or_else(|| RecipeError::Decode(format!("{function} replied granted: false")))?;
    guard.claim = claim;
    Ok(guard)
}

async fn try_acquire_mode(
    h: &Handle,
    mode: LockMode,
    function: &str,
    permits: Option<u32>,
) -> Result<Option<LockGuard>, RecipeError> {
    let sub = h.subscribe(Matcher::Name(h.name.clone())).ok();
    let claim = LocalClaim::take(h)?;
    let mut args = LockArgs {
        name: &h.name,
        timeout_ms: None,
        permits,
        resume: None,
    };
    // As in `acquire_mode`: a try whose reply was lost may have been granted.
    let g: GrantReply = loop {
        match h.call(function, &args).await {
            Err(e) if e.is_connection_loss() && h.client.inner.reconnect && claim.is_some() => {
                wait_connected(&h.client).await?;
                settle_releases(h).await;
                args.resume = Some(true);
            }
            r => break r?,
        }
    };
    Ok(LockGuard::from_reply(h, mode, g, sub)?.map(|mut guard| {
        guard.claim = claim;
        guard
    }))
}

/// The read-only queries every lock kind has.
macro_rules! lock_queries {
    ($t:ident) => {
        impl $t {
            /// Uses the recipe uploaded as `module` instead of the built-in one.
            pub fn with_module(mut self, module: &str) -> Self {
                self.h.module = module.to_string();
                self
            }

            /// The lock's name.
            pub fn name(&self) -> &str {
                &self.h.name
            }

            /// Who holds the lock, the oldest grant first.
            pub async fn holders(&self) -> Result<Vec<LockHolder>, RecipeError> {
                self.h
                    .call("holders", &NameArgs { name: &self.h.name })
                    .await
            }

            /// The queued acquires, oldest first.
            pub async fn waiters(&self) -> Result<Vec<LockWaiter>, RecipeError> {
                self.h
                    .call("waiters", &NameArgs { name: &self.h.name })
                    .await
            }

            /// Administrative: takes the lock from every holder, or only from
            /// `session_id`'s; returns the holders revoked. Their guards see
            /// [`LockGuard::revoked`].
            pub async fn revoke(
                &self,
                session_id: Option<i64>,
            ) -> Result<Vec<LockHolder>, RecipeError> {
                let args = RevokeArgs {
                    name: &self.h.name,
                    session_id,
                };
                self.h.call("revoke", &args).await
            }
        }
    };
}

/// An exclusive lock; see [`Client::lock`]. FIFO: waiters get it in the order they
/// asked, each grant with a larger fencing token.
#[derive(Debug, Clone)]
pub struct Lock {
    h: Handle,
}

lock_queries!(Lock);

impl Lock {
    /// Waits (the call parks on the server) until the lock is granted. On a
    /// reconnecting client a lost connection does not lose the place in the queue
    /// (see the module docs); on a plain client it fails with ConnectionLoss while the
    /// request may still be queued on the server and be granted later to the session.
    /// A second acquire of the same lock through the same client, while the first
    /// waits or its guard lives, fails [`RecipeError::AlreadyHeld`].
    pub async fn acquire(&self) -> Result<LockGuard, RecipeError> {
        acquire_mode(&self.h, LockMode::Exclusive, "acquire", None, None).await
    }

    /// As [`acquire`](Self::acquire), failing [`RecipeError::Timeout`] when the lock
    /// was not granted within `timeout` (the server's timer: the request leaves the
    /// queue then). A zero timeout fails at once unless the lock is free.
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<LockGuard, RecipeError> {
        acquire_mode(&self.h, LockMode::Exclusive, "acquire", Some(timeout), None).await
    }

    /// The lock if it is free and nobody waits (never queues); `None` otherwise.
    pub async fn try_acquire(&self) -> Result<Option<LockGuard>, RecipeError> {
        try_acquire_mode(&self.h, LockMode::Exclusive, "try_acquire", None).await
    }
}

/// A read-write lock; see [`Client::rw_lock`]. FIFO: a waiting writer blocks the
/// readers that come after it.
#[derive(Debug, Clone)]
pub struct RwLock {
    h: Handle,
}

lock_queries!(RwLock);

impl RwLock {
    /// Waits for a read grant (shared with other readers).
    pub async fn read(&self) -> Result<LockGuard, RecipeError> {
        acquire_mode(&self.h, LockMode::Read, "read_acquire", None, None).await
    }

    /// [`read`](Self::read) with a timeout ([`RecipeError::Timeout`]).
    pub async fn read_timeout(&self, timeout: Duration) -> Result<LockGuard, RecipeError> {
        acquire_mode(&self.h, LockMode::Read, "read_acquire", Some(timeout), None).await
    }

    /// A read grant if one fits at once.
    pub async fn try_read(&self) -> Result<Option<LockGuard>, RecipeError> {
        try_acquire_mode(&self.h, LockMode::Read, "try_read_acquire", None).await
    }

    /// Waits for the write grant (alone).
    pub async fn write(&self) -> Result<LockGuard, RecipeError> {
        acquire_mode(&self.h, LockMode::Write, "write_acquire", None, None).await
    }

    /// [`write`](Self::write) with a timeout ([`RecipeError::Timeout`]).
    pub async fn write_timeout(&self, timeout: Duration) -> Result<LockGuard, RecipeError> {
        acquire_mode(
            &self.h,
            LockMode::Write,
            "write_acquire",
            Some(timeout),
            None,
        )
        .await
    }

    /// The write grant if it fits at once.
    pub async fn try_write(&self) -> Result<Option<LockGuard>, RecipeError> {
        try_acquire_mode(&self.h, LockMode::Write, "try_write_acquire", None).await
    }
}

/// A counting semaphore; see [`Client::semaphore`].
#[derive(Debug, Clone)]
pub struct Semaphore {
    h: Handle,
    permits: u32,
}

lock_queries!(Semaphore);

impl Semaphore {
    /// Declares the semaphore with this handle's permits (`sem_init`): it is then kept
    /// when unused, and an existing one gets the new number of permits.
    pub async fn init(&self) -> Result<(), RecipeError> {
        #[derive(Serialize)]
        struct A<'a> {
            name: &'a str,
            permits: u32,
        }
        let args = A {
            name: &self.h.name,
            permits: self.permits,
        };
        let _: Option<()> = self.h.call("sem_init", &args).await?;
        Ok(())
    }

    /// Waits for a permit.
    pub async fn acquire(&self) -> Result<LockGuard, RecipeError> {
        let p = Some(self.permits);
        acquire_mode(&self.h, LockMode::Permit, "sem_acquire", None, p).await
    }

    /// [`acquire`](Self::acquire) with a timeout ([`RecipeError::Timeout`]).
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<LockGuard, RecipeError> {
        let p = Some(self.permits);
        acquire_mode(&self.h, LockMode::Permit, "sem_acquire", Some(timeout), p).await
    }

    /// A permit if one is free and nobody waits.
    pub async fn try_acquire(&self) -> Result<Option<LockGuard>, RecipeError> {
        let p = Some(self.permits);
        try_acquire_mode(&self.h, LockMode::Permit, "sem_try_acquire", p).await
    }
}

/// A grant of a [`Lock`], [`RwLock`] or [`Semaphore`].
///
/// Release it with [`release`](Self::release), which waits for the server and reports
/// failures, or by dropping the guard, which does not wait: the release of this grant
/// (by token, so it cannot release a later grant) is written at once as a quiet call,
/// which the server answers only if it fails (one frame instead of two; failures are
/// logged at debug level). Calls the session makes after the drop are applied after
/// the release, so acquiring the lock again right away is fine. On a reconnecting
/// client a dropped guard's release whose connection is lost is sent again after the
/// reconnect (that needs a tokio runtime, as the client does). [`forget`](Self::forget)
/// keeps the lock held on purpose.
///
/// Holding the guard does not prove the lock is still held (the session may expire,
/// an administrator may revoke it): pass [`fencing_token`](Self::fencing_token) to
/// what you protect, or guard ZooKeeper writes with a `check` of
/// [`path`](Self::path) in a multi (docs/RECIPES.md "Fencing tokens").
#[derive(Debug)]
pub struct LockGuard {
    h: Handle,
    mode: LockMode,
    token: i64,
    path: String,
    since: i64,
    released: bool,
    sub: Option<Subscription>,
    /// Dropped with the guard (after the release is sent).
    claim: Option<LocalClaim>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .finish()
    }
}

impl LockGuard {
    fn from_reply(
        h: &Handle,
        mode: LockMode,
        g: GrantReply,
        sub: Option<Subscription>,
    ) -> Result<Option<LockGuard>, RecipeError> {
        if !g.granted {
            return Ok(None);
        }
        let (Some(token), Some(path), Some(since)) = (g.token, g.path, g.since) else {
            return Err(RecipeError::Decode(
                "a grant without token, path or since".into(),
            ));
        };
        Ok(Some(LockGuard {
            h: h.clone(),
            mode,
            token,
            path,
            since,
            released: false,
            sub,
            claim: None,
        }))
    }

    /// The fencing token of this grant: larger than every earlier grant's of the lock.
    pub fn fencing_token(&self) -> i64 {
        self.token
    }

    /// The holder znode: it exists exactly while this grant holds (a multi's
    /// `check(path, -1)` fences a ZooKeeper write with it).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// When the lock was granted (ms since the epoch, the log entry's time).
    pub fn since_ms(&self) -> i64 {
        self.since
    }

    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.h.name
    }

    /// Releases this grant. [`RecipeError::NotHolder`] if it was no longer held
    /// (revoked, or lost with the session).
    ///
    /// On a reconnecting client a release whose connection is lost is sent again after
    /// the reconnect, with the grant's token: if the first one was applied, the retry
    /// finds the grant gone (`not the holder`), which then counts as released.
    pub async fn release(mut self) -> Result<(), RecipeError> {
        self.released = true;
        release_grant(&self.h, self.mode.release_function(), self.token, false).await
    }

    /// Drops the guard without releasing: the lock stays held until released (by
    /// token, e.g. by another handle of the session) or the session ends.
    pub fn forget(mut self) {
        self.released = true;
    }

    /// Resolves when this grant is revoked (an administrator's `revoke`), or fails
    /// [`RecipeError::SessionEnded`] when the session ends (the lock is then gone
    /// too). Fails [`RecipeError::MessagesTaken`] if the client's recipe messages were
    /// taken by its user. Cancel-safe.
    pub async fn revoked(&mut self) -> Result<(), RecipeError> {
        let Some(sub) = self.sub.as_mut() else {
            return Err(RecipeError::MessagesTaken);
        };
        loop {
            let Some(m) = sub.rx.recv().await else {
                return Err(RecipeError::SessionEnded);
            };
            if m.event != "revoked" {
                continue;
            }
            let n: RevokedNotice = decode("revoked notice", &m.payload)?;
            if n.token == self.token {
                return Ok(());
            }
        }
    }
}

/// Releases grant `token` of `h`'s lock with `function` and waits for the answer. On a
/// reconnecting client a release whose connection is lost is sent again after the
/// reconnect, by token; finding the grant gone then (`NotHolder`) means an earlier
/// attempt was applied, so it counts as released. `retried`: an earlier attempt (a
/// quiet release lost with its connection) may already have been applied.
async fn release_grant(
    h: &Handle,
    function: &str,
    token: i64,
    mut retried: bool,
) -> Result<(), RecipeError> {
    let args = ReleaseArgs {
        name: &h.name,
        token,
    };
    loop {
        match h.call::<_, Option<()>>(function, &args).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_connection_loss() && h.client.inner.reconnect => {
                wait_connected(&h.client).await?;
                retried = true;
            }
            Err(RecipeError::NotHolder) if retried => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let h = self.h.clone();
        let (function, token) = (self.mode.release_function(), self.token);
        let claim = self.claim.take();
        let args = rmp_serde::to_vec_named(&ReleaseArgs {
            name: &h.name,
            token,
        });
        let quiet = args
            .map_err(|e| ClientError::MessagePack(e.to_string()))
            .and_then(|args| h.client.recipe_call_quiet(&h.module, -1, function, args));
        let rt = tokio::runtime::Handle::try_current().ok();
        match (quiet, rt) {
            (Ok(q), rt) => {
                // Written: later calls of the session come after it, so the claim
                // can end now (see `ReleaseInDoubt` for the one exception).
                let doubt = claim
                    .as_ref()
                    .map(|c| ReleaseInDoubt::new(&c.dispatcher, &c.key));
                drop(claim);
                let Some(rt) = rt else { return };
                rt.spawn(async move {
                    let released = match q.outcome().await.map_err(RecipeError::from) {
                        // Unknown whether it was applied: send it again (by token, so
                        // it cannot end a later grant) once reconnected.
                        Err(e) if e.is_connection_loss() && h.client.inner.reconnect => {
                            release_grant(&h, function, token, true).await
                        }
                        r => r,
                    };
                    if let Err(e) = released {
                        tracing::debug!(lock = %h.name, token, error = %e, "release on drop failed");
                    }
                    drop(doubt);
                });
            }
            // Not sent (no connection now): release in the background when possible.
            (Err(_), Some(rt)) => {
                rt.spawn(async move {
                    if let Err(e) = release_grant(&h, function, token, false).await {
                        tracing::debug!(lock = %h.name, token, error = %e, "release on drop failed");
                    }
                    drop(claim);
                });
            }
            (Err(e), None) => {
                tracing::debug!(lock = %h.name, token, error = %e, "release on drop not sent (no connection, no runtime)");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Election

/// The current leader of an election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The leader's session id.
    pub session: i64,
    /// The promotion's epoch (a fencing token: strictly increasing per election).
    pub epoch: i64,
    /// The data the leader joined with.
    pub data: Vec<u8>,
}

#[derive(Deserialize)]
struct LeaderReply {
    session: i64,
    epoch: i64,
    data: Bin,
}

impl From<LeaderReply> for LeaderInfo {
    fn from(l: LeaderReply) -> Self {
        LeaderInfo {
            session: l.session,
            epoch: l.epoch,
            data: l.data.0,
        }
    }
}

#[derive(Deserialize)]
struct LeaderChanged {
    #[serde(default)]
    session: Option<i64>,
    #[serde(default)]
    epoch: Option<i64>,
    #[serde(default)]
    data: Option<Bin>,
}

#[derive(Deserialize)]
struct JoinReply {
    leader: bool,
    #[serde(default)]
    epoch: Option<i64>,
    #[serde(default)]
    position: Option<u32>,
}

#[derive(Deserialize)]
struct Elected {
    epoch: i64,
}

#[derive(Deserialize)]
struct ResignReply {
    was_leader: bool,
}

/// A candidate's place in an election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Leading, promoted with this epoch.
    Leader { epoch: i64 },
    /// Waiting, with `position` candidates ahead (the leader included: 1 = next).
    Waiting { position: u32 },
}

/// A leader election; see [`Client::election`].
#[derive(Debug, Clone)]
pub struct Election {
    h: Handle,
}

impl Election {
    /// Uses the recipe uploaded as `module` instead of the built-in one.
    pub fn with_module(mut self, module: &str) -> Self {
        self.h.module = module.to_string();
        self
    }

    pub fn name(&self) -> &str {
        &self.h.name
    }

    /// Joins as a candidate with `data` (e.g. the address others should use). One
    /// candidacy per session: joining again replies the current standing (`data`
    /// stays the first one). Retried after a reconnect (a retried join is safe).
    pub async fn join(&self, data: &[u8]) -> Result<Candidacy, RecipeError> {
        #[derive(Serialize)]
        struct A<'a> {
            name: &'a str,
            data: Bin,
        }
        let sub = self.h.subscribe(Matcher::Name(self.h.name.clone()))?;
        let reconnects = self.h.client.reconnects();
        let args = A {
            name: &self.h.name,
            data: Bin(data.to_vec()),
        };
        let (r, zxid): (JoinReply, i64) = self.h.call_at_retrying("join", &args).await?;
        Ok(Candidacy {
            election: self.clone(),
            standing: standing(&r)?,
            sub,
            reconnects,
            data: data.to_vec(),
            read_zxid: zxid,
        })
    }

    /// Leaves the election: a leader steps down (the next candidate is promoted), a
    /// waiting candidate leaves the queue. Returns whether the session was leading.
    /// [`RecipeError::NotCandidate`] if the session is not a candidate.
    pub async fn resign(&self) -> Result<bool, RecipeError> {
        let r: ResignReply = self
            .h
            .call("resign", &NameArgs { name: &self.h.name })
            .await?;
        Ok(r.was_leader)
    }

    /// The current leader, if any.
    pub async fn leader(&self) -> Result<Option<LeaderInfo>, RecipeError> {
        let r: Option<LeaderReply> = self
            .h
            .call("leader", &NameArgs { name: &self.h.name })
            .await?;
        Ok(r.map(LeaderInfo::from))
    }

    /// Observes the leader: [`LeaderWatch::next`] yields the current leader first,
    /// then every change (catching up after a reconnect).
    pub async fn observe(&self) -> Result<LeaderWatch, RecipeError> {
        let sub = self.h.subscribe(Matcher::Name(self.h.name.clone()))?;
        let reconnects = self.h.client.reconnects();
        let (r, read_zxid): (Option<LeaderReply>, i64) = self
            .h
            .call_at_retrying("observe", &NameArgs { name: &self.h.name })
            .await?;
        Ok(LeaderWatch {
            election: self.clone(),
            sub,
            state: self.h.client.state(),
            reconnects,
            pending: Some(r.map(LeaderInfo::from)),
            last: None,
            read_zxid,
        })
    }
}

fn standing(r: &JoinReply) -> Result<Standing, RecipeError> {
    match (r.leader, r.epoch, r.position) {
        (true, Some(epoch), _) => Ok(Standing::Leader { epoch }),
        (false, _, Some(position)) => Ok(Standing::Waiting { position }),
        _ => Err(RecipeError::Decode(
            "join reply without epoch or position".into(),
        )),
    }
}

/// A session's candidacy, from [`Election::join`]. Dropping it does not resign: the
/// session stays a candidate (and possibly the leader) until
/// [`resign`](Self::resign) or the session ends.
#[derive(Debug)]
pub struct Candidacy {
    election: Election,
    standing: Standing,
    sub: Subscription,
    reconnects: u64,
    data: Vec<u8>,
    /// Messages up to this zxid are older than the last join's reply.
    read_zxid: i64,
}

impl Candidacy {
    /// The standing as last known (the join's reply, or the last promotion seen).
    pub fn standing(&self) -> Standing {
        self.standing
    }

    /// Waits until this session leads and returns the promotion's epoch (at once if it
    /// leads already). After a reconnect it re-joins to learn the standing, since a
    /// promotion message sent meanwhile is lost. [`RecipeError::SessionEnded`] when
    /// the session ends first. Cancel-safe.
    pub async fn leadership(&mut self) -> Result<i64, RecipeError> {
        let mut state = self.election.h.client.state();
        loop {
            if let Standing::Leader { epoch } = self.standing {
                return Ok(epoch);
            }
            let now = self.election.h.client.reconnects();
            if now != self.reconnects {
                // Counted as caught up only once the re-join replied (cancel-safety).
                self.rejoin().await?;
                self.reconnects = now;
                continue;
            }
            match next_wake(&mut self.sub, &mut state).await {
                Wake::Message(m) if m.event == "elected" && m.zxid > self.read_zxid => {
                    let e: Elected = decode("elected message", &m.payload)?;
                    self.standing = Standing::Leader { epoch: e.epoch };
                }
                Wake::Message(_) | Wake::StateChanged => {}
                Wake::Ended => return Err(RecipeError::SessionEnded),
            }
        }
    }

    async fn rejoin(&mut self) -> Result<(), RecipeError> {
        #[derive(Serialize)]
        struct A<'a> {
            name: &'a str,
            data: Bin,
        }
        let h = &self.election.h;
        let args = A {
            name: &h.name,
            data: Bin(self.data.clone()),
        };
        let (r, zxid): (JoinReply, i64) = h.call_at_retrying("join", &args).await?;
        self.standing = standing(&r)?;
        self.read_zxid = zxid;
        Ok(())
    }

    /// Resigns (see [`Election::resign`]); returns whether the session was leading.
    pub async fn resign(self) -> Result<bool, RecipeError> {
        self.election.resign().await
    }
}

/// Leader changes of an election, from [`Election::observe`]. Dropping it stops the
/// observation on the server (a spawned `unobserve`) unless another handle of the
/// same client still observes this election.
#[derive(Debug)]
pub struct LeaderWatch {
    election: Election,
    sub: Subscription,
    state: tokio::sync::watch::Receiver<ConnState>,
    reconnects: u64,
    /// The next value to yield, if known.
    pending: Option<Option<LeaderInfo>>,
    /// The last value yielded.
    last: Option<Option<LeaderInfo>>,
    /// Messages up to this zxid are older than the last read of the leader.
    read_zxid: i64,
}

impl LeaderWatch {
    /// The next leader (`None`: nobody leads): the current one first, then each change.
    /// Changes missed while reconnecting are caught up by re-reading the leader, so
    /// after a reconnect intermediate leaders may be skipped. Repeats are not yielded.
    /// [`RecipeError::SessionEnded`] when the session ends. Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<LeaderInfo>, RecipeError> {
        loop {
            if let Some(p) = self.pending.take() {
                if self.last.as_ref() != Some(&p) {
                    self.last = Some(p.clone());
                    return Ok(p);
                }
            }
            let now = self.election.h.client.reconnects();
            if now != self.reconnects {
                // Counted as caught up only once the leader was read (cancel-safety);
                // a read lost with the connection is retried at the next turn.
                let h = &self.election.h;
                let read = h.call_at("leader", &NameArgs { name: &h.name }).await;
                match read {
                    Ok((l, zxid)) => {
                        let l: Option<LeaderReply> = l;
                        self.read_zxid = zxid;
                        self.pending = Some(l.map(LeaderInfo::from));
                        self.reconnects = now;
                    }
                    Err(e) if e.is_connection_loss() => {
                        wait_connected(&self.election.h.client).await?;
                    }
                    Err(e) => return Err(e),
                }
                continue;
            }
            match next_wake(&mut self.sub, &mut self.state).await {
                Wake::Message(m) if m.event == "leader" && m.zxid > self.read_zxid => {
                    let c: LeaderChanged = decode("leader message", &m.payload)?;
                    self.pending = Some(match (c.session, c.epoch) {
                        (Some(session), Some(epoch)) => Some(LeaderInfo {
                            session,
                            epoch,
                            data: c.data.map(|d| d.0).unwrap_or_default(),
                        }),
                        _ => None,
                    });
                }
                Wake::Message(_) | Wake::StateChanged => {}
                Wake::Ended => return Err(RecipeError::SessionEnded),
            }
        }
    }
}

impl Drop for LeaderWatch {
    fn drop(&mut self) {
        let h = self.election.h.clone();
        let matcher = Matcher::Name(h.name.clone());
        if self.sub.dispatcher.others(&h.module, &matcher, self.sub.id) > 0 {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = h
                    .call::<_, bool>("unobserve", &NameArgs { name: &h.name })
                    .await;
            });
        }
    }
}

// ---------------------------------------------------------------------------
// Barrier

/// A barrier's release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct BarrierRelease {
    /// The zxid of the release: the same for every member of one release, larger at
    /// each release.
    pub generation: i64,
    /// The parties released (for `double_leave`: how many left by `double_leave`).
    pub parties: u32,
}

#[derive(Serialize)]
struct EnterArgs<'a> {
    name: &'a str,
    parties: u32,
}

/// The barriers of one name; see [`Client::barrier`]. The waiting calls park on the
/// server; on a reconnecting client they are retried after a reconnect (the recipe
/// replaces the old parked call), so a member does not drop out because its
/// connection moved.
#[derive(Debug, Clone)]
pub struct Barrier {
    h: Handle,
}

impl Barrier {
    /// Uses the recipe uploaded as `module` instead of the built-in one.
    pub fn with_module(mut self, module: &str) -> Self {
        self.h.module = module.to_string();
        self
    }

    pub fn name(&self) -> &str {
        &self.h.name
    }

    /// N-party barrier: waits until `parties` sessions (this one included) entered,
    /// then all are released together. Every member must pass the same `parties`.
    pub async fn enter(&self, parties: u32) -> Result<BarrierRelease, RecipeError> {
        let args = EnterArgs {
            name: &self.h.name,
            parties,
        };
        self.h.call_retrying("enter", &args).await
    }

    /// Double barrier, entering: waits until `parties` sessions entered.
    pub async fn double_enter(&self, parties: u32) -> Result<BarrierRelease, RecipeError> {
        let args = EnterArgs {
            name: &self.h.name,
            parties,
        };
        self.h.call_retrying("double_enter", &args).await
    }

    /// Double barrier, leaving: waits until every member left.
    pub async fn double_leave(&self) -> Result<BarrierRelease, RecipeError> {
        self.h
            .call_retrying("double_leave", &NameArgs { name: &self.h.name })
            .await
    }

    /// Sets the set/remove barrier (idempotent): [`wait`](Self::wait) then blocks.
    pub async fn set(&self) -> Result<(), RecipeError> {
        let _: Option<()> = self.h.call("set", &NameArgs { name: &self.h.name }).await?;
        Ok(())
    }

    /// Removes the set/remove barrier, releasing every waiter; returns how many
    /// `wait` calls it completed.
    pub async fn remove(&self) -> Result<u32, RecipeError> {
        #[derive(Deserialize)]
        struct R {
            released: u32,
        }
        let r: R = self
            .h
            .call("remove", &NameArgs { name: &self.h.name })
            .await?;
        Ok(r.released)
    }

    /// Returns at once if the set/remove barrier is not set, else when it is removed.
    pub async fn wait(&self) -> Result<(), RecipeError> {
        let _: Option<()> = self
            .h
            .call_retrying("wait", &NameArgs { name: &self.h.name })
            .await?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Config

/// A config key's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub key: String,
    pub value: Vec<u8>,
    /// How many publishes the key has had (1 for the first).
    pub version: i64,
}

/// A value delivered by a [`ConfigSubscription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigUpdate {
    pub key: String,
    pub value: Vec<u8>,
    pub version: i64,
    /// This update stands for several publishes: versions between the previous
    /// update of this key and this one were missed (lost while reconnecting) and only
    /// the latest value is delivered. Never set on the first delivery of a key
    /// present when the subscription started.
    pub coalesced: bool,
}

#[derive(Deserialize)]
struct EntryReply {
    key: String,
    value: Bin,
    version: i64,
}

#[derive(Deserialize)]
struct SubscribeReply {
    entries: Vec<EntryReply>,
}

#[derive(Serialize)]
struct SubscribeArgs<'a> {
    key: &'a str,
    prefix: bool,
}

#[derive(Serialize)]
struct KeyArgs<'a> {
    key: &'a str,
}

/// Configuration broadcast; see [`Client::config`].
#[derive(Debug, Clone)]
pub struct ConfigStore {
    h: Handle,
}

impl ConfigStore {
    /// Uses the recipe uploaded as `module` instead of the built-in one.
    pub fn with_module(mut self, module: &str) -> Self {
        self.h.module = module.to_string();
        self
    }

    /// Publishes `value` under `key` and returns its new version. With
    /// `expected_version` it applies only if the key is at that version (0: does not
    /// exist yet), else fails [`RecipeError::VersionMismatch`].
    pub async fn publish(
        &self,
        key: &str,
        value: &[u8],
        expected_version: Option<i64>,
    ) -> Result<i64, RecipeError> {
        #[derive(Serialize)]
        struct A<'a> {
            key: &'a str,
            value: Bin,
            #[serde(skip_serializing_if = "Option::is_none")]
            expected_version: Option<i64>,
        }
        #[derive(Deserialize)]
        struct R {
            version: i64,
        }
        let args = A {
            key,
            value: Bin(value.to_vec()),
            expected_version,
        };
        let r: R = self.h.call("publish", &args).await?;
        Ok(r.version)
    }

    /// The key's current value, if it was ever published.
    pub async fn get(&self, key: &str) -> Result<Option<ConfigEntry>, RecipeError> {
        let r: Option<EntryReply> = self.h.call("get", &KeyArgs { key }).await?;
        Ok(r.map(|e| ConfigEntry {
            key: e.key,
            value: e.value.0,
            version: e.version,
        }))
    }

    /// Subscribes to one key: the subscription yields its current value (if any) then
    /// every publish, in version order.
    pub async fn subscribe(&self, key: &str) -> Result<ConfigSubscription, RecipeError> {
        self.subscribe_inner(key, false).await
    }

    /// Subscribes to every key starting with `prefix` (`""`: all keys, later ones too).
    pub async fn subscribe_prefix(&self, prefix: &str) -> Result<ConfigSubscription, RecipeError> {
        self.subscribe_inner(prefix, true).await
    }

    async fn subscribe_inner(
        &self,
        key: &str,
        prefix: bool,
    ) -> Result<ConfigSubscription, RecipeError> {
        let matcher = if prefix {
            Matcher::KeyPrefix(key.to_string())
        } else {
            Matcher::Key(key.to_string())
        };
        let sub = self.h.subscribe(matcher)?;
        let reconnects = self.h.client.reconnects();
        let mut s = ConfigSubscription {
            h: self.h.clone(),
            key: key.to_string(),
            prefix,
            sub,
            state: self.h.client.state(),
            reconnects,
            last: HashMap::new(),
            pending: VecDeque::new(),
            done: false,
        };
        s.resubscribe(true).await?;
        Ok(s)
    }
}

/// A config subscription, from [`ConfigStore::subscribe`] or
/// [`ConfigStore::subscribe_prefix`]. Dropping it ends the subscription on the server
/// (a spawned `unsubscribe`) unless another handle of the same client has the same
/// one; [`unsubscribe`](Self::unsubscribe) does it and waits.
#[derive(Debug)]
pub struct ConfigSubscription {
    h: Handle,
    key: String,
    prefix: bool,
    sub: Subscription,
    state: tokio::sync::watch::Receiver<ConnState>,
    reconnects: u64,
    /// The last version delivered per key.
    last: HashMap<String, i64>,
    pending: VecDeque<ConfigUpdate>,
    /// Unsubscribed already: nothing to do on drop.
    done: bool,
}

impl ConfigSubscription {
    /// (Re)subscribes and queues the values newer than those delivered.
    async fn resubscribe(&mut self, first: bool) -> Result<(), RecipeError> {
        let args = SubscribeArgs {
            key: &self.key,
            prefix: self.prefix,
        };
        let r: SubscribeReply = self.h.call_retrying("subscribe", &args).await?;
        for e in r.entries {
            self.offer(e.key, e.value.0, e.version, first);
        }
        Ok(())
    }

    /// Queues a value if it is newer than the last delivered of its key.
    fn offer(&mut self, key: String, value: Vec<u8>, version: i64, initial: bool) {
        let last = self.last.get(&key).copied().unwrap_or(0);
        if version <= last {
            return;
        }
        self.last.insert(key.clone(), version);
        self.pending.push_back(ConfigUpdate {
            key,
            value,
            version,
            coalesced: !initial && version > last + 1,
        });
    }

    /// The next update: the values current when subscribing first (sorted by key),
    /// then every publish of a matching key, each key's versions in increasing order.
    /// After a reconnect it re-subscribes, which replies the current values: a key
    /// published meanwhile is delivered at its latest version with
    /// [`ConfigUpdate::coalesced`] set. [`RecipeError::SessionEnded`] when the session
    /// ends. Cancel-safe.
    pub async fn next(&mut self) -> Result<ConfigUpdate, RecipeError> {
        loop {
            if let Some(u) = self.pending.pop_front() {
                return Ok(u);
            }
            let now = self.h.client.reconnects();
            if now != self.reconnects {
                // Counted as caught up only once the re-subscribe replied.
                self.resubscribe(false).await?;
                self.reconnects = now;
                continue;
            }
            match next_wake(&mut self.sub, &mut self.state).await {
                Wake::Message(m) if m.event == "config" => {
                    let e: EntryReply = decode("config message", &m.payload)?;
                    self.offer(e.key, e.value.0, e.version, false);
                }
                Wake::Message(_) | Wake::StateChanged => {}
                Wake::Ended => return Err(RecipeError::SessionEnded),
            }
        }
    }

    /// Ends the subscription on the server (unless another handle of this client has
    /// the same one) and waits for it. Returns whether the session had it.
    pub async fn unsubscribe(mut self) -> Result<bool, RecipeError> {
        self.done = true;
        let matcher = self.matcher(&self.key);
        if self
            .sub
            .dispatcher
            .others(&self.h.module, &matcher, self.sub.id)
            > 0
        {
            return Ok(true);
        }
        let args = SubscribeArgs {
            key: &self.key,
            prefix: self.prefix,
        };
        self.h.call("unsubscribe", &args).await
    }

    fn matcher(&self, key: &str) -> Matcher {
        if self.prefix {
            Matcher::KeyPrefix(key.to_string())
        } else {
            Matcher::Key(key.to_string())
        }
    }
}

impl Drop for ConfigSubscription {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let matcher = self.matcher(&self.key);
        if self
            .sub
            .dispatcher
            .others(&self.h.module, &matcher, self.sub.id)
            > 0
        {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let h = self.h.clone();
        let (key, prefix) = (self.key.clone(), self.prefix);
        rt.spawn(async move {
            let _ = h
                .call::<_, bool>("unsubscribe", &SubscribeArgs { key: &key, prefix })
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_failures_map_to_variants() {
        let f = |m: &str| {
            RecipeError::from(ClientError::Recipe {
                code: ErrorCode::RecipeFailed,
                message: m.into(),
            })
        };
        assert!(matches!(f("timeout"), RecipeError::Timeout));
        assert!(matches!(f("already held"), RecipeError::AlreadyHeld));
        assert!(matches!(f("not the holder"), RecipeError::NotHolder));
        assert!(matches!(f("bad lock name \"\""), RecipeError::BadName(_)));
        assert_eq!(
            f("wrong kind: lock a is a mutex, not a rwlock").name(),
            "WrongKind"
        );
        match f("version mismatch: key a b is at version 3, not 1") {
            RecipeError::VersionMismatch {
                key,
                current,
                expected,
            } => assert_eq!((key.as_str(), current, expected), ("a b", 3, 1)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(f("whatever"), RecipeError::Failed(m) if m == "whatever"));
        let lost = RecipeError::from(ClientError::ConnectionClosed);
        assert!(lost.is_connection_loss());
        assert_eq!(lost.name(), "Client");
    }

    #[test]
    fn bin_is_messagepack_bin() {
        let b = rmp_serde::to_vec(&Bin(vec![1, 2])).unwrap();
        assert_eq!(b, vec![0xc4, 2, 1, 2]);
        let back: Bin = rmp_serde::from_slice(&b).unwrap();
        assert_eq!(back.0, vec![1, 2]);
        let s: Bin = rmp_serde::from_slice(&rmp_serde::to_vec("hi").unwrap()).unwrap();
        assert_eq!(s.0, b"hi");
    }
}
