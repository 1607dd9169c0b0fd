//! `wazoo-client`: an async ZooKeeper-protocol client on tokio, for Wazoo and Apache
//! ZooKeeper alike.
//!
//! One `Client` is one session over one TCP connection at a time. Requests are pipelined:
//! [`Client::request`] assigns the next xid, queues the frame and resolves when the
//! matching reply arrives (replies come back in xid order; a reply out of order is a
//! protocol violation and ends the connection). Watch notifications arrive on the
//! channel from [`Client::take_events`], in the order the server sent them. A
//! background ping every negotiated-timeout/3 keeps the session alive; a server
//! silent for the whole negotiated timeout (2/3 of it for a reconnecting client, as
//! ZooKeeper's read timeout) counts as a lost connection.
//!
//! Wazoo's recipe extension (server-side wasm, docs/PROTOCOL.md "Recipe extension")
//! has typed helpers: [`Client::recipe_upload`], [`Client::recipe_list`],
//! [`Client::recipe_delete`], [`Client::recipe_adopt_runtime`],
//! [`Client::recipe_runtime_info`], [`Client::recipe_call`] (which waits out a parked
//! call: sent with `CALL_DEFER_REPLY`, it is answered once, when it completes),
//! [`Client::recipe_call_typed`] and [`Client::recipe_call_quiet`] (written at once,
//! answered only if it fails); messages recipes push to the session arrive on
//! [`Client::take_recipe_messages`]. Their failures are [`ClientError::Recipe`], with
//! the server's code and message.
//!
//! # Servers, failover and reconnection
//!
//! Both constructors take a connect string, `"host1:port1,host2:port2,..."` (no chroot),
//! and try the servers in order (or in a seeded shuffle, [`Failover::shuffle_seed`])
//! until one accepts the session.
//!
//! [`Client::connect`] keeps the historical behaviour: one session over one
//! connection; when the connection is lost every outstanding and later request (and
//! every parked recipe call) fails with [`ClientError::ConnectionClosed`] (code
//! ConnectionLoss), the event channels end, and the state goes to
//! [`ConnState::Disconnected`] for good.
//!
//! [`Client::connect_with`] with [`Failover::reconnect`] behaves like ZooKeeper's own
//! clients: when the connection drops it reconnects to the next server (round robin)
//! with the same session id, password and last zxid seen, replays the auth packets
//! that succeeded, and re-arms every registered watch (data, exist, child, persistent,
//! persistent-recursive) with setWatches2 relative to the last zxid seen, so changes
//! made while disconnected still fire. The watch set is tracked from replies and
//! notifications in wire order: a one-shot watch a notification consumed is not
//! re-armed, nor one whose request was still in flight. Only then does the state go
//! back to Connected and requests go through again. [`Client::set_servers`] replaces
//! the server list for later reconnects. Meanwhile:
//! * requests in flight when the connection dropped fail with
//!   [`ClientError::ConnectionClosed`] (code ConnectionLoss); they are never replayed,
//!   since a write may or may not have been applied. Requests made while disconnected
//!   fail the same way at once. Callers retry (as with Curator's retry policies).
//! * parked recipe calls fail with ConnectionLoss too. The server cancels them when
//!   the session ends, but while the session lives on the call may still complete on
//!   the server, and its reply (or completion notification), sent on the lost
//!   connection, is lost: callers retry the call (recipes should be written so a retry
//!   is safe). A quiet call in flight then resolves with ConnectionLoss too: it may or
//!   may not have been applied.
//! * the events and recipe-message channels stay open across reconnects; they end
//!   when the session does (expired or closed).
//! * if the server answers the reconnect with "session expired" (ConnectResponse
//!   timeout 0), the state becomes [`ConnState::Expired`], the client is closed for
//!   good and every request fails with `ClientError::Zk(ErrorCode::SessionExpired)`.
//!   A new session needs a new `Client`.
//!
//! Only the server decides expiry: while no server is reachable the client keeps
//! trying (backing off up to 1 s between rounds) and stays Disconnected.
//!
//! # Connection state
//!
//! [`Client::state`] returns a `tokio::sync::watch::Receiver<ConnState>`: Connected,
//! Disconnected, Connected again after a reconnect, and finally Expired or Closed.
//! (A watch channel keeps only the latest value: a waiter sees the current state,
//! not necessarily every transition; [`Client::reconnects`] counts reconnections.)
//! State changes are not delivered on the events channel.
//!
//! Dropping the last `Client` handle closes the socket without closeSession, so the
//! session lives on until the server expires it; [`Client::close`] ends it properly.

mod connection;
#[cfg(test)]
mod failover_tests;
#[cfg(test)]
mod recipe_tests;
#[cfg(test)]
mod recipe_wrapper_tests;
mod recipes;

pub use wazoo_proto as proto;

pub use wazoo_proto::RecipeInfo;

pub use recipes::{
    builtin, Barrier, BarrierRelease, Candidacy, ConfigEntry, ConfigStore, ConfigSubscription,
    ConfigUpdate, Election, LeaderInfo, LeaderWatch, Lock, LockGuard, LockHolder, LockMode,
    LockWaiter, RecipeError, RwLock, Semaphore, Standing,
};

use connection::{Connection, ParkedCall, Pushed, Reply, SessionCtx};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio::sync::watch;
use wazoo_proto::consts::perms;
use wazoo_proto::recipe;
use wazoo_proto::{
    Acl, AuthPacket, CheckVersionRequest, CreateKind, CreateOp, DecodeError, DeleteRequest,
    ErrorCode, Id, OpResult, PathWatchRequest, Request, Response, SetDataRequest, Stat, WriteOp,
};

/// Session parameters for [`Client::connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Requested session timeout; the server clamps it (ZooKeeper: to [2, 20] ticks).
    pub timeout_ms: i32,
    /// 0 asks for a new session; otherwise the session to resume (with `passwd`).
    pub session_id: i64,
    /// The session's password when resuming; empty sends 16 zero bytes.
    pub passwd: Vec<u8>,
    /// Whether a read-only server may accept this client.
    pub read_only: bool,
    /// Highest zxid this client has seen; a server behind it refuses the connection.
    pub last_zxid_seen: i64,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            timeout_ms: 30000,
            session_id: 0,
            passwd: Vec::new(),
            read_only: false,
            last_zxid_seen: 0,
        }
    }
}

/// How [`Client::connect_with`] picks servers and whether it reconnects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failover {
    /// Reconnect (same session) to the next server when the connection drops.
    pub reconnect: bool,
    /// Shuffle the server list with this seed before the first connect, as
    /// ZooKeeper's StaticHostProvider does (randomly); `None` keeps the given order.
    pub shuffle_seed: Option<u64>,
}

impl Failover {
    /// Reconnecting, servers in the given order.
    pub fn reconnecting() -> Self {
        Failover {
            reconnect: true,
            shuffle_seed: None,
        }
    }
}

/// The client's view of its session (ZooKeeper's KeeperState, reduced).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnState {
    /// Connected to a server; requests go through.
    Connected,
    /// The connection dropped. A reconnecting client is trying the servers; others
    /// stay here for good.
    Disconnected,
    /// A server answered the reconnect with "session expired": the client is closed
    /// and requests fail with SessionExpired.
    Expired,
    /// [`Client::close`] ended the session.
    Closed,
}

impl ConnState {
    /// Expired and Closed are final.
    pub fn is_terminal(self) -> bool {
        matches!(self, ConnState::Expired | ConnState::Closed)
    }
}

/// Splits a connect string `"h1:p1,h2:p2,..."` into addresses.
pub fn parse_connect_string(s: &str) -> Result<Vec<String>, ClientError> {
    let servers: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect();
    if servers.is_empty() {
        return Err(ClientError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("empty connect string {s:?}"),
        )));
    }
    Ok(servers)
}

/// Fisher-Yates with a splitmix64 stream: deterministic for a seed.
fn shuffle(v: &mut [String], seed: u64) {
    let mut x = seed;
    let mut next = || {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for i in (1..v.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// Protocol frames of a session ([`Client::frame_counts`]), one per ZooKeeper message:
/// `sent` counts requests (closeSession, auth and setWatches included), `received`
/// counts replies, watch notifications and recipe notifications (a parked recipe
/// call's completion included). Pings, ping replies and the connect handshake are not
/// counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameCounts {
    pub sent: u64,
    pub received: u64,
}

impl FrameCounts {
    /// Sent plus received.
    pub fn total(&self) -> u64 {
        self.sent + self.received
    }
}

/// A watch notification (xid -1) as received.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchedEvent {
    /// `consts::event::*`.
    pub event_type: i32,
    /// `consts::state::*`.
    pub state: i32,
    pub path: String,
    /// The reply header's zxid: -1 from ZooKeeper ≤ 3.8, the triggering zxid from 3.9+.
    pub zxid: i64,
}

/// A message a recipe pushed to this session (`RecipeNotification` kind 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeMessage {
    /// The recipe (module name) that sent it.
    pub module: String,
    /// MessagePack, as the recipe wrote it.
    pub payload: Vec<u8>,
    /// The notification header's zxid.
    pub zxid: i64,
}

/// The reply to a successful [`Client::recipe_upload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeUploaded {
    pub name: String,
    /// The version the server assigned to this module.
    pub version: i32,
    /// SHA-256 of the module, lowercase hex.
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot decode the server's reply: {0}")]
    Decode(#[from] DecodeError),
    /// The ConnectResponse carried timeout 0: unknown or expired session, or a bad password.
    #[error("session refused by the server (unknown or expired session, or wrong password)")]
    SessionRefused,
    #[error("connection closed")]
    ConnectionClosed,
    #[error("server returned {0}")]
    Zk(ErrorCode),
    /// A recipe operation failed: the server's code (a `Recipe*` code, or NoAuth,
    /// BadArguments, MarshallingError...) and its human-readable reason (empty when
    /// the server sent none). Displays as `NAME: message`, e.g.
    /// `RecipeFailed: unknown function x`.
    #[error("{}", recipe_error_text(.code, .message))]
    Recipe { code: ErrorCode, message: String },
    /// Recipe arguments that cannot be encoded, or a reply that does not decode, as
    /// the requested type ([`Client::recipe_call_typed`]).
    #[error("MessagePack: {0}")]
    MessagePack(String),
}

fn recipe_error_text(code: &ErrorCode, message: &str) -> String {
    if message.is_empty() {
        code.name().to_string()
    } else {
        format!("{}: {message}", code.name())
    }
}

impl From<ErrorCode> for ClientError {
    fn from(c: ErrorCode) -> Self {
        ClientError::Zk(c)
    }
}

impl ClientError {
    /// The ZooKeeper error code, if this is one. A lost connection is ConnectionLoss,
    /// as in ZooKeeper's clients.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Zk(c) | ClientError::Recipe { code: c, .. } => Some(*c),
            ClientError::ConnectionClosed => Some(ErrorCode::ConnectionLoss),
            _ => None,
        }
    }

    /// The server's message for a recipe error.
    pub fn recipe_message(&self) -> Option<&str> {
        match self {
            ClientError::Recipe { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// world:anyone with all permissions (`ZooDefs.Ids.OPEN_ACL_UNSAFE`).
pub fn open_acl_unsafe() -> Vec<Acl> {
    vec![Acl {
        perms: perms::ALL,
        id: Id {
            scheme: "world".into(),
            id: "anyone".into(),
        },
    }]
}

/// world:anyone read-only (`ZooDefs.Ids.READ_ACL_UNSAFE`).
pub fn read_acl_unsafe() -> Vec<Acl> {
    vec![Acl {
        perms: perms::READ,
        id: Id {
            scheme: "world".into(),
            id: "anyone".into(),
        },
    }]
}

/// All permissions for whoever is authenticated on the creating connection
/// (`ZooDefs.Ids.CREATOR_ALL_ACL`).
pub fn creator_all_acl() -> Vec<Acl> {
    vec![Acl {
        perms: perms::ALL,
        id: Id {
            scheme: "auth".into(),
            id: "".into(),
        },
    }]
}

/// A session handle. Cheap to clone; the connection closes (without closeSession)
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    session_id: i64,
    passwd: Vec<u8>,
    /// Negotiated; a reconnect may renegotiate it.
    timeout_ms: AtomicI32,
    read_only: AtomicBool,
    /// What the client asked for (timeout, read-only) on connect.
    opts: ConnectOptions,
    reconnect: bool,
    /// The current connection (a closed one while disconnected).
    conn: Mutex<Arc<Connection>>,
    ctx: Arc<SessionCtx>,
    servers: Mutex<Vec<String>>,
    /// Index in `servers` of the last server connected to.
    server_idx: AtomicUsize,
    reconnects: AtomicU64,
    /// Auth packets that succeeded, replayed on reconnect.
    auths: Mutex<Vec<AuthPacket>>,
    /// Set by close(): no reconnecting any more.
    closing: AtomicBool,
    state: watch::Sender<ConnState>,
    /// The senders of the pushed-frame channels, cloned into each connection; dropped
    /// when the session ends so the channels end.
    pushed: Mutex<Option<Pushed>>,
    events: Mutex<Option<UnboundedReceiver<WatchedEvent>>>,
    recipe_messages: Mutex<Option<UnboundedReceiver<RecipeMessage>>>,
}

impl Inner {
    fn conn(&self) -> Arc<Connection> {
        self.conn.lock().unwrap().clone()
    }

    fn set_state(&self, s: ConnState) {
        self.state.send_if_modified(|cur| {
            // Final states stay final.
            if cur.is_terminal() || *cur == s {
                return false;
            }
            *cur = s;
            true
        });
    }

    /// Ends the session locally: final state, channels end.
    fn finish(&self, s: ConnState) {
        self.closing.store(true, Ordering::SeqCst);
        self.set_state(s);
        self.pushed.lock().unwrap().take();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("session_id", &format_args!("{:#x}", self.inner.session_id))
            .field("timeout_ms", &self.negotiated_timeout_ms())
            .field("state", &*self.inner.state.borrow())
            .finish()
    }
}

/// Tries `servers` from `start` on, round robin, once each. Returns the connection
/// and the index of the server that took it; a refused session ends the round at once.
async fn connect_round(
    servers: &[String],
    start: usize,
    opts: &ConnectOptions,
    handshake: Duration,
    early_loss: bool,
    ctx: &Arc<SessionCtx>,
    pushed: &Pushed,
) -> Result<(Connection, wazoo_proto::ConnectResponse, usize), ClientError> {
    let mut last_err = None;
    for k in 0..servers.len() {
        let i = (start + k) % servers.len();
        match connection::establish(
            &servers[i],
            opts,
            handshake,
            early_loss,
            ctx.clone(),
            pushed.clone(),
        )
        .await
        {
            Ok((conn, resp)) => return Ok((conn, resp, i)),
            Err(ClientError::SessionRefused) => return Err(ClientError::SessionRefused),
            Err(e) => {
                tracing::debug!(server = %servers[i], error = %e, "server did not take the session");
                last_err = Some(e);
            }
        }
    }
    Err(last_err.unwrap_or(ClientError::ConnectionClosed))
}

/// Watches the current connection; when it closes, reconnects (if asked to) or ends
/// the session. Holds the client only weakly: dropping the last handle drops the
/// connection, which wakes this task, which then exits.
async fn supervise(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let conn = inner.conn();
        let mut closed = conn.shared.closed_signal();
        // Hold nothing while waiting: dropping the last handle must close the socket.
        drop(conn);
        drop(inner);
        if closed.wait_for(|c| *c).await.is_err() {
            return;
        }
        let Some(inner) = weak.upgrade() else { return };
        if inner.closing.load(Ordering::SeqCst) {
            inner.finish(ConnState::Closed);
            return;
        }
        inner.set_state(ConnState::Disconnected);
        if !inner.reconnect {
            inner.pushed.lock().unwrap().take();
            return;
        }
        drop(inner);
        if !reconnect(&weak).await {
            return;
        }
    }
}

/// Reconnects the session until a server takes it (true) or it is over (false).
async fn reconnect(weak: &Weak<Inner>) -> bool {
    let mut backoff = Duration::from_millis(20);
    loop {
        let (servers, start, opts, handshake, ctx, pushed) = {
            let Some(inner) = weak.upgrade() else {
                return false;
            };
            if inner.closing.load(Ordering::SeqCst) {
                inner.finish(ConnState::Closed);
                return false;
            }
            let Some(pushed) = inner.pushed.lock().unwrap().clone() else {
                return false;
            };
            let servers = inner.servers.lock().unwrap().clone();
            let timeout_ms = inner.timeout_ms.load(Ordering::Relaxed);
            let opts = ConnectOptions {
                timeout_ms,
                session_id: inner.session_id,
                passwd: inner.passwd.clone(),
                read_only: inner.opts.read_only,
                last_zxid_seen: inner.ctx.last_zxid.load(Ordering::Relaxed),
            };
            // As ClientCnxn: a connect attempt gets its share of the session timeout.
            let handshake = Duration::from_millis(
                (timeout_ms.max(1) as u64 / servers.len().max(1) as u64).max(500),
            );
            let start = (inner.server_idx.load(Ordering::Relaxed) + 1) % servers.len();
            (servers, start, opts, handshake, inner.ctx.clone(), pushed)
        };
        match connect_round(&servers, start, &opts, handshake, true, &ctx, &pushed).await {
            Ok((conn, resp, i)) => {
                drop(pushed);
                let Some(inner) = weak.upgrade() else {
                    return false;
                };
                if inner.closing.load(Ordering::SeqCst) {
                    inner.finish(ConnState::Closed);
                    return false;
                }
                tracing::info!(server = %servers[i], session = format_args!("{:#x}", inner.session_id), "session reconnected");
                if let Err(e) = rearm(&inner, &conn).await {
                    tracing::debug!(error = %e, "re-arming the session failed; reconnecting again");
                    inner.server_idx.store(i, Ordering::Relaxed);
                    drop(inner);
                    drop(conn);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
                inner.timeout_ms.store(resp.timeout_ms, Ordering::Relaxed);
                inner
                    .read_only
                    .store(resp.read_only.unwrap_or(false), Ordering::Relaxed);
                inner.server_idx.store(i, Ordering::Relaxed);
                *inner.conn.lock().unwrap() = Arc::new(conn);
                inner.reconnects.fetch_add(1, Ordering::Relaxed);
                inner.set_state(ConnState::Connected);
                return true;
            }
            Err(ClientError::SessionRefused) => {
                tracing::info!("session expired while disconnected");
                if let Some(inner) = weak.upgrade() {
                    inner.finish(ConnState::Expired);
                }
                return false;
            }
            Err(e) => {
                drop(pushed);
                tracing::debug!(error = %e, ?backoff, "no server took the session; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Replays the session's auth packets and re-arms its watches on a new connection,
/// before any user request can use it.
async fn rearm(inner: &Inner, conn: &Connection) -> Result<(), ClientError> {
    let auths = inner.auths.lock().unwrap().clone();
    for a in auths {
        if let Err(c) = conn.request(&Request::Auth(a)).await?.result {
            return Err(ClientError::Zk(c));
        }
    }
    let watches = inner.ctx.watches.lock().unwrap().clone();
    if !watches.is_empty() {
        let relative_zxid = inner.ctx.last_zxid.load(Ordering::Relaxed);
        let req = Request::SetWatches {
            v2: true,
            watches: watches.to_set_watches(relative_zxid),
        };
        if let Err(c) = conn.request(&req).await?.result {
            return Err(ClientError::Zk(c));
        }
    }
    Ok(())
}

fn unexpected(resp: Response) -> ClientError {
    tracing::warn!(?resp, "reply body of an unexpected type");
    ClientError::Decode(DecodeError::Invalid("reply body of an unexpected type"))
}

impl Client {
    /// Connects to `addr`, a `host:port` or a connect string `"h1:p1,h2:p2,..."`
    /// (servers tried in order), and establishes (or resumes) a session, without
    /// reconnection: see the crate docs and [`connect_with`](Self::connect_with).
    /// A refused session (ConnectResponse timeout 0) is [`ClientError::SessionRefused`].
    pub async fn connect(addr: &str, opts: ConnectOptions) -> Result<Client, ClientError> {
        Self::connect_with(addr, opts, Failover::default()).await
    }

    /// Connects to the first server of `connect_string` (`"h1:p1,h2:p2,..."`, after
    /// the optional seeded shuffle) that takes the session; with
    /// `failover.reconnect` the client then survives connection loss (crate docs).
    /// A refused session is [`ClientError::SessionRefused`] at once; if no server
    /// answers, the last server's error.
    pub async fn connect_with(
        connect_string: &str,
        opts: ConnectOptions,
        failover: Failover,
    ) -> Result<Client, ClientError> {
        let mut servers = parse_connect_string(connect_string)?;
        if let Some(seed) = failover.shuffle_seed {
            shuffle(&mut servers, seed);
        }
        let ctx = Arc::new(SessionCtx {
            last_zxid: std::sync::atomic::AtomicI64::new(opts.last_zxid_seen),
            ..Default::default()
        });
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (msg_tx, msg_rx) = mpsc::unbounded_channel();
        let pushed = Pushed {
            events: ev_tx,
            recipe_messages: msg_tx,
        };
        let handshake = Duration::from_millis(opts.timeout_ms.max(1000) as u64);
        let (conn, resp, idx) = connect_round(
            &servers,
            0,
            &opts,
            handshake,
            failover.reconnect,
            &ctx,
            &pushed,
        )
        .await?;
        let inner = Arc::new(Inner {
            session_id: resp.session_id,
            passwd: resp.passwd,
            timeout_ms: AtomicI32::new(resp.timeout_ms),
            read_only: AtomicBool::new(resp.read_only.unwrap_or(false)),
            opts,
            reconnect: failover.reconnect,
            conn: Mutex::new(Arc::new(conn)),
            ctx,
            servers: Mutex::new(servers),
            server_idx: AtomicUsize::new(idx),
            reconnects: AtomicU64::new(0),
            auths: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
            state: watch::channel(ConnState::Connected).0,
            pushed: Mutex::new(Some(pushed)),
            events: Mutex::new(Some(ev_rx)),
            recipe_messages: Mutex::new(Some(msg_rx)),
        });
        tokio::spawn(supervise(Arc::downgrade(&inner)));
        Ok(Client { inner })
    }

    /// The session's state; see the crate docs ("Connection state").
    pub fn state(&self) -> watch::Receiver<ConnState> {
        self.inner.state.subscribe()
    }

    /// The current state.
    pub fn current_state(&self) -> ConnState {
        *self.inner.state.borrow()
    }

    /// How many times the session has been reconnected.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// Replaces the server list (ZooKeeper's `updateServerList`). It takes effect at
    /// the next reconnect, which starts with the first server of the new list; the
    /// current connection is kept.
    pub fn set_servers(&self, connect_string: &str) -> Result<(), ClientError> {
        let servers = parse_connect_string(connect_string)?;
        let n = servers.len();
        *self.inner.servers.lock().unwrap() = servers;
        // The next reconnect starts at (idx + 1) % n == 0.
        self.inner.server_idx.store(n - 1, Ordering::Relaxed);
        Ok(())
    }

    /// The servers the client connects to, in the order it tries them.
    pub fn servers(&self) -> Vec<String> {
        self.inner.servers.lock().unwrap().clone()
    }

    /// The server of the current (or last) connection.
    pub fn current_server(&self) -> String {
        let servers = self.inner.servers.lock().unwrap();
        let i = self.inner.server_idx.load(Ordering::Relaxed) % servers.len();
        servers[i].clone()
    }

    pub fn session_id(&self) -> i64 {
        self.inner.session_id
    }

    pub fn session_passwd(&self) -> &[u8] {
        &self.inner.passwd
    }

    pub fn negotiated_timeout_ms(&self) -> i32 {
        self.inner.timeout_ms.load(Ordering::Relaxed)
    }

    /// Whether the server said this is a read-only connection.
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only.load(Ordering::Relaxed)
    }

    /// Highest zxid seen in any reply header of this session's connections (starting
    /// from `ConnectOptions::last_zxid_seen`): what a reconnect passes as
    /// `last_zxid_seen` and setWatches as `relative_zxid`.
    pub fn last_zxid(&self) -> i64 {
        self.inner.ctx.last_zxid.load(Ordering::Relaxed)
    }

    /// Frames this session exchanged with its servers so far, over all its
    /// connections: see [`FrameCounts`].
    pub fn frame_counts(&self) -> FrameCounts {
        FrameCounts {
            sent: self.inner.ctx.frames_sent.load(Ordering::Relaxed),
            received: self.inner.ctx.frames_received.load(Ordering::Relaxed),
        }
    }

    /// Whether the connection is down (server closed it, I/O error, protocol error),
    /// or the session is over. A reconnecting client may come back (see
    /// [`state`](Self::state)).
    pub fn is_closed(&self) -> bool {
        self.current_state().is_terminal() || self.inner.conn().shared.close_reason().is_some()
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<String> {
        match self.current_state() {
            ConnState::Expired => Some("session expired".into()),
            _ => self.inner.conn().shared.close_reason(),
        }
    }

    /// The connection to send on: SessionExpired once the session has expired.
    fn conn_for_request(&self) -> Result<Arc<Connection>, ClientError> {
        if self.current_state() == ConnState::Expired {
            return Err(ClientError::Zk(ErrorCode::SessionExpired));
        }
        Ok(self.inner.conn())
    }

    /// Pipelined: assigns the next xid, writes the frame, returns when the matching
    /// reply arrives. Replies arrive in xid order; the server may interleave
    /// notifications (xid -1). `Request::Ping`, `Request::Auth` and
    /// `Request::SetWatches` are sent with their reserved xids (-2, -4, -8), as the
    /// Java client does, and matched in order among their own kind.
    pub async fn request(
        &self,
        req: Request,
    ) -> Result<(i64, Result<Response, ErrorCode>), ClientError> {
        let r = self.send_request(&req).await?;
        Ok((r.zxid, r.result))
    }

    async fn send_request(&self, req: &Request) -> Result<Reply, ClientError> {
        let conn = self.conn_for_request()?;
        let r = conn.request(req).await;
        drop(conn);
        let r = match r {
            Err(ClientError::ConnectionClosed) if self.current_state() == ConnState::Expired => {
                return Err(ClientError::Zk(ErrorCode::SessionExpired))
            }
            r => r?,
        };
        if let (Request::Auth(a), Ok(_)) = (req, &r.result) {
            self.inner.auths.lock().unwrap().push(a.clone());
        }
        Ok(r)
    }

    /// Like [`request`](Self::request), and also returns how many notifications this
    /// connection had received before the reply: notifications numbered below that
    /// (counting from 0 in `take_events` order) arrived before the reply, the others
    /// after. Lets a test place events exactly relative to replies.
    pub async fn request_ordered(
        &self,
        req: Request,
    ) -> Result<(i64, Result<Response, ErrorCode>, u64), ClientError> {
        let Reply {
            zxid,
            result,
            events_before,
            ..
        } = self.send_request(&req).await?;
        Ok((zxid, result, events_before))
    }

    /// Watch notifications in arrival order. Call once; further calls return None.
    /// The channel ends when the connection closes ([`connect`](Self::connect)), or
    /// when the session ends (a reconnecting client).
    pub fn take_events(&self) -> Option<UnboundedReceiver<WatchedEvent>> {
        self.inner.events.lock().unwrap().take()
    }

    async fn call(&self, req: Request) -> Result<Response, ClientError> {
        let (_, result) = self.request(req).await?;
        result.map_err(ClientError::Zk)
    }

    /// Sends an auth packet (xid -4) and waits for its reply. ZooKeeper answers an
    /// unknown scheme or bad credentials with `AuthFailed` and closes the connection.
    pub async fn add_auth(&self, scheme: &str, auth: &[u8]) -> Result<(), ClientError> {
        self.call(Request::Auth(AuthPacket {
            auth_type: 0,
            scheme: scheme.into(),
            auth: Some(auth.to_vec()),
        }))
        .await?;
        Ok(())
    }

    /// create (op 1), or createContainer (op 19) when `flags` is 4, as the Java client
    /// does. Returns the created path (with the sequence suffix, if any). TTL modes
    /// need [`create_ttl`](Self::create_ttl).
    pub async fn create(
        &self,
        path: &str,
        data: &[u8],
        acl: Vec<Acl>,
        flags: i32,
    ) -> Result<String, ClientError> {
        match self
            .call(create_request(CreateKind::Create, path, data, acl, flags))
            .await?
        {
            Response::Create { path } | Response::Create2 { path, .. } => Ok(path),
            other => Err(unexpected(other)),
        }
    }

    /// create2 (op 15): the created path and its Stat.
    pub async fn create2(
        &self,
        path: &str,
        data: &[u8],
        acl: Vec<Acl>,
        flags: i32,
    ) -> Result<(String, Stat), ClientError> {
        match self
            .call(create_request(CreateKind::Create2, path, data, acl, flags))
            .await?
        {
            Response::Create2 { path, stat } => Ok((path, stat)),
            other => Err(unexpected(other)),
        }
    }

    /// createTTL (op 21); `flags` 5 (persistent) or 6 (persistent sequential).
    pub async fn create_ttl(
        &self,
        path: &str,
        data: &[u8],
        acl: Vec<Acl>,
        flags: i32,
        ttl_ms: i64,
    ) -> Result<(String, Stat), ClientError> {
        match self
            .call(Request::Create(CreateOp {
                kind: CreateKind::Ttl,
                path: path.into(),
                data: Some(data.to_vec()),
                acl,
                flags,
                ttl: ttl_ms,
            }))
            .await?
        {
            Response::Create2 { path, stat } => Ok((path, stat)),
            other => Err(unexpected(other)),
        }
    }

    pub async fn get_data(
        &self,
        path: &str,
        watch: bool,
    ) -> Result<(Option<Vec<u8>>, Stat), ClientError> {
        match self
            .call(Request::GetData(PathWatchRequest {
                path: path.into(),
                watch,
            }))
            .await?
        {
            Response::GetData { data, stat } => Ok((data, stat)),
            other => Err(unexpected(other)),
        }
    }

    pub async fn set_data(
        &self,
        path: &str,
        data: &[u8],
        version: i32,
    ) -> Result<Stat, ClientError> {
        match self
            .call(Request::SetData(SetDataRequest {
                path: path.into(),
                data: Some(data.to_vec()),
                version,
            }))
            .await?
        {
            Response::Stat(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    pub async fn delete(&self, path: &str, version: i32) -> Result<(), ClientError> {
        self.call(Request::Delete(DeleteRequest {
            path: path.into(),
            version,
        }))
        .await?;
        Ok(())
    }

    /// `Ok(None)` for a missing node (the watch, if asked for, is still set).
    pub async fn exists(&self, path: &str, watch: bool) -> Result<Option<Stat>, ClientError> {
        match self
            .request(Request::Exists(PathWatchRequest {
                path: path.into(),
                watch,
            }))
            .await?
            .1
        {
            Ok(Response::Stat(s)) => Ok(Some(s)),
            Ok(other) => Err(unexpected(other)),
            Err(ErrorCode::NoNode) => Ok(None),
            Err(e) => Err(ClientError::Zk(e)),
        }
    }

    pub async fn get_children(&self, path: &str, watch: bool) -> Result<Vec<String>, ClientError> {
        match self
            .call(Request::GetChildren(PathWatchRequest {
                path: path.into(),
                watch,
            }))
            .await?
        {
            Response::Children(c) => Ok(c),
            other => Err(unexpected(other)),
        }
    }

    /// getChildren2 (op 12): children and the parent's Stat.
    pub async fn get_children2(
        &self,
        path: &str,
        watch: bool,
    ) -> Result<(Vec<String>, Stat), ClientError> {
        match self
            .call(Request::GetChildren2(PathWatchRequest {
                path: path.into(),
                watch,
            }))
            .await?
        {
            Response::Children2 { children, stat } => Ok((children, stat)),
            other => Err(unexpected(other)),
        }
    }

    /// addWatch (op 106): a persistent watch on `path` (`consts::add_watch_mode`:
    /// 0 persistent, 1 persistent-recursive). Re-armed on reconnect like the others.
    pub async fn add_watch(&self, path: &str, mode: i32) -> Result<(), ClientError> {
        self.call(Request::AddWatch(wazoo_proto::AddWatchRequest {
            path: path.into(),
            mode,
        }))
        .await?;
        Ok(())
    }

    /// check (op 13) as a single operation.
    pub async fn check(&self, path: &str, version: i32) -> Result<(), ClientError> {
        self.call(Request::Check(CheckVersionRequest {
            path: path.into(),
            version,
        }))
        .await?;
        Ok(())
    }

    /// multi (op 14). A failing multi is still `Ok`: its results are all
    /// `OpResult::Error`, 0 (`Ok`) before the failed op, the real code at it, and
    /// `RuntimeInconsistency` after it, and nothing was applied.
    pub async fn multi(&self, ops: Vec<WriteOp>) -> Result<Vec<OpResult>, ClientError> {
        match self.call(Request::Multi(ops)).await? {
            Response::Multi(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Messages recipes push to this session (`RecipeNotification` kind 2), in arrival
    /// order. Call once; further calls return None. The channel ends when the
    /// connection closes.
    pub fn take_recipe_messages(&self) -> Option<UnboundedReceiver<RecipeMessage>> {
        self.inner.recipe_messages.lock().unwrap().take()
    }

    /// Sends a recipe op; an error reply becomes [`ClientError::Recipe`] with the
    /// server's message. A parked recipeCall also returns its completion's receiver.
    async fn recipe_request(
        &self,
        req: Request,
    ) -> Result<(Response, Option<ParkedCall>), ClientError> {
        let reply = self.send_request(&req).await?;
        match reply.result {
            Ok(resp) => Ok((resp, reply.parked)),
            Err(code) => Err(ClientError::Recipe {
                code,
                message: reply.error_message.unwrap_or_default(),
            }),
        }
    }

    /// recipeUpload (op 1000): registers `module` (wasm bytes) as the next version of
    /// recipe `name`. Needs ADMIN permission when the server enforces it (NoAuth).
    pub async fn recipe_upload(
        &self,
        name: &str,
        module: &[u8],
    ) -> Result<RecipeUploaded, ClientError> {
        match self
            .recipe_request(Request::RecipeUpload {
                name: name.into(),
                module: module.to_vec(),
            })
            .await?
            .0
        {
            Response::RecipeUploaded {
                name,
                version,
                sha256,
            } => Ok(RecipeUploaded {
                name,
                version,
                sha256,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// recipeList (op 1001): the versions of recipe `name`, or of every recipe for "".
    pub async fn recipe_list(&self, name: &str) -> Result<Vec<RecipeInfo>, ClientError> {
        match self
            .recipe_request(Request::RecipeList { name: name.into() })
            .await?
            .0
        {
            Response::RecipeList(infos) => Ok(infos),
            other => Err(unexpected(other)),
        }
    }

    /// recipeDelete (op 1002): deletes one version of recipe `name`, or every version
    /// for `version` -1.
    pub async fn recipe_delete(&self, name: &str, version: i32) -> Result<(), ClientError> {
        self.recipe_request(Request::RecipeDelete {
            name: name.into(),
            version,
        })
        .await?;
        Ok(())
    }

    /// recipeAdoptRuntime (op 1004): pins the answering server's determinism profile as
    /// the cluster's, and returns the pinned profile id. Run it once every server is
    /// upgraded to a build whose profile changed; until then recipe calls fail with
    /// RecipeRuntimeMismatch. Needs ADMIN on /wazoo/modules when the server enforces
    /// it (NoAuth).
    pub async fn recipe_adopt_runtime(&self) -> Result<String, ClientError> {
        match self.recipe_request(Request::RecipeAdoptRuntime).await?.0 {
            Response::RecipeRuntime { profile } => Ok(profile),
            other => Err(unexpected(other)),
        }
    }

    /// recipeRuntimeInfo (op 1005): `(pinned, local)`, the determinism profile id the
    /// cluster pins ("" before the first upload) and the answering server's own.
    pub async fn recipe_runtime_info(&self) -> Result<(String, String), ClientError> {
        match self.recipe_request(Request::RecipeRuntimeInfo).await?.0 {
            Response::RecipeRuntimeInfo { pinned, local } => Ok((pinned, local)),
            other => Err(unexpected(other)),
        }
    }

    /// recipeCall (op 1003): runs `function` of recipe `name` (`version` -1: the
    /// latest) with MessagePack `args`, and returns its MessagePack reply. A call the
    /// server parks is awaited here until it completes; it is sent with
    /// `CALL_DEFER_REPLY`, so the server answers it once, then (one frame each way).
    /// If the connection closes first it fails with [`ClientError::ConnectionClosed`]
    /// (code ConnectionLoss). Failures are [`ClientError::Recipe`].
    pub async fn recipe_call(
        &self,
        name: &str,
        version: i32,
        function: &str,
        args: Vec<u8>,
    ) -> Result<Vec<u8>, ClientError> {
        // Deferred: a call that parks is answered once, when it completes (a server
        // without the flag answers "parked" and then notifies, handled below too).
        let (resp, parked) = self
            .recipe_request(Request::RecipeCall {
                name: name.into(),
                version,
                function: function.into(),
                args,
                flags: recipe::CALL_DEFER_REPLY,
            })
            .await?;
        match resp {
            Response::RecipeCall {
                state: recipe::CALL_COMPLETED,
                reply,
                ..
            } => Ok(reply),
            Response::RecipeCall {
                state: recipe::CALL_PARKED,
                call_id,
                ..
            } => {
                let parked = parked.ok_or(ClientError::Decode(DecodeError::Invalid(
                    "parked recipe call without a completion slot",
                )))?;
                let n = parked.await.unwrap_or(Err(ClientError::ConnectionClosed))?;
                tracing::trace!(call_id, err = n.err, "parked recipe call completed");
                completion_result(n.err, n.message, n.payload)
            }
            Response::RecipeCall { state, .. } => Err(ClientError::Decode(DecodeError::BadValue {
                field: "RecipeCallResponse.state",
                value: state as i64,
            })),
            other => Err(unexpected(other)),
        }
    }

    /// [`recipe_call`](Self::recipe_call) with typed arguments and reply: `args` is
    /// encoded with `rmp_serde::to_vec_named` (structs as maps, as the recipe SDK
    /// expects) and the reply decoded as `R`. Encoding or decoding failures are
    /// [`ClientError::MessagePack`].
    pub async fn recipe_call_typed<A, R>(
        &self,
        name: &str,
        version: i32,
        function: &str,
        args: &A,
    ) -> Result<R, ClientError>
    where
        A: serde::Serialize + ?Sized,
        R: serde::de::DeserializeOwned,
    {
        let args = rmp_serde::to_vec_named(args)
            .map_err(|e| ClientError::MessagePack(format!("encoding the arguments: {e}")))?;
        let reply = self.recipe_call(name, version, function, args).await?;
        rmp_serde::from_slice(&reply)
            .map_err(|e| ClientError::MessagePack(format!("decoding the reply: {e}")))
    }

    /// recipeCall with `CALL_QUIET`: written at once, and the server answers it only if
    /// it fails, so a call that succeeds costs one frame. Calls of the session sent
    /// after it are applied after it. The returned [`QuietCall`] resolves `Ok` once a
    /// reply to a later request shows it succeeded, or with its error; dropping it
    /// is fine. For calls whose reply carries nothing the caller needs (a release).
    pub fn recipe_call_quiet(
        &self,
        name: &str,
        version: i32,
        function: &str,
        args: Vec<u8>,
    ) -> Result<QuietCall, ClientError> {
        let conn = self.conn_for_request()?;
        let rx = conn.send(&Request::RecipeCall {
            name: name.into(),
            version,
            function: function.into(),
            args,
            flags: recipe::CALL_QUIET,
        })?;
        Ok(QuietCall { rx })
    }

    /// closeSession (op -11): ends the session (its ephemerals go) and waits for the
    /// reply. The server then closes the connection. The state becomes Closed (also
    /// when the request fails, e.g. while disconnected) and the client stops
    /// reconnecting.
    pub async fn close(self) -> Result<(), ClientError> {
        self.inner.closing.store(true, Ordering::SeqCst);
        let r = self.call(Request::CloseSession).await;
        self.inner.finish(ConnState::Closed);
        r?;
        Ok(())
    }
}

/// The outcome of a [`Client::recipe_call_quiet`].
#[derive(Debug)]
pub struct QuietCall {
    rx: tokio::sync::oneshot::Receiver<Result<connection::Reply, ClientError>>,
}

impl QuietCall {
    /// `Ok` once a reply to a later request (or a ping) of the same connection shows
    /// the call succeeded; its error if it failed; [`ClientError::ConnectionClosed`]
    /// if the connection closed first (it may or may not have been applied).
    pub async fn outcome(self) -> Result<(), ClientError> {
        let reply = self
            .rx
            .await
            .unwrap_or(Err(ClientError::ConnectionClosed))?;
        match reply.result {
            Ok(_) => Ok(()),
            Err(code) => Err(ClientError::Recipe {
                code,
                message: reply.error_message.unwrap_or_default(),
            }),
        }
    }
}

/// The result carried by a kind-1 recipe notification: `err` 0 is the reply.
fn completion_result(err: i32, message: String, payload: Vec<u8>) -> Result<Vec<u8>, ClientError> {
    if err == 0 {
        return Ok(payload);
    }
    match ErrorCode::from_i32(err) {
        Some(code) => Err(ClientError::Recipe { code, message }),
        None => Err(ClientError::Decode(DecodeError::BadValue {
            field: "RecipeNotification.err",
            value: err as i64,
        })),
    }
}

/// A create request as the Java client sends it: flags 4 (container) use the
/// createContainer opcode, anything else `kind`.
fn create_request(kind: CreateKind, path: &str, data: &[u8], acl: Vec<Acl>, flags: i32) -> Request {
    let kind = if flags == 4 {
        CreateKind::Container
    } else {
        kind
    };
    Request::Create(CreateOp {
        kind,
        path: path.into(),
        data: Some(data.to_vec()),
        acl,
        flags,
        ttl: -1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let o = ConnectOptions::default();
        assert_eq!(o.timeout_ms, 30000);
        assert_eq!(o.session_id, 0);
        assert_eq!(open_acl_unsafe()[0].perms, 31);
    }

    #[test]
    fn recipe_errors_show_name_and_message() {
        let e = ClientError::Recipe {
            code: ErrorCode::RecipeFailed,
            message: "unknown function x".into(),
        };
        assert_eq!(e.to_string(), "RecipeFailed: unknown function x");
        assert_eq!(e.code(), Some(ErrorCode::RecipeFailed));
        assert_eq!(e.recipe_message(), Some("unknown function x"));
        let e = ClientError::Recipe {
            code: ErrorCode::NoAuth,
            message: String::new(),
        };
        assert_eq!(e.to_string(), "NoAuth");
        assert_eq!(
            ClientError::ConnectionClosed.code(),
            Some(ErrorCode::ConnectionLoss)
        );
    }

    #[test]
    fn completions() {
        assert_eq!(
            completion_result(0, String::new(), vec![1]).unwrap(),
            vec![1]
        );
        match completion_result(-1106, "session closed".into(), vec![]) {
            Err(ClientError::Recipe { code, message }) => {
                assert_eq!(code, ErrorCode::RecipeCancelled);
                assert_eq!(message, "session closed");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            completion_result(-424242, String::new(), vec![]),
            Err(ClientError::Decode(_))
        ));
    }
}
