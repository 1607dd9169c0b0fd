//! The client-facing server: accepts ZooKeeper connections, turns writes into raft
//! log entries, serves reads from the local state machine, and runs the leader's
//! periodic duties (session expiry, container/TTL cleanup) as log proposals.

pub mod cluster;
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
    #[error("ensemble configuration: {0}")]
    Cluster(String),
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
    /// None for a standalone server.
    pub cluster: Option<Arc<cluster::Cluster>>,
    /// Where this server listens for clients.
    pub client_addr: SocketAddr,
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
    pub async fn start(mut config: Config) -> Result<Server, ServerError> {
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
        let member = if config.servers.is_empty() {
            None
        } else {
            Some(MemberSetup::new(&mut config)?)
        };
        let (node, peer, cluster) = match &member {
            None => (
                crate::raft::start_standalone_with_storage::<TypeConfig, StateMachine>(
                    &raft_dir,
                    sm.clone(),
                    crate::raft::standalone_config(config.snap_count)
                        .map_err(crate::raft::StartError::from)?,
                    &config.storage_options(),
                )
                .await?,
                None,
                None,
            ),
            Some(m) => {
                let pool = crate::peer::PeerPool::new(config.peer_source_address);
                // Listen first: the other members may start replicating to us as soon
                // as our raft runs.
                let listener =
                    TcpListener::bind(m.peer_addr)
                        .await
                        .map_err(|source| ServerError::Bind {
                            addr: m.peer_addr,
                            source,
                        })?;
                let node = crate::raft::start_member::<TypeConfig, StateMachine, _>(
                    m.my_id,
                    &raft_dir,
                    sm.clone(),
                    m.raft_config(&config)?,
                    crate::peer::TcpNetwork::new(pool.clone()),
                    m.bootstrap.clone(),
                    &config.storage_options(),
                )
                .await?;
                let ctx = Arc::new(crate::peer::server::PeerContext {
                    raft: node.raft().clone(),
                    shared: std::sync::OnceLock::new(),
                });
                let task = tokio::spawn(crate::peer::server::accept_loop(ctx.clone(), listener));
                let cluster = Arc::new(cluster::Cluster {
                    my_id: m.my_id,
                    pool,
                    config_observers: m.observers.clone(),
                });
                tracing::info!(my_id = m.my_id, peer_addr = %m.peer_addr, "ensemble member started");
                (node, Some((ctx, task)), Some(cluster))
            }
        };
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
        let (proposer, proposer_task) = Proposer::start(
            node.raft().clone(),
            node.log_progress(),
            stats.commit_latency.clone(),
            cluster.clone(),
        );
        let shared = Arc::new(Shared {
            config,
            raft: node.raft().clone(),
            proposer,
            sm,
            watches,
            tracker,
            stats,
            recipe_profile,
            cluster,
            client_addr,
            conns_per_ip: Mutex::new(HashMap::new()),
            shutdown: shutdown_rx,
        });
        let mut tasks = vec![proposer_task];
        {
            // Restored recipes are compiled now, off the apply path (see
            // `StateMachine::prepare_recipes`), rather than by their first call.
            let sm = shared.sm.clone();
            tasks.push(tokio::spawn(async move {
                let _ =
                    tokio::task::spawn_blocking(move || StateMachine::precompile_all_recipes(&sm))
                        .await;
            }));
        }
        if let Some((ctx, task)) = peer {
            let _ = ctx.shared.set(shared.clone());
            tasks.push(task);
            tasks.push(tokio::spawn(cluster::liveness_loop(shared.clone())));
        }
        tasks.push(tokio::spawn(cluster::leader_duties_loop(shared.clone())));
        if shared.cluster.is_none() {
            install_builtin_recipes(&shared).await;
        } else {
            // A member may start before the ensemble has a leader: install in the
            // background, retrying, rather than delay serving clients.
            let shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                let mut backoff = Duration::from_millis(200);
                while !install_builtin_recipes(&shared).await {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }));
        }
        tasks.extend([
            tokio::spawn(accept_loop(shared.clone(), listener)),
            tokio::spawn(expire_sessions_loop(shared.clone())),
            tokio::spawn(remove_stale_nodes_loop(shared.clone())),
            tokio::spawn(recipe_timers_loop(shared.clone())),
            tokio::spawn(crate::admin::track_snapshots(shared.clone())),
        ]);
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
    let mut was_leader = false;
    loop {
        interval.tick().await;
        let leader = shared.is_leader();
        if !leader {
            was_leader = false;
            // Followers keep only the sessions the replicated table still has.
            let sm = shared.sm.read();
            shared.tracker.retain(|id| sm.session(id).is_some());
            continue;
        }
        if !was_leader {
            // Just became leader (or started): nothing this server saw as a follower
            // says when clients on other servers were last heard, so every session
            // gets a fresh timeout before anything is expired. Done here, in the loop
            // that expires, so no expiry can slip in before it.
            was_leader = true;
            let sessions: Vec<(i64, i32)> = shared
                .sm
                .read()
                .sessions()
                .iter()
                .map(|(id, s)| (*id, s.timeout_ms))
                .collect();
            tracing::info!(
                sessions = sessions.len(),
                "leading: every session gets a fresh timeout"
            );
            shared.tracker.reset(&sessions);
            continue;
        }
        {
            // Sessions created or restored through other servers are tracked from now
            // on; sessions gone from the table (closed, expired) are dropped.
            let sm = shared.sm.read();
            shared.tracker.retain(|id| sm.session(id).is_some());
            for (id, s) in sm.sessions() {
                shared.tracker.add_if_absent(*id, s.timeout_ms);
            }
        }
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
///
/// Returns false if a proposal failed (no leader yet, say), so the caller may retry.
async fn install_builtin_recipes(shared: &Arc<Shared>) -> bool {
    let Some(dir) = shared.config.recipe_builtin_dir.clone() else {
        return true;
    };
    let mut complete = true;
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
            Err(e) => {
                complete = false;
                tracing::warn!(recipe = name, error = %e, "built-in recipe not installed")
            }
        }
    }
    complete
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
        if !shared.is_leader() {
            continue;
        }
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
        if !shared.is_leader() {
            continue;
        }
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

/// What an ensemble member derives from its configuration before raft starts.
struct MemberSetup {
    my_id: u64,
    peer_addr: SocketAddr,
    /// The voters of the file, proposed by a pristine voter (None for an observer).
    bootstrap: Option<std::collections::BTreeMap<u64, openraft::BasicNode>>,
    observers: std::collections::BTreeMap<u64, openraft::BasicNode>,
}

// ServerError is large (it carries raft's start error); these run once, at start.
#[allow(clippy::result_large_err)]
impl MemberSetup {
    /// Reads `myid`, finds this server's line, and makes its client address the one
    /// the line gives (if it gives one).
    fn new(config: &mut Config) -> Result<MemberSetup, ServerError> {
        let myid_path = config.data_dir.join("myid");
        let text = std::fs::read_to_string(&myid_path).map_err(|e| {
            ServerError::Cluster(format!(
                "{}: {e} (an ensemble member needs its server id in dataDir/myid, as ZooKeeper)",
                myid_path.display()
            ))
        })?;
        let my_id: u64 = text.trim().parse().map_err(|e| {
            ServerError::Cluster(format!(
                "{}: {text:?} is not a server id: {e}",
                myid_path.display()
            ))
        })?;
        let me = config.servers.get(&my_id).cloned().ok_or_else(|| {
            ServerError::Cluster(format!(
                "myid is {my_id} but there is no server.{my_id} line"
            ))
        })?;
        let peer_addr = match config.peer_listen_address {
            Some(a) => a,
            None => resolve(&me.peer_addr())?,
        };
        if let Some((host, port)) = &me.client {
            config.client_port_address = host.parse().map_err(|e| {
                ServerError::Cluster(format!("server.{my_id}: client address {host:?}: {e}"))
            })?;
            config.client_port = *port;
        }
        config.my_id = my_id;
        let observer = me.observer || config.peer_type_observer;
        let node = |s: &crate::config::ServerSpec| openraft::BasicNode::new(s.peer_addr());
        let voters: std::collections::BTreeMap<_, _> = config
            .servers
            .iter()
            .filter(|(_, s)| !s.observer)
            .map(|(id, s)| (*id, node(s)))
            .collect();
        if voters.is_empty() {
            return Err(ServerError::Cluster("no server.N line is a voter".into()));
        }
        let observers = config
            .servers
            .iter()
            .filter(|(id, s)| s.observer || (**id == my_id && observer))
            .map(|(id, s)| (*id, node(s)))
            .collect();
        Ok(MemberSetup {
            my_id,
            peer_addr,
            bootstrap: (!observer && config.raft_bootstrap).then_some(voters),
            observers,
        })
    }

    /// The openraft configuration of a member: the standalone one (snapshots, purge)
    /// plus the election timing of `raft.electionTimeoutMs` / `raft.heartbeatMs`.
    ///
    /// `raft.electionTimeoutMs` = t promises that a follower that hears no leader starts
    /// an election after a random time in [t, 2t). openraft 0.9 waits longer than its
    /// own randomized timeout: a follower that had a leader first lets that leader's
    /// lease run out, and the lease is `election_timeout_max`, so an election starts
    /// `max + rand[min, max)` after the last heartbeat. Hence min = t/2 and max = t:
    /// elections start in [1.5t, 2t). (min = t, max = 2t, as before, gave [3t, 4t).)
    fn raft_config(&self, config: &Config) -> Result<openraft::Config, ServerError> {
        let base = crate::raft::standalone_config(config.snap_count)
            .map_err(|e| ServerError::Cluster(e.to_string()))?;
        // Keeps min = t/2 above the heartbeat interval, as openraft requires.
        let election = config.election_timeout_ms.max(config.heartbeat_ms * 3);
        openraft::Config {
            heartbeat_interval: config.heartbeat_ms,
            election_timeout_min: election / 2,
            election_timeout_max: election,
            // Snapshot chunks travel on a shared connection; allow for a busy machine.
            install_snapshot_timeout: election.max(2000),
            // openraft times an append out after one heartbeat interval: fewer entries
            // per append (each at most ~1 MiB, see server::proposer) keep it well inside.
            max_payload_entries: 8,
            ..base
        }
        .validate()
        .map_err(|e| ServerError::Cluster(e.to_string()))
    }
}

#[allow(clippy::result_large_err)]
fn resolve(addr: &str) -> Result<SocketAddr, ServerError> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .map_err(|e| ServerError::Cluster(format!("{addr}: {e}")))?
        .next()
        .ok_or_else(|| ServerError::Cluster(format!("{addr}: no address")))
}

#[cfg(test)]
mod member_tests {
    use super::*;

    fn raft_config(election_ms: u64, heartbeat_ms: u64) -> openraft::Config {
        let config = Config {
            election_timeout_ms: election_ms,
            heartbeat_ms,
            ..Config::default()
        };
        let setup = MemberSetup {
            my_id: 1,
            peer_addr: "127.0.0.1:1".parse().unwrap(),
            bootstrap: None,
            observers: Default::default(),
        };
        setup.raft_config(&config).expect("valid raft config")
    }

    /// openraft 0.9 starts an election `leader_lease + rand[min, max)` after the last
    /// heartbeat, with `leader_lease = election_timeout_max`: that window must lie in
    /// the [t, 2t) that `raft.electionTimeoutMs` = t promises. (It was [3t, 4t): a
    /// killed leader was replaced only after 1.5-2 s with t = 500 ms.)
    #[test]
    fn elections_start_within_one_to_two_election_timeouts() {
        for (t, hb) in [(500, 100), (1000, 100), (300, 100), (5000, 500)] {
            let c = raft_config(t, hb);
            let lease = c.election_timeout_max;
            let earliest = lease + c.election_timeout_min;
            let latest = lease + c.election_timeout_max;
            assert!(
                earliest >= t && latest <= 2 * t,
                "t={t}: elections start in [{earliest}, {latest}) ms"
            );
            assert!(c.heartbeat_interval < c.election_timeout_min, "t={t}");
        }
        // An election timeout below three heartbeats is raised to three heartbeats.
        let c = raft_config(100, 100);
        assert_eq!((c.election_timeout_min, c.election_timeout_max), (150, 300));
    }
}
