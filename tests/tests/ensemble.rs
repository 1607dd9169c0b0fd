//! Multi-process ensemble tests: servers are child processes on 127.0.0.1 (see
//! `wazoo_tests::ensemble`). After each test every running server's state digest must
//! be identical at the same applied index.
//!
//! Needs `WAZOO_BIN` (scripts/test.sh sets it). Randomized loads print their seed;
//! `WAZOO_ENSEMBLE_SEED=<seed>` replays one. The tests take turns (one ensemble at a
//! time), so elections are not starved of CPU by the other tests' servers; each
//! prints how long it took.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wazoo_client::{open_acl_unsafe, Client, ClientError, ConnState, ConnectOptions, Failover};
use wazoo_proto::consts::event;
use wazoo_proto::ErrorCode;
use wazoo_tests::Ensemble;

const GUARD: Duration = Duration::from_secs(60);
/// raft.electionTimeoutMs of the test ensembles: elections start after [t, 2t).
const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(1000);
/// Flag of an ephemeral create.
const EPHEMERAL: i32 = 1;

/// One ensemble at a time: two cores do not run several ensembles' elections on time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Takes this test's turn and prints its duration when it ends.
struct Turn {
    name: &'static str,
    started: Instant,
    _guard: MutexGuard<'static, ()>,
}

fn turn(name: &'static str) -> Turn {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    eprintln!("=== {name}");
    Turn {
        name,
        started: Instant::now(),
        _guard: guard,
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        eprintln!(
            "=== {} took {:.1}s{}",
            self.name,
            self.started.elapsed().as_secs_f64(),
            if std::thread::panicking() {
                " (failed)"
            } else {
                ""
            }
        );
    }
}

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
    connect_opts(addr, ConnectOptions::default()).await
}

/// Connects to one server, retrying while it cannot open a session (creating one is
/// a write: it fails while the ensemble elects a leader, as in ZooKeeper).
async fn connect_opts(addr: &str, opts: ConnectOptions) -> Client {
    let started = Instant::now();
    loop {
        match tokio::time::timeout(GUARD, Client::connect(addr, opts.clone())).await {
            Ok(Ok(c)) => return c,
            Ok(Err(e)) if started.elapsed() < GUARD => {
                eprintln!("connect to {addr}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(e)) => panic!("connect to {addr}: {e}"),
            Err(_) => panic!("connect to {addr}: no session within {GUARD:?}"),
        }
    }
}

async fn connect_failover_with(connect_string: &str, failover: Failover) -> Client {
    tokio::time::timeout(
        GUARD,
        Client::connect_with(connect_string, ConnectOptions::default(), failover),
    )
    .await
    .expect("connect in time")
    .unwrap_or_else(|e| panic!("connect to {connect_string}: {e}"))
}

async fn connect_failover(connect_string: &str) -> Client {
    connect_failover_with(connect_string, Failover::reconnecting()).await
}

/// The index (into `members`) of some running follower.
fn a_follower(e: &Ensemble, leader: usize) -> usize {
    (0..e.members.len())
        .find(|i| *i != leader && e.members[*i].process.is_some() && !e.members[*i].observer)
        .expect("a follower")
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `limit`.
async fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if cond() {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates `path` (persistent, `data`), retrying on connection loss (a reconnecting
/// client mid-failover) until `limit`; NodeExists after a lost reply counts as done
/// only if the node holds `data`.
async fn create_retrying(c: &Client, path: &str, data: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        match tokio::time::timeout(
            Duration::from_secs(10),
            c.create(path, data.as_bytes(), open_acl_unsafe(), 0),
        )
        .await
        {
            Ok(Ok(_)) => return,
            Ok(Err(ClientError::Zk(ErrorCode::NodeExists))) => {
                let (d, _) = c.get_data(path, false).await.expect("read back");
                assert_eq!(
                    d.as_deref(),
                    Some(data.as_bytes()),
                    "{path} exists with other data"
                );
                return;
            }
            Ok(Err(e)) if e.code() == Some(ErrorCode::ConnectionLoss) => {}
            Ok(Err(e)) => panic!("create {path}: {e}"),
            Err(_) => {}
        }
        assert!(
            started.elapsed() < limit,
            "create {path} not acknowledged within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a load sent and what was acknowledged.
#[derive(Default, Clone)]
struct Ledger {
    /// path → data of every create sent (paths are unique, never retried).
    sent: BTreeMap<String, String>,
    /// path → data of every acknowledged create.
    acked: BTreeMap<String, String>,
    /// (sent, acknowledged) times of every acknowledged create.
    acks: Vec<(Instant, Instant)>,
    /// Replies that must not happen (e.g. NodeExists for a path sent once).
    errors: Vec<String>,
    /// Failed attempts (connection loss, timeouts): expected around a failover.
    failures: usize,
}

/// Writers creating unique znodes under `root`, each on its own reconnecting client.
struct Load {
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    clients: Vec<Client>,
}

impl Load {
    async fn start(connect_string: &str, root: &str, writers: usize, seed: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let mut rng = StdRng::seed_from_u64(seed);
        let mut tasks = Vec::new();
        let mut clients = Vec::new();
        for w in 0..writers {
            // Spread the writers over the servers, as ZooKeeper clients shuffle.
            let client = connect_failover_with(
                connect_string,
                Failover {
                    reconnect: true,
                    shuffle_seed: Some(rng.gen()),
                },
            )
            .await;
            clients.push(client.clone());
            let (stop, ledger, root) = (stop.clone(), ledger.clone(), root.to_string());
            let mut rng = StdRng::seed_from_u64(rng.gen());
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let path = format!("{root}/w{w}-{i}");
                    let data =
                        format!("seed={seed} w{w} i{i} {}", "x".repeat(rng.gen_range(0..64)));
                    ledger
                        .lock()
                        .unwrap()
                        .sent
                        .insert(path.clone(), data.clone());
                    let sent = Instant::now();
                    let r = tokio::time::timeout(
                        Duration::from_secs(20),
                        client.create(&path, data.as_bytes(), open_acl_unsafe(), 0),
                    )
                    .await;
                    let acked = {
                        let mut l = ledger.lock().unwrap();
                        match r {
                            Ok(Ok(created)) => {
                                if created != path {
                                    l.errors.push(format!("{path} created as {created}"));
                                }
                                l.acked.insert(path, data);
                                l.acks.push((sent, Instant::now()));
                                true
                            }
                            Ok(Err(e)) if e.code() == Some(ErrorCode::ConnectionLoss) => {
                                l.failures += 1;
                                false
                            }
                            Ok(Err(e)) => {
                                l.errors.push(format!("create {path}: {e}"));
                                false
                            }
                            Err(_) => {
                                l.failures += 1;
                                false
                            }
                        }
                    };
                    if !acked {
                        // Back off a little while the ensemble fails over.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }));
        }
        Load {
            stop,
            ledger,
            tasks,
            clients,
        }
    }

    fn acked(&self) -> usize {
        self.ledger.lock().unwrap().acked.len()
    }

    fn ledger(&self) -> Ledger {
        self.ledger.lock().unwrap().clone()
    }

    async fn stop(self) -> Ledger {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            tokio::time::timeout(GUARD, t)
                .await
                .expect("writers stop")
                .expect("writer did not panic");
        }
        for c in self.clients {
            let _ = c.close().await;
        }
        let l = self.ledger.lock().unwrap().clone();
        assert!(l.errors.is_empty(), "unexpected replies: {:#?}", l.errors);
        l
    }
}

/// Checks on every running server (after a sync) that every acknowledged create under
/// `root` is there with its data, and that whatever is there was sent, with its data.
async fn verify_everywhere(e: &Ensemble, root: &str, ledger: &Ledger) {
    for m in e.members.iter().filter(|m| m.process.is_some()) {
        let c = connect(&m.client_addr().unwrap()).await;
        sync(&c).await;
        let children = c.get_children(root, false).await.expect("children");
        let mut present = BTreeMap::new();
        for child in children {
            let path = format!("{root}/{child}");
            let (data, _) = c.get_data(&path, false).await.expect("getData");
            present.insert(path, String::from_utf8(data.unwrap_or_default()).unwrap());
        }
        for (path, data) in &ledger.acked {
            assert_eq!(
                present.get(path),
                Some(data),
                "server {}: acknowledged create {path} lost or wrong",
                m.id
            );
        }
        for (path, data) in &present {
            assert_eq!(
                ledger.sent.get(path),
                Some(data),
                "server {}: {path} was never sent with this data",
                m.id
            );
        }
        eprintln!(
            "server {}: all {} acknowledged creates present ({} of {} sent)",
            m.id,
            ledger.acked.len(),
            present.len(),
            ledger.sent.len()
        );
        let _ = c.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_replicate_through_followers_and_converge() {
    let _turn = turn("three_voters_replicate_through_followers_and_converge");
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
    c1.create("/eph", b"", open_acl_unsafe(), EPHEMERAL)
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

/// SIGKILL the leader of `voters` voters under a write load from reconnecting clients:
/// a new leader acknowledges writes within 2× the maximum election timeout of the kill,
/// the clients carry on through the other servers, and no acknowledged write is lost.
///
/// Failover time is measured from the kill to the first acknowledgement of a write
/// *sent* after the kill. openraft 0.9 starts an election `leader lease + random
/// timeout` = [750, 1000) ms (+ a 150 ms tick) after the last heartbeat with
/// electionTimeoutMs=500; a candidate that once lost an election to a longer log waits
/// 1 s more (openraft's `smaller_log_timeout`, only reset by its next election). The
/// survivors' fast elections (`leader_connection_lost`) normally win long before.
/// Regression: a survivor whose probe of the dead leader's port came while the killed
/// process's listener was still open saw its connect succeed, took the leader for
/// alive and left its election to the timeout; the other survivor's votes were then
/// refused under its lease, and failover took about 2 s (1 in 10 runs). The probe now
/// also counts an accepted connection that is reset at once as a dead process.
async fn leader_killed_under_load(voters: usize) {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut e = Ensemble::start(voters, 0, &[]).expect("ensemble");
    let leader = e.wait_leader(GUARD).expect("leader");
    let setup = connect_failover(&e.connect_string()).await;
    create_retrying(&setup, "/load", "", GUARD).await;
    let _ = setup.close().await;

    let load = Load::start(&e.connect_string(), "/load", 4, rng.gen()).await;
    let kill_after = rng.gen_range(50..200);
    wait_for(GUARD, "acks before the kill", || load.acked() >= kill_after).await;
    let killed_at = Instant::now();
    e.kill9(leader).expect("kill the leader");
    let acked_at_kill = load.acked();

    // The first write sent after the kill and acknowledged.
    let mut failover = None;
    wait_for(GUARD, "a write acknowledged after the kill", || {
        failover = load
            .ledger()
            .acks
            .iter()
            .filter(|(sent, _)| *sent >= killed_at)
            .map(|(_, acked)| *acked - killed_at)
            .min();
        failover.is_some()
    })
    .await;
    let failover = failover.unwrap();
    let new_leader = e.wait_leader(GUARD).expect("a new leader");
    assert_ne!(new_leader, leader, "the killed server cannot lead");
    eprintln!(
        "{voters} voters: leader {} killed after {acked_at_kill} acks; first write sent after \
         the kill acknowledged {failover:?} after it (bound {:?}); new leader {}",
        e.members[leader].id,
        2 * ELECTION_TIMEOUT_MAX,
        e.members[new_leader].id
    );
    // The clients go on through the other servers.
    let target = load.acked() + 100;
    wait_for(GUARD, "writes go on after the failover", || {
        load.acked() >= target
    })
    .await;
    let ledger = load.stop().await;
    eprintln!(
        "{} creates acknowledged, {} sent, {} failed attempts around the failover",
        ledger.acked.len(),
        ledger.sent.len(),
        ledger.failures
    );
    assert!(
        failover <= 2 * ELECTION_TIMEOUT_MAX,
        "no write acknowledged within 2x the maximum election timeout of the kill: {failover:?}"
    );

    e.restart(leader).expect("restart the old leader");
    e.assert_converged(GUARD).expect("converged");
    verify_everywhere(&e, "/load", &ledger).await;
    e.assert_converged(GUARD).expect("converged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_leader_under_load_three_voters() {
    let _turn = turn("sigkill_leader_under_load_three_voters");
    leader_killed_under_load(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_leader_under_load_five_voters() {
    let _turn = turn("sigkill_leader_under_load_five_voters");
    leader_killed_under_load(5).await;
}

/// A follower killed while the others write past several snapshots (snapCount=50)
/// comes back behind the leader's purged log and catches up through a snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_follower_catches_up_through_a_snapshot() {
    let _turn = turn("killed_follower_catches_up_through_a_snapshot");
    let mut e = Ensemble::start(3, 0, &["snapCount=50"]).expect("ensemble");
    let leader = e.wait_leader(GUARD).expect("leader");
    let f = a_follower(&e, leader);
    let c = connect_failover(&e.connect_string()).await;
    create_retrying(&c, "/cu", "", GUARD).await;
    for i in 0..20 {
        create_retrying(&c, &format!("/cu/a{i}"), "before", GUARD).await;
    }
    e.assert_converged(GUARD)
        .expect("converged before the kill");
    let f_index = e.status_of(&[f]).unwrap()[0].applied.expect("applied");
    e.kill9(f).expect("kill the follower");

    // Write until the leader's log is purged past what the follower has.
    let mut n = 0;
    loop {
        for _ in 0..50 {
            create_retrying(&c, &format!("/cu/b{n}"), "while down", GUARD).await;
            n += 1;
        }
        let leader = e.wait_leader(GUARD).expect("leader");
        let s = e.status_of(&[leader]).unwrap().remove(0);
        if s.purged.is_some_and(|p| p > f_index) {
            eprintln!(
                "follower {} stopped at index {f_index}; leader purged its log up to {:?} \
                 (snapshot {:?}) after {n} more creates",
                e.members[f].id, s.purged, s.snapshot
            );
            break;
        }
        assert!(n < 2000, "the leader never purged its log: {s:?}");
    }

    e.restart(f).expect("restart the follower");
    e.assert_converged(GUARD).expect("the follower catches up");
    let s = e.status_of(&[f]).unwrap().remove(0);
    assert!(
        s.snapshot.is_some_and(|i| i > f_index),
        "the follower holds no snapshot past its old index: {s:?}"
    );
    // The log of its second run shows it installed the leader's snapshot.
    let log = std::fs::read_to_string(e.members[f].log_path()).unwrap();
    let second_run = &log[log.rfind("=== start").expect("a start line in the log")..];
    assert!(
        second_run.contains("installing snapshot"),
        "no snapshot installed by the restarted follower:\n{second_run}"
    );
    let cf = connect(&e.members[f].client_addr().unwrap()).await;
    let children = cf.get_children("/cu", false).await.unwrap();
    assert_eq!(children.len(), 20 + n, "the follower's tree");
    e.assert_converged(GUARD).expect("converged");
}

/// kill -9 every server and start them all again: each comes back with the digest it
/// had at the same index, and writes work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_every_server_keeps_the_state() {
    let _turn = turn("restart_every_server_keeps_the_state");
    let mut e = Ensemble::start(3, 0, &[]).expect("ensemble");
    e.wait_leader(GUARD).expect("leader");
    let c = connect_failover(&e.connect_string()).await;
    create_retrying(&c, "/rs", "", GUARD).await;
    for i in 0..60 {
        let data = if i % 3 == 0 {
            format!("v1-{i}")
        } else {
            "v0".into()
        };
        create_retrying(&c, &format!("/rs/n{i}"), &data, GUARD).await;
    }
    c.close().await.unwrap();
    let index = e.assert_converged(GUARD).expect("converged before");
    let digest = e.status().unwrap()[0].digest.clone();

    for i in 0..e.members.len() {
        e.kill9(i).unwrap();
    }
    for i in 0..e.members.len() {
        e.restart(i).unwrap();
    }
    // Each server, restored from its own disk, is at the index it had (a new leader
    // then adds entries of its own, so look before that, or at the first report).
    let statuses = e.status().unwrap();
    eprintln!(
        "after the restart: {:?}",
        statuses
            .iter()
            .map(|s| (s.id, s.role.as_str(), s.digest_index))
            .collect::<Vec<_>>()
    );
    for s in &statuses {
        assert_eq!(
            (s.digest_index, s.digest.as_str()),
            (index, digest.as_str()),
            "server {} after the restart",
            s.id
        );
    }
    e.wait_leader(GUARD).expect("a leader after the restart");
    let c = connect_failover(&e.connect_string()).await;
    create_retrying(&c, "/rs/after", "after", GUARD).await;
    let (data, _) = c.get_data("/rs/n3", false).await.unwrap();
    assert_eq!(data.as_deref(), Some(&b"v1-3"[..]));
    assert_eq!(c.get_children("/rs", false).await.unwrap().len(), 61);
    let _ = c.close().await;
    let after = e.assert_converged(GUARD).expect("converged after");
    assert!(after > index);
}

/// The leader cut off from both followers (through the peer proxy, both ways): its
/// client's writes are never acknowledged, the majority elects a leader that
/// acknowledges writes, and after healing all three converge without the old leader's
/// writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_leader_acknowledges_nothing() {
    let _turn = turn("partitioned_leader_acknowledges_nothing");
    let e = Ensemble::start_proxied(3, 0, &[]).expect("ensemble");
    let old = e.wait_leader(GUARD).expect("leader");
    let old_id = e.members[old].id;
    let majority: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let setup = connect_failover(&e.connect_string()).await;
    create_retrying(&setup, "/part", "", GUARD).await;
    let _ = setup.close().await;
    e.assert_converged(GUARD).unwrap();

    let cold = connect(&e.members[old].client_addr().unwrap()).await;
    let majority_cs = majority
        .iter()
        .map(|i| e.members[*i].client_addr().unwrap())
        .collect::<Vec<_>>()
        .join(",");
    let cnew = connect_failover(&majority_cs).await;

    e.proxy().isolate(old_id, e.members.iter().map(|m| m.id));
    let cut_at = Instant::now();
    // Writes through the isolated leader, all in flight at once.
    let old_results = Arc::new(Mutex::new(Vec::new()));
    let mut old_tasks = Vec::new();
    for i in 0..5 {
        let (c, results) = (cold.clone(), old_results.clone());
        old_tasks.push(tokio::spawn(async move {
            let r = c
                .create(&format!("/part/old-{i}"), b"old", open_acl_unsafe(), 0)
                .await;
            results
                .lock()
                .unwrap()
                .push((i, r.map_err(|e| e.to_string())));
        }));
    }

    let new_leader = e
        .wait_leader_of(&majority, GUARD)
        .expect("the majority elects a leader");
    eprintln!(
        "leader {old_id} isolated; majority elected {} after {:?}",
        e.members[new_leader].id,
        cut_at.elapsed()
    );
    for i in 0..20 {
        create_retrying(&cnew, &format!("/part/new-{i}"), "new", GUARD).await;
    }
    eprintln!(
        "20 writes acknowledged by the majority {:?} after the cut",
        cut_at.elapsed()
    );
    {
        let r = old_results.lock().unwrap();
        assert!(
            r.iter().all(|(_, r)| r.is_err()),
            "the isolated leader acknowledged a write: {r:?}"
        );
    }
    assert!(e.proxy().refused() > 0, "the proxy refused no connection");

    e.proxy().heal();
    let leader = e.wait_leader(GUARD).expect("one leader after healing");
    assert_ne!(leader, old, "the old leader lost its term");
    // The old leader's pending writes end (failed) once it learns of the new term; any
    // still pending after convergence never will be acknowledged either.
    e.assert_converged(GUARD).expect("converged after healing");
    for t in old_tasks {
        if tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .is_err()
        {
            eprintln!("a write to the old leader is still pending after healing");
        }
    }
    let results = old_results.lock().unwrap().clone();
    eprintln!("writes through the old leader: {results:?}");
    assert!(
        results.iter().all(|(_, r)| r.is_err()),
        "the old leader acknowledged a write: {results:?}"
    );
    for m in &e.members {
        let c = connect(&m.client_addr().unwrap()).await;
        sync(&c).await;
        let mut children = c.get_children("/part", false).await.unwrap();
        children.sort();
        let mut want: Vec<String> = (0..20).map(|i| format!("new-{i}")).collect();
        want.sort();
        assert_eq!(children, want, "server {}", m.id);
        let _ = c.close().await;
    }
    // Writes work through the old leader's server again.
    let c = connect_failover(&e.members[old].client_addr().unwrap()).await;
    create_retrying(&c, "/part/healed", "h", GUARD).await;
    let _ = c.close().await;
    e.assert_converged(GUARD).expect("converged");
}

/// A reconnecting client on a follower keeps its session when that follower is killed:
/// it reconnects elsewhere within its session timeout, its ephemeral survives and its
/// watch (re-armed with setWatches) fires on another client's change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_survives_losing_its_server() {
    let _turn = turn("session_survives_losing_its_server");
    let mut e = Ensemble::start(3, 0, &[]).expect("ensemble");
    let leader = e.wait_leader(GUARD).expect("leader");
    let f = a_follower(&e, leader);
    // The follower first, then the others.
    let mut order = vec![f];
    order.extend((0..3).filter(|i| *i != f));
    let cs = order
        .iter()
        .map(|i| e.members[*i].client_addr().unwrap())
        .collect::<Vec<_>>()
        .join(",");
    let c = connect_failover(&cs).await;
    assert_eq!(c.current_server(), e.members[f].client_addr().unwrap());
    let sid = c.session_id();
    let timeout = Duration::from_millis(c.negotiated_timeout_ms() as u64);
    c.create("/ss-eph", b"mine", open_acl_unsafe(), EPHEMERAL)
        .await
        .unwrap();
    c.create("/ss-data", b"v0", open_acl_unsafe(), 0)
        .await
        .unwrap();
    let mut events = c.take_events().unwrap();
    c.get_data("/ss-data", true).await.unwrap();

    let killed_at = Instant::now();
    e.kill9(f).unwrap();
    let mut state = c.state();
    let took = wait_for(GUARD, "the client reconnects", || {
        c.reconnects() >= 1 && *state.borrow_and_update() == ConnState::Connected
    })
    .await;
    let took = killed_at.elapsed().max(took);
    eprintln!(
        "reconnected to {} {took:?} after the kill (session timeout {timeout:?})",
        c.current_server()
    );
    assert!(
        took < timeout,
        "reconnect took {took:?}, past the session timeout"
    );
    assert_eq!(c.session_id(), sid, "same session");
    assert_ne!(
        c.current_server(),
        e.members[f].client_addr().unwrap_or_default()
    );
    let st = c
        .exists("/ss-eph", false)
        .await
        .unwrap()
        .expect("ephemeral kept");
    assert_eq!(st.ephemeral_owner, sid);

    // Another client changes the watched node: the re-armed watch fires.
    let other = connect(&e.members[leader].client_addr().unwrap()).await;
    other.set_data("/ss-data", b"v1", -1).await.unwrap();
    let ev = tokio::time::timeout(GUARD, events.recv())
        .await
        .expect("the watch fires")
        .expect("event");
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (event::NODE_DATA_CHANGED, "/ss-data")
    );
    // The ephemeral is there on every running server, owned by the session.
    for m in e.members.iter().filter(|m| m.process.is_some()) {
        let x = connect(&m.client_addr().unwrap()).await;
        sync(&x).await;
        let st = x
            .exists("/ss-eph", false)
            .await
            .unwrap()
            .expect("ephemeral");
        assert_eq!(st.ephemeral_owner, sid, "server {}", m.id);
        let _ = x.close().await;
    }
    e.restart(f).unwrap();
    e.assert_converged(GUARD).expect("converged");
    c.close().await.unwrap();
    let _ = other.close().await;
    e.assert_converged(GUARD).expect("converged");
}

/// A client on a follower vanishes without closeSession: the leader expires its session
/// after its timeout and the ephemeral disappears on every server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_expires_a_vanished_session() {
    let _turn = turn("leader_expires_a_vanished_session");
    let e = Ensemble::start(3, 0, &[]).expect("ensemble");
    let leader = e.wait_leader(GUARD).expect("leader");
    let f = a_follower(&e, leader);
    let c = connect_opts(
        &e.members[f].client_addr().unwrap(),
        ConnectOptions {
            timeout_ms: 2000,
            ..ConnectOptions::default()
        },
    )
    .await;
    let timeout = Duration::from_millis(c.negotiated_timeout_ms() as u64);
    let sid = c.session_id();
    c.create("/vanish", b"", open_acl_unsafe(), EPHEMERAL)
        .await
        .unwrap();
    let watchers: Vec<Client> = {
        let mut v = Vec::new();
        for m in &e.members {
            let w = connect(&m.client_addr().unwrap()).await;
            sync(&w).await;
            assert!(w.exists("/vanish", true).await.unwrap().is_some());
            v.push(w);
        }
        v
    };
    let mut events: Vec<_> = watchers.iter().map(|w| w.take_events().unwrap()).collect();
    // Drop the connection without closeSession.
    drop(c);
    let dropped = Instant::now();
    for (i, ev) in events.iter_mut().enumerate() {
        let ev = tokio::time::timeout(GUARD, ev.recv())
            .await
            .expect("the ephemeral goes")
            .expect("event");
        assert_eq!(
            (ev.event_type, ev.path.as_str()),
            (event::NODE_DELETED, "/vanish"),
            "server {}",
            e.members[i].id
        );
    }
    let took = dropped.elapsed();
    eprintln!("session {sid:#x} (timeout {timeout:?}) expired {took:?} after its client vanished");
    assert!(
        took >= timeout / 2,
        "expired after {took:?}, well before its timeout {timeout:?}"
    );
    for w in &watchers {
        assert!(w.exists("/vanish", false).await.unwrap().is_none());
    }
    let s = e.status().unwrap();
    assert!(
        s.iter().all(|s| s.sessions == watchers.len()),
        "only the watchers' sessions remain: {s:?}"
    );
    for w in watchers {
        let _ = w.close().await;
    }
    e.assert_converged(GUARD).expect("converged");
}

/// An observer reports its role, serves reads, forwards writes, and killing it does
/// not affect writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observer_serves_reads_forwards_writes() {
    let _turn = turn("observer_serves_reads_forwards_writes");
    let mut e = Ensemble::start(3, 1, &[]).expect("ensemble");
    let leader = e.wait_leader(GUARD).expect("leader");
    let obs = 3;
    assert!(e.members[obs].observer);
    let obs_id = e.members[obs].id;
    // The first leader adds the observer as a learner.
    wait_for(GUARD, "the observer joins as a learner", || {
        e.status().is_ok_and(|s| {
            s.iter()
                .all(|s| s.learners.iter().any(|(id, _)| *id == obs_id))
                && s.iter().any(|s| s.id == obs_id && s.role == "observer")
        })
    })
    .await;
    let s = e.status().unwrap();
    for s in &s {
        assert!(
            s.voters.iter().all(|(id, _)| *id != obs_id),
            "the observer votes: {s:?}"
        );
        assert_eq!(s.voters.len(), 3);
    }
    let addr: std::net::SocketAddr = e.members[obs].client_addr().unwrap().parse().unwrap();
    let srvr = wazoo_tests::four_letter(addr, "srvr").unwrap();
    assert!(srvr.contains("Mode: observer"), "{srvr}");

    // Writes through the observer, read back there and on the leader.
    let co = connect(&e.members[obs].client_addr().unwrap()).await;
    // Voters first, the observer last: this client writes through the voters.
    let cl = connect_failover(
        &(0..3)
            .map(|i| e.members[i].client_addr().unwrap())
            .collect::<Vec<_>>()
            .join(","),
    )
    .await;
    co.create("/obs", b"via observer", open_acl_unsafe(), 0)
        .await
        .expect("write through the observer");
    assert_eq!(
        co.get_data("/obs", false).await.unwrap().0.as_deref(),
        Some(&b"via observer"[..])
    );
    sync(&cl).await;
    assert!(cl.exists("/obs", false).await.unwrap().is_some());
    // Writes on the leader, read on the observer.
    for i in 0..20 {
        create_retrying(&cl, &format!("/obs/l{i}"), "l", GUARD).await;
    }
    sync(&co).await;
    assert_eq!(co.get_children("/obs", false).await.unwrap().len(), 20);
    e.assert_converged(GUARD)
        .expect("converged with the observer");

    e.kill9(obs).unwrap();
    let started = Instant::now();
    for i in 0..20 {
        // Writes do not wait for the observer: each is acknowledged within 5 s.
        create_retrying(&cl, &format!("/obs/k{i}"), "k", Duration::from_secs(5)).await;
    }
    eprintln!(
        "20 writes with the observer down took {:?} (leader {}, was {})",
        started.elapsed(),
        e.members[e.wait_leader(GUARD).unwrap()].id,
        e.members[leader].id
    );
    e.restart(obs).unwrap();
    let _ = co.close().await;
    let _ = cl.close().await;
    e.assert_converged(GUARD).expect("converged");
}

/// A fourth server joins at runtime (`wazoo admin add-server`), catches up through a
/// snapshot, votes, and is removed again (`remove-server`); writes work throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_remove_a_voter_at_runtime() {
    let _turn = turn("add_and_remove_a_voter_at_runtime");
    let mut e = Ensemble::start(3, 0, &["snapCount=50"]).expect("ensemble");
    e.wait_leader(GUARD).expect("leader");
    let c = connect_failover(&e.connect_string()).await;
    create_retrying(&c, "/m", "", GUARD).await;
    for i in 0..150 {
        create_retrying(&c, &format!("/m/a{i}"), "a", GUARD).await;
    }
    let peers: Vec<String> = e.members.iter().map(|m| m.listen_addr.clone()).collect();
    let peers = peers.join(",");

    // Writes go on during each membership change, from a reconnecting client: every
    // one is acknowledged (retried on connection loss) within 15 s.
    let cw = connect_failover(&e.connect_string()).await;
    let start_writer = |tag: &'static str| {
        let (c, stop) = (cw.clone(), Arc::new(AtomicBool::new(false)));
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    create_retrying(&c, &format!("/m/{tag}{n}"), "w", Duration::from_secs(15))
                        .await;
                    n += 1;
                }
                n
            })
        };
        (stop, task)
    };
    let stop_writer = |(stop, task): (Arc<AtomicBool>, tokio::task::JoinHandle<usize>)| async move {
        stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(GUARD, task)
            .await
            .expect("writer stops")
            .expect("every write during the change was acknowledged")
    };

    let writer = start_writer("add");
    let new = e
        .add_member(&["raft.bootstrap=false"])
        .expect("start server 4");
    let new_id = e.members[new].id;
    let new_addr = e.members[new].listen_addr.clone();
    let s = e.status_of(&[new]).unwrap().remove(0);
    assert!(
        s.voters.is_empty() && s.leader.is_none(),
        "a server waiting to be added: {s:?}"
    );
    let started = Instant::now();
    let out = e
        .admin(&[
            "add-server",
            "--servers",
            &peers,
            "--id",
            &new_id.to_string(),
            "--address",
            &new_addr,
        ])
        .expect("add-server");
    eprintln!("add-server took {:?}: {}", started.elapsed(), out.trim());
    wait_for(GUARD, "every member sees 4 voters", || {
        e.status().is_ok_and(|s| {
            s.len() == 4
                && s.iter()
                    .all(|s| s.voters.iter().any(|(id, _)| *id == new_id) && s.voters.len() == 4)
        })
    })
    .await;
    let n = stop_writer(writer).await;
    eprintln!("{n} writes during add-server, all acknowledged");
    e.wait_leader(GUARD).expect("one leader of four");
    e.assert_converged(GUARD).expect("the new voter converges");
    let log = std::fs::read_to_string(e.members[new].log_path()).unwrap();
    assert!(
        log.contains("installing snapshot"),
        "the new server did not catch up through a snapshot"
    );
    let c4 = connect(&e.members[new].client_addr().unwrap()).await;
    c4.create("/m/via4", b"4", open_acl_unsafe(), 0)
        .await
        .expect("write through the new voter");
    let _ = c4.close().await;

    let writer = start_writer("remove");
    let out = e
        .admin(&[
            "remove-server",
            "--servers",
            &peers,
            "--id",
            &new_id.to_string(),
        ])
        .expect("remove-server");
    eprintln!("remove-server: {}", out.trim());
    let three: Vec<usize> = (0..3).collect();
    wait_for(GUARD, "the others see 3 voters", || {
        e.status_of(&three).is_ok_and(|s| {
            s.len() == 3
                && s.iter()
                    .all(|s| s.voters.len() == 3 && s.voters.iter().all(|(id, _)| *id != new_id))
        })
    })
    .await;
    let n = stop_writer(writer).await;
    eprintln!("{n} writes during remove-server, all acknowledged");
    let _ = cw.close().await;
    e.kill9(new).unwrap();
    create_retrying(&c, "/m/after", "", GUARD).await;
    let _ = c.close().await;
    e.assert_converged(GUARD).expect("converged");
}
