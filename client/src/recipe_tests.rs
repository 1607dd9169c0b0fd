//! The client's recipe support against a scripted in-process server: reply and error
//! decoding, parked calls completed by notification, pushed messages, connection loss.

use crate::{Client, ClientError, ConnectOptions, RecipeInfo};
use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wazoo_proto::consts::xid;
use wazoo_proto::frame::take_frame;
use wazoo_proto::recipe::{CALL_COMPLETED, CALL_PARKED, NOTIFY_CALL_COMPLETED, NOTIFY_MESSAGE};
use wazoo_proto::request::decode_request;
use wazoo_proto::response::{encode_recipe_notification_frame, encode_reply_frame};
use wazoo_proto::{
    ConnectRequest, ConnectResponse, ErrorCode, RecipeNotification, Record, Request, Response,
};

/// What the scripted server does with one request.
enum Action {
    /// Write these frames (possibly several: a reply and notifications) at once.
    Frames(Vec<Vec<u8>>),
    /// Close the connection.
    Close,
}

type Handler = Arc<dyn Fn(i32, Request) -> Action + Send + Sync>;

/// Serves one connection: handshake, pings answered, everything else to `handler`.
async fn mock_server(handler: Handler) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        let mut handshaken = false;
        loop {
            while let Some(frame) = take_frame(&mut buf, 1 << 20).unwrap() {
                if !handshaken {
                    let req = ConnectRequest::from_bytes(&frame).unwrap();
                    let mut w = wazoo_proto::Writer::framed();
                    ConnectResponse {
                        protocol_version: 0,
                        timeout_ms: req.timeout_ms,
                        session_id: 0x42,
                        passwd: vec![7; 16],
                        read_only: req.read_only.map(|_| false),
                    }
                    .encode(&mut w);
                    sock.write_all(&w.finish_frame()).await.unwrap();
                    handshaken = true;
                    continue;
                }
                let (h, req) = decode_request(&frame).unwrap();
                if req == Request::Ping {
                    let f = encode_reply_frame(xid::PING, 1, &Ok(Response::Empty));
                    sock.write_all(&f).await.unwrap();
                    continue;
                }
                match handler(h.xid, req) {
                    Action::Frames(frames) => {
                        sock.write_all(&frames.concat()).await.unwrap();
                    }
                    Action::Close => return,
                }
            }
            if sock.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
        }
    });
    addr
}

async fn connect(handler: Handler) -> Client {
    let addr = mock_server(handler).await;
    Client::connect(&addr, ConnectOptions::default())
        .await
        .unwrap()
}

fn reply(x: i32, zxid: i64, r: Result<Response, ErrorCode>) -> Vec<u8> {
    encode_reply_frame(x, zxid, &r)
}

fn completion(call_id: i64, err: i32, message: &str, payload: &[u8]) -> Vec<u8> {
    encode_recipe_notification_frame(
        50,
        &RecipeNotification {
            kind: NOTIFY_CALL_COMPLETED,
            module: "lock".into(),
            call_id,
            err,
            message: message.into(),
            payload: payload.to_vec(),
        },
    )
}

fn info(name: &str, version: i32) -> RecipeInfo {
    RecipeInfo {
        name: name.into(),
        version,
        sha256: "ab".repeat(32),
        size: 100,
        ctime: 1_700_000_000_000,
        zxid: 3,
    }
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("timed out")
}

#[tokio::test]
async fn upload_list_delete() {
    let c = connect(Arc::new(|x, req| {
        Action::Frames(vec![match req {
            Request::RecipeUpload { name, module } => {
                assert_eq!(module, b"\0asm");
                reply(
                    x,
                    10,
                    Ok(Response::RecipeUploaded {
                        name,
                        version: 2,
                        sha256: "0f".repeat(32),
                    }),
                )
            }
            Request::RecipeList { name } if name.is_empty() => reply(
                x,
                10,
                Ok(Response::RecipeList(vec![info("a", 1), info("b", 4)])),
            ),
            Request::RecipeList { .. } => reply(x, 10, Ok(Response::RecipeList(vec![]))),
            Request::RecipeDelete { name, version } => {
                assert_eq!((name.as_str(), version), ("lock", -1));
                reply(x, 11, Ok(Response::Empty))
            }
            other => panic!("unexpected {other:?}"),
        }])
    }))
    .await;
    let up = timed(c.recipe_upload("lock", b"\0asm")).await.unwrap();
    assert_eq!((up.name.as_str(), up.version), ("lock", 2));
    assert_eq!(up.sha256, "0f".repeat(32));
    let all = timed(c.recipe_list("")).await.unwrap();
    assert_eq!(all, vec![info("a", 1), info("b", 4)]);
    assert!(timed(c.recipe_list("none")).await.unwrap().is_empty());
    timed(c.recipe_delete("lock", -1)).await.unwrap();
    assert_eq!(c.last_zxid(), 11);
}

#[tokio::test]
async fn errors_carry_code_and_message() {
    let c = connect(Arc::new(|x, req| {
        Action::Frames(vec![match req {
            Request::RecipeUpload { .. } => reply(x, 0, Err(ErrorCode::NoAuth)),
            Request::RecipeCall { function, .. } => reply(
                x,
                0,
                Ok(Response::RecipeFailure {
                    code: ErrorCode::RecipeFailed,
                    message: format!("unknown function {function}"),
                }),
            ),
            Request::RecipeDelete { .. } => reply(
                x,
                0,
                Ok(Response::RecipeFailure {
                    code: ErrorCode::RecipeNotFound,
                    message: "no recipe nope".into(),
                }),
            ),
            // A plain ZooKeeper op keeps ZooKeeper's header-only error.
            Request::GetData(_) => reply(x, 0, Err(ErrorCode::NoNode)),
            other => panic!("unexpected {other:?}"),
        }])
    }))
    .await;
    match timed(c.recipe_upload("lock", b"x")).await {
        Err(ClientError::Recipe { code, message }) => {
            assert_eq!(code, ErrorCode::NoAuth);
            assert_eq!(message, "");
        }
        other => panic!("{other:?}"),
    }
    let e = timed(c.recipe_call("lock", -1, "x", vec![0xc0]))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "RecipeFailed: unknown function x");
    assert_eq!(e.code(), Some(ErrorCode::RecipeFailed));
    let e = timed(c.recipe_delete("nope", 1)).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::RecipeNotFound));
    assert_eq!(e.recipe_message(), Some("no recipe nope"));
    // The raw request API sees the code; the connection is still in step.
    let (_, r) = timed(c.request(Request::RecipeDelete {
        name: "nope".into(),
        version: 1,
    }))
    .await
    .unwrap();
    assert_eq!(r, Err(ErrorCode::RecipeNotFound));
    assert!(matches!(
        timed(c.get_data("/x", false)).await,
        Err(ClientError::Zk(ErrorCode::NoNode))
    ));
}

#[tokio::test]
async fn runtime_info_and_adopt() {
    let adopted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = adopted.clone();
    let c = connect(Arc::new(move |x, req| {
        use std::sync::atomic::Ordering::SeqCst;
        Action::Frames(vec![match req {
            Request::RecipeRuntimeInfo => reply(
                x,
                5,
                Ok(Response::RecipeRuntimeInfo {
                    pinned: if flag.load(SeqCst) { "new" } else { "old" }.into(),
                    local: "new".into(),
                }),
            ),
            Request::RecipeAdoptRuntime if !flag.swap(true, SeqCst) => reply(
                x,
                6,
                Ok(Response::RecipeRuntime {
                    profile: "new".into(),
                }),
            ),
            Request::RecipeAdoptRuntime => reply(
                x,
                0,
                Ok(Response::RecipeFailure {
                    code: ErrorCode::RecipeRuntimeMismatch,
                    message: "local profile mismatch".into(),
                }),
            ),
            other => panic!("unexpected {other:?}"),
        }])
    }))
    .await;
    assert_eq!(
        timed(c.recipe_runtime_info()).await.unwrap(),
        ("old".to_string(), "new".to_string())
    );
    assert_eq!(timed(c.recipe_adopt_runtime()).await.unwrap(), "new");
    assert_eq!(c.last_zxid(), 6);
    assert_eq!(
        timed(c.recipe_runtime_info()).await.unwrap(),
        ("new".to_string(), "new".to_string())
    );
    // Errors carry the code and the message, as for the other recipe ops.
    let e = timed(c.recipe_adopt_runtime()).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::RecipeRuntimeMismatch));
    assert_eq!(e.recipe_message(), Some("local profile mismatch"));
}

#[tokio::test]
async fn completed_and_parked_calls() {
    let c = connect(Arc::new(|x, req| {
        let Request::RecipeCall { function, args, .. } = req else {
            panic!("unexpected {req:?}")
        };
        match function.as_str() {
            "now" => Action::Frames(vec![reply(
                x,
                5,
                Ok(Response::RecipeCall {
                    state: CALL_COMPLETED,
                    call_id: 0,
                    reply: args,
                }),
            )]),
            // Parked; in the same write: an unknown call's completion, a pushed message,
            // a notification kind from the future, then this call's completion.
            "later" => Action::Frames(vec![
                reply(
                    x,
                    6,
                    Ok(Response::RecipeCall {
                        state: CALL_PARKED,
                        call_id: 77,
                        reply: vec![],
                    }),
                ),
                completion(999, 0, "", b"stray"),
                encode_recipe_notification_frame(
                    7,
                    &RecipeNotification {
                        kind: NOTIFY_MESSAGE,
                        module: "lock".into(),
                        call_id: 0,
                        err: 0,
                        message: String::new(),
                        payload: vec![0xa2, b'h', b'i'],
                    },
                ),
                encode_recipe_notification_frame(
                    7,
                    &RecipeNotification {
                        kind: 99,
                        ..Default::default()
                    },
                ),
                completion(77, 0, "", &args),
            ]),
            // The completion arrives ahead of the parked reply.
            "early" => Action::Frames(vec![
                completion(78, 0, "", b"early"),
                reply(
                    x,
                    8,
                    Ok(Response::RecipeCall {
                        state: CALL_PARKED,
                        call_id: 78,
                        reply: vec![],
                    }),
                ),
            ]),
            "fails" => Action::Frames(vec![
                reply(
                    x,
                    9,
                    Ok(Response::RecipeCall {
                        state: CALL_PARKED,
                        call_id: 79,
                        reply: vec![],
                    }),
                ),
                completion(79, ErrorCode::RecipeCancelled.code(), "session closed", b""),
            ]),
            other => panic!("unexpected function {other}"),
        }
    }))
    .await;
    let mut messages = c.take_recipe_messages().unwrap();
    assert!(c.take_recipe_messages().is_none());
    assert_eq!(
        timed(c.recipe_call("lock", 1, "now", vec![1, 2]))
            .await
            .unwrap(),
        vec![1, 2]
    );
    assert_eq!(
        timed(c.recipe_call("lock", -1, "later", vec![3]))
            .await
            .unwrap(),
        vec![3]
    );
    let m = timed(messages.recv()).await.unwrap();
    assert_eq!(
        (m.module.as_str(), m.payload.as_slice(), m.zxid),
        ("lock", &[0xa2, b'h', b'i'][..], 7)
    );
    assert_eq!(
        timed(c.recipe_call("lock", -1, "early", vec![]))
            .await
            .unwrap(),
        b"early"
    );
    match timed(c.recipe_call("lock", -1, "fails", vec![])).await {
        Err(ClientError::Recipe { code, message }) => {
            assert_eq!(code, ErrorCode::RecipeCancelled);
            assert_eq!(message, "session closed");
        }
        other => panic!("{other:?}"),
    }
    assert!(!c.is_closed());
}

#[tokio::test]
async fn parked_call_fails_when_the_connection_closes() {
    let c = connect(Arc::new(|x, req| match req {
        Request::RecipeCall { .. } => Action::Frames(vec![reply(
            x,
            6,
            Ok(Response::RecipeCall {
                state: CALL_PARKED,
                call_id: 5,
                reply: vec![],
            }),
        )]),
        Request::GetData(_) => Action::Close,
        other => panic!("unexpected {other:?}"),
    }))
    .await;
    let c2 = c.clone();
    let call = tokio::spawn(async move { c2.recipe_call("lock", -1, "wait", vec![]).await });
    // Let the parked reply arrive, then make the server hang up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!call.is_finished());
    let _ = timed(c.get_data("/x", false)).await;
    let e = timed(call).await.unwrap().unwrap_err();
    assert!(matches!(e, ClientError::ConnectionClosed), "{e:?}");
    assert_eq!(e.code(), Some(ErrorCode::ConnectionLoss));
    // And a call on the closed connection fails at once.
    assert!(matches!(
        timed(c.recipe_call("lock", -1, "wait", vec![])).await,
        Err(ClientError::ConnectionClosed)
    ));
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Acquire {
    path: String,
    ttl_ms: u64,
}

#[tokio::test]
async fn typed_calls_use_named_messagepack() {
    let c = connect(Arc::new(|x, req| {
        let Request::RecipeCall { args, function, .. } = req else {
            panic!("unexpected {req:?}")
        };
        let reply_bytes = match function.as_str() {
            // Structs travel as maps: the field names are on the wire.
            "echo" => {
                let a: Acquire = rmp_serde::from_slice(&args).unwrap();
                assert!(args.windows(6).any(|w| w == b"ttl_ms"));
                rmp_serde::to_vec_named(&a).unwrap()
            }
            _ => b"\xc1".to_vec(), // never-used MessagePack byte: undecodable
        };
        Action::Frames(vec![reply(
            x,
            1,
            Ok(Response::RecipeCall {
                state: CALL_COMPLETED,
                call_id: 0,
                reply: reply_bytes,
            }),
        )])
    }))
    .await;
    let a = Acquire {
        path: "/locks/a".into(),
        ttl_ms: 500,
    };
    let back: Acquire = timed(c.recipe_call_typed("lock", -1, "echo", &a))
        .await
        .unwrap();
    assert_eq!(back, a);
    let bad = timed(c.recipe_call_typed::<_, Acquire>("lock", -1, "junk", &a)).await;
    assert!(matches!(bad, Err(ClientError::MessagePack(_))), "{bad:?}");
}

#[tokio::test]
async fn a_deferred_reply_is_matched_by_xid_after_later_replies() {
    // The server answers the parked call only when it completes, after it answered a
    // later request: the client matches it by xid, not by order.
    let parked_xid = Arc::new(std::sync::Mutex::new(None));
    let seen = parked_xid.clone();
    let c = connect(Arc::new(move |x, req| match req {
        Request::RecipeCall { flags, .. } => {
            assert_eq!(flags, wazoo_proto::recipe::CALL_DEFER_REPLY);
            *seen.lock().unwrap() = Some(x);
            Action::Frames(vec![])
        }
        Request::Exists(_) => {
            let parked = seen.lock().unwrap().take().expect("the call came first");
            Action::Frames(vec![
                reply(x, 7, Err(ErrorCode::NoNode)),
                reply(
                    parked,
                    8,
                    Ok(Response::RecipeCall {
                        state: CALL_COMPLETED,
                        call_id: 6,
                        reply: b"granted".to_vec(),
                    }),
                ),
            ])
        }
        other => panic!("unexpected {other:?}"),
    }))
    .await;
    let c2 = c.clone();
    let call = tokio::spawn(async move { c2.recipe_call("lock", -1, "acquire", vec![]).await });
    while parked_xid.lock().unwrap().is_none() {
        tokio::task::yield_now().await;
    }
    assert_eq!(timed(c.exists("/x", false)).await.unwrap(), None);
    assert_eq!(timed(call).await.unwrap().unwrap(), b"granted");
    assert!(!c.is_closed());
}

#[tokio::test]
async fn quiet_calls_are_settled_by_a_later_reply_or_by_their_error() {
    let c = connect(Arc::new(|x, req| match req {
        Request::RecipeCall {
            function, flags, ..
        } => {
            assert_eq!(flags, wazoo_proto::recipe::CALL_QUIET);
            match function.as_str() {
                // Succeeds: a quiet call's success is not answered.
                "release" => Action::Frames(vec![]),
                _ => Action::Frames(vec![reply(
                    x,
                    8,
                    Ok(Response::RecipeFailure {
                        code: ErrorCode::RecipeFailed,
                        message: "not the holder".into(),
                    }),
                )]),
            }
        }
        Request::Exists(_) => Action::Frames(vec![reply(x, 9, Err(ErrorCode::NoNode))]),
        other => panic!("unexpected {other:?}"),
    }))
    .await;
    let ok = c.recipe_call_quiet("lock", -1, "release", vec![]).unwrap();
    let bad = c.recipe_call_quiet("lock", -1, "junk", vec![]).unwrap();
    let ok2 = c.recipe_call_quiet("lock", -1, "release", vec![]).unwrap();
    // The reply to a later request settles the quiet calls before it.
    assert_eq!(timed(c.exists("/x", false)).await.unwrap(), None);
    timed(ok.outcome()).await.unwrap();
    timed(ok2.outcome()).await.unwrap();
    match timed(bad.outcome()).await {
        Err(ClientError::Recipe { code, message }) => {
            assert_eq!(code, ErrorCode::RecipeFailed);
            assert_eq!(message, "not the holder");
        }
        other => panic!("{other:?}"),
    }
    // Deferred and quiet at once is refused before anything is sent.
    let both = c
        .request(Request::RecipeCall {
            name: "lock".into(),
            version: -1,
            function: "release".into(),
            args: vec![],
            flags: wazoo_proto::recipe::CALL_DEFER_REPLY | wazoo_proto::recipe::CALL_QUIET,
        })
        .await;
    assert!(
        matches!(
            &both,
            Err(ClientError::Recipe {
                code: ErrorCode::BadArguments,
                ..
            })
        ),
        "{both:?}"
    );
    assert!(!c.is_closed());
}
