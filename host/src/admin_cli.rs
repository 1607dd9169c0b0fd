//! `wazoo admin`: ensemble status and membership changes, spoken to the servers'
//! peer ports (the `host:peerPort` of their `server.N` lines).
//!
//! Why the peer port and not the client port: membership is raft's business, and the
//! peer port is already the ensemble-internal surface (whoever reaches it can take part
//! in raft anyway, see docs/THREAT_MODEL.md), so this adds no new exposure to clients.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::peer::{PeerClient, PeerRequest, PeerResponse, StatusReport};

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Each server's role, term, log and applied index, lag behind the leader, sessions,
    /// connections and state digest.
    Status(StatusArgs),
    /// Add a server (a voter, or an observer with --observer). It catches up from the
    /// leader (through a snapshot if needed) before it votes.
    AddServer(AddServerArgs),
    /// Remove a server from the ensemble.
    RemoveServer(RemoveServerArgs),
}

#[derive(Args)]
pub struct Servers {
    /// Peer addresses, comma-separated: `host:peerPort,...`.
    #[arg(long, value_delimiter = ',')]
    servers: Vec<String>,
    /// Or take them from a zoo.cfg's server.N lines.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
}

impl Servers {
    fn addrs(&self) -> anyhow::Result<Vec<String>> {
        let mut addrs = self.servers.clone();
        if let Some(path) = &self.config {
            let c = crate::config::Config::from_file(path)?;
            addrs.extend(c.servers.values().map(|s| s.peer_addr()));
        }
        if addrs.is_empty() {
            bail!("name the servers with --servers host:peerPort,... or --config zoo.cfg");
        }
        Ok(addrs)
    }
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    servers: Servers,
    /// One JSON object per server instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct AddServerArgs {
    #[command(flatten)]
    servers: Servers,
    /// The new server's id (its myid).
    #[arg(long)]
    id: u64,
    /// The new server's peer address, `host:peerPort`.
    #[arg(long)]
    address: String,
    /// Join as a non-voting observer.
    #[arg(long)]
    observer: bool,
}

#[derive(Args)]
pub struct RemoveServerArgs {
    #[command(flatten)]
    servers: Servers,
    #[arg(long)]
    id: u64,
}

const TIMEOUT: Duration = Duration::from_secs(5);

/// Asks one server for its status.
pub async fn status_of(addr: &str) -> anyhow::Result<StatusReport> {
    match PeerClient::new(addr)
        .call(&PeerRequest::Status, TIMEOUT)
        .await?
    {
        PeerResponse::Status(s) => Ok(*s),
        PeerResponse::Refused(why) => bail!("{addr}: {why}"),
        other => bail!("{addr}: unexpected answer {other:?}"),
    }
}

/// Sends a membership change to the first server that answers (any member passes it
/// to the leader).
async fn membership(addrs: &[String], req: PeerRequest) -> anyhow::Result<String> {
    let mut last = None;
    for addr in addrs {
        match PeerClient::new(addr)
            .call(&req, Duration::from_secs(180))
            .await
        {
            Ok(PeerResponse::Admin(Ok(msg))) => return Ok(msg),
            Ok(PeerResponse::Admin(Err(e))) => bail!("{e}"),
            Ok(other) => last = Some(anyhow::anyhow!("{addr}: unexpected answer {other:?}")),
            Err(e) => last = Some(anyhow::anyhow!("{addr}: {e}")),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no server given")))
}

pub async fn run(cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::Status(args) => {
            let addrs = args.servers.addrs()?;
            let mut reports = Vec::new();
            for addr in &addrs {
                reports.push((addr.clone(), status_of(addr).await));
            }
            let leader_applied = reports
                .iter()
                .filter_map(|(_, r)| r.as_ref().ok())
                .find(|r| r.role == "leader")
                .and_then(|r| r.applied);
            if args.json {
                for (addr, r) in &reports {
                    let v = match r {
                        Ok(s) => serde_json::json!({ "peer": addr, "status": s }),
                        Err(e) => serde_json::json!({ "peer": addr, "error": format!("{e:#}") }),
                    };
                    println!("{v}");
                }
            } else {
                println!(
                    "{:<22} {:>3} {:<9} {:>5} {:>6} {:>9} {:>9} {:>6} {:>8} {:>5} {:<22} DIGEST",
                    "PEER",
                    "ID",
                    "ROLE",
                    "TERM",
                    "LEADER",
                    "LAST_LOG",
                    "APPLIED",
                    "LAG",
                    "SESSIONS",
                    "CONNS",
                    "CLIENT"
                );
                for (addr, r) in &reports {
                    match r {
                        Ok(s) => {
                            let lag = match (leader_applied, s.applied) {
                                (Some(l), Some(a)) => l.saturating_sub(a).to_string(),
                                _ => "-".into(),
                            };
                            let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
                            println!(
                                "{:<22} {:>3} {:<9} {:>5} {:>6} {:>9} {:>9} {:>6} {:>8} {:>5} {:<22} {}",
                                addr,
                                s.id,
                                s.role,
                                s.term,
                                opt(s.leader),
                                opt(s.last_log_index),
                                opt(s.applied),
                                lag,
                                s.sessions,
                                s.connections,
                                s.client_addr,
                                &s.digest[..12.min(s.digest.len())]
                            );
                        }
                        Err(e) => println!("{addr:<22} unreachable: {e:#}"),
                    }
                }
            }
            if reports.iter().all(|(_, r)| r.is_err()) {
                bail!("no server answered");
            }
            Ok(())
        }
        AdminCommand::AddServer(args) => {
            let msg = membership(
                &args.servers.addrs()?,
                PeerRequest::AddServer {
                    id: args.id,
                    peer_addr: args.address.clone(),
                    voter: !args.observer,
                },
            )
            .await
            .with_context(|| format!("adding server {}", args.id))?;
            println!("{msg}");
            Ok(())
        }
        AdminCommand::RemoveServer(args) => {
            let msg = membership(
                &args.servers.addrs()?,
                PeerRequest::RemoveServer { id: args.id },
            )
            .await
            .with_context(|| format!("removing server {}", args.id))?;
            println!("{msg}");
            Ok(())
        }
    }
}
