//! The peer port: how the servers of an ensemble talk to each other.
//!
//! ```text
//!  follower                                   leader
//!  server::proposer ── Forward{ops} ──────────► peer::server ─► server::proposer ─► raft
//!  server::cluster  ── Alive{sessions} ───────► (session tracker: leader decides expiry)
//!  sync             ── ReadIndex ─────────────► raft.ensure_linearizable
//!  raft (openraft)  ◄─ AppendEntries / Vote / InstallSnapshot ─► raft
//! ```
//!
//! - [`wire`]: frames and messages (rmp-serde).
//! - [`client`]: one multiplexed connection per remote server ([`client::PeerPool`]).
//! - [`network`]: openraft's `RaftNetworkFactory` over those connections.
//! - [`server`]: the listener, dispatching to raft or to the server.

pub mod client;
pub mod network;
pub mod server;
pub mod wire;

pub use client::{CallError, PeerClient, PeerPool};
pub use network::TcpNetwork;
pub use wire::{PeerRequest, PeerResponse, StatusReport};
