//! The znode tree: nodes, their stats and ACLs, and the mutations ZooKeeper defines,
//! with its exact Stat bookkeeping (see `DataTree.createNode/deleteNode/setData`).
//!
//! Pure and deterministic: no clock, no I/O. The state machine calls these with the
//! zxid and time taken from the log entry. Every mutation is recorded in an undo log
//! so that a failing `multi` can be rolled back, and in a dirty set so that the
//! storage layer persists exactly the rows that changed.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use wazoo_proto::consts::{CONTAINER_EPHEMERAL_OWNER, TTL_EPHEMERAL_OWNER_MASK};
use wazoo_proto::path::{basename, join, parent};
use wazoo_proto::{Acl, ErrorCode, Stat};

/// What ZooKeeper keeps per node (`StatPersisted`); `dataLength` and `numChildren`
/// are derived when a `Stat` is built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StatPersisted {
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub pzxid: i64,
}

/// A znode. Children are kept by name in order, so listings are deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Znode {
    pub data: Option<Vec<u8>>,
    pub acl: Vec<Acl>,
    pub stat: StatPersisted,
    #[serde(skip)]
    pub children: BTreeSet<String>,
}

/// What `ephemeralOwner` says a node is (`EphemeralType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Persistent,
    Ephemeral(i64),
    Container,
    Ttl(i64),
}

impl NodeKind {
    pub fn of(owner: i64) -> NodeKind {
        if owner == 0 {
            NodeKind::Persistent
        } else if owner == CONTAINER_EPHEMERAL_OWNER {
            NodeKind::Container
        } else if owner & TTL_EPHEMERAL_OWNER_MASK == TTL_EPHEMERAL_OWNER_MASK {
            NodeKind::Ttl(owner & !TTL_EPHEMERAL_OWNER_MASK)
        } else {
            NodeKind::Ephemeral(owner)
        }
    }
}

impl Znode {
    /// The Stat clients see (`DataNode.copyStat`): ZooKeeper stores the number of child
    /// creates in cversion but reports creates + deletes, i.e. `2 × creates − children`;
    /// and containers and TTL nodes report ephemeralOwner 0.
    pub fn stat(&self) -> Stat {
        let s = &self.stat;
        let num_children = self.children.len() as i32;
        Stat {
            czxid: s.czxid,
            mzxid: s.mzxid,
            ctime: s.ctime,
            mtime: s.mtime,
            version: s.version,
            cversion: s.cversion.wrapping_mul(2).wrapping_sub(num_children),
            aversion: s.aversion,
            ephemeral_owner: match self.kind() {
                NodeKind::Ephemeral(owner) => owner,
                _ => 0,
            },
            data_length: self.data.as_ref().map_or(0, |d| d.len() as i32),
            num_children,
            pzxid: s.pzxid,
        }
    }

    pub fn kind(&self) -> NodeKind {
        NodeKind::of(self.stat.ephemeral_owner)
    }
}

/// A change to the tree that watches care about, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeEvent {
    Created(String),
    Deleted(String),
    DataChanged(String),
    ChildrenChanged(String),
}

/// What a create supplies for the new node; the tree fills in the Stat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNode {
    pub data: Option<Vec<u8>>,
    pub acl: Vec<Acl>,
    pub ephemeral_owner: i64,
}

/// Where [`DataTree::rollback_to`] returns to.
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct Savepoint {
    undo_len: usize,
    events_len: usize,
    was_recording: bool,
}

/// Undo record: the previous value of one path (None = it did not exist).
type Undo = (String, Option<Znode>);

#[derive(Debug, Default, Clone)]
pub struct DataTree {
    nodes: HashMap<String, Znode>,
    /// Session id → its ephemeral nodes.
    ephemerals: HashMap<i64, BTreeSet<String>>,
    containers: BTreeSet<String>,
    ttls: BTreeSet<String>,
    /// Paths changed since the last `take_dirty`.
    dirty: HashSet<String>,
    /// While recording (inside a multi), the previous value of each touched path.
    undo: Option<Vec<Undo>>,
    pub events: Vec<TreeEvent>,
}

pub const ROOT: &str = "/";

impl DataTree {
    /// A fresh tree with ZooKeeper's system nodes: `/`, `/zookeeper`, `/zookeeper/quota`
    /// and `/zookeeper/config`, all created at zxid 0.
    pub fn new() -> DataTree {
        let mut t = DataTree::default();
        let node = |acl: Vec<Acl>| Znode {
            data: Some(Vec::new()),
            acl,
            stat: StatPersisted::default(),
            children: BTreeSet::new(),
        };
        t.insert_raw(ROOT.into(), node(crate::acl::open_acl_unsafe()));
        t.insert_raw("/zookeeper".into(), node(crate::acl::open_acl_unsafe()));
        t.insert_raw(
            "/zookeeper/quota".into(),
            node(crate::acl::open_acl_unsafe()),
        );
        let mut config = node(crate::acl::read_acl_unsafe());
        // ZooKeeper creates /zookeeper/config with aversion -1.
        config.stat.aversion = -1;
        t.insert_raw("/zookeeper/config".into(), config);
        t.events.clear();
        t
    }

    pub fn get(&self, path: &str) -> Option<&Znode> {
        self.nodes.get(path)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Znode)> {
        self.nodes.iter()
    }

    /// Paths of the ephemerals owned by `session`, sorted.
    pub fn ephemerals_of(&self, session: i64) -> Vec<String> {
        self.ephemerals
            .get(&session)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn ephemeral_count(&self) -> usize {
        self.ephemerals.values().map(BTreeSet::len).sum()
    }

    pub fn containers(&self) -> impl Iterator<Item = &String> {
        self.containers.iter()
    }

    pub fn ttls(&self) -> impl Iterator<Item = &String> {
        self.ttls.iter()
    }

    /// Number of descendants of `path` (not counting itself).
    pub fn descendant_count(&self, path: &str) -> usize {
        let Some(n) = self.nodes.get(path) else {
            return 0;
        };
        n.children
            .iter()
            .map(|c| 1 + self.descendant_count(&join(path, c)))
            .sum()
    }

    /// Inserts a node whose parent exists (or the root), maintaining the indexes.
    /// Used by `new`, by restore from disk, and by `create`.
    fn insert_raw(&mut self, path: String, mut node: Znode) {
        if path != ROOT {
            if let Some(p) = self.nodes.get_mut(parent(&path)) {
                p.children.insert(basename(&path).to_string());
            }
        }
        // A node restored before its children arrive keeps the children found so far.
        if let Some(old) = self.nodes.get(&path) {
            node.children = old.children.clone();
        }
        match node.kind() {
            NodeKind::Ephemeral(s) => {
                self.ephemerals.entry(s).or_default().insert(path.clone());
            }
            NodeKind::Container => {
                self.containers.insert(path.clone());
            }
            NodeKind::Ttl(_) => {
                self.ttls.insert(path.clone());
            }
            NodeKind::Persistent => {}
        }
        self.nodes.insert(path, node);
    }

    fn remove_raw(&mut self, path: &str) -> Option<Znode> {
        let node = self.nodes.remove(path)?;
        if let Some(p) = self.nodes.get_mut(parent(path)) {
            p.children.remove(basename(path));
        }
        match node.kind() {
            NodeKind::Ephemeral(s) => {
                if let Some(set) = self.ephemerals.get_mut(&s) {
                    set.remove(path);
                    if set.is_empty() {
                        self.ephemerals.remove(&s);
                    }
                }
            }
            NodeKind::Container => {
                self.containers.remove(path);
            }
            NodeKind::Ttl(_) => {
                self.ttls.remove(path);
            }
            NodeKind::Persistent => {}
        }
        Some(node)
    }

    /// Remembers the current value of `path` before it is changed.
    fn touch(&mut self, path: &str) {
        self.dirty.insert(path.to_string());
        if let Some(undo) = self.undo.as_mut() {
            undo.push((path.to_string(), self.nodes.get(path).cloned()));
        }
    }

    /// A point to roll back to, nestable (a multi inside a recipe invocation). Starts
    /// recording changes if nothing records yet.
    pub fn savepoint(&mut self) -> Savepoint {
        let was_recording = self.undo.is_some();
        let undo = self.undo.get_or_insert_with(Vec::new);
        Savepoint {
            undo_len: undo.len(),
            events_len: self.events.len(),
            was_recording,
        }
    }

    /// Keeps the changes made since `sp` (they stay undoable by an outer savepoint).
    pub fn release(&mut self, sp: Savepoint) {
        if !sp.was_recording {
            self.undo = None;
        }
    }

    /// Reverts every change made since `sp`, and drops their events.
    pub fn rollback_to(&mut self, sp: Savepoint) {
        if let Some(undo) = self.undo.as_mut() {
            let tail = undo.split_off(sp.undo_len.min(undo.len()));
            for (path, old) in tail.into_iter().rev() {
                let children = self.nodes.get(&path).map(|n| n.children.clone());
                self.remove_raw(&path);
                if let Some(mut node) = old {
                    node.children = children.unwrap_or_default();
                    self.insert_raw(path, node);
                }
            }
        }
        self.events.truncate(sp.events_len);
        if !sp.was_recording {
            self.undo = None;
        }
    }

    /// Starts recording changes so they can be undone (a multi).
    pub fn begin(&mut self) {
        self.undo = Some(Vec::new());
    }

    /// Keeps the changes made since `begin`.
    pub fn commit(&mut self) {
        self.undo = None;
    }

    /// Reverts every change made since `begin`, and drops their events.
    pub fn rollback(&mut self, events_before: usize) {
        if let Some(undo) = self.undo.take() {
            for (path, old) in undo.into_iter().rev() {
                let children = self.nodes.get(&path).map(|n| n.children.clone());
                self.remove_raw(&path);
                if let Some(mut node) = old {
                    node.children = children.unwrap_or_default();
                    self.insert_raw(path, node);
                }
            }
        }
        self.events.truncate(events_before);
    }

    /// Creates `path` (already validated, sequence suffix already appended). The caller
    /// has checked the parent exists and may have children; this does the bookkeeping:
    /// the parent's cversion becomes `parent_cversion` and its pzxid the zxid.
    pub fn create(
        &mut self,
        path: &str,
        node: NewNode,
        parent_cversion: i32,
        zxid: i64,
        time: i64,
    ) {
        let NewNode {
            data,
            acl,
            ephemeral_owner,
        } = node;
        let parent_path = parent(path).to_string();
        self.touch(&parent_path);
        self.touch(path);
        if let Some(p) = self.nodes.get_mut(&parent_path) {
            p.stat.cversion = parent_cversion;
            p.stat.pzxid = zxid;
        }
        let stat = StatPersisted {
            czxid: zxid,
            mzxid: zxid,
            ctime: time,
            mtime: time,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner,
            pzxid: zxid,
        };
        self.insert_raw(
            path.to_string(),
            Znode {
                data,
                acl,
                stat,
                children: BTreeSet::new(),
            },
        );
        self.events.push(TreeEvent::Created(path.to_string()));
        self.events.push(TreeEvent::ChildrenChanged(parent_path));
    }

    /// Deletes a childless node; the parent's pzxid becomes the zxid (its cversion is
    /// unchanged, as in ZooKeeper).
    pub fn delete(&mut self, path: &str, zxid: i64) -> Result<(), ErrorCode> {
        if !self.nodes.contains_key(path) {
            return Err(ErrorCode::NoNode);
        }
        let parent_path = parent(path).to_string();
        self.touch(&parent_path);
        self.touch(path);
        if let Some(p) = self.nodes.get_mut(&parent_path) {
            if zxid > p.stat.pzxid {
                p.stat.pzxid = zxid;
            }
        }
        self.remove_raw(path);
        self.events.push(TreeEvent::Deleted(path.to_string()));
        self.events.push(TreeEvent::ChildrenChanged(parent_path));
        Ok(())
    }

    pub fn set_data(
        &mut self,
        path: &str,
        data: Option<Vec<u8>>,
        version: i32,
        zxid: i64,
        time: i64,
    ) -> Result<Stat, ErrorCode> {
        self.touch(path);
        let n = self.nodes.get_mut(path).ok_or(ErrorCode::NoNode)?;
        n.data = data;
        n.stat.version = version;
        n.stat.mzxid = zxid;
        n.stat.mtime = time;
        let stat = n.stat();
        self.events.push(TreeEvent::DataChanged(path.to_string()));
        Ok(stat)
    }

    pub fn set_acl(&mut self, path: &str, acl: Vec<Acl>, aversion: i32) -> Result<Stat, ErrorCode> {
        self.touch(path);
        let n = self.nodes.get_mut(path).ok_or(ErrorCode::NoNode)?;
        n.acl = acl;
        n.stat.aversion = aversion;
        Ok(n.stat())
    }

    /// Paths changed since the previous call, each with its current node (None = deleted).
    pub fn take_dirty(&mut self) -> Vec<(String, Option<&Znode>)> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut v: Vec<_> = dirty.into_iter().collect();
        v.sort();
        v.into_iter()
            .map(|p| {
                let n = self.nodes.get(&p);
                (p, n)
            })
            .collect()
    }

    /// Rebuilds a tree from persisted nodes (any order).
    pub fn from_nodes(nodes: impl IntoIterator<Item = (String, Znode)>) -> DataTree {
        // Insert parents before children so child sets are complete.
        let sorted: BTreeMap<usize, Vec<(String, Znode)>> =
            nodes.into_iter().fold(BTreeMap::new(), |mut m, (p, n)| {
                let depth = if p == ROOT { 0 } else { p.matches('/').count() };
                m.entry(depth).or_insert_with(Vec::new).push((p, n));
                m
            });
        let mut t = DataTree::default();
        for (_, level) in sorted {
            for (p, mut n) in level {
                n.children.clear();
                t.insert_raw(p, n);
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_and_delete_keep_zookeeper_stat_rules() {
        let mut t = DataTree::new();
        t.create(
            "/a",
            NewNode {
                data: Some(b"x".to_vec()),
                acl: crate::acl::open_acl_unsafe(),
                ephemeral_owner: 0,
            },
            1,
            5,
            100,
        );
        let root = t.get("/").unwrap().stat();
        assert_eq!((root.cversion, root.pzxid, root.num_children), (0, 5, 2));
        let a = t.get("/a").unwrap().stat();
        assert_eq!(
            (a.czxid, a.mzxid, a.pzxid, a.ctime, a.data_length),
            (5, 5, 5, 100, 1)
        );
        t.delete("/a", 6).unwrap();
        let root = t.get("/").unwrap().stat();
        // One create and one delete under / besides /zookeeper: reported as 2×1−1.
        assert_eq!(
            (
                t.get("/").unwrap().stat.cversion,
                root.cversion,
                root.pzxid,
                root.num_children
            ),
            (1, 1, 6, 1)
        );
        // A fresh ZooKeeper reports cversion -1 for / and -2 for /zookeeper.
        assert_eq!(DataTree::new().get("/").unwrap().stat().cversion, -1);
        assert_eq!(
            DataTree::new().get("/zookeeper").unwrap().stat().cversion,
            -2
        );
        assert_eq!(t.delete("/a", 7), Err(ErrorCode::NoNode));
    }

    #[test]
    fn rollback_restores_everything() {
        let mut t = DataTree::new();
        t.create(
            "/a",
            NewNode {
                data: None,
                acl: crate::acl::open_acl_unsafe(),
                ephemeral_owner: 0,
            },
            1,
            2,
            0,
        );
        let before = t.clone();
        t.begin();
        t.create(
            "/a/b",
            NewNode {
                data: None,
                acl: crate::acl::open_acl_unsafe(),
                ephemeral_owner: 42,
            },
            1,
            3,
            0,
        );
        t.set_data("/a", Some(b"y".to_vec()), 1, 3, 0).unwrap();
        t.delete("/a/b", 3).unwrap();
        t.create(
            "/a/c",
            NewNode {
                data: None,
                acl: crate::acl::open_acl_unsafe(),
                ephemeral_owner: 42,
            },
            2,
            3,
            0,
        );
        t.rollback(0);
        assert_eq!(t.nodes, before.nodes);
        assert_eq!(t.ephemerals, before.ephemerals);
        assert!(t.events.is_empty());
    }

    #[test]
    fn node_kinds_from_owner() {
        assert_eq!(NodeKind::of(0), NodeKind::Persistent);
        assert_eq!(NodeKind::of(CONTAINER_EPHEMERAL_OWNER), NodeKind::Container);
        assert_eq!(
            NodeKind::of(TTL_EPHEMERAL_OWNER_MASK | 500),
            NodeKind::Ttl(500)
        );
        assert_eq!(
            NodeKind::of(0x0100_0000_0000_0007),
            NodeKind::Ephemeral(0x0100_0000_0000_0007)
        );
    }

    #[test]
    fn from_nodes_rebuilds_children_and_indexes() {
        let mut t = DataTree::new();
        t.create(
            "/a",
            NewNode {
                data: None,
                acl: vec![],
                ephemeral_owner: 0,
            },
            1,
            2,
            0,
        );
        t.create(
            "/a/e",
            NewNode {
                data: None,
                acl: vec![],
                ephemeral_owner: 9,
            },
            1,
            3,
            0,
        );
        let rebuilt = DataTree::from_nodes(
            t.nodes
                .clone()
                .into_iter()
                .collect::<Vec<_>>()
                .into_iter()
                .rev(),
        );
        assert_eq!(rebuilt.nodes, t.nodes);
        assert_eq!(rebuilt.ephemerals_of(9), vec!["/a/e".to_string()]);
    }
}
