//! `wazoo import zookeeper ZK_DATA_DIR TARGET_DIR`: migrates the data of an Apache
//! ZooKeeper 3.x server (its `dataDir`) into a new Wazoo data directory.
//!
//! What is read, as ZooKeeper's `FileTxnSnapLog.restore` does:
//!
//! * the newest `version-2/snapshot.<zxid>` that parses completely (uncompressed; a
//!   `.gz`/`.snappy` snapshot is rejected with an error),
//! * then every transaction of the `version-2/log.<zxid>` files with a zxid above the
//!   snapshot's, applied with ZooKeeper's `DataTree.processTxn` rules. The snapshot is
//!   fuzzy, so, as ZooKeeper, NodeExists/NoNode while replaying are ignored (and a
//!   create that hits NodeExists still raises the parent's cversion/pzxid when higher).
//!
//! Formats (big-endian jute; confirmed on files written by ZooKeeper 3.8):
//!
//! * snapshot: `FileHeader{int magic "ZKSN", int version 2, long dbid}`, sessions
//!   (`int count`, then `long id, int timeout`), the ACL cache (`int count`, then
//!   `long index, vector<ACL>`), nodes (`ustring path, DataNode{buffer data, long acl,
//!   StatPersisted}`; the root has path `""`) until the path `"/"`. Anything after it
//!   (3.6+ digest, checksum) is ignored.
//! * txn log: `FileHeader{"ZKLG", 2, dbid}`, then records `long adler32, int length,
//!   bytes[length], byte 'B'`, where the bytes are `TxnHeader{long clientId, int cxid,
//!   long zxid, long time, int type}` and the txn body (3.6+ may append a digest). A
//!   zero length, a missing `'B'` or the end of the file ends a log, as in ZooKeeper.
//!
//! Every znode keeps its Stat exactly (czxid, mzxid, pzxid, ctime, mtime, versions, the
//! internal cversion, ephemeralOwner). Sessions (from the snapshot plus createSession /
//! closeSession) keep their ids and timeouts but get a random password: ZooKeeper derives
//! passwords from a server secret, so clients cannot resume their sessions and must open
//! new ones. Ephemerals of imported sessions are kept and are deleted when their session
//! expires after its timeout on the Wazoo server (sessions restored from disk get a fresh
//! timeout), unless nobody reconnects — which migrated clients cannot. Ephemerals whose
//! session is in neither the snapshot nor the logs are dropped, as ZooKeeper drops them
//! when it loads its database.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;
use wazoo_proto::consts::{op, CONTAINER_EPHEMERAL_OWNER, TTL_EPHEMERAL_OWNER_MASK};
use wazoo_proto::{Acl, DecodeError, Reader, Record};

use crate::state_machine::{Session, StateMachine};
use crate::tree::{StatPersisted, Znode};

const SNAP_MAGIC: i32 = 0x5a4b_534e; // "ZKSN"
const LOG_MAGIC: i32 = 0x5a4b_4c47; // "ZKLG"

/// What an import did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ImportReport {
    pub snapshot: PathBuf,
    pub snapshot_zxid: i64,
    pub logs: Vec<PathBuf>,
    /// Transactions applied from the logs (zxid above the snapshot's).
    pub txns_replayed: u64,
    /// Transactions skipped because the snapshot already covers them.
    pub txns_skipped: u64,
    /// Replayed transactions ZooKeeper would also have ignored (NodeExists / NoNode).
    pub txns_ignored_errors: u64,
    pub last_zxid: i64,
    pub nodes: usize,
    pub sessions: usize,
    pub ephemerals: usize,
    /// Ephemerals dropped because their session was in no file.
    pub orphan_ephemerals_dropped: usize,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "snapshot: {} (zxid 0x{:x})",
            self.snapshot.display(),
            self.snapshot_zxid
        )?;
        for l in &self.logs {
            writeln!(f, "log: {}", l.display())?;
        }
        writeln!(
            f,
            "txns replayed: {} (ignored errors: {}), skipped (in snapshot): {}",
            self.txns_replayed, self.txns_ignored_errors, self.txns_skipped
        )?;
        writeln!(f, "last zxid: 0x{:x}", self.last_zxid)?;
        writeln!(
            f,
            "nodes: {}, sessions: {}, ephemerals: {}, orphan ephemerals dropped: {}",
            self.nodes, self.sessions, self.ephemerals, self.orphan_ephemerals_dropped
        )?;
        writeln!(
            f,
            "note: imported sessions got new passwords; clients must open new sessions, and \
             ephemerals of imported sessions go away when those sessions expire"
        )
    }
}

/// The ZooKeeper state being rebuilt.
#[derive(Default)]
struct ZkState {
    nodes: HashMap<String, Znode>,
    sessions: BTreeMap<i64, i32>,
    ephemerals: HashMap<i64, BTreeSet<String>>,
    last_zxid: i64,
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

fn base_of(path: &str) -> &str {
    path.rfind('/').map_or(path, |i| &path[i + 1..])
}

/// A txn failed the way ZooKeeper tolerates on replay.
struct Ignored;

impl ZkState {
    fn insert(&mut self, path: String, node: Znode) {
        if path != "/" {
            if let Some(p) = self.nodes.get_mut(parent_of(&path)) {
                p.children.insert(base_of(&path).to_string());
            }
        }
        let owner = node.stat.ephemeral_owner;
        if is_session_owner(owner) {
            self.ephemerals
                .entry(owner)
                .or_default()
                .insert(path.clone());
        }
        self.nodes.insert(path, node);
    }

    /// `DataTree.createNode`.
    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        path: &str,
        data: Option<Vec<u8>>,
        acl: Vec<Acl>,
        owner: i64,
        parent_cversion: i32,
        zxid: i64,
        time: i64,
    ) -> Result<(), Ignored> {
        let parent = self.nodes.get_mut(parent_of(path)).ok_or(Ignored)?;
        if parent.children.contains(base_of(path)) {
            return Err(Ignored);
        }
        bump_cversion(parent, parent_cversion, zxid);
        let node = Znode {
            data,
            acl,
            stat: StatPersisted {
                czxid: zxid,
                mzxid: zxid,
                ctime: time,
                mtime: time,
                version: 0,
                cversion: 0,
                aversion: 0,
                ephemeral_owner: owner,
                pzxid: zxid,
            },
            children: BTreeSet::new(),
        };
        self.insert(path.to_string(), node);
        Ok(())
    }

    /// `DataTree.deleteNode`.
    fn delete(&mut self, path: &str, zxid: i64) -> Result<(), Ignored> {
        let node = self.nodes.remove(path).ok_or(Ignored)?;
        let owner = node.stat.ephemeral_owner;
        if is_session_owner(owner) {
            if let Some(set) = self.ephemerals.get_mut(&owner) {
                set.remove(path);
                if set.is_empty() {
                    self.ephemerals.remove(&owner);
                }
            }
        }
        if let Some(p) = self.nodes.get_mut(parent_of(path)) {
            p.children.remove(base_of(path));
            if zxid > p.stat.pzxid {
                p.stat.pzxid = zxid;
            }
        }
        Ok(())
    }

    fn kill_session(&mut self, id: i64, paths: &[String], zxid: i64) {
        self.sessions.remove(&id);
        let mut doomed: BTreeSet<String> = self.ephemerals.remove(&id).unwrap_or_default();
        doomed.extend(paths.iter().cloned());
        for p in doomed {
            let _ = self.delete(&p, zxid);
        }
    }
}

fn is_session_owner(owner: i64) -> bool {
    owner != 0
        && owner != CONTAINER_EPHEMERAL_OWNER
        && owner & TTL_EPHEMERAL_OWNER_MASK != TTL_EPHEMERAL_OWNER_MASK
}

/// `DataTree.setCversionPzxid` / the parent update of `createNode`.
fn bump_cversion(parent: &mut Znode, mut cversion: i32, zxid: i64) {
    if cversion == -1 {
        cversion = parent.stat.cversion.wrapping_add(1);
    }
    if cversion > parent.stat.cversion {
        parent.stat.cversion = cversion;
        parent.stat.pzxid = zxid;
    }
}

fn open_acl() -> Vec<Acl> {
    crate::acl::open_acl_unsafe()
}

fn de(e: DecodeError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

fn read_acls(r: &mut Reader<'_>) -> Result<Vec<Acl>, DecodeError> {
    r.read_vec(Acl::decode)
}

fn read_stat(r: &mut Reader<'_>) -> Result<StatPersisted, DecodeError> {
    Ok(StatPersisted {
        czxid: r.read_i64()?,
        mzxid: r.read_i64()?,
        ctime: r.read_i64()?,
        mtime: r.read_i64()?,
        version: r.read_i32()?,
        cversion: r.read_i32()?,
        aversion: r.read_i32()?,
        ephemeral_owner: r.read_i64()?,
        pzxid: r.read_i64()?,
    })
}

/// `prefix.<hex zxid>` files sorted by zxid, and other `prefix.*` files.
type ZxidFiles = (Vec<(i64, PathBuf)>, Vec<PathBuf>);

/// Files `prefix.<hex zxid>` in `dir` (exactly; compressed suffixes are returned apart).
fn zxid_files(dir: &Path, prefix: &str) -> anyhow::Result<ZxidFiles> {
    let mut found = Vec::new();
    let mut other = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        match u64::from_str_radix(rest, 16) {
            Ok(z) => found.push((z as i64, e.path())),
            Err(_) => other.push(e.path()),
        }
    }
    found.sort();
    Ok((found, other))
}

/// Parses one snapshot into a state; returns it and its zxid (from the file name).
fn read_snapshot(bytes: &[u8]) -> anyhow::Result<ZkState> {
    let mut r = Reader::new(bytes);
    let magic = r.read_i32().map_err(de)?;
    if magic != SNAP_MAGIC {
        bail!("bad magic 0x{magic:08x} (expected ZKSN)");
    }
    let version = r.read_i32().map_err(de)?;
    if version != 2 {
        bail!("unsupported snapshot version {version}");
    }
    let _dbid = r.read_i64().map_err(de)?;
    let mut st = ZkState::default();
    let count = r.read_i32().map_err(de)?;
    for _ in 0..count.max(0) {
        let id = r.read_i64().map_err(de)?;
        let timeout = r.read_i32().map_err(de)?;
        st.sessions.insert(id, timeout);
    }
    let mut acl_cache: HashMap<i64, Vec<Acl>> = HashMap::new();
    let count = r.read_i32().map_err(de)?;
    for _ in 0..count.max(0) {
        let idx = r.read_i64().map_err(de)?;
        let acls = read_acls(&mut r).map_err(de)?;
        acl_cache.insert(idx, acls);
    }
    loop {
        let path = r.read_ustring().map_err(de)?;
        if path == "/" {
            break;
        }
        let data = r.read_buffer().map_err(de)?;
        let acl_idx = r.read_i64().map_err(de)?;
        let stat = read_stat(&mut r).map_err(de)?;
        let acl = if acl_idx == -1 {
            open_acl()
        } else {
            acl_cache
                .get(&acl_idx)
                .cloned()
                .with_context(|| format!("node {path:?}: ACL index {acl_idx} not in the cache"))?
        };
        let path = if path.is_empty() {
            "/".to_string()
        } else {
            path
        };
        if path != "/" && !st.nodes.contains_key(parent_of(&path)) {
            bail!("node {path:?} comes before its parent");
        }
        st.insert(
            path,
            Znode {
                data,
                acl,
                stat,
                children: BTreeSet::new(),
            },
        );
    }
    if !st.nodes.contains_key("/") {
        bail!("no root node");
    }
    Ok(st)
}

/// Adler-32, the checksum of ZooKeeper's txn log records.
fn adler32(bytes: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in bytes.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

struct TxnHeader {
    client_id: i64,
    zxid: i64,
    time: i64,
    ty: i32,
}

/// Applies one txn body of type `ty`. Returns Err(Ignored) for the errors ZooKeeper
/// tolerates on replay.
fn apply_txn(
    st: &mut ZkState,
    hdr: &TxnHeader,
    ty: i32,
    r: &mut Reader<'_>,
) -> anyhow::Result<Result<(), Ignored>> {
    let zxid = hdr.zxid;
    let time = hdr.time;
    Ok(match ty {
        op::CREATE | op::CREATE2 => {
            let path = r.read_ustring().map_err(de)?;
            let data = r.read_buffer().map_err(de)?;
            let acl = read_acls(r).map_err(de)?;
            let ephemeral = r.read_bool().map_err(de)?;
            let parent_cversion = r.read_i32().map_err(de)?;
            let owner = if ephemeral { hdr.client_id } else { 0 };
            let res = st.create(&path, data, acl, owner, parent_cversion, zxid, time);
            if res.is_err() && ty == op::CREATE && st.nodes.contains_key(&path) {
                // DataTree.processTxn: a create hitting NodeExists adjusts the parent.
                if let Some(p) = st.nodes.get_mut(parent_of(&path)) {
                    bump_cversion(p, parent_cversion, zxid);
                }
            }
            res
        }
        op::CREATE_CONTAINER | op::CREATE_TTL => {
            let path = r.read_ustring().map_err(de)?;
            let data = r.read_buffer().map_err(de)?;
            let acl = read_acls(r).map_err(de)?;
            let parent_cversion = r.read_i32().map_err(de)?;
            let owner = if ty == op::CREATE_TTL {
                TTL_EPHEMERAL_OWNER_MASK | r.read_i64().map_err(de)?
            } else {
                CONTAINER_EPHEMERAL_OWNER
            };
            st.create(&path, data, acl, owner, parent_cversion, zxid, time)
        }
        op::DELETE | op::DELETE_CONTAINER => {
            let path = r.read_ustring().map_err(de)?;
            st.delete(&path, zxid)
        }
        op::SET_DATA => {
            let path = r.read_ustring().map_err(de)?;
            let data = r.read_buffer().map_err(de)?;
            let version = r.read_i32().map_err(de)?;
            match st.nodes.get_mut(&path) {
                None => Err(Ignored),
                Some(n) => {
                    n.data = data;
                    n.stat.version = version;
                    n.stat.mzxid = zxid;
                    n.stat.mtime = time;
                    Ok(())
                }
            }
        }
        op::SET_ACL => {
            let path = r.read_ustring().map_err(de)?;
            let acl = read_acls(r).map_err(de)?;
            let version = r.read_i32().map_err(de)?;
            match st.nodes.get_mut(&path) {
                None => Err(Ignored),
                Some(n) => {
                    n.acl = acl;
                    n.stat.aversion = version;
                    Ok(())
                }
            }
        }
        op::CREATE_SESSION => {
            let timeout = r.read_i32().map_err(de)?;
            st.sessions.insert(hdr.client_id, timeout);
            Ok(())
        }
        op::CLOSE_SESSION => {
            // 3.6+: CloseSessionTxn{vector<ustring> paths2Delete}; older: empty body.
            let paths = if r.remaining() >= 4 {
                r.read_string_vec().unwrap_or_default()
            } else {
                Vec::new()
            };
            st.kill_session(hdr.client_id, &paths, zxid);
            Ok(())
        }
        op::ERROR | op::CHECK => Ok(()),
        op::MULTI => {
            let n = r.read_vec_len().map_err(de)?;
            let mut subs = Vec::with_capacity(n);
            for _ in 0..n {
                let t = r.read_i32().map_err(de)?;
                let body = r.read_buffer().map_err(de)?.unwrap_or_default();
                subs.push((t, body));
            }
            // A failed multi was logged with error sub-txns and changed nothing.
            if subs.iter().any(|(t, _)| *t == op::ERROR) {
                return Ok(Ok(()));
            }
            let mut res = Ok(());
            for (t, body) in subs {
                if t == op::MULTI {
                    bail!("nested multi txn at zxid 0x{zxid:x}");
                }
                let mut sr = Reader::new(&body);
                if apply_txn(st, hdr, t, &mut sr)?.is_err() {
                    res = Err(Ignored);
                }
            }
            res
        }
        other => bail!(
            "unsupported txn type {other} at zxid 0x{zxid:x} (supported: create, create2, \
             createContainer, createTTL, delete, deleteContainer, setData, setACL, multi, \
             check, error, createSession, closeSession)"
        ),
    })
}

/// Replays the txns of one log file that come after the snapshot.
fn replay_log(
    st: &mut ZkState,
    path: &Path,
    snap_zxid: i64,
    report: &mut ImportReport,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut r = Reader::new(&bytes);
    let ctx = || format!("{}: bad header", path.display());
    let magic = r.read_i32().map_err(de).with_context(ctx)?;
    if magic != LOG_MAGIC {
        bail!(
            "{}: bad magic 0x{magic:08x} (expected ZKLG)",
            path.display()
        );
    }
    let version = r.read_i32().map_err(de).with_context(ctx)?;
    if version != 2 {
        bail!("{}: unsupported log version {version}", path.display());
    }
    r.read_i64().map_err(de).with_context(ctx)?;
    let mut pos = r.position();
    loop {
        // End of log: EOF, a zero length (preallocated zeros), or a partial record.
        let mut hr = Reader::new(&bytes[pos..]);
        let Ok(crc) = hr.read_i64() else { break };
        let Ok(len) = hr.read_i32() else { break };
        if len <= 0 || len as usize > hr.remaining() {
            break;
        }
        let start = pos + hr.position();
        let end = start + len as usize;
        let record = &bytes[start..end];
        if bytes.get(end) != Some(&b'B') {
            // ZooKeeper: "Last transaction was partial."
            break;
        }
        if i64::from(adler32(record)) != crc {
            bail!(
                "{}: CRC check failed for the record at offset {start}",
                path.display()
            );
        }
        pos = end + 1;
        let mut rr = Reader::new(record);
        let hdr = TxnHeader {
            client_id: rr.read_i64().map_err(de)?,
            zxid: {
                rr.read_i32().map_err(de)?; // cxid
                rr.read_i64().map_err(de)?
            },
            time: rr.read_i64().map_err(de)?,
            ty: rr.read_i32().map_err(de)?,
        };
        if hdr.zxid <= snap_zxid {
            report.txns_skipped += 1;
            continue;
        }
        let res = apply_txn(st, &hdr, hdr.ty, &mut rr)
            .with_context(|| format!("{}: txn at zxid 0x{:x}", path.display(), hdr.zxid))?;
        if res.is_err() {
            report.txns_ignored_errors += 1;
        }
        report.txns_replayed += 1;
        st.last_zxid = st.last_zxid.max(hdr.zxid);
    }
    Ok(())
}

/// State-machine rows (key, value), as [`StateMachine::restore`] takes them.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// Reads a ZooKeeper data directory (or its `version-2`) into state-machine rows.
pub fn read_zookeeper(zk_dir: &Path) -> anyhow::Result<(Rows, ImportReport)> {
    let dir = if zk_dir.join("version-2").is_dir() {
        zk_dir.join("version-2")
    } else {
        zk_dir.to_path_buf()
    };
    let (snaps, other) = zxid_files(&dir, "snapshot")?;
    for p in &other {
        tracing::warn!(file = %p.display(), "ignoring a snapshot that is not a plain snapshot.<zxid> (compressed snapshots are not supported)");
    }
    let mut report = ImportReport::default();
    let mut chosen = None;
    let mut errors = Vec::new();
    for (zxid, path) in snaps.iter().rev() {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        match read_snapshot(&bytes) {
            Ok(st) => {
                chosen = Some((*zxid, path.clone(), st));
                break;
            }
            Err(e) => {
                tracing::warn!(snapshot = %path.display(), error = %e, "invalid snapshot; trying an older one");
                errors.push(format!("{}: {e:#}", path.display()));
            }
        }
    }
    let Some((snap_zxid, snap_path, mut st)) = chosen else {
        if !other.is_empty() {
            bail!(
                "no usable uncompressed snapshot in {} (compressed snapshots are not supported: {:?}); {errors:?}",
                dir.display(),
                other
            );
        }
        bail!("no valid snapshot.<zxid> in {} {errors:?}", dir.display());
    };
    st.last_zxid = snap_zxid;
    report.snapshot = snap_path;
    report.snapshot_zxid = snap_zxid;

    // FileTxnSnapLog.getLogFiles: the newest log starting at or before the snapshot's
    // zxid, and every later one.
    let (logs, _) = zxid_files(&dir, "log")?;
    let first = logs.iter().rposition(|(z, _)| *z <= snap_zxid).unwrap_or(0);
    for (_, path) in &logs[first.min(logs.len())..] {
        replay_log(&mut st, path, snap_zxid, &mut report)?;
        report.logs.push(path.clone());
    }

    // ZooKeeperServer.loadData: ephemerals of sessions no file knows are deleted.
    let orphans: Vec<i64> = st
        .ephemerals
        .keys()
        .filter(|id| !st.sessions.contains_key(id))
        .copied()
        .collect();
    let zxid = st.last_zxid;
    for id in orphans {
        let paths: Vec<String> = st
            .ephemerals
            .remove(&id)
            .unwrap_or_default()
            .into_iter()
            .collect();
        for p in paths {
            report.orphan_ephemerals_dropped += 1;
            let _ = st.delete(&p, zxid);
        }
    }

    report.last_zxid = st.last_zxid;
    report.nodes = st.nodes.len();
    report.sessions = st.sessions.len();
    report.ephemerals = st.ephemerals.values().map(BTreeSet::len).sum();

    let mut rows = Vec::with_capacity(st.nodes.len() + st.sessions.len() + 1);
    for (path, node) in &st.nodes {
        let mut k = vec![b'n'];
        k.extend_from_slice(path.as_bytes());
        rows.push((k, rmp_serde::to_vec(node).context("encoding a node")?));
    }
    for (id, timeout) in &st.sessions {
        let mut k = vec![b's'];
        k.extend_from_slice(&id.to_be_bytes());
        let s = Session {
            timeout_ms: *timeout,
            passwd: rand::random::<[u8; 16]>().to_vec(),
        };
        rows.push((k, rmp_serde::to_vec(&s).context("encoding a session")?));
    }
    rows.push((b"z".to_vec(), st.last_zxid.to_be_bytes().to_vec()));
    rows.sort();
    Ok((rows, report))
}

/// Imports `zk_dir` into `target` (which must not exist or be empty).
pub async fn import(zk_dir: &Path, target: &Path) -> anyhow::Result<ImportReport> {
    if target.exists()
        && std::fs::read_dir(target)
            .with_context(|| format!("reading {}", target.display()))?
            .next()
            .is_some()
    {
        bail!("target {} is not empty", target.display());
    }
    let (rows, report) = read_zookeeper(zk_dir)?;
    let mut sm = StateMachine::new();
    sm.restore(rows)
        .map_err(|e| anyhow::anyhow!("restoring the imported state: {e}"))?;
    std::fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
    // Written as already applied up to ZooKeeper's last zxid (see
    // `export::write_data_dir`), so Wazoo's next zxids are above every imported one even
    // for a cluster's epoch-prefixed zxids, and clients that saw them can reconnect.
    crate::tools::export::write_data_dir(&sm, target)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adler32_known_value() {
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        assert_eq!(adler32(b""), 1);
    }
}
