//! Raft networking. For now only a standalone server exists: a one-voter cluster is its
//! own quorum and never sends an RPC, so the factory below hands out clients that refuse
//! every call with a clear `Unreachable` error. Replication replaces this module with a
//! TCP transport.

use std::future::Future;

use openraft::error::{
    Fatal, InstallSnapshotError, RPCError, RaftError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, RaftNetwork, RaftNetworkFactory, Snapshot, Vote};

use super::StoreTypeConfig;

/// Why every RPC of a standalone node fails.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "raft node {target} is unreachable: this server runs a standalone (single-voter) raft \
     cluster and has no transport to other nodes"
)]
pub struct NoTransport {
    target: u64,
}

/// The network factory of a standalone server.
#[derive(Debug, Clone, Copy, Default)]
pub struct StandaloneNetwork;

/// A "connection" to another node, which a standalone server cannot make.
#[derive(Debug, Clone)]
pub struct NoConnection {
    target: u64,
}

impl NoConnection {
    fn unreachable(&self) -> Unreachable {
        Unreachable::new(&NoTransport {
            target: self.target,
        })
    }
}

impl<C: StoreTypeConfig> RaftNetworkFactory<C> for StandaloneNetwork {
    type Network = NoConnection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> NoConnection {
        // Only happens if someone added a second node to a standalone cluster.
        tracing::warn!(
            node_id = target,
            addr = %node.addr,
            "standalone raft asked to connect to another node"
        );
        NoConnection { target }
    }
}

impl<C: StoreTypeConfig> RaftNetwork<C> for NoConnection {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<C>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote<u64>,
        _snapshot: Snapshot<C>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<u64>, StreamingError<C, Fatal<u64>>> {
        Err(StreamingError::Unreachable(self.unreachable()))
    }
}
