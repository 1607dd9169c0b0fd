//! The state machine on RocksDB: `RaftStateMachine` and `RaftSnapshotBuilder` around an
//! [`Application`].
//!
//! The application keeps its state in memory (shared as `Arc<RwLock<A>>` so the server can
//! serve reads from it) and reports the rows it changed through
//! [`Application::take_changes`]. This store persists those rows in `CF_SM_DATA`, with the
//! last applied log id and membership in `CF_SM_META`, and restores the application from
//! them on startup: a restart does not replay the log from the beginning (which is purged
//! behind snapshots anyway).
//!
//! Snapshots: the data openraft ships is the rmp-serde encoding of a [`SnapshotPayload`]
//! (the applied log id, the membership and every row of [`Application::dump`]). The current
//! snapshot is kept in `CF_SNAPSHOT` (metadata and payload under two keys).

use std::fmt::Debug;
use std::io::Cursor;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend,
    RaftSnapshotBuilder, StorageError, StorageIOError, StoredMembership,
};
use parking_lot::{Mutex, RwLock};
use rocksdb::{IteratorMode, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

use super::db::{corrupt, decode, encode, io_err, RaftDb, CF_SM_DATA, CF_SM_META, CF_SNAPSHOT};
use super::{AppTypeConfig, Application, DbClosed};

pub(crate) const KEY_LAST_APPLIED: &[u8] = b"last_applied";
pub(crate) const KEY_LAST_MEMBERSHIP: &[u8] = b"last_membership";
const KEY_SNAPSHOT_META: &[u8] = b"meta";
const KEY_SNAPSHOT_DATA: &[u8] = b"data";

/// Version of the [`SnapshotPayload`] encoding, checked on install.
const SNAPSHOT_FORMAT: u32 = 1;

type Membership = StoredMembership<u64, BasicNode>;

/// What the state machine has applied. Only changed while the application's write lock is
/// held, so that a reader holding the application's read lock sees rows and applied id
/// that match (this is how snapshots are consistent).
#[derive(Debug, Clone, Default)]
struct AppliedState {
    last_applied: Option<LogId<u64>>,
    last_membership: Membership,
}

/// A byte string that rmp-serde encodes as msgpack `bin` (serde encodes a plain `Vec<u8>`
/// as an array of integers, up to twice the size).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bytes(Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Bytes, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(b) = seq.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(Bytes(v))
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}

/// The content of a snapshot as shipped by openraft and stored in `CF_SNAPSHOT`.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotPayload {
    format: u32,
    last_applied: Option<LogId<u64>>,
    last_membership: Membership,
    rows: Vec<(Bytes, Bytes)>,
}

/// The raft state machine: persists an [`Application`] in RocksDB.
///
/// Cheap to clone; a clone is also the snapshot builder (it reads a consistent view
/// through the application's read lock).
pub struct StateMachineStore<C, A> {
    db: Arc<RaftDb>,
    app: Arc<RwLock<A>>,
    applied: Arc<Mutex<AppliedState>>,
    /// Serializes writes of the current snapshot (builders run in their own tasks,
    /// concurrently with installs).
    snapshot_lock: Arc<Mutex<()>>,
    _types: PhantomData<C>,
}

impl<C, A> Clone for StateMachineStore<C, A> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            app: self.app.clone(),
            applied: self.applied.clone(),
            snapshot_lock: self.snapshot_lock.clone(),
            _types: PhantomData,
        }
    }
}

impl<C, A> Debug for StateMachineStore<C, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachineStore")
            .field("applied", &*self.applied.lock())
            .finish_non_exhaustive()
    }
}

impl<C, A> StateMachineStore<C, A>
where
    A: Application,
    C: AppTypeConfig<A>,
{
    /// Loads the persisted state machine and restores `app` to it.
    ///
    /// On a brand new database nothing is restored: instead the application's initial
    /// state (`dump()`, e.g. a root node) is written as the baseline, so that from the
    /// first apply on the rows on disk always mirror the application.
    pub(crate) fn open(db: Arc<RaftDb>, app: Arc<RwLock<A>>) -> Result<Self, StorageError<u64>> {
        let meta_cf = db.cf(CF_SM_META)?;
        let read_meta = |key: &[u8]| -> Result<Option<Vec<u8>>, StorageError<u64>> {
            db.db()
                .get_cf(meta_cf, key)
                .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, &e))
        };
        let last_applied: Option<LogId<u64>> = read_meta(KEY_LAST_APPLIED)?
            .map(|b| decode(ErrorSubject::StateMachine, &b))
            .transpose()?;
        let last_membership: Option<Membership> = read_meta(KEY_LAST_MEMBERSHIP)?
            .map(|b| decode(ErrorSubject::StateMachine, &b))
            .transpose()?;

        let data_cf = db.cf(CF_SM_DATA)?;
        let mut rows = Vec::new();
        for item in db.db().iterator_cf(data_cf, IteratorMode::Start) {
            let (k, v) =
                item.map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, &e))?;
            rows.push((k.into_vec(), v.into_vec()));
        }

        let persisted = last_applied.is_some() || last_membership.is_some() || !rows.is_empty();
        {
            let mut app = app.write();
            if persisted {
                let n = rows.len();
                app.restore(rows).map_err(|e| {
                    corrupt(ErrorSubject::StateMachine, format!("restore failed: {e}"))
                })?;
                tracing::info!(rows = n, last_applied = ?last_applied, "restored state machine");
            } else {
                let mut batch = WriteBatch::default();
                for (k, v) in app.dump() {
                    batch.put_cf(data_cf, k, v);
                }
                db.db()
                    .write(batch)
                    .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, &e))?;
                tracing::info!("new state machine, initial state persisted");
            }
            // Disk now mirrors the application exactly; whatever it recorded as changed
            // before (initial state, restore) is already there.
            drop(app.take_changes());
        }

        Ok(Self {
            db,
            app,
            applied: Arc::new(Mutex::new(AppliedState {
                last_applied,
                last_membership: last_membership.unwrap_or_default(),
            })),
            snapshot_lock: Arc::new(Mutex::new(())),
            _types: PhantomData,
        })
    }

    /// The application this store drives (the same `Arc` the server reads from).
    pub fn app(&self) -> &Arc<RwLock<A>> {
        &self.app
    }

    /// A signal that resolves once the database behind this store is closed.
    pub fn db_closed(&self) -> DbClosed {
        self.db.closed_signal()
    }

    /// Adds the applied id and membership to `batch`.
    fn put_applied(
        &self,
        batch: &mut WriteBatch,
        state: &AppliedState,
    ) -> Result<(), StorageError<u64>> {
        let cf = self.db.cf(CF_SM_META)?;
        batch.put_cf(
            cf,
            KEY_LAST_APPLIED,
            encode(ErrorSubject::StateMachine, &state.last_applied)?,
        );
        batch.put_cf(
            cf,
            KEY_LAST_MEMBERSHIP,
            encode(ErrorSubject::StateMachine, &state.last_membership)?,
        );
        Ok(())
    }

    /// Adds the storing of a snapshot as the current one to `batch`.
    fn put_snapshot(
        &self,
        batch: &mut WriteBatch,
        meta: &SnapshotMeta<u64, BasicNode>,
        data: &[u8],
    ) -> Result<(), StorageError<u64>> {
        let cf = self.db.cf(CF_SNAPSHOT)?;
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        batch.put_cf(cf, KEY_SNAPSHOT_META, encode(subject, meta)?);
        batch.put_cf(cf, KEY_SNAPSHOT_DATA, data);
        Ok(())
    }

    fn read_current_snapshot_meta(
        &self,
    ) -> Result<Option<SnapshotMeta<u64, BasicNode>>, StorageError<u64>> {
        let cf = self.db.cf(CF_SNAPSHOT)?;
        let bytes = self
            .db
            .db()
            .get_pinned_cf(cf, KEY_SNAPSHOT_META)
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, &e))?;
        bytes
            .map(|b| decode(ErrorSubject::Snapshot(None), &b))
            .transpose()
    }
}

impl<C, A> RaftStateMachine<C> for StateMachineStore<C, A>
where
    A: Application,
    // Blank and membership entries produce a reply too (openraft answers e.g. a
    // membership change with it); they change nothing, so they get the default output.
    A::Output: Default,
    C: AppTypeConfig<A>,
{
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, Membership), StorageError<u64>> {
        let st = self.applied.lock();
        Ok((st.last_applied, st.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<A::Output>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        let entries: Vec<Entry<C>> = entries.into_iter().collect();
        // Slow preparation (recipe compilation) outside the write lock; on a worker of
        // a multi-threaded runtime, with that worker handed over to other tasks meanwhile.
        // Only entries that need it: block_in_place costs a thread handover per call,
        // which plain writes (nearly every entry) must not pay.
        let to_prepare: Vec<&A::Command> = entries
            .iter()
            .filter_map(|entry| match entry.payload {
                EntryPayload::Normal(ref cmd) if A::needs_prepare(&self.app, cmd) => Some(cmd),
                _ => None,
            })
            .collect();
        if !to_prepare.is_empty() {
            let prepare = || {
                for cmd in &to_prepare {
                    A::prepare(&self.app, cmd);
                }
            };
            match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                    tokio::task::block_in_place(prepare)
                }
                _ => prepare(),
            }
        }
        let (changes, state) = {
            let mut app = self.app.write();
            let mut state = self.applied.lock().clone();
            for entry in entries {
                let zxid = entry.log_id.index;
                match entry.payload {
                    EntryPayload::Normal(ref cmd) => {
                        replies.push(app.apply(zxid, cmd));
                        if let Some(why) = app.take_fatal() {
                            // Nothing of this batch is persisted: after the operator fixes
                            // the server it re-applies from the last persisted index.
                            return Err(StorageIOError::new(
                                ErrorSubject::Apply(entry.log_id),
                                ErrorVerb::Write,
                                AnyError::error(why),
                            )
                            .into());
                        }
                    }
                    EntryPayload::Blank => {
                        app.apply_noop(zxid);
                        replies.push(A::Output::default());
                    }
                    EntryPayload::Membership(membership) => {
                        app.apply_noop(zxid);
                        state.last_membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        replies.push(A::Output::default());
                    }
                }
                state.last_applied = Some(entry.log_id);
            }
            if replies.is_empty() {
                return Ok(replies);
            }
            let changes = app.take_changes();
            // Published while the application's write lock is still held: a snapshot
            // builder (holding the read lock) sees rows and applied id of the same index.
            *self.applied.lock() = state.clone();
            (changes, state)
        };

        let data_cf = self.db.cf(CF_SM_DATA)?;
        let mut batch = WriteBatch::default();
        for (key, value) in changes {
            match value {
                Some(v) => batch.put_cf(data_cf, key, v),
                None => batch.delete_cf(data_cf, key),
            }
        }
        self.put_applied(&mut batch, &state)?;
        // No fsync, on purpose. The entries applied here were fsynced in the raft log
        // before they could be committed, and this batch (rows + applied log id) is atomic.
        // So after a crash the state machine is exactly as of some applied index, no later
        // than the real one, and openraft re-applies the committed log from the persisted
        // applied index. Entries it needs are still there: the log is only purged after a
        // snapshot/state covering them was written, and RocksDB recovers a prefix of its
        // single WAL, so such a purge is never durable without this batch.
        self.db
            .db()
            .write(batch)
            .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, &e))?;
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let data = snapshot.into_inner();
        let payload: SnapshotPayload = decode(subject.clone(), &data)?;
        if payload.format != SNAPSHOT_FORMAT {
            return Err(corrupt(
                subject,
                format!("unknown snapshot format {}", payload.format),
            ));
        }
        if payload.last_applied != meta.last_log_id
            || payload.last_membership != meta.last_membership
        {
            return Err(corrupt(
                subject,
                "snapshot payload does not match its metadata",
            ));
        }
        tracing::info!(%meta, rows = payload.rows.len(), "installing snapshot");

        let data_cf = self.db.cf(CF_SM_DATA)?;
        let mut batch = WriteBatch::default();
        // Replace every row: delete the whole key span [first, last] (a range tombstone plus
        // a point delete for the exclusive end), then put the snapshot's rows.
        let first = self
            .db
            .db()
            .iterator_cf(data_cf, IteratorMode::Start)
            .next();
        let last = self.db.db().iterator_cf(data_cf, IteratorMode::End).next();
        if let (Some(first), Some(last)) = (first, last) {
            let (first, _) =
                first.map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, &e))?;
            let (last, _) =
                last.map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, &e))?;
            batch.delete_range_cf(data_cf, &first, &last);
            batch.delete_cf(data_cf, &last);
        }
        let rows: Vec<(Vec<u8>, Vec<u8>)> =
            payload.rows.into_iter().map(|(k, v)| (k.0, v.0)).collect();
        for (k, v) in &rows {
            batch.put_cf(data_cf, k, v);
        }
        let state = AppliedState {
            last_applied: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
        };
        self.put_applied(&mut batch, &state)?;
        self.put_snapshot(&mut batch, meta, &data)?;

        {
            let _snap = self.snapshot_lock.lock();
            let mut app = self.app.write();
            // Restore memory first: if the application rejects the rows nothing was
            // written and the old state stays consistent on disk.
            app.restore(rows)
                .map_err(|e| corrupt(subject.clone(), format!("restore failed: {e}")))?;
            drop(app.take_changes());
            *self.applied.lock() = state;

            let mut opts = WriteOptions::default();
            // fsync: the leader will consider this node caught up to the snapshot once we
            // return; make that true across a power loss, as for log appends.
            opts.set_sync(true);
            self.db
                .db()
                .write_opt(batch, &opts)
                .map_err(|e| io_err(subject, ErrorVerb::Write, &e))?;
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<C>>, StorageError<u64>> {
        let Some(meta) = self.read_current_snapshot_meta()? else {
            return Ok(None);
        };
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let cf = self.db.cf(CF_SNAPSHOT)?;
        let data = self
            .db
            .db()
            .get_cf(cf, KEY_SNAPSHOT_DATA)
            .map_err(|e| io_err(subject.clone(), ErrorVerb::Read, &e))?
            .ok_or_else(|| corrupt(subject, "snapshot metadata without data"))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

impl<C, A> RaftSnapshotBuilder<C> for StateMachineStore<C, A>
where
    A: Application,
    A::Output: Default,
    C: AppTypeConfig<A>,
{
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError<u64>> {
        // One consistent view: `applied` only changes under the application's write lock.
        let (rows, state) = {
            let app = self.app.read();
            let state = self.applied.lock().clone();
            (app.dump(), state)
        };
        let snapshot_id = format!(
            "{}-{}",
            state
                .last_applied
                .map(|id| id.to_string())
                .unwrap_or_else(|| "none".to_string()),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        );
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.last_membership.clone(),
            snapshot_id,
        };
        let payload = SnapshotPayload {
            format: SNAPSHOT_FORMAT,
            last_applied: state.last_applied,
            last_membership: state.last_membership,
            rows: rows
                .into_iter()
                .map(|(k, v)| (Bytes(k), Bytes(v)))
                .collect(),
        };
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let data = encode(subject.clone(), &payload)?;

        {
            let _snap = self.snapshot_lock.lock();
            // A build runs concurrently with applies and installs: never replace a newer
            // current snapshot (e.g. one just installed) with this one.
            let newer_exists = self
                .read_current_snapshot_meta()?
                .is_some_and(|cur| cur.last_log_id > meta.last_log_id);
            if newer_exists {
                tracing::info!(%meta, "built snapshot is older than the current one; not stored");
            } else {
                let mut batch = WriteBatch::default();
                self.put_snapshot(&mut batch, &meta, &data)?;
                // No fsync: losing it loses nothing but work (see the durability notes in
                // `apply`: a purge relying on it comes later in the same WAL).
                self.db
                    .db()
                    .write(batch)
                    .map_err(|e| io_err(subject, ErrorVerb::Write, &e))?;
            }
        }
        tracing::info!(%meta, bytes = data.len(), "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
