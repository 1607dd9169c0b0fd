//! Tests of the raft layer with a small key-value application.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{LogId, Raft, RaftLogReader};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use super::db::{RaftDb, CF_LOG, CF_SM_META};
use super::testing::run_openraft_suite;
use super::{open_stores, start_standalone, Application, DbClosed, RaftNode, STANDALONE_NODE_ID};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum KvCommand {
    Set { key: String, value: String },
    Delete { key: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KvOutput {
    zxid: u64,
    previous: Option<String>,
}

openraft::declare_raft_types!(pub(crate) KvTypeConfig: D = KvCommand, R = KvOutput);

const ZXID_ROW: &[u8] = b"meta/zxid";
const DATA_PREFIX: &str = "data/";

/// A deterministic key-value application, persisted as rows `data/<key>` plus the last
/// zxid. The counters are server-local (not state) and show what the raft layer did.
#[derive(Debug, Default)]
pub(crate) struct KvApp {
    data: BTreeMap<String, String>,
    last_zxid: u64,
    changes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    commands_applied: u64,
    restores: u64,
}

impl KvApp {
    fn set_zxid(&mut self, zxid: u64) {
        self.last_zxid = zxid;
        self.changes
            .insert(ZXID_ROW.to_vec(), Some(zxid.to_be_bytes().to_vec()));
    }
}

impl Application for KvApp {
    type Command = KvCommand;
    type Output = KvOutput;

    fn apply(&mut self, zxid: u64, cmd: &KvCommand) -> KvOutput {
        self.commands_applied += 1;
        self.set_zxid(zxid);
        let previous = match cmd {
            KvCommand::Set { key, value } => {
                self.changes.insert(
                    format!("{DATA_PREFIX}{key}").into_bytes(),
                    Some(value.clone().into_bytes()),
                );
                self.data.insert(key.clone(), value.clone())
            }
            KvCommand::Delete { key } => {
                self.changes
                    .insert(format!("{DATA_PREFIX}{key}").into_bytes(), None);
                self.data.remove(key)
            }
        };
        KvOutput { zxid, previous }
    }

    fn apply_noop(&mut self, zxid: u64) {
        self.set_zxid(zxid);
    }

    fn take_changes(&mut self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        std::mem::take(&mut self.changes).into_iter().collect()
    }

    fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut rows: Vec<_> = self
            .data
            .iter()
            .map(|(k, v)| {
                (
                    format!("{DATA_PREFIX}{k}").into_bytes(),
                    v.clone().into_bytes(),
                )
            })
            .collect();
        rows.push((ZXID_ROW.to_vec(), self.last_zxid.to_be_bytes().to_vec()));
        rows
    }

    fn restore(&mut self, rows: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), String> {
        let mut data = BTreeMap::new();
        let mut last_zxid = 0;
        for (k, v) in rows {
            if k == ZXID_ROW {
                let bytes: [u8; 8] = v.as_slice().try_into().map_err(|_| "bad zxid row")?;
                last_zxid = u64::from_be_bytes(bytes);
                continue;
            }
            let k = String::from_utf8(k).map_err(|e| e.to_string())?;
            let key = k
                .strip_prefix(DATA_PREFIX)
                .ok_or_else(|| format!("unexpected row {k}"))?;
            let v = String::from_utf8(v).map_err(|e| e.to_string())?;
            data.insert(key.to_string(), v);
        }
        self.data = data;
        self.last_zxid = last_zxid;
        self.changes.clear();
        self.restores += 1;
        Ok(())
    }
}

type Kv = Arc<RwLock<KvApp>>;

fn new_app() -> Kv {
    Arc::new(RwLock::new(KvApp::default()))
}

async fn start(dir: &Path, app: &Kv, snapshot_every: u64) -> RaftNode<KvTypeConfig> {
    start_standalone::<KvTypeConfig, KvApp>(dir, app.clone(), snapshot_every)
        .await
        .expect("start standalone raft")
}

async fn set(raft: &Raft<KvTypeConfig>, key: &str, value: &str) -> KvOutput {
    let resp = raft
        .client_write(KvCommand::Set {
            key: key.to_string(),
            value: value.to_string(),
        })
        .await
        .expect("client_write");
    // The zxid the application saw is the index of the entry.
    assert_eq!(resp.data.zxid, resp.log_id.index);
    resp.data
}

/// The last applied log id once it has reached `at_least` (a `client_write` reply can
/// arrive before the metrics are updated).
async fn last_applied(raft: &Raft<KvTypeConfig>, at_least: u64) -> LogId<u64> {
    raft.wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(Some(at_least), "metrics catch up")
        .await
        .expect("applied metrics")
        .last_applied
        .expect("applied")
}

/// The stores of a directory opened without raft.
struct OpenStores {
    log: super::LogStore<KvTypeConfig>,
    sm: super::StateMachineStore<KvTypeConfig, KvApp>,
    closed: DbClosed,
}

impl OpenStores {
    fn open(dir: &Path, app: &Kv) -> Self {
        let (log, sm) = open_stores::<KvTypeConfig, KvApp>(dir, app.clone()).expect("open stores");
        let closed = log.db_closed();
        Self { log, sm, closed }
    }

    /// Drops the stores and waits for the database to be closed.
    async fn close(self) {
        let Self { log, sm, closed } = self;
        drop((log, sm));
        closed.wait().await;
    }
}

#[test]
fn openraft_storage_suite() {
    run_openraft_suite::<KvTypeConfig, KvApp, _>(KvApp::default).expect("openraft storage suite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_get_consecutive_zxids_and_survive_restart_without_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = new_app();
    let node = start(dir.path(), &app, 1000).await;

    let mut zxids = Vec::new();
    for i in 0..20 {
        let out = set(node.raft(), &format!("k{i}"), &format!("v{i}")).await;
        assert_eq!(out.previous, None);
        zxids.push(out.zxid);
    }
    let out = set(node.raft(), "k3", "changed").await;
    assert_eq!(out.previous.as_deref(), Some("v3"));
    zxids.push(out.zxid);
    let resp = node
        .raft()
        .client_write(KvCommand::Delete { key: "k4".into() })
        .await
        .expect("delete");
    assert_eq!(resp.data.previous.as_deref(), Some("v4"));
    zxids.push(resp.data.zxid);
    // Every write is one log entry: zxids are consecutive.
    assert!(zxids.windows(2).all(|w| w[1] == w[0] + 1), "{zxids:?}");

    let last_zxid = *zxids.last().expect("zxids");
    let applied_before = last_applied(node.raft(), last_zxid).await;
    let (data_before, zxid_before) = {
        let a = app.read();
        (a.data.clone(), a.last_zxid)
    };
    assert_eq!(zxid_before, applied_before.index);
    assert_eq!(data_before.len(), 19);
    assert_eq!(data_before.get("k3").map(String::as_str), Some("changed"));
    node.shutdown().await.expect("shutdown");

    // The stores alone: the applied state was persisted and the rows restore the app.
    let app2 = new_app();
    let mut stores = OpenStores::open(dir.path(), &app2);
    let (applied, membership) = stores.sm.applied_state().await.expect("applied_state");
    stores.close().await;
    assert_eq!(applied, Some(applied_before), "applied state went back");
    assert_eq!(
        membership.membership().voter_ids().collect::<Vec<_>>(),
        vec![STANDALONE_NODE_ID]
    );
    {
        let a = app2.read();
        assert_eq!(a.data, data_before);
        assert_eq!(a.last_zxid, zxid_before);
        assert_eq!(a.restores, 1);
        assert_eq!(a.commands_applied, 0);
    }

    // A full restart: state restored from RocksDB, nothing replayed, zxids continue.
    let app3 = new_app();
    let node = start(dir.path(), &app3, 1000).await;
    {
        let a = app3.read();
        assert_eq!(a.commands_applied, 0, "the log was replayed on restart");
        assert_eq!(a.data, data_before);
    }
    let applied_after = node
        .raft()
        .metrics()
        .borrow()
        .last_applied
        .expect("applied after restart");
    // openraft restores a single voter as leader of its old term (no new blank entry);
    // either way the applied index never goes back.
    assert!(
        applied_after >= applied_before,
        "{applied_after} < {applied_before}"
    );
    let out = set(node.raft(), "after", "restart").await;
    assert_eq!(out.zxid, applied_after.index + 1);
    assert_eq!(app3.read().commands_applied, 1);
    node.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_built_and_the_log_is_purged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = new_app();
    let snapshot_every = 10;
    let node = start(dir.path(), &app, snapshot_every).await;

    let mut key_zxid = BTreeMap::new();
    for i in 0..(3 * snapshot_every) {
        let key = format!("k{i:02}");
        let out = set(node.raft(), &key, &format!("v{i}")).await;
        key_zxid.insert(key, out.zxid);
    }
    let metrics = node
        .raft()
        .wait(Some(Duration::from_secs(30)))
        .metrics(
            |m| m.snapshot.is_some() && m.purged.is_some_and(|p| p.index >= 1),
            "snapshot built and log purged",
        )
        .await
        .expect("snapshot and purge");
    let purged = metrics.purged.expect("purged");
    let data_before = app.read().data.clone();
    node.shutdown().await.expect("shutdown");

    // Look at the stores directly.
    let app2 = new_app();
    let mut stores = OpenStores::open(dir.path(), &app2);
    let log_state = stores.log.get_log_state().await.expect("log state");
    let entries = stores.log.try_get_log_entries(..).await.expect("read log");
    let first_index = entries.first().map(|e| e.log_id.index);
    let snapshot = stores.sm.get_current_snapshot().await.expect("snapshot");
    stores.close().await;
    assert!(log_state.last_purged_log_id >= Some(purged));
    let first_index = first_index.expect("log not empty");
    assert!(first_index > 1, "log starts at {first_index}");
    assert_eq!(
        Some(first_index),
        log_state.last_purged_log_id.map(|p| p.index + 1)
    );
    let snapshot = snapshot.expect("a current snapshot is stored");
    let snap_index = snapshot.meta.last_log_id.expect("snapshot log id").index;
    assert!(snap_index >= snapshot_every, "snapshot at {snap_index}");
    // Purged entries are covered by the snapshot.
    assert!(log_state.last_purged_log_id.map(|p| p.index) <= Some(snap_index));

    // Installing that snapshot into a fresh store yields exactly the writes up to it.
    let fresh = tempfile::tempdir().expect("tempdir");
    let app3 = new_app();
    let meta = snapshot.meta.clone();
    let mut stores = OpenStores::open(fresh.path(), &app3);
    stores
        .sm
        .install_snapshot(&meta, snapshot.snapshot)
        .await
        .expect("install snapshot");
    let (applied, _) = stores.sm.applied_state().await.expect("applied_state");
    let current = stores
        .sm
        .get_current_snapshot()
        .await
        .expect("current snapshot");
    stores.close().await;
    assert_eq!(applied, meta.last_log_id);
    assert_eq!(current.map(|s| s.meta), Some(meta.clone()));
    let expected: BTreeMap<String, String> = data_before
        .iter()
        .filter(|(k, _)| key_zxid[*k] <= snap_index)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(app3.read().data, expected);
    assert_eq!(app3.read().last_zxid, snap_index);
    // The installed state is persisted: reopening restores it.
    let app4 = new_app();
    OpenStores::open(fresh.path(), &app4).close().await;
    assert_eq!(app4.read().data, expected);

    // The purged node restarts with all its data.
    let app5 = new_app();
    let node = start(dir.path(), &app5, snapshot_every).await;
    assert_eq!(app5.read().data, data_before);
    assert_eq!(app5.read().commands_applied, 0);
    node.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_data_is_a_storage_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = new_app();
    let node = start(dir.path(), &app, 1000).await;
    set(node.raft(), "a", "1").await;
    set(node.raft(), "b", "2").await;
    node.shutdown().await.expect("shutdown");

    // Overwrite log entry 2 with garbage: its checksum cannot match.
    {
        let db = RaftDb::open(dir.path()).expect("open db");
        let closed = db.closed_signal();
        let cf = db.cf(CF_LOG).expect("cf");
        db.db()
            .put_cf(cf, 2u64.to_be_bytes(), b"\xc1 not msgpack")
            .expect("put");
        drop(db);
        closed.wait().await;
    }
    let app2 = new_app();
    let mut stores = OpenStores::open(dir.path(), &app2);
    let err = stores
        .log
        .try_get_log_entries(0..10)
        .await
        .expect_err("corrupt entry");
    // A corrupt last entry also breaks the log state, without panicking.
    let state = stores.log.get_log_state().await;
    stores.close().await;
    assert!(err.to_string().contains("LogIndex(2)"), "{err}");
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    assert!(state.is_ok(), "entry 2 is not the last one: {state:?}");

    // A garbage applied id makes opening the state machine fail.
    {
        let db = RaftDb::open(dir.path()).expect("open db");
        let closed = db.closed_signal();
        let cf = db.cf(CF_SM_META).expect("cf");
        db.db().put_cf(cf, b"last_applied", b"\xc1").expect("put");
        drop(db);
        closed.wait().await;
    }
    let res = open_stores::<KvTypeConfig, KvApp>(dir.path(), new_app());
    assert!(res.is_err(), "opened a corrupt state machine");
}

/// Regression: the fsync thread used to hold the database, so dropping the stores left
/// it open until that thread woke up and closed it on its own; a test binary could then
/// exit while RocksDB was still closing and crash with SIGSEGV. Dropping the last store
/// must close the database at once, on the dropping thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stores_closes_the_database_at_once() {
    use futures::FutureExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = new_app();
    // Start and stop raft once so the fsync thread has done real work.
    let node = start(dir.path(), &app, 1000).await;
    set(node.raft(), "k", "v").await;
    node.shutdown().await.expect("shutdown");
    let stores = OpenStores::open(dir.path(), &app);
    let OpenStores { log, sm, closed } = stores;
    drop((log, sm));
    assert!(
        closed.wait().now_or_never().is_some(),
        "database still open after its stores were dropped"
    );
    // And the directory can be opened again right away.
    OpenStores::open(dir.path(), &app).close().await;
}

/// The proposer frees its slot when `LogProgress` says an entry is durable: the
/// watermark must cover every acknowledged write, and never pass what was appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_progress_covers_every_committed_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = new_app();
    let node = start(dir.path(), &app, 1000).await;
    let progress = node.log_progress();
    let mut flushed = progress.flushed();
    for i in 0..10 {
        let resp = node
            .raft()
            .client_write(KvCommand::Set {
                key: format!("k{i}"),
                value: "v".into(),
            })
            .await
            .expect("client_write");
        let index = resp.log_id.index;
        // Committed in a one-voter cluster means flushed on this node.
        let now = *flushed
            .wait_for(|f| *f >= index)
            .await
            .expect("the log store is open");
        assert!(progress.appended() >= index);
        assert!(now <= progress.appended(), "flushed {now} past appended");
    }
    node.shutdown().await.expect("shutdown");
}
