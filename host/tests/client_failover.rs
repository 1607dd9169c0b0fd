//! The client's reconnection against the real server: a session survives a server
//! restart (same session, ephemerals kept, watches re-armed), and a session ended
//! while the client was disconnected is reported as expired on reconnect.

use std::time::Duration;
use tempfile::TempDir;
use tokio::time::timeout;
use wazoo::config::Config;
use wazoo::server::Server;
use wazoo_client::{open_acl_unsafe, Client, ClientError, ConnState, ConnectOptions, Failover};
use wazoo_proto::consts::event;
use wazoo_proto::ErrorCode;

/// Generous bound that only turns a hang into a failure; tests wait on state events.
const GUARD: Duration = Duration::from_secs(30);

fn config(dir: &TempDir, client_port: u16) -> Config {
    let mut c = Config {
        client_port,
        data_dir: dir.path().to_path_buf(),
        tick_time_ms: 100,
        ..Default::default()
    };
    c.min_session_timeout_ms = 200;
    c.max_session_timeout_ms = 4000;
    c
}

async fn wait_state(c: &Client, want: impl Fn(ConnState) -> bool) -> ConnState {
    let mut st = c.state();
    let s = *timeout(GUARD, st.wait_for(|s| want(*s)))
        .await
        .expect("state within the guard time")
        .expect("state channel open");
    s
}

fn opts(timeout_ms: i32) -> ConnectOptions {
    ConnectOptions {
        timeout_ms,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_survives_a_server_restart() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(config(&dir, 0)).await.unwrap();
    let addr = server.client_addr;
    let c = Client::connect_with(&addr.to_string(), opts(4000), Failover::reconnecting())
        .await
        .unwrap();
    let id = c.session_id();
    let mut events = c.take_events().unwrap();
    c.create("/eph", b"v0", open_acl_unsafe(), 1).await.unwrap();
    c.create("/parent", b"", open_acl_unsafe(), 0)
        .await
        .unwrap();
    c.get_data("/eph", true).await.unwrap();
    c.get_children("/parent", true).await.unwrap();

    server.shutdown().await;
    wait_state(&c, |s| s == ConnState::Disconnected).await;
    let r = c.get_data("/eph", false).await;
    assert_eq!(
        r.unwrap_err().code(),
        Some(ErrorCode::ConnectionLoss),
        "requests while disconnected fail with ConnectionLoss"
    );

    // The same data dir on the same port: the client finds it again.
    let server = Server::start(config(&dir, addr.port())).await.unwrap();
    let s = wait_state(&c, |s| s == ConnState::Connected || s.is_terminal()).await;
    assert_eq!(s, ConnState::Connected);
    assert_eq!(c.reconnects(), 1);
    assert_eq!(c.session_id(), id);

    let other = Client::connect(&server.client_addr.to_string(), opts(4000))
        .await
        .unwrap();
    let stat = other
        .exists("/eph", false)
        .await
        .unwrap()
        .expect("ephemeral kept");
    assert_eq!(stat.ephemeral_owner, id);

    // Both watches were re-armed on the new server.
    other.set_data("/eph", b"v1", -1).await.unwrap();
    let e = timeout(GUARD, events.recv()).await.unwrap().unwrap();
    assert_eq!(
        (e.event_type, e.path.as_str()),
        (event::NODE_DATA_CHANGED, "/eph")
    );
    other
        .create("/parent/kid", b"", open_acl_unsafe(), 0)
        .await
        .unwrap();
    let e = timeout(GUARD, events.recv()).await.unwrap().unwrap();
    assert_eq!(
        (e.event_type, e.path.as_str()),
        (event::NODE_CHILDREN_CHANGED, "/parent")
    );
    // The session works as before.
    assert_eq!(c.get_data("/eph", false).await.unwrap().0.unwrap(), b"v1");

    c.close().await.unwrap();
    assert!(other.exists("/eph", false).await.unwrap().is_none());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_ended_while_disconnected_is_reported_expired() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(config(&dir, 0)).await.unwrap();
    let c = Client::connect_with(
        &server.client_addr.to_string(),
        opts(4000),
        Failover::reconnecting(),
    )
    .await
    .unwrap();
    let mut events = c.take_events().unwrap();
    c.create("/eph", b"", open_acl_unsafe(), 1).await.unwrap();
    server.shutdown().await;
    wait_state(&c, |s| s == ConnState::Disconnected).await;

    // The data dir comes back on another port, where the session is ended (resumed
    // with its credentials and closed) before the client finds it.
    let server = Server::start(config(&dir, 0)).await.unwrap();
    let b = server.client_addr.to_string();
    let thief = Client::connect(
        &b,
        ConnectOptions {
            timeout_ms: 4000,
            session_id: c.session_id(),
            passwd: c.session_passwd().to_vec(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    thief.close().await.unwrap();

    c.set_servers(&b).unwrap();
    let s = wait_state(&c, |s| s != ConnState::Disconnected).await;
    assert_eq!(s, ConnState::Expired);
    assert!(c.is_closed());
    let r = c.exists("/", false).await;
    assert!(
        matches!(r, Err(ClientError::Zk(ErrorCode::SessionExpired))),
        "{r:?}"
    );
    assert_eq!(timeout(GUARD, events.recv()).await.unwrap(), None);
    let other = Client::connect(&b, opts(4000)).await.unwrap();
    assert!(other.exists("/eph", false).await.unwrap().is_none());
    server.shutdown().await;
}
