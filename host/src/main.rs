//! The `wazoo` command line: `wazoo serve` runs a server; more subcommands (bench,
//! admin, recipe) sit beside it.

use clap::{Parser, Subcommand};
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use wazoo::config::Config;
use wazoo::server::Server;

#[derive(Parser)]
#[command(
    name = "wazoo",
    version,
    about = "A ZooKeeper-compatible coordination service with server-side wasm recipes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a server: standalone (defaults: 127.0.0.1:2181, data under ./data), or an
    /// ensemble member when the config file has server.N lines (and dataDir has myid).
    Serve(ServeArgs),
    /// Load-test a ZooKeeper-protocol server (Wazoo or Apache ZooKeeper); prints one JSON line.
    Bench(wazoo::bench::BenchArgs),
    /// Inspect a stopped server's data dir: `summary DIR`, `diff LEFT RIGHT`.
    #[command(subcommand)]
    Snapshot(wazoo::tools::SnapshotCommand),
    /// Print (`dump DIR`) or verify (`dump DIR --check`) a data dir's raft log.
    #[command(subcommand)]
    Log(wazoo::tools::LogCommand),
    /// Data dir maintenance: `cleanup DIR --keep N` (compaction, old RocksDB LOG files).
    #[command(subcommand)]
    Data(wazoo::tools::DataCommand),
    /// Migrate data from another server: `zookeeper ZK_DATA_DIR TARGET_DIR`.
    #[command(subcommand)]
    Import(wazoo::tools::ImportCommand),
    /// Server-side wasm recipes: `upload`, `list`, `call`, `delete`, `runtime`,
    /// `adopt-runtime` (client side).
    #[command(subcommand)]
    Recipe(wazoo::recipe_cli::RecipeCommand),
    /// Interactive shell like zkCli.sh (`-c CMD` runs one command; piped stdin runs
    /// one command per line).
    Cli(wazoo::cli::CliArgs),
    /// Kill an ensemble's leader (`--kill-pid`) under a write load and report how long
    /// until writes are acknowledged again (Wazoo or ZooKeeper); prints one JSON line.
    BenchFailover(wazoo::bench_failover::FailoverArgs),
    /// Ensemble administration over the peer ports: `status`, `add-server`,
    /// `remove-server`.
    #[command(subcommand)]
    Admin(wazoo::admin_cli::AdminCommand),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// A zoo.cfg-style file (tickTime, dataDir, clientPort, ...). Flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Client port; 0 picks a free one (the chosen port is printed).
    #[arg(long)]
    client_port: Option<u16>,
    #[arg(long)]
    client_port_address: Option<IpAddr>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    tick_time: Option<u32>,
    /// Admin HTTP port (`admin.serverPort`; 0 picks a free one, printed on start).
    #[arg(long)]
    admin_port: Option<u16>,
    /// Any zoo.cfg key, e.g. `--set 4lw.commands.whitelist=*` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WAZOO_LOG")
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wazoo: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Bench(args) => runtime.block_on(wazoo::bench::run_cli(args)),
        Command::Snapshot(cmd) => wazoo::tools::run_snapshot(cmd),
        Command::Log(cmd) => wazoo::tools::run_log(cmd),
        Command::Data(cmd) => wazoo::tools::run_data(cmd),
        Command::Import(cmd) => wazoo::tools::run_import(cmd),
        // Prints its own `error: NAME: message` and chooses the exit status.
        Command::Recipe(cmd) => return runtime.block_on(wazoo::recipe_cli::run(cmd)),
        Command::Cli(args) => return runtime.block_on(wazoo::cli::run(args)),
        Command::Admin(cmd) => runtime.block_on(wazoo::admin_cli::run(cmd)),
        Command::BenchFailover(args) => runtime.block_on(wazoo::bench_failover::run_cli(args)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wazoo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn build_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    let mut extra = String::new();
    if let Some(t) = args.tick_time {
        extra.push_str(&format!("tickTime={t}\n"));
    }
    for kv in &args.set {
        extra.push_str(kv);
        extra.push('\n');
    }
    if !extra.is_empty() {
        // Re-applying derives the session bounds from a new tickTime unless given.
        let mut text = String::new();
        if let Some(path) = &args.config {
            text = std::fs::read_to_string(path)?;
            text.push('\n');
        }
        text.push_str(&extra);
        config = Config::default();
        config.apply_text(&text, "command line")?;
    }
    if let Some(p) = args.client_port {
        config.client_port = p;
    }
    if let Some(a) = args.client_port_address {
        config.client_port_address = a;
    }
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(p) = args.admin_port {
        config.admin_server_port = p;
    }
    Ok(config)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = build_config(&args)?;
    for (k, v) in &config.unknown {
        tracing::warn!(key = %k, value = %v, "unknown configuration key; ignored");
    }
    let server = Server::start(config).await?;
    // The ready line: scripts and tests wait for it to learn the (possibly chosen) port.
    println!("wazoo: serving ZooKeeper clients on {}", server.client_addr);
    if let Some(admin) = server.admin_addr {
        println!("wazoo: admin HTTP on {admin}");
    }
    let _ = std::io::stdout().flush();
    wait_for_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
