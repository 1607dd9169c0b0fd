//! One TCP connection to a server: the handshake, a reader task, a writer task and a
//! pinger task, and the queues that match replies to requests.
//!
//! Everything session-level (id, password, reconnecting to another server) belongs to
//! `Client`; a `Connection` only knows how to carry frames and dies for good when its
//! socket does. What outlives one connection is in [`SessionCtx`] (the last zxid seen
//! and the watches this session has registered, kept up to date by the reader, which
//! sees replies and notifications in wire order) and in the pushed-frame senders the
//! client hands every connection. Reconnecting (lib.rs, `supervise`) means: on close,
//! establish a new `Connection` with the session id, password and last zxid, then
//! replay auth and setWatches2, as ClientCnxn does.

use crate::{ClientError, ConnectOptions, RecipeMessage, WatchedEvent};
use bytes::BytesMut;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use wazoo_proto::consts::{event, watcher_type, xid};
use wazoo_proto::frame::take_frame;
use wazoo_proto::recipe;
use wazoo_proto::request::encode_request_frame;
use wazoo_proto::response::decode_recipe_error;
use wazoo_proto::{
    ConnectRequest, ConnectResponse, DecodeError, ErrorCode, Reader, RecipeNotification, Record,
    ReplyHeader, Request, Response, SetWatches2, WatcherEvent,
};

/// Largest reply frame the client accepts. Larger than the server's default
/// `jute.maxbuffer` on purpose: the client should never be the limit in a test.
const MAX_REPLY_LEN: usize = 64 << 20;

/// A decoded reply, as handed to the waiting request.
#[derive(Debug)]
pub(crate) struct Reply {
    pub zxid: i64,
    pub result: Result<Response, ErrorCode>,
    /// Notifications (xid -1) this connection had received before this reply.
    pub events_before: u64,
    /// The message body of a recipe op's error reply (`None` when header-only).
    pub error_message: Option<String>,
    /// For a recipeCall answered "parked": resolves with the kind-1 notification
    /// carrying its call id (registered by the reader before the reply is handed
    /// over, so a notification right behind the reply is never missed).
    pub parked: Option<ParkedCall>,
}

type Waiter = oneshot::Sender<Result<Reply, ClientError>>;

/// The completion of a parked recipe call: the kind-1 `RecipeNotification`, or
/// `ConnectionClosed` if the connection ends first.
pub(crate) type ParkedCall = oneshot::Receiver<Result<RecipeNotification, ClientError>>;
type ParkedWaiter = oneshot::Sender<Result<RecipeNotification, ClientError>>;

/// Completions for call ids no parked reply has claimed yet are kept, up to this
/// many, in case a server sends a completion ahead of the parked reply.
const MAX_UNCLAIMED_COMPLETIONS: usize = 64;

struct Pending {
    xid: i32,
    opcode: i32,
    waiter: Option<Waiter>,
    /// The watch this request registers (or removes) if it succeeds.
    watch: Option<WatchReg>,
    /// Position in the order requests were written to this connection.
    seq: u64,
    /// A recipe call sent with `CALL_QUIET`: answered only if it fails, so any
    /// reply to a request written after it means it succeeded.
    quiet: bool,
}

/// How a request's reply is matched (see [`State::deferred`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyOrder {
    /// In xid order with the other requests.
    InOrder,
    /// A recipe call sent with `CALL_DEFER_REPLY`: its reply may come after the
    /// replies to later requests.
    Deferred,
    /// A recipe call sent with `CALL_QUIET`: no reply unless it fails.
    Quiet,
}

fn reply_order(req: &Request) -> Result<ReplyOrder, ClientError> {
    let Request::RecipeCall { flags, .. } = req else {
        return Ok(ReplyOrder::InOrder);
    };
    let defer = flags & recipe::CALL_DEFER_REPLY != 0;
    let quiet = flags & recipe::CALL_QUIET != 0;
    match (defer, quiet) {
        (false, false) => Ok(ReplyOrder::InOrder),
        (true, false) => Ok(ReplyOrder::Deferred),
        (false, true) => Ok(ReplyOrder::Quiet),
        // Its success would never be answered, nor ordered: nothing could tell the
        // caller when it is done.
        (true, true) => Err(ClientError::Recipe {
            code: ErrorCode::BadArguments,
            message: "a recipe call cannot be both deferred and quiet in this client".into(),
        }),
    }
}

/// The watches a session has registered with the server, as the server will have them
/// once every reply and notification read so far is accounted for: what a reconnect
/// re-arms with setWatches2.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Watches {
    pub data: BTreeSet<String>,
    pub exist: BTreeSet<String>,
    pub child: BTreeSet<String>,
    pub persistent: BTreeSet<String>,
    pub persistent_recursive: BTreeSet<String>,
}

impl Watches {
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
            && self.exist.is_empty()
            && self.child.is_empty()
            && self.persistent.is_empty()
            && self.persistent_recursive.is_empty()
    }

    pub fn to_set_watches(&self, relative_zxid: i64) -> SetWatches2 {
        let v = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>();
        SetWatches2 {
            relative_zxid,
            data_watches: v(&self.data),
            exist_watches: v(&self.exist),
            child_watches: v(&self.child),
            persistent_watches: v(&self.persistent),
            persistent_recursive_watches: v(&self.persistent_recursive),
        }
    }

    /// A notification consumed the one-shot watches it fired (as the server removes
    /// them); persistent watches stay unless the event says they were removed.
    fn on_event(&mut self, event_type: i32, path: &str) {
        match event_type {
            event::NODE_CREATED | event::NODE_DATA_CHANGED | event::DATA_WATCH_REMOVED => {
                self.data.remove(path);
                self.exist.remove(path);
            }
            event::NODE_DELETED => {
                self.data.remove(path);
                self.exist.remove(path);
                self.child.remove(path);
            }
            event::NODE_CHILDREN_CHANGED | event::CHILD_WATCH_REMOVED => {
                self.child.remove(path);
            }
            event::PERSISTENT_WATCH_REMOVED => {
                self.persistent.remove(path);
                self.persistent_recursive.remove(path);
            }
            _ => {}
        }
    }

    /// Applies a watch-setting request's reply.
    fn on_reply(&mut self, reg: WatchReg, result: &Result<Response, ErrorCode>) {
        match (reg, result) {
            (WatchReg::Data(p), Ok(_)) => {
                self.data.insert(p);
            }
            // exists on a missing node sets an exist watch, on a present one a data watch.
            (WatchReg::Exists(p), Ok(_)) => {
                self.data.insert(p);
            }
            (WatchReg::Exists(p), Err(ErrorCode::NoNode)) => {
                self.exist.insert(p);
            }
            (WatchReg::Child(p), Ok(_)) => {
                self.child.insert(p);
            }
            (WatchReg::Persistent(p), Ok(_)) => {
                self.persistent.insert(p);
            }
            (WatchReg::PersistentRecursive(p), Ok(_)) => {
                self.persistent_recursive.insert(p);
            }
            (WatchReg::Remove(p, t), Ok(_)) => {
                if t == watcher_type::DATA || t == watcher_type::ANY {
                    self.data.remove(&p);
                    self.exist.remove(&p);
                }
                if t == watcher_type::CHILDREN || t == watcher_type::ANY {
                    self.child.remove(&p);
                }
                if t == watcher_type::ANY {
                    self.persistent.remove(&p);
                    self.persistent_recursive.remove(&p);
                }
            }
            _ => {}
        }
    }
}

/// The watch a request sets or removes, applied to [`Watches`] when its reply arrives.
#[derive(Debug, Clone)]
enum WatchReg {
    Data(String),
    Exists(String),
    Child(String),
    Persistent(String),
    PersistentRecursive(String),
    Remove(String, i32),
}

fn watch_reg(req: &Request) -> Option<WatchReg> {
    match req {
        Request::GetData(r) if r.watch => Some(WatchReg::Data(r.path.clone())),
        Request::Exists(r) if r.watch => Some(WatchReg::Exists(r.path.clone())),
        Request::GetChildren(r) | Request::GetChildren2(r) if r.watch => {
            Some(WatchReg::Child(r.path.clone()))
        }
        Request::AddWatch(r) if r.mode == 0 => Some(WatchReg::Persistent(r.path.clone())),
        Request::AddWatch(r) if r.mode == 1 => Some(WatchReg::PersistentRecursive(r.path.clone())),
        Request::RemoveWatches(r) => Some(WatchReg::Remove(r.path.clone(), r.watcher_type)),
        _ => None,
    }
}

/// Session state that outlives one connection.
#[derive(Debug, Default)]
pub(crate) struct SessionCtx {
    /// Highest zxid seen in any reply header of any of the session's connections.
    pub last_zxid: AtomicI64,
    pub watches: Mutex<Watches>,
    /// Frames this session queued for sending on any of its connections, pings and
    /// the connect handshake excluded.
    pub frames_sent: AtomicU64,
    /// Frames this session received on any of its connections (replies, watch events,
    /// recipe notifications), ping replies and the connect handshake excluded.
    pub frames_received: AtomicU64,
}

/// Replies with reserved xids don't carry a request's xid, so each kind has its own
/// FIFO: ZooKeeper answers auth immediately (possibly ahead of earlier requests),
/// pings and setWatches in pipeline order.
const SPECIAL_XIDS: [i32; 3] = [xid::PING, xid::AUTH, xid::SET_WATCHES];

struct State {
    /// Why the connection is closed, once it is.
    closed: Option<String>,
    next_xid: i32,
    pending: VecDeque<Pending>,
    special: [VecDeque<Pending>; 3],
    /// Recipe calls sent with `CALL_DEFER_REPLY`, by xid: answered once, when they
    /// complete, in any order relative to the other replies.
    deferred: HashMap<i32, Pending>,
    /// Requests written so far (`Pending::seq`).
    next_seq: u64,
    out: Option<mpsc::UnboundedSender<Vec<u8>>>,
    /// Parked recipe calls by call id, waiting for their kind-1 notification.
    parked: HashMap<i64, ParkedWaiter>,
    /// Kind-1 notifications that arrived before their parked reply (oldest first).
    unclaimed: VecDeque<RecipeNotification>,
}

impl State {
    fn alloc_xid(&mut self) -> i32 {
        let x = self.next_xid;
        self.next_xid = if x == i32::MAX { 1 } else { x + 1 };
        x
    }
}

fn special_index(x: i32) -> Option<usize> {
    SPECIAL_XIDS.iter().position(|&s| s == x)
}

/// The xid a request is sent with, if it is one of the reserved ones (as the Java
/// client sends them).
fn special_xid(req: &Request) -> Option<i32> {
    match req {
        Request::Ping => Some(xid::PING),
        Request::Auth(_) => Some(xid::AUTH),
        Request::SetWatches { .. } => Some(xid::SET_WATCHES),
        _ => None,
    }
}

pub(crate) struct Shared {
    state: Mutex<State>,
    ctx: Arc<SessionCtx>,
    /// Becomes true when the connection closes.
    closed_tx: watch::Sender<bool>,
}

impl Shared {
    /// Queues `req` for writing and registers `waiter` for its reply. Holding the
    /// lock across xid allocation, queueing and registration keeps the frames on the
    /// wire in xid order, which is what lets replies be matched in order.
    fn submit(&self, req: &Request, waiter: Option<Waiter>) -> Result<(), ClientError> {
        let order = reply_order(req)?;
        let special = special_xid(req);
        let mut frame = encode_request_frame(special.unwrap_or(0), req);
        let mut st = self.state.lock().unwrap();
        if st.closed.is_some() {
            return Err(ClientError::ConnectionClosed);
        }
        let x = match special {
            Some(x) => x,
            None => {
                let x = st.alloc_xid();
                frame[4..8].copy_from_slice(&x.to_be_bytes());
                x
            }
        };
        match &st.out {
            Some(out) if out.send(frame).is_ok() => {}
            _ => return Err(ClientError::ConnectionClosed),
        }
        if x != xid::PING {
            self.ctx.frames_sent.fetch_add(1, Ordering::Relaxed);
        }
        st.next_seq += 1;
        let p = Pending {
            xid: x,
            opcode: req.opcode(),
            waiter,
            watch: watch_reg(req),
            seq: st.next_seq,
            quiet: order == ReplyOrder::Quiet,
        };
        match (special_index(x), order) {
            (Some(i), _) => st.special[i].push_back(p),
            (None, ReplyOrder::Deferred) => {
                st.deferred.insert(x, p);
            }
            (None, _) => st.pending.push_back(p),
        }
        Ok(())
    }

    /// Marks the connection closed and fails every waiting request, and every parked
    /// recipe call, with `ConnectionClosed`. Idempotent; the first reason wins.
    pub(crate) fn close(&self, reason: &str) {
        let (waiters, parked) = {
            let mut st = self.state.lock().unwrap();
            if st.closed.is_none() {
                tracing::debug!(reason, "zookeeper connection closed");
                st.closed = Some(reason.to_string());
            }
            st.out = None;
            let mut all: Vec<Pending> = st.pending.drain(..).collect();
            for q in st.special.iter_mut() {
                all.extend(q.drain(..));
            }
            all.extend(st.deferred.drain().map(|(_, p)| p));
            st.unclaimed.clear();
            let parked: Vec<ParkedWaiter> = st.parked.drain().map(|(_, w)| w).collect();
            (all, parked)
        };
        self.closed_tx.send_replace(true);
        for p in waiters {
            if let Some(w) = p.waiter {
                let _ = w.send(Err(ClientError::ConnectionClosed));
            }
        }
        for w in parked {
            let _ = w.send(Err(ClientError::ConnectionClosed));
        }
    }

    /// Registers a parked call's waiter, taking the call id's completion if it
    /// already arrived. After close, the receiver resolves to `ConnectionClosed`.
    fn park(&self, call_id: i64) -> ParkedCall {
        let (tx, rx) = oneshot::channel();
        let mut st = self.state.lock().unwrap();
        if st.closed.is_some() {
            let _ = tx.send(Err(ClientError::ConnectionClosed));
        } else if let Some(i) = st.unclaimed.iter().position(|n| n.call_id == call_id) {
            let n = st.unclaimed.remove(i).expect("index from position");
            let _ = tx.send(Ok(n));
        } else if let Some(old) = st.parked.insert(call_id, tx) {
            // A call id reused while still parked: the server broke its contract.
            tracing::warn!(
                call_id,
                "recipe call id parked twice; the older call is failed"
            );
            let _ = old.send(Err(ClientError::Decode(DecodeError::Invalid(
                "recipe call id reused by the server while still parked",
            ))));
        }
        rx
    }

    /// Hands a kind-1 notification to its parked call.
    fn complete_parked(&self, n: RecipeNotification) {
        let mut st = self.state.lock().unwrap();
        match st.parked.remove(&n.call_id) {
            Some(w) => {
                drop(st);
                // The caller may have given up waiting (its future dropped): fine.
                let _ = w.send(Ok(n));
            }
            None => {
                tracing::debug!(
                    call_id = n.call_id,
                    "recipe completion for a call id with no parked call; kept for a while"
                );
                if st.unclaimed.len() >= MAX_UNCLAIMED_COMPLETIONS {
                    st.unclaimed.pop_front();
                }
                st.unclaimed.push_back(n);
            }
        }
    }

    pub(crate) fn close_reason(&self) -> Option<String> {
        self.state.lock().unwrap().closed.clone()
    }

    /// Resolves (true) once the connection has closed.
    pub(crate) fn closed_signal(&self) -> watch::Receiver<bool> {
        self.closed_tx.subscribe()
    }

    /// Takes the waiter for a reply with `xid`, checking that replies come in order.
    /// Also returns the quiet calls this reply shows succeeded: the server answers in
    /// the order it read, so a reply to a later request means an earlier quiet call
    /// had no error to report.
    fn take_pending(&self, x: i32) -> Result<(Option<Pending>, Vec<Pending>), String> {
        let mut st = self.state.lock().unwrap();
        let mut succeeded = Vec::new();
        let mut quiet_before = |st: &mut State, seq: u64| {
            while st.pending.front().is_some_and(|p| p.quiet && p.seq < seq) {
                succeeded.extend(st.pending.pop_front());
            }
        };
        if let Some(i) = special_index(x) {
            // Unsolicited pings replies are harmless; anything else unexpected is too
            // (ZooKeeper never sends them), so only log.
            let p = st.special[i].pop_front();
            match &p {
                None => tracing::debug!(
                    xid = x,
                    "reply with reserved xid and no request waiting for it"
                ),
                // Pings and setWatches are answered in order (auth is not).
                Some(p) if x != xid::AUTH => quiet_before(&mut st, p.seq),
                Some(_) => {}
            }
            return Ok((p, succeeded));
        }
        if let Some(p) = st.deferred.remove(&x) {
            // Sent once the server had answered everything read before that call.
            quiet_before(&mut st, p.seq);
            return Ok((Some(p), succeeded));
        }
        loop {
            match st.pending.front() {
                Some(p) if p.xid == x => return Ok((st.pending.pop_front(), succeeded)),
                Some(p) if p.quiet => succeeded.extend(st.pending.pop_front()),
                Some(p) => return Err(format!("reply xid {x} out of order: expected {}", p.xid)),
                None => return Err(format!("reply xid {x} with no request outstanding")),
            }
        }
    }
}

/// One live connection. Dropping it aborts its tasks, which closes the socket
/// (without closeSession).
pub(crate) struct Connection {
    pub shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.shared.close("client dropped");
    }
}

impl Connection {
    /// Sends `req` and waits for its reply.
    pub async fn request(&self, req: &Request) -> Result<Reply, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.shared.submit(req, Some(tx))?;
        rx.await.unwrap_or(Err(ClientError::ConnectionClosed))
    }

    /// Writes `req` now and returns the receiver of its reply (for quiet calls: a
    /// `Response::Empty` once a later reply shows it succeeded).
    pub fn send(
        &self,
        req: &Request,
    ) -> Result<oneshot::Receiver<Result<Reply, ClientError>>, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.shared.submit(req, Some(tx))?;
        Ok(rx)
    }
}

/// Connects, performs the session handshake, and starts the connection's tasks.
/// Replies' zxids and watch registrations go to `ctx`; pushed frames to `pushed`.
/// The connection counts as lost after the negotiated timeout without a frame from the
/// server, or after 2/3 of it with `early_loss` (as ClientCnxn's read timeout, which
/// leaves a reconnecting client a third of the timeout to find another server).
pub(crate) async fn establish(
    addr: &str,
    opts: &ConnectOptions,
    handshake_deadline: Duration,
    early_loss: bool,
    ctx: Arc<SessionCtx>,
    pushed: Pushed,
) -> Result<(Connection, ConnectResponse), ClientError> {
    let (stream, resp, leftover) = tokio::time::timeout(handshake_deadline, handshake(addr, opts))
        .await
        .map_err(|_| {
            ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "session handshake timed out",
            ))
        })??;
    if resp.timeout_ms <= 0 {
        return Err(ClientError::SessionRefused);
    }

    let (rd, wr) = stream.into_split();
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            closed: None,
            next_xid: 1,
            pending: VecDeque::new(),
            special: Default::default(),
            deferred: HashMap::new(),
            next_seq: 0,
            out: Some(out_tx),
            parked: HashMap::new(),
            unclaimed: VecDeque::new(),
        }),
        ctx,
        closed_tx: watch::channel(false).0,
    });
    let timeout = Duration::from_millis(resp.timeout_ms as u64);
    let idle_timeout = if early_loss {
        (timeout * 2 / 3).max(Duration::from_millis(10))
    } else {
        timeout
    };
    let tasks = vec![
        tokio::spawn(read_loop(
            shared.clone(),
            rd,
            leftover,
            pushed,
            idle_timeout,
        )),
        tokio::spawn(write_loop(shared.clone(), wr, out_rx)),
        tokio::spawn(ping_loop(
            Arc::downgrade(&shared),
            (timeout / 3).max(Duration::from_millis(10)),
        )),
    ];
    Ok((Connection { shared, tasks }, resp))
}

async fn handshake(
    addr: &str,
    opts: &ConnectOptions,
) -> Result<(TcpStream, ConnectResponse, BytesMut), ClientError> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let passwd = if opts.passwd.is_empty() {
        vec![0u8; 16]
    } else {
        opts.passwd.clone()
    };
    let req = ConnectRequest {
        protocol_version: 0,
        last_zxid_seen: opts.last_zxid_seen,
        timeout_ms: opts.timeout_ms,
        session_id: opts.session_id,
        passwd,
        read_only: Some(opts.read_only),
    };
    let mut w = wazoo_proto::Writer::framed();
    req.encode(&mut w);
    stream.write_all(&w.finish_frame()).await?;

    let mut buf = BytesMut::with_capacity(256);
    loop {
        match take_frame(&mut buf, MAX_REPLY_LEN) {
            Ok(Some(frame)) => {
                let resp = ConnectResponse::from_bytes(&frame)?;
                return Ok((stream, resp, buf));
            }
            Ok(None) => {}
            Err(_) => {
                return Err(ClientError::Decode(DecodeError::Invalid(
                    "bad frame length in connect response",
                )))
            }
        }
        if stream.read_buf(&mut buf).await? == 0 {
            // ZooKeeper closes without a reply when, e.g., lastZxidSeen is ahead of it.
            return Err(ClientError::ConnectionClosed);
        }
    }
}

/// Where the reader delivers frames nobody asked for.
#[derive(Clone)]
pub(crate) struct Pushed {
    pub events: mpsc::UnboundedSender<WatchedEvent>,
    pub recipe_messages: mpsc::UnboundedSender<RecipeMessage>,
}

async fn read_loop(
    shared: Arc<Shared>,
    mut rd: OwnedReadHalf,
    mut buf: BytesMut,
    pushed: Pushed,
    idle_timeout: Duration,
) {
    let mut events_seen: u64 = 0;
    let reason = 'outer: loop {
        loop {
            match take_frame(&mut buf, MAX_REPLY_LEN) {
                Ok(Some(frame)) => {
                    if let Err(reason) = handle_frame(&shared, &frame, &pushed, &mut events_seen) {
                        break 'outer reason;
                    }
                }
                Ok(None) => break,
                Err(e) => break 'outer format!("bad reply frame: {e}"),
            }
        }
        // Pings are answered well within this: silence means the server is gone.
        match tokio::time::timeout(idle_timeout, rd.read_buf(&mut buf)).await {
            Ok(Ok(0)) => break "server closed the connection".to_string(),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => break format!("read error: {e}"),
            Err(_) => break format!("no reply from server for {idle_timeout:?}"),
        }
    };
    shared.close(&reason);
}

/// Dispatches one reply frame. An `Err` is a protocol violation that ends the
/// connection.
fn handle_frame(
    shared: &Shared,
    frame: &[u8],
    pushed: &Pushed,
    events_seen: &mut u64,
) -> Result<(), String> {
    let mut r = Reader::new(frame);
    let h = ReplyHeader::decode(&mut r).map_err(|e| format!("bad reply header: {e}"))?;
    if h.zxid > 0 {
        shared.ctx.last_zxid.fetch_max(h.zxid, Ordering::Relaxed);
    }
    if h.xid != xid::PING {
        shared.ctx.frames_received.fetch_add(1, Ordering::Relaxed);
    }
    if h.xid == xid::NOTIFICATION {
        let ev = WatcherEvent::decode(&mut r).map_err(|e| format!("bad notification: {e}"))?;
        *events_seen += 1;
        shared
            .ctx
            .watches
            .lock()
            .unwrap()
            .on_event(ev.event_type, &ev.path);
        let _ = pushed.events.send(WatchedEvent {
            event_type: ev.event_type,
            state: ev.state,
            path: ev.path,
            zxid: h.zxid,
        });
        return Ok(());
    }
    if h.xid == xid::RECIPE_NOTIFICATION {
        handle_recipe_notification(shared, &h, &mut r, pushed)?;
        return Ok(());
    }
    let (p, succeeded) = shared.take_pending(h.xid)?;
    for q in succeeded {
        if let Some(w) = q.waiter {
            let _ = w.send(Ok(Reply {
                zxid: h.zxid,
                result: Ok(Response::Empty),
                events_before: *events_seen,
                error_message: None,
                parked: None,
            }));
        }
    }
    let Some(p) = p else {
        return Ok(());
    };
    let mut error_message = None;
    let result = if h.err == 0 {
        Response::decode(p.opcode, &mut r)
            .map(Ok)
            .map_err(ClientError::Decode)
    } else {
        match ErrorCode::from_i32(h.err) {
            Some(code) => {
                if recipe::is_recipe_op(p.opcode) {
                    // A garbled message body does not hide the (valid) code.
                    error_message = decode_recipe_error(&mut r).unwrap_or_else(|e| {
                        tracing::debug!(error = %e, "undecodable recipe error message");
                        None
                    });
                }
                Ok(Err(code))
            }
            None => Err(ClientError::Decode(DecodeError::BadValue {
                field: "ReplyHeader.err",
                value: h.err as i64,
            })),
        }
    };
    if let (Some(reg), Ok(res)) = (p.watch, &result) {
        shared.ctx.watches.lock().unwrap().on_reply(reg, res);
    }
    // Register a parked call here, before anything after this frame is read.
    let parked = match &result {
        Ok(Ok(Response::RecipeCall {
            state: recipe::CALL_PARKED,
            call_id,
            ..
        })) if p.opcode == wazoo_proto::consts::op::RECIPE_CALL => Some(shared.park(*call_id)),
        _ => None,
    };
    if let Some(w) = p.waiter {
        let _ = w.send(result.map(|result| Reply {
            zxid: h.zxid,
            result,
            events_before: *events_seen,
            error_message,
            parked,
        }));
    }
    Ok(())
}

/// A frame with xid -100. Kinds this client does not know are skipped (a newer server
/// may add some); an undecodable notification is a protocol violation.
fn handle_recipe_notification(
    shared: &Shared,
    h: &ReplyHeader,
    r: &mut Reader<'_>,
    pushed: &Pushed,
) -> Result<(), String> {
    let n = RecipeNotification::decode(r).map_err(|e| format!("bad recipe notification: {e}"))?;
    match n.kind {
        recipe::NOTIFY_CALL_COMPLETED => shared.complete_parked(n),
        recipe::NOTIFY_MESSAGE => {
            let _ = pushed.recipe_messages.send(RecipeMessage {
                module: n.module,
                payload: n.payload,
                zxid: h.zxid,
            });
        }
        kind => tracing::debug!(kind, "recipe notification of an unknown kind; ignored"),
    }
    Ok(())
}

async fn write_loop(
    shared: Arc<Shared>,
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let mut batch = Vec::with_capacity(64 << 10);
    while let Some(frame) = rx.recv().await {
        batch.clear();
        batch.extend_from_slice(&frame);
        // Coalesce whatever else is already queued: pipelined requests go out in few
        // writes.
        while batch.len() < (256 << 10) {
            match rx.try_recv() {
                Ok(f) => batch.extend_from_slice(&f),
                Err(_) => break,
            }
        }
        if let Err(e) = wr.write_all(&batch).await {
            shared.close(&format!("write error: {e}"));
            break;
        }
    }
    let _ = wr.shutdown().await;
}

async fn ping_loop(shared: std::sync::Weak<Shared>, interval: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.submit(&Request::Ping, None).is_err() {
            return;
        }
    }
}
