//! One TCP connection to a server: the handshake, a reader task, a writer task and a
//! pinger task, and the queues that match replies to requests.
//!
//! Everything session-level (id, password, watches to re-arm, reconnecting to another
//! server) belongs to `Client`; a `Connection` only knows how to carry frames and
//! dies for good when its socket does. Reconnect support therefore means: on
//! `ConnectionClosed`, `Client` establishes a new `Connection` with its session id,
//! password and last zxid, then replays auth and setWatches, as ClientCnxn does.

use crate::{ClientError, ConnectOptions, WatchedEvent};
use bytes::BytesMut;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use wazoo_proto::consts::xid;
use wazoo_proto::frame::take_frame;
use wazoo_proto::request::encode_request_frame;
use wazoo_proto::{
    ConnectRequest, ConnectResponse, DecodeError, ErrorCode, Reader, Record, ReplyHeader, Request,
    Response, WatcherEvent,
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
}

type Waiter = oneshot::Sender<Result<Reply, ClientError>>;

struct Pending {
    xid: i32,
    opcode: i32,
    waiter: Option<Waiter>,
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
    out: Option<mpsc::UnboundedSender<Vec<u8>>>,
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
    last_zxid: AtomicI64,
}

impl Shared {
    /// Queues `req` for writing and registers `waiter` for its reply. Holding the
    /// lock across xid allocation, queueing and registration keeps the frames on the
    /// wire in xid order, which is what lets replies be matched in order.
    fn submit(&self, req: &Request, waiter: Option<Waiter>) -> Result<(), ClientError> {
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
        let p = Pending {
            xid: x,
            opcode: req.opcode(),
            waiter,
        };
        match special_index(x) {
            Some(i) => st.special[i].push_back(p),
            None => st.pending.push_back(p),
        }
        Ok(())
    }

    /// Marks the connection closed and fails every waiting request with
    /// `ConnectionClosed`. Idempotent; the first reason wins.
    pub(crate) fn close(&self, reason: &str) {
        let waiters: Vec<Pending> = {
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
            all
        };
        for p in waiters {
            if let Some(w) = p.waiter {
                let _ = w.send(Err(ClientError::ConnectionClosed));
            }
        }
    }

    pub(crate) fn close_reason(&self) -> Option<String> {
        self.state.lock().unwrap().closed.clone()
    }

    /// Takes the waiter for a reply with `xid`, checking that replies come in order.
    fn take_pending(&self, x: i32) -> Result<Option<Pending>, String> {
        let mut st = self.state.lock().unwrap();
        if let Some(i) = special_index(x) {
            // Unsolicited pings replies are harmless; anything else unexpected is too
            // (ZooKeeper never sends them), so only log.
            let p = st.special[i].pop_front();
            if p.is_none() {
                tracing::debug!(
                    xid = x,
                    "reply with reserved xid and no request waiting for it"
                );
            }
            return Ok(p);
        }
        match st.pending.front() {
            Some(p) if p.xid == x => Ok(st.pending.pop_front()),
            Some(p) => Err(format!("reply xid {x} out of order: expected {}", p.xid)),
            None => Err(format!("reply xid {x} with no request outstanding")),
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

    pub fn last_zxid(&self) -> i64 {
        self.shared.last_zxid.load(Ordering::Relaxed)
    }
}

/// Connects, performs the session handshake, and starts the connection's tasks.
pub(crate) async fn establish(
    addr: &str,
    opts: &ConnectOptions,
) -> Result<
    (
        Connection,
        ConnectResponse,
        mpsc::UnboundedReceiver<WatchedEvent>,
    ),
    ClientError,
> {
    let handshake_deadline = Duration::from_millis(opts.timeout_ms.max(1000) as u64);
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
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            closed: None,
            next_xid: 1,
            pending: VecDeque::new(),
            special: Default::default(),
            out: Some(out_tx),
        }),
        last_zxid: AtomicI64::new(opts.last_zxid_seen),
    });
    let timeout = Duration::from_millis(resp.timeout_ms as u64);
    let tasks = vec![
        tokio::spawn(read_loop(shared.clone(), rd, leftover, ev_tx, timeout)),
        tokio::spawn(write_loop(shared.clone(), wr, out_rx)),
        tokio::spawn(ping_loop(
            Arc::downgrade(&shared),
            (timeout / 3).max(Duration::from_millis(10)),
        )),
    ];
    Ok((Connection { shared, tasks }, resp, ev_rx))
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

async fn read_loop(
    shared: Arc<Shared>,
    mut rd: OwnedReadHalf,
    mut buf: BytesMut,
    events: mpsc::UnboundedSender<WatchedEvent>,
    idle_timeout: Duration,
) {
    let mut events_seen: u64 = 0;
    let reason = 'outer: loop {
        loop {
            match take_frame(&mut buf, MAX_REPLY_LEN) {
                Ok(Some(frame)) => {
                    if let Err(reason) = handle_frame(&shared, &frame, &events, &mut events_seen) {
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
    events: &mpsc::UnboundedSender<WatchedEvent>,
    events_seen: &mut u64,
) -> Result<(), String> {
    let mut r = Reader::new(frame);
    let h = ReplyHeader::decode(&mut r).map_err(|e| format!("bad reply header: {e}"))?;
    if h.zxid > 0 {
        shared.last_zxid.fetch_max(h.zxid, Ordering::Relaxed);
    }
    if h.xid == xid::NOTIFICATION {
        let ev = WatcherEvent::decode(&mut r).map_err(|e| format!("bad notification: {e}"))?;
        *events_seen += 1;
        let _ = events.send(WatchedEvent {
            event_type: ev.event_type,
            state: ev.state,
            path: ev.path,
            zxid: h.zxid,
        });
        return Ok(());
    }
    let Some(p) = shared.take_pending(h.xid)? else {
        return Ok(());
    };
    let result = if h.err == 0 {
        Response::decode(p.opcode, &mut r)
            .map(Ok)
            .map_err(ClientError::Decode)
    } else {
        match ErrorCode::from_i32(h.err) {
            Some(code) => Ok(Err(code)),
            None => Err(ClientError::Decode(DecodeError::BadValue {
                field: "ReplyHeader.err",
                value: h.err as i64,
            })),
        }
    };
    if let Some(w) = p.waiter {
        let _ = w.send(result.map(|result| Reply {
            zxid: h.zxid,
            result,
            events_before: *events_seen,
        }));
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
