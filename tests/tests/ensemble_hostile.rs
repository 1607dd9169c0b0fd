//! Hostile recipe modules on a 3-server ensemble (issue "Wasm recipe runtime"): calls
//! that trap, exhaust their fuel, allocate past the memory limit, write and then fail,
//! or write too much run on every replica inside apply, interleaved with plain znode
//! writes and well-behaved calls from clients on every server, with a follower killed
//! and restarted midway. Each call gets its typed error on whichever server the client
//! is on, and every replica ends with the same state digest at the same applied index.
//!
//! Needs `WAZOO_BIN` and the recipes (`WAZOO_RECIPES_DIR`, scripts/build-recipes.sh).
//! Prints its seed; `WAZOO_ENSEMBLE_SEED=<seed>` replays the same sequence of calls.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use wazoo_client::{open_acl_unsafe, Client, ClientError, ConnectOptions, Failover};
use wazoo_proto::ErrorCode;
use wazoo_tests::Ensemble;

const GUARD: Duration = Duration::from_secs(120);
const RECIPE: &str = "tk";

fn testkit() -> Vec<u8> {
    let dir = std::env::var_os("WAZOO_RECIPES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/wazoo/recipes")
        });
    let path = dir.join("testkit.wasm");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}): build the recipes with scripts/build-recipes.sh",
            path.display()
        )
    })
}

fn mp<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("encodes")
}

#[derive(Serialize)]
struct Put<'a> {
    path: &'a str,
    #[serde(with = "serde_bytes")]
    data: &'a [u8],
}

#[derive(Serialize)]
struct Alloc {
    bytes: u64,
}

#[derive(Serialize)]
struct Many<'a> {
    prefix: &'a str,
    count: u32,
}

/// One step of the load and what it must answer.
#[derive(Debug, Clone, Copy)]
enum Step {
    Spin,
    Trap,
    Alloc,
    PutThenFail,
    ManyWrites,
    Put,
    Random,
    Plain,
}

impl Step {
    fn pick(rng: &mut StdRng) -> Step {
        match rng.gen_range(0..8) {
            0 => Step::Spin,
            1 => Step::Trap,
            2 => Step::Alloc,
            3 => Step::PutThenFail,
            4 => Step::ManyWrites,
            5 => Step::Put,
            6 => Step::Random,
            _ => Step::Plain,
        }
    }
}

/// Runs `step` for client number `who` (round `n`) and checks its answer. A lost
/// connection (the client's server was killed) is retried on the next server.
async fn run(c: &Client, who: usize, n: usize, step: Step) {
    let deadline = Instant::now() + GUARD;
    loop {
        let r = once(c, who, n, step).await;
        match r {
            Err(ClientError::ConnectionClosed)
            | Err(ClientError::Zk(ErrorCode::ConnectionLoss))
                if Instant::now() < deadline =>
            {
                // The client is reconnecting to another server; the step is repeated.
                // Steps are idempotent: failing calls leave nothing, puts overwrite.
                let mut st = c.state();
                let _ = tokio::time::timeout(Duration::from_secs(5), st.changed()).await;
                continue;
            }
            Err(e) => panic!("client {who} step {n} {step:?}: {e:?}"),
            Ok(()) => return,
        }
    }
}

fn expect_code(
    step: Step,
    r: Result<Vec<u8>, ClientError>,
    codes: &[ErrorCode],
) -> Result<(), ClientError> {
    match r {
        Err(ClientError::Recipe { code, .. }) if codes.contains(&code) => Ok(()),
        Err(e @ ClientError::ConnectionClosed) => Err(e),
        Err(ClientError::Zk(ErrorCode::ConnectionLoss)) => Err(ClientError::ConnectionClosed),
        other => panic!("{step:?}: expected one of {codes:?}, got {other:?}"),
    }
}

async fn once(c: &Client, who: usize, n: usize, step: Step) -> Result<(), ClientError> {
    let call = |f: &'static str, args: Vec<u8>| c.recipe_call(RECIPE, -1, f, args);
    match step {
        Step::Spin => expect_code(
            step,
            call("spin", vec![0xc0]).await,
            &[ErrorCode::RecipeFuelExhausted],
        ),
        Step::Trap => expect_code(
            step,
            call("trap", vec![0xc0]).await,
            &[ErrorCode::RecipeTrap],
        ),
        Step::Alloc => expect_code(
            step,
            call("alloc", mp(&Alloc { bytes: 64 << 20 })).await,
            &[ErrorCode::RecipeLimitExceeded],
        ),
        Step::PutThenFail => {
            let path = format!("/hostile/rolled-back-{who}-{n}");
            expect_code(
                step,
                call(
                    "put_then_fail",
                    mp(&Put {
                        path: &path,
                        data: b"never",
                    }),
                )
                .await,
                &[ErrorCode::RecipeFailed],
            )?;
            // Rolled back: the write is not there, on this replica or any other (the
            // digests are compared at the end).
            assert!(
                c.exists(&path, false).await?.is_none(),
                "{path} survived a failed call"
            );
            Ok(())
        }
        Step::ManyWrites => {
            let prefix = format!("/hostile/many-{who}-{n}");
            expect_code(
                step,
                call(
                    "many_writes",
                    mp(&Many {
                        prefix: &prefix,
                        count: 5000,
                    }),
                )
                .await,
                &[
                    ErrorCode::RecipeLimitExceeded,
                    ErrorCode::RecipeFuelExhausted,
                ],
            )?;
            assert!(
                c.exists(&prefix, false).await?.is_none(),
                "{prefix} survived a failed call"
            );
            Ok(())
        }
        Step::Put => {
            let path = format!("/hostile/put-{who}");
            let data = format!("{n}");
            call(
                "put",
                mp(&Put {
                    path: &path,
                    data: data.as_bytes(),
                }),
            )
            .await?;
            let (got, _) = c.get_data(&path, false).await?;
            assert_eq!(
                got.as_deref(),
                Some(data.as_bytes()),
                "read own recipe write"
            );
            Ok(())
        }
        Step::Random => {
            // Seeded from the call's zxid and the recipe name: the same on every
            // replica, so a recipe that stores it cannot make replicas diverge.
            let reply = call("random", vec![0xc0]).await?;
            let v: Vec<u64> = rmp_serde::from_slice(&reply).expect("four numbers");
            assert_eq!(v.len(), 4);
            Ok(())
        }
        Step::Plain => {
            let path = format!("/hostile/plain-{who}");
            c.set_data(&path, format!("{n}").as_bytes(), -1).await?;
            Ok(())
        }
    }
}

/// Creates `path`, retrying across a lost connection; NodeExists after a lost reply
/// means the earlier attempt went through.
async fn create_retrying(c: &Client, path: &str) {
    let deadline = Instant::now() + GUARD;
    loop {
        match c.create(path, b"", open_acl_unsafe(), 0).await {
            Ok(_) | Err(ClientError::Zk(ErrorCode::NodeExists)) => return,
            Err(ClientError::ConnectionClosed)
            | Err(ClientError::Zk(ErrorCode::ConnectionLoss))
                if Instant::now() < deadline =>
            {
                let mut st = c.state();
                let _ = tokio::time::timeout(Duration::from_secs(5), st.changed()).await;
            }
            Err(e) => panic!("create {path}: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_modules_leave_every_replica_identical() {
    let seed: u64 = std::env::var("WAZOO_ENSEMBLE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("WAZOO_ENSEMBLE_SEED={seed}");
    let started = Instant::now();
    let mut e = Ensemble::start(3, 0, &[]).expect("ensemble");
    let leader = e.wait_leader(GUARD).expect("leader");
    let follower = (leader + 1) % 3;

    // One client per server, each starting at its own server and failing over to the
    // others (as ZooKeeper clients do).
    let addrs: Vec<String> = (0..3)
        .map(|i| e.members[i].client_addr().unwrap())
        .collect();
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut order = addrs.clone();
        order.rotate_left(i);
        let c = tokio::time::timeout(
            GUARD,
            Client::connect_with(
                &order.join(","),
                ConnectOptions::default(),
                Failover::reconnecting(),
            ),
        )
        .await
        .expect("connect in time")
        .expect("connect");
        clients.push(c);
    }
    // Uploaded through a follower: forwarded, validated and compiled on every replica.
    // Compiling takes seconds of CPU on every member at once; on a loaded 2-core
    // machine that can cost an election, and the client then sees a lost connection:
    // it retries after reconnecting, unless the upload went through meanwhile.
    let module = testkit();
    let deadline = Instant::now() + GUARD;
    loop {
        let c = &clients[follower];
        match c.recipe_upload(RECIPE, &module).await {
            Ok(_) => break,
            Err(e @ ClientError::ConnectionClosed)
            | Err(e @ ClientError::Zk(ErrorCode::ConnectionLoss))
                if Instant::now() < deadline =>
            {
                eprintln!("upload: {e}; retrying after the client reconnects");
                let mut st = c.state();
                let _ = tokio::time::timeout(Duration::from_secs(5), st.changed()).await;
                if matches!(c.recipe_list(RECIPE).await, Ok(v) if !v.is_empty()) {
                    break;
                }
            }
            Err(e) => panic!("upload: {e:?}"),
        }
    }
    create_retrying(&clients[0], "/hostile").await;
    for (who, c) in clients.iter().enumerate() {
        create_retrying(c, &format!("/hostile/plain-{who}")).await;
    }

    let mut rng = StdRng::seed_from_u64(seed);
    const ROUNDS: usize = 24;
    for n in 0..ROUNDS {
        if n == ROUNDS / 2 {
            // A follower dies mid-load and comes back: it catches up and must apply the
            // same hostile entries to the same result.
            eprintln!("round {n}: kill -9 server {}", e.members[follower].id);
            e.kill9(follower).expect("kill");
        }
        if n == ROUNDS / 2 + 4 {
            e.restart(follower).expect("restart");
            eprintln!("round {n}: server {} restarted", e.members[follower].id);
        }
        let steps: Vec<Step> = (0..3).map(|_| Step::pick(&mut rng)).collect();
        let mut futs = Vec::new();
        for (who, c) in clients.iter().enumerate() {
            futs.push(run(c, who, n, steps[who]));
        }
        tokio::time::timeout(GUARD, futures::future::join_all(futs))
            .await
            .expect("round in time");
    }
    for c in clients {
        let _ = c.close().await;
    }
    let index = e.assert_converged(GUARD).expect("replicas identical");
    eprintln!(
        "{ROUNDS} rounds of 3 concurrent steps; converged at index {index} in {:?}",
        started.elapsed()
    );
}
