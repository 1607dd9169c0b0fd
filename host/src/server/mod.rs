//! The client-facing server: accepts ZooKeeper connections, turns writes into raft
//! log entries, serves reads from the local state machine, and runs the leader's
//! periodic duties (session expiry, container/TTL cleanup) as log proposals.

pub mod connection;
pub mod four_letter;
pub mod proposer;
pub mod session_tracker;
pub mod stats;

use crate::app::{Raft, TypeConfig};
use crate::command::{CommandOp, CommandOutput};
use crate::config::Config;
use crate::raft::RaftNode;
use crate::recipe::{Runtime, RuntimeLimits};
use crate::state_machine::StateMachine;
use crate::watch::WatchManager;
use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use session_tracker::SessionTracker;
use stats::ServerStats;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("raft failed to start: {0}")]
    Raft(#[from] crate::raft::StartError),
    #[error("the recipe runtime failed to start: {0}")]
    Recipes(#[from] crate::recipe::RecipeError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub use proposer::{ProposeError, Proposer};

/// State shared by every connection and background task of one server.
pub struct Shared {
    pub config: Config,
    pub raft: Raft,
    pub proposer: Proposer,
    pub sm: Arc<RwLock<StateMachine>>,
    pub watches: Arc<WatchManager>,
    pub tracker: SessionTracker,
    pub stats: ServerStats,
    /// This server's recipe determinism profile id, stamped on the recipe entries it
    /// proposes (see `recipe::runtime::DeterminismProfile`).
    pub recipe_profile: String,
    conns_per_ip: Mutex<HashMap<IpAddr, u32>>,
    shutdown: watch::Receiver<bool>,
}

/// Milliseconds since the Unix epoch on this server's clock. Only proposers call
/// this: the value travels in the log entry, so replicas never read their own clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Shared {
    /// Queues a command for the raft log (batched by the [`Proposer`]) and returns a
    /// future of its applied result. Commands a connection proposes one after another
    /// are applied in that order.
    pub fn propose(
        &self,
        op: CommandOp,
    ) -> BoxFuture<'static, Result<CommandOutput, ProposeError>> {
        self.proposer.propose(op)
    }

    /// Proposes and waits for the result.
    pub async fn write(&self, op: CommandOp) -> Result<CommandOutput, ProposeError> {
        self.propose(op).await
    }

    /// Changes when the server starts shutting down.
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Counts a new connection from `ip`; false if `maxClientCnxns` is reached.
    fn admit(&self, ip: IpAddr) -> bool {
        let mut g = self.conns_per_ip.lock();
        let n = g.entry(ip).or_insert(0);
        if self.config.max_client_cnxns > 0 && *n >= self.config.max_client_cnxns {
            return false;
        }
        *n += 1;
        true
    }

    fn release(&self, ip: IpAddr) {
        let mut g = self.conns_per_ip.lock();
        if let Some(n) = g.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.remove(&ip);
            }
        }
    }
}

/// A running standalone server.
pub struct Server {
    pub client_addr: SocketAddr,
    /// Where the admin HTTP server (`crate::admin`) listens; None when disabled
    /// (`admin.enableServer=false`) or when its port could not be bound.
    pub admin_addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    node: RaftNode<TypeConfig>,
}

impl Server {
    /// Opens the data directory, starts raft (restoring state from RocksDB) and listens
    /// for clients. Returns once the server is ready to serve.
    pub async fn start(config: Config) -> Result<Server, ServerError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let watches = Arc::new(WatchManager::new());
        let mut sm = StateMachine::new();
        sm.set_notifier(watches.clone());
        let runtime = Arc::new(Runtime::new(RuntimeLimits::default())?);
        let recipe_profile = runtime.profile().id();
        sm.set_recipe_runtime(runtime);
        let sm = Arc::new(RwLock::new(sm));
        let raft_dir = config.data_dir.join("raft");
        let node = crate::raft::start_standalone_with_storage::<TypeConfig, StateMachine>(
            &raft_dir,
            sm.clone(),
            crate::raft::standalone_config(config.snap_count)
                .map_err(crate::raft::StartError::from)?,
            &config.storage_options(),
        )
        .await?;
        let tracker = SessionTracker::new();
        // Sessions restored from disk get a fresh timeout, as ZooKeeper gives them after
        // a restart, so their clients can reconnect before anything expires.
        for (id, s) in sm.read().sessions() {
            tracker.add(*id, s.timeout_ms);
        }
        let addr = SocketAddr::new(config.client_port_address, config.client_port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let client_addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let stats = ServerStats::default();
        let (proposer, proposer_task) =
            Proposer::start(node.raft().clone(), stats.commit_latency.clone());
        let shared = Arc::new(Shared {
            config,
            raft: node.raft().clone(),
            proposer,
            sm,
            watches,
            tracker,
            stats,
            recipe_profile,
            conns_per_ip: Mutex::new(HashMap::new()),
            shutdown: shutdown_rx,
        });
        install_builtin_recipes(&shared).await;
        let mut tasks = vec![
            proposer_task,
            tokio::spawn(accept_loop(shared.clone(), listener)),
            tokio::spawn(expire_sessions_loop(shared.clone())),
            tokio::spawn(remove_stale_nodes_loop(shared.clone())),
            tokio::spawn(recipe_timers_loop(shared.clone())),
            tokio::spawn(crate::admin::track_snapshots(shared.clone())),
        ];
        tracing::info!(%client_addr, "serving ZooKeeper clients");
        let mut admin_addr = None;
        if shared.config.admin_enable_server {
            let addr = SocketAddr::new(
                shared.config.admin_server_address,
                shared.config.admin_server_port,
            );
            // As ZooKeeper: an admin server that cannot start is logged, not fatal.
            match TcpListener::bind(addr).await.and_then(|l| {
                let a = l.local_addr()?;
                Ok((l, a))
            }) {
                Ok((listener, bound)) => {
                    tracing::info!(addr = %bound, "admin HTTP server listening");
                    admin_addr = Some(bound);
                    tasks.push(tokio::spawn(crate::admin::serve(shared.clone(), listener)));
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "cannot start the admin HTTP server; continuing without it")
                }
            }
        }
        Ok(Server {
            client_addr,
            admin_addr,
            shared,
            shutdown_tx,
            tasks,
            node,
        })
    }

    /// Stops accepting, closes connections and shuts raft down (its database closed).
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        drop(self.shared);
        if let Err(e) = self.node.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((stream, remote)) => {
                if !shared.admit(remote.ip()) {
                    tracing::warn!(%remote, max = shared.config.max_client_cnxns, "too many connections from this address; closing");
                    continue;
                }
                let shared = shared.clone();
                tokio::spawn(async move {
                    connection::serve(shared.clone(), stream, remote).await;
                    shared.release(remote.ip());
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Leader duty: every half tick, propose the expiry of sessions past their deadline.
async fn expire_sessions_loop(shared: Arc<Shared>) {
    let period = Duration::from_millis((shared.config.tick_time_ms as u64 / 2).max(10));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Sessions counted in `session_expirations` whose expiry proposal has not succeeded
    // yet, so a retried proposal does not count them twice.
    let mut counted: std::collections::HashSet<i64> = std::collections::HashSet::new();
    loop {
        interval.tick().await;
        let expired = shared.tracker.take_expired(Instant::now());
        if expired.is_empty() {
            continue;
        }
        tracing::info!(sessions = ?expired.iter().map(|s| format!("0x{s:x}")).collect::<Vec<_>>(), "expiring sessions");
        // Counted when decided, before the proposal, so the counter has moved by the
        // time anyone sees the expiry's effects (deleted ephemerals, a closed
        // connection). A proposal that fails is retried without counting again.
        let new = expired.iter().filter(|id| counted.insert(**id)).count();
        shared
            .stats
            .session_expirations
            .fetch_add(new as u64, std::sync::atomic::Ordering::Relaxed);
        match shared
            .write(CommandOp::ExpireSessions {
                session_ids: expired.clone(),
            })
            .await
        {
            Ok(_) => {
                for id in &expired {
                    counted.remove(id);
                    shared.tracker.remove(*id);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "session expiry proposal failed; will retry");
                shared.tracker.retry(&expired);
            }
        }
    }
}

/// Installs the built-in recipes found in `recipe.builtinDir` that the cluster does
/// not have yet, before clients are served. Problems are logged, not fatal: a server
/// without its built-ins still serves ZooKeeper clients and uploaded recipes.
async fn install_builtin_recipes(shared: &Arc<Shared>) {
    let Some(dir) = shared.config.recipe_builtin_dir.clone() else {
        return;
    };
    for name in crate::config::BUILTIN_RECIPES {
        let path = dir.join(format!("{name}.wasm"));
        if shared.sm.read().recipe_resolve(name, -1).is_some() {
            continue;
        }
        let module = match std::fs::read(&path) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "built-in recipe not installed");
                continue;
            }
        };
        let op = CommandOp::RecipeInstall {
            name: name.to_string(),
            module,
            profile: shared.recipe_profile.clone(),
        };
        match shared.write(op).await {
            Ok(out) => match out.result {
                Ok(wazoo_proto::Response::RecipeFailure { code, message }) => {
                    tracing::warn!(recipe = name, error = code.name(), %message, "built-in recipe refused")
                }
                Ok(_) => tracing::info!(recipe = name, "built-in recipe installed"),
                Err(code) => {
                    tracing::warn!(
                        recipe = name,
                        error = code.name(),
                        "built-in recipe refused"
                    )
                }
            },
            Err(e) => tracing::warn!(recipe = name, error = %e, "built-in recipe not installed"),
        }
    }
}

/// How often the leader looks for due recipe timers: the resolution of recipe timers.
const RECIPE_TIMER_POLL: Duration = Duration::from_millis(20);

/// Leader duty: recipe timers are fired by log entries, never by a replica's clock.
/// When the earliest timer is due on the leader's clock, it proposes `RecipeTimers`;
/// the entry's time decides which timers fire, identically on every replica.
async fn recipe_timers_loop(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(RECIPE_TIMER_POLL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let due = shared.sm.read().next_recipe_timer();
        if due.is_none_or(|at| at > now_ms()) {
            continue;
        }
        if let Err(e) = shared.write(CommandOp::RecipeTimers).await {
            tracing::warn!(error = %e, "proposing recipe timers failed");
        }
    }
}

/// Leader duty (ZooKeeper's ContainerManager): propose the removal of empty
/// containers and expired TTL nodes. The state machine re-checks each at apply.
async fn remove_stale_nodes_loop(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(Duration::from_millis(
        shared.config.container_check_interval_ms,
    ));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let paths = shared.sm.read().stale_nodes(now_ms());
        if paths.is_empty() {
            continue;
        }
        tracing::debug!(
            count = paths.len(),
            "removing empty containers and expired TTL nodes"
        );
        if let Err(e) = shared.write(CommandOp::RemoveStale { paths }).await {
            tracing::warn!(error = %e, "stale node removal failed");
        }
    }
}
