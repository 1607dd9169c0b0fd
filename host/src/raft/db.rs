//! The RocksDB database shared by the log store and the state machine store.
//!
//! One database (hence one write-ahead log) holds every column family. That is what
//! makes the durability argument of the state machine store work: RocksDB recovers a
//! prefix of the WAL, so writes become durable in the order they were made, whatever
//! column family they touch. See the [module docs](super).

use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};
use parking_lot::RwLock;
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, CompactOptions, LogLevel, Options, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use super::{AppTypeConfig, Application, LogStore, StateMachineStore};

/// Raft log entries: key = log index (u64 big-endian, so RocksDB's byte order is log
/// order), value = CRC32 of the rest (4 bytes, big-endian) ++ rmp-serde of the
/// `openraft::Entry` (see [`encode_log_entry`]).
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

pub(crate) const ALL_CFS: [&str; 5] = [CF_LOG, CF_LOG_META, CF_SM_DATA, CF_SM_META, CF_SNAPSHOT];

/// What keeps the data directory bounded (docs/OPERATIONS.md, "Disk usage").
///
/// Without these, a long write load over a fixed set of znodes grows the directory
/// without bound even though the raft log is purged behind every snapshot and only one
/// snapshot is kept, because of RocksDB's own defaults:
///
/// * **WAL.** A WAL file is deleted only once every column family with data in it has
///   been flushed. By default a column family flushes when its 64 MiB memtable is full,
///   and the WAL is only forced out past 4 × the memtables of all five column families
///   (2.5 GiB), so every byte written (log entry, changed rows, each new snapshot) stayed
///   in one growing WAL file: about 3.4 KiB per 1 KiB `setData` in `host/tests/disk_usage.rs`,
///   whatever the live data. `max_total_wal_bytes` caps it: past it RocksDB flushes the
///   column families that keep the oldest WAL alive, then deletes that WAL.
/// * **Info log.** RocksDB's `LOG` grows forever by default (no size limit; Debian's
///   build even logs every WAL fsync at DEBUG level), and up to 1000 `LOG.old.*` files are
///   kept. It is now rolled at `info_log_max_bytes`, `info_log_files_kept` files are kept
///   (the logger deletes older ones when it rolls), and the level is INFO.
/// * **MANIFEST.** It gains a record per flush and compaction and is only rewritten at
///   1 GiB by default; it is now rewritten (and the old one deleted) at
///   [`MAX_MANIFEST_BYTES`].
/// * **Garbage in SST files.** Purged log entries (range tombstones), overwritten rows
///   and old versions of the snapshot stay in SST files until a compaction merges them.
///   A flush already drops what a newer write or tombstone in the same memtable covers,
///   and level-0 files are merged once there are four, so this garbage is bounded by a
///   few memtables' worth; `compaction_interval` additionally compacts every column
///   family periodically, which leaves about one copy of the live data.
///
/// None of this touches durability: appends and votes are still fsynced before they are
/// acknowledged (see [`super::log_store`]). A flush forced by the WAL cap is an ordinary
/// RocksDB flush, which with several column families first syncs every closed WAL, so the
/// "RocksDB recovers a prefix of its writes" argument of the [module docs](super) holds
/// across WAL files; a WAL is deleted only after the memtables it backed are in synced
/// SST files recorded in the synced MANIFEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageOptions {
    /// RocksDB `max_total_wal_size`: the WAL files' total size beyond which the column
    /// families keeping the oldest one alive are flushed and it is deleted
    /// (`rocksdb.maxTotalWalSize`).
    pub max_total_wal_bytes: u64,
    /// RocksDB `keep_log_file_num`: info log files kept, the current `LOG` included
    /// (`autopurge.snapRetainCount`).
    pub info_log_files_kept: usize,
    /// RocksDB `max_log_file_size`: the size at which `LOG` is rolled to `LOG.old.*`.
    pub info_log_max_bytes: usize,
    /// How often every column family is compacted (`autopurge.purgeInterval`); `None`
    /// disables the periodic compaction.
    pub compaction_interval: Option<Duration>,
}

/// Default of [`StorageOptions::max_total_wal_bytes`]: 64 MiB, ZooKeeper's
/// transaction log preallocation size.
pub const DEFAULT_MAX_TOTAL_WAL_BYTES: u64 = 64 << 20;
/// Default of [`StorageOptions::info_log_files_kept`] (ZooKeeper's default and minimum
/// `autopurge.snapRetainCount`).
pub const DEFAULT_INFO_LOG_FILES_KEPT: usize = 3;
/// Default of [`StorageOptions::info_log_max_bytes`]: 1 MiB.
pub const DEFAULT_INFO_LOG_MAX_BYTES: usize = 1 << 20;
/// Default of [`StorageOptions::compaction_interval`]: one hour (`purgeInterval=1`).
pub const DEFAULT_COMPACTION_INTERVAL: Duration = Duration::from_secs(3600);
/// The MANIFEST is rewritten from scratch (and the old one deleted) past this size.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            max_total_wal_bytes: DEFAULT_MAX_TOTAL_WAL_BYTES,
            info_log_files_kept: DEFAULT_INFO_LOG_FILES_KEPT,
            info_log_max_bytes: DEFAULT_INFO_LOG_MAX_BYTES,
            compaction_interval: Some(DEFAULT_COMPACTION_INTERVAL),
        }
    }
}

impl StorageOptions {
    /// The database-wide RocksDB options (column families keep RocksDB's defaults).
    fn db_options(&self) -> Options {
        let mut opts = Options::default();
        opts.set_max_total_wal_size(self.max_total_wal_bytes.max(1));
        opts.set_log_level(LogLevel::Info);
        opts.set_max_log_file_size(self.info_log_max_bytes.max(1));
        opts.set_keep_log_file_num(self.info_log_files_kept.max(1));
        opts.set_max_manifest_file_size(MAX_MANIFEST_BYTES);
        opts
    }
}

/// The periodic compaction thread: every `every`, compacts each column family over its
/// whole key range, which rewrites the live data once and drops everything deleted or
/// overwritten (purged log entries, old rows, old snapshots), as `wazoo data cleanup`
/// does offline. It ends as soon as the database is dropped (`stop` disconnects).
///
/// It holds a weak handle, upgraded only while compacting: if the stores are dropped
/// meanwhile, the database closes when the compaction ends (and [`DbClosed`] fires then).
fn spawn_maintenance(db: &Arc<RaftDb>, every: Duration, stop: mpsc::Receiver<()>) {
    let weak = Arc::downgrade(db);
    let spawned = std::thread::Builder::new()
        .name("raft-db-compact".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
                let Some(db) = weak.upgrade() else { return };
                let started = std::time::Instant::now();
                // Not exclusive: RocksDB's automatic compactions go on meanwhile, so a long
                // manual compaction never lets level-0 files pile up and stall writes.
                let mut copts = CompactOptions::default();
                copts.set_exclusive_manual_compaction(false);
                for name in ALL_CFS {
                    if let Some(cf) = db.db.cf_handle(name) {
                        db.db
                            .compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &copts);
                    }
                }
                tracing::debug!(elapsed = ?started.elapsed(), "periodic compaction of the raft database");
            }
        });
    if let Err(e) = spawned {
        // Only the periodic compaction is lost; RocksDB's own limits still apply.
        tracing::error!(error = %e, "cannot start the raft database compaction thread");
    }
}

/// The open database plus a close signal.
///
/// Stores hold it through `Arc<RaftDb>`; the database closes (and releases its `LOCK`
/// file) when the last store is dropped. openraft does not join its state machine task on
/// shutdown, so whoever wants to reopen the same directory must wait for [`DbClosed`].
pub(crate) struct RaftDb {
    db: DB,
    // Dropping it (with the database) ends the periodic compaction thread at once.
    _stop_maintenance: mpsc::Sender<()>,
    // Declared after `db`: struct fields are dropped in declaration order, so by the time
    // this sender is dropped (which is what wakes `DbClosed::wait`) RocksDB is closed.
    closed: watch::Sender<()>,
}

impl RaftDb {
    /// Opens (creating if needed) the database in `dir` with every column family, with
    /// the default [`StorageOptions`].
    #[cfg(test)]
    pub(crate) fn open(dir: &Path) -> Result<Arc<Self>, StorageError<u64>> {
        Self::open_with(dir, &StorageOptions::default())
    }

    /// Opens (creating if needed) the database in `dir` with every column family, its
    /// disk usage bounded by `storage` (see [`StorageOptions`]), and starts the periodic
    /// compaction if `storage` asks for it.
    pub(crate) fn open_with(
        dir: &Path,
        storage: &StorageOptions,
    ) -> Result<Arc<Self>, StorageError<u64>> {
        let mut opts = storage.db_options();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = ALL_CFS
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir, cfs)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, &e))?;
        tracing::info!(dir = %dir.display(), ?storage, "opened raft database");
        let (closed, _) = watch::channel(());
        let (stop_maintenance, stop_rx) = mpsc::channel();
        let db = Arc::new(Self {
            db,
            _stop_maintenance: stop_maintenance,
            closed,
        });
        if let Some(every) = storage.compaction_interval {
            spawn_maintenance(&db, every, stop_rx);
        }
        Ok(db)
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
    open_stores_with(dir, app, &StorageOptions::default())
}

/// [`open_stores`] with explicit [`StorageOptions`] (the disk usage bounds).
pub fn open_stores_with<C, A>(
    dir: &Path,
    app: Arc<RwLock<A>>,
    storage: &StorageOptions,
) -> Result<Stores<C, A>, StorageError<u64>>
where
    A: Application,
    C: AppTypeConfig<A>,
{
    let db = RaftDb::open_with(dir, storage)?;
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
    let mut buf = Vec::new();
    write_compact_named(&mut buf, value).map_err(|e| io_err(subject, ErrorVerb::Write, &e))?;
    Ok(buf)
}

/// Named rmp-serde encoding with byte vectors as MessagePack `bin` (one length and a
/// copy) instead of arrays of integers (a marker per byte above 127, and a serde call
/// per byte each way). znode data is `Vec<u8>` all over the protocol types: a 1 MiB
/// value took long enough to encode and decode in a debug build to miss openraft's
/// one-heartbeat append timeout. Decoding accepts both forms, so logs, snapshots and
/// peers written before this change still read.
pub(crate) fn write_compact_named<T: Serialize>(
    buf: &mut Vec<u8>,
    value: &T,
) -> Result<(), rmp_serde::encode::Error> {
    let mut ser = rmp_serde::Serializer::new(buf)
        .with_struct_map()
        .with_bytes(rmp_serde::config::BytesMode::ForceIterables);
    value.serialize(&mut ser)
}

/// Deserializes a stored value; garbage on disk becomes a `StorageError`.
pub(crate) fn decode<T: DeserializeOwned>(
    subject: ErrorSubject<u64>,
    bytes: &[u8],
) -> Result<T, StorageError<u64>> {
    rmp_serde::from_slice(bytes).map_err(|e| io_err(subject, ErrorVerb::Read, &e))
}

/// Bytes of the checksum that starts every raft log value.
pub(crate) const LOG_CHECKSUM_LEN: usize = 4;

/// Why a stored raft log value fails its checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogChecksumError {
    /// The value is too short to even hold the checksum.
    Short { len: usize },
    /// The CRC32 of the payload is not the stored one.
    Mismatch { stored: u32, computed: u32 },
}

impl std::fmt::Display for LogChecksumError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Short { len } => write!(
                f,
                "value of {len} bytes is shorter than its {LOG_CHECKSUM_LEN}-byte checksum"
            ),
            Self::Mismatch { stored, computed } => write!(
                f,
                "checksum mismatch (stored CRC32 {stored:#010x}, computed {computed:#010x})"
            ),
        }
    }
}

/// Verifies the checksum of a stored raft log value and returns its rmp-serde payload.
pub(crate) fn verify_log_value(value: &[u8]) -> Result<&[u8], LogChecksumError> {
    if value.len() < LOG_CHECKSUM_LEN {
        return Err(LogChecksumError::Short { len: value.len() });
    }
    let (head, payload) = value.split_at(LOG_CHECKSUM_LEN);
    let stored = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(LogChecksumError::Mismatch { stored, computed });
    }
    Ok(payload)
}

/// Serializes a raft log entry for storage: CRC32 (IEEE, big-endian) of the payload
/// followed by the payload, the named rmp-serde encoding of the entry. The checksum
/// catches any change to a value that still decodes (e.g. a byte inside a path), which
/// RocksDB's own block checksums cannot see when the damage happened before the write.
pub(crate) fn encode_log_entry<T: Serialize>(
    subject: ErrorSubject<u64>,
    entry: &T,
) -> Result<Vec<u8>, StorageError<u64>> {
    let mut buf = vec![0u8; LOG_CHECKSUM_LEN];
    write_compact_named(&mut buf, entry).map_err(|e| io_err(subject, ErrorVerb::Write, &e))?;
    let crc = crc32fast::hash(&buf[LOG_CHECKSUM_LEN..]);
    buf[..LOG_CHECKSUM_LEN].copy_from_slice(&crc.to_be_bytes());
    Ok(buf)
}

/// Verifies and deserializes the raft log value stored at `index`. A checksum mismatch
/// or undecodable payload is a `StorageError` on `LogIndex(index)`, never a panic.
pub(crate) fn decode_log_entry<T: DeserializeOwned>(
    index: u64,
    value: &[u8],
) -> Result<T, StorageError<u64>> {
    let payload = verify_log_value(value).map_err(|e| {
        corrupt(
            ErrorSubject::LogIndex(index),
            format!("log entry {index}: {e}"),
        )
    })?;
    decode(ErrorSubject::LogIndex(index), payload)
}

#[cfg(test)]
mod log_value_tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        index: u64,
        path: String,
        data: Vec<u8>,
    }

    fn sample() -> Sample {
        Sample {
            index: 7,
            path: "/some/path/with/a/string".into(),
            data: vec![1, 2, 3, 250],
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode_log_entry(ErrorSubject::Logs, &sample()).unwrap();
        assert_eq!(
            u32::from_be_bytes(bytes[..4].try_into().unwrap()),
            crc32fast::hash(&bytes[4..])
        );
        let back: Sample = decode_log_entry(7, &bytes).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = encode_log_entry(ErrorSubject::Logs, &sample()).unwrap();
        for pos in 0..bytes.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[pos] ^= mask;
                assert!(
                    verify_log_value(&damaged).is_err(),
                    "flip {mask:#04x} at {pos} not detected"
                );
                let err = decode_log_entry::<Sample>(42, &damaged).unwrap_err();
                let msg = err.to_string();
                assert!(
                    msg.contains("LogIndex(42)") && msg.contains("checksum mismatch"),
                    "{msg}"
                );
            }
        }
    }

    #[test]
    fn short_and_truncated_values_are_errors() {
        for len in 0..LOG_CHECKSUM_LEN {
            let err = decode_log_entry::<Sample>(3, &vec![0u8; len]).unwrap_err();
            assert!(err.to_string().contains("shorter than"), "{err}");
        }
        let bytes = encode_log_entry(ErrorSubject::Logs, &sample()).unwrap();
        assert!(verify_log_value(&bytes[..bytes.len() - 1]).is_err());
    }
}

#[cfg(test)]
mod storage_tests {
    use super::*;
    use std::time::Instant;

    fn sst_bytes(db: &RaftDb, cf: &'static str) -> u64 {
        db.db()
            .property_int_value_cf(db.cf(cf).unwrap(), "rocksdb.total-sst-files-size")
            .unwrap()
            .unwrap()
    }

    fn close(db: Arc<RaftDb>) {
        let closed = db.closed_signal();
        drop(db);
        futures::executor::block_on(closed.wait());
    }

    /// The periodic compaction (`autopurge.purgeInterval`) reclaims purged log entries
    /// that RocksDB's own compaction would leave in SST files (here: two level-0 files,
    /// below the four that trigger an automatic compaction).
    #[test]
    fn periodic_compaction_reclaims_purged_log_entries() {
        let dir = tempfile::tempdir().unwrap();
        let storage = StorageOptions {
            compaction_interval: Some(Duration::from_millis(100)),
            ..Default::default()
        };
        let db = RaftDb::open_with(dir.path(), &storage).unwrap();
        let cf = db.cf(CF_LOG).unwrap();
        // Incompressible values, so the sizes below are the data's.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut value = || -> Vec<u8> {
            (0..1000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        };
        for i in 0..2000u64 {
            db.db().put_cf(cf, i.to_be_bytes(), value()).unwrap();
        }
        let last = value();
        db.db().put_cf(cf, 2000u64.to_be_bytes(), &last).unwrap();
        db.db().flush_cf(cf).unwrap();
        // Compactions never drop live data: this is the size before the purge.
        let before = sst_bytes(&db, CF_LOG);
        assert!(before > 1_900_000, "{before}");
        db.db()
            .delete_range_cf(cf, 0u64.to_be_bytes(), 2000u64.to_be_bytes())
            .unwrap();
        db.db().flush_cf(cf).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while sst_bytes(&db, CF_LOG) > before / 10 {
            assert!(
                Instant::now() < deadline,
                "not compacted: {} bytes",
                sst_bytes(&db, CF_LOG)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            db.db().get_cf(cf, 2000u64.to_be_bytes()).unwrap(),
            Some(last)
        );
        assert_eq!(db.db().get_cf(cf, 1999u64.to_be_bytes()).unwrap(), None);
        close(db);
    }

    /// RocksDB's info log is rolled at `info_log_max_bytes` and only
    /// `info_log_files_kept` files (`LOG` included) are kept, across rolls and reopens.
    #[test]
    fn info_logs_are_rolled_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let storage = StorageOptions {
            info_log_max_bytes: 4096,
            info_log_files_kept: 3,
            ..Default::default()
        };
        for round in 0..6u64 {
            let db = RaftDb::open_with(dir.path(), &storage).unwrap();
            let cf = db.cf(CF_SM_DATA).unwrap();
            for i in 0..5u64 {
                db.db()
                    .put_cf(cf, (round * 10 + i).to_be_bytes(), b"x")
                    .unwrap();
                db.db().flush_cf(cf).unwrap(); // each flush logs a few lines
            }
            close(db);
        }
        let logs: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n == "LOG" || n.starts_with("LOG.old."))
            .collect();
        assert!(logs.len() <= 3, "{logs:?}");
        assert!(logs.contains(&"LOG".to_string()), "{logs:?}");
    }
}
