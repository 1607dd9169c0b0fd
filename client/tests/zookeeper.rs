//! `wazoo-client` against Apache ZooKeeper 3.8 (started by each test).

mod common;

use common::ZkServer;
use std::time::Duration;
use tokio::time::timeout;
use wazoo_client::proto::consts::{event, state};
use wazoo_client::proto::{
    CheckVersionRequest, CreateKind, CreateOp, ErrorCode, OpResult, PathWatchRequest, Request,
    Response, SetDataRequest, WriteOp,
};
use wazoo_client::{open_acl_unsafe, Client, ClientError, ConnectOptions};

const T: Duration = Duration::from_secs(20);

async fn connect(zk: &ZkServer) -> Client {
    timeout(
        T,
        Client::connect(&zk.addr_string(), ConnectOptions::default()),
    )
    .await
    .expect("connect timed out")
    .expect("connect")
}

fn create_op(path: &str, data: &[u8], flags: i32) -> WriteOp {
    WriteOp::Create(CreateOp {
        kind: CreateKind::Create,
        path: path.into(),
        data: Some(data.to_vec()),
        acl: open_acl_unsafe(),
        flags,
        ttl: -1,
    })
}

#[tokio::test]
async fn connect_create_get_set_delete() {
    let zk = ZkServer::start();
    let c = connect(&zk).await;
    assert_ne!(c.session_id(), 0);
    assert_eq!(c.session_passwd().len(), 16);
    assert_eq!(c.negotiated_timeout_ms(), 30000);

    assert_eq!(
        c.create("/a", b"hello", open_acl_unsafe(), 0)
            .await
            .unwrap(),
        "/a"
    );
    let (data, stat) = c.get_data("/a", false).await.unwrap();
    assert_eq!(data.as_deref(), Some(&b"hello"[..]));
    assert_eq!(stat.version, 0);
    assert_eq!(stat.data_length, 5);
    assert_eq!(stat.czxid, stat.mzxid);

    let stat = c.set_data("/a", b"world!", 0).await.unwrap();
    assert_eq!(stat.version, 1);
    assert!(matches!(
        c.set_data("/a", b"x", 0).await,
        Err(ClientError::Zk(ErrorCode::BadVersion))
    ));
    assert_eq!(
        c.get_data("/a", false).await.unwrap().0.as_deref(),
        Some(&b"world!"[..])
    );

    assert!(matches!(
        c.create("/a", b"", open_acl_unsafe(), 0).await,
        Err(ClientError::Zk(ErrorCode::NodeExists))
    ));
    assert!(matches!(
        c.create("/nope/x", b"", open_acl_unsafe(), 0).await,
        Err(ClientError::Zk(ErrorCode::NoNode))
    ));
    let seq = c.create("/a/s-", b"", open_acl_unsafe(), 2).await.unwrap();
    assert_eq!(seq, "/a/s-0000000000");
    let (path, stat) = c.create2("/a/t", b"", open_acl_unsafe(), 1).await.unwrap();
    assert_eq!(path, "/a/t");
    assert_eq!(stat.ephemeral_owner, c.session_id());
    let (path, stat) = c
        .create_ttl("/a/ttl", b"", open_acl_unsafe(), 5, 60_000)
        .await
        .unwrap();
    assert_eq!(path, "/a/ttl");
    // ZooKeeper reports ephemeralOwner 0 for a TTL node in the create reply...
    assert_eq!(stat.ephemeral_owner, 0);
    // ...and so does every Stat of a TTL (or container) node: DataNode hides the marker from clients.
    assert_eq!(
        c.exists("/a/ttl", false)
            .await
            .unwrap()
            .unwrap()
            .ephemeral_owner,
        0
    );
    let mut kids = c.get_children("/a", false).await.unwrap();
    kids.sort();
    assert_eq!(kids, vec!["s-0000000000", "t", "ttl"]);
    let (_, stat) = c.get_children2("/a", false).await.unwrap();
    assert_eq!(stat.num_children, 3);

    assert!(matches!(
        c.delete("/a", -1).await,
        Err(ClientError::Zk(ErrorCode::NotEmpty))
    ));
    for k in kids {
        c.delete(&format!("/a/{k}"), -1).await.unwrap();
    }
    c.delete("/a", 1).await.unwrap();
    assert_eq!(c.exists("/a", false).await.unwrap(), None);
    assert!(c.exists("/", false).await.unwrap().is_some());

    // Raw request: the error comes back as the inner Result, with the reply's zxid.
    let (zxid, r) = c
        .request(Request::GetData(PathWatchRequest {
            path: "/a".into(),
            watch: false,
        }))
        .await
        .unwrap();
    assert_eq!(r, Err(ErrorCode::NoNode));
    assert!(zxid > 0);
    assert!(c.last_zxid() >= zxid);
    let (_, r) = c
        .request(Request::Sync(wazoo_client::proto::PathRequest {
            path: "/".into(),
        }))
        .await
        .unwrap();
    assert_eq!(r, Ok(Response::Path("/".into())));
    c.close().await.unwrap();
}

#[tokio::test]
async fn pipelines_1000_requests() {
    let zk = ZkServer::start();
    let c = connect(&zk).await;
    c.create("/p", b"", open_acl_unsafe(), 0).await.unwrap();

    let mut set = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let c = c.clone();
        set.spawn(async move {
            c.create(
                &format!("/p/n{i}"),
                i.to_string().as_bytes(),
                open_acl_unsafe(),
                0,
            )
            .await
            .map(|p| (i, p))
        });
    }
    while let Some(r) = set.join_next().await {
        let (i, p) = r.unwrap().unwrap();
        assert_eq!(p, format!("/p/n{i}"));
    }

    // 1000 reads in flight at once, from one task: each reply must go to its own request.
    let reads: Vec<_> = (0..1000)
        .map(|i| {
            let c = c.clone();
            Box::pin(async move { c.get_data(&format!("/p/n{i}"), false).await })
        })
        .collect();
    let results = timeout(T, join_all(reads))
        .await
        .expect("pipelined reads timed out");
    for (i, r) in results.into_iter().enumerate() {
        let (data, stat) = r.unwrap();
        assert_eq!(data.unwrap(), i.to_string().as_bytes(), "reply for /p/n{i}");
        assert_eq!(stat.data_length as usize, i.to_string().len());
    }
    assert_eq!(c.get_children("/p", false).await.unwrap().len(), 1000);
}

/// Polls all futures concurrently on the current task (no `futures` dependency).
async fn join_all<F: std::future::Future + Unpin>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Option<F>> = futs.into_iter().map(Some).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if let Some(fut) = f {
                match std::pin::Pin::new(fut).poll(cx) {
                    std::task::Poll::Ready(v) => {
                        out[i] = Some(v);
                        *f = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn watch_events_arrive() {
    let zk = ZkServer::start();
    let a = connect(&zk).await;
    let b = connect(&zk).await;
    let mut events = a.take_events().unwrap();
    assert!(a.take_events().is_none());

    a.create("/w", b"1", open_acl_unsafe(), 0).await.unwrap();
    a.get_data("/w", true).await.unwrap();
    b.set_data("/w", b"2", -1).await.unwrap();
    let ev = timeout(T, events.recv()).await.unwrap().unwrap();
    assert_eq!(
        (ev.event_type, ev.state, ev.path.as_str()),
        (event::NODE_DATA_CHANGED, state::SYNC_CONNECTED, "/w")
    );

    // The session's own write: the notification comes before the write's reply.
    assert_eq!(a.exists("/w/x", true).await.unwrap(), None);
    let (_, r, events_before) = a
        .request_ordered(Request::Create(CreateOp {
            kind: CreateKind::Create,
            path: "/w/x".into(),
            data: None,
            acl: open_acl_unsafe(),
            flags: 0,
            ttl: -1,
        }))
        .await
        .unwrap();
    assert!(r.is_ok());
    assert_eq!(events_before, 2);
    let ev = events.try_recv().unwrap();
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (event::NODE_CREATED, "/w/x")
    );
}

#[tokio::test]
async fn multi_reports_per_op_results() {
    let zk = ZkServer::start();
    let c = connect(&zk).await;
    c.create("/m", b"", open_acl_unsafe(), 0).await.unwrap();

    let ok = c
        .multi(vec![
            create_op("/m/a", b"x", 0),
            WriteOp::SetData(SetDataRequest {
                path: "/m/a".into(),
                data: Some(b"y".to_vec()),
                version: 0,
            }),
            WriteOp::Check(CheckVersionRequest {
                path: "/m".into(),
                version: 0,
            }),
            WriteOp::Delete(wazoo_client::proto::DeleteRequest {
                path: "/m/a".into(),
                version: 1,
            }),
        ])
        .await
        .unwrap();
    assert!(matches!(&ok[0], OpResult::Create { path } if path == "/m/a"));
    assert!(matches!(&ok[1], OpResult::SetData { stat } if stat.version == 1));
    assert_eq!(ok[2], OpResult::Check);
    assert_eq!(ok[3], OpResult::Delete);

    let failed = c
        .multi(vec![
            create_op("/m/b", b"", 0),
            WriteOp::Check(CheckVersionRequest {
                path: "/m".into(),
                version: 42,
            }),
            create_op("/m/c", b"", 0),
            create_op("/m/d", b"", 0),
        ])
        .await
        .unwrap();
    assert_eq!(
        failed,
        vec![
            OpResult::Error(ErrorCode::Ok),
            OpResult::Error(ErrorCode::BadVersion),
            OpResult::Error(ErrorCode::RuntimeInconsistency),
            OpResult::Error(ErrorCode::RuntimeInconsistency),
        ]
    );
    assert_eq!(
        c.exists("/m/b", false).await.unwrap(),
        None,
        "a failed multi applies nothing"
    );
}

#[tokio::test]
async fn bogus_session_is_refused() {
    let zk = ZkServer::start();
    let opts = ConnectOptions {
        session_id: 0x1234_5678_9abc,
        passwd: vec![7; 16],
        ..Default::default()
    };
    let r = timeout(T, Client::connect(&zk.addr_string(), opts))
        .await
        .unwrap();
    assert!(matches!(r, Err(ClientError::SessionRefused)), "{r:?}");

    // A real session with the wrong password is refused too (and ZooKeeper closes the
    // session's live connection when it sees the attempt); with the right one it resumes.
    let c = connect(&zk).await;
    let (id, passwd) = (c.session_id(), c.session_passwd().to_vec());
    c.create("/eph", b"", open_acl_unsafe(), 1).await.unwrap();
    drop(c);
    let opts = ConnectOptions {
        session_id: id,
        passwd: vec![0; 16],
        ..Default::default()
    };
    let r = timeout(T, Client::connect(&zk.addr_string(), opts))
        .await
        .unwrap();
    assert!(matches!(r, Err(ClientError::SessionRefused)), "{r:?}");
    let opts = ConnectOptions {
        session_id: id,
        passwd,
        last_zxid_seen: 0,
        ..Default::default()
    };
    let c2 = timeout(T, Client::connect(&zk.addr_string(), opts))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c2.session_id(), id);
    assert_eq!(
        c2.exists("/eph", false)
            .await
            .unwrap()
            .unwrap()
            .ephemeral_owner,
        id
    );
    c2.close().await.unwrap();
    let c3 = connect(&zk).await;
    assert_eq!(
        c3.exists("/eph", false).await.unwrap(),
        None,
        "closeSession removed the ephemeral"
    );
}

#[tokio::test]
async fn auth_digest_and_unknown_scheme() {
    let zk = ZkServer::start();
    let c = connect(&zk).await;
    c.add_auth("digest", b"alice:secret").await.unwrap();
    let (_, who) = c.request(Request::WhoAmI).await.unwrap();
    let Ok(Response::WhoAmI(infos)) = who else {
        panic!("{who:?}")
    };
    assert!(
        infos
            .iter()
            .any(|i| i.auth_scheme == "digest" && i.user == "alice"),
        "{infos:?}"
    );
    c.create("/secret", b"s", wazoo_client::creator_all_acl(), 0)
        .await
        .unwrap();

    let other = connect(&zk).await;
    assert!(matches!(
        other.get_data("/secret", false).await,
        Err(ClientError::Zk(ErrorCode::NoAuth))
    ));

    let r = other.add_auth("nosuchscheme", b"x").await;
    assert!(
        matches!(r, Err(ClientError::Zk(ErrorCode::AuthFailed))),
        "{r:?}"
    );
    // The server closes the connection after AuthFailed.
    let r = timeout(T, other.exists("/", false))
        .await
        .expect("request after AuthFailed hung");
    assert!(matches!(r, Err(ClientError::ConnectionClosed)), "{r:?}");
    assert!(other.is_closed());
}

#[tokio::test]
async fn connection_loss_fails_pending_requests() {
    let zk = ZkServer::start();
    let c = connect(&zk).await;
    let mut events = c.take_events().unwrap();
    c.create("/x", b"", open_acl_unsafe(), 0).await.unwrap();
    let pending: Vec<_> = (0..50)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.exists("/x", false).await })
        })
        .collect();
    drop(zk); // kills the server
    for p in pending {
        let r = timeout(T, p)
            .await
            .expect("pending request hung after connection loss")
            .unwrap();
        assert!(
            matches!(r, Ok(Some(_)) | Err(ClientError::ConnectionClosed)),
            "{r:?}"
        );
    }
    let r = timeout(T, c.exists("/x", false))
        .await
        .expect("request after connection loss hung");
    assert!(matches!(r, Err(ClientError::ConnectionClosed)), "{r:?}");
    assert!(
        timeout(T, events.recv()).await.unwrap().is_none(),
        "event channel ends with the connection"
    );
}

#[tokio::test]
async fn pings_keep_an_idle_session_alive() {
    let zk = ZkServer::start();
    // 100 ms is clamped to the minimum, 2 ticks = 4 s.
    let c = timeout(
        T,
        Client::connect(
            &zk.addr_string(),
            ConnectOptions {
                timeout_ms: 100,
                ..Default::default()
            },
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(c.negotiated_timeout_ms(), 4000);
    c.create("/alive", b"", open_acl_unsafe(), 1).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        c.exists("/alive", false).await.unwrap().is_some(),
        "session expired although pings were sent"
    );

    // Dropping the client closes the socket without closeSession: the session (and its
    // ephemeral) lives until the server expires it.
    let watcher = connect(&zk).await;
    let mut events = watcher.take_events().unwrap();
    drop(c);
    assert!(watcher.exists("/alive", true).await.unwrap().is_some());
    let ev = timeout(T, events.recv())
        .await
        .expect("ephemeral of the dropped session never expired")
        .unwrap();
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (event::NODE_DELETED, "/alive")
    );
}
