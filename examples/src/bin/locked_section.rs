//! A critical section guarded by the `lock` recipe, checking its fencing token.
//!
//! `--workers` sessions each enter the section `--rounds` times. Inside, a worker reads
//! the fence znode (the last token that wrote it and a counter), refuses to go on if
//! its own token is not larger (a stale holder), and writes its token with a `multi`
//! that first checks the holder znode of its grant: the write commits only while the
//! grant holds. At the end the counter must equal workers x rounds.
//!
//!     cargo run -p wazoo-examples --bin locked_section -- --servers 127.0.0.1:2181

use anyhow::{bail, Context};
use clap::Parser;
use wazoo_client::Client;
use wazoo_examples::{ensure_node, Common};
use wazoo_proto::{CheckVersionRequest, OpResult, SetDataRequest, WriteOp};

#[derive(Parser)]
#[command(about = "Workers take turns in a lock-guarded, token-fenced critical section")]
struct Args {
    #[command(flatten)]
    common: Common,
    /// Concurrent workers (one session each).
    #[arg(long, default_value_t = 3)]
    workers: u32,
    /// Critical sections per worker.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// The lock's name.
    #[arg(long, default_value = "locked-section")]
    lock: String,
}

const FENCE: &str = "/wazoo-examples/fence";

/// The fence znode's data: `TOKEN COUNT`.
fn parse_fence(data: &[u8]) -> anyhow::Result<(i64, u64)> {
    let s = std::str::from_utf8(data).context("fence data is not UTF-8")?;
    let mut it = s.split_whitespace();
    let token = it.next().unwrap_or("0").parse().context("fence token")?;
    let count = it.next().unwrap_or("0").parse().context("fence count")?;
    Ok((token, count))
}

async fn worker(id: u32, client: Client, lock: String, rounds: u32) -> anyhow::Result<()> {
    let lock = client.lock(&lock);
    for round in 0..rounds {
        let guard = lock.acquire().await?;
        let token = guard.fencing_token();
        let (data, stat) = client.get_data(FENCE, false).await?;
        let (last, count) = parse_fence(&data.unwrap_or_default())?;
        if token <= last {
            bail!("worker {id}: fencing token {token} is not above the last one, {last}");
        }
        // Commits only while our grant holds (its holder znode exists) and nobody
        // wrote the fence since we read it.
        let results = client
            .multi(vec![
                WriteOp::Check(CheckVersionRequest {
                    path: guard.path().to_string(),
                    version: -1,
                }),
                WriteOp::SetData(SetDataRequest {
                    path: FENCE.into(),
                    data: Some(format!("{token} {}", count + 1).into_bytes()),
                    version: stat.version,
                }),
            ])
            .await?;
        if let Some(OpResult::Error(code)) = results
            .iter()
            .find(|r| matches!(r, OpResult::Error(c) if c.code() != 0))
        {
            bail!("worker {id}: fenced write refused: {}", code.name());
        }
        println!(
            "worker {id} round {round}: token {token} (previous {last}), count {}",
            count + 1
        );
        guard.release().await?;
    }
    client.close().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let admin = args.common.connect().await?;
    ensure_node(&admin, "/wazoo-examples", b"").await?;
    ensure_node(&admin, FENCE, b"0 0").await?;
    let (_, before) = parse_fence(&admin.get_data(FENCE, false).await?.0.unwrap_or_default())?;

    let mut tasks = Vec::new();
    for id in 0..args.workers {
        let client = args.common.connect().await?;
        tasks.push(tokio::spawn(worker(
            id,
            client,
            args.lock.clone(),
            args.rounds,
        )));
    }
    for t in tasks {
        t.await.context("worker panicked")??;
    }
    let (token, after) = parse_fence(&admin.get_data(FENCE, false).await?.0.unwrap_or_default())?;
    let expected = before + u64::from(args.workers) * u64::from(args.rounds);
    if after != expected {
        bail!("the fence counted {after} critical sections, expected {expected}");
    }
    println!(
        "ok: {} critical sections, last token {token}",
        after - before
    );
    admin.close().await?;
    Ok(())
}
