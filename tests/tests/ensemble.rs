//! Multi-process ensemble tests: servers are child processes on 127.0.0.1 (see
//! `wazoo_tests::ensemble`). After each test every running server's state digest must
//! be identical at the same applied index.
//!
//! Needs `WAZOO_BIN` (scripts/test.sh sets it). Randomized loads print their seed;
//! `WAZOO_ENSEMBLE_SEED=<seed>` replays one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wazoo_client::{open_acl_unsafe, Client, ClientError, ConnectOptions, Failover};
use wazoo_tests::Ensemble;

const GUARD: Duration = Duration::from_secs(60);
/// raft.electionTimeoutMs of the test ensembles: elections start after [t, 2t).
const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(1000);

async fn sync(c: &Client) {
    let (_, r) = c
        .request(wazoo_proto::Request::Sync(wazoo_proto::PathRequest {
            path: "/".into(),
        }))
        .await
        .expect("sync sent");
    r.expect("sync answered");
}

fn seed() -> u64 {
    let seed = std::env::var("WAZOO_ENSEMBLE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("WAZOO_ENSEMBLE_SEED={seed}");
    seed
}

async fn connect(addr: &str) -> Client {
    tokio::time::timeout(GUARD, Client::connect(addr, ConnectOptions::default()))
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

async fn connect_failover(connect_string: &str) -> Client {
    tokio::time::timeout(
        GUARD,
        Client::connect_with(
            connect_string,
            ConnectOptions::default(),
            Failover::reconnecting(),
        ),
    )
    .await
    .expect("connect in time")
    .unwrap_or_else(|e| panic!("connect to {connect_string}: {e}"))
}

/// The index (into `members`) of some running follower.
fn a_follower(e: &Ensemble, leader: usize) -> usize {
    (0..e.members.len())
        .find(|i| *i != leader && e.members[*i].process.is_some() && !e.members[*i].observer)
        .expect("a follower")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_replicate_through_followers_and_converge() {
    let e = Ensemble::start(3, 0, &[]).expect("ensemble");
    let leader = e.wait_leader(GUARD).expect("leader");
    let f1 = a_follower(&e, leader);
    let f2 = (0..3)
        .find(|i| *i != leader && *i != f1)
        .expect("second follower");
    let c1 = connect(&e.members[f1].client_addr().unwrap()).await;
    let c2 = connect(&e.members[f2].client_addr().unwrap()).await;

    // Writes through a follower; the writer reads its own writes at once.
    for i in 0..50 {
        let p = format!("/r{i}");
        c1.create(&p, format!("v{i}").as_bytes(), open_acl_unsafe(), 0)
            .await
            .expect("create via follower");
        let (data, _) = c1.get_data(&p, false).await.expect("read own write");
        assert_eq!(data.as_deref(), Some(format!("v{i}").as_bytes()));
    }
    // Another follower catches up on sync.
    sync(&c2).await;
    let children = c2.get_children("/", false).await.unwrap();
    assert_eq!(
        children.iter().filter(|c| c.starts_with('r')).count(),
        50,
        "{children:?}"
    );

    // An ephemeral of a session on one follower, watched from the other: closing the
    // session deletes it everywhere and fires the watch there.
    c1.create("/eph", b"", open_acl_unsafe(), 1)
        .await
        .expect("ephemeral");
    sync(&c2).await;
    let mut events = c2.take_events().expect("events");
    assert!(c2.exists("/eph", true).await.unwrap().is_some());
    c1.close().await.expect("close");
    let ev = tokio::time::timeout(GUARD, events.recv())
        .await
        .expect("watch fires")
        .expect("event");
    assert_eq!(ev.path, "/eph");
    assert!(c2.exists("/eph", false).await.unwrap().is_none());

    // mntr/srvr name the roles as ZooKeeper does.
    let s = e.status().expect("status");
    let roles: Vec<&str> = s.iter().map(|s| s.role.as_str()).collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "leader").count(),
        1,
        "{roles:?}"
    );
    assert_eq!(
        roles.iter().filter(|r| **r == "follower").count(),
        2,
        "{roles:?}"
    );
    let addr: std::net::SocketAddr = e.members[f1].client_addr().unwrap().parse().unwrap();
    assert!(wazoo_tests::four_letter(addr, "srvr")
        .unwrap()
        .contains("Mode: follower"));
    e.assert_converged(GUARD).expect("converged");
}
