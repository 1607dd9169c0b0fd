//! One client connection: handshake, then three cooperating parts:
//!
//! - the **reader** (this task) decodes frames and, in arrival order, either proposes
//!   a write to raft or queues the request for the sequencer;
//! - the **sequencer** completes requests strictly in arrival order: it awaits each
//!   write's applied result and executes each read only after every earlier request
//!   of the session is done, so a session reads its own writes and gets replies in
//!   order while writes stay pipelined through raft;
//! - the **writer** drains the outbound queue (replies and watch events, in the order
//!   they were queued) to the socket.

use super::{ProposeError, Shared};
use crate::command::{CommandOp, CommandOutput, WriteRequest};
use crate::watch::{ConnId, Outbound};
use bytes::BytesMut;
use futures::future::BoxFuture;
use rand::RngCore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tracing::{debug, info, warn, Instrument};
use wazoo_proto::consts::{add_watch_mode, op};
use wazoo_proto::frame::take_frame;
use wazoo_proto::recipe;
use wazoo_proto::response::encode_reply_frame;
use wazoo_proto::{
    ConnectRequest, ConnectResponse, DecodeError, ErrorCode, Id, Reader, Record, ReplyHeader,
    Request, RequestHeader, Response, SetWatches2, WriteOp, Writer,
};

/// Work for the sequencer, in the session's request order.
enum Pending {
    /// A write already submitted to raft.
    Write {
        xid: i32,
        op: i32,
        started: Instant,
        result: BoxFuture<'static, Result<CommandOutput, ProposeError>>,
        close_after: bool,
        /// A recipe call's flags: its reply goes through `WatchManager`'s
        /// `CallReplies`, which may defer or drop it.
        recipe_call: Option<i32>,
    },
    /// A read, with the identities the session had when it was sent.
    Read {
        xid: i32,
        op: i32,
        started: Instant,
        req: Request,
        auth: Arc<Vec<Id>>,
    },
    Sync {
        xid: i32,
        op: i32,
        started: Instant,
        path: String,
    },
    SetWatches {
        xid: i32,
        watches: SetWatches2,
    },
    AddWatch {
        xid: i32,
        op: i32,
        started: Instant,
        path: String,
        recursive: bool,
    },
    Watches {
        xid: i32,
        op: i32,
        started: Instant,
        path: String,
        wtype: i32,
        remove: bool,
    },
    /// A reply computed by the reader (ping, auth, errors), counted in the
    /// per-opcode metrics only (not in the four-letter-word latency).
    Reply {
        op: i32,
        started: Instant,
        frame: Vec<u8>,
    },
    Close,
}

impl Pending {
    fn reply(op: i32, started: Instant, frame: Vec<u8>) -> Pending {
        Pending::Reply { op, started, frame }
    }

    /// A header-only reply (`err`, no body) stamped with the server's last zxid.
    fn status(shared: &Shared, op: i32, xid: i32, started: Instant, err: ErrorCode) -> Pending {
        Pending::reply(
            op,
            started,
            header_only(xid, shared.sm.read().last_zxid(), err),
        )
    }
}

pub async fn serve(shared: Arc<Shared>, stream: TcpStream, remote: SocketAddr) {
    let span = tracing::info_span!("conn", %remote, session = tracing::field::Empty);
    async move {
        shared
            .stats
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = run(&shared, stream, remote).await {
            debug!(error = %e, "connection closed");
        }
        shared
            .stats
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
    .instrument(span)
    .await
}

/// Why a connection ended early; logged at debug level, never sent.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] wazoo_proto::frame::FrameError),
    #[error("undecodable request: {0}")]
    Decode(#[from] DecodeError),
    #[error("{0}")]
    Refused(&'static str),
    #[error("raft: {0}")]
    Propose(#[from] ProposeError),
}

/// Reads until `buf` holds one complete frame, or the peer closes.
async fn read_frame(
    stream: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<BytesMut>, ConnError> {
    loop {
        if let Some(f) = take_frame(buf, max)? {
            return Ok(Some(f));
        }
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

async fn run(shared: &Arc<Shared>, stream: TcpStream, remote: SocketAddr) -> Result<(), ConnError> {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(4096);
    while buf.len() < 4 {
        if rd.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
    // A four-letter word replaces the length prefix of the first frame.
    if let Ok(word) = std::str::from_utf8(&buf[..4]) {
        if crate::config::FOUR_LETTER_WORDS.contains(&word) {
            let text = super::four_letter::respond(shared, word);
            wr.write_all(text.as_bytes()).await?;
            wr.shutdown().await?;
            return Ok(());
        }
    }
    let max = shared.config.jute_max_buffer;
    let Some(frame) = read_frame(&mut rd, &mut buf, max).await? else {
        return Ok(());
    };
    let req = ConnectRequest::from_bytes(&frame)?;
    let (session_id, timeout_ms, passwd) = match establish(shared, &req).await? {
        Some(s) => s,
        None => {
            // Unknown or expired session, or a wrong password: timeout 0, then close.
            let resp = ConnectResponse {
                protocol_version: 0,
                timeout_ms: 0,
                session_id: 0,
                passwd: vec![0; 16],
                read_only: req.read_only.map(|_| false),
            };
            wr.write_all(&frame_of(&resp)).await?;
            let _ = wr.shutdown().await;
            return Err(ConnError::Refused("session refused"));
        }
    };
    tracing::Span::current().record("session", format!("0x{session_id:x}"));
    info!(
        timeout_ms,
        reconnect = req.session_id != 0,
        "session established"
    );

    let (out_tx, out_rx) = unbounded_channel::<Outbound>();
    let conn = shared
        .watches
        .register(session_id, remote.to_string(), out_tx.clone());
    let resp = ConnectResponse {
        protocol_version: 0,
        timeout_ms,
        session_id,
        passwd,
        read_only: req.read_only.map(|_| false),
    };
    let _ = out_tx.send(Outbound::Frame(frame_of(&resp)));
    let writer = tokio::spawn(write_loop(shared.clone(), wr, out_rx));
    let (seq_tx, seq_rx) = unbounded_channel::<Pending>();
    let sequencer = tokio::spawn(sequence_loop(
        shared.clone(),
        conn,
        session_id,
        seq_rx,
        out_tx.clone(),
    ));

    let mut writer = writer;
    let mut writer_done = false;
    // The writer ends first when the server closes the connection (session closed or
    // expired, moved to another connection): stop reading then too.
    let result = tokio::select! {
        r = read_loop(shared, &mut rd, &mut buf, session_id, conn, remote, &seq_tx) => r,
        _ = &mut writer => { writer_done = true; Ok(()) }
    };
    // Let the sequencer finish what was accepted, then close the socket.
    let _ = seq_tx.send(Pending::Close);
    drop(seq_tx);
    let _ = sequencer.await;
    shared.watches.unregister(conn);
    let _ = out_tx.send(Outbound::Close);
    drop(out_tx);
    if !writer_done {
        let _ = writer.await;
    }
    result
}

/// New session: proposed through raft. Reconnect: checked against the replicated
/// session table. None means refuse.
async fn establish(
    shared: &Arc<Shared>,
    req: &ConnectRequest,
) -> Result<Option<(i64, i32, Vec<u8>)>, ConnError> {
    if req.last_zxid_seen > shared.sm.read().last_zxid() {
        // The client has seen a newer state than ours; ZooKeeper refuses by closing.
        return Err(ConnError::Refused(
            "client has seen a zxid newer than this server's",
        ));
    }
    if req.session_id == 0 {
        let timeout_ms = shared.config.negotiate_timeout(req.timeout_ms);
        let mut passwd = vec![0u8; 16];
        rand::thread_rng().fill_bytes(&mut passwd);
        let out = shared
            .write(CommandOp::CreateSession {
                timeout_ms,
                passwd: passwd.clone(),
            })
            .await?;
        shared.tracker.add(out.session_id, timeout_ms);
        return Ok(Some((out.session_id, timeout_ms, passwd)));
    }
    let session = shared.sm.read().session(req.session_id).cloned();
    match session {
        Some(s) if s.passwd == req.passwd && shared.touch_session(req.session_id) => {
            Ok(Some((req.session_id, s.timeout_ms, s.passwd)))
        }
        // ZooKeeper also drops the session's live connection on a wrong password; we do
        // not, so knowing a session id (ephemeralOwner is public) does not let anyone
        // disconnect its client (docs/PROTOCOL.md).
        _ => Ok(None),
    }
}

fn frame_of(r: &impl Record) -> Vec<u8> {
    let mut w = Writer::framed();
    r.encode(&mut w);
    w.finish_frame()
}

fn header_only(xid: i32, zxid: i64, err: ErrorCode) -> Vec<u8> {
    frame_of(&ReplyHeader {
        xid,
        zxid,
        err: err.code(),
    })
}

async fn read_loop(
    shared: &Arc<Shared>,
    rd: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
    session_id: i64,
    conn: ConnId,
    remote: SocketAddr,
    seq: &UnboundedSender<Pending>,
) -> Result<(), ConnError> {
    let mut auth: Arc<Vec<Id>> = Arc::new(vec![Id {
        scheme: "ip".into(),
        id: remote.ip().to_string(),
    }]);
    let mut shutdown = shared.shutdown.clone();
    let max = shared.config.jute_max_buffer;
    loop {
        let frame = tokio::select! {
            f = read_frame(rd, buf, max) => f?,
            _ = shutdown.changed() => return Ok(()),
        };
        let Some(frame) = frame else { return Ok(()) };
        let started = Instant::now();
        shared
            .stats
            .packets_received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !shared.touch_session(session_id) && shared.sm.read().session(session_id).is_none() {
            return Err(ConnError::Refused("session expired"));
        }
        let mut r = Reader::new(&frame);
        let header = RequestHeader::decode(&mut r)?;
        let request = match Request::decode(header.op, &mut r) {
            Ok(req) => req,
            Err(DecodeError::UnknownOpCode(code))
                if code == op::DELETE_CONTAINER && header.op == code =>
            {
                // deleteContainer is server-internal; ZooKeeper answers a client that
                // sends it with BadArguments and keeps the connection.
                enqueue(
                    shared,
                    seq,
                    Pending::status(
                        shared,
                        header.op,
                        header.xid,
                        started,
                        ErrorCode::BadArguments,
                    ),
                );
                continue;
            }
            Err(DecodeError::UnknownOpCode(code)) if header.op == code => {
                // ZooKeeper's UnimplementedRequestProcessor: an error reply (zxid -1),
                // then close.
                warn!(opcode = code, "unknown opcode");
                enqueue(
                    shared,
                    seq,
                    Pending::reply(
                        header.op,
                        started,
                        header_only(header.xid, -1, ErrorCode::Unimplemented),
                    ),
                );
                return Err(ConnError::Refused("unknown opcode"));
            }
            Err(e) => {
                // A known opcode whose body does not decode (truncated, bad lengths or
                // UTF-8, an unknown sub-operation in a multi): ZooKeeper answers
                // MarshallingError for that request and keeps the connection.
                debug!(error = %e, opcode = header.op, "undecodable request body");
                enqueue(
                    shared,
                    seq,
                    Pending::status(
                        shared,
                        header.op,
                        header.xid,
                        started,
                        ErrorCode::MarshallingError,
                    ),
                );
                continue;
            }
        };
        let xid = header.xid;
        let p = match request {
            Request::Ping => Pending::status(shared, header.op, xid, started, ErrorCode::Ok),
            Request::Auth(a) => {
                let zxid = 0;
                match authenticate(
                    shared,
                    remote,
                    &a.scheme,
                    a.auth.as_deref().unwrap_or_default(),
                ) {
                    Some(ids) => {
                        let mut v = (*auth).clone();
                        for id in ids {
                            if !v.contains(&id) {
                                v.push(id);
                            }
                        }
                        auth = Arc::new(v);
                        Pending::reply(header.op, started, header_only(xid, zxid, ErrorCode::Ok))
                    }
                    None => {
                        enqueue(
                            shared,
                            seq,
                            Pending::reply(
                                header.op,
                                started,
                                header_only(xid, zxid, ErrorCode::AuthFailed),
                            ),
                        );
                        return Err(ConnError::Refused("authentication failed"));
                    }
                }
            }
            Request::Sasl(_) => {
                Pending::status(shared, header.op, xid, started, ErrorCode::Unimplemented)
            }
            Request::Reconfig(_) => {
                Pending::status(shared, header.op, xid, started, ErrorCode::ReconfigDisabled)
            }
            Request::Sync(p) => Pending::Sync {
                op: header.op,
                xid,
                started,
                path: p.path,
            },
            Request::SetWatches { watches, .. } => Pending::SetWatches { xid, watches },
            Request::AddWatch(a) => match a.mode {
                add_watch_mode::PERSISTENT | add_watch_mode::PERSISTENT_RECURSIVE => {
                    Pending::AddWatch {
                        op: header.op,
                        xid,
                        started,
                        path: a.path,
                        recursive: a.mode == add_watch_mode::PERSISTENT_RECURSIVE,
                    }
                }
                _ => Pending::status(shared, header.op, xid, started, ErrorCode::MarshallingError),
            },
            Request::CheckWatches(w) => Pending::Watches {
                op: header.op,
                xid,
                started,
                path: w.path,
                wtype: w.watcher_type,
                remove: false,
            },
            Request::RemoveWatches(w) => Pending::Watches {
                op: header.op,
                xid,
                started,
                path: w.path,
                wtype: w.watcher_type,
                remove: true,
            },
            Request::CloseSession => {
                // The reply must reach the client before the close: detach the session
                // from this connection so applying the close does not close it first.
                shared.watches.detach_session(conn);
                let result = shared.propose(CommandOp::CloseSession { session_id });
                shared.tracker.remove(session_id);
                enqueue(
                    shared,
                    seq,
                    Pending::Write {
                        op: header.op,
                        xid,
                        started,
                        result,
                        close_after: true,
                        recipe_call: None,
                    },
                );
                return Ok(());
            }
            Request::RecipeCall { flags, .. } if flags & !recipe::CALL_FLAGS_KNOWN != 0 => {
                Pending::reply(
                    header.op,
                    started,
                    encode_reply_frame(
                        xid,
                        shared.sm.read().last_zxid(),
                        &Ok(Response::RecipeFailure {
                            code: ErrorCode::BadArguments,
                            message: format!("unknown recipeCall flags 0x{flags:x}"),
                        }),
                    ),
                )
            }
            Request::RecipeUpload { .. }
            | Request::RecipeDelete { .. }
            | Request::RecipeCall { .. }
            | Request::RecipeAdoptRuntime => {
                let auth = (*auth).clone();
                let mut recipe_call = None;
                let profile = shared.recipe_profile.clone();
                let op = match request {
                    Request::RecipeUpload { name, module } => CommandOp::RecipeUpload {
                        session_id,
                        auth,
                        name,
                        module,
                        profile,
                    },
                    Request::RecipeDelete { name, version } => CommandOp::RecipeDelete {
                        session_id,
                        auth,
                        name,
                        version,
                    },
                    Request::RecipeCall {
                        name,
                        version,
                        function,
                        args,
                        flags,
                    } => {
                        // Counted before it is proposed: a completion pushed ahead of
                        // this call's reply then waits for it.
                        shared.watches.recipe_call_sent(conn);
                        recipe_call = Some(flags);
                        CommandOp::RecipeCall {
                            session_id,
                            auth,
                            name,
                            version,
                            function,
                            args,
                            profile,
                        }
                    }
                    // Pins this server's own profile: an operator runs it once every
                    // server is upgraded (docs/ABI.md, "Upgrades and the determinism
                    // profile").
                    Request::RecipeAdoptRuntime => CommandOp::RecipeAdoptRuntime {
                        session_id,
                        auth,
                        profile,
                    },
                    _ => unreachable!("matched above"),
                };
                Pending::Write {
                    op: header.op,
                    xid,
                    started,
                    result: shared.propose(op),
                    close_after: false,
                    recipe_call,
                }
            }
            Request::Create(_)
            | Request::Delete(_)
            | Request::SetData(_)
            | Request::SetAcl(_)
            | Request::Check(_)
            | Request::Multi(_) => {
                let request = match request {
                    Request::Create(c) => WriteRequest::Op(WriteOp::Create(c)),
                    Request::Delete(d) => WriteRequest::Op(WriteOp::Delete(d)),
                    Request::SetData(s) => WriteRequest::Op(WriteOp::SetData(s)),
                    Request::Check(c) => WriteRequest::check(c),
                    Request::SetAcl(s) => WriteRequest::SetAcl(s),
                    Request::Multi(ops) => WriteRequest::Multi(ops),
                    _ => unreachable!("matched above"),
                };
                let result = shared.propose(CommandOp::Write {
                    session_id,
                    auth: (*auth).clone(),
                    request,
                });
                Pending::Write {
                    op: header.op,
                    xid,
                    started,
                    result,
                    close_after: false,
                    recipe_call: None,
                }
            }
            req => Pending::Read {
                op: header.op,
                xid,
                started,
                req,
                auth: auth.clone(),
            },
        };
        if !enqueue(shared, seq, p) {
            return Ok(());
        }
    }
}

/// Hands a request to the sequencer, counting it as outstanding until answered.
fn enqueue(shared: &Shared, seq: &UnboundedSender<Pending>, p: Pending) -> bool {
    shared
        .stats
        .outstanding
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if seq.send(p).is_err() {
        shared
            .stats
            .outstanding
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        return false;
    }
    true
}

/// Identities an auth packet adds, or None for an unknown scheme or malformed
/// credentials (AuthFailed, then close, as ZooKeeper does).
fn authenticate(shared: &Shared, remote: SocketAddr, scheme: &str, auth: &[u8]) -> Option<Vec<Id>> {
    match scheme {
        // ZooKeeper's IPAuthenticationProvider: the connection's own address.
        "ip" => Some(vec![Id {
            scheme: "ip".into(),
            id: remote.ip().to_string(),
        }]),
        "digest" => {
            let text = std::str::from_utf8(auth).ok()?;
            let id = crate::acl::digest_id(text);
            let mut ids = Vec::new();
            if shared.config.super_digest.as_deref() == Some(id.as_str()) {
                ids.push(crate::acl::super_id());
            }
            ids.push(Id {
                scheme: "digest".into(),
                id,
            });
            Some(ids)
        }
        _ => None,
    }
}

async fn sequence_loop(
    shared: Arc<Shared>,
    conn: ConnId,
    session_id: i64,
    mut rx: UnboundedReceiver<Pending>,
    out: UnboundedSender<Outbound>,
) {
    let send = |frame: Vec<u8>| {
        let _ = out.send(Outbound::Frame(frame));
    };
    // Each request is recorded in the stats before its reply is queued, so a client
    // that has its reply also sees it counted.
    while let Some(p) = rx.recv().await {
        if !matches!(p, Pending::Close) {
            shared
                .stats
                .outstanding
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        match p {
            Pending::Write {
                xid,
                op,
                started,
                result,
                close_after,
                recipe_call,
            } => match result.await {
                Ok(o) => {
                    shared.stats.record_request(op, started);
                    match recipe_call {
                        Some(flags) => shared
                            .watches
                            .recipe_call_answered(conn, xid, flags, o.zxid, &o.result),
                        None => send(encode_reply_frame(xid, o.zxid, &o.result)),
                    }
                    if close_after {
                        let _ = out.send(Outbound::Close);
                        return;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "write failed; closing the connection so the client retries elsewhere");
                    let _ = out.send(Outbound::Close);
                    return;
                }
            },
            Pending::Read {
                xid,
                op,
                started,
                req,
                auth,
            } => {
                // Execute, register the watches and queue the reply under one read lock:
                // no entry can be applied in between, so no event is lost or reordered.
                let sm = shared.sm.read();
                let (result, watches) = sm.read(session_id, &auth, &req);
                for w in &watches {
                    shared.watches.add_watch(conn, w);
                }
                shared.stats.record_request(op, started);
                send(encode_reply_frame(xid, sm.last_zxid(), &result));
                drop(sm);
            }
            Pending::Sync {
                xid,
                op,
                started,
                path,
            } => {
                // Linearizable: wait until this server has applied everything committed.
                let ok = match shared.linearize().await {
                    Ok(()) => true,
                    Err(e) => {
                        warn!(error = %e, "sync could not reach the leader's commit");
                        false
                    }
                };
                let zxid = shared.sm.read().last_zxid();
                shared.stats.record_request(op, started);
                send(encode_reply_frame(
                    xid,
                    zxid,
                    &if ok {
                        Ok(Response::Path(path))
                    } else {
                        Err(ErrorCode::ConnectionLoss)
                    },
                ));
            }
            Pending::SetWatches { xid, watches } => {
                let sm = shared.sm.read();
                shared
                    .watches
                    .set_watches(conn, sm.tree(), &watches, sm.last_zxid());
                send(header_only(xid, sm.last_zxid(), ErrorCode::Ok));
            }
            Pending::AddWatch {
                xid,
                op,
                started,
                path,
                recursive,
            } => {
                let sm = shared.sm.read();
                shared.watches.add_persistent(conn, &path, recursive);
                shared.stats.record_request(op, started);
                send(encode_reply_frame(
                    xid,
                    sm.last_zxid(),
                    &Ok(Response::AddWatch),
                ));
            }
            Pending::Watches {
                xid,
                op,
                started,
                path,
                wtype,
                remove,
            } => {
                let zxid = shared.sm.read().last_zxid();
                let r = shared
                    .watches
                    .remove_watches(conn, &path, wtype, remove)
                    .map(|_| Response::Empty);
                shared.stats.record_request(op, started);
                send(encode_reply_frame(xid, zxid, &r));
            }
            Pending::Reply { op, started, frame } => {
                shared.stats.requests.observe(op, started.elapsed());
                send(frame);
            }
            Pending::Close => return,
        }
    }
}

async fn write_loop(
    shared: Arc<Shared>,
    mut wr: OwnedWriteHalf,
    mut rx: UnboundedReceiver<Outbound>,
) {
    let mut batch: Vec<u8> = Vec::with_capacity(16 * 1024);
    'outer: while let Some(first) = rx.recv().await {
        let mut close = false;
        let mut next = Some(first);
        // Coalesce whatever is already queued into one write.
        while let Some(o) = next.take() {
            match o {
                Outbound::Frame(f) => {
                    batch.extend_from_slice(&f);
                    shared
                        .stats
                        .packets_sent
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Outbound::Close => {
                    close = true;
                    break;
                }
            }
            if batch.len() < 256 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            if wr.write_all(&batch).await.is_err() {
                break 'outer;
            }
            batch.clear();
        }
        if close {
            break;
        }
    }
    let _ = wr.shutdown().await;
}
