//! The raft log on RocksDB: `RaftLogStorage` and `RaftLogReader`.
//!
//! * `CF_LOG`: key = log index as u64 big-endian (so byte order is log order and range
//!   deletes work), value = CRC32 of the rest (4 bytes, big-endian) ++ rmp-serde of the
//!   `openraft::Entry`. Every read verifies the checksum: a mismatch is a `StorageError`
//!   on the entry's `LogIndex`, not a panic and not a silently different entry.
//! * `CF_LOG_META`: the vote, the committed log id and the last purged log id.
//!
//! Durability: appends, truncations and votes are fsynced before raft hears they are
//! done; the committed id and purges are not (see each method for why).

use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::{mpsc, Arc};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageError, Vote,
};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::db::{
    corrupt, decode, decode_log_entry, encode, encode_log_entry, io_err, RaftDb, CF_LOG,
    CF_LOG_META,
};
use super::{DbClosed, StoreTypeConfig};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// Key of the log entry at `index`.
fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Inverse of [`index_key`]; a key of the wrong length is corruption, not a panic.
fn key_index(key: &[u8]) -> Result<u64, StorageError<u64>> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| {
        corrupt(
            ErrorSubject::Logs,
            format!("log key has {} bytes, expected 8", key.len()),
        )
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// Adds to `batch` the deletion of every log entry with index in `[from, to]`.
fn delete_indexes(
    batch: &mut WriteBatch,
    cf: &rocksdb::ColumnFamily,
    from: u64,
    to_inclusive: u64,
) {
    // A range delete is one tombstone however many entries it covers. Its end is
    // exclusive, so the last index is deleted by a point delete (which also covers
    // `to_inclusive == u64::MAX`, where `to + 1` would overflow).
    if from < to_inclusive {
        batch.delete_range_cf(cf, index_key(from), index_key(to_inclusive));
    }
    if from <= to_inclusive {
        batch.delete_cf(cf, index_key(to_inclusive));
    }
}

/// The raft log. Cheap to clone (it is also its own `LogReader`); all clones share the
/// database and the fsync thread.
pub struct LogStore<C: StoreTypeConfig> {
    db: Arc<RaftDb>,
    syncer: mpsc::Sender<LogFlushed<C>>,
    progress: Arc<LogProgress>,
    recent: Arc<parking_lot::Mutex<RecentEntries<C>>>,
    committed: Arc<parking_lot::Mutex<CommittedHint>>,
    _types: PhantomData<C>,
}

/// The committed log id: the latest one openraft gave `save_committed` (what
/// `read_committed` answers), and when one was last written to RocksDB.
///
/// Why not write every one: openraft saves it after every commit, on its core task,
/// so each write (a WAL append and a memtable insert) sits on every write's path, and
/// it is only a hint: a restarting node re-applies the log up to it before it hears
/// from a leader, and a leader re-commits (and so re-applies) anything past a stale
/// one. An older value is still a committed id, never ahead of the durable log.
#[derive(Debug, Default)]
struct CommittedHint {
    latest: Option<LogId<u64>>,
    written_at: Option<std::time::Instant>,
}

/// At most one write of the committed id per this interval.
const COMMITTED_WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

impl CommittedHint {
    /// Records `committed`; true if it should be written now.
    fn record(&mut self, committed: Option<LogId<u64>>, now: std::time::Instant) -> bool {
        self.latest = committed;
        let due = self
            .written_at
            .is_none_or(|at| now.saturating_duration_since(at) >= COMMITTED_WRITE_INTERVAL);
        if due {
            self.written_at = Some(now);
        }
        due
    }
}

/// The entries appended last, kept so that the state machine's read of an entry right
/// after it commits (openraft 0.9 applies entries it reads back from the log) takes
/// them from memory instead of reading and decoding them from RocksDB. A read takes
/// the entries out: in a standalone server the apply is the only reader of fresh
/// entries; any other reader (a replication stream, an apply that comes after another
/// read) finds them on disk as before. Always a contiguous run of indexes.
struct RecentEntries<C: StoreTypeConfig> {
    entries: std::collections::VecDeque<(Entry<C>, usize)>,
    bytes: usize,
}

/// Bound on the encoded bytes of the entries kept in memory.
const RECENT_ENTRIES_MAX_BYTES: usize = 8 << 20;

impl<C: StoreTypeConfig> RecentEntries<C> {
    fn new() -> Self {
        Self {
            entries: std::collections::VecDeque::new(),
            bytes: 0,
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Remembers a just-written entry; a gap (a leader's overwrite) starts over.
    fn push(&mut self, entry: Entry<C>, size: usize) {
        if let Some((last, _)) = self.entries.back() {
            if last.log_id.index + 1 != entry.log_id.index {
                self.clear();
            }
        }
        self.bytes += size;
        self.entries.push_back((entry, size));
        while self.bytes > RECENT_ENTRIES_MAX_BYTES {
            match self.entries.pop_front() {
                Some((_, s)) => self.bytes -= s,
                None => break,
            }
        }
    }

    /// Takes the entries `start..=end` if all of them are here.
    fn take(&mut self, start: u64, end: u64) -> Option<Vec<Entry<C>>> {
        let first = self.entries.front()?.0.log_id.index;
        let last = self.entries.back()?.0.log_id.index;
        if start < first || end > last || start > end {
            return None;
        }
        let from = usize::try_from(start - first).ok()?;
        let count = usize::try_from(end - start + 1).ok()?;
        let taken: Vec<(Entry<C>, usize)> = self.entries.drain(from..from + count).collect();
        // What was before the range is older than anything still to be read: drop it,
        // so the run stays contiguous.
        for (_, s) in self.entries.drain(..from) {
            self.bytes -= s;
        }
        let mut out = Vec::with_capacity(taken.len());
        for (e, s) in taken {
            self.bytes -= s;
            out.push(e);
        }
        Some(out)
    }

    /// Forgets the entries with an index in `range`.
    fn forget(&mut self, range: impl RangeBounds<u64>) {
        let bytes = &mut self.bytes;
        self.entries.retain(|(e, s)| {
            let gone = range.contains(&e.log_id.index);
            if gone {
                *bytes -= *s;
            }
            !gone
        });
        // (Forgetting a prefix or a suffix keeps the run contiguous.)
    }
}

/// How far the log is written and how far it is on stable storage, for the proposer
/// (`server::proposer`): it may start the next entry once the previous one is
/// durable, so that the next fsync overlaps the previous entry's apply.
#[derive(Debug)]
pub struct LogProgress {
    appended: std::sync::atomic::AtomicU64,
    flushed: tokio::sync::watch::Sender<u64>,
}

impl Default for LogProgress {
    fn default() -> Self {
        Self {
            appended: std::sync::atomic::AtomicU64::new(0),
            flushed: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl LogProgress {
    /// The index of the last entry written to the log (durable or not).
    pub fn appended(&self) -> u64 {
        self.appended.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The index up to which the log is known to be on stable storage (0: unknown yet).
    pub fn flushed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.flushed.subscribe()
    }
}

impl<C: StoreTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            syncer: self.syncer.clone(),
            progress: self.progress.clone(),
            recent: self.recent.clone(),
            committed: self.committed.clone(),
            _types: PhantomData,
        }
    }
}

/// The fsync thread. Appends are written to RocksDB without fsync (so readers see them
/// at once) and their `LogFlushed` callbacks are queued here; this thread takes every
/// callback queued so far, fsyncs the WAL once (`flush_wal(true)` covers every write
/// made before it) and only then reports those appends flushed. The fsync therefore
/// never blocks an async runtime worker, and appends that arrive while one is running
/// share the next one.
///
/// It ends when every `LogStore` clone is dropped (the channel closes), releasing its
/// handle on the database.
fn spawn_syncer<C: StoreTypeConfig>(
    db: &Arc<RaftDb>,
    progress: Arc<LogProgress>,
) -> mpsc::Sender<LogFlushed<C>> {
    // A weak handle: the stores own the database, so it is closed by whoever drops the
    // last store (and `DbClosed` fires then), never later by this thread, and no open
    // database outlives the stores (RocksDB crashes if a process exits while a
    // database is being closed on another thread).
    let db = Arc::downgrade(db);
    let (tx, rx) = mpsc::channel::<LogFlushed<C>>();
    let spawned = std::thread::Builder::new()
        .name("raft-log-fsync".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut waiting = vec![first];
                waiting.extend(rx.try_iter());
                // DURABILITY RULE: a callback is called only after an fsync that started
                // after its entries were written has returned; see `append`.
                let fsync_started = std::time::Instant::now();
                // Every entry appended so far was written before this fsync starts.
                let covered = progress.appended();
                let synced = match db.upgrade() {
                    Some(db) => db.db().flush_wal(true).map_err(|e| e.to_string()),
                    None => Err("the raft database is closed".to_string()),
                };
                crate::admin::metrics::RAFT_LOG_FSYNC.observe(fsync_started.elapsed());
                match &synced {
                    Err(e) => tracing::error!(error = %e, "fsync of the raft log failed"),
                    Ok(()) => {
                        progress.flushed.send_if_modified(|f| {
                            let newer = covered > *f;
                            *f = (*f).max(covered);
                            newer
                        });
                    }
                }
                for cb in waiting {
                    cb.log_io_completed(synced.clone().map_err(io::Error::other));
                }
            }
        });
    if let Err(e) = spawned {
        // Without the thread the receiver is gone and every append reports an error
        // instead of hanging; say why once.
        tracing::error!(error = %e, "cannot start the raft log fsync thread");
    }
    tx
}

impl<C: StoreTypeConfig> Debug for LogStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

impl<C: StoreTypeConfig> LogStore<C> {
    pub(crate) fn new(db: Arc<RaftDb>) -> Self {
        let progress = Arc::new(LogProgress::default());
        let syncer = spawn_syncer::<C>(&db, progress.clone());
        Self {
            db,
            syncer,
            progress,
            recent: Arc::new(parking_lot::Mutex::new(RecentEntries::new())),
            committed: Arc::new(parking_lot::Mutex::new(CommittedHint::default())),
            _types: PhantomData,
        }
    }

    /// The log's write and fsync progress (shared by every clone).
    pub fn progress(&self) -> Arc<LogProgress> {
        self.progress.clone()
    }

    /// A signal that resolves once the database behind this store is closed (every
    /// store sharing it dropped), e.g. to reopen the same directory after shutdown.
    pub fn db_closed(&self) -> DbClosed {
        self.db.closed_signal()
    }

    fn get_meta<T: DeserializeOwned>(
        &self,
        key: &[u8],
        subject: ErrorSubject<u64>,
    ) -> Result<Option<T>, StorageError<u64>> {
        let cf = self.db.cf(CF_LOG_META)?;
        let bytes = self
            .db
            .db()
            .get_pinned_cf(cf, key)
            .map_err(|e| io_err(subject.clone(), ErrorVerb::Read, &e))?;
        bytes.map(|b| decode(subject, &b)).transpose()
    }

    fn put_meta<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        subject: ErrorSubject<u64>,
        sync: bool,
    ) -> Result<(), StorageError<u64>> {
        let cf = self.db.cf(CF_LOG_META)?;
        let bytes = encode(subject.clone(), value)?;
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db
            .db()
            .put_cf_opt(cf, key, bytes, &opts)
            .map_err(|e| io_err(subject, ErrorVerb::Write, &e))
    }

    /// The log id of the last entry present in the log, if any.
    fn last_entry_log_id(&self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        let cf = self.db.cf(CF_LOG)?;
        let Some(item) = self.db.db().iterator_cf(cf, IteratorMode::End).next() else {
            return Ok(None);
        };
        let (key, value) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
        let index = key_index(&key)?;
        let entry: Entry<C> = decode_log_entry(index, &value)?;
        if entry.log_id.index != index {
            return Err(corrupt(
                ErrorSubject::LogIndex(index),
                format!("entry stored at index {index} has log id {}", entry.log_id),
            ));
        }
        Ok(Some(entry.log_id))
    }
}

impl<C: StoreTypeConfig> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, StorageError<u64>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => match i.checked_add(1) {
                Some(i) => i,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => Some(i),
            Bound::Excluded(&i) => i.checked_sub(1),
            Bound::Unbounded => None,
        };
        if let Some(end) = end {
            if let Some(entries) = self.recent.lock().take(start, end) {
                return Ok(entries);
            }
        }
        let cf = self.db.cf(CF_LOG)?;
        let from = index_key(start);
        let mut entries = Vec::new();
        for item in self
            .db
            .db()
            .iterator_cf(cf, IteratorMode::From(&from, Direction::Forward))
        {
            let (key, value) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
            let index = key_index(&key)?;
            if !range.contains(&index) {
                break;
            }
            let entry: Entry<C> = decode_log_entry(index, &value)?;
            if entry.log_id.index != index {
                return Err(corrupt(
                    ErrorSubject::LogIndex(index),
                    format!("entry stored at index {index} has log id {}", entry.log_id),
                ));
            }
            // The log is contiguous: a hole means entries were lost.
            if let Some(prev) = entries.last().map(|e: &Entry<C>| e.log_id.index) {
                if index != prev + 1 {
                    return Err(corrupt(
                        ErrorSubject::LogIndex(prev + 1),
                        format!(
                            "log entry {} is missing (next present is {index})",
                            prev + 1
                        ),
                    ));
                }
            }
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl<C: StoreTypeConfig> RaftLogStorage<C> for LogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<u64>> {
        let last_purged_log_id: Option<LogId<u64>> =
            self.get_meta(KEY_LAST_PURGED, ErrorSubject::Logs)?;
        // With every entry purged the log is empty, and its last log id is the purged one.
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        // DURABILITY: fsync. A vote granted and then forgotten in a crash would let this
        // node vote a second time in the same term, electing two leaders.
        self.put_meta(KEY_VOTE, vote, ErrorSubject::Vote, true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.get_meta(KEY_VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        // No fsync, and at most every COMMITTED_WRITE_INTERVAL (see `CommittedHint`):
        // the committed id only lets a restarting node re-apply committed entries
        // before it hears from a leader. Losing the latest value just means that node
        // waits for the leader to tell it again; it can never be ahead of the durable
        // log, because it is written after those entries were fsynced into the same WAL.
        if !self
            .committed
            .lock()
            .record(committed, std::time::Instant::now())
        {
            return Ok(());
        }
        self.put_meta(KEY_COMMITTED, &committed, ErrorSubject::Store, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        if let Some(latest) = self.committed.lock().latest {
            return Ok(Some(latest));
        }
        // Stored as `Option<LogId>`: absent key and stored `None` both mean "unknown".
        Ok(self
            .get_meta::<Option<LogId<u64>>>(KEY_COMMITTED, ErrorSubject::Store)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = self.db.cf(CF_LOG)?;
        let mut batch = WriteBatch::default();
        let mut last = None;
        let mut written = Vec::new();
        for entry in entries {
            let value = encode_log_entry(ErrorSubject::Log(entry.log_id), &entry)?;
            let size = value.len();
            batch.put_cf(cf, index_key(entry.log_id.index), value);
            last = Some(entry.log_id);
            written.push((entry, size));
        }
        // DURABILITY RULE: an appended entry may be acknowledged to the leader (or counted
        // toward the quorum by a leader) only once it is on stable storage; otherwise an
        // entry reported as committed could vanish in a power loss. The batch is written
        // here without fsync and `callback` (which is what tells openraft the entries are
        // flushed) goes to the fsync thread, which calls it only after an fsync of the
        // WAL that started after this write returned (`spawn_syncer`). openraft 0.9 waits
        // for the callback before it appends the next entry; group commit of client
        // operations happens one level up, in `server::proposer`.
        match self.db.db().write_opt(batch, &WriteOptions::default()) {
            Ok(()) => {
                tracing::trace!(last = ?last, "appended raft log entries");
                {
                    let mut recent = self.recent.lock();
                    for (entry, size) in written {
                        recent.push(entry, size);
                    }
                }
                if let Some(last) = last {
                    // (A truncation may move the log back; the proposer only uses this
                    // as a hint, so a stale value costs at most one early start.)
                    self.progress
                        .appended
                        .store(last.index, std::sync::atomic::Ordering::Release);
                }
                if let Err(mpsc::SendError(cb)) = self.syncer.send(callback) {
                    let e = io::Error::other("raft log fsync thread is not running");
                    cb.log_io_completed(Err(io::Error::other(e.to_string())));
                    return Err(io_err(ErrorSubject::Logs, ErrorVerb::Write, &e));
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "failed to append raft log entries");
                callback.log_io_completed(Err(io::Error::other(e.to_string())));
                Err(io_err(ErrorSubject::Logs, ErrorVerb::Write, &e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        tracing::debug!(%log_id, "truncating raft log since");
        self.recent.lock().forget(log_id.index..);
        let cf = self.db.cf(CF_LOG)?;
        let mut batch = WriteBatch::default();
        delete_indexes(&mut batch, cf, log_id.index, u64::MAX);
        let mut opts = WriteOptions::default();
        // fsync: truncation only happens when a new leader overwrites conflicting
        // entries, which is rare; syncing it means the on-disk log never mixes entries of
        // the old and the new leader whatever happens next.
        opts.set_sync(true);
        self.db
            .db()
            .write_opt(batch, &opts)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        tracing::debug!(%log_id, "purging raft log up to");
        self.recent.lock().forget(..=log_id.index);
        let cf = self.db.cf(CF_LOG)?;
        let meta_cf = self.db.cf(CF_LOG_META)?;
        let mut batch = WriteBatch::default();
        // The purged id and the deletion are one atomic batch, so `get_log_state` never
        // sees entries missing without knowing they were purged.
        batch.put_cf(
            meta_cf,
            KEY_LAST_PURGED,
            encode(ErrorSubject::Logs, &log_id)?,
        );
        delete_indexes(&mut batch, cf, 0, log_id.index);
        // No fsync: purged entries are covered by a snapshot and by the state machine,
        // both written earlier into the same WAL. RocksDB recovers a prefix of the WAL, so
        // if this purge survives a crash they do too; if it is lost, the entries simply
        // come back and are purged again.
        self.db
            .db()
            .write(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }
}

#[cfg(test)]
mod recent_entries_tests {
    use super::RecentEntries;
    use crate::raft::tests::KvTypeConfig;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    fn entry(term: u64, index: u64) -> Entry<KvTypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn ids(entries: &[Entry<KvTypeConfig>]) -> Vec<(u64, u64)> {
        entries
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    #[test]
    fn reads_take_the_entries_and_overwrites_replace_them() {
        let mut recent = RecentEntries::<KvTypeConfig>::new();
        for i in 1..=5 {
            recent.push(entry(1, i), 10);
        }
        assert_eq!(
            recent.take(2, 3).as_deref().map(ids),
            Some(vec![(1, 2), (1, 3)])
        );
        // Taken (and what came before them dropped): the next read goes to disk.
        assert!(recent.take(2, 3).is_none());
        assert!(recent.take(1, 1).is_none());
        assert_eq!(recent.bytes, 20);
        // A new leader overwrites 5 (truncate, then append at 5 in its term).
        recent.forget(5..);
        recent.push(entry(2, 5), 10);
        assert_eq!(
            recent.take(4, 5).as_deref().map(ids),
            Some(vec![(1, 4), (2, 5)])
        );
        assert_eq!(recent.bytes, 0);
        // A gap starts over; a range not wholly here is not served.
        recent.push(entry(2, 9), 10);
        recent.push(entry(2, 10), 10);
        assert!(recent.take(8, 10).is_none());
        assert_eq!(
            recent.take(9, 10).as_deref().map(ids),
            Some(vec![(2, 9), (2, 10)])
        );
        // Purged entries are forgotten; the bound on bytes drops the oldest.
        recent.push(entry(2, 11), 10);
        recent.forget(..=11);
        assert!(recent.take(11, 11).is_none());
        recent.push(entry(2, 12), super::RECENT_ENTRIES_MAX_BYTES);
        recent.push(entry(2, 13), 1);
        assert!(recent.take(12, 12).is_none());
        assert_eq!(recent.take(13, 13).as_deref().map(ids), Some(vec![(2, 13)]));
    }
}

#[cfg(test)]
mod committed_hint_tests {
    use super::{CommittedHint, COMMITTED_WRITE_INTERVAL};
    use openraft::{CommittedLeaderId, LogId};
    use std::time::{Duration, Instant};

    fn id(index: u64) -> Option<LogId<u64>> {
        Some(LogId::new(CommittedLeaderId::new(1, 1), index))
    }

    #[test]
    fn written_at_most_once_per_interval_and_always_remembered() {
        let t0 = Instant::now();
        let mut h = CommittedHint::default();
        assert!(h.record(id(1), t0), "the first one is written");
        assert!(!h.record(id(2), t0 + Duration::from_millis(1)));
        assert!(!h.record(id(3), t0 + COMMITTED_WRITE_INTERVAL / 2));
        // Not written, but what read_committed answers.
        assert_eq!(h.latest, id(3));
        assert!(h.record(id(4), t0 + COMMITTED_WRITE_INTERVAL));
        assert!(!h.record(
            id(5),
            t0 + COMMITTED_WRITE_INTERVAL + Duration::from_millis(1)
        ));
        assert_eq!(h.latest, id(5));
    }
}
