//! The RocksDB database shared by the log store and the state machine store.
//!
//! One database (hence one write-ahead log) holds every column family. That is what
//! makes the durability argument of the state machine store work: RocksDB recovers a
//! prefix of the WAL, so writes become durable in the order they were made, whatever
//! column family they touch. See the [module docs](super).

use std::path::Path;
use std::sync::Arc;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};
use parking_lot::RwLock;
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use super::{AppTypeConfig, Application, LogStore, StateMachineStore};

/// Raft log entries: key = log index (u64 big-endian, so RocksDB's byte order is log
/// order), value = rmp-serde of the `openraft::Entry`.
pub(crate) const CF_LOG: &str = "raft_log";
/// Raft log metadata: vote, committed log id, last purged log id.
pub(crate) const CF_LOG_META: &str = "raft_log_meta";
/// The application's rows, exactly as `Application::take_changes`/`dump` produce them.
pub(crate) const CF_SM_DATA: &str = "sm_data";
/// State machine metadata: last applied log id and last membership. Kept out of
/// `CF_SM_DATA` so application keys can never collide with it.
pub(crate) const CF_SM_META: &str = "sm_meta";
/// The current snapshot (metadata + serialized rows).
pub(crate) const CF_SNAPSHOT: &str = "snapshot";

const ALL_CFS: [&str; 5] = [CF_LOG, CF_LOG_META, CF_SM_DATA, CF_SM_META, CF_SNAPSHOT];

/// The open database plus a close signal.
///
/// Stores hold it through `Arc<RaftDb>`; the database closes (and releases its `LOCK`
/// file) when the last store is dropped. openraft does not join its state machine task on
/// shutdown, so whoever wants to reopen the same directory must wait for [`DbClosed`].
pub(crate) struct RaftDb {
    db: DB,
    // Declared after `db`: struct fields are dropped in declaration order, so by the time
    // this sender is dropped (which is what wakes `DbClosed::wait`) RocksDB is closed.
    closed: watch::Sender<()>,
}

impl RaftDb {
    /// Opens (creating if needed) the database in `dir` with every column family.
    pub(crate) fn open(dir: &Path) -> Result<Arc<Self>, StorageError<u64>> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = ALL_CFS
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir, cfs)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, &e))?;
        tracing::info!(dir = %dir.display(), "opened raft database");
        let (closed, _) = watch::channel(());
        Ok(Arc::new(Self { db, closed }))
    }

    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    /// The handle of one of our column families. They are all created by `open`, so a
    /// missing one means the database was tampered with: an error, not a panic.
    pub(crate) fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StorageError<u64>> {
        self.db.cf_handle(name).ok_or_else(|| {
            StorageIOError::new(
                ErrorSubject::Store,
                ErrorVerb::Read,
                AnyError::error(format!("column family {name} is missing")),
            )
            .into()
        })
    }

    pub(crate) fn closed_signal(&self) -> DbClosed {
        DbClosed {
            rx: self.closed.subscribe(),
        }
    }
}

/// Resolves once the raft database has been closed, i.e. every store using it has been
/// dropped. Does not keep the database open.
#[derive(Debug)]
pub struct DbClosed {
    rx: watch::Receiver<()>,
}

impl DbClosed {
    /// Waits until the database is closed.
    pub async fn wait(mut self) {
        // Nothing is ever sent on this channel: `changed` only returns (with an error)
        // once the sender, owned by the database wrapper, has been dropped.
        while self.rx.changed().await.is_ok() {}
    }
}

/// The log store and the state machine store of one database.
pub type Stores<C, A> = (LogStore<C>, StateMachineStore<C, A>);

/// Opens the raft database in `dir` and returns the two stores that share it.
///
/// The state machine is loaded from disk and `app` is restored to it with
/// [`Application::restore`]; on a brand new database the application's initial state
/// (`dump()`) is persisted instead. A restart therefore never replays the log from index 0.
pub fn open_stores<C, A>(dir: &Path, app: Arc<RwLock<A>>) -> Result<Stores<C, A>, StorageError<u64>>
where
    A: Application,
    C: AppTypeConfig<A>,
{
    let db = RaftDb::open(dir)?;
    let sm = StateMachineStore::open(db.clone(), app)?;
    let log = LogStore::new(db);
    Ok((log, sm))
}

/// A `StorageError` for a failed I/O or decoding operation.
pub(crate) fn io_err<E>(subject: ErrorSubject<u64>, verb: ErrorVerb, e: &E) -> StorageError<u64>
where
    E: std::error::Error + 'static,
{
    StorageIOError::new(subject, verb, AnyError::new(e)).into()
}

/// A `StorageError` for data that was read fine but makes no sense.
pub(crate) fn corrupt(subject: ErrorSubject<u64>, msg: impl ToString) -> StorageError<u64> {
    StorageIOError::new(subject, ErrorVerb::Read, AnyError::error(msg)).into()
}

/// Serializes a stored value. Named (map) encoding, so fields can be added later.
pub(crate) fn encode<T: Serialize>(
    subject: ErrorSubject<u64>,
    value: &T,
) -> Result<Vec<u8>, StorageError<u64>> {
    rmp_serde::to_vec_named(value).map_err(|e| io_err(subject, ErrorVerb::Write, &e))
}

/// Deserializes a stored value; garbage on disk becomes a `StorageError`.
pub(crate) fn decode<T: DeserializeOwned>(
    subject: ErrorSubject<u64>,
    bytes: &[u8],
) -> Result<T, StorageError<u64>> {
    rmp_serde::from_slice(bytes).map_err(|e| io_err(subject, ErrorVerb::Read, &e))
}
