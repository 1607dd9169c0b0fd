//! `wazoo snapshot export DIR FILE` and `wazoo snapshot import FILE DIR`.
//!
//! A logical dump of a data directory that keeps everything ZooKeeper's client API
//! cannot carry: every znode's data, ACL and full internal stat (czxid, mzxid, pzxid,
//! ctime, mtime, version, the *internal* cversion — the number of child creates, which
//! drives sequence numbers —, aversion and ephemeralOwner including the container and TTL
//! markers), every session (id, timeout, password) and the last zxid.
//!
//! # Format (JSON Lines, UTF-8)
//!
//! ```text
//! {"format":"wazoo-export","version":1,"last_zxid":…,"sessions":N,"nodes":M}
//! {"type":"session","id":…,"timeout_ms":…,"passwd":"<base64>"}          (by id)
//! {"type":"node","path":"/",…}                                          (by path)
//! ```
//!
//! A node line holds `path`, `data` (standard base64, `null` for no data), `acl`
//! (`[{"perms":31,"scheme":"world","id":"anyone"}]`), the stat fields `czxid`, `mzxid`,
//! `pzxid`, `ctime`, `mtime`, `version`, `cversion` (internal: child creates, *not* the
//! client-visible value), `aversion`, `ephemeral_owner` (raw, so containers and TTL nodes
//! keep their markers), and, for readers, `kind` (`persistent`, `ephemeral`,
//! `container`, `ttl`) and `ttl_ms` (TTL nodes only). `kind`/`ttl_ms` are derived from
//! `ephemeral_owner`; import checks they agree. Lines are sorted, so the same state
//! always exports to the same bytes and two exports diff line by line.
//!
//! Import accepts only an empty or non-existent data directory. It validates the whole
//! file (header, JSON, base64, paths, duplicates, root present, every parent present,
//! every ephemeral's session present) and names the offending line on error, rebuilds
//! the [`StateMachine`] through its own `restore`, and writes its rows into a new raft
//! database (`<dir>/raft`), exactly as the raft store persists the initial state of a new
//! database, plus the applied log id (the index of the last zxid) and the one-voter
//! membership, so that the raft log, and with it zxids and session ids, continues above
//! the imported ones (see [`applied_state`]). The first `Server::start` on the directory
//! restores those rows, treats the log as purged up to that index and elects itself.
//!
//! The export reads the state machine rows, i.e. the state as of the last *applied* log
//! entry, which for a cleanly stopped standalone server is everything acknowledged.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use wazoo_proto::{Acl, Id};

use openraft::{BasicNode, CommittedLeaderId, LogId, Membership, StoredMembership};

use crate::command::ZXID_POSITION_BITS;
use crate::raft::db::{CF_SM_DATA, CF_SM_META};
use crate::raft::STANDALONE_NODE_ID;
use crate::state_machine::{Session, StateMachine};
use crate::tree::{NodeKind, StatPersisted, Znode};

/// The `format` of the header line.
pub const FORMAT: &str = "wazoo-export";
/// The only version this build reads and writes.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    version: u32,
    last_zxid: i64,
    sessions: u64,
    nodes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AclLine {
    perms: i32,
    scheme: String,
    id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionLine {
    #[serde(rename = "type")]
    ty: String,
    id: i64,
    timeout_ms: i32,
    passwd: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeLine {
    #[serde(rename = "type")]
    ty: String,
    path: String,
    data: Option<String>,
    acl: Vec<AclLine>,
    czxid: i64,
    mzxid: i64,
    pzxid: i64,
    ctime: i64,
    mtime: i64,
    version: i32,
    cversion: i32,
    aversion: i32,
    ephemeral_owner: i64,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl_ms: Option<i64>,
}

/// Only to read a line's `type` before parsing it strictly.
#[derive(Deserialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    ty: Option<String>,
}

fn kind_name(k: NodeKind) -> &'static str {
    match k {
        NodeKind::Persistent => "persistent",
        NodeKind::Ephemeral(_) => "ephemeral",
        NodeKind::Container => "container",
        NodeKind::Ttl(_) => "ttl",
    }
}

/// What an export or import covered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub nodes: u64,
    pub sessions: u64,
    pub last_zxid: i64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} znodes, {} sessions, last zxid {:#x}",
            self.nodes, self.sessions, self.last_zxid
        )
    }
}

/// Writes the export of `sm` to `out`.
pub fn write_export(sm: &StateMachine, out: &mut dyn Write) -> anyhow::Result<Report> {
    let tree = sm.tree();
    let nodes: BTreeMap<&String, &Znode> = tree.iter().collect();
    let header = Header {
        format: FORMAT.to_string(),
        version: VERSION,
        last_zxid: sm.last_zxid(),
        sessions: sm.sessions().len() as u64,
        nodes: nodes.len() as u64,
    };
    serde_json::to_writer(&mut *out, &header)?;
    out.write_all(b"\n")?;
    for (id, s) in sm.sessions() {
        let line = SessionLine {
            ty: "session".into(),
            id: *id,
            timeout_ms: s.timeout_ms,
            passwd: B64.encode(&s.passwd),
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
    }
    for (path, n) in &nodes {
        let st = &n.stat;
        let kind = n.kind();
        let line = NodeLine {
            ty: "node".into(),
            path: (*path).clone(),
            data: n.data.as_ref().map(|d| B64.encode(d)),
            acl: n
                .acl
                .iter()
                .map(|a| AclLine {
                    perms: a.perms,
                    scheme: a.id.scheme.clone(),
                    id: a.id.id.clone(),
                })
                .collect(),
            czxid: st.czxid,
            mzxid: st.mzxid,
            pzxid: st.pzxid,
            ctime: st.ctime,
            mtime: st.mtime,
            version: st.version,
            cversion: st.cversion,
            aversion: st.aversion,
            ephemeral_owner: st.ephemeral_owner,
            kind: kind_name(kind).into(),
            ttl_ms: match kind {
                NodeKind::Ttl(ms) => Some(ms),
                _ => None,
            },
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(Report {
        nodes: header.nodes,
        sessions: header.sessions,
        last_zxid: header.last_zxid,
    })
}

/// `wazoo snapshot export DIR FILE`: exports data directory `dir` (opened read-only) to
/// `file` (`-` for stdout). The file is written to a temporary name and renamed, so a
/// failed export never leaves a truncated file behind.
pub fn export(dir: &Path, file: &Path) -> anyhow::Result<Report> {
    let loaded = super::snapshot::load(dir)?;
    if file.as_os_str() == "-" {
        let stdout = std::io::stdout();
        let mut w = BufWriter::new(stdout.lock());
        return write_export(&loaded.sm, &mut w);
    }
    let mut tmp_name = file.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = Path::new(&tmp_name);
    let f = std::fs::File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = BufWriter::new(f);
    let report =
        write_export(&loaded.sm, &mut w).with_context(|| format!("writing {}", tmp.display()))?;
    let f = w
        .into_inner()
        .map_err(|e| anyhow!("writing {}: {e}", tmp.display()))?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(tmp, file)
        .with_context(|| format!("renaming {} to {}", tmp.display(), file.display()))?;
    Ok(report)
}

fn b64(line: usize, what: &str, s: &str) -> anyhow::Result<Vec<u8>> {
    B64.decode(s)
        .map_err(|e| anyhow!("line {line}: bad base64 in {what}: {e}"))
}

/// Parses and validates an export, returning the state machine it describes.
pub fn read_export(input: impl Read) -> anyhow::Result<StateMachine> {
    let reader = BufReader::new(input);
    let mut header: Option<Header> = None;
    let mut sessions: BTreeMap<i64, Session> = BTreeMap::new();
    let mut nodes: BTreeMap<String, (usize, Znode)> = BTreeMap::new();
    let mut blank_at: Option<usize> = None;
    for (i, line) in reader.lines().enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("line {n}: cannot read"))?;
        if line.trim().is_empty() {
            blank_at.get_or_insert(n);
            continue;
        }
        if let Some(b) = blank_at {
            bail!("line {b}: empty line in the middle of the file");
        }
        if header.is_none() {
            let h: Header = serde_json::from_str(&line)
                .map_err(|e| anyhow!("line {n}: bad header (not a {FORMAT} file?): {e}"))?;
            if h.format != FORMAT {
                bail!("line {n}: format is {:?}, expected {FORMAT:?}", h.format);
            }
            if h.version != VERSION {
                bail!(
                    "line {n}: unsupported {FORMAT} version {} (this build reads {VERSION})",
                    h.version
                );
            }
            header = Some(h);
            continue;
        }
        let ty: TypeOnly =
            serde_json::from_str(&line).map_err(|e| anyhow!("line {n}: bad JSON: {e}"))?;
        match ty.ty.as_deref() {
            Some("session") => {
                let s: SessionLine = serde_json::from_str(&line)
                    .map_err(|e| anyhow!("line {n}: bad session record: {e}"))?;
                let passwd = b64(n, "passwd", &s.passwd)?;
                if sessions
                    .insert(
                        s.id,
                        Session {
                            timeout_ms: s.timeout_ms,
                            passwd,
                        },
                    )
                    .is_some()
                {
                    bail!("line {n}: duplicate session {:#x}", s.id);
                }
            }
            Some("node") => {
                let r: NodeLine = serde_json::from_str(&line)
                    .map_err(|e| anyhow!("line {n}: bad node record: {e}"))?;
                wazoo_proto::path::validate_path(&r.path, false)
                    .map_err(|e| anyhow!("line {n}: invalid path {:?}: {e:?}", r.path))?;
                let data = match &r.data {
                    Some(d) => Some(b64(n, "data", d)?),
                    None => None,
                };
                let kind = NodeKind::of(r.ephemeral_owner);
                if r.kind != kind_name(kind) {
                    bail!(
                        "line {n}: {}: kind {:?} does not match ephemeral_owner {:#x} ({})",
                        r.path,
                        r.kind,
                        r.ephemeral_owner,
                        kind_name(kind)
                    );
                }
                let ttl = match kind {
                    NodeKind::Ttl(ms) => Some(ms),
                    _ => None,
                };
                if r.ttl_ms != ttl {
                    bail!(
                        "line {n}: {}: ttl_ms {:?} does not match ephemeral_owner {:#x}",
                        r.path,
                        r.ttl_ms,
                        r.ephemeral_owner
                    );
                }
                let node = Znode {
                    data,
                    acl: r
                        .acl
                        .into_iter()
                        .map(|a| Acl {
                            perms: a.perms,
                            id: Id {
                                scheme: a.scheme,
                                id: a.id,
                            },
                        })
                        .collect(),
                    stat: StatPersisted {
                        czxid: r.czxid,
                        mzxid: r.mzxid,
                        ctime: r.ctime,
                        mtime: r.mtime,
                        version: r.version,
                        cversion: r.cversion,
                        aversion: r.aversion,
                        ephemeral_owner: r.ephemeral_owner,
                        pzxid: r.pzxid,
                    },
                    children: BTreeSet::new(),
                };
                if nodes.insert(r.path.clone(), (n, node)).is_some() {
                    bail!("line {n}: duplicate node {}", r.path);
                }
            }
            Some(other) => bail!("line {n}: unknown record type {other:?}"),
            None => bail!("line {n}: record without a \"type\""),
        }
    }
    let Some(header) = header else {
        bail!("line 1: empty file (no {FORMAT} header)");
    };
    if !nodes.contains_key("/") {
        bail!("no root node \"/\" in the file");
    }
    for (path, (n, node)) in &nodes {
        if path != "/" {
            let par = wazoo_proto::path::parent(path);
            match nodes.get(par) {
                None => bail!("line {n}: {path}: parent {par} is not in the file"),
                Some((_, p))
                    if !matches!(
                        p.kind(),
                        NodeKind::Persistent | NodeKind::Container | NodeKind::Ttl(_)
                    ) =>
                {
                    bail!("line {n}: {path}: parent {par} is ephemeral")
                }
                _ => {}
            }
        }
        if let NodeKind::Ephemeral(owner) = node.kind() {
            if !sessions.contains_key(&owner) {
                bail!("line {n}: {path}: ephemeral owner session {owner:#x} is not in the file");
            }
        }
    }
    if header.sessions != sessions.len() as u64 || header.nodes != nodes.len() as u64 {
        bail!(
            "line 1: header announces {} sessions and {} nodes, the file has {} and {} (truncated?)",
            header.sessions,
            header.nodes,
            sessions.len(),
            nodes.len()
        );
    }
    // Through the state machine's own rows and restore, like a server start.
    let mut rows: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(nodes.len() + sessions.len() + 1);
    for (path, (_, node)) in &nodes {
        let mut k = vec![b'n'];
        k.extend_from_slice(path.as_bytes());
        rows.push((k, rmp_serde::to_vec(node)?));
    }
    for (id, s) in &sessions {
        let mut k = vec![b's'];
        k.extend_from_slice(&id.to_be_bytes());
        rows.push((k, rmp_serde::to_vec(s)?));
    }
    rows.push((b"z".to_vec(), header.last_zxid.to_be_bytes().to_vec()));
    let mut sm = StateMachine::new();
    sm.restore(rows).map_err(|e| anyhow!("{e}"))?;
    Ok(sm)
}

/// Checks that `dir` is empty or absent, then creates it.
fn prepare_empty_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if let Some(e) = entries.next() {
                let e = e.with_context(|| format!("reading {}", dir.display()))?;
                bail!(
                    "refusing to import into {}: the directory is not empty (it holds {}); \
                     import only into an empty or non-existent data directory",
                    dir.display(),
                    e.file_name().to_string_lossy()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
        }
        Err(e) if dir.exists() && !dir.is_dir() => {
            bail!(
                "refusing to import into {}: not a directory ({e})",
                dir.display()
            )
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

/// What `sm_meta` records: the last applied log id and the membership.
type AppliedState = (Option<LogId<u64>>, StoredMembership<u64, BasicNode>);

use crate::raft::state_machine_store::{KEY_LAST_APPLIED, KEY_LAST_MEMBERSHIP};

/// Zxids are derived from raft log indexes (`index << 16 | position`), so a fresh raft
/// log starting at index 0 would hand out zxids (and session ids, `SESSION_ID_BASE |
/// zxid`) *below* the imported ones: new writes would look older than the imported
/// nodes, new sessions could collide with imported ones, and clients that saw the old
/// last zxid would be refused on reconnect. So the imported state machine is recorded
/// as having applied the log up to the index of the last zxid, with the standalone
/// one-voter membership. On its first start openraft then treats the log as purged up
/// to there (`get_initial_state` purges up to `last_applied` and builds a snapshot), the
/// node elects itself and its first entry gets index `last + 1`, hence a zxid above
/// every imported one.
fn applied_state(last_zxid: i64) -> Option<AppliedState> {
    if last_zxid <= 0 {
        // A fresh tree: let the server initialize the cluster as for a new directory.
        return None;
    }
    let index = (last_zxid as u64) >> ZXID_POSITION_BITS;
    let log_id = LogId::new(CommittedLeaderId::new(0, 0), index);
    let membership = Membership::new(
        vec![BTreeSet::from([STANDALONE_NODE_ID])],
        BTreeMap::from([(STANDALONE_NODE_ID, BasicNode::default())]),
    );
    Some((
        Some(log_id),
        StoredMembership::new(Some(log_id), membership),
    ))
}

/// Writes `sm` as the state machine rows of a new raft database in `<dir>/raft`: the
/// same rows `StateMachineStore::open` writes for the initial state of a new database,
/// with every column family the server uses.
pub(crate) fn write_data_dir(sm: &StateMachine, dir: &Path) -> anyhow::Result<()> {
    let path = dir.join("raft");
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.set_error_if_exists(true);
    opts.create_missing_column_families(true);
    let cfs = crate::raft::db::ALL_CFS
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    let db = DB::open_cf_descriptors(&opts, &path, cfs)
        .with_context(|| format!("creating {}", path.display()))?;
    let cf = db
        .cf_handle(CF_SM_DATA)
        .context("column family sm_data missing")?;
    let mut batch = WriteBatch::default();
    for (k, v) in sm.dump() {
        batch.put_cf(cf, k, v);
    }
    if let Some((applied, membership)) = applied_state(sm.last_zxid()) {
        let meta = db
            .cf_handle(CF_SM_META)
            .context("column family sm_meta missing")?;
        batch.put_cf(meta, KEY_LAST_APPLIED, rmp_serde::to_vec_named(&applied)?);
        batch.put_cf(
            meta,
            KEY_LAST_MEMBERSHIP,
            rmp_serde::to_vec_named(&membership)?,
        );
    }
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    db.write_opt(batch, &wo)
        .with_context(|| format!("writing {}", path.display()))?;
    db.flush_cf(cf)
        .with_context(|| format!("flushing {}", path.display()))?;
    Ok(())
}

/// `wazoo snapshot import FILE DIR`: validates `file` (`-` for stdin) and creates data
/// directory `dir` (which must be empty or absent) holding exactly that state.
pub fn import(file: &Path, dir: &Path) -> anyhow::Result<Report> {
    // Validate everything before touching the target.
    let sm = if file.as_os_str() == "-" {
        read_export(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        read_export(f)
    }
    .with_context(|| format!("{}", file.display()))?;
    prepare_empty_dir(dir)?;
    write_data_dir(&sm, dir)?;
    Ok(Report {
        nodes: sm.tree().len() as u64,
        sessions: sm.sessions().len() as u64,
        last_zxid: sm.last_zxid(),
    })
}
