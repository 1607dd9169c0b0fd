//! The raft layer: every write to Wazoo is a raft log entry.
//!
//! # Why everything goes through raft
//!
//! ZooKeeper orders all writes with a single global counter, the zxid. Wazoo gets the
//! same total order for free from raft: a write is proposed with
//! [`openraft::Raft::client_write`], becomes a log entry, and is applied to the
//! [`Application`] only once it is committed. **The zxid of a write is the index of its
//! log entry.** Even a standalone server runs a one-voter raft cluster
//! ([`start_standalone`]) so that there is exactly one write path, and so that turning a
//! standalone server into a replicated one is a membership change, not a data migration.
//!
//! Reads do not go through raft: the server reads the shared application state
//! (`Arc<parking_lot::RwLock<A>>`) directly, which is what ZooKeeper does too (reads are
//! served by the local replica; `sync` is the way to catch up).
//!
//! Blank entries (written by every new leader) and membership entries also consume a
//! log index; the application sees them through [`Application::apply_noop`] so that its
//! notion of "last zxid" follows the log exactly.
//!
//! # Durability rules
//!
//! Everything lives in one RocksDB database (one write-ahead log shared by all column
//! families), opened by [`open_stores`]:
//!
//! * **Log entries and the vote are fsynced before raft is told they are stored.**
//!   A vote or an append acknowledged to a peer (or counted toward a quorum) must
//!   survive a power loss, otherwise a node could vote twice in a term or forget an
//!   entry the leader already considers committed. See [`log_store`].
//! * **The state machine is written without fsync**, as one atomic `WriteBatch` holding
//!   the changed rows *and* the log id of the last applied entry. After a crash the state
//!   machine is therefore at some applied index no later than before the crash, its rows
//!   matching that index exactly, and openraft re-applies the (fsynced) log from there.
//!   See [`state_machine_store`].
//! * Because RocksDB recovers a *prefix* of its single WAL, a later synced write (the next
//!   log append) also makes every earlier unsynced write (state machine, purge) durable,
//!   and a lost unsynced write never survives while an earlier one is lost. In
//!   particular a log purge (which happens after the snapshot and state that cover the
//!   purged entries were written) can never be durable without them.
//! * The bounds on the data directory's size ([`db::StorageOptions`]: a WAL cap, rolled
//!   and limited info logs, a MANIFEST cap, a periodic compaction) change none of this:
//!   they only make RocksDB flush memtables earlier and delete files it no longer needs.
//!   A WAL file is deleted only once the memtables it backed are in synced SST files, and
//!   with several column families RocksDB syncs every closed WAL before it installs a
//!   flush, so the prefix argument above holds across WAL files.
//! * On startup the state machine is loaded from RocksDB, not rebuilt by replaying the
//!   log from index 0: the log is purged behind snapshots, so history is not available.
//!
//! # Layout
//!
//! * [`db`]: the shared RocksDB database, its column families, [`open_stores`].
//! * [`log_store`]: `RaftLogStorage` / `RaftLogReader`.
//! * [`state_machine_store`]: `RaftStateMachine` / `RaftSnapshotBuilder`, wrapping the
//!   [`Application`].
//! * [`network`]: the `RaftNetworkFactory` (a standalone placeholder for now).
//! * [`node`]: starting a raft node ([`start_standalone`]).
//! * [`cluster`]: starting one member of an ensemble ([`start_member`]); its network is
//!   `crate::peer::TcpNetwork`.

// Storage methods return openraft's `StorageError` (the storage traits require it); it is
// large, but boxing it would only add conversions at every trait boundary.
#![allow(clippy::result_large_err)]

use std::io::Cursor;

use openraft::{BasicNode, RaftTypeConfig};
use parking_lot::RwLock;

pub mod cluster;
pub mod db;
pub mod log_store;
pub mod network;
pub mod node;
pub mod state_machine_store;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub use cluster::start_member;
pub use db::{open_stores, open_stores_with, DbClosed, StorageOptions, Stores};
pub use log_store::LogStore;
pub use network::StandaloneNetwork;
pub use node::{
    standalone_config, start_standalone, start_standalone_with_config,
    start_standalone_with_storage, RaftNode, ShutdownError, StartError, STANDALONE_NODE_ID,
};
pub use state_machine_store::StateMachineStore;

/// What the raft layer needs of the deterministic application state machine.
pub trait Application: Send + Sync + 'static {
    type Command: openraft::AppData; // the log entry payload (C::D)
    type Output: openraft::AppDataResponse; // what apply returns to the proposer (C::R)
    /// Applies one committed command. `zxid` is the entry's log index. Must be deterministic.
    fn apply(&mut self, zxid: u64, cmd: &Self::Command) -> Self::Output;
    /// Called for blank and membership entries, which consume a log index but change no data.
    fn apply_noop(&mut self, zxid: u64);
    /// Rows (key, Some(value)) to put or (key, None) to delete, changed since the previous call.
    fn take_changes(&mut self) -> Vec<(Vec<u8>, Option<Vec<u8>>)>;
    /// Every row of the current state (for snapshots).
    fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)>;
    /// Replaces the whole state with these rows (startup and snapshot install). Must not
    /// drop server-local attachments the value holds (e.g. a watch notifier).
    fn restore(&mut self, rows: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), String>;
    /// Called for each entry about to be applied, *before* the store takes the
    /// application's write lock: slow, deterministic-result preparation (compiling a
    /// recipe module) happens here, so that applying does not hold the lock, and with it
    /// every reader and this server's raft heartbeats, for seconds. Whatever it caches
    /// must not change what `apply` returns.
    /// Whether [`prepare`](Self::prepare) has work to do for `cmd`: a cheap check made
    /// for every entry, so that entries with nothing to prepare (plain writes) are
    /// applied without handing the async worker over to a blocking section.
    fn needs_prepare(_app: &RwLock<Self>, _cmd: &Self::Command) -> bool
    where
        Self: Sized,
    {
        false
    }

    fn prepare(_app: &RwLock<Self>, _cmd: &Self::Command)
    where
        Self: Sized,
    {
    }

    /// Set when the application cannot apply the log deterministically on this server
    /// (e.g. its recipe runtime differs from the one the cluster pinned). The store then
    /// refuses to persist or apply further, which stops the raft node, rather than let
    /// this replica diverge silently.
    fn take_fatal(&mut self) -> Option<String> {
        None
    }
}

/// The openraft type configuration the log store works with: node ids are `u64`, nodes are
/// [`BasicNode`], entries are [`openraft::Entry`] and snapshots are in-memory byte buffers.
///
/// Implemented automatically for every matching config, e.g. one declared with the
/// defaults of `openraft::declare_raft_types!(pub TypeConfig: D = Cmd, R = Out)`.
pub trait StoreTypeConfig:
    RaftTypeConfig<
    NodeId = u64,
    Node = BasicNode,
    Entry = openraft::Entry<Self>,
    SnapshotData = Cursor<Vec<u8>>,
>
{
}

impl<C> StoreTypeConfig for C where
    C: RaftTypeConfig<
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<C>,
        SnapshotData = Cursor<Vec<u8>>,
    >
{
}

/// A [`StoreTypeConfig`] whose log payload and apply result are those of application `A`.
///
/// Implemented automatically; an application declares its config with
/// `openraft::declare_raft_types!(pub TypeConfig: D = <A as Application>::Command,
/// R = <A as Application>::Output)` (plus `use std::io::Cursor;` in scope, which the macro
/// needs for its default `SnapshotData`).
pub trait AppTypeConfig<A: Application>:
    StoreTypeConfig + RaftTypeConfig<D = A::Command, R = A::Output>
{
}

impl<C, A> AppTypeConfig<A> for C
where
    A: Application,
    C: StoreTypeConfig + RaftTypeConfig<D = A::Command, R = A::Output>,
{
}
