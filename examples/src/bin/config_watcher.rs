//! Configuration broadcast with the `config` recipe.
//!
//! A watcher session subscribes to a key and prints every value; a publisher session
//! publishes `--updates` new values, each conditional on the version it last saw (a
//! compare-and-set). The watcher gets the current value first, then every version in
//! order, and stops at the last one.
//!
//!     cargo run -p wazoo-examples --bin config_watcher -- --servers 127.0.0.1:2181

use anyhow::bail;
use clap::Parser;
use wazoo_examples::Common;

#[derive(Parser)]
#[command(about = "A watcher prints every published version of a config key")]
struct Args {
    #[command(flatten)]
    common: Common,
    /// Values to publish.
    #[arg(long, default_value_t = 5)]
    updates: u32,
    /// The key.
    #[arg(long, default_value = "example.greeting")]
    key: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let watcher = args.common.connect().await?;
    let publisher = args.common.connect().await?;
    let config = publisher.config();

    let mut sub = watcher.config().subscribe(&args.key).await?;
    let start = config.get(&args.key).await?.map_or(0, |e| e.version);
    let last = start + i64::from(args.updates);

    let key = args.key.clone();
    let publishing = tokio::spawn(async move {
        let mut version = start;
        for i in 1..=args.updates {
            let value = format!("hello #{i}");
            version = config
                .publish(&key, value.as_bytes(), Some(version))
                .await?;
            println!("publisher: {key} = {value:?} (version {version})");
        }
        Ok::<_, anyhow::Error>(())
    });

    let mut previous = None;
    loop {
        let u = sub.next().await?;
        println!(
            "watcher: {} = {:?} (version {}{})",
            u.key,
            String::from_utf8_lossy(&u.value),
            u.version,
            if u.coalesced { ", coalesced" } else { "" }
        );
        if let Some(p) = previous {
            if u.version <= p {
                bail!("versions out of order: {p} then {}", u.version);
            }
        }
        previous = Some(u.version);
        if u.version >= last {
            break;
        }
    }
    publishing.await??;
    sub.unsubscribe().await?;
    watcher.close().await?;
    publisher.close().await?;
    println!("ok: saw version {last}");
    Ok(())
}
