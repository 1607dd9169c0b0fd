//! `wazoo bench --workload lock|election|barrier` against an in-process server with the
//! built-in recipes (built by scripts/build-recipes.sh): each runs for a fraction of a
//! second and reports sane values. Timings are not asserted, only that work was
//! measured, counted and correct (no violation, no error).

use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;
use wazoo::bench::coord::{run_barrier, run_election, run_lock, LockImpl, LockRelease};
use wazoo::bench::{BenchArgs, Workload, BENCH_ROOT};
use wazoo::config::Config;
use wazoo::server::Server;
use wazoo_client::{Client, ConnectOptions};

/// Only turns a hang into a failure.
const GUARD: Duration = Duration::from_secs(120);

fn recipes_dir() -> PathBuf {
    let dir = match std::env::var_os("WAZOO_RECIPES_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/wazoo/recipes"),
    };
    for m in ["lock", "election", "barrier"] {
        let f = dir.join(format!("{m}.wasm"));
        assert!(
            f.exists(),
            "{} is missing: run scripts/build-recipes.sh",
            f.display()
        );
    }
    dir
}

async fn start(dir: &TempDir) -> Server {
    let config = Config {
        client_port: 0,
        data_dir: dir.path().to_path_buf(),
        admin_enable_server: false,
        recipe_builtin_dir: Some(recipes_dir()),
        ..Default::default()
    };
    Server::start(config).await.unwrap()
}

fn args(addr: &str, workload: Workload, sessions: usize) -> BenchArgs {
    BenchArgs {
        servers: vec![addr.to_string()],
        workload,
        clients: sessions,
        depth: 1,
        secs: 0.6,
        value_size: 0,
        warmup_secs: 0.1,
        seed: Some(7),
        recipe_wasm: None,
        lock_impl: LockImpl::Recipe,
        lock_release: LockRelease::Drop,
        acquisitions: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordination_workloads_report_sane_values() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    let addr = server.client_addr.to_string();

    for (imp, release) in [
        (LockImpl::Recipe, LockRelease::Drop),
        (LockImpl::Recipe, LockRelease::Await),
        (LockImpl::ClientSide, LockRelease::Await),
    ] {
        let a = BenchArgs {
            lock_impl: imp,
            lock_release: release,
            ..args(&addr, Workload::Lock, 4)
        };
        let r = tokio::time::timeout(GUARD, run_lock(&a))
            .await
            .expect("lock run within the guard time")
            .unwrap();
        eprintln!("{}", serde_json::to_string(&r).unwrap());
        assert!(r.acquisitions > 0, "{r:?}");
        assert!(r.acquisitions_per_sec > 0.0, "{r:?}");
        assert_eq!((r.violations, r.errors), (0, 0), "{r:?}");
        assert!(
            r.wait_p50_ms <= r.wait_p99_ms && r.wait_p99_ms <= r.wait_max_ms,
            "{r:?}"
        );
        // The recipe: the acquire and its one reply (deferred until granted), then
        // the release: a quiet call (one frame) when the guard is dropped, a request
        // and its reply when awaited. The client-side lock: at least a request and
        // its reply per acquisition and per release. (Frames are counted over the
        // window, grants in it: allow for the calls in flight at its edges.)
        match (imp, release) {
            (LockImpl::Recipe, LockRelease::Drop) => {
                assert!((2.8..3.3).contains(&r.msgs_per_acq), "{r:?}")
            }
            (LockImpl::Recipe, LockRelease::Await) => {
                assert!((3.8..4.3).contains(&r.msgs_per_acq), "{r:?}")
            }
            _ => assert!(r.msgs_per_acq >= 4.0, "{r:?}"),
        }
        assert!(
            (r.msgs_sent_per_acq + r.msgs_received_per_acq - r.msgs_per_acq).abs() < 0.05,
            "{r:?}"
        );
        // Each grant creates a znode (the client's node, or the recipe's holder).
        assert!(r.znodes_per_acq >= 0.9, "{r:?}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["workload"], "lock");
        assert_eq!(json["lock_impl"], imp.name());
        assert_eq!(json["sessions"], 4);
    }

    // --acquisitions ends the window early.
    let a = BenchArgs {
        acquisitions: Some(20),
        secs: 30.0,
        ..args(&addr, Workload::Lock, 3)
    };
    let r = tokio::time::timeout(GUARD, run_lock(&a))
        .await
        .expect("lock run within the guard time")
        .unwrap();
    assert_eq!(r.acquisitions, 20, "{r:?}");
    assert!(r.secs < 30.0, "{r:?}");
    assert_eq!((r.violations, r.errors), (0, 0), "{r:?}");

    let r = tokio::time::timeout(GUARD, run_election(&args(&addr, Workload::Election, 4)))
        .await
        .expect("election run within the guard time")
        .unwrap();
    eprintln!("{}", serde_json::to_string(&r).unwrap());
    assert!(r.rounds > 0, "{r:?}");
    assert_eq!((r.violations, r.errors), (0, 0), "{r:?}");
    assert!(r.failover_p50_ms <= r.failover_p99_ms, "{r:?}");
    assert_eq!(serde_json::to_value(&r).unwrap()["workload"], "election");

    let r = tokio::time::timeout(GUARD, run_barrier(&args(&addr, Workload::Barrier, 4)))
        .await
        .expect("barrier run within the guard time")
        .unwrap();
    eprintln!("{}", serde_json::to_string(&r).unwrap());
    assert!(r.rounds > 0, "{r:?}");
    assert_eq!((r.violations, r.errors), (0, 0), "{r:?}");
    assert!(r.release_p50_ms <= r.release_p99_ms, "{r:?}");
    // Each party's enter: request and reply, plus a completion when it parked.
    assert!(r.msgs_per_round >= 6.0 && r.msgs_per_round <= 20.0, "{r:?}");
    assert_eq!(serde_json::to_value(&r).unwrap()["workload"], "barrier");

    // The client-side lock's directory is gone; the recipes cleaned up after
    // themselves (closed sessions).
    let probe = Client::connect(&addr, ConnectOptions::default())
        .await
        .unwrap();
    assert_eq!(
        probe.get_children(BENCH_ROOT, false).await.unwrap(),
        Vec::<String>::new()
    );
    probe.close().await.unwrap();
    server.shutdown().await;
}
