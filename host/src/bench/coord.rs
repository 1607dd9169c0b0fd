//! Coordination workloads of `wazoo bench`: `lock`, `election` and `barrier`.
//!
//! **lock** (`--lock-impl recipe|client-side`, `--sessions N`): N sessions contend for
//! one exclusive lock in a closed loop: acquire, a tiny critical section, release,
//! acquire again. `recipe` is the Wazoo lock recipe through the typed wrapper
//! (`client.lock(name).acquire()`: one recipe call, answered once when granted, then
//! the guard dropped: a quiet release call, or with `--lock-release await`
//! `release().await`); `client-side` is the classic recipe of Curator's `InterProcessMutex` and
//! kazoo's `Lock`, on plain znodes, so it runs against ZooKeeper and Wazoo alike:
//! create an ephemeral-sequential `lock-` node, getChildren, and if ours is not the
//! lowest, getData the predecessor with a watch, wait for its deletion and look again;
//! release = delete our node.
//!
//! The critical section checks mutual exclusion in-process: a shared "holder" slot must
//! be empty when a session enters (it then yields to the scheduler before leaving), and
//! the grant's fencing token (the recipe's token; the client-side node's sequence
//! number) must exceed every earlier grant's. Each failed check is a violation.
//!
//! Reported per measured window (grants whose time falls in it): acquisitions/s, wait
//! p50/p99 (acquire called → granted), client↔server messages per acquisition (the
//! protocol frames of all contending sessions in the window, both directions:
//! requests, replies, watch events and recipe notifications, a parked call's
//! completion included; pings and the connect handshake are not counted, see
//! `wazoo_client::FrameCounts`) and znodes created per acquisition (from the
//! servers' own `cversion`/`numChildren` of the parents the lock creates under: a
//! parent's cversion counts child creates plus deletes, so creates = (Δcversion +
//! ΔnumChildren) / 2; for the recipe: `/wazoo/recipes/lock`, its `.sessions`, the
//! lock's node, its `holders` and `queue`, and the server's own records of the lock
//! recipe's parked calls, `/wazoo/parked/lock`: every znode a waiting acquire costs).
//!
//! **election** (`--sessions N` candidates of Wazoo's election recipe): the leader's
//! session is closed (closeSession), and the time until the next candidate's
//! `elected` notification arrives is one failover; the closed candidate is replaced
//! by a fresh session joining at the back, and the next round begins. Violations: a
//! promotion of anybody but the next candidate in join order, or an epoch not above
//! the previous one.
//!
//! **barrier** (`--sessions N` parties of Wazoo's N-party barrier, `enter`): all
//! parties enter repeatedly; a round's release latency is from the last `enter` sent
//! to the last party's release received. Violations: a round released to a party
//! before its last member entered, or to a number of parties other than N.

use super::{check_args, ensure_node, quantile, remove_tree, BenchArgs, Workload, BENCH_ROOT};
use anyhow::{bail, Context};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::Notify;
use wazoo_client::proto::consts::{event, CreateMode};
use wazoo_client::{
    builtin, open_acl_unsafe, Client, ClientError, ConnectOptions, FrameCounts, WatchedEvent,
};
use wazoo_proto::ErrorCode;

/// Which lock `--workload lock` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockImpl {
    /// The Wazoo lock recipe (server-side, parked acquire calls).
    Recipe,
    /// Ephemeral-sequential znode + predecessor watch (Curator, kazoo).
    ClientSide,
}

/// How the recipe lock's holder releases (`--lock-release`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockRelease {
    /// Drop the guard: a quiet release call, not waited for (one frame).
    Drop,
    /// `guard.release().await`: a request and its reply.
    Await,
}

impl LockImpl {
    pub fn name(self) -> &'static str {
        match self {
            LockImpl::Recipe => "recipe",
            LockImpl::ClientSide => "client-side",
        }
    }
}

/// `wazoo bench --workload lock`'s JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct LockReport {
    pub workload: Workload,
    pub lock_impl: LockImpl,
    /// For the recipe: how the holder released.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_release: Option<LockRelease>,
    pub servers: String,
    /// Contending sessions.
    pub sessions: usize,
    /// The measured window, in seconds (shorter than `--secs` when `--acquisitions`
    /// ended it).
    pub secs: f64,
    pub warmup_secs: f64,
    /// Grants inside the measured window.
    pub acquisitions: u64,
    pub acquisitions_per_sec: f64,
    /// Acquire called → granted, in milliseconds.
    pub wait_p50_ms: f64,
    pub wait_p99_ms: f64,
    pub wait_max_ms: f64,
    /// Protocol frames (sent + received, pings excluded) per acquisition.
    pub msgs_per_acq: f64,
    pub msgs_sent_per_acq: f64,
    pub msgs_received_per_acq: f64,
    /// Znodes the server created per acquisition (by anyone: client or recipe).
    pub znodes_per_acq: f64,
    /// Failed mutual-exclusion or fencing-token checks (must be 0).
    pub violations: u64,
    /// Failed requests, lost sessions, and workers that had to be stopped.
    pub errors: u64,
}

/// `wazoo bench --workload election`'s JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct ElectionReport {
    pub workload: Workload,
    pub servers: String,
    /// Candidates (kept constant: a closed leader is replaced at the back).
    pub sessions: usize,
    pub secs: f64,
    pub warmup_secs: f64,
    /// Failovers measured.
    pub rounds: u64,
    /// Leader's closeSession sent → next candidate's `elected` received, ms.
    pub failover_p50_ms: f64,
    pub failover_p99_ms: f64,
    pub failover_max_ms: f64,
    /// Wrong successor or non-increasing epoch (must be 0).
    pub violations: u64,
    pub errors: u64,
}

/// `wazoo bench --workload barrier`'s JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct BarrierReport {
    pub workload: Workload,
    pub servers: String,
    /// Parties of the barrier (one session each).
    pub sessions: usize,
    pub secs: f64,
    pub warmup_secs: f64,
    /// Releases measured.
    pub rounds: u64,
    pub rounds_per_sec: f64,
    /// Last `enter` sent → last party released, ms.
    pub release_p50_ms: f64,
    pub release_p99_ms: f64,
    pub release_max_ms: f64,
    /// Protocol frames (sent + received, pings excluded) per release, all parties.
    pub msgs_per_round: f64,
    /// Early or partial releases (must be 0).
    pub violations: u64,
    pub errors: u64,
}

fn ms(us: u64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

fn round2(x: f64) -> f64 {
    if x.is_finite() {
        (x * 100.0).round() / 100.0
    } else {
        0.0
    }
}

fn servers_of(args: &BenchArgs) -> Vec<String> {
    args.servers
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

async fn connect(addr: &str) -> anyhow::Result<Client> {
    Client::connect(addr, ConnectOptions::default())
        .await
        .with_context(|| format!("connecting to {addr}"))
}

async fn connect_all(servers: &[String], n: usize) -> anyhow::Result<Vec<Client>> {
    let mut v = Vec::with_capacity(n);
    for c in 0..n {
        v.push(connect(&servers[c % servers.len()]).await?);
    }
    Ok(v)
}

/// Fails early, with a hint, when the built-in recipe `module` is not installed.
async fn require_recipe(admin: &Client, module: &str) -> anyhow::Result<()> {
    let installed = admin
        .recipe_list(module)
        .await
        .with_context(|| format!("listing recipe {module} (is the server Wazoo?)"))?;
    if !installed.iter().any(|r| r.name == module) {
        bail!(
            "recipe {module} is not installed: start the server with \
             --set recipe.builtinDir=DIR (scripts/build-recipes.sh builds DIR)"
        );
    }
    Ok(())
}

fn sum_frames(sessions: &[Client]) -> FrameCounts {
    sessions.iter().fold(FrameCounts::default(), |a, c| {
        let f = c.frame_counts();
        FrameCounts {
            sent: a.sent + f.sent,
            received: a.received + f.received,
        }
    })
}

/// The measured window, shared by the workers.
struct Window {
    start: Instant,
    measure_from: Instant,
    end: Instant,
    limit: Option<u64>,
    measured: AtomicU64,
    stopped: AtomicBool,
    stop_at: Mutex<Option<Instant>>,
    stop_notify: Notify,
}

impl Window {
    fn new(args: &BenchArgs) -> Window {
        let start = Instant::now() + Duration::from_millis(50);
        let measure_from = start + Duration::from_secs_f64(args.warmup_secs);
        Window {
            start,
            measure_from,
            end: measure_from + Duration::from_secs_f64(args.secs),
            limit: args.acquisitions,
            measured: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            stop_at: Mutex::new(None),
            stop_notify: Notify::new(),
        }
    }

    /// Whether an event at `at` counts; the one reaching `--acquisitions` ends the
    /// window.
    fn record(&self, at: Instant) -> bool {
        if at < self.measure_from || at >= self.end || self.stopped.load(Ordering::SeqCst) {
            return false;
        }
        let n = self.measured.fetch_add(1, Ordering::SeqCst) + 1;
        match self.limit {
            Some(l) if n > l => false,
            Some(l) if n == l => {
                *self.stop_at.lock().unwrap() = Some(at);
                self.stopped.store(true, Ordering::SeqCst);
                self.stop_notify.notify_one();
                true
            }
            _ => true,
        }
    }

    fn done(&self) -> bool {
        self.stopped.load(Ordering::SeqCst) || Instant::now() >= self.end
    }

    /// Resolves at the end of the window (its time, or the last counted event).
    async fn wait_end(&self) {
        tokio::select! {
            _ = tokio::time::sleep_until(self.end.into()) => {}
            _ = self.stop_notify.notified() => {}
        }
    }

    fn measured_secs(&self) -> f64 {
        let end = self.stop_at.lock().unwrap().unwrap_or(self.end);
        end.duration_since(self.measure_from).as_secs_f64()
    }
}

/// A parent's child-create counter, as the server reports it.
#[derive(Debug, Clone, Copy)]
struct ParentStat {
    czxid: i64,
    cversion: i64,
    children: i64,
}

async fn parent_stats(admin: &Client, parents: &[String]) -> Vec<Option<ParentStat>> {
    let mut v = Vec::with_capacity(parents.len());
    for p in parents {
        v.push(match admin.exists(p, false).await {
            Ok(Some(s)) => Some(ParentStat {
                czxid: s.czxid,
                cversion: s.cversion as i64,
                children: s.num_children as i64,
            }),
            _ => None,
        });
    }
    v
}

/// Children created between two samples of the same parents. A reported cversion
/// counts child creates plus deletes, so creates = (Δcversion + Δchildren) / 2. A
/// parent re-created in between counts only the creates since (a lower bound).
fn creates_between(a: &[Option<ParentStat>], b: &[Option<ParentStat>]) -> u64 {
    a.iter()
        .zip(b)
        .map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) if a.czxid == b.czxid => {
                ((b.cversion - a.cversion) + (b.children - a.children)).max(0) / 2
            }
            (_, Some(b)) => (b.cversion + b.children).max(0) / 2,
            (_, None) => 0,
        })
        .map(|n| n as u64)
        .sum()
}

// ---------------------------------------------------------------------------
// lock

struct LockCtx {
    win: Window,
    holder: AtomicUsize,
    last_token: AtomicI64,
    violations: AtomicU64,
    errors: AtomicU64,
}

/// A grant held by a worker.
enum Held {
    Recipe(wazoo_client::LockGuard),
    ClientSide(String),
}

/// The client-side lock's acquire: returns our node's path and sequence number.
async fn client_side_acquire(
    client: &Client,
    events: &mut UnboundedReceiver<WatchedEvent>,
    dir: &str,
) -> Result<(String, i64), ClientError> {
    let path = client
        .create(
            &format!("{dir}/lock-"),
            b"",
            open_acl_unsafe(),
            CreateMode::EphemeralSequential.flags(),
        )
        .await?;
    let me = path.rsplit('/').next().unwrap_or_default().to_string();
    let seq = sequence_of(&me);
    loop {
        let mut children = client.get_children(dir, false).await?;
        children.sort_by_key(|c| sequence_of(c));
        let Some(pos) = children.iter().position(|c| *c == me) else {
            // Our ephemeral is gone: the session ended under us.
            return Err(ClientError::Zk(ErrorCode::NoNode));
        };
        if pos == 0 {
            return Ok((path, seq));
        }
        let pred = format!("{dir}/{}", children[pos - 1]);
        match client.get_data(&pred, true).await {
            Ok(_) => loop {
                let Some(ev) = events.recv().await else {
                    return Err(ClientError::ConnectionClosed);
                };
                if ev.path == pred && ev.event_type != event::NONE {
                    break;
                }
            },
            // Gone already: look again.
            Err(ClientError::Zk(ErrorCode::NoNode)) => {}
            Err(e) => return Err(e),
        }
    }
}

fn sequence_of(name: &str) -> i64 {
    name.rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(i64::MAX)
}

async fn lock_worker(
    ctx: Arc<LockCtx>,
    idx: usize,
    client: Client,
    imp: LockImpl,
    release: LockRelease,
    name: String,
    mut events: Option<UnboundedReceiver<WatchedEvent>>,
) -> Vec<u32> {
    let mut waits = Vec::new();
    let mut failed = false;
    let lock = client.lock(&name);
    let me = idx + 1;
    tokio::time::sleep_until(ctx.win.start.into()).await;
    while !ctx.win.done() {
        let t0 = Instant::now();
        let grant = match (imp, events.as_mut()) {
            (LockImpl::Recipe, _) => lock
                .acquire()
                .await
                .map(|g| (g.fencing_token(), Held::Recipe(g)))
                .map_err(|e| e.to_string()),
            (LockImpl::ClientSide, Some(ev)) => client_side_acquire(&client, ev, &name)
                .await
                .map(|(path, seq)| (seq, Held::ClientSide(path)))
                .map_err(|e| e.to_string()),
            (LockImpl::ClientSide, None) => Err("no watch events".to_string()),
        };
        let granted = Instant::now();
        let (token, held) = match grant {
            Ok(g) => g,
            Err(e) => {
                eprintln!("wazoo bench: session {idx}: acquire failed: {e}");
                ctx.errors.fetch_add(1, Ordering::Relaxed);
                failed = true;
                break;
            }
        };
        // The critical section.
        if ctx
            .holder
            .compare_exchange(0, me, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            ctx.violations.fetch_add(1, Ordering::Relaxed);
        }
        if ctx.last_token.fetch_max(token, Ordering::SeqCst) >= token {
            ctx.violations.fetch_add(1, Ordering::Relaxed);
        }
        tokio::task::yield_now().await;
        if ctx
            .holder
            .compare_exchange(me, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            ctx.violations.fetch_add(1, Ordering::Relaxed);
        }
        if ctx.win.record(granted) {
            waits.push(granted.duration_since(t0).as_micros().min(u32::MAX as u128) as u32);
        }
        let released = match held {
            Held::Recipe(g) if release == LockRelease::Await => {
                g.release().await.map_err(|e| e.to_string())
            }
            // Written now; a failure would show as the next acquire failing.
            Held::Recipe(g) => {
                drop(g);
                Ok(())
            }
            Held::ClientSide(path) => client.delete(&path, -1).await.map_err(|e| e.to_string()),
        };
        if let Err(e) = released {
            eprintln!("wazoo bench: session {idx}: release failed: {e}");
            ctx.errors.fetch_add(1, Ordering::Relaxed);
            failed = true;
            break;
        }
    }
    if failed && !client.is_closed() {
        // Let the others go on: our ephemerals and queued calls go with the session.
        let _ = client.clone().close().await;
    }
    waits
}

/// Runs `--workload lock`.
pub async fn run_lock(args: &BenchArgs) -> anyhow::Result<LockReport> {
    check_args(args)?;
    let servers = servers_of(args);
    let n = args.clients;
    let imp = args.lock_impl;
    eprintln!(
        "wazoo bench: lock ({}) on {} with {n} sessions, {}s (+{}s warmup)",
        imp.name(),
        servers.join(","),
        args.secs,
        args.warmup_secs
    );
    let admin = connect(&servers[0]).await?;
    let tag = format!("{:012x}", rand::random::<u64>() >> 16);
    let mut run_dir = None;
    let (name, parents) = match imp {
        LockImpl::Recipe => {
            require_recipe(&admin, builtin::LOCK).await?;
            let name = format!("bench-{tag}");
            let base = "/wazoo/recipes/lock";
            let parents = vec![
                base.to_string(),
                format!("{base}/.sessions"),
                format!("{base}/{name}"),
                format!("{base}/{name}/holders"),
                format!("{base}/{name}/queue"),
                format!("/wazoo/parked/{}", builtin::LOCK),
            ];
            (name, parents)
        }
        LockImpl::ClientSide => {
            ensure_node(&admin, BENCH_ROOT).await?;
            let dir = format!("{BENCH_ROOT}/lock-{tag}");
            admin
                .create(&dir, b"", open_acl_unsafe(), 0)
                .await
                .context("creating the lock's znode")?;
            run_dir = Some(dir.clone());
            (dir.clone(), vec![dir])
        }
    };

    let mut sessions = connect_all(&servers, n).await?;
    let ctx = Arc::new(LockCtx {
        win: Window::new(args),
        holder: AtomicUsize::new(0),
        last_token: AtomicI64::new(i64::MIN),
        violations: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let mut tasks = Vec::with_capacity(n);
    for (idx, client) in sessions.iter_mut().enumerate() {
        let events = match imp {
            LockImpl::ClientSide => client.take_events(),
            LockImpl::Recipe => None,
        };
        tasks.push(tokio::spawn(lock_worker(
            ctx.clone(),
            idx,
            client.clone(),
            imp,
            args.lock_release,
            name.clone(),
            events,
        )));
    }

    // Counters at the start and the end of the measured window.
    tokio::time::sleep_until(ctx.win.measure_from.into()).await;
    let frames_a = sum_frames(&sessions);
    let stats_a = parent_stats(&admin, &parents).await;
    ctx.win.wait_end().await;
    let frames_b = sum_frames(&sessions);
    let stats_b = parent_stats(&admin, &parents).await;

    let deadline = tokio::time::Instant::from_std(Instant::now() + Duration::from_secs(60));
    let mut waits = Vec::new();
    for t in tasks {
        let abort = t.abort_handle();
        match tokio::time::timeout_at(deadline, t).await {
            Ok(Ok(w)) => waits.extend_from_slice(&w),
            Ok(Err(e)) => bail!("a lock worker failed: {e}"),
            Err(_) => {
                abort.abort();
                ctx.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    waits.sort_unstable();
    for c in sessions {
        let _ = c.close().await;
    }
    if let Some(dir) = run_dir {
        if let Err(e) = remove_tree(&admin, &dir).await {
            eprintln!("wazoo bench: could not remove {dir}: {e}");
        }
    }
    let _ = admin.close().await;

    let acq = waits.len() as u64;
    let per = |x: u64| round2(x as f64 / acq as f64);
    let secs = ctx.win.measured_secs();
    Ok(LockReport {
        workload: Workload::Lock,
        lock_impl: imp,
        lock_release: (imp == LockImpl::Recipe).then_some(args.lock_release),
        servers: servers.join(","),
        sessions: n,
        secs: round2(secs),
        warmup_secs: args.warmup_secs,
        acquisitions: acq,
        acquisitions_per_sec: (acq as f64 / secs * 10.0).round() / 10.0,
        wait_p50_ms: ms(quantile(&waits, 0.50)),
        wait_p99_ms: ms(quantile(&waits, 0.99)),
        wait_max_ms: ms(waits.last().copied().unwrap_or(0) as u64),
        msgs_per_acq: per(frames_b.total() - frames_a.total()),
        msgs_sent_per_acq: per(frames_b.sent - frames_a.sent),
        msgs_received_per_acq: per(frames_b.received - frames_a.received),
        znodes_per_acq: per(creates_between(&stats_a, &stats_b)),
        violations: ctx.violations.load(Ordering::Relaxed),
        errors: ctx.errors.load(Ordering::Relaxed),
    })
}

// ---------------------------------------------------------------------------
// election

/// A candidate whose promotion is awaited by a task.
struct Candidate {
    id: usize,
    client: Client,
    task: tokio::task::JoinHandle<()>,
}

type Promotion = (usize, Result<i64, String>, Instant);

async fn join_candidate(
    addr: &str,
    name: &str,
    id: usize,
    tx: tokio::sync::mpsc::UnboundedSender<Promotion>,
) -> anyhow::Result<Candidate> {
    let client = connect(addr).await?;
    let mut candidacy = client
        .election(name)
        .join(format!("c{id}").as_bytes())
        .await
        .context("joining the election")?;
    let task = tokio::spawn(async move {
        let r = candidacy.leadership().await.map_err(|e| e.to_string());
        let _ = tx.send((id, r, Instant::now()));
        // Keep the candidacy (and its subscription) until the session is closed.
        std::future::pending::<()>().await;
    });
    Ok(Candidate { id, client, task })
}

/// Runs `--workload election`.
pub async fn run_election(args: &BenchArgs) -> anyhow::Result<ElectionReport> {
    check_args(args)?;
    let servers = servers_of(args);
    let n = args.clients;
    eprintln!(
        "wazoo bench: election on {} with {n} candidates, {}s (+{}s warmup)",
        servers.join(","),
        args.secs,
        args.warmup_secs
    );
    let admin = connect(&servers[0]).await?;
    require_recipe(&admin, builtin::ELECTION).await?;
    let name = format!("bench-{:012x}", rand::random::<u64>() >> 16);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Promotion>();
    let mut queue = std::collections::VecDeque::with_capacity(n);
    let mut next_id = 0;
    for _ in 0..n {
        let addr = &servers[next_id % servers.len()];
        queue.push_back(join_candidate(addr, &name, next_id, tx.clone()).await?);
        next_id += 1;
    }
    // The first candidate leads at once.
    let wait = Duration::from_secs(30);
    let (first, r, _) = tokio::time::timeout(wait, rx.recv())
        .await
        .context("no first leader")?
        .context("promotion channel closed")?;
    let mut last_epoch = r.map_err(anyhow::Error::msg)?;
    let mut violations = 0u64;
    let mut errors = 0u64;
    if first != queue[0].id {
        violations += 1;
    }

    let win = Window::new(args);
    tokio::time::sleep_until(win.start.into()).await;
    let mut samples = Vec::new();
    while !win.done() {
        let Some(leader) = queue.pop_front() else {
            break;
        };
        let expected = queue.front().map(|c| c.id);
        let t0 = Instant::now();
        if let Err(e) = leader.client.close().await {
            eprintln!("wazoo bench: closing the leader's session: {e}");
            errors += 1;
        }
        leader.task.abort();
        let Ok(Some((id, r, t1))) = tokio::time::timeout(wait, rx.recv()).await else {
            eprintln!("wazoo bench: no candidate was promoted within {wait:?}");
            errors += 1;
            break;
        };
        match r {
            Ok(epoch) => {
                if Some(id) != expected || epoch <= last_epoch {
                    violations += 1;
                }
                last_epoch = epoch;
                if t0 >= win.measure_from && win.record(t1) {
                    samples.push(t1.duration_since(t0).as_micros().min(u32::MAX as u128) as u32);
                }
            }
            Err(e) => {
                eprintln!("wazoo bench: candidate {id}: {e}");
                errors += 1;
            }
        }
        // Replace the closed candidate at the back.
        let addr = &servers[next_id % servers.len()];
        match join_candidate(addr, &name, next_id, tx.clone()).await {
            Ok(c) => queue.push_back(c),
            Err(e) => {
                eprintln!("wazoo bench: replacing a candidate: {e:#}");
                errors += 1;
            }
        }
        next_id += 1;
    }
    for c in queue {
        c.task.abort();
        let _ = c.client.close().await;
    }
    let _ = admin.close().await;
    samples.sort_unstable();
    Ok(ElectionReport {
        workload: Workload::Election,
        servers: servers.join(","),
        sessions: n,
        secs: round2(win.measured_secs()),
        warmup_secs: args.warmup_secs,
        rounds: samples.len() as u64,
        failover_p50_ms: ms(quantile(&samples, 0.50)),
        failover_p99_ms: ms(quantile(&samples, 0.99)),
        failover_max_ms: ms(samples.last().copied().unwrap_or(0) as u64),
        violations,
        errors,
    })
}

// ---------------------------------------------------------------------------
// barrier

/// One party's view of one release: (generation, enter sent, release received).
type Passage = (i64, Instant, Instant);

/// Runs `--workload barrier`.
pub async fn run_barrier(args: &BenchArgs) -> anyhow::Result<BarrierReport> {
    check_args(args)?;
    let servers = servers_of(args);
    let n = args.clients;
    eprintln!(
        "wazoo bench: barrier on {} with {n} parties, {}s (+{}s warmup)",
        servers.join(","),
        args.secs,
        args.warmup_secs
    );
    let admin = connect(&servers[0]).await?;
    require_recipe(&admin, builtin::BARRIER).await?;
    let name = format!("bench-{:012x}", rand::random::<u64>() >> 16);
    let sessions = connect_all(&servers, n).await?;
    let win = Arc::new(Window::new(args));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Passage>();
    let mut tasks = Vec::with_capacity(n);
    for (idx, client) in sessions.iter().enumerate() {
        let barrier = client.barrier(&name);
        let (win, stop, errors, tx) = (win.clone(), stop.clone(), errors.clone(), tx.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(win.start.into()).await;
            while !stop.load(Ordering::SeqCst) {
                let sent = Instant::now();
                match barrier.enter(n as u32).await {
                    Ok(r) => {
                        let _ = tx.send((r.generation, sent, Instant::now()));
                    }
                    Err(e) => {
                        if !stop.load(Ordering::SeqCst) {
                            eprintln!("wazoo bench: party {idx}: {e}");
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        break;
                    }
                }
            }
        }));
    }
    drop(tx);

    // Group the passages by release; a round is complete with n of them.
    let mut rounds: std::collections::HashMap<i64, Vec<(Instant, Instant)>> = Default::default();
    let mut samples = Vec::new();
    let mut violations = 0u64;
    let mut frames_a = None;
    let mut measured_rounds = 0u64;
    loop {
        if frames_a.is_none() && Instant::now() >= win.measure_from {
            frames_a = Some(sum_frames(&sessions));
        }
        let timeout = tokio::time::sleep_until(
            (if frames_a.is_none() {
                win.measure_from
            } else {
                win.end
            })
            .into(),
        );
        let got = tokio::select! {
            p = rx.recv() => p,
            _ = timeout => {
                if frames_a.is_some() { break; }
                continue;
            }
            _ = win.stop_notify.notified() => break,
        };
        let Some((generation, sent, received)) = got else {
            break;
        };
        let round = rounds.entry(generation).or_default();
        round.push((sent, received));
        if round.len() < n {
            continue;
        }
        let round = rounds.remove(&generation).unwrap_or_default();
        let last_sent = round.iter().map(|p| p.0).max().unwrap_or(sent);
        let first_received = round.iter().map(|p| p.1).min().unwrap_or(received);
        let last_received = round.iter().map(|p| p.1).max().unwrap_or(received);
        if first_received < last_sent {
            violations += 1;
        }
        if last_sent >= win.measure_from && win.record(last_received) {
            measured_rounds += 1;
            samples.push(
                last_received
                    .duration_since(last_sent)
                    .as_micros()
                    .min(u32::MAX as u128) as u32,
            );
        }
    }
    let frames_b = sum_frames(&sessions);
    stop.store(true, Ordering::SeqCst);
    // Parties parked in an unfinished round are stopped; closing their sessions
    // cancels the parked calls.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for t in &tasks {
        t.abort();
    }
    for c in sessions {
        let _ = c.close().await;
    }
    let _ = admin.close().await;
    samples.sort_unstable();
    let secs = win.measured_secs();
    let frames = frames_a.map_or(0, |a| frames_b.total() - a.total());
    Ok(BarrierReport {
        workload: Workload::Barrier,
        servers: servers.join(","),
        sessions: n,
        secs: round2(secs),
        warmup_secs: args.warmup_secs,
        rounds: measured_rounds,
        rounds_per_sec: round2(measured_rounds as f64 / secs),
        release_p50_ms: ms(quantile(&samples, 0.50)),
        release_p99_ms: ms(quantile(&samples, 0.99)),
        release_max_ms: ms(samples.last().copied().unwrap_or(0) as u64),
        msgs_per_round: round2(frames as f64 / measured_rounds as f64),
        violations,
        errors: errors.load(Ordering::Relaxed),
    })
}
