//! Barriers with the `barrier` recipe.
//!
//! `--parties` sessions meet at an N-party barrier `--rounds` times (all of a round
//! are released together, with the same generation), then go through a double
//! barrier (nobody starts before all entered, nobody leaves before all are done), and
//! finally wait at a set/remove barrier that a coordinator lifts.
//!
//!     cargo run -p wazoo-examples --bin barrier -- --servers 127.0.0.1:2181

use anyhow::{bail, Context};
use clap::Parser;
use wazoo_client::Client;
use wazoo_examples::Common;

#[derive(Parser)]
#[command(about = "Parties meet at N-party, double and set/remove barriers")]
struct Args {
    #[command(flatten)]
    common: Common,
    /// Parties (one session each).
    #[arg(long, default_value_t = 3)]
    parties: u32,
    /// N-party rounds.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// The barriers' name.
    #[arg(long, default_value = "example-barrier")]
    barrier: String,
}

/// One party: the N-party rounds and the double barrier; returns the generations of
/// its releases.
async fn party(id: u32, client: Client, args: std::sync::Arc<Args>) -> anyhow::Result<Vec<i64>> {
    let b = client.barrier(&args.barrier);
    let mut generations = Vec::new();
    for round in 0..args.rounds {
        let r = b.enter(args.parties).await?;
        println!(
            "party {id}: round {round} released, generation {}",
            r.generation
        );
        generations.push(r.generation);
    }
    let inside = b.double_enter(args.parties).await?;
    println!(
        "party {id}: inside the double barrier (generation {})",
        inside.generation
    );
    let left = b.double_leave().await?;
    println!(
        "party {id}: left the double barrier (generation {})",
        left.generation
    );
    generations.push(inside.generation);
    generations.push(left.generation);
    Ok(generations)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = std::sync::Arc::new(Args::parse());
    let mut clients = Vec::new();
    for _ in 0..args.parties {
        clients.push(args.common.connect().await?);
    }
    let mut tasks = Vec::new();
    for (id, c) in clients.iter().enumerate() {
        tasks.push(tokio::spawn(party(id as u32, c.clone(), args.clone())));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.push(t.await.context("party panicked")??);
    }
    // Every party saw the same releases.
    if all.iter().any(|g| g != &all[0]) {
        bail!("parties saw different generations: {all:?}");
    }

    // Set/remove: the coordinator sets the barrier, the parties wait on it, the
    // coordinator lifts it (a wait that comes after the removal returns at once).
    let coordinator = args.common.connect().await?;
    let gate = coordinator.barrier(&args.barrier);
    gate.set().await?;
    let mut waits = Vec::new();
    for (id, c) in clients.iter().enumerate() {
        let b = c.barrier(&args.barrier);
        waits.push(tokio::spawn(async move {
            b.wait().await?;
            println!("party {id}: the gate is open");
            Ok::<_, anyhow::Error>(())
        }));
    }
    let released = gate.remove().await?;
    println!("coordinator: gate removed, {released} waiting parties released");
    for w in waits {
        w.await.context("wait panicked")??;
    }
    for c in clients {
        c.close().await?;
    }
    coordinator.close().await?;
    println!(
        "ok: {} rounds, a double barrier and a gate with {} parties",
        args.rounds, args.parties
    );
    Ok(())
}
