//! Server-local watch bookkeeping and event delivery (ZooKeeper's `WatchManager`).
//!
//! Watches belong to a connection, not to the replicated state: a client that moves
//! to another server re-arms them with setWatches. The state machine calls
//! [`WatchManager::tree_events`] while it applies an entry, and events are pushed
//! into the connection's outbound queue at that moment — before the reply to any
//! later read of that connection is queued, which gives ZooKeeper's ordering rule
//! "a client sees the event before the data that follows it".

use crate::call_replies::CallReplies;
use crate::state_machine::{Notifier, WatchRequest};
use crate::tree::{DataTree, TreeEvent};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet};
use tokio::sync::mpsc::UnboundedSender;
use wazoo_proto::consts::{event, state, watcher_type};
use wazoo_proto::response::encode_event_frame;
use wazoo_proto::{ErrorCode, RecipeNotification, Response, SetWatches2, WatcherEvent};

/// What the server writes to one connection, in order.
#[derive(Debug)]
pub enum Outbound {
    /// An encoded frame (reply or notification).
    Frame(Vec<u8>),
    /// Flush what is queued, then close the connection.
    Close,
}

pub type ConnId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WatchKind {
    Data,
    Child,
    Persistent,
    PersistentRecursive,
}

const KINDS: [WatchKind; 4] = [
    WatchKind::Data,
    WatchKind::Child,
    WatchKind::Persistent,
    WatchKind::PersistentRecursive,
];

struct Conn {
    session_id: i64,
    tx: UnboundedSender<Outbound>,
    remote: String,
    /// Replies and completions of this connection's recipe calls.
    calls: CallReplies,
}

#[derive(Default)]
struct Inner {
    next_id: ConnId,
    conns: HashMap<ConnId, Conn>,
    by_session: HashMap<i64, ConnId>,
    /// (kind, path) → watching connections.
    watches: HashMap<(WatchKind, String), HashSet<ConnId>>,
    /// connection → its (kind, path) watches, for cleanup and `wchc`.
    by_conn: HashMap<ConnId, HashSet<(WatchKind, String)>>,
}

/// Counts for `wchs` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WatchSummary {
    pub connections: usize,
    pub paths: usize,
    pub watches: usize,
}

#[derive(Default)]
pub struct WatchManager {
    inner: Mutex<Inner>,
}

impl WatchManager {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a connection for `session_id`. A previous connection of the same
    /// session is told to close (the client has moved to this one).
    pub fn register(
        &self,
        session_id: i64,
        remote: String,
        tx: UnboundedSender<Outbound>,
    ) -> ConnId {
        let mut g = self.inner.lock();
        g.next_id += 1;
        let id = g.next_id;
        if let Some(old) = g.by_session.insert(session_id, id) {
            if let Some(c) = g.conns.get(&old) {
                let _ = c.tx.send(Outbound::Close);
            }
        }
        g.conns.insert(
            id,
            Conn {
                session_id,
                tx,
                remote,
                calls: CallReplies::default(),
            },
        );
        id
    }

    /// Forgets a connection and all its watches.
    pub fn unregister(&self, conn: ConnId) {
        let mut g = self.inner.lock();
        if let Some(c) = g.conns.remove(&conn) {
            if g.by_session.get(&c.session_id) == Some(&conn) {
                g.by_session.remove(&c.session_id);
            }
        }
        if let Some(keys) = g.by_conn.remove(&conn) {
            for k in keys {
                if let Some(set) = g.watches.get_mut(&k) {
                    set.remove(&conn);
                    if set.is_empty() {
                        g.watches.remove(&k);
                    }
                }
            }
        }
    }

    /// The session of `conn` is closing at the client's request: stop routing
    /// session-level closes to this connection (it closes itself after the reply).
    pub fn detach_session(&self, conn: ConnId) {
        let mut g = self.inner.lock();
        if let Some(sid) = g.conns.get(&conn).map(|c| c.session_id) {
            if g.by_session.get(&sid) == Some(&conn) {
                g.by_session.remove(&sid);
            }
        }
    }

    /// The reader of `conn` proposed a recipe call (see [`CallReplies`]).
    pub fn recipe_call_sent(&self, conn: ConnId) {
        if let Some(c) = self.inner.lock().conns.get_mut(&conn) {
            c.calls.call_sent();
        }
    }

    /// The sequencer of `conn` has the result of a recipe call sent with `flags`:
    /// queues its reply (unless deferred or quiet) and what was held for it.
    pub fn recipe_call_answered(
        &self,
        conn: ConnId,
        xid: i32,
        flags: i32,
        zxid: i64,
        result: &Result<Response, ErrorCode>,
    ) {
        let mut g = self.inner.lock();
        if let Some(c) = g.conns.get_mut(&conn) {
            let tx = &c.tx;
            c.calls.call_answered(xid, flags, zxid, result, &mut |f| {
                let _ = tx.send(Outbound::Frame(f));
            });
        }
    }

    pub fn is_connected(&self, session_id: i64) -> bool {
        self.inner.lock().by_session.contains_key(&session_id)
    }

    fn add(g: &mut Inner, conn: ConnId, kind: WatchKind, path: &str) {
        g.watches
            .entry((kind, path.to_string()))
            .or_default()
            .insert(conn);
        g.by_conn
            .entry(conn)
            .or_default()
            .insert((kind, path.to_string()));
    }

    fn remove(g: &mut Inner, conn: ConnId, kind: WatchKind, path: &str) -> bool {
        let key = (kind, path.to_string());
        let removed = match g.watches.get_mut(&key) {
            Some(set) => {
                let r = set.remove(&conn);
                if set.is_empty() {
                    g.watches.remove(&key);
                }
                r
            }
            None => false,
        };
        if let Some(s) = g.by_conn.get_mut(&conn) {
            s.remove(&key);
        }
        removed
    }

    pub fn add_watch(&self, conn: ConnId, w: &WatchRequest) {
        let mut g = self.inner.lock();
        match w {
            WatchRequest::Data(p) => Self::add(&mut g, conn, WatchKind::Data, p),
            WatchRequest::Child(p) => Self::add(&mut g, conn, WatchKind::Child, p),
        }
    }

    /// addWatch: a persistent (optionally recursive) watch, which is not removed when it fires.
    pub fn add_persistent(&self, conn: ConnId, path: &str, recursive: bool) {
        let kind = if recursive {
            WatchKind::PersistentRecursive
        } else {
            WatchKind::Persistent
        };
        Self::add(&mut self.inner.lock(), conn, kind, path);
    }

    /// setWatches after a reconnect (`DataTree.setWatches`): fires at once what changed
    /// since `relative_zxid`, re-arms the rest.
    pub fn set_watches(&self, conn: ConnId, tree: &DataTree, sw: &SetWatches2, zxid: i64) {
        let mut g = self.inner.lock();
        let mut fire = Vec::new();
        for p in &sw.data_watches {
            match tree.get(p) {
                None => fire.push((event::NODE_DELETED, p.clone())),
                Some(n) if n.stat.mzxid > sw.relative_zxid => {
                    fire.push((event::NODE_DATA_CHANGED, p.clone()))
                }
                Some(_) => Self::add(&mut g, conn, WatchKind::Data, p),
            }
        }
        for p in &sw.exist_watches {
            match tree.get(p) {
                Some(_) => fire.push((event::NODE_CREATED, p.clone())),
                None => Self::add(&mut g, conn, WatchKind::Data, p),
            }
        }
        for p in &sw.child_watches {
            match tree.get(p) {
                None => fire.push((event::NODE_DELETED, p.clone())),
                Some(n) if n.stat.pzxid > sw.relative_zxid => {
                    fire.push((event::NODE_CHILDREN_CHANGED, p.clone()))
                }
                Some(_) => Self::add(&mut g, conn, WatchKind::Child, p),
            }
        }
        for p in &sw.persistent_watches {
            Self::add(&mut g, conn, WatchKind::Persistent, p);
        }
        for p in &sw.persistent_recursive_watches {
            Self::add(&mut g, conn, WatchKind::PersistentRecursive, p);
        }
        if let Some(c) = g.conns.get(&conn) {
            for (t, p) in fire {
                let _ = c.tx.send(Outbound::Frame(event_frame(zxid, t, &p)));
            }
        }
    }

    /// checkWatches (`remove` false) / removeWatches (`remove` true) for one path.
    pub fn remove_watches(
        &self,
        conn: ConnId,
        path: &str,
        wtype: i32,
        remove: bool,
    ) -> Result<(), ErrorCode> {
        // ZooKeeper 3.8 only knows types 1-3 here (anything else fails to unmarshal),
        // and counts a persistent watch as both a data and a child watch.
        let kinds: &[WatchKind] = match wtype {
            watcher_type::CHILDREN => &[
                WatchKind::Child,
                WatchKind::Persistent,
                WatchKind::PersistentRecursive,
            ],
            watcher_type::DATA => &[
                WatchKind::Data,
                WatchKind::Persistent,
                WatchKind::PersistentRecursive,
            ],
            watcher_type::ANY => &KINDS,
            _ => return Err(ErrorCode::MarshallingError),
        };
        let mut g = self.inner.lock();
        let mut found = false;
        for k in kinds {
            let key = (*k, path.to_string());
            let has = g.watches.get(&key).is_some_and(|s| s.contains(&conn));
            if has {
                found = true;
                if remove {
                    Self::remove(&mut g, conn, *k, path);
                }
            }
        }
        if found {
            Ok(())
        } else {
            Err(ErrorCode::NoWatcher)
        }
    }

    pub fn summary(&self) -> WatchSummary {
        let g = self.inner.lock();
        let paths: HashSet<&String> = g.watches.keys().map(|(_, p)| p).collect();
        WatchSummary {
            connections: g.by_conn.values().filter(|s| !s.is_empty()).count(),
            paths: paths.len(),
            watches: g.watches.values().map(HashSet::len).sum(),
        }
    }

    /// Number of watches of each kind (a connection watching a path counts once per
    /// kind), for metrics.
    pub fn count_by_kind(&self) -> [(WatchKind, usize); 4] {
        let g = self.inner.lock();
        KINDS.map(|k| {
            let n = g
                .watches
                .iter()
                .filter(|((kind, _), _)| *kind == k)
                .map(|(_, conns)| conns.len())
                .sum();
            (k, n)
        })
    }

    /// `wchc`: session id (hex) → watched paths.
    pub fn by_session(&self) -> BTreeMap<i64, Vec<String>> {
        let g = self.inner.lock();
        let mut out = BTreeMap::new();
        for (conn, keys) in &g.by_conn {
            if let Some(c) = g.conns.get(conn) {
                let mut paths: Vec<String> = keys.iter().map(|(_, p)| p.clone()).collect();
                paths.sort();
                paths.dedup();
                out.insert(c.session_id, paths);
            }
        }
        out
    }

    /// `wchp`: path → watching session ids.
    pub fn by_path(&self) -> BTreeMap<String, Vec<i64>> {
        let g = self.inner.lock();
        let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for ((_, p), conns) in &g.watches {
            let e = out.entry(p.clone()).or_default();
            e.extend(
                conns
                    .iter()
                    .filter_map(|c| g.conns.get(c).map(|c| c.session_id)),
            );
            e.sort();
            e.dedup();
        }
        out
    }

    /// (session id, remote address) of every registered connection, for `cons`.
    pub fn connections(&self) -> Vec<(i64, String)> {
        let g = self.inner.lock();
        let mut v: Vec<_> = g
            .conns
            .values()
            .map(|c| (c.session_id, c.remote.clone()))
            .collect();
        v.sort();
        v
    }

    /// Sends a frame to the connection of `session_id`, if it is on this server.
    pub fn send_to_session(&self, session_id: i64, frame: Outbound) -> bool {
        let g = self.inner.lock();
        match g.by_session.get(&session_id).and_then(|c| g.conns.get(c)) {
            Some(c) => c.tx.send(frame).is_ok(),
            None => false,
        }
    }

    fn trigger(g: &mut Inner, zxid: i64, etype: i32, path: &str) {
        let mut targets: HashSet<ConnId> = HashSet::new();
        let one_shot: &[WatchKind] = match etype {
            event::NODE_CREATED | event::NODE_DATA_CHANGED => &[WatchKind::Data],
            event::NODE_DELETED => &[WatchKind::Data, WatchKind::Child],
            event::NODE_CHILDREN_CHANGED => &[WatchKind::Child],
            _ => &[],
        };
        for k in one_shot {
            if let Some(set) = g.watches.remove(&(*k, path.to_string())) {
                for c in set {
                    if let Some(s) = g.by_conn.get_mut(&c) {
                        s.remove(&(*k, path.to_string()));
                    }
                    targets.insert(c);
                }
            }
        }
        if let Some(set) = g.watches.get(&(WatchKind::Persistent, path.to_string())) {
            targets.extend(set.iter().copied());
        }
        // Recursive watches see every change at or below their path, except child-list
        // changes (their watchers already get the child's own event).
        if etype != event::NODE_CHILDREN_CHANGED {
            let mut p = path;
            loop {
                if let Some(set) = g
                    .watches
                    .get(&(WatchKind::PersistentRecursive, p.to_string()))
                {
                    targets.extend(set.iter().copied());
                }
                if p == "/" {
                    break;
                }
                p = wazoo_proto::path::parent(p);
            }
        }
        if targets.is_empty() {
            return;
        }
        let frame = event_frame(zxid, etype, path);
        let mut targets: Vec<_> = targets.into_iter().collect();
        targets.sort();
        for c in targets {
            if let Some(conn) = g.conns.get(&c) {
                let _ = conn.tx.send(Outbound::Frame(frame.clone()));
            }
        }
    }
}

fn event_frame(zxid: i64, etype: i32, path: &str) -> Vec<u8> {
    encode_event_frame(
        zxid,
        &WatcherEvent {
            event_type: etype,
            state: state::SYNC_CONNECTED,
            path: path.to_string(),
        },
    )
}

impl Notifier for WatchManager {
    fn tree_events(&self, zxid: i64, events: &[TreeEvent]) {
        let mut g = self.inner.lock();
        if g.watches.is_empty() {
            return;
        }
        for e in events {
            match e {
                TreeEvent::Created(p) => Self::trigger(&mut g, zxid, event::NODE_CREATED, p),
                TreeEvent::Deleted(p) => Self::trigger(&mut g, zxid, event::NODE_DELETED, p),
                TreeEvent::DataChanged(p) => {
                    Self::trigger(&mut g, zxid, event::NODE_DATA_CHANGED, p)
                }
                TreeEvent::ChildrenChanged(p) => {
                    Self::trigger(&mut g, zxid, event::NODE_CHILDREN_CHANGED, p)
                }
            }
        }
    }

    fn session_closed(&self, session_id: i64) {
        let g = self.inner.lock();
        if let Some(c) = g.by_session.get(&session_id).and_then(|c| g.conns.get(c)) {
            let _ = c.tx.send(Outbound::Close);
        }
    }

    fn recipe_notification(&self, zxid: i64, session_id: i64, n: &RecipeNotification) {
        let mut g = self.inner.lock();
        // Only the server holding the session's connection has it here; the others
        // drop it, as with watch events.
        let Some(&id) = g.by_session.get(&session_id) else {
            return;
        };
        if let Some(c) = g.conns.get_mut(&id) {
            let tx = &c.tx;
            c.calls.notification(zxid, n, &mut |f| {
                let _ = tx.send(Outbound::Frame(f));
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::unbounded_channel;
    use wazoo_proto::{Reader, Record, ReplyHeader};

    fn decode(o: Outbound) -> (i32, String) {
        let Outbound::Frame(f) = o else {
            panic!("expected a frame")
        };
        let mut r = Reader::new(&f[4..]);
        ReplyHeader::decode(&mut r).unwrap();
        let e = WatcherEvent::decode(&mut r).unwrap();
        (e.event_type, e.path)
    }

    #[test]
    fn one_shot_fires_once_persistent_keeps_firing() {
        let wm = WatchManager::new();
        let (tx, mut rx) = unbounded_channel();
        let c = wm.register(1, "127.0.0.1".into(), tx);
        wm.add_watch(c, &WatchRequest::Data("/a".into()));
        wm.add_persistent(c, "/", true);
        wm.tree_events(5, &[TreeEvent::DataChanged("/a".into())]);
        assert_eq!(
            decode(rx.try_recv().unwrap()),
            (event::NODE_DATA_CHANGED, "/a".into())
        );
        assert!(rx.try_recv().is_err(), "one event per watcher per trigger");
        wm.tree_events(
            6,
            &[
                TreeEvent::DataChanged("/a".into()),
                TreeEvent::ChildrenChanged("/".into()),
            ],
        );
        assert_eq!(
            decode(rx.try_recv().unwrap()),
            (event::NODE_DATA_CHANGED, "/a".into())
        );
        assert!(
            rx.try_recv().is_err(),
            "recursive watches skip NodeChildrenChanged"
        );
        assert_eq!(
            wm.remove_watches(c, "/a", watcher_type::DATA, false),
            Err(ErrorCode::NoWatcher)
        );
        assert_eq!(
            wm.remove_watches(c, "/", watcher_type::PERSISTENT_RECURSIVE, true),
            Err(ErrorCode::MarshallingError)
        );
        assert_eq!(
            wm.remove_watches(c, "/", watcher_type::DATA, false),
            Ok(()),
            "a persistent watch counts as a data watch"
        );
        assert_eq!(wm.remove_watches(c, "/", watcher_type::ANY, true), Ok(()));
        wm.unregister(c);
        assert_eq!(wm.summary(), WatchSummary::default());
    }
}
