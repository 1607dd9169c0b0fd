//! # Wazoo host: a ZooKeeper-compatible server whose every write goes through raft
//!
//! Data flow, one module per stage:
//!
//! ```text
//!  TCP ─► server::connection ─(jute frames: wazoo_proto)─► server::router
//!            │                                              │
//!            │  reads: served from the local state machine  │ writes / session changes:
//!            │  (state_machine::StateMachine::read)         │ command::Command ─► raft (openraft log,
//!            │                                              │   RocksDB, fsync) ─► raft::state_machine_store
//!            ▼                                              ▼
//!   watch::WatchManager ◄── events ── state_machine::StateMachine::apply (deterministic:
//!            │                         time and zxid come from the log entry)
//!            ▼
//!   per-connection outbound queue ─► TCP (replies and notifications, in order)
//! ```
//!
//! - [`config`]: zoo.cfg parsing and command-line overrides.
//! - [`server`]: listener, connections, session liveness (leader), four-letter words.
//! - [`command`]: the log entry payload and the result of applying it.
//! - [`state_machine`]: znode tree + sessions; applies commands, serves reads.
//! - [`tree`]: the znode tree and ZooKeeper's Stat rules; [`acl`]: ACL checks.
//! - [`watch`]: server-local watches and event delivery.
//! - [`raft`]: openraft type config, RocksDB log and state-machine stores, network.
//! - [`bench`]: the ZooKeeper-protocol load generator behind `wazoo bench`.

pub mod acl;
pub mod app;
pub mod bench;
pub mod command;
pub mod config;
pub mod raft;
pub mod server;
pub mod state_machine;
pub mod tree;
pub mod watch;
