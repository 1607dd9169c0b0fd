//! Starting a raft node that is one member of an ensemble.
//!
//! Unlike [`super::start_standalone`], this does not wait to become leader: a member
//! serves (reads from its replica, writes through whichever member leads) as soon as
//! raft runs, and the others find it through their own configuration.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use openraft::error::InitializeError;
use openraft::{BasicNode, Config, Raft, RaftNetworkFactory};
use parking_lot::RwLock;

use super::{open_stores_with, AppTypeConfig, Application, RaftNode, StartError, StorageOptions};

/// Starts member `node_id` of an ensemble whose state lives in `data_dir`.
///
/// `bootstrap` is the voter set of the configuration file. A voter whose raft state
/// is pristine proposes it (openraft's `initialize`); every voter of a new ensemble
/// does so with the same set, which openraft documents as safe, so the ensemble forms
/// as soon as a majority is up, whichever members those are. A member with any raft
/// state ignores it: membership then comes from the log (it may have changed at
/// runtime since the file was written).
pub async fn start_member<C, A, N>(
    node_id: u64,
    data_dir: &Path,
    app: Arc<RwLock<A>>,
    config: Config,
    network: N,
    bootstrap: Option<BTreeMap<u64, BasicNode>>,
    storage: &StorageOptions,
) -> Result<RaftNode<C>, StartError>
where
    A: Application,
    A::Output: Default,
    C: AppTypeConfig<A>,
    N: RaftNetworkFactory<C>,
{
    let config = Arc::new(config.validate()?);
    let (log_store, state_machine) = open_stores_with::<C, A>(data_dir, app, storage)?;
    let db_closed = log_store.db_closed();
    let log_progress = log_store.progress();
    let raft = Raft::new(node_id, config, network, log_store, state_machine).await?;
    let node = RaftNode {
        raft,
        db_closed,
        log_progress,
    };
    if let Some(members) = bootstrap {
        let pristine = match node.raft.is_initialized().await {
            Ok(initialized) => !initialized,
            Err(e) => {
                let _ = node.shutdown().await;
                return Err(e.into());
            }
        };
        if pristine {
            tracing::info!(node_id, voters = ?members.keys().collect::<Vec<_>>(), "forming a new ensemble");
            match node.raft.initialize(members).await {
                Ok(()) => {}
                // Another voter's initialization reached us first: the ensemble exists.
                Err(openraft::error::RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => {
                    let _ = node.shutdown().await;
                    return Err(e.into());
                }
            }
        }
    }
    Ok(node)
}
