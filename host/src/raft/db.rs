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
    rmp_serde::encode::write_named(&mut buf, entry)
        .map_err(|e| io_err(subject, ErrorVerb::Write, &e))?;
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
