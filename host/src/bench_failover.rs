//! `wazoo bench-failover`: how long an ensemble takes to acknowledge writes again
//! after its leader's process is killed. Works against Wazoo and Apache ZooKeeper
//! ensembles alike (plain ZooKeeper protocol), so `scripts/bench-ensemble.sh` reports
//! both.
//!
//! One writer per server (each connected with the whole server list, starting at its
//! own server, reconnecting as ZooKeeper clients do) sets its own znode in a loop.
//! After a warm-up the tool SIGKILLs `--kill-pid`; the failover time is from the
//! process's death (it is gone or a zombie) to the first write that was *sent after* the kill and acknowledged (a write already
//! committed before the kill but acknowledged late does not count).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use wazoo_client::{open_acl_unsafe, Client, ConnectOptions, Failover};

#[derive(Args, Debug)]
pub struct FailoverArgs {
    /// Client addresses of every server, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub servers: Vec<String>,
    /// The leader's process id: SIGKILLed after the warm-up.
    #[arg(long)]
    pub kill_pid: u32,
    #[arg(long, default_value_t = 2.0)]
    pub warmup_secs: f64,
    /// Give up if no write is acknowledged this long after the kill.
    #[arg(long, default_value_t = 60.0)]
    pub limit_secs: f64,
    /// Session timeout the writers ask for.
    #[arg(long, default_value_t = 10_000)]
    pub session_timeout_ms: i32,
}

#[derive(Debug, Serialize)]
pub struct FailoverReport {
    pub workload: &'static str,
    pub servers: String,
    /// Kill → first acknowledged write sent after the kill.
    pub failover_ms: f64,
    /// Writes acknowledged before the kill (all writers).
    pub writes_before: u64,
    /// Writes acknowledged after the failover, in the second after it.
    pub writes_after: u64,
}

pub async fn run_cli(args: FailoverArgs) -> anyhow::Result<()> {
    let r = run(&args).await?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

pub async fn run(args: &FailoverArgs) -> anyhow::Result<FailoverReport> {
    if args.servers.is_empty() {
        bail!("--servers: give every server's client address");
    }
    let base = Instant::now();
    let since = move |t: Instant| t.duration_since(base).as_nanos() as u64;
    let kill_at = Arc::new(AtomicU64::new(u64::MAX));
    let first_after = Arc::new(AtomicU64::new(u64::MAX));
    let before = Arc::new(AtomicU64::new(0));
    let after = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let setup = Client::connect(&args.servers[0], ConnectOptions::default())
        .await
        .with_context(|| format!("connecting to {}", args.servers[0]))?;
    let root = "/wazoo-bench-failover";
    match setup.create(root, b"", open_acl_unsafe(), 0).await {
        Ok(_) | Err(wazoo_client::ClientError::Zk(wazoo_proto::ErrorCode::NodeExists)) => {}
        Err(e) => return Err(e).context("creating the benchmark root"),
    }
    let mut tasks = Vec::new();
    for i in 0..args.servers.len() {
        let path = format!("{root}/w{i}");
        match setup.create(&path, b"", open_acl_unsafe(), 0).await {
            Ok(_) | Err(wazoo_client::ClientError::Zk(wazoo_proto::ErrorCode::NodeExists)) => {}
            Err(e) => return Err(e).context("creating a writer's znode"),
        }
        // Start at server i, then the others in order.
        let mut order = args.servers.clone();
        order.rotate_left(i);
        let connect = order.join(",");
        let opts = ConnectOptions {
            timeout_ms: args.session_timeout_ms,
            ..ConnectOptions::default()
        };
        let client = Client::connect_with(&connect, opts, Failover::reconnecting())
            .await
            .with_context(|| format!("connecting writer {i}"))?;
        let (kill_at, first_after, before, after, stop) = (
            kill_at.clone(),
            first_after.clone(),
            before.clone(),
            after.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let sent = since(Instant::now());
                let ok = client.set_data(&path, b"x", -1).await.is_ok();
                if !ok {
                    // Disconnected or mid-election: the client reconnects by itself.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                let acked = since(Instant::now());
                if sent >= kill_at.load(Ordering::SeqCst) {
                    first_after.fetch_min(acked, Ordering::SeqCst);
                    after.fetch_add(1, Ordering::Relaxed);
                } else {
                    before.fetch_add(1, Ordering::Relaxed);
                }
            }
            let _ = client.close().await;
        }));
    }
    drop(setup);
    tokio::time::sleep(Duration::from_secs_f64(args.warmup_secs)).await;
    let status = std::process::Command::new("kill")
        .args(["-9", &args.kill_pid.to_string()])
        .status()
        .context("running kill -9")?;
    if !status.success() {
        stop.store(true, Ordering::Relaxed);
        bail!("kill -9 {} failed: {status}", args.kill_pid);
    }
    // The clock starts once the process is dead (gone, or a zombie), not when the
    // signal was sent: a leader still running for a moment after `kill` would
    // acknowledge writes "after the kill" and make the failover look instant.
    let stat = format!("/proc/{}/stat", args.kill_pid);
    let dead_by = Instant::now() + Duration::from_secs(10);
    loop {
        match std::fs::read_to_string(&stat) {
            Err(_) => break,
            Ok(s)
                if s.rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with('Z')) =>
            {
                break
            }
            Ok(_) if Instant::now() > dead_by => {
                stop.store(true, Ordering::Relaxed);
                bail!("process {} still runs 10 s after kill -9", args.kill_pid);
            }
            Ok(_) => std::thread::sleep(Duration::from_micros(200)),
        }
    }
    kill_at.store(since(Instant::now()), Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs_f64(args.limit_secs);
    while first_after.load(Ordering::SeqCst) == u64::MAX {
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            bail!(
                "no write was acknowledged within {}s of the kill",
                args.limit_secs
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let failover_ns = first_after.load(Ordering::SeqCst) - kill_at.load(Ordering::SeqCst);
    Ok(FailoverReport {
        workload: "failover",
        servers: args.servers.join(","),
        failover_ms: failover_ns as f64 / 1e6,
        writes_before: before.load(Ordering::Relaxed),
        writes_after: after.load(Ordering::Relaxed),
    })
}
