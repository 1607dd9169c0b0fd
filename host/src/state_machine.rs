//! The deterministic state machine: the znode tree plus the session table, changed
//! only by applying committed log entries (`Command`s) in log order.
//!
//! Write requests are validated here, at apply, in the order ZooKeeper's
//! `PrepRequestProcessor` validates them, so error codes match ZooKeeper's. Reads are
//! served from the same structure by the server holding the client's connection.
//! Watch events are handed to a server-local [`Notifier`] while the entry is applied,
//! before its reply is sent, so a client sees an event before any later data.

use crate::acl;
use crate::command::{zxid_of, Command, CommandOp, CommandOutput, WriteRequest};
use crate::recipe::apply::{ModuleSubs, PendingNotification};
use crate::recipe::stats::RecipeStats;
use crate::recipe::Runtime;
use crate::tree::{DataTree, NewNode, NodeKind, TreeEvent, Znode};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use wazoo_proto::consts::{
    perms, CreateMode, CONTAINER_EPHEMERAL_OWNER, MAX_TTL_MS, TTL_EPHEMERAL_OWNER_MASK,
};
use wazoo_proto::path::validate_path;
use wazoo_proto::{
    Acl, ClientInfo, CreateKind, CreateOp, ErrorCode, Id, OpResult, ReadOp, RecipeNotification,
    Request, Response, Stat, WriteOp,
};

/// High byte of session ids: session ids are `SESSION_ID_BASE | zxid of creation`,
/// unique across restarts and replicas because zxids are (zxids stay below 2^56 for
/// the first 2^40 log entries).
pub const SESSION_ID_BASE: i64 = 0x0100_0000_0000_0000;

/// A replicated session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub timeout_ms: i32,
    pub passwd: Vec<u8>,
}

/// Server-local receiver of what applying entries means for connected clients.
pub trait Notifier: Send + Sync {
    /// Tree changes made by the entry at `zxid`, in order.
    fn tree_events(&self, zxid: i64, events: &[TreeEvent]);
    /// The session is gone (closed or expired): drop its watches, close its connection.
    fn session_closed(&self, session_id: i64);
    /// A recipe notification for `session_id` (a completed parked call or a pushed
    /// message), delivered in order with the session's replies and watch events.
    fn recipe_notification(&self, zxid: i64, session_id: i64, n: &RecipeNotification);
}

/// A watch a read asks to leave behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchRequest {
    /// getData / exists.
    Data(String),
    /// getChildren.
    Child(String),
}

pub struct StateMachine {
    tree: DataTree,
    sessions: BTreeMap<i64, Session>,
    last_zxid: i64,
    dirty_sessions: BTreeSet<i64>,
    notifier: Option<Arc<dyn Notifier>>,
    /// Server-local: the wasm runtime recipes run on (None: recipes unavailable).
    runtime: Option<Arc<Runtime>>,
    /// Server-local: per-recipe counters for /metrics.
    recipe_stats: Arc<RecipeStats>,
    /// Derived from /wazoo/subscriptions: which recipe wants which events.
    recipe_subs: BTreeMap<String, ModuleSubs>,
    /// Recipe notifications of the operation being applied, delivered after its tree
    /// events.
    pending_notifications: Vec<PendingNotification>,
    /// Set when this replica cannot apply the log deterministically (a recipe
    /// determinism profile mismatch): the raft store stops applying.
    fatal: Option<String>,
}

impl Default for StateMachine {
    fn default() -> Self {
        StateMachine::new()
    }
}

const ROW_NODE: u8 = b'n';
const ROW_SESSION: u8 = b's';
const ROW_ZXID: &[u8] = b"z";

fn fmt_row_err(e: impl std::fmt::Display) -> String {
    format!("corrupt state-machine row: {e}")
}

impl StateMachine {
    pub fn new() -> StateMachine {
        StateMachine {
            tree: DataTree::new(),
            ..StateMachine::placeholder()
        }
    }

    /// An empty value to swap in while a recipe invocation owns the state machine
    /// (cheap: an empty tree without even the system nodes).
    pub(crate) fn placeholder() -> StateMachine {
        StateMachine {
            tree: DataTree::default(),
            sessions: BTreeMap::new(),
            last_zxid: 0,
            dirty_sessions: BTreeSet::new(),
            notifier: None,
            runtime: None,
            recipe_stats: Arc::default(),
            recipe_subs: BTreeMap::new(),
            pending_notifications: Vec::new(),
            fatal: None,
        }
    }

    pub fn set_recipe_runtime(&mut self, rt: Arc<Runtime>) {
        self.runtime = Some(rt);
    }

    pub fn recipe_stats(&self) -> Arc<RecipeStats> {
        self.recipe_stats.clone()
    }

    pub fn recipe_runtime(&self) -> Option<Arc<Runtime>> {
        self.runtime.clone()
    }

    pub(crate) fn tree_mut(&mut self) -> &mut DataTree {
        &mut self.tree
    }

    pub(crate) fn recipe_subs_index(&self) -> &BTreeMap<String, ModuleSubs> {
        &self.recipe_subs
    }

    pub(crate) fn recipe_subs_index_mut(&mut self) -> &mut BTreeMap<String, ModuleSubs> {
        &mut self.recipe_subs
    }

    pub(crate) fn queue_recipe_notification(&mut self, n: PendingNotification) {
        self.pending_notifications.push(n);
    }

    pub(crate) fn set_fatal(&mut self, why: &str) {
        tracing::error!("{why}");
        if self.fatal.is_none() {
            self.fatal = Some(why.to_string());
        }
    }

    /// Why this replica must stop applying, if it must.
    pub fn take_fatal(&mut self) -> Option<String> {
        self.fatal.take()
    }

    /// A recipe's write: the same checks as a client's op inside a multi (the
    /// invocation's savepoint undoes it if the invocation fails).
    pub(crate) fn recipe_write_op(
        &mut self,
        session: i64,
        auth: &[Id],
        op: &WriteOp,
        zxid: i64,
        time: i64,
    ) -> Result<OpResult, ErrorCode> {
        self.write_op(session, auth, op, true, zxid, time)
    }

    pub fn set_notifier(&mut self, n: Arc<dyn Notifier>) {
        self.notifier = Some(n);
    }

    pub fn tree(&self) -> &DataTree {
        &self.tree
    }

    pub fn last_zxid(&self) -> i64 {
        self.last_zxid
    }

    pub fn session(&self, id: i64) -> Option<&Session> {
        self.sessions.get(&id)
    }

    pub fn sessions(&self) -> &BTreeMap<i64, Session> {
        &self.sessions
    }

    /// Applies one committed entry (a batch of operations, in order). Deterministic:
    /// depends only on the state and the entry.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> Vec<CommandOutput> {
        cmd.ops
            .iter()
            .enumerate()
            .map(|(i, op)| self.apply_op(zxid_of(index, i), cmd.time_ms, op))
            .collect()
    }

    fn apply_op(&mut self, zxid: i64, time: i64, op: &CommandOp) -> CommandOutput {
        self.last_zxid = zxid;
        let mut out = CommandOutput::noop(zxid);
        match op {
            CommandOp::CreateSession { timeout_ms, passwd } => {
                let id = SESSION_ID_BASE | zxid;
                self.sessions.insert(
                    id,
                    Session {
                        timeout_ms: *timeout_ms,
                        passwd: passwd.clone(),
                    },
                );
                self.dirty_sessions.insert(id);
                out.session_id = id;
            }
            CommandOp::CloseSession { session_id } => {
                self.kill_session(*session_id, zxid, time);
                out.session_id = *session_id;
            }
            CommandOp::ExpireSessions { session_ids } => {
                for id in session_ids {
                    self.kill_session(*id, zxid, time);
                }
            }
            CommandOp::Write {
                session_id,
                auth,
                request,
            } => {
                out.session_id = *session_id;
                out.result = if self.sessions.contains_key(session_id) {
                    self.write(*session_id, auth, request, zxid, time)
                } else {
                    Err(ErrorCode::SessionExpired)
                };
            }
            CommandOp::RemoveStale { paths } => {
                for p in paths {
                    if self.is_stale(p, time) {
                        let _ = self.tree.delete(p, zxid);
                    }
                }
            }
            CommandOp::RecipeUpload {
                session_id,
                auth,
                name,
                module,
                profile,
            } => {
                out.session_id = *session_id;
                out.result = if self.sessions.contains_key(session_id) {
                    self.recipe_upload(zxid, time, auth, name, module, profile)
                } else {
                    Err(ErrorCode::SessionExpired)
                };
            }
            CommandOp::RecipeInstall {
                name,
                module,
                profile,
            } => {
                out.result = self.recipe_install(zxid, time, name, module, profile);
            }
            CommandOp::RecipeDelete {
                session_id,
                auth,
                name,
                version,
            } => {
                out.session_id = *session_id;
                out.result = if self.sessions.contains_key(session_id) {
                    self.recipe_delete(zxid, time, auth, name, *version)
                } else {
                    Err(ErrorCode::SessionExpired)
                };
            }
            CommandOp::RecipeCall {
                session_id,
                auth,
                name,
                version,
                function,
                args,
                profile,
            } => {
                out.session_id = *session_id;
                out.result = if self.sessions.contains_key(session_id) {
                    self.recipe_call(
                        zxid,
                        time,
                        *session_id,
                        auth,
                        name,
                        *version,
                        function,
                        args,
                        profile,
                    )
                } else {
                    Err(ErrorCode::SessionExpired)
                };
            }
            CommandOp::RecipeTimers => {
                self.recipe_fire_timers(zxid, time);
            }
            CommandOp::RecipeAdoptRuntime {
                session_id,
                auth,
                profile,
            } => {
                out.session_id = *session_id;
                out.result = if self.sessions.contains_key(session_id) {
                    self.recipe_adopt_runtime(zxid, time, auth, profile)
                } else {
                    Err(ErrorCode::SessionExpired)
                };
            }
        }
        self.flush_events(zxid, time);
        out
    }

    /// Blank and membership entries consume a zxid but change nothing.
    pub fn apply_noop(&mut self, index: u64) {
        self.last_zxid = zxid_of(index, 0);
    }

    /// Hands the operation's tree events to the notifier, then its recipe
    /// notifications, then runs the recipe event handlers they trigger (whose own
    /// events and notifications follow, up to the cascade bounds).
    fn flush_events(&mut self, zxid: i64, time: i64) {
        let mut depth = 0;
        let mut budget = crate::recipe::apply::MAX_EVENT_INVOCATIONS;
        loop {
            if self.tree.events.is_empty() && self.pending_notifications.is_empty() {
                return;
            }
            let events = std::mem::take(&mut self.tree.events);
            let notes = std::mem::take(&mut self.pending_notifications);
            if let Some(n) = &self.notifier {
                if !events.is_empty() {
                    n.tree_events(zxid, &events);
                }
                for p in &notes {
                    n.recipe_notification(zxid, p.session_id, &p.notification);
                }
            }
            let triggered = self.recipe_node_events(&events);
            if triggered.is_empty() {
                continue;
            }
            // Past the cascade depth this runs no handler, so the loop ends once what
            // the last handlers produced is delivered.
            self.run_recipe_node_events(triggered, depth, &mut budget, zxid, time);
            depth += 1;
        }
    }

    fn kill_session(&mut self, id: i64, zxid: i64, time: i64) {
        if self.sessions.remove(&id).is_none() {
            return;
        }
        self.dirty_sessions.insert(id);
        // Parked recipe calls are ephemerals of their caller: collect them before the
        // ephemerals go, to tell their recipes which calls were cancelled.
        let parked = self.recipe_parked_of(id);
        for path in self.tree.ephemerals_of(id) {
            let _ = self.tree.delete(&path, zxid);
        }
        self.recipe_session_closed(id, parked, zxid, time);
        self.flush_events(zxid, time);
        if let Some(n) = &self.notifier {
            n.session_closed(id);
        }
    }

    /// Whether `path` is an empty container that has had children, or an empty TTL
    /// node not modified for its TTL, at `now_ms` (ZooKeeper's ContainerManager rules).
    pub fn is_stale(&self, path: &str, now_ms: i64) -> bool {
        let Some(n) = self.tree.get(path) else {
            return false;
        };
        if !n.children.is_empty() {
            return false;
        }
        match n.kind() {
            NodeKind::Container => n.stat.cversion > 0,
            NodeKind::Ttl(ttl) => now_ms - n.stat.mtime > ttl,
            _ => false,
        }
    }

    /// Candidates for `RemoveStale` at `now_ms` (the leader proposes them).
    pub fn stale_nodes(&self, now_ms: i64) -> Vec<String> {
        self.tree
            .containers()
            .chain(self.tree.ttls())
            .filter(|p| self.is_stale(p, now_ms))
            .cloned()
            .collect()
    }

    fn write(
        &mut self,
        session: i64,
        auth: &[Id],
        req: &WriteRequest,
        zxid: i64,
        time: i64,
    ) -> Result<Response, ErrorCode> {
        match req {
            WriteRequest::Op(op) => {
                // A single op makes every check before its first change, so a failure
                // leaves nothing to undo.
                match (op, self.write_op(session, auth, op, false, zxid, time)?) {
                    (WriteOp::Create(c), OpResult::Create2 { path, stat })
                        if c.kind != CreateKind::Create =>
                    {
                        Ok(Response::Create2 { path, stat })
                    }
                    (_, OpResult::Create { path }) | (_, OpResult::Create2 { path, .. }) => {
                        Ok(Response::Create { path })
                    }
                    (_, OpResult::SetData { stat }) => Ok(Response::Stat(stat)),
                    (WriteOp::Check(c), OpResult::Check) => Ok(Response::Stat(
                        self.tree.get(&c.path).map(Znode::stat).unwrap_or_default(),
                    )),
                    _ => Ok(Response::Empty),
                }
            }
            WriteRequest::SetAcl(r) => {
                validate_path(&r.path, false)?;
                let fixed = acl::fixup(&r.acl, auth)?;
                let node = self.tree.get(&r.path).ok_or(ErrorCode::NoNode)?;
                acl::check(&node.acl, perms::ADMIN, auth)?;
                let aversion = next_version(node.stat.aversion, r.version)?;
                Ok(Response::Stat(self.tree.set_acl(&r.path, fixed, aversion)?))
            }
            WriteRequest::Multi(ops) => {
                let events_before = self.tree.events.len();
                self.tree.begin();
                let mut results = Vec::with_capacity(ops.len());
                for (i, op) in ops.iter().enumerate() {
                    match self.write_op(session, auth, op, true, zxid, time) {
                        Ok(r) => results.push(r),
                        Err(e) => {
                            // ZooKeeper's failed multi: Ok before the failing op, its
                            // error at it, RuntimeInconsistency after; nothing applied.
                            self.tree.rollback(events_before);
                            let mut failed: Vec<OpResult> =
                                (0..i).map(|_| OpResult::Error(ErrorCode::Ok)).collect();
                            failed.push(OpResult::Error(e));
                            failed.extend(
                                (i + 1..ops.len())
                                    .map(|_| OpResult::Error(ErrorCode::RuntimeInconsistency)),
                            );
                            return Ok(Response::Multi(failed));
                        }
                    }
                }
                self.tree.commit();
                Ok(Response::Multi(results))
            }
        }
    }

    fn write_op(
        &mut self,
        session: i64,
        auth: &[Id],
        op: &WriteOp,
        in_multi: bool,
        zxid: i64,
        time: i64,
    ) -> Result<OpResult, ErrorCode> {
        match op {
            WriteOp::Create(c) => self.create(session, auth, c, in_multi, zxid, time),
            WriteOp::Delete(d) => {
                // `getParentPathAndValidate`: only a slash, no NUL and not a system node are
                // required; other malformed paths simply do not exist (NoNode).
                let last_slash = d.path.rfind('/').ok_or(ErrorCode::BadArguments)?;
                if d.path.contains('\0') || is_special_path(&d.path) {
                    return Err(ErrorCode::BadArguments);
                }
                let parent_path = if last_slash == 0 {
                    "/"
                } else {
                    &d.path[..last_slash]
                };
                let parent = self.tree.get(parent_path).ok_or(ErrorCode::NoNode)?;
                acl::check(&parent.acl, perms::DELETE, auth)?;
                let node = self.tree.get(&d.path).ok_or(ErrorCode::NoNode)?;
                next_version(node.stat.version, d.version)?;
                if !node.children.is_empty() {
                    return Err(ErrorCode::NotEmpty);
                }
                self.tree.delete(&d.path, zxid)?;
                Ok(OpResult::Delete)
            }
            WriteOp::SetData(s) => {
                validate_path(&s.path, false)?;
                let node = self.tree.get(&s.path).ok_or(ErrorCode::NoNode)?;
                acl::check(&node.acl, perms::WRITE, auth)?;
                let version = next_version(node.stat.version, s.version)?;
                let stat = self
                    .tree
                    .set_data(&s.path, s.data.clone(), version, zxid, time)?;
                Ok(OpResult::SetData { stat })
            }
            WriteOp::Check(c) => {
                validate_path(&c.path, false)?;
                let node = self.tree.get(&c.path).ok_or(ErrorCode::NoNode)?;
                acl::check(&node.acl, perms::READ, auth)?;
                next_version(node.stat.version, c.version)?;
                Ok(OpResult::Check)
            }
        }
    }

    /// `PrepRequestProcessor.pRequest2TxnCreate`, check for check.
    fn create(
        &mut self,
        session: i64,
        auth: &[Id],
        c: &CreateOp,
        in_multi: bool,
        zxid: i64,
        time: i64,
    ) -> Result<OpResult, ErrorCode> {
        let mode = CreateMode::from_flags(c.flags).ok_or(ErrorCode::BadArguments)?;
        if mode.is_ttl() {
            if c.ttl <= 0 || c.ttl > MAX_TTL_MS {
                return Err(ErrorCode::BadArguments);
            }
        } else if c.ttl >= 0 || c.kind == CreateKind::Ttl {
            return Err(ErrorCode::BadArguments);
        }
        let last_slash = c.path.rfind('/').ok_or(ErrorCode::BadArguments)?;
        if c.path.contains('\0') {
            return Err(ErrorCode::BadArguments);
        }
        let parent_path = if last_slash == 0 {
            "/"
        } else {
            &c.path[..last_slash]
        };
        let acl_list = acl::fixup(&c.acl, auth)?;
        let parent = self.tree.get(parent_path).ok_or(ErrorCode::NoNode)?;
        acl::check(&parent.acl, perms::CREATE, auth)?;
        let parent_cversion = parent.stat.cversion;
        let path = if mode.is_sequential() {
            format!("{}{:010}", c.path, parent_cversion)
        } else {
            c.path.clone()
        };
        validate_path(&path, false)?;
        if self.tree.get(&path).is_some() {
            return Err(ErrorCode::NodeExists);
        }
        if matches!(parent.kind(), NodeKind::Ephemeral(_)) {
            return Err(ErrorCode::NoChildrenForEphemerals);
        }
        // As ZooKeeper, the opcode decides the node type (createContainer makes a
        // container whatever the flags say; create with flags 4 makes a plain node) and
        // the flags only add the sequence suffix and the ephemeral owner.
        let owner = match c.kind {
            CreateKind::Container => CONTAINER_EPHEMERAL_OWNER,
            CreateKind::Ttl => TTL_EPHEMERAL_OWNER_MASK | c.ttl,
            _ if mode.is_ephemeral() => session,
            _ => 0,
        };
        self.tree.create(
            &path,
            NewNode {
                data: c.data.clone(),
                acl: acl_list,
                ephemeral_owner: owner,
            },
            parent_cversion.wrapping_add(1),
            zxid,
            time,
        );
        if c.kind == CreateKind::Create || (in_multi && c.kind == CreateKind::Create2) {
            // Inside a multi, ZooKeeper 3.8 answers create2 with a plain create result
            // (no Stat); container and TTL creates keep theirs.
            Ok(OpResult::Create { path })
        } else {
            let stat = self.tree.get(&path).map(Znode::stat).unwrap_or_default();
            Ok(OpResult::Create2 { path, stat })
        }
    }

    /// Serves a read request (`FinalRequestProcessor`'s read cases). Returns the
    /// watches to register, which the caller does while still holding the lock.
    pub fn read(
        &self,
        session: i64,
        auth: &[Id],
        req: &Request,
    ) -> (Result<Response, ErrorCode>, Vec<WatchRequest>) {
        let mut watches = Vec::new();
        let result = match req {
            Request::Exists(r) => {
                if r.path.contains('\0') {
                    Err(ErrorCode::BadArguments)
                } else {
                    if r.watch {
                        watches.push(WatchRequest::Data(r.path.clone()));
                    }
                    self.tree
                        .get(&r.path)
                        .map(|n| Response::Stat(n.stat()))
                        .ok_or(ErrorCode::NoNode)
                }
            }
            Request::GetData(r) => self
                .get_data(&r.path, r.watch, auth, &mut watches)
                .map(|(data, stat)| Response::GetData { data, stat }),
            Request::GetChildren(r) => self
                .get_children(&r.path, r.watch, auth, &mut watches)
                .map(|(c, _)| Response::Children(c)),
            Request::GetChildren2(r) => self
                .get_children(&r.path, r.watch, auth, &mut watches)
                .map(|(children, stat)| Response::Children2 { children, stat }),
            Request::GetAcl(r) => self.get_acl(&r.path, auth),
            Request::GetAllChildrenNumber(r) => match self.tree.get(&r.path) {
                None => Err(ErrorCode::NoNode),
                Some(n) => acl::check(&n.acl, perms::READ, auth).map(|_| {
                    Response::AllChildrenNumber(self.tree.descendant_count(&r.path) as i32)
                }),
            },
            Request::GetEphemerals(r) => {
                let prefix = r.path.trim();
                let all = self.tree.ephemerals_of(session);
                let list = if prefix.is_empty() || prefix == "/" {
                    all
                } else {
                    all.into_iter()
                        .filter(|p| p.starts_with(r.path.as_str()))
                        .collect()
                };
                Ok(Response::Ephemerals(list))
            }
            Request::MultiRead(ops) => {
                // ZooKeeper ignores the watch flags of multiRead's sub-requests.
                let mut ignored = Vec::new();
                let results = ops
                    .iter()
                    .map(|op| match op {
                        ReadOp::GetData(r) => {
                            match self.get_data(&r.path, false, auth, &mut ignored) {
                                Ok((data, stat)) => OpResult::GetData { data, stat },
                                Err(e) => OpResult::Error(e),
                            }
                        }
                        ReadOp::GetChildren(r) => {
                            match self.get_children(&r.path, false, auth, &mut ignored) {
                                Ok((children, _)) => OpResult::GetChildren { children },
                                Err(e) => OpResult::Error(e),
                            }
                        }
                    })
                    .collect();
                Ok(Response::Multi(results))
            }
            Request::WhoAmI => Ok(Response::WhoAmI(auth.iter().map(client_info).collect())),
            Request::RecipeList { name } => Ok(Response::RecipeList(self.recipe_list(name))),
            // Served locally: `local` is the answering server's own profile, which is
            // what an operator compares with the pinned one during an upgrade.
            Request::RecipeRuntimeInfo => Ok(Response::RecipeRuntimeInfo {
                pinned: self.recipe_runtime_profile().unwrap_or_default(),
                local: self
                    .recipe_runtime()
                    .map(|r| r.profile_id().to_string())
                    .unwrap_or_default(),
            }),
            _ => Err(ErrorCode::Unimplemented),
        };
        (result, watches)
    }

    fn get_data(
        &self,
        path: &str,
        watch: bool,
        auth: &[Id],
        watches: &mut Vec<WatchRequest>,
    ) -> Result<(Option<Vec<u8>>, Stat), ErrorCode> {
        let n = self.tree.get(path).ok_or(ErrorCode::NoNode)?;
        acl::check(&n.acl, perms::READ, auth)?;
        if watch {
            watches.push(WatchRequest::Data(path.to_string()));
        }
        Ok((n.data.clone(), n.stat()))
    }

    fn get_children(
        &self,
        path: &str,
        watch: bool,
        auth: &[Id],
        watches: &mut Vec<WatchRequest>,
    ) -> Result<(Vec<String>, Stat), ErrorCode> {
        let n = self.tree.get(path).ok_or(ErrorCode::NoNode)?;
        acl::check(&n.acl, perms::READ, auth)?;
        if watch {
            watches.push(WatchRequest::Child(path.to_string()));
        }
        Ok((n.children.iter().cloned().collect(), n.stat()))
    }

    fn get_acl(&self, path: &str, auth: &[Id]) -> Result<Response, ErrorCode> {
        let n = self.tree.get(path).ok_or(ErrorCode::NoNode)?;
        acl::check(&n.acl, perms::READ | perms::ADMIN, auth)?;
        let list: Vec<Acl> = if acl::check(&n.acl, perms::ADMIN, auth).is_ok() {
            n.acl.clone()
        } else {
            acl::redact(&n.acl)
        };
        Ok(Response::GetAcl {
            acl: list,
            stat: n.stat(),
        })
    }

    // ---- persistence rows (see raft::Application) ----

    /// Rows changed since the previous call: nodes, sessions and the last zxid.
    pub fn take_changes(&mut self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let mut rows = Vec::new();
        for (path, node) in self.tree.take_dirty() {
            rows.push((node_key(&path), node.map(encode_row)));
        }
        for id in std::mem::take(&mut self.dirty_sessions) {
            rows.push((session_key(id), self.sessions.get(&id).map(encode_row)));
        }
        rows.push((
            ROW_ZXID.to_vec(),
            Some(self.last_zxid.to_be_bytes().to_vec()),
        ));
        rows
    }

    /// Every row of the current state.
    pub fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut rows: Vec<_> = self
            .tree
            .iter()
            .map(|(p, n)| (node_key(p), encode_row(n)))
            .collect();
        rows.extend(
            self.sessions
                .iter()
                .map(|(id, s)| (session_key(*id), encode_row(s))),
        );
        rows.push((ROW_ZXID.to_vec(), self.last_zxid.to_be_bytes().to_vec()));
        rows.sort();
        rows
    }

    /// Hex SHA-256 over every row of the state (each znode with its data, stat and ACL,
    /// each session, the last zxid). Replicas at the same applied index must agree;
    /// multi-server tests and `wazoo admin status` compare it.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for (k, v) in self.dump() {
            h.update((k.len() as u64).to_be_bytes());
            h.update(&k);
            h.update((v.len() as u64).to_be_bytes());
            h.update(&v);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Replaces the state with `rows` (an empty set of rows gives a fresh tree).
    pub fn restore(&mut self, rows: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), String> {
        let mut nodes = Vec::new();
        let mut sessions = BTreeMap::new();
        let mut last_zxid = 0;
        for (k, v) in rows {
            match k.first() {
                Some(&ROW_NODE) => {
                    let path = String::from_utf8(k[1..].to_vec()).map_err(fmt_row_err)?;
                    nodes.push((
                        path,
                        rmp_serde::from_slice::<Znode>(&v).map_err(fmt_row_err)?,
                    ));
                }
                Some(&ROW_SESSION) => {
                    let id: [u8; 8] = k[1..]
                        .try_into()
                        .map_err(|_| fmt_row_err("session key length"))?;
                    sessions.insert(
                        i64::from_be_bytes(id),
                        rmp_serde::from_slice::<Session>(&v).map_err(fmt_row_err)?,
                    );
                }
                _ if k == ROW_ZXID => {
                    let b: [u8; 8] = v
                        .as_slice()
                        .try_into()
                        .map_err(|_| fmt_row_err("zxid length"))?;
                    last_zxid = i64::from_be_bytes(b);
                }
                _ => return Err(fmt_row_err(format!("unknown key {k:?}"))),
            }
        }
        self.tree = if nodes.is_empty() {
            DataTree::new()
        } else {
            DataTree::from_nodes(nodes)
        };
        self.sessions = sessions;
        self.last_zxid = last_zxid;
        self.dirty_sessions.clear();
        self.pending_notifications.clear();
        self.rebuild_subs_index();
        if nodes_missing_root(&self.tree) {
            return Err(fmt_row_err("no root node"));
        }
        Ok(())
    }
}

fn nodes_missing_root(t: &DataTree) -> bool {
    t.get("/").is_none()
}

fn node_key(path: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(path.len() + 1);
    k.push(ROW_NODE);
    k.extend_from_slice(path.as_bytes());
    k
}

fn session_key(id: i64) -> Vec<u8> {
    let mut k = vec![ROW_SESSION];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn encode_row<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing plain structs of strings, bytes and integers cannot fail.
    rmp_serde::to_vec(v).unwrap_or_default()
}

/// whoAmI's view of an identity: digest ids show the user name only.
fn client_info(id: &Id) -> ClientInfo {
    let user = match id.scheme.as_str() {
        "digest" => id.id.split(':').next().unwrap_or_default().to_string(),
        _ => id.id.clone(),
    };
    ClientInfo {
        auth_scheme: id.scheme.clone(),
        user,
    }
}

/// `DataTree.isSpecialPath`: nodes a client may not delete.
fn is_special_path(path: &str) -> bool {
    matches!(
        path,
        "/" | "/zookeeper" | "/zookeeper/quota" | "/zookeeper/config"
    )
}

/// ZooKeeper's `checkAndIncVersion`: -1 matches any version.
fn next_version(current: i32, expected: i32) -> Result<i32, ErrorCode> {
    if expected != -1 && expected != current {
        return Err(ErrorCode::BadVersion);
    }
    Ok(current.wrapping_add(1))
}
