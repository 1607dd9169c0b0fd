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
//! - [`watch`]: server-local watches and event delivery; [`call_replies`]: where a
//!   recipe call's reply and completion go (deferred and quiet calls, and completions
//!   that overtake their call's reply).
//! - [`raft`]: openraft type config, RocksDB log and state-machine stores, node start.
//! - [`peer`]: the peer port of an ensemble: raft RPCs, writes forwarded to the leader,
//!   session liveness reports, read index for `sync`, status and membership changes.
//! - [`bench`]: the ZooKeeper-protocol load generator behind `wazoo bench`.
//! - [`admin`]: the admin HTTP server: Prometheus `/metrics`, `/health`, `/ready`,
//!   ZooKeeper AdminServer-style `/commands/<name>` JSON.
//! - [`tools`]: offline data-dir tools (`wazoo snapshot summary|diff`, `wazoo log dump`,
//!   `wazoo data cleanup`) over a stopped server's RocksDB, opened read-only.

pub mod acl;
pub mod admin;
pub mod admin_cli;
pub mod app;
pub mod bench;
pub mod bench_failover;
pub mod call_replies;
pub mod cli;
pub mod command;
pub mod config;
pub mod peer;
pub mod raft;
pub mod recipe;
pub mod recipe_cli;
pub mod server;
pub mod state_machine;
pub mod tools;
pub mod tree;
pub mod watch;
