//! openraft's network over the peer connections: each raft RPC is one request on the
//! shared [`PeerClient`] of its target.

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};

use super::client::{CallError, PeerClient, PeerPool};
use super::wire::{PeerRequest, PeerResponse};
use crate::app::TypeConfig;

/// The network factory of an ensemble member.
#[derive(Clone)]
pub struct TcpNetwork {
    pool: PeerPool,
}

impl TcpNetwork {
    pub fn new(pool: PeerPool) -> TcpNetwork {
        TcpNetwork { pool }
    }
}

/// openraft's handle on one target.
pub struct TcpConnection {
    target: u64,
    client: PeerClient,
}

impl RaftNetworkFactory<TypeConfig> for TcpNetwork {
    type Network = TcpConnection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> TcpConnection {
        TcpConnection {
            target,
            client: self.pool.get(&node.addr),
        }
    }
}

type RpcErr<E = openraft::error::Infallible> = RPCError<u64, BasicNode, RaftError<u64, E>>;

fn transport<E: std::error::Error>(e: CallError) -> RPCError<u64, BasicNode, E> {
    match e {
        // Back off before retrying a server that is down, or whose connections close
        // before answering (a server going down, or a proxy refusing the link): retrying
        // at once would spin.
        CallError::Unreachable { .. } | CallError::Lost { .. } => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

/// A response of the wrong kind: a peer speaking another protocol version.
#[derive(Debug, thiserror::Error)]
#[error("peer {0} answered a raft request with an unexpected message")]
struct Unexpected(u64);

impl TcpConnection {
    async fn call(&self, req: PeerRequest, ttl: Duration) -> Result<PeerResponse, CallError> {
        self.client.call(&req, ttl).await
    }

    fn unexpected<E: std::error::Error>(&self) -> RPCError<u64, BasicNode, E> {
        RPCError::Network(NetworkError::new(&Unexpected(self.target)))
    }

    fn remote<E: std::error::Error>(&self, e: E) -> RPCError<u64, BasicNode, E> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

impl RaftNetwork<TypeConfig> for TcpConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcErr> {
        match self
            .call(PeerRequest::AppendEntries(rpc), option.hard_ttl())
            .await
            .map_err(transport)?
        {
            PeerResponse::AppendEntries(r) => r.map_err(|e| self.remote(e)),
            _ => Err(self.unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RpcErr<InstallSnapshotError>> {
        match self
            .call(PeerRequest::InstallSnapshot(rpc), option.hard_ttl())
            .await
            .map_err(transport)?
        {
            PeerResponse::InstallSnapshot(r) => r.map_err(|e| self.remote(e)),
            _ => Err(self.unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RpcErr> {
        match self
            .call(PeerRequest::Vote(rpc), option.hard_ttl())
            .await
            .map_err(transport)?
        {
            PeerResponse::Vote(r) => r.map_err(|e| self.remote(e)),
            _ => Err(self.unexpected()),
        }
    }
}
