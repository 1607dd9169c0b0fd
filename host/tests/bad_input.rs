//! Bad input on the client port, sent as raw bytes over TCP to an in-process server.
//!
//! What is checked, as Apache ZooKeeper behaves:
//! - frames that cannot be read (negative length, over `jute.maxbuffer`, cut short by
//!   the peer closing) and a malformed ConnectRequest end the connection: the read
//!   returns EOF, the server neither hangs nor crashes;
//! - a garbage request body is never answered with success: the connection closes, or
//!   (as ZooKeeper 3.8 does) the reply is `MarshallingError` (-5);
//! - an unknown opcode gets `Unimplemented` (-6) for its xid, then the connection closes;
//! - a create with an invalid path gets `BadArguments` (-8) (`NoNode` when its parent
//!   part does not exist, which ZooKeeper checks first) and the connection stays usable;
//! - a reconnect with a wrong password (or to an unknown session) gets a ConnectResponse
//!   with timeout 0 and session id 0, then the connection closes;
//! - after all of it, a well-behaved session on the same server still works.
//!
//! Every socket read is wrapped in a generous timeout, only as a guard so a server that
//! hangs fails the test instead of the test hanging; nothing waits on a timer otherwise.
//! The randomized test prints its seed; set `WAZOO_BAD_INPUT_SEED` to replay it.

use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wazoo::config::Config;
use wazoo::server::Server;
use wazoo_client::{open_acl_unsafe, Client, ConnectOptions};
use wazoo_proto::consts::op;
use wazoo_proto::frame::take_frame;
use wazoo_proto::request::encode_request_frame;
use wazoo_proto::{
    ConnectRequest, ConnectResponse, CreateKind, CreateOp, ErrorCode, PathWatchRequest, Reader,
    Record, ReplyHeader, Request, Response, SetDataRequest, Writer,
};

/// Failure guard for every read: far above anything a healthy server needs.
const GUARD: Duration = Duration::from_secs(30);
/// ZooKeeper's default `jute.maxbuffer`.
const MAX_BUFFER: usize = 1048575;

struct TestServer {
    server: Server,
    addr: String,
    _dir: tempfile::TempDir,
}

async fn start_server(tweak: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config {
        client_port: 0,
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    tweak(&mut config);
    let server = Server::start(config).await.expect("server starts");
    let addr = server.client_addr.to_string();
    TestServer {
        server,
        addr,
        _dir: dir,
    }
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as i32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn connect_request(session_id: i64, passwd: Vec<u8>) -> ConnectRequest {
    ConnectRequest {
        protocol_version: 0,
        last_zxid_seen: 0,
        timeout_ms: 30000,
        session_id,
        passwd,
        read_only: Some(false),
    }
}

/// A connection driven byte by byte.
struct Raw {
    s: TcpStream,
    buf: BytesMut,
    next_xid: i32,
}

impl Raw {
    async fn tcp(addr: &str) -> Raw {
        let s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        Raw {
            s,
            buf: BytesMut::new(),
            next_xid: 1,
        }
    }

    /// A new session: handshake done, ConnectResponse checked.
    async fn session(addr: &str) -> (Raw, ConnectResponse) {
        let mut raw = Raw::tcp(addr).await;
        raw.send(&framed(&connect_request(0, vec![0; 16]).to_bytes()))
            .await;
        let frame = raw.frame().await.expect("a ConnectResponse, not EOF");
        let resp = ConnectResponse::from_bytes(&frame).expect("ConnectResponse decodes");
        assert!(
            resp.timeout_ms > 0 && resp.session_id != 0,
            "new session refused: {resp:?}"
        );
        assert_eq!(resp.passwd.len(), 16);
        (raw, resp)
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("write to server");
    }

    /// The next frame, or None at EOF (a reset after the server closed counts as EOF).
    async fn frame(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(f) =
                take_frame(&mut self.buf, 64 << 20).expect("server sent a sane frame length")
            {
                return Some(f.to_vec());
            }
            let read = tokio::time::timeout(GUARD, self.s.read_buf(&mut self.buf))
                .await
                .expect("server neither answered nor closed the connection");
            match read {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read error: {e}"),
            }
        }
    }

    /// Reads until the server closes; returns the frames it sent first.
    async fn until_closed(&mut self) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        while let Some(f) = self.frame().await {
            frames.push(f);
            assert!(
                frames.len() < 10_000,
                "server keeps sending instead of closing"
            );
        }
        frames
    }

    /// Sends `req` with the next xid; returns the reply header and decoded result,
    /// skipping watch notifications.
    async fn call(&mut self, req: Request) -> (ReplyHeader, Result<Response, ErrorCode>) {
        let xid = self.next_xid;
        self.next_xid += 1;
        self.send(&encode_request_frame(xid, &req)).await;
        loop {
            let frame = self
                .frame()
                .await
                .unwrap_or_else(|| panic!("connection closed instead of answering {req:?}"));
            let mut r = Reader::new(&frame);
            let h = ReplyHeader::decode(&mut r).expect("reply header");
            if h.xid == -1 {
                continue;
            }
            assert_eq!(h.xid, xid, "reply for another request");
            let result = if h.err == 0 {
                Ok(Response::decode(req.opcode(), &mut r).expect("reply body decodes"))
            } else {
                Err(ErrorCode::from_i32(h.err)
                    .unwrap_or_else(|| panic!("unknown error code {}", h.err)))
            };
            return (h, result);
        }
    }

    /// The connection answers a harmless read.
    async fn assert_usable(&mut self) {
        let (_, r) = self
            .call(Request::Exists(PathWatchRequest {
                path: "/".into(),
                watch: false,
            }))
            .await;
        assert!(
            matches!(r, Ok(Response::Stat(_))),
            "exists(/) on a connection that should still work: {r:?}"
        );
    }
}

fn create(path: &str, data: &[u8]) -> Request {
    Request::Create(CreateOp {
        kind: CreateKind::Create,
        path: path.into(),
        data: Some(data.to_vec()),
        acl: open_acl_unsafe(),
        flags: 0,
        ttl: -1,
    })
}

/// A separate, well-behaved session (through `wazoo-client`) creates, reads and
/// deletes a znode.
async fn assert_server_healthy(addr: &str, name: &str) {
    let c = tokio::time::timeout(GUARD, Client::connect(addr, ConnectOptions::default()))
        .await
        .expect("connect in time")
        .expect("a new session");
    let path = format!("/healthy-{name}");
    let fut = async {
        assert_eq!(
            c.create(&path, b"fine", open_acl_unsafe(), 0)
                .await
                .expect("create"),
            path
        );
        assert_eq!(
            c.get_data(&path, false).await.expect("get").0.as_deref(),
            Some(&b"fine"[..])
        );
        c.delete(&path, -1).await.expect("delete");
        assert_eq!(c.exists(&path, false).await.expect("exists"), None);
    };
    tokio::time::timeout(GUARD, fut)
        .await
        .expect("healthy session answered in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_frames_close_the_connection() {
    let t = start_server(|_| {}).await;

    // Before the handshake: negative, just-over-the-limit and huge lengths. Only the
    // length is sent: the server must refuse it without waiting for a payload.
    for len in [-1i32, -100, MAX_BUFFER as i32 + 1, i32::MAX] {
        let mut raw = Raw::tcp(&t.addr).await;
        raw.send(&len.to_be_bytes()).await;
        assert_eq!(
            raw.until_closed().await,
            Vec::<Vec<u8>>::new(),
            "length {len} before the handshake"
        );
    }

    // After a good handshake: the same lengths.
    for len in [-1i32, MAX_BUFFER as i32 + 1, i32::MAX] {
        let (mut raw, _) = Raw::session(&t.addr).await;
        raw.assert_usable().await;
        raw.send(&len.to_be_bytes()).await;
        assert_eq!(
            raw.until_closed().await,
            Vec::<Vec<u8>>::new(),
            "length {len} after the handshake"
        );
    }

    // A frame over the limit with its payload actually sent.
    {
        let (mut raw, _) = Raw::session(&t.addr).await;
        let mut w = Writer::framed();
        wazoo_proto::RequestHeader {
            xid: 1,
            op: op::SET_DATA,
        }
        .encode(&mut w);
        SetDataRequest {
            path: "/".into(),
            data: Some(vec![7; MAX_BUFFER + 1]),
            version: -1,
        }
        .encode(&mut w);
        let frame = w.finish_frame();
        assert!(frame.len() - 4 > MAX_BUFFER);
        // The server may close before all of it is written: ignore write errors.
        let _ = raw.s.write_all(&frame).await;
        assert_eq!(
            raw.until_closed().await,
            Vec::<Vec<u8>>::new(),
            "oversized setData"
        );
    }

    // Truncated frames: the peer announces more than it sends, then half-closes.
    {
        let mut raw = Raw::tcp(&t.addr).await;
        let full = framed(&connect_request(0, vec![0; 16]).to_bytes());
        raw.send(&full[..full.len() - 10]).await;
        raw.s.shutdown().await.expect("half-close");
        assert_eq!(
            raw.until_closed().await,
            Vec::<Vec<u8>>::new(),
            "truncated ConnectRequest"
        );
    }
    {
        let (mut raw, _) = Raw::session(&t.addr).await;
        let full = encode_request_frame(1, &create("/truncated", b"data"));
        raw.send(&full[..full.len() - 3]).await;
        raw.s.shutdown().await.expect("half-close");
        assert_eq!(
            raw.until_closed().await,
            Vec::<Vec<u8>>::new(),
            "truncated create frame"
        );
    }
    {
        // Only two bytes of a length prefix.
        let (mut raw, _) = Raw::session(&t.addr).await;
        raw.send(&[0, 0]).await;
        raw.s.shutdown().await.expect("half-close");
        assert_eq!(
            raw.until_closed().await,
            Vec::<Vec<u8>>::new(),
            "truncated length prefix"
        );
    }

    // A connection stuck in the middle of a frame does not hold anyone else up.
    let mut stuck = Raw::tcp(&t.addr).await;
    stuck.send(&100i32.to_be_bytes()).await;
    stuck.send(&[1, 2, 3]).await;
    assert_server_healthy(&t.addr, "while-one-is-stuck").await;
    drop(stuck);

    // The truncated create was never applied.
    let (mut raw, _) = Raw::session(&t.addr).await;
    let (_, r) = raw
        .call(Request::Exists(PathWatchRequest {
            path: "/truncated".into(),
            watch: false,
        }))
        .await;
    assert_eq!(r, Err(ErrorCode::NoNode));

    assert_server_healthy(&t.addr, "after-unreadable").await;
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_jute_max_buffer_is_enforced() {
    let t = start_server(|c| c.jute_max_buffer = 4096).await;
    let (mut raw, _) = Raw::session(&t.addr).await;
    raw.call(create("/small-limit", b""))
        .await
        .1
        .expect("create");
    // A frame under the limit is served.
    let (_, r) = raw
        .call(Request::SetData(SetDataRequest {
            path: "/small-limit".into(),
            data: Some(vec![1; 3500]),
            version: -1,
        }))
        .await;
    assert!(
        matches!(r, Ok(Response::Stat(ref s)) if s.data_length == 3500),
        "{r:?}"
    );
    // One over it closes the connection, without the write being applied.
    let frame = encode_request_frame(
        99,
        &Request::SetData(SetDataRequest {
            path: "/small-limit".into(),
            data: Some(vec![2; 4100]),
            version: -1,
        }),
    );
    assert!(frame.len() - 4 > 4096);
    let _ = raw.s.write_all(&frame).await;
    assert_eq!(raw.until_closed().await, Vec::<Vec<u8>>::new());
    // Just the length prefix of 4097 is enough to be refused.
    let (mut raw, _) = Raw::session(&t.addr).await;
    raw.send(&4097i32.to_be_bytes()).await;
    assert_eq!(raw.until_closed().await, Vec::<Vec<u8>>::new());

    let (mut raw, _) = Raw::session(&t.addr).await;
    let (_, r) = raw
        .call(Request::GetData(PathWatchRequest {
            path: "/small-limit".into(),
            watch: false,
        }))
        .await;
    assert!(
        matches!(r, Ok(Response::GetData { ref data, .. }) if data.as_deref() == Some(&[1u8; 3500][..])),
        "the oversized write must not be applied"
    );
    assert_server_healthy(&t.addr, "small-limit").await;
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_connect_requests_are_refused() {
    let t = start_server(|_| {}).await;
    let good = connect_request(0, vec![0; 16]).to_bytes();
    let mut bad_passwd_len = good.clone();
    // passwd length (offset 24) far past the frame.
    bad_passwd_len[24..28].copy_from_slice(&1000i32.to_be_bytes());
    let mut negative_passwd_len = good.clone();
    negative_passwd_len[24..28].copy_from_slice(&(-5i32).to_be_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("five bytes", vec![0, 0, 0, 0, 1]),
        ("cut after timeout", good[..16].to_vec()),
        ("cut inside the password", good[..good.len() - 6].to_vec()),
        ("password length past the frame", bad_passwd_len),
        ("negative password length", negative_passwd_len),
        ("text", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
    ];
    for (name, body) in cases {
        let mut raw = Raw::tcp(&t.addr).await;
        raw.send(&framed(&body)).await;
        let frames = raw.until_closed().await;
        assert!(
            frames.is_empty(),
            "{name}: expected a close without a ConnectResponse, got {frames:?}"
        );
    }
    // Raw HTTP (its first four bytes are no four-letter word and a huge length).
    let mut raw = Raw::tcp(&t.addr).await;
    raw.send(b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(raw.until_closed().await.is_empty(), "HTTP request");

    assert_server_healthy(&t.addr, "after-bad-connects").await;
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_request_bodies_are_never_answered_with_success() {
    let t = start_server(|_| {}).await;
    let header = |op: i32| {
        let mut v = 7i32.to_be_bytes().to_vec();
        v.extend_from_slice(&op.to_be_bytes());
        v
    };
    let with = |op: i32, tail: &[u8]| {
        let mut v = header(op);
        v.extend_from_slice(tail);
        v
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("shorter than a header", vec![0, 0, 0]),
        ("getData without a body", header(op::GET_DATA)),
        (
            "getData with a path length past the frame",
            with(op::GET_DATA, &0x7fff_ffffi32.to_be_bytes()),
        ),
        (
            "create with a negative path length",
            with(op::CREATE, &(-2i32).to_be_bytes()),
        ),
        (
            "create with a path that is not UTF-8",
            with(op::CREATE, &[0, 0, 0, 2, 0xff, 0xfe]),
        ),
        ("create with an ACL count past the frame", {
            let mut w = Writer::new();
            w.write_ustring("/x");
            w.write_buffer(Some(b"d"));
            w.write_i32(1_000_000);
            with(op::CREATE, &w.into_inner())
        }),
        ("setData cut before its version", {
            let mut w = Writer::new();
            w.write_ustring("/x");
            w.write_buffer(Some(b"d"));
            with(op::SET_DATA, &w.into_inner())
        }),
        ("multi without its end marker", {
            let mut w = Writer::new();
            wazoo_proto::MultiHeader {
                op: op::DELETE,
                done: false,
                err: -1,
            }
            .encode(&mut w);
            w.write_ustring("/x");
            w.write_i32(-1);
            with(op::MULTI, &w.into_inner())
        }),
        ("multi with a read inside", {
            let mut w = Writer::new();
            wazoo_proto::MultiHeader {
                op: op::GET_DATA,
                done: false,
                err: -1,
            }
            .encode(&mut w);
            w.write_ustring("/");
            w.write_bool(false);
            wazoo_proto::MultiHeader {
                op: -1,
                done: true,
                err: -1,
            }
            .encode(&mut w);
            with(op::MULTI, &w.into_inner())
        }),
        ("setWatches with a huge list count", {
            let mut w = Writer::new();
            w.write_i64(0);
            w.write_i32(i32::MAX);
            with(op::SET_WATCHES, &w.into_inner())
        }),
    ];
    let mut closed = 0;
    for (name, body) in cases {
        let (mut raw, _) = Raw::session(&t.addr).await;
        raw.assert_usable().await;
        raw.send(&framed(&body)).await;
        // Acceptable: close without a reply (Wazoo today), or MarshallingError for the
        // request's xid (ZooKeeper 3.8), after which the connection closes or keeps
        // working. Never a success reply, never silence.
        match raw.frame().await {
            None => closed += 1,
            Some(f) => {
                let h = ReplyHeader::from_bytes(&f).expect("reply header");
                assert_eq!(
                    (h.xid, h.err),
                    (7, ErrorCode::MarshallingError.code()),
                    "{name}: unexpected reply"
                );
                let xid = raw.next_xid;
                raw.next_xid += 1;
                raw.send(&encode_request_frame(
                    xid,
                    &Request::Exists(PathWatchRequest {
                        path: "/".into(),
                        watch: false,
                    }),
                ))
                .await;
                if let Some(f) = raw.frame().await {
                    let h = ReplyHeader::from_bytes(&f).expect("reply header");
                    assert_eq!(
                        (h.xid, h.err),
                        (xid, 0),
                        "{name}: connection left open but not usable"
                    );
                }
            }
        }
    }
    println!("{closed} garbage requests closed their connection without a reply");
    assert_server_healthy(&t.addr, "after-garbage").await;
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_opcodes_get_unimplemented_then_close() {
    let t = start_server(|_| {}).await;
    for (xid, opcode) in [
        (5i32, 999),
        (6, 23),
        (7, -50),
        (8, op::DELETE_CONTAINER + 1000),
        (9, i32::MIN),
    ] {
        let (mut raw, _) = Raw::session(&t.addr).await;
        raw.assert_usable().await;
        let mut body = xid.to_be_bytes().to_vec();
        body.extend_from_slice(&opcode.to_be_bytes());
        body.extend_from_slice(b"whatever follows");
        raw.send(&framed(&body)).await;
        let frames = raw.until_closed().await;
        assert_eq!(
            frames.len(),
            1,
            "opcode {opcode}: one error reply, then close; got {frames:?}"
        );
        let h = ReplyHeader::from_bytes(&frames[0]).expect("reply header");
        assert_eq!(
            (h.xid, h.err),
            (xid, ErrorCode::Unimplemented.code()),
            "opcode {opcode}"
        );
    }
    assert_server_healthy(&t.addr, "after-unknown-opcodes").await;
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_paths_are_bad_arguments_and_the_connection_survives() {
    let t = start_server(|_| {}).await;
    let (mut raw, _) = Raw::session(&t.addr).await;
    // A parent exists, so the paths below fail on their own invalidity.
    raw.call(create("/a", b"")).await.1.expect("create /a");
    let bad = [
        "/a\u{0}b",
        "/\u{0}",
        "//",
        "/a/",
        "/.",
        "/..",
        "/a/.",
        "/a/..",
        "a",
        "",
        "/a\u{1}",
        "/\u{7f}",
        "/\u{fffe}",
        "/a/b\u{e000}",
    ];
    for path in bad {
        let (_, r) = raw.call(create(path, b"x")).await;
        assert_eq!(r, Err(ErrorCode::BadArguments), "create({path:?})");
        raw.assert_usable().await;
    }
    // ZooKeeper looks the parent up before validating the whole path, so an invalid
    // path whose parent (everything before the last `/`) does not exist is NoNode
    // there (checked against ZooKeeper 3.8); Wazoo answers the same.
    for path in ["/a//b", "/a/./b", "/a/../b", "a/b", "/b/"] {
        let (_, r) = raw.call(create(path, b"x")).await;
        assert_eq!(r, Err(ErrorCode::NoNode), "create({path:?})");
        raw.assert_usable().await;
    }
    // The same through the other create opcodes.
    for kind in [CreateKind::Create2, CreateKind::Container] {
        let flags = if kind == CreateKind::Container { 4 } else { 0 };
        let req = Request::Create(CreateOp {
            kind,
            path: "/a/".into(),
            data: None,
            acl: open_acl_unsafe(),
            flags,
            ttl: -1,
        });
        assert_eq!(
            raw.call(req).await.1,
            Err(ErrorCode::BadArguments),
            "{kind:?}"
        );
    }
    // Nothing was created.
    for dir in ["/", "/a"] {
        let (_, r) = raw
            .call(Request::GetChildren(PathWatchRequest {
                path: dir.into(),
                watch: false,
            }))
            .await;
        let want: Vec<String> = if dir == "/" {
            vec!["a".into(), "zookeeper".into()]
        } else {
            vec![]
        };
        match r {
            Ok(Response::Children(mut c)) => {
                c.sort();
                assert_eq!(c, want, "children of {dir} after invalid creates");
            }
            other => panic!("getChildren({dir}): {other:?}"),
        }
    }
    // And the connection still creates valid nodes, including a sequential one under
    // a parent given with a trailing slash (the sequence number completes the path).
    assert!(
        matches!(raw.call(create("/valid", b"ok")).await.1, Ok(Response::Create { ref path }) if path == "/valid")
    );
    let seq = Request::Create(CreateOp {
        kind: CreateKind::Create,
        path: "/valid/".into(),
        data: None,
        acl: open_acl_unsafe(),
        flags: 2,
        ttl: -1,
    });
    assert!(
        matches!(raw.call(seq).await.1, Ok(Response::Create { ref path }) if path == "/valid/0000000000")
    );
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_with_a_wrong_password_is_refused() {
    let t = start_server(|_| {}).await;
    let (mut owner, resp) = Raw::session(&t.addr).await;
    owner
        .call(create("/owned", b"mine"))
        .await
        .1
        .expect("create");

    let mut wrong = resp.passwd.clone();
    wrong[0] ^= 0xff;
    for (name, session_id, passwd) in [
        ("wrong password", resp.session_id, wrong),
        ("empty password", resp.session_id, vec![]),
        (
            "unknown session",
            resp.session_id ^ 0x5555,
            resp.passwd.clone(),
        ),
    ] {
        let mut raw = Raw::tcp(&t.addr).await;
        raw.send(&framed(&connect_request(session_id, passwd).to_bytes()))
            .await;
        let frames = raw.until_closed().await;
        assert_eq!(
            frames.len(),
            1,
            "{name}: one ConnectResponse, then close; got {frames:?}"
        );
        let r = ConnectResponse::from_bytes(&frames[0]).expect("ConnectResponse decodes");
        assert_eq!((r.timeout_ms, r.session_id), (0, 0), "{name}: {r:?}");
    }

    // The session itself was not harmed: its connection still works, and the right
    // password resumes it.
    owner.assert_usable().await;
    let mut again = Raw::tcp(&t.addr).await;
    again
        .send(&framed(
            &connect_request(resp.session_id, resp.passwd.clone()).to_bytes(),
        ))
        .await;
    let r = ConnectResponse::from_bytes(&again.frame().await.expect("ConnectResponse"))
        .expect("decodes");
    assert_eq!(r.session_id, resp.session_id);
    assert!(r.timeout_ms > 0);
    let (_, got) = again
        .call(Request::GetData(PathWatchRequest {
            path: "/owned".into(),
            watch: false,
        }))
        .await;
    assert!(
        matches!(got, Ok(Response::GetData { ref data, .. }) if data.as_deref() == Some(&b"mine"[..])),
        "{got:?}"
    );
    assert_server_healthy(&t.addr, "after-wrong-password").await;
    t.server.shutdown().await;
}

/// Jute-shaped random bytes: small ints, -1s, short strings of path-ish characters,
/// booleans, or plain noise.
fn random_tail(rng: &mut StdRng, out: &mut Vec<u8>) {
    for _ in 0..rng.gen_range(0..8) {
        match rng.gen_range(0..6) {
            0 => out.extend_from_slice(&rng.gen_range(-2i32..6).to_be_bytes()),
            1 => out.extend_from_slice(&rng.gen::<i32>().to_be_bytes()),
            2 | 3 => {
                let alphabet = b"/a.z\0\x7f-";
                let s: Vec<u8> = (0..rng.gen_range(0..12))
                    .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                    .collect();
                out.extend_from_slice(&(s.len() as i32).to_be_bytes());
                out.extend_from_slice(&s);
            }
            4 => out.push(rng.gen_range(0..3)),
            _ => out.extend((0..rng.gen_range(0..16)).map(|_| rng.gen::<u8>())),
        }
    }
}

fn random_request_body(rng: &mut StdRng) -> Vec<u8> {
    const OPS: &[i32] = &[
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 100, 101,
        102, 103, 104, 105, 106, 107, -10, -11, 999, -1,
    ];
    if rng.gen_range(0..4) == 0 {
        return (0..rng.gen_range(0..64)).map(|_| rng.gen::<u8>()).collect();
    }
    let mut v = rng.gen_range(-10i32..1000).to_be_bytes().to_vec();
    v.extend_from_slice(&OPS[rng.gen_range(0..OPS.len())].to_be_bytes());
    random_tail(rng, &mut v);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_frames_never_crash_or_hang_the_server() {
    let seed: u64 = match std::env::var("WAZOO_BAD_INPUT_SEED") {
        Ok(s) => s
            .parse()
            .expect("WAZOO_BAD_INPUT_SEED must be an unsigned integer"),
        Err(_) => rand::random(),
    };
    println!("random_frames_never_crash_or_hang_the_server: seed {seed} (replay with WAZOO_BAD_INPUT_SEED={seed})");
    eprintln!("random_frames_never_crash_or_hang_the_server: seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let t = start_server(|c| c.max_client_cnxns = 0).await;
    let rounds = 400;
    let mut replies = 0usize;
    for round in 0..rounds {
        let mut raw = if round % 5 == 0 {
            // Noise (or a jute-ish record) in place of the ConnectRequest.
            let mut raw = Raw::tcp(&t.addr).await;
            let mut body = Vec::new();
            random_tail(&mut rng, &mut body);
            raw.send(&framed(&body)).await;
            raw
        } else {
            Raw::session(&t.addr).await.0
        };
        for _ in 0..rng.gen_range(1..=4) {
            let body = random_request_body(&mut rng);
            // The server may already have closed: later writes can fail.
            if raw.s.write_all(&framed(&body)).await.is_err() {
                break;
            }
        }
        // Half-close: the server must answer what it accepted and then close, in time.
        let _ = raw.s.shutdown().await;
        replies += raw.until_closed().await.len();
        if round % 50 == 49 {
            assert_server_healthy(&t.addr, &format!("round-{round}")).await;
        }
    }
    println!("{rounds} rounds, {replies} frames received back");
    assert_server_healthy(&t.addr, "after-random").await;
    t.server.shutdown().await;
}

/// Matches Apache ZooKeeper 3.8 (checked against it with the same bytes): a known
/// opcode with an undecodable body gets MarshallingError for that xid and the
/// connection stays usable; a client sending the server-internal deleteContainer
/// (op 20) gets BadArguments and stays connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_bodies_get_marshalling_error_and_the_connection_survives() {
    let t = start_server(|_| {}).await;
    let (mut raw, _) = Raw::session(&t.addr).await;
    let cases: [(i32, i32, &[u8]); 4] = [
        (11, op::GET_DATA, b""),                                   // no body at all
        (12, op::CREATE, &[0, 0, 0, 3, b'/', 0xff, 0xfe]),         // path is not UTF-8
        (13, op::SET_DATA, &[0, 0, 0, 2, b'/', b'a', 0, 0, 1, 0]), // data length past the frame
        (14, op::DELETE_CONTAINER, &[0, 0, 0, 2, b'/', b'a']),
    ];
    for (xid, opcode, tail) in cases {
        let mut body = xid.to_be_bytes().to_vec();
        body.extend_from_slice(&opcode.to_be_bytes());
        body.extend_from_slice(tail);
        raw.send(&framed(&body)).await;
        let reply = raw.frame().await.unwrap_or_else(|| {
            panic!("opcode {opcode}: connection closed instead of an error reply")
        });
        let h = ReplyHeader::from_bytes(&reply).expect("reply header");
        let want = if opcode == op::DELETE_CONTAINER {
            ErrorCode::BadArguments
        } else {
            ErrorCode::MarshallingError
        };
        assert_eq!((h.xid, h.err), (xid, want.code()), "opcode {opcode}");
        raw.assert_usable().await;
    }
    t.server.shutdown().await;
}
