//! Server lists, reconnection, watch re-arming, expiry and state events, against a
//! scripted in-process server that accepts any number of connections.

use crate::{Client, ClientError, ConnState, ConnectOptions, Failover};
use bytes::BytesMut;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use wazoo_proto::consts::{add_watch_mode, event, state, xid};
use wazoo_proto::frame::take_frame;
use wazoo_proto::recipe::CALL_PARKED;
use wazoo_proto::request::decode_request;
use wazoo_proto::response::{encode_event_frame, encode_reply_frame};
use wazoo_proto::{
    ConnectRequest, ConnectResponse, ErrorCode, Record, Request, Response, SetWatches2, Stat,
    WatcherEvent,
};

/// What the fake saw, in order.
#[derive(Debug)]
enum Seen {
    Connect(usize, ConnectRequest),
    Req(usize, Request),
}

/// Commands to the current connection.
enum Ctl {
    Write(Vec<u8>),
    Close,
}

/// Answers a request on connection `conn` (numbered from 0): `None` leaves it
/// unanswered (in flight).
type Handler = Arc<dyn Fn(usize, i32, &Request) -> Option<Vec<u8>> + Send + Sync>;

struct Fake {
    addr: String,
    seen: mpsc::UnboundedReceiver<Seen>,
    ctl: Arc<Mutex<Option<mpsc::UnboundedSender<Ctl>>>>,
}

impl Fake {
    /// Session 0x42, password [7; 16]. With `expire_reconnects`, every connection after
    /// the first is answered "session expired" (timeout 0) and closed.
    async fn start(handler: Handler, expire_reconnects: bool) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let ctl: Arc<Mutex<Option<mpsc::UnboundedSender<Ctl>>>> = Arc::default();
        let ctl2 = ctl.clone();
        tokio::spawn(async move {
            let mut conn_no = 0;
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel();
                *ctl2.lock().unwrap() = Some(ctl_tx);
                let n = conn_no;
                conn_no += 1;
                let seen_tx = seen_tx.clone();
                let handler = handler.clone();
                // One connection at a time, as a client uses them.
                let mut buf = BytesMut::new();
                let mut handshaken = false;
                'conn: loop {
                    while let Some(frame) = take_frame(&mut buf, 1 << 20).unwrap() {
                        if !handshaken {
                            let req = ConnectRequest::from_bytes(&frame).unwrap();
                            let expired = expire_reconnects && n > 0;
                            let mut w = wazoo_proto::Writer::framed();
                            ConnectResponse {
                                protocol_version: 0,
                                timeout_ms: if expired { 0 } else { req.timeout_ms },
                                session_id: if expired { 0 } else { 0x42 },
                                passwd: vec![if expired { 0 } else { 7 }; 16],
                                read_only: req.read_only.map(|_| false),
                            }
                            .encode(&mut w);
                            let _ = seen_tx.send(Seen::Connect(n, req));
                            let _ = sock.write_all(&w.finish_frame()).await;
                            if expired {
                                break 'conn;
                            }
                            handshaken = true;
                            continue;
                        }
                        let (h, req) = decode_request(&frame).unwrap();
                        if req == Request::Ping {
                            let f = encode_reply_frame(xid::PING, 0, &Ok(Response::Empty));
                            let _ = sock.write_all(&f).await;
                            continue;
                        }
                        let answer = handler(n, h.xid, &req);
                        let _ = seen_tx.send(Seen::Req(n, req));
                        if let Some(f) = answer {
                            let _ = sock.write_all(&f).await;
                        }
                    }
                    tokio::select! {
                        r = sock.read_buf(&mut buf) => {
                            if r.unwrap_or(0) == 0 {
                                break 'conn;
                            }
                        }
                        c = ctl_rx.recv() => match c {
                            Some(Ctl::Write(f)) => {
                                let _ = sock.write_all(&f).await;
                            }
                            Some(Ctl::Close) | None => break 'conn,
                        }
                    }
                }
            }
        });
        Fake { addr, seen, ctl }
    }

    fn ctl(&self, c: Ctl) {
        let _ = self.ctl.lock().unwrap().as_ref().unwrap().send(c);
    }

    async fn next_seen(&mut self) -> Seen {
        timed(self.seen.recv()).await.expect("fake server gone")
    }

    /// Skips what the fake saw until `f` matches.
    async fn wait_seen<T>(&mut self, mut f: impl FnMut(Seen) -> Option<T>) -> T {
        loop {
            if let Some(t) = f(self.next_seen().await) {
                return t;
            }
        }
    }
}

/// An address nobody listens on (bound, then released).
async fn dead_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().to_string()
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("timed out")
}

fn reply(x: i32, zxid: i64, r: Result<Response, ErrorCode>) -> Vec<u8> {
    encode_reply_frame(x, zxid, &r)
}

fn notification(zxid: i64, event_type: i32, path: &str) -> Vec<u8> {
    encode_event_frame(
        zxid,
        &WatcherEvent {
            event_type,
            state: state::SYNC_CONNECTED,
            path: path.into(),
        },
    )
}

/// Waits until `c` has reconnected `n` times and is connected.
async fn wait_reconnected(c: &Client, n: u64) {
    let mut st = c.state();
    timed(st.wait_for(|s| *s == ConnState::Connected && c.reconnects() >= n))
        .await
        .expect("state channel open");
}

async fn wait_state(c: &Client, want: ConnState) {
    let mut st = c.state();
    timed(st.wait_for(|s| *s == want))
        .await
        .expect("state channel open");
}

fn opts() -> ConnectOptions {
    ConnectOptions {
        timeout_ms: 6000,
        ..Default::default()
    }
}

#[tokio::test]
async fn reconnects_with_the_same_session_and_rearms_watches() {
    let handler: Handler = Arc::new(|conn, x, req| match req {
        Request::GetData(_) => Some(reply(
            x,
            5,
            Ok(Response::GetData {
                data: Some(b"v".to_vec()),
                stat: Stat::default(),
            }),
        )),
        Request::Exists(_) => Some(reply(x, 6, Err(ErrorCode::NoNode))),
        Request::AddWatch(_) => Some(reply(x, 7, Ok(Response::AddWatch))),
        Request::GetChildren(_) => Some(reply(x, 7, Ok(Response::Children(vec![])))),
        Request::Auth(_) => Some(reply(xid::AUTH, 0, Ok(Response::Empty))),
        Request::SetWatches { .. } => Some(reply(xid::SET_WATCHES, 0, Ok(Response::Empty))),
        // In flight when the connection drops: never answered on connection 0.
        Request::SetData(_) if conn == 0 => None,
        Request::RecipeCall { .. } => Some(reply(
            x,
            9,
            Ok(Response::RecipeCall {
                state: CALL_PARKED,
                call_id: 5,
                reply: vec![],
            }),
        )),
        other => panic!("unexpected request {other:?}"),
    });
    let mut fake = Fake::start(handler, false).await;
    // The first server is down: the client moves on to the second.
    let connect_string = format!("{},{}", dead_addr().await, fake.addr);
    let c = Client::connect_with(&connect_string, opts(), Failover::reconnecting())
        .await
        .unwrap();
    assert_eq!(c.current_server(), fake.addr);
    assert_eq!(c.current_state(), ConnState::Connected);
    let mut events = c.take_events().unwrap();
    assert!(matches!(fake.next_seen().await, Seen::Connect(0, _)));

    c.add_auth("digest", b"u:p").await.unwrap();
    c.get_data("/a", true).await.unwrap();
    assert_eq!(c.exists("/b", true).await.unwrap(), None);
    c.add_watch("/c", add_watch_mode::PERSISTENT_RECURSIVE)
        .await
        .unwrap();
    c.get_children("/d", true).await.unwrap();
    // A fired one-shot watch is gone: /d is not re-armed.
    fake.ctl(Ctl::Write(notification(
        8,
        event::NODE_CHILDREN_CHANGED,
        "/d",
    )));
    let e = timed(events.recv()).await.unwrap();
    assert_eq!(
        (e.event_type, e.path.as_str()),
        (event::NODE_CHILDREN_CHANGED, "/d")
    );
    assert_eq!(c.last_zxid(), 8);

    // A write and a parked recipe call are in flight when the connection drops.
    let parked = {
        let c = c.clone();
        tokio::spawn(async move { c.recipe_call("lock", -1, "acquire", vec![0x80]).await })
    };
    fake.wait_seen(|s| matches!(s, Seen::Req(0, Request::RecipeCall { .. })).then_some(()))
        .await;
    let write = {
        let c = c.clone();
        tokio::spawn(async move { c.set_data("/a", b"w", -1).await })
    };
    fake.wait_seen(|s| matches!(s, Seen::Req(0, Request::SetData(_))).then_some(()))
        .await;
    // The recipe reply (zxid 9) is read before the connection drops.
    fake.ctl(Ctl::Close);

    let r = timed(write).await.unwrap();
    assert!(matches!(r, Err(ClientError::ConnectionClosed)), "{r:?}");
    assert_eq!(r.unwrap_err().code(), Some(ErrorCode::ConnectionLoss));
    let r = timed(parked).await.unwrap();
    assert_eq!(r.unwrap_err().code(), Some(ErrorCode::ConnectionLoss));

    // Round robin: the dead server is tried, then the fake again, same session.
    let req = fake
        .wait_seen(|s| match s {
            Seen::Connect(1, r) => Some(r),
            _ => None,
        })
        .await;
    assert_eq!(req.session_id, 0x42);
    assert_eq!(req.passwd, vec![7; 16]);
    assert_eq!(req.last_zxid_seen, 9);
    assert_eq!(req.timeout_ms, 6000);
    // Auth replayed, then the watches re-armed, before anything else.
    match fake.next_seen().await {
        Seen::Req(1, Request::Auth(a)) => assert_eq!(a.scheme, "digest"),
        other => panic!("{other:?}"),
    }
    match fake.next_seen().await {
        Seen::Req(1, Request::SetWatches { v2: true, watches }) => assert_eq!(
            watches,
            SetWatches2 {
                relative_zxid: 9,
                data_watches: vec!["/a".into()],
                exist_watches: vec!["/b".into()],
                child_watches: vec![],
                persistent_watches: vec![],
                persistent_recursive_watches: vec!["/c".into()],
            }
        ),
        other => panic!("{other:?}"),
    }
    wait_reconnected(&c, 1).await;
    assert_eq!(c.session_id(), 0x42);
    assert!(!c.is_closed());

    // Same events channel; requests work again.
    fake.ctl(Ctl::Write(notification(10, event::NODE_DATA_CHANGED, "/a")));
    let e = timed(events.recv()).await.unwrap();
    assert_eq!(
        (e.event_type, e.path.as_str()),
        (event::NODE_DATA_CHANGED, "/a")
    );
    c.get_data("/a", false).await.unwrap();
}

#[tokio::test]
async fn expired_on_reconnect_closes_the_client() {
    let handler: Handler = Arc::new(|_, x, req| match req {
        Request::GetData(_) => Some(reply(
            x,
            3,
            Ok(Response::GetData {
                data: None,
                stat: Stat::default(),
            }),
        )),
        other => panic!("unexpected request {other:?}"),
    });
    let mut fake = Fake::start(handler, true).await;
    let c = Client::connect_with(&fake.addr, opts(), Failover::reconnecting())
        .await
        .unwrap();
    let mut events = c.take_events().unwrap();
    let mut msgs = c.take_recipe_messages().unwrap();
    c.get_data("/x", true).await.unwrap();
    fake.ctl(Ctl::Close);

    wait_state(&c, ConnState::Expired).await;
    let req = fake
        .wait_seen(|s| match s {
            Seen::Connect(1, r) => Some(r),
            _ => None,
        })
        .await;
    assert_eq!(req.session_id, 0x42);
    assert!(c.is_closed());
    let r = c.get_data("/x", false).await;
    assert!(
        matches!(r, Err(ClientError::Zk(ErrorCode::SessionExpired))),
        "{r:?}"
    );
    // The session's channels end.
    assert_eq!(timed(events.recv()).await, None);
    assert_eq!(timed(msgs.recv()).await, None);
    // Final: stays Expired.
    assert_eq!(c.current_state(), ConnState::Expired);
}

#[tokio::test]
async fn plain_connect_does_not_reconnect() {
    let handler: Handler = Arc::new(|_, _, req| panic!("unexpected request {req:?}"));
    let fake = Fake::start(handler, false).await;
    let c = Client::connect(&fake.addr, opts()).await.unwrap();
    let mut events = c.take_events().unwrap();
    fake.ctl(Ctl::Close);
    wait_state(&c, ConnState::Disconnected).await;
    assert_eq!(timed(events.recv()).await, None);
    assert!(c.is_closed());
    let r = c.exists("/", false).await;
    assert!(matches!(r, Err(ClientError::ConnectionClosed)), "{r:?}");
    assert_eq!(c.reconnects(), 0);
}

#[tokio::test]
async fn close_ends_the_session_without_reconnecting() {
    let handler: Handler = Arc::new(|_, x, req| match req {
        Request::CloseSession => Some(reply(x, 4, Ok(Response::Empty))),
        other => panic!("unexpected request {other:?}"),
    });
    let fake = Fake::start(handler, false).await;
    let c = Client::connect_with(&fake.addr, opts(), Failover::reconnecting())
        .await
        .unwrap();
    let mut st = c.state();
    let mut events = c.take_events().unwrap();
    c.clone().close().await.unwrap();
    fake.ctl(Ctl::Close);
    assert_eq!(
        *timed(st.wait_for(|s| s.is_terminal())).await.unwrap(),
        ConnState::Closed
    );
    assert_eq!(timed(events.recv()).await, None);
    assert_eq!(c.reconnects(), 0);
}

#[tokio::test]
async fn no_server_reachable_is_an_error() {
    let s = format!("{}, {}", dead_addr().await, dead_addr().await);
    let r = Client::connect(&s, opts()).await;
    assert!(matches!(r, Err(ClientError::Io(_))), "{r:?}");
    assert!(Client::connect(" , ", opts()).await.is_err());
}

#[test]
fn connect_strings_and_seeded_shuffle() {
    assert_eq!(
        crate::parse_connect_string("a:1, b:2,,c:3").unwrap(),
        vec!["a:1", "b:2", "c:3"]
    );
    let base: Vec<String> = (0..8).map(|i| format!("h{i}:2181")).collect();
    let mut a = base.clone();
    let mut b = base.clone();
    crate::shuffle(&mut a, 7);
    crate::shuffle(&mut b, 7);
    assert_eq!(a, b, "same seed, same order");
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, base, "a permutation");
    let mut c = base.clone();
    crate::shuffle(&mut c, 8);
    assert_ne!(a, c, "another seed, another order (for these seeds)");
}
