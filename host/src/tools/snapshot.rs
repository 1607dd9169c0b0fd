//! `wazoo snapshot summary` and `wazoo snapshot diff`.
//!
//! Both read the state machine rows (`sm_data`: the tree and sessions as of the last
//! applied log entry, which is what a restarted server would serve) and rebuild the
//! tree with [`StateMachine::restore`], the code path the server itself uses.
//!
//! Sizes: a node's *subtree* is the node and all its descendants; `bytes` is the data
//! bytes of the subtree and `count` its number of nodes (so a leaf has count 1).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;

use anyhow::Context;
use openraft::LogId;
use rocksdb::IteratorMode;
use serde::Serialize;

use crate::raft::db::{CF_SM_DATA, CF_SM_META};
use crate::state_machine::StateMachine;
use crate::tree::{NodeKind, Znode};

/// How many largest subtrees the summary lists.
pub const TOP_SUBTREES: usize = 10;

/// Size of a subtree (node + descendants).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Size {
    pub bytes: u64,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubtreeSize {
    pub path: String,
    pub bytes: u64,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub dir: String,
    /// Log index of the last entry applied to these rows.
    pub last_applied_index: Option<u64>,
    pub last_zxid: i64,
    pub node_count: u64,
    pub data_bytes: u64,
    /// Depth of the deepest node (`/` is depth 0, `/a` depth 1).
    pub max_depth: usize,
    /// Number of nodes at each depth, index = depth.
    pub nodes_per_depth: Vec<u64>,
    /// Largest subtrees by data bytes (the root excluded: it is the whole tree).
    pub largest_by_bytes: Vec<SubtreeSize>,
    /// Largest subtrees by node count (the root excluded).
    pub largest_by_count: Vec<SubtreeSize>,
    pub sessions: u64,
    pub ephemerals: u64,
    pub containers: u64,
    pub ttl_nodes: u64,
}

/// A data directory loaded into memory.
pub struct Loaded {
    pub dir: String,
    pub last_applied_index: Option<u64>,
    pub sm: StateMachine,
}

/// Reads the state machine of data directory `dir` (read-only).
pub fn load(dir: &Path) -> anyhow::Result<Loaded> {
    let db = super::open_read_only(dir)?;
    let data_cf = db
        .cf_handle(CF_SM_DATA)
        .context("column family sm_data missing")?;
    let mut rows = Vec::new();
    for item in db.iterator_cf(data_cf, IteratorMode::Start) {
        let (k, v) = item.context("reading sm_data")?;
        rows.push((k.into_vec(), v.into_vec()));
    }
    let meta_cf = db
        .cf_handle(CF_SM_META)
        .context("column family sm_meta missing")?;
    let last_applied: Option<LogId<u64>> = match db
        .get_cf(meta_cf, crate::raft::state_machine_store::KEY_LAST_APPLIED)
        .context("reading sm_meta")?
    {
        Some(b) => rmp_serde::from_slice(&b).context("decoding last_applied")?,
        None => None,
    };
    let mut sm = StateMachine::new();
    sm.restore(rows)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    Ok(Loaded {
        dir: dir.display().to_string(),
        last_applied_index: last_applied.map(|l| l.index),
        sm,
    })
}

fn depth(path: &str) -> usize {
    if path == "/" {
        0
    } else {
        path.matches('/').count()
    }
}

fn parent(path: &str) -> Option<&str> {
    match path.rfind('/') {
        _ if path == "/" => None,
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

fn data_len(n: &Znode) -> u64 {
    n.data.as_ref().map_or(0, |d| d.len() as u64)
}

/// Subtree sizes of every node.
pub fn subtree_sizes(sm: &StateMachine) -> HashMap<String, Size> {
    let mut paths: Vec<(&String, &Znode)> = sm.tree().iter().collect();
    // Deepest first, so a node is complete before it is added to its parent.
    paths.sort_by_key(|(p, _)| std::cmp::Reverse(depth(p)));
    let mut sizes: HashMap<String, Size> = HashMap::with_capacity(paths.len());
    for (p, n) in paths {
        let s = sizes.entry(p.clone()).or_default();
        s.bytes += data_len(n);
        s.count += 1;
        let s = *s;
        if let Some(par) = parent(p) {
            let ps = sizes.entry(par.to_string()).or_default();
            ps.bytes += s.bytes;
            ps.count += s.count;
        }
    }
    sizes
}

fn top(sizes: &HashMap<String, Size>, key: impl Fn(&Size) -> u64) -> Vec<SubtreeSize> {
    let mut v: Vec<SubtreeSize> = sizes
        .iter()
        .filter(|(p, _)| p.as_str() != "/")
        .map(|(p, s)| SubtreeSize {
            path: p.clone(),
            bytes: s.bytes,
            count: s.count,
        })
        .collect();
    v.sort_by(|a, b| {
        key(&Size {
            bytes: b.bytes,
            count: b.count,
        })
        .cmp(&key(&Size {
            bytes: a.bytes,
            count: a.count,
        }))
        .then_with(|| a.path.cmp(&b.path))
    });
    v.truncate(TOP_SUBTREES);
    v
}

/// The summary of a loaded state machine.
pub fn summarize(l: &Loaded) -> Summary {
    let tree = l.sm.tree();
    let mut nodes_per_depth: Vec<u64> = Vec::new();
    let mut data_bytes = 0;
    let (mut containers, mut ttl_nodes) = (0, 0);
    for (p, n) in tree.iter() {
        let d = depth(p);
        if nodes_per_depth.len() <= d {
            nodes_per_depth.resize(d + 1, 0);
        }
        nodes_per_depth[d] += 1;
        data_bytes += data_len(n);
        match n.kind() {
            NodeKind::Container => containers += 1,
            NodeKind::Ttl(_) => ttl_nodes += 1,
            _ => {}
        }
    }
    let sizes = subtree_sizes(&l.sm);
    Summary {
        dir: l.dir.clone(),
        last_applied_index: l.last_applied_index,
        last_zxid: l.sm.last_zxid(),
        node_count: tree.len() as u64,
        data_bytes,
        max_depth: nodes_per_depth.len().saturating_sub(1),
        nodes_per_depth,
        largest_by_bytes: top(&sizes, |s| s.bytes),
        largest_by_count: top(&sizes, |s| s.count),
        sessions: l.sm.sessions().len() as u64,
        ephemerals: tree.ephemeral_count() as u64,
        containers,
        ttl_nodes,
    }
}

/// `wazoo snapshot summary DIR`.
pub fn summary(dir: &Path) -> anyhow::Result<Summary> {
    Ok(summarize(&load(dir)?))
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "data dir:        {}", self.dir)?;
        match self.last_applied_index {
            Some(i) => writeln!(f, "last applied:    log index {i}")?,
            None => writeln!(f, "last applied:    none")?,
        }
        writeln!(f, "last zxid:       {:#x}", self.last_zxid)?;
        writeln!(f, "znodes:          {}", self.node_count)?;
        writeln!(f, "data bytes:      {}", self.data_bytes)?;
        writeln!(f, "max depth:       {}", self.max_depth)?;
        writeln!(f, "sessions:        {}", self.sessions)?;
        writeln!(f, "ephemerals:      {}", self.ephemerals)?;
        writeln!(f, "containers:      {}", self.containers)?;
        writeln!(f, "ttl nodes:       {}", self.ttl_nodes)?;
        writeln!(f, "znodes per depth:")?;
        for (d, n) in self.nodes_per_depth.iter().enumerate() {
            writeln!(f, "  {d:>4}  {n}")?;
        }
        writeln!(f, "largest subtrees by bytes (bytes, znodes, path):")?;
        for s in &self.largest_by_bytes {
            writeln!(f, "  {:>12}  {:>8}  {}", s.bytes, s.count, s.path)?;
        }
        writeln!(f, "largest subtrees by znode count (znodes, bytes, path):")?;
        for s in &self.largest_by_count {
            writeln!(f, "  {:>8}  {:>12}  {}", s.count, s.bytes, s.path)?;
        }
        Ok(())
    }
}

// ---- diff ----

/// A subtree present on one side only (only its top node is listed: everything below
/// it is on that side only too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OneSided {
    pub path: String,
    /// The subtree's data bytes and node count.
    pub bytes: u64,
    pub count: u64,
}

/// A node on both sides whose data, version or ACL differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    pub path: String,
    /// Which of `data`, `version`, `acl` differ.
    pub fields: Vec<String>,
    pub left_version: i32,
    pub right_version: i32,
    pub left_data_bytes: u64,
    pub right_data_bytes: u64,
    pub left_subtree: Size,
    pub right_subtree: Size,
}

#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    pub left: Summary,
    pub right: Summary,
    pub min_bytes: u64,
    pub min_count: u64,
    pub only_left: Vec<OneSided>,
    pub only_right: Vec<OneSided>,
    pub changed: Vec<Changed>,
    /// Differences found before the thresholds were applied.
    pub total_differences: u64,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.only_left.is_empty() && self.only_right.is_empty() && self.changed.is_empty()
    }
}

fn one_sided(
    mine: &StateMachine,
    other: &StateMachine,
    sizes: &HashMap<String, Size>,
) -> Vec<OneSided> {
    let missing: BTreeSet<&String> = mine
        .tree()
        .iter()
        .map(|(p, _)| p)
        .filter(|p| other.tree().get(p).is_none())
        .collect();
    missing
        .iter()
        // Only the top of each one-sided subtree.
        .filter(|p| match parent(p) {
            None => true,
            Some(par) => other.tree().get(par).is_some(),
        })
        .map(|p| {
            let s = sizes.get(p.as_str()).copied().unwrap_or_default();
            OneSided {
                path: (*p).clone(),
                bytes: s.bytes,
                count: s.count,
            }
        })
        .collect()
}

/// `wazoo snapshot diff LEFT RIGHT`: a difference is reported when it covers at least
/// `min_bytes` data bytes **and** `min_count` znodes. A one-sided subtree covers its
/// subtree's bytes and count; a changed node covers the larger of its two data sizes
/// and one znode.
pub fn diff(left: &Path, right: &Path, min_bytes: u64, min_count: u64) -> anyhow::Result<Diff> {
    let l = load(left)?;
    let r = load(right)?;
    let (ls, rs) = (subtree_sizes(&l.sm), subtree_sizes(&r.sm));
    let only_left = one_sided(&l.sm, &r.sm, &ls);
    let only_right = one_sided(&r.sm, &l.sm, &rs);
    let mut changed = Vec::new();
    let left_nodes: BTreeMap<&String, &Znode> = l.sm.tree().iter().collect();
    for (p, ln) in left_nodes {
        let Some(rn) = r.sm.tree().get(p) else {
            continue;
        };
        let mut fields = Vec::new();
        if ln.data != rn.data {
            fields.push("data".to_string());
        }
        if ln.stat.version != rn.stat.version {
            fields.push("version".to_string());
        }
        if ln.acl != rn.acl {
            fields.push("acl".to_string());
        }
        if fields.is_empty() {
            continue;
        }
        changed.push(Changed {
            path: p.clone(),
            fields,
            left_version: ln.stat.version,
            right_version: rn.stat.version,
            left_data_bytes: data_len(ln),
            right_data_bytes: data_len(rn),
            left_subtree: ls.get(p).copied().unwrap_or_default(),
            right_subtree: rs.get(p).copied().unwrap_or_default(),
        });
    }
    let total = (only_left.len() + only_right.len() + changed.len()) as u64;
    let keep = |bytes: u64, count: u64| bytes >= min_bytes && count >= min_count;
    Ok(Diff {
        left: summarize(&l),
        right: summarize(&r),
        min_bytes,
        min_count,
        only_left: only_left
            .into_iter()
            .filter(|o| keep(o.bytes, o.count))
            .collect(),
        only_right: only_right
            .into_iter()
            .filter(|o| keep(o.bytes, o.count))
            .collect(),
        changed: changed
            .into_iter()
            .filter(|c| keep(c.left_data_bytes.max(c.right_data_bytes), 1))
            .collect(),
        total_differences: total,
    })
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (l, r) = (&self.left, &self.right);
        writeln!(f, "{:<18}{:>20}  {:>20}", "", "left", "right")?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, a: String, b: String| {
            writeln!(f, "{name:<18}{a:>20}  {b:>20}")
        };
        row(
            f,
            "last zxid",
            format!("{:#x}", l.last_zxid),
            format!("{:#x}", r.last_zxid),
        )?;
        row(
            f,
            "znodes",
            l.node_count.to_string(),
            r.node_count.to_string(),
        )?;
        row(
            f,
            "data bytes",
            l.data_bytes.to_string(),
            r.data_bytes.to_string(),
        )?;
        row(
            f,
            "max depth",
            l.max_depth.to_string(),
            r.max_depth.to_string(),
        )?;
        row(
            f,
            "sessions",
            l.sessions.to_string(),
            r.sessions.to_string(),
        )?;
        row(
            f,
            "ephemerals",
            l.ephemerals.to_string(),
            r.ephemerals.to_string(),
        )?;
        let depths = l.nodes_per_depth.len().max(r.nodes_per_depth.len());
        for d in 0..depths {
            let get = |v: &Vec<u64>| v.get(d).copied().unwrap_or(0).to_string();
            row(
                f,
                &format!("znodes at depth {d}"),
                get(&l.nodes_per_depth),
                get(&r.nodes_per_depth),
            )?;
        }
        writeln!(
            f,
            "differences: {} (shown: at least {} bytes and {} znodes)",
            self.total_differences, self.min_bytes, self.min_count
        )?;
        writeln!(f, "only in left ({}): bytes, znodes, path", l.dir)?;
        for o in &self.only_left {
            writeln!(f, "  - {:>12}  {:>8}  {}", o.bytes, o.count, o.path)?;
        }
        writeln!(f, "only in right ({}): bytes, znodes, path", r.dir)?;
        for o in &self.only_right {
            writeln!(f, "  + {:>12}  {:>8}  {}", o.bytes, o.count, o.path)?;
        }
        writeln!(
            f,
            "changed: path [fields] version l→r, data bytes l→r, subtree bytes/znodes l→r"
        )?;
        for c in &self.changed {
            writeln!(
                f,
                "  ~ {} [{}] v{}→v{} {}→{} B, subtree {}/{} → {}/{}",
                c.path,
                c.fields.join(","),
                c.left_version,
                c.right_version,
                c.left_data_bytes,
                c.right_data_bytes,
                c.left_subtree.bytes,
                c.left_subtree.count,
                c.right_subtree.bytes,
                c.right_subtree.count
            )?;
        }
        Ok(())
    }
}
