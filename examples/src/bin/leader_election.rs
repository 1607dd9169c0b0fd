//! Leader election with the `election` recipe.
//!
//! `--candidates` sessions join one election; an observer session prints every change
//! of leader. Each leader, once told it leads, records its epoch in a znode (refusing
//! an epoch that is not larger than the recorded one: the epoch is a fencing token),
//! then steps down: by resigning, or every other term by ending its session (the
//! recipe promotes the next candidate in both cases) and joining again with a new one. After `--rounds` leaders the
//! program stops.
//!
//!     cargo run -p wazoo-examples --bin leader_election -- --servers 127.0.0.1:2181

use anyhow::{bail, Context};
use clap::Parser;
use wazoo_client::Client;
use wazoo_examples::{ensure_node, Common};

#[derive(Parser)]
#[command(about = "Candidates take turns leading; an observer prints each leader")]
struct Args {
    #[command(flatten)]
    common: Common,
    /// Candidates (one session each).
    #[arg(long, default_value_t = 3)]
    candidates: u32,
    /// Leaders to go through before stopping.
    #[arg(long, default_value_t = 4)]
    rounds: u32,
    /// The election's name.
    #[arg(long, default_value = "leader-election")]
    election: String,
}

const EPOCH: &str = "/wazoo-examples/leader-epoch";

/// Writes `epoch` to the epoch znode if it is larger than the one there (a
/// compare-and-set on the znode's version).
async fn record_epoch(client: &Client, who: &str, epoch: i64) -> anyhow::Result<()> {
    let (data, stat) = client.get_data(EPOCH, false).await?;
    let text = String::from_utf8(data.unwrap_or_default()).context("epoch znode")?;
    let last: i64 = text.trim().parse().unwrap_or(0);
    if epoch <= last {
        bail!("{who}: epoch {epoch} is not above the recorded {last}: refusing to act");
    }
    client
        .set_data(EPOCH, epoch.to_string().as_bytes(), stat.version)
        .await
        .with_context(|| format!("{who}: recording epoch {epoch}"))?;
    Ok(())
}

/// A candidate: joins, waits for leadership, works, steps down; joins again with a
/// new session after ending one. Runs until aborted.
async fn candidate(id: u32, args: &Args) -> anyhow::Result<()> {
    // Odd candidates end their session on their first term, even ones on their
    // second: both ways of stepping down show up in a short run.
    let mut end_session = id % 2 == 1;
    loop {
        let client = args.common.connect().await?;
        let who = format!("candidate {id} (session {:#x})", client.session_id());
        let election = client.election(&args.election);
        loop {
            let mut candidacy = election.join(who.as_bytes()).await?;
            let epoch = candidacy.leadership().await?;
            println!("{who}: I lead, epoch {epoch}");
            record_epoch(&client, &who, epoch).await?;
            let ending = end_session;
            end_session = !end_session;
            if ending {
                println!("{who}: ending my session");
                client.close().await?;
                break;
            }
            println!("{who}: resigning");
            candidacy.resign().await?;
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = std::sync::Arc::new(Args::parse());
    let observer = args.common.connect().await?;
    ensure_node(&observer, "/wazoo-examples", b"").await?;
    ensure_node(&observer, EPOCH, b"0").await?;
    let mut leaders = observer.election(&args.election).observe().await?;

    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..args.candidates {
        let args = args.clone();
        tasks.spawn(async move { candidate(id, &args).await });
    }
    let mut seen = 0;
    let mut last_epoch = 0;
    while seen < args.rounds {
        tokio::select! {
            l = leaders.next() => match l? {
                Some(l) => {
                    if l.epoch <= last_epoch {
                        bail!("observer: epoch went from {last_epoch} to {}", l.epoch);
                    }
                    last_epoch = l.epoch;
                    seen += 1;
                    println!(
                        "observer: leader is {} (epoch {})",
                        String::from_utf8_lossy(&l.data),
                        l.epoch
                    );
                }
                None => println!("observer: nobody leads"),
            },
            // A candidate only returns on an error.
            Some(r) = tasks.join_next() => {
                r.context("candidate panicked")??;
            }
        }
    }
    // Aborting the candidates drops their clients: their sessions expire later. The
    // election moves on without them; a real service would close them.
    tasks.shutdown().await;
    println!("ok: {seen} leaders, last epoch {last_epoch}");
    observer.close().await?;
    Ok(())
}
