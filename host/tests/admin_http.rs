//! The admin HTTP server: a known workload moves the Prometheus metrics by known
//! amounts; health, readiness and the AdminServer-style JSON commands answer.
//! Everything binds port 0 and waits on events, never on sleeps.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;
use wazoo::config::Config;
use wazoo::server::Server;
use wazoo_client::{open_acl_unsafe, Client, ConnectOptions, WatchedEvent};
use wazoo_proto::consts::event;

/// Generous bound that only turns a hang into a failure.
const GUARD: Duration = Duration::from_secs(30);

fn config(dir: &TempDir) -> Config {
    Config {
        client_port: 0,
        admin_server_port: 0,
        data_dir: dir.path().to_path_buf(),
        tick_time_ms: 100,
        min_session_timeout_ms: 200,
        max_session_timeout_ms: 20_000,
        ..Default::default()
    }
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

/// A raw HTTP/1.1 GET: (status code, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    timeout(GUARD, async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("send");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("read");
        let text = String::from_utf8(raw).expect("utf-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("header end");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status line");
        (status, body.to_string())
    })
    .await
    .expect("HTTP answer within the guard time")
}

/// `name{labels}` → value, from a Prometheus text exposition.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("sample line");
            (k.to_string(), v.parse().expect("sample value"))
        })
        .collect()
}

async fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    parse_metrics(&body)
}

fn metric(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("metric {key} missing from {m:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_known_workload() {
    const N: usize = 12;
    let dir = TempDir::new().unwrap();
    let server = Server::start(config(&dir)).await.unwrap();
    let admin = server.admin_addr.expect("admin server enabled with port 0");
    assert_ne!(admin.port(), 0);

    let before = scrape(admin).await;
    let znodes_before = metric(&before, "wazoo_znodes");
    assert_eq!(metric(&before, "wazoo_session_expirations_total"), 0.0);

    let keeper = connect(&server, 2000).await;
    let mut events = keeper.take_events().unwrap();
    for i in 0..N {
        keeper
            .create(&format!("/n{i}"), b"0123456789", open_acl_unsafe(), 0)
            .await
            .unwrap();
    }
    keeper.set_data("/n0", b"changed", -1).await.unwrap();
    // A data watch that stays registered.
    assert!(keeper.exists("/n1", true).await.unwrap().is_some());

    // One session expires: its ephemeral goes, seen through a watch.
    let lost = connect(&server, 200).await;
    lost.create("/eph", b"", open_acl_unsafe(), 1)
        .await
        .unwrap();
    assert!(keeper.exists("/eph", true).await.unwrap().is_some());
    drop(lost);
    let e = next_event(&mut events).await;
    assert_eq!(
        (e.event_type, e.path.as_str()),
        (event::NODE_DELETED, "/eph")
    );

    let m = scrape(admin).await;
    let creates = m.get("wazoo_requests_total{op=\"create\"}").unwrap_or(&0.0)
        + m.get("wazoo_requests_total{op=\"create2\"}")
            .unwrap_or(&0.0);
    assert!(creates >= (N + 1) as f64, "creates {creates}");
    assert!(metric(&m, "wazoo_requests_total{op=\"setData\"}") >= 1.0);
    assert!(metric(&m, "wazoo_requests_total{op=\"exists\"}") >= 2.0);
    assert_eq!(
        metric(&m, "wazoo_request_duration_seconds_count{op=\"setData\"}"),
        metric(&m, "wazoo_requests_total{op=\"setData\"}")
    );
    assert_eq!(
        metric(
            &m,
            "wazoo_request_duration_seconds_bucket{op=\"setData\",le=\"+Inf\"}"
        ),
        metric(&m, "wazoo_requests_total{op=\"setData\"}")
    );
    assert_eq!(metric(&m, "wazoo_session_expirations_total"), 1.0);
    assert_eq!(metric(&m, "wazoo_znodes"), znodes_before + N as f64);
    assert_eq!(metric(&m, "wazoo_sessions"), 1.0);
    assert_eq!(metric(&m, "wazoo_ephemeral_znodes"), 0.0);
    assert_eq!(metric(&m, "wazoo_watches{kind=\"data\"}"), 1.0);
    assert_eq!(metric(&m, "wazoo_watches{kind=\"child\"}"), 0.0);
    // N creates, the set, the ephemeral and two session creations, each recorded before
    // its reply was sent. (The expiry's own commit is recorded after its effects are
    // visible, so it may or may not be counted yet.)
    assert!(metric(&m, "wazoo_write_commit_duration_seconds_count") >= (N + 4) as f64);
    assert!(metric(&m, "wazoo_raft_log_fsync_duration_seconds_count") >= 1.0);
    assert!(
        metric(&m, "wazoo_znode_data_bytes") - metric(&before, "wazoo_znode_data_bytes")
            >= (N * 10) as f64
    );
    assert!(metric(&m, "wazoo_raft_term") >= 1.0);
    assert!(metric(&m, "wazoo_raft_leader_id") >= 0.0);
    assert!(metric(&m, "wazoo_raft_applied_index") > metric(&before, "wazoo_raft_applied_index"));
    assert!(metric(&m, "wazoo_data_dir_bytes") > 0.0);
    assert!(m.contains_key("wazoo_snapshot_last_index"));
    assert!(m.contains_key("wazoo_snapshot_age_seconds"));

    // Health, readiness, JSON commands.
    assert_eq!(get(admin, "/health").await, (200, "ok".to_string()));
    assert_eq!(get(admin, "/ready").await.0, 200);
    let (status, body) = get(admin, "/commands/mntr").await;
    assert_eq!(status, 200, "{body}");
    let mntr: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(mntr["command"], "mntr");
    assert!(mntr["error"].is_null());
    assert_eq!(mntr["server_state"], "standalone");
    assert_eq!(
        mntr["znode_count"].as_f64(),
        Some(metric(&m, "wazoo_znodes"))
    );
    assert_eq!(mntr["global_sessions"], 1);
    assert_eq!(mntr["watch_count"], 1);
    let (status, body) = get(admin, "/commands/monitor").await;
    assert_eq!(status, 200, "ZooKeeper's long name works too: {body}");

    let (status, body) = get(admin, "/commands/nope").await;
    assert_eq!(status, 404);
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(err["error"].as_str().unwrap().contains("nope"), "{body}");

    let (status, body) = get(admin, "/commands").await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = list["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for &name in &names {
        let (status, body) = get(admin, &format!("/commands/{name}")).await;
        assert_eq!(status, 200, "{name}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["command"], name);
    }
    for want in [
        "ruok",
        "srvr",
        "stat",
        "mntr",
        "conf",
        "cons",
        "wchs",
        "wchc",
        "wchp",
        "dump",
        "dirs",
        "leader",
        "voting_view",
        "lsnp",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let (_, body) = get(admin, "/commands/leader").await;
    let leader: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(leader["is_leader"], true, "{body}");
    let (_, body) = get(admin, "/commands/wchc").await;
    let wchc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        wchc["session_id_to_watched_paths"][keeper.session_id().to_string()],
        serde_json::json!(["/n1"]),
        "{body}"
    );
    let (_, body) = get(admin, "/commands/conf").await;
    let conf: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(conf["admin.serverPort"], "0", "{body}");
    assert_eq!(get(admin, "/nothing-here").await.0, 404);

    drop(keeper);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_server_can_be_disabled() {
    let dir = TempDir::new().unwrap();
    let mut cfg = config(&dir);
    cfg.admin_enable_server = false;
    let server = Server::start(cfg).await.unwrap();
    assert_eq!(server.admin_addr, None);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_metrics_and_lsnp_follow_raft_snapshots() {
    let dir = TempDir::new().unwrap();
    let mut cfg = config(&dir);
    cfg.snap_count = 3;
    let server = Server::start(cfg).await.unwrap();
    let admin = server.admin_addr.unwrap();
    let before = scrape(admin).await;
    assert_eq!(metric(&before, "wazoo_snapshot_last_index"), -1.0);
    assert_eq!(metric(&before, "wazoo_snapshot_age_seconds"), -1.0);
    let c = connect(&server, 2000).await;
    for i in 0..6 {
        c.create(&format!("/s{i}"), b"", open_acl_unsafe(), 0)
            .await
            .unwrap();
    }
    // Wait (on raft's metrics channel) for a snapshot to be reported.
    let mut rx = server.shared.raft.metrics();
    let snap = timeout(GUARD, async {
        loop {
            if let Some(s) = rx.borrow_and_update().snapshot {
                return s;
            }
            rx.changed().await.expect("raft running");
        }
    })
    .await
    .expect("a snapshot within the guard time");
    let m = scrape(admin).await;
    assert!(metric(&m, "wazoo_snapshot_last_index") >= snap.index as f64);
    assert!(metric(&m, "wazoo_snapshot_age_seconds") >= 0.0);
    let (status, body) = get(admin, "/commands/lsnp").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["last_snapshot"]["index"].as_u64().unwrap() >= snap.index,
        "{body}"
    );
    assert!(
        v["last_snapshot"]["age_seconds"].as_f64().unwrap() >= 0.0,
        "{body}"
    );
    drop(c);
    server.shutdown().await;
}

/// A minimal guest whose handler makes the host calls in `requests` (MessagePack
/// `HostRequest`s) in order, then returns `status`.
fn guest(requests: &[wazoo::recipe::abi::HostRequest], tail: &str) -> Vec<u8> {
    let mut data = String::new();
    let mut body = String::new();
    for (i, r) in requests.iter().enumerate() {
        let bytes = rmp_serde::to_vec_named(r).expect("encode");
        let at = 1024 * (i + 1);
        let escaped: String = bytes.iter().map(|b| format!("\\{b:02x}")).collect();
        data.push_str(&format!("(data (i32.const {at}) \"{escaped}\")\n"));
        body.push_str(&format!(
            "(drop (call $hc (i32.const {at}) (i32.const {})))\n",
            bytes.len()
        ));
    }
    wat::parse_str(format!(
        r#"(module
  (import "wazoo" "host_call" (func $hc (param i32 i32) (result i64)))
  (import "wazoo" "host_read" (func $hr (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "wazoo_abi_version_1"))
  (func (export "wazoo_alloc") (param i32) (result i32) i32.const 65536)
  {data}
  (func (export "wazoo_handle") (param i32 i32) (result i32)
    {body} {tail}))"#
    ))
    .expect("test WAT")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipe_metrics_follow_a_known_workload() {
    use wazoo::recipe::abi::HostRequest;
    let dir = TempDir::new().unwrap();
    let server = Server::start(config(&dir)).await.unwrap();
    let admin = server.admin_addr.expect("admin server");
    let c = connect(&server, 5000).await;
    c.recipe_upload(
        "ok",
        &guest(&[HostRequest::Reply(vec![0xc0])], "i32.const 0"),
    )
    .await
    .unwrap();
    c.recipe_upload("trap", &guest(&[], "unreachable"))
        .await
        .unwrap();
    c.recipe_upload("parker", &guest(&[HostRequest::Park], "i32.const 0"))
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            c.recipe_call("ok", -1, "f", vec![]).await.unwrap(),
            vec![0xc0]
        );
    }
    for _ in 0..2 {
        let e = c.recipe_call("trap", -1, "f", vec![]).await.unwrap_err();
        assert_eq!(e.code(), Some(wazoo_proto::ErrorCode::RecipeTrap), "{e}");
    }
    // One parked call, seen through a watch on its bookkeeping node.
    let mut events = c.take_events().unwrap();
    assert!(c
        .exists("/wazoo/parked/parker", true)
        .await
        .unwrap()
        .is_none());
    let waiter = connect(&server, 5000).await;
    let parked = tokio::spawn(async move { waiter.recipe_call("parker", -1, "f", vec![]).await });
    assert_eq!(
        next_event(&mut events).await.event_type,
        event::NODE_CREATED
    );

    let m = scrape(admin).await;
    assert_eq!(metric(&m, "wazoo_recipe_calls_total{recipe=\"ok\"}"), 3.0);
    assert_eq!(metric(&m, "wazoo_recipe_calls_total{recipe=\"trap\"}"), 2.0);
    assert_eq!(
        metric(
            &m,
            "wazoo_recipe_errors_total{recipe=\"trap\",error=\"RecipeTrap\"}"
        ),
        2.0
    );
    assert!(!m.contains_key("wazoo_recipe_errors_total{recipe=\"ok\",error=\"RecipeTrap\"}"));
    assert!(metric(&m, "wazoo_recipe_fuel_used_total{recipe=\"ok\"}") > 0.0);
    assert_eq!(
        metric(&m, "wazoo_recipe_parked_calls{recipe=\"parker\"}"),
        1.0
    );
    assert_eq!(metric(&m, "wazoo_recipe_parked_calls{recipe=\"ok\"}"), 0.0);
    assert!(metric(&m, "wazoo_requests_total{op=\"recipeCall\"}") >= 5.0);
    assert_eq!(metric(&m, "wazoo_requests_total{op=\"recipeUpload\"}"), 3.0);
    parked.abort();
}
