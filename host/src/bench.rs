//! `wazoo bench`: a closed-loop load generator that speaks the ZooKeeper client
//! protocol (through `wazoo-client`), so the same run can be pointed at Wazoo or at
//! Apache ZooKeeper.
//!
//! `--clients N` sessions each keep `--depth D` requests in flight (D workers share one
//! pipelined session), for `--warmup-secs W` unmeasured seconds and then `--secs S`
//! measured ones. An operation counts when it both started and completed inside the
//! measured window; its latency (send to reply) goes into the percentile samples.
//!
//! Workloads, all on znodes under a fresh `/wazoo-bench/run-…` node that is removed
//! afterwards:
//! - `write`: setData (version -1) on the client's own znode;
//! - `read`: getData of the client's own znode;
//! - `mixed`: 90% getData, 10% setData, chosen by a seeded RNG (`--seed`);
//! - `create-delete`: each worker creates its own znode, then deletes it (two ops);
//! - `recipe-call`: calls function `noop` of the recipe uploaded from `--recipe-wasm`
//!   (Wazoo only: a recipe call is a log entry, fsynced, run in the state machine, so
//!   its cost is comparable with `write`'s setData).
//!
//! - `lock`, `election`, `barrier`: coordination workloads ([`coord`]): lock handoff
//!   between `--sessions N` contending sessions with the Wazoo lock recipe or the
//!   classic client-side lock (`--lock-impl`), leader failover time, N-party barrier
//!   release latency. They print their own report ([`coord::LockReport`],
//!   [`coord::ElectionReport`], [`coord::BarrierReport`]).
//!
//! The result is ONE JSON line on stdout (see [`BenchReport`]); progress and errors go
//! to stderr.

pub mod coord;

use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wazoo_client::{open_acl_unsafe, Client, ClientError, ConnectOptions};
use wazoo_proto::{
    CreateKind, CreateOp, DeleteRequest, ErrorCode, PathWatchRequest, Request, SetDataRequest,
};

/// Root of every benchmark's znodes.
pub const BENCH_ROOT: &str = "/wazoo-bench";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// setData on per-client znodes.
    Write,
    /// getData on per-client znodes.
    Read,
    /// 90% getData, 10% setData.
    Mixed,
    /// create a znode, then delete it.
    CreateDelete,
    /// recipeCall of `noop` on the module given by `--recipe-wasm` (Wazoo only).
    RecipeCall,
    /// Lock handoff between `--sessions` contenders (`--lock-impl`).
    Lock,
    /// Leader failover: close the leader's session, time the next one's promotion
    /// (Wazoo's election recipe).
    Election,
    /// N-party barrier release latency (Wazoo's barrier recipe).
    Barrier,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Write => "write",
            Workload::Read => "read",
            Workload::Mixed => "mixed",
            Workload::CreateDelete => "create-delete",
            Workload::RecipeCall => "recipe-call",
            Workload::Lock => "lock",
            Workload::Election => "election",
            Workload::Barrier => "barrier",
        }
    }

    /// The coordination workloads of [`coord`], which have their own report.
    pub fn is_coordination(self) -> bool {
        matches!(
            self,
            Workload::Lock | Workload::Election | Workload::Barrier
        )
    }
}

/// `wazoo bench` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Comma-separated `host:port` list; sessions are spread over them round-robin.
    #[arg(long, value_delimiter = ',', required = true)]
    pub servers: Vec<String>,
    #[arg(long, value_enum)]
    pub workload: Workload,
    /// Number of sessions (one TCP connection each): for lock, election and barrier
    /// the contenders, candidates or parties.
    #[arg(long, visible_alias = "sessions", default_value_t = 16)]
    pub clients: usize,
    /// Requests each session keeps in flight (pipelining depth).
    #[arg(long, default_value_t = 8)]
    pub depth: usize,
    /// Measured duration in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub secs: f64,
    /// Size of the data written (and so read back), in bytes.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Unmeasured seconds before the measured window.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,
    /// Seed for the `mixed` read/write choice (random when absent; always reported).
    #[arg(long)]
    pub seed: Option<u64>,
    /// For `recipe-call`: the wasm module to upload as recipe `bench-noop`; it must
    /// answer function `noop` (recipes/noop does).
    #[arg(long)]
    pub recipe_wasm: Option<std::path::PathBuf>,
    /// For `lock`: the Wazoo lock recipe (`recipe`, module `lock` installed from
    /// `recipe.builtinDir`) or the client-side lock (`client-side`: ephemeral
    /// sequential znode + watch on the predecessor, as Curator and kazoo; works on
    /// ZooKeeper and Wazoo).
    #[arg(long, value_enum, default_value_t = coord::LockImpl::Recipe)]
    pub lock_impl: coord::LockImpl,
    /// For `lock` with the recipe: how the holder releases. `drop` drops the guard (a
    /// quiet call: written, not waited for, answered only on failure); `await` calls
    /// `release().await` (a request and its reply). The client-side lock always waits
    /// for its delete.
    #[arg(long, value_enum, default_value_t = coord::LockRelease::Drop)]
    pub lock_release: coord::LockRelease,
    /// For lock, election and barrier: stop after this many measured acquisitions
    /// (lock) or rounds (election, barrier), or at the end of `--secs`, whichever
    /// comes first.
    #[arg(long, visible_alias = "rounds")]
    pub acquisitions: Option<u64>,
}

/// The recipe name `recipe-call` uploads and calls.
pub const BENCH_RECIPE: &str = "bench-noop";

/// The one JSON line `wazoo bench` prints.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub workload: Workload,
    pub servers: String,
    pub clients: usize,
    pub depth: usize,
    pub secs: f64,
    pub warmup_secs: f64,
    pub value_size: usize,
    pub seed: u64,
    /// Operations that started and completed inside the measured window.
    pub ops: u64,
    pub ops_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Replies with a non-zero error code, plus requests lost to a closed connection,
    /// over the whole run (warmup included).
    pub errors: u64,
}

/// Latency samples of the measured window, in microseconds.
#[derive(Debug, Default)]
struct Samples {
    us: Vec<u32>,
    errors: u64,
}

/// The `q`-quantile (0 < q ≤ 1) of sorted samples: the smallest value with at least
/// `q` of the samples at or below it. 0 when there are none.
pub fn quantile(sorted: &[u32], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as u64
}

/// Runs `wazoo bench` and prints its JSON line.
pub async fn run_cli(args: BenchArgs) -> anyhow::Result<()> {
    let line = match args.workload {
        Workload::Lock => serde_json::to_string(&coord::run_lock(&args).await?)?,
        Workload::Election => serde_json::to_string(&coord::run_election(&args).await?)?,
        Workload::Barrier => serde_json::to_string(&coord::run_barrier(&args).await?)?,
        _ => serde_json::to_string(&run(&args).await?)?,
    };
    println!("{line}");
    Ok(())
}

pub(crate) fn check_args(args: &BenchArgs) -> anyhow::Result<()> {
    if args.servers.iter().all(|s| s.trim().is_empty()) {
        bail!("--servers: give at least one host:port");
    }
    if args.clients == 0 || args.depth == 0 {
        bail!("--clients and --depth must be at least 1");
    }
    let durations_ok = args.secs.is_finite()
        && args.secs > 0.0
        && args.warmup_secs.is_finite()
        && args.warmup_secs >= 0.0;
    if !durations_ok {
        bail!("--secs must be positive and --warmup-secs non-negative");
    }
    if args.value_size > 1 << 20 {
        bail!("--value-size over 1 MiB would exceed jute.maxbuffer");
    }
    if args.acquisitions == Some(0) {
        bail!("--acquisitions must be at least 1");
    }
    if args.workload == Workload::Barrier && args.clients > 400 {
        bail!("--sessions: the barrier recipe takes at most 400 parties");
    }
    if args.workload == Workload::Election && args.clients < 2 {
        bail!("--sessions: an election failover needs at least 2 candidates");
    }
    if (args.workload == Workload::RecipeCall) != args.recipe_wasm.is_some() {
        bail!("--recipe-wasm FILE is required by, and only used by, --workload recipe-call");
    }
    Ok(())
}

/// Runs one benchmark and returns its report.
pub async fn run(args: &BenchArgs) -> anyhow::Result<BenchReport> {
    check_args(args)?;
    if args.workload.is_coordination() {
        bail!(
            "--workload {} has its own report: use bench::coord",
            args.workload.name()
        );
    }
    let servers: Vec<String> = args
        .servers
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let seed = args.seed.unwrap_or_else(rand::random);
    eprintln!(
        "wazoo bench: {} on {} with {} clients x depth {}, {}s (+{}s warmup), seed {seed}",
        args.workload.name(),
        servers.join(","),
        args.clients,
        args.depth,
        args.secs,
        args.warmup_secs
    );

    // Set-up session: the run's directory and each client's znode.
    let admin = Client::connect(&servers[0], ConnectOptions::default())
        .await
        .with_context(|| format!("connecting to {}", servers[0]))?;
    ensure_node(&admin, BENCH_ROOT).await?;
    let run_dir = admin
        .create(
            &format!("{BENCH_ROOT}/run-"),
            b"",
            open_acl_unsafe(),
            wazoo_proto::consts::CreateMode::PersistentSequential.flags(),
        )
        .await
        .context("creating the run's znode")?;
    if let Some(path) = &args.recipe_wasm {
        let wasm = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        admin
            .recipe_upload(BENCH_RECIPE, &wasm)
            .await
            .context("uploading the benchmark recipe")?;
    }
    let value = vec![b'v'; args.value_size];
    for c in 0..args.clients {
        admin
            .create(&client_node(&run_dir, c), &value, open_acl_unsafe(), 0)
            .await
            .context("creating a client's znode")?;
    }

    let mut sessions = Vec::with_capacity(args.clients);
    for c in 0..args.clients {
        let addr = &servers[c % servers.len()];
        let client = Client::connect(addr, ConnectOptions::default())
            .await
            .with_context(|| format!("connecting client {c} to {addr}"))?;
        sessions.push(client);
    }

    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + Duration::from_secs_f64(args.warmup_secs);
    let end = measure_from + Duration::from_secs_f64(args.secs);
    let value = Arc::new(value);
    let mut tasks = Vec::with_capacity(args.clients * args.depth);
    for (c, client) in sessions.iter().enumerate() {
        for slot in 0..args.depth {
            let worker = Worker {
                client: client.clone(),
                workload: args.workload,
                node: client_node(&run_dir, c),
                scratch: format!("{run_dir}/cd-{c}-{slot}"),
                value: value.clone(),
                rng: rand::rngs::StdRng::seed_from_u64(seed ^ ((c as u64) << 32 | slot as u64)),
                start,
                measure_from,
                end,
            };
            tasks.push(tokio::spawn(worker.run()));
        }
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let s = t.await.context("a benchmark worker panicked")?;
        all.extend_from_slice(&s.us);
        errors += s.errors;
    }
    all.sort_unstable();

    for client in sessions {
        let _ = client.close().await;
    }
    if let Err(e) = remove_tree(&admin, &run_dir).await {
        eprintln!("wazoo bench: could not remove {run_dir}: {e}");
    }
    let _ = admin.close().await;

    let ops = all.len() as u64;
    Ok(BenchReport {
        workload: args.workload,
        servers: servers.join(","),
        clients: args.clients,
        depth: args.depth,
        secs: args.secs,
        warmup_secs: args.warmup_secs,
        value_size: args.value_size,
        seed,
        ops,
        ops_per_sec: (ops as f64 / args.secs * 10.0).round() / 10.0,
        p50_us: quantile(&all, 0.50),
        p99_us: quantile(&all, 0.99),
        p999_us: quantile(&all, 0.999),
        max_us: all.last().copied().unwrap_or(0) as u64,
        errors,
    })
}

pub(crate) fn client_node(run_dir: &str, c: usize) -> String {
    format!("{run_dir}/c-{c}")
}

pub(crate) async fn ensure_node(client: &Client, path: &str) -> anyhow::Result<()> {
    match client.create(path, b"", open_acl_unsafe(), 0).await {
        Ok(_) => Ok(()),
        Err(ClientError::Zk(ErrorCode::NodeExists)) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {path}")),
    }
}

/// Deletes `dir` and its children (the benchmark never nests deeper).
pub(crate) async fn remove_tree(client: &Client, dir: &str) -> Result<(), ClientError> {
    for child in client.get_children(dir, false).await? {
        match client.delete(&format!("{dir}/{child}"), -1).await {
            Ok(()) | Err(ClientError::Zk(ErrorCode::NoNode)) => {}
            Err(e) => return Err(e),
        }
    }
    client.delete(dir, -1).await
}

/// One of a session's `depth` in-flight slots.
struct Worker {
    client: Client,
    workload: Workload,
    node: String,
    scratch: String,
    value: Arc<Vec<u8>>,
    rng: rand::rngs::StdRng,
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

impl Worker {
    fn set_data(&self) -> Request {
        Request::SetData(SetDataRequest {
            path: self.node.clone(),
            data: Some(self.value.to_vec()),
            version: -1,
        })
    }

    fn get_data(&self) -> Request {
        Request::GetData(PathWatchRequest {
            path: self.node.clone(),
            watch: false,
        })
    }

    async fn run(mut self) -> Samples {
        let mut s = Samples::default();
        tokio::time::sleep_until(self.start.into()).await;
        let mut created = false;
        loop {
            if Instant::now() >= self.end {
                break;
            }
            let req = match self.workload {
                Workload::Lock | Workload::Election | Workload::Barrier => {
                    unreachable!("coordination workloads do not run here")
                }
                Workload::Write => self.set_data(),
                Workload::Read => self.get_data(),
                Workload::Mixed => {
                    if self.rng.gen_range(0..10) == 0 {
                        self.set_data()
                    } else {
                        self.get_data()
                    }
                }
                Workload::CreateDelete if created => Request::Delete(DeleteRequest {
                    path: self.scratch.clone(),
                    version: -1,
                }),
                Workload::RecipeCall => Request::RecipeCall {
                    name: BENCH_RECIPE.into(),
                    version: -1,
                    function: "noop".into(),
                    args: Vec::new(),
                    flags: 0,
                },
                Workload::CreateDelete => Request::Create(CreateOp {
                    kind: CreateKind::Create,
                    path: self.scratch.clone(),
                    data: Some(self.value.to_vec()),
                    acl: open_acl_unsafe(),
                    flags: 0,
                    ttl: -1,
                }),
            };
            let is_create = matches!(req, Request::Create(_));
            let sent = Instant::now();
            let reply = self.client.request(req).await;
            let done = Instant::now();
            match reply {
                Ok((_, Ok(_))) => {
                    if self.workload == Workload::CreateDelete {
                        created = is_create;
                    }
                }
                Ok((_, Err(code))) => {
                    s.errors += 1;
                    // Keep create-delete going after a NodeExists/NoNode surprise.
                    if self.workload == Workload::CreateDelete {
                        created = is_create && code == ErrorCode::NodeExists;
                    }
                    continue;
                }
                Err(e) => {
                    // The connection is gone: this slot is done.
                    s.errors += 1;
                    eprintln!("wazoo bench: session lost: {e}");
                    break;
                }
            }
            if sent >= self.measure_from && done <= self.end {
                s.us.push(done.duration_since(sent).as_micros().min(u32::MAX as u128) as u32);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_sorted_samples() {
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(quantile(&v, 0.5), 500);
        assert_eq!(quantile(&v, 0.99), 990);
        assert_eq!(quantile(&v, 0.999), 999);
        assert_eq!(quantile(&v, 1.0), 1000);
        assert_eq!(quantile(&[7], 0.999), 7);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn rejects_nonsense_arguments() {
        let base = BenchArgs {
            servers: vec!["127.0.0.1:1".into()],
            workload: Workload::Write,
            clients: 1,
            depth: 1,
            secs: 1.0,
            value_size: 10,
            warmup_secs: 0.0,
            seed: Some(1),
            recipe_wasm: None,
            lock_impl: coord::LockImpl::Recipe,
            lock_release: coord::LockRelease::Drop,
            acquisitions: None,
        };
        assert!(check_args(&base).is_ok());
        let bad = [
            BenchArgs {
                clients: 0,
                ..base.clone()
            },
            BenchArgs {
                depth: 0,
                ..base.clone()
            },
            BenchArgs {
                secs: 0.0,
                ..base.clone()
            },
            BenchArgs {
                secs: f64::NAN,
                ..base.clone()
            },
            BenchArgs {
                warmup_secs: -1.0,
                ..base.clone()
            },
            BenchArgs {
                servers: vec![" ".into()],
                ..base.clone()
            },
            BenchArgs {
                value_size: 2 << 20,
                ..base.clone()
            },
        ];
        for args in bad {
            assert!(check_args(&args).is_err(), "{args:?}");
        }
    }

    /// Every workload runs against an in-process server, measures something, makes no
    /// errors, and leaves no znodes behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_workload_runs_against_a_server() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config {
            client_port: 0,
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let server = crate::server::Server::start(config).await.unwrap();
        let addr = server.client_addr.to_string();
        for workload in [
            Workload::Write,
            Workload::Read,
            Workload::Mixed,
            Workload::CreateDelete,
            Workload::RecipeCall,
        ] {
            // recipe-call runs the real no-op recipe, built by scripts/build-recipes.sh.
            let recipe_wasm = (workload == Workload::RecipeCall).then(|| {
                let dir = std::env::var_os("WAZOO_RECIPES_DIR")
                    .map(std::path::PathBuf::from)
                    .unwrap_or_else(|| {
                        std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                            .join(".cache/wazoo/recipes")
                    });
                let f = dir.join("noop.wasm");
                assert!(
                    f.exists(),
                    "{} is missing: run scripts/build-recipes.sh",
                    f.display()
                );
                f
            });
            let args = BenchArgs {
                servers: vec![addr.clone()],
                workload,
                clients: 2,
                depth: 4,
                secs: 0.5,
                value_size: 32,
                warmup_secs: 0.1,
                seed: Some(42),
                recipe_wasm,
                lock_impl: coord::LockImpl::Recipe,
                lock_release: coord::LockRelease::Drop,
                acquisitions: None,
            };
            let r = run(&args).await.unwrap();
            eprintln!("{}", serde_json::to_string(&r).unwrap());
            assert!(r.ops > 0, "{workload:?}: no operation measured: {r:?}");
            assert_eq!(r.errors, 0, "{workload:?}: {r:?}");
            assert!(
                r.p50_us <= r.p99_us && r.p99_us <= r.p999_us && r.p999_us <= r.max_us,
                "{r:?}"
            );
            let json = serde_json::to_value(&r).unwrap();
            assert_eq!(json["workload"], workload.name());
        }
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
}
