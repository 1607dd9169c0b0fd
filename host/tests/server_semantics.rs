//! Server behaviours the differential suite cannot compare with ZooKeeper in a
//! test-sized time (ZooKeeper checks containers every 60 s), or that involve
//! restarting a server: container/TTL removal, persistence of data and sessions across
//! a restart, expiry after a restart, four-letter words, the super digest.

use std::time::Duration;
use tempfile::TempDir;
use tokio::time::timeout;
use wazoo::config::Config;
use wazoo::server::Server;
use wazoo_client::{open_acl_unsafe, Client, ConnectOptions, WatchedEvent};
use wazoo_proto::consts::{event, perms};
use wazoo_proto::{Acl, ErrorCode, Id};

/// Generous bound that only turns a hang into a failure; tests wait on events.
const GUARD: Duration = Duration::from_secs(30);

fn config(dir: &TempDir) -> Config {
    let mut c = Config {
        client_port: 0,
        data_dir: dir.path().to_path_buf(),
        tick_time_ms: 100,
        container_check_interval_ms: 20,
        ..Default::default()
    };
    c.min_session_timeout_ms = 200;
    c.max_session_timeout_ms = 2000;
    c.four_letter_whitelist = wazoo::config::FOUR_LETTER_WORDS
        .iter()
        .map(|s| s.to_string())
        .collect();
    c
}

async fn connect(server: &Server, timeout_ms: i32) -> Client {
    Client::connect(
        &server.client_addr.to_string(),
        ConnectOptions {
            timeout_ms,
            ..Default::default()
        },
    )
    .await
    .expect("connect")
}

async fn next_event(rx: &mut tokio::sync::mpsc::UnboundedReceiver<WatchedEvent>) -> WatchedEvent {
    timeout(GUARD, rx.recv())
        .await
        .expect("event within the guard time")
        .expect("event stream open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_containers_and_expired_ttl_nodes_are_removed() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(config(&dir)).await.unwrap();
    let c = connect(&server, 2000).await;
    let mut events = c.take_events().unwrap();

    // A container is removed once it has had a child and is empty again, not before.
    c.create("/box", b"", open_acl_unsafe(), 4).await.unwrap();
    c.create("/box/item", b"", open_acl_unsafe(), 0)
        .await
        .unwrap();
    assert!(c.exists("/box", true).await.unwrap().is_some());
    c.delete("/box/item", -1).await.unwrap();
    let e = next_event(&mut events).await;
    assert_eq!(
        (e.event_type, e.path.as_str()),
        (event::NODE_DELETED, "/box")
    );
    assert!(c.exists("/box", false).await.unwrap().is_none());

    // A TTL node with a child survives its TTL; once empty and past its TTL it goes.
    let (_, stat) = c
        .create_ttl("/ttl", b"", open_acl_unsafe(), 5, 100)
        .await
        .unwrap();
    assert_eq!(
        stat.ephemeral_owner, 0,
        "TTL nodes report ephemeralOwner 0 like ZooKeeper"
    );
    c.create("/ttl/child", b"", open_acl_unsafe(), 0)
        .await
        .unwrap();
    c.create("/ttl-marker", b"", open_acl_unsafe(), 0)
        .await
        .unwrap();
    assert!(c.exists("/ttl", true).await.unwrap().is_some());
    c.delete("/ttl/child", -1).await.unwrap();
    let e = next_event(&mut events).await;
    assert_eq!(
        (e.event_type, e.path.as_str()),
        (event::NODE_DELETED, "/ttl")
    );
    assert!(
        c.exists("/ttl-marker", false).await.unwrap().is_some(),
        "persistent nodes stay"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_and_sessions_survive_a_restart_and_sessions_still_expire() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(config(&dir)).await.unwrap();
    let keeper = connect(&server, 2000).await;
    let lost = connect(&server, 300).await;
    let (id, passwd) = (keeper.session_id(), keeper.session_passwd().to_vec());
    keeper
        .create("/kept", b"v1", open_acl_unsafe(), 0)
        .await
        .unwrap();
    let seq = keeper
        .create("/seq-", b"", open_acl_unsafe(), 2)
        .await
        .unwrap();
    keeper
        .create("/keeper-eph", b"", open_acl_unsafe(), 1)
        .await
        .unwrap();
    lost.create("/lost-eph", b"", open_acl_unsafe(), 1)
        .await
        .unwrap();
    let (_, before) = keeper.get_data("/kept", false).await.unwrap();
    drop(keeper);
    drop(lost);
    server.shutdown().await;

    let server = Server::start(config(&dir)).await.unwrap();
    let watcher = connect(&server, 2000).await;
    let mut events = watcher.take_events().unwrap();
    let (data, after) = watcher.get_data("/kept", false).await.unwrap();
    assert_eq!(data.as_deref(), Some(&b"v1"[..]));
    assert_eq!(after, before, "stat unchanged by the restart");
    assert!(watcher.exists(&seq, false).await.unwrap().is_some());
    // The session that reconnects keeps its ephemeral; the other one expires.
    let keeper = Client::connect(
        &server.client_addr.to_string(),
        ConnectOptions {
            timeout_ms: 2000,
            session_id: id,
            passwd,
            ..Default::default()
        },
    )
    .await
    .expect("session survives a restart");
    assert_eq!(keeper.session_id(), id);
    assert!(watcher.exists("/lost-eph", true).await.unwrap().is_some());
    let e = next_event(&mut events).await;
    assert_eq!(
        (e.event_type, e.path.as_str()),
        (event::NODE_DELETED, "/lost-eph")
    );
    assert!(watcher
        .exists("/keeper-eph", false)
        .await
        .unwrap()
        .is_some());
    // New zxids continue after the old ones.
    let s = keeper.set_data("/kept", b"v2", 0).await.unwrap();
    assert!(s.mzxid > before.mzxid);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn super_digest_bypasses_acls() {
    let dir = TempDir::new().unwrap();
    let mut cfg = config(&dir);
    cfg.super_digest = Some(wazoo::acl::digest_id("super:secret"));
    let server = Server::start(cfg).await.unwrap();
    let owner = connect(&server, 2000).await;
    owner.add_auth("digest", b"alice:pw").await.unwrap();
    let only_alice = vec![Acl {
        perms: perms::ALL,
        id: Id {
            scheme: "digest".into(),
            id: wazoo::acl::digest_id("alice:pw"),
        },
    }];
    owner.create("/private", b"x", only_alice, 0).await.unwrap();
    let other = connect(&server, 2000).await;
    assert_eq!(
        other.get_data("/private", false).await.unwrap_err().code(),
        Some(ErrorCode::NoAuth)
    );
    other.add_auth("digest", b"super:secret").await.unwrap();
    assert_eq!(
        other
            .get_data("/private", false)
            .await
            .unwrap()
            .0
            .as_deref(),
        Some(&b"x"[..])
    );
    other.delete("/private", -1).await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_letter_words_follow_the_whitelist() {
    let dir = TempDir::new().unwrap();
    let mut cfg = config(&dir);
    cfg.four_letter_whitelist = ["ruok".to_string(), "mntr".to_string()]
        .into_iter()
        .collect();
    let server = Server::start(cfg).await.unwrap();
    let addr = server.client_addr;
    let c = connect(&server, 2000).await;
    c.create("/n", b"", open_acl_unsafe(), 0).await.unwrap();
    let ask = |w: &'static str| async move {
        tokio::task::spawn_blocking(move || wazoo_tests::four_letter(addr, w))
            .await
            .unwrap()
            .expect("four-letter word answered")
    };
    assert_eq!(ask("ruok").await, "imok");
    let mntr = ask("mntr").await;
    assert!(mntr.contains("zk_znode_count\t5"), "{mntr}");
    assert!(mntr.contains("zk_server_state\tstandalone"), "{mntr}");
    assert_eq!(
        ask("srvr").await,
        "srvr is not executed because it is not in the whitelist.\n"
    );
    server.shutdown().await;
}
