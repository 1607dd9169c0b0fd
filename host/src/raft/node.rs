//! Starting a raft node.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{Fatal, InitializeError, RaftError};
use openraft::metrics::WaitError;
use openraft::{BasicNode, Config, ConfigError, Raft, ServerState, SnapshotPolicy, StorageError};
use parking_lot::RwLock;

use super::{
    open_stores_with, AppTypeConfig, Application, DbClosed, StandaloneNetwork, StorageOptions,
};

/// The raft node id of a standalone server.
pub const STANDALONE_NODE_ID: u64 = 1;

/// Upper bound on the number of applied log entries kept after a snapshot (so a lagging
/// follower can catch up from the log rather than a full snapshot). Bounded so the log
/// is actually purged.
const MAX_LOGS_KEPT_AFTER_SNAPSHOT: u64 = 1000;

/// How long startup may take to elect this node and apply the committed log. A one-voter
/// cluster elects itself after one election timeout (well under a second), so hitting
/// this means something is broken; better to fail than to hang forever.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a raft node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid raft configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("raft storage: {0}")]
    Storage(#[from] StorageError<u64>),
    #[error("raft stopped: {0}")]
    Fatal(#[from] Fatal<u64>),
    #[error("cannot initialize the one-voter cluster: {0}")]
    Initialize(#[from] RaftError<u64, InitializeError<u64, BasicNode>>),
    #[error("node did not become a ready leader: {0}")]
    NotReady(#[from] WaitError),
}

/// The raft core task ended with an error (it panicked or was aborted).
#[derive(Debug, thiserror::Error)]
#[error("raft core task failed: {0}")]
pub struct ShutdownError(String);

/// A running raft node and what is needed to stop it cleanly.
pub struct RaftNode<C: openraft::RaftTypeConfig> {
    pub(super) raft: Raft<C>,
    pub(super) db_closed: DbClosed,
    pub(super) log_progress: Arc<super::log_store::LogProgress>,
}

impl<C: openraft::RaftTypeConfig> RaftNode<C> {
    /// The raft handle: propose writes with `client_write`, watch `metrics()`. Cheap to
    /// clone.
    pub fn raft(&self) -> &Raft<C> {
        &self.raft
    }

    /// How far this node's raft log is written and fsynced.
    pub fn log_progress(&self) -> Arc<super::log_store::LogProgress> {
        self.log_progress.clone()
    }

    /// Stops raft and waits until its database is closed, so the same directory can be
    /// opened again (openraft's own `shutdown` does not wait for its state machine task,
    /// which owns a handle on the database).
    pub async fn shutdown(self) -> Result<(), ShutdownError> {
        let res = self.raft.shutdown().await;
        drop(self.raft);
        self.db_closed.wait().await;
        tracing::info!("raft node shut down, database closed");
        res.map_err(|e| ShutdownError(e.to_string()))
    }
}

/// The openraft configuration of a standalone server: a snapshot every `snapshot_every`
/// applied entries, and the log purged behind it (keeping at most
/// `min(snapshot_every, 1000)` entries before the snapshot).
pub fn standalone_config(snapshot_every: u64) -> Result<Config, ConfigError> {
    let snapshot_every = snapshot_every.max(1);
    Config {
        cluster_name: "wazoo".to_string(),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_every),
        max_in_snapshot_log_to_keep: snapshot_every.min(MAX_LOGS_KEPT_AFTER_SNAPSHOT),
        ..Config::default()
    }
    .validate()
}

/// Starts a standalone server's raft: a one-voter cluster (node [`STANDALONE_NODE_ID`])
/// whose state lives in `data_dir`. See [`start_standalone_with_config`].
pub async fn start_standalone<C, A>(
    data_dir: &Path,
    app: Arc<RwLock<A>>,
    snapshot_every: u64,
) -> Result<RaftNode<C>, StartError>
where
    A: Application,
    A::Output: Default,
    C: AppTypeConfig<A>,
{
    let config = standalone_config(snapshot_every)?;
    start_standalone_with_config(data_dir, app, config).await
}

/// Like [`start_standalone`] with an explicit openraft configuration.
///
/// Opens the stores (restoring `app` from disk), starts raft, initializes the one-voter
/// cluster on first start, and returns once this node is leader and has applied every
/// entry of its log, so reads served from `app` reflect every write ever acknowledged.
pub async fn start_standalone_with_config<C, A>(
    data_dir: &Path,
    app: Arc<RwLock<A>>,
    config: Config,
) -> Result<RaftNode<C>, StartError>
where
    A: Application,
    A::Output: Default,
    C: AppTypeConfig<A>,
{
    start_standalone_with_storage(data_dir, app, config, &StorageOptions::default()).await
}

/// Like [`start_standalone_with_config`] with explicit [`StorageOptions`] (the bounds on
/// the data directory's size; the server takes them from zoo.cfg).
pub async fn start_standalone_with_storage<C, A>(
    data_dir: &Path,
    app: Arc<RwLock<A>>,
    config: Config,
    storage: &StorageOptions,
) -> Result<RaftNode<C>, StartError>
where
    A: Application,
    A::Output: Default,
    C: AppTypeConfig<A>,
{
    let config = Arc::new(config.validate()?);
    let (log_store, state_machine) = open_stores_with::<C, A>(data_dir, app, storage)?;
    let db_closed = log_store.db_closed();
    let log_progress = log_store.progress();
    let raft = Raft::new(
        STANDALONE_NODE_ID,
        config,
        StandaloneNetwork,
        log_store,
        state_machine,
    )
    .await?;
    let node = RaftNode {
        raft,
        db_closed,
        log_progress,
    };

    match become_ready_leader(&node.raft).await {
        Ok(()) => Ok(node),
        Err(e) => {
            tracing::error!(error = %e, "raft failed to start; shutting it down");
            // Do not leave a half-started raft running with the database open.
            if let Err(shutdown_err) = node.shutdown().await {
                tracing::error!(error = %shutdown_err, "raft shutdown after failed start");
            }
            Err(e)
        }
    }
}

async fn become_ready_leader<C: openraft::RaftTypeConfig<NodeId = u64, Node = BasicNode>>(
    raft: &Raft<C>,
) -> Result<(), StartError> {
    if !raft.is_initialized().await? {
        tracing::info!(
            node_id = STANDALONE_NODE_ID,
            "initializing a new one-voter raft cluster"
        );
        let members = BTreeMap::from([(STANDALONE_NODE_ID, BasicNode::default())]);
        raft.initialize(members).await?;
    }
    // Ready means leader with everything in its log applied. A leader's log holds every
    // committed entry, and in a one-voter cluster everything in it is committed (on a
    // restart openraft restores the leader in its old term and commits its flushed log;
    // after an election the new term's blank entry commits at once). So the application
    // then reflects every write ever acknowledged.
    let metrics = raft
        .wait(Some(STARTUP_TIMEOUT))
        .metrics(
            |m| {
                m.state == ServerState::Leader
                    && m.last_applied.map(|id| id.index) >= m.last_log_index
            },
            "standalone node is leader and has applied its log",
        )
        .await?;
    tracing::info!(
        term = metrics.current_term,
        last_applied = ?metrics.last_applied,
        "standalone raft node is leader"
    );
    Ok(())
}
