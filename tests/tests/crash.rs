//! Crash test: acknowledged writes survive SIGKILL.
//!
//! `$WAZOO_BIN serve` runs on a temp data dir (with a small `snapCount`, so snapshots
//! and log purges happen during the load too). Each round, several sessions pipeline
//! creates of unique and sequential znodes with known, distinct data; once a seeded,
//! round-dependent number of creates has been acknowledged the server is SIGKILLed in
//! the middle of the load. It is restarted on the same data dir and every create
//! acknowledged so far (this round and earlier ones) must be there with its data.
//! Unacknowledged creates may or may not be there, but whatever is there must be one of
//! the creates that were sent, exactly once, with its data.
//!
//! Needs `WAZOO_BIN` (scripts/test.sh sets it); the test fails without it. Prints its
//! seed; `WAZOO_CRASH_SEED=<seed>` replays the same kill points and data.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Notify;
use wazoo_client::{open_acl_unsafe, Client, ClientError, ConnectOptions};
use wazoo_tests::wazoo_process::{WazooProcess, REFERENCE_ARGS};

const ROOT: &str = "/crash";
const ROUNDS: usize = 3;
const CLIENTS: usize = 4;
/// Requests each session keeps in flight.
const DEPTH: usize = 4;
/// Upper bound on creates per in-flight slot, so the load stops by itself.
const MAX_PER_SLOT: usize = 2_000;
/// Failure guard for anything that waits on the server.
const GUARD: Duration = Duration::from_secs(120);
/// Snapshot (and purge the log) every this many entries, so kills land around them too.
const SNAP_COUNT: &str = "snapCount=250";

/// What the creates of one run sent and what the server acknowledged.
#[derive(Default, Clone)]
struct Ledger {
    /// data → the path it was created at (None for a sequential create, whose final path
    /// only the reply tells). Every data string is unique.
    sent: HashMap<String, Option<String>>,
    /// path → data, for every acknowledged create.
    acked: BTreeMap<String, String>,
    /// Error replies other than a lost connection (there must be none).
    errors: Vec<String>,
}

struct Slot {
    client: Client,
    round: usize,
    client_no: usize,
    slot: usize,
    rng: StdRng,
    ledger: Arc<Mutex<Ledger>>,
    acks: Arc<AtomicUsize>,
    kill_at: usize,
    kill_now: Arc<Notify>,
}

impl Slot {
    async fn run(mut self) {
        for i in 0..MAX_PER_SLOT {
            let sequential = i % 3 == 0;
            let pad = "x".repeat(self.rng.gen_range(0..200));
            let data = format!(
                "round={} client={} slot={} i={i} seq={sequential} {pad}",
                self.round, self.client_no, self.slot
            );
            let path = if sequential {
                format!("{ROOT}/seq-")
            } else {
                format!(
                    "{ROOT}/r{}-c{}-s{}-{i}",
                    self.round, self.client_no, self.slot
                )
            };
            self.ledger
                .lock()
                .unwrap()
                .sent
                .insert(data.clone(), (!sequential).then(|| path.clone()));
            let flags = if sequential { 2 } else { 0 };
            match self
                .client
                .create(&path, data.as_bytes(), open_acl_unsafe(), flags)
                .await
            {
                Ok(created) => {
                    {
                        let mut l = self.ledger.lock().unwrap();
                        if !sequential && created != path {
                            l.errors
                                .push(format!("create {path} acknowledged as {created}"));
                        }
                        if let Some(old) = l.acked.insert(created.clone(), data) {
                            l.errors
                                .push(format!("{created} acknowledged twice (first with {old:?})"));
                        }
                    }
                    if self.acks.fetch_add(1, Ordering::SeqCst) + 1 == self.kill_at {
                        self.kill_now.notify_one();
                    }
                }
                Err(ClientError::Zk(code)) => {
                    self.ledger
                        .lock()
                        .unwrap()
                        .errors
                        .push(format!("create {path}: {code}"));
                    return;
                }
                // The server is gone (killed): this slot is done.
                Err(_) => return,
            }
        }
    }
}

async fn connect(addr: &str) -> Client {
    tokio::time::timeout(GUARD, Client::connect(addr, ConnectOptions::default()))
        .await
        .unwrap_or_else(|_| panic!("connecting to {addr} timed out"))
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"))
}

/// Checks the tree under ROOT against everything acknowledged and sent so far.
async fn verify(addr: &str, ledger: &Ledger, after_round: usize) -> usize {
    let c = connect(addr).await;
    let children = tokio::time::timeout(GUARD, c.get_children(ROOT, false))
        .await
        .expect("getChildren in time")
        .expect("getChildren");
    let mut present: BTreeMap<String, String> = BTreeMap::new();
    for child in children {
        let path = format!("{ROOT}/{child}");
        let (data, _) = tokio::time::timeout(GUARD, c.get_data(&path, false))
            .await
            .expect("getData in time")
            .expect("getData of a listed child");
        let data =
            String::from_utf8(data.unwrap_or_default()).expect("data is what we wrote: UTF-8");
        present.insert(path, data);
    }

    let mut missing = Vec::new();
    for (path, data) in &ledger.acked {
        match present.get(path) {
            Some(d) if d == data => {}
            Some(d) => missing.push(format!(
                "{path}: data {:?}, acknowledged with {:?}",
                trunc(d),
                trunc(data)
            )),
            None => missing.push(format!("{path}: missing")),
        }
    }
    assert!(
        missing.is_empty(),
        "after the kill in round {after_round}, {} of {} acknowledged creates are wrong:\n{}",
        missing.len(),
        ledger.acked.len(),
        missing.join("\n")
    );

    // Everything present was sent, at the path it was sent to, and only once.
    let mut seen = HashMap::new();
    for (path, data) in &present {
        match ledger.sent.get(data) {
            None => panic!(
                "{path} holds data that was never written: {:?}",
                trunc(data)
            ),
            Some(Some(p)) => assert_eq!(p, path, "data sent to {p} found at {path}"),
            Some(None) => assert!(
                path.starts_with(&format!("{ROOT}/seq-")),
                "sequential data at {path}"
            ),
        }
        if let Some(other) = seen.insert(data.clone(), path.clone()) {
            panic!("one create applied twice: at {other} and {path}");
        }
    }
    let _ = c.close().await;
    present.len()
}

fn trunc(s: &str) -> &str {
    &s[..s.len().min(60)]
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    // Fail, not skip, without the binary under test.
    let bin = std::env::var_os("WAZOO_BIN").filter(|b| !b.is_empty()).unwrap_or_else(|| {
        panic!("WAZOO_BIN is not set: build Wazoo (`cargo build -p wazoo`) and set WAZOO_BIN to the `wazoo` binary (scripts/test.sh does)")
    });
    let seed: u64 = match std::env::var("WAZOO_CRASH_SEED") {
        Ok(s) => s
            .parse()
            .expect("WAZOO_CRASH_SEED must be an unsigned integer"),
        Err(_) => rand::random(),
    };
    println!(
        "crash test: seed {seed} (replay with WAZOO_CRASH_SEED={seed}), WAZOO_BIN={}",
        bin.to_string_lossy()
    );
    eprintln!("crash test: seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let dir = tempfile::Builder::new()
        .prefix("wazoo-crash-")
        .tempdir()
        .expect("temp dir");
    let data_dir = dir.path().join("data");
    let mut args: Vec<String> = REFERENCE_ARGS.iter().map(|s| s.to_string()).collect();
    args.extend(["--set".to_string(), SNAP_COUNT.to_string()]);
    let mut server = WazooProcess::start_with(&bin, &data_dir, args).expect("wazoo starts");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let setup = connect(&server.connect_string()).await;
        setup.create(ROOT, b"", open_acl_unsafe(), 0).await.expect("create the root");
        let _ = setup.close().await;

        let ledger = Arc::new(Mutex::new(Ledger::default()));
        // Early, middle and late kills: right after the first acks, and a few hundred or
        // a couple of thousand in (around snapshots with snapCount 250).
        let ranges = [1..40, 100..700, 700..2500];
        for (round, range) in ranges.into_iter().enumerate().take(ROUNDS) {
            let kill_at = rng.gen_range(range);
            let addr = server.connect_string();
            let acks = Arc::new(AtomicUsize::new(0));
            let kill_now = Arc::new(Notify::new());
            let mut tasks = Vec::new();
            for client_no in 0..CLIENTS {
                let client = connect(&addr).await;
                for slot in 0..DEPTH {
                    let s = Slot {
                        client: client.clone(),
                        round,
                        client_no,
                        slot,
                        rng: StdRng::seed_from_u64(rng.gen()),
                        ledger: ledger.clone(),
                        acks: acks.clone(),
                        kill_at,
                        kill_now: kill_now.clone(),
                    };
                    tasks.push(tokio::spawn(s.run()));
                }
            }
            // Should every slot stop early (errors), wake up anyway.
            let all_done = {
                let kill_now = kill_now.clone();
                let handles = std::mem::take(&mut tasks);
                tokio::spawn(async move {
                    for h in handles {
                        let _ = h.await;
                    }
                    kill_now.notify_one();
                })
            };
            tokio::time::timeout(GUARD, kill_now.notified()).await.expect("the load neither reached the kill point nor stopped");
            let acked_at_kill = acks.load(Ordering::SeqCst);
            tokio::task::block_in_place(|| server.kill9()).expect("SIGKILL wazoo");
            tokio::time::timeout(GUARD, all_done).await.expect("writers stop once the server is gone").expect("writers did not panic");
            {
                let l = ledger.lock().unwrap();
                assert!(l.errors.is_empty(), "round {round}: unexpected replies before the kill:\n{}", l.errors.join("\n"));
                assert!(acked_at_kill >= kill_at, "round {round}: the load stopped after {acked_at_kill} acks, before the kill point {kill_at}");
            }
            let acked_total = acks.load(Ordering::SeqCst);

            tokio::task::block_in_place(|| server.restart()).expect("wazoo restarts on the same data dir");
            let l = ledger.lock().unwrap().clone();
            let sent = l.sent.len();
            let present = verify(&server.connect_string(), &l, round).await;
            println!(
                "round {round}: killed after {kill_at} acks (saw {acked_at_kill} at the kill, {acked_total} in all this round); \
                 {} acknowledged so far, all present; {present} of {sent} sent creates present",
                l.acked.len()
            );
        }
    });
    server.kill9().expect("stop wazoo");
}
