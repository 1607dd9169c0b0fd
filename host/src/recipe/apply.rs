//! Recipes inside the state machine's apply: module registry, calls, parked calls,
//! events, timers and notifications. Everything here runs on every replica while it
//! applies a log entry, so it may depend only on the tree, the sessions and the entry.
//!
//! State lives in the replicated tree, where snapshots, restarts and zkCli see it:
//!
//! ```text
//! /wazoo                          world:r      (created by the first upload)
//! /wazoo/runtime                  world:r      the pinned determinism profile id
//! /wazoo/modules                  world:ra     ADMIN here = may upload/delete recipes
//! /wazoo/modules/<name>           world:r      {"next_version": N}
//! /wazoo/modules/<name>/<v%010d>  world:r      {"sha256": ..., "size": ...}
//! /wazoo/blobs/<sha256>           world:r      the module bytes (content-addressed)
//! /wazoo/parked/<name>/<id%019d>  world:r      a parked call (ephemeral of the caller)
//! /wazoo/subscriptions/<name>     world:r      {"prefixes", "sessions", "timers"}
//! /wazoo/recipes                  world:cdrwa  recipes' own state, by convention
//! ```
//!
//! The system nodes are written here directly, bypassing ACLs; a recipe's own writes
//! go through the same checks as its caller's requests (`StateMachine::write_op`).
//!
//! An invocation is one transaction: a tree savepoint is taken before the guest runs
//! and rolled back unless the guest returns 0 with a valid outcome. Its notifications
//! and completions are buffered and delivered only on commit.

use super::runtime::HostEnv;
use super::{abi, RecipeError};
use crate::acl;
use crate::state_machine::StateMachine;
use crate::tree::{NewNode, TreeEvent};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use wazoo_proto::consts::perms;
use wazoo_proto::{Acl, CheckVersionRequest, CreateKind, CreateOp, DeleteRequest, ErrorCode, Id};
use wazoo_proto::{OpResult, RecipeInfo, RecipeNotification, Response, SetDataRequest, WriteOp};

pub const WAZOO: &str = "/wazoo";
pub const RUNTIME: &str = "/wazoo/runtime";
pub const MODULES: &str = "/wazoo/modules";
pub const BLOBS: &str = "/wazoo/blobs";
pub const PARKED: &str = "/wazoo/parked";
pub const SUBSCRIPTIONS: &str = "/wazoo/subscriptions";
pub const RECIPES: &str = "/wazoo/recipes";

/// Writes (creates, sets, deletes) one invocation may stage.
pub const MAX_WRITES_PER_INVOCATION: usize = 1_000;
/// Bytes of znode data one invocation may stage.
pub const MAX_WRITTEN_BYTES_PER_INVOCATION: usize = 8 << 20;
/// Notifications and completions one invocation may send.
pub const MAX_NOTIFICATIONS_PER_INVOCATION: usize = 1_000;
/// A reply or notification payload must fit a client's default jute.maxbuffer with
/// room for the frame around it.
pub const MAX_PAYLOAD_BYTES: usize = 1_048_575 - 4_096;
/// Event cascade bound: events caused by an event handler's writes are delivered up to
/// this depth, and at most `MAX_EVENT_INVOCATIONS` handlers run per operation. Beyond
/// that events are dropped (deterministically, and logged) instead of looping forever.
pub const MAX_CASCADE_DEPTH: usize = 4;
pub const MAX_EVENT_INVOCATIONS: usize = 256;

/// Notification kinds on the wire (docs/PROTOCOL.md).
pub const NOTIFY_CALL_COMPLETED: i32 = 1;
pub const NOTIFY_MESSAGE: i32 = 2;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleSubs {
    #[serde(default)]
    pub prefixes: BTreeSet<String>,
    #[serde(default)]
    pub sessions: BTreeSet<i64>,
    #[serde(default)]
    pub timers: BTreeMap<String, i64>,
}

impl ModuleSubs {
    fn is_empty(&self) -> bool {
        self.prefixes.is_empty() && self.sessions.is_empty() && self.timers.is_empty()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ModuleMeta {
    next_version: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct VersionMeta {
    sha256: String,
    size: u64,
}

/// A notification to deliver once the entry is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingNotification {
    pub session_id: i64,
    pub notification: RecipeNotification,
}

/// A recipe request's failure as the client sees it: a code and a reason.
fn failure(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::RecipeFailure {
        code,
        message: message.into(),
    }
}

pub fn error_code(e: &RecipeError) -> ErrorCode {
    match e {
        RecipeError::Invalid(_) => ErrorCode::RecipeInvalid,
        RecipeError::Trap(_) => ErrorCode::RecipeTrap,
        RecipeError::FuelExhausted(_) => ErrorCode::RecipeFuelExhausted,
        RecipeError::LimitExceeded(_) => ErrorCode::RecipeLimitExceeded,
        RecipeError::Failed(_) => ErrorCode::RecipeFailed,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The 32 bytes of a 64-hex-digit sha256 (a blob's name); None if it is not one.
fn sha_from_hex(sha: &str) -> Option<[u8; 32]> {
    if sha.len() != 64 || !sha.is_ascii() {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, h) in hash.iter_mut().enumerate() {
        *h = u8::from_str_radix(&sha[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(hash)
}

fn version_path(name: &str, version: i32) -> String {
    format!("{MODULES}/{name}/{version:010}")
}

fn parked_path(name: &str, call_id: i64) -> String {
    format!("{PARKED}/{name}/{call_id:019}")
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain structs of strings, integers and maps with string keys always serialize.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Whether a tree path is recipe bookkeeping (events on it are not delivered to
/// recipes: a subscription to "/" must not see its own subscription writes).
fn is_system_path(path: &str) -> bool {
    [RUNTIME, MODULES, BLOBS, PARKED, SUBSCRIPTIONS]
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
        || path == WAZOO
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn to_abi_stat(s: wazoo_proto::Stat) -> abi::Stat {
    abi::Stat {
        czxid: s.czxid,
        mzxid: s.mzxid,
        ctime: s.ctime,
        mtime: s.mtime,
        version: s.version,
        cversion: s.cversion,
        aversion: s.aversion,
        ephemeral_owner: s.ephemeral_owner,
        data_length: s.data_length,
        num_children: s.num_children,
        pzxid: s.pzxid,
    }
}

fn to_abi_error(e: ErrorCode) -> abi::ErrorCode {
    match e {
        ErrorCode::Ok => abi::ErrorCode::Ok,
        ErrorCode::RuntimeInconsistency => abi::ErrorCode::RuntimeInconsistency,
        ErrorCode::NoNode => abi::ErrorCode::NoNode,
        ErrorCode::NoAuth => abi::ErrorCode::NoAuth,
        ErrorCode::BadVersion => abi::ErrorCode::BadVersion,
        ErrorCode::NoChildrenForEphemerals => abi::ErrorCode::NoChildrenForEphemerals,
        ErrorCode::NodeExists => abi::ErrorCode::NodeExists,
        ErrorCode::NotEmpty => abi::ErrorCode::NotEmpty,
        ErrorCode::SessionExpired => abi::ErrorCode::SessionExpired,
        ErrorCode::InvalidAcl => abi::ErrorCode::InvalidAcl,
        _ => abi::ErrorCode::BadArguments,
    }
}

/// What a call invocation decided.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    None,
    Reply(Vec<u8>),
    Park,
    Fail(String),
}

/// The recipe's view of the state machine during one invocation. It owns the state
/// machine for the duration (moved in and out: wasmtime's store data must be 'static).
pub(crate) struct RecipeEnv {
    pub(crate) sm: StateMachine,
    module: String,
    zxid: i64,
    time: i64,
    /// Identities the recipe's writes are checked with: the caller's for a call, the
    /// recipe's own (`recipe:<name>`) for an event.
    auth: Vec<Id>,
    /// For a call: the caller's session and the call id.
    call: Option<(i64, i64)>,
    outcome: Outcome,
    /// The module's subscriptions, read from their znode on first use: most
    /// invocations never touch them, and decoding them costs O(watched sessions +
    /// timers) per invocation.
    subs: Option<ModuleSubs>,
    subs_changed: bool,
    notifications: Vec<PendingNotification>,
    writes: usize,
    written_bytes: usize,
}

impl RecipeEnv {
    fn subs(&mut self) -> &mut ModuleSubs {
        self.subs
            .get_or_insert_with(|| self.sm.recipe_subs(&self.module))
    }

    fn count_write(&mut self, bytes: usize) -> Result<(), RecipeError> {
        self.writes += 1;
        self.written_bytes += bytes;
        if self.writes > MAX_WRITES_PER_INVOCATION {
            return Err(RecipeError::LimitExceeded(format!(
                "more than {MAX_WRITES_PER_INVOCATION} writes in one invocation"
            )));
        }
        if self.written_bytes > MAX_WRITTEN_BYTES_PER_INVOCATION {
            return Err(RecipeError::LimitExceeded(format!(
                "more than {MAX_WRITTEN_BYTES_PER_INVOCATION} bytes written in one invocation"
            )));
        }
        Ok(())
    }

    fn notify(&mut self, n: PendingNotification) -> Result<(), RecipeError> {
        if self.notifications.len() >= MAX_NOTIFICATIONS_PER_INVOCATION {
            return Err(RecipeError::LimitExceeded(format!(
                "more than {MAX_NOTIFICATIONS_PER_INVOCATION} notifications in one invocation"
            )));
        }
        if n.notification.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(RecipeError::LimitExceeded(format!(
                "notification payload of {} bytes (limit {MAX_PAYLOAD_BYTES})",
                n.notification.payload.len()
            )));
        }
        self.notifications.push(n);
        Ok(())
    }

    fn write(&mut self, op: abi::WriteOp) -> Result<abi::OpResult, ErrorCode> {
        let session = self.call.map(|c| c.0).unwrap_or(0);
        match op {
            abi::WriteOp::Create { path, data, mode } => {
                let owner = match mode.ephemeral_owner {
                    Some(s) if !self.sm.sessions().contains_key(&s) => {
                        return Err(ErrorCode::SessionExpired)
                    }
                    Some(s) => s,
                    None => session,
                };
                let flags = match (mode.ephemeral_owner.is_some(), mode.sequential) {
                    (false, false) => 0,
                    (true, false) => 1,
                    (false, true) => 2,
                    (true, true) => 3,
                };
                let c = CreateOp {
                    kind: CreateKind::Create,
                    path,
                    data: Some(data),
                    acl: acl::open_acl_unsafe(),
                    flags,
                    ttl: -1,
                };
                match self.sm.recipe_write_op(
                    owner,
                    &self.auth,
                    &WriteOp::Create(c),
                    self.zxid,
                    self.time,
                )? {
                    OpResult::Create { path } | OpResult::Create2 { path, .. } => {
                        Ok(abi::OpResult::Created { path })
                    }
                    _ => Err(ErrorCode::RuntimeInconsistency),
                }
            }
            abi::WriteOp::Set {
                path,
                data,
                version,
            } => {
                let op = WriteOp::SetData(SetDataRequest {
                    path,
                    data: Some(data),
                    version,
                });
                match self
                    .sm
                    .recipe_write_op(session, &self.auth, &op, self.zxid, self.time)?
                {
                    OpResult::SetData { stat } => Ok(abi::OpResult::Set {
                        stat: to_abi_stat(stat),
                    }),
                    _ => Err(ErrorCode::RuntimeInconsistency),
                }
            }
            abi::WriteOp::Delete { path, version } => {
                let op = WriteOp::Delete(DeleteRequest { path, version });
                self.sm
                    .recipe_write_op(session, &self.auth, &op, self.zxid, self.time)?;
                Ok(abi::OpResult::Deleted)
            }
            abi::WriteOp::Check { path, version } => {
                let op = WriteOp::Check(CheckVersionRequest { path, version });
                self.sm
                    .recipe_write_op(session, &self.auth, &op, self.zxid, self.time)?;
                Ok(abi::OpResult::Checked)
            }
        }
    }

    fn write_op_size(op: &abi::WriteOp) -> usize {
        match op {
            abi::WriteOp::Create { path, data, .. } | abi::WriteOp::Set { path, data, .. } => {
                path.len() + data.len()
            }
            abi::WriteOp::Delete { path, .. } | abi::WriteOp::Check { path, .. } => path.len(),
        }
    }

    fn read_acl(&self, path: &str) -> Result<&crate::tree::Znode, ErrorCode> {
        let n = self.sm.tree().get(path).ok_or(ErrorCode::NoNode)?;
        acl::check(&n.acl, perms::READ, &self.auth)?;
        Ok(n)
    }

    fn set_outcome(&mut self, o: Outcome) -> abi::HostResponse {
        if self.call.is_none() || self.outcome != Outcome::None {
            return abi::HostResponse::Error(abi::ErrorCode::NotAllowed);
        }
        self.outcome = o;
        abi::HostResponse::Done
    }

    fn parked_calls(&self) -> Vec<abi::ParkedCall> {
        let dir = format!("{PARKED}/{}", self.module);
        let Some(n) = self.sm.tree().get(&dir) else {
            return Vec::new();
        };
        n.children
            .iter()
            .filter_map(|c| self.sm.tree().get(&format!("{dir}/{c}")))
            .filter_map(|n| n.data.as_deref())
            .filter_map(|d| rmp_serde::from_slice::<abi::ParkedCall>(d).ok())
            .collect()
    }
}

impl HostEnv for RecipeEnv {
    fn host_call(&mut self, req: abi::HostRequest) -> Result<abi::HostResponse, RecipeError> {
        use abi::HostRequest as R;
        use abi::HostResponse as H;
        let err = |e: ErrorCode| H::Error(to_abi_error(e));
        Ok(match req {
            R::Get { path } => match self.read_acl(&path) {
                Ok(n) => H::Data {
                    data: n.data.clone().map(serde_bytes::ByteBuf::from),
                    stat: to_abi_stat(n.stat()),
                },
                Err(e) => err(e),
            },
            R::Exists { path } => H::Stat(self.sm.tree().get(&path).map(|n| to_abi_stat(n.stat()))),
            R::Children { path } => match self.read_acl(&path) {
                Ok(n) => H::Children(n.children.iter().cloned().collect()),
                Err(e) => err(e),
            },
            R::Create { path, data, mode } => {
                self.count_write(path.len() + data.len())?;
                match self.write(abi::WriteOp::Create { path, data, mode }) {
                    Ok(abi::OpResult::Created { path }) => {
                        let stat = self
                            .sm
                            .tree()
                            .get(&path)
                            .map(|n| to_abi_stat(n.stat()))
                            .unwrap_or_default();
                        H::Created { path, stat }
                    }
                    Ok(_) => err(ErrorCode::RuntimeInconsistency),
                    Err(e) => err(e),
                }
            }
            R::Set {
                path,
                data,
                version,
            } => {
                self.count_write(path.len() + data.len())?;
                match self.write(abi::WriteOp::Set {
                    path,
                    data,
                    version,
                }) {
                    Ok(abi::OpResult::Set { stat }) => H::Stat(Some(stat)),
                    Ok(_) => err(ErrorCode::RuntimeInconsistency),
                    Err(e) => err(e),
                }
            }
            R::Delete { path, version } => {
                self.count_write(path.len())?;
                match self.write(abi::WriteOp::Delete { path, version }) {
                    Ok(_) => H::Done,
                    Err(e) => err(e),
                }
            }
            R::Multi(ops) => {
                for op in &ops {
                    self.count_write(Self::write_op_size(op))?;
                }
                let sp = self.sm.tree_mut().savepoint();
                let mut results = Vec::with_capacity(ops.len());
                let n = ops.len();
                let mut failed = false;
                for op in ops {
                    match self.write(op) {
                        Ok(r) => results.push(Ok(r)),
                        Err(e) => {
                            // ZooKeeper's failed-multi shape.
                            failed = true;
                            let i = results.len();
                            results = (0..i).map(|_| Err(abi::ErrorCode::Ok)).collect();
                            results.push(Err(to_abi_error(e)));
                            results.extend(
                                (i + 1..n).map(|_| Err(abi::ErrorCode::RuntimeInconsistency)),
                            );
                            break;
                        }
                    }
                }
                if failed {
                    self.sm.tree_mut().rollback_to(sp);
                } else {
                    self.sm.tree_mut().release(sp);
                }
                H::Multi(results)
            }
            R::Reply(bytes) => {
                if bytes.len() > MAX_PAYLOAD_BYTES {
                    return Err(RecipeError::LimitExceeded(format!(
                        "reply of {} bytes (limit {MAX_PAYLOAD_BYTES})",
                        bytes.len()
                    )));
                }
                self.set_outcome(Outcome::Reply(bytes))
            }
            R::Fail(message) => {
                let mut m = message;
                m.truncate(4096);
                self.set_outcome(Outcome::Fail(m))
            }
            R::Park => self.set_outcome(Outcome::Park),
            R::Complete { call_id, result } => {
                let path = parked_path(&self.module, call_id);
                let Some(parked) = self
                    .sm
                    .tree()
                    .get(&path)
                    .and_then(|n| n.data.as_deref())
                    .and_then(|d| rmp_serde::from_slice::<abi::ParkedCall>(d).ok())
                else {
                    return Ok(err(ErrorCode::NoNode));
                };
                self.count_write(0)?;
                let _ = self.sm.tree_mut().delete(&path, self.zxid);
                let (err_code, message, payload) = match result {
                    Ok(bytes) => (0, String::new(), bytes.into_vec()),
                    Err(m) => (ErrorCode::RecipeFailed as i32, m, Vec::new()),
                };
                self.notify(PendingNotification {
                    session_id: parked.session_id,
                    notification: RecipeNotification {
                        kind: NOTIFY_CALL_COMPLETED,
                        module: self.module.clone(),
                        call_id,
                        err: err_code,
                        message,
                        payload,
                    },
                })?;
                H::Done
            }
            R::ListParked => H::Parked(self.parked_calls()),
            R::Notify {
                session_id,
                payload,
            } => {
                if !self.sm.sessions().contains_key(&session_id) {
                    return Ok(err(ErrorCode::SessionExpired));
                }
                self.notify(PendingNotification {
                    session_id,
                    notification: RecipeNotification {
                        kind: NOTIFY_MESSAGE,
                        module: self.module.clone(),
                        call_id: 0,
                        err: 0,
                        message: String::new(),
                        payload,
                    },
                })?;
                H::Done
            }
            R::Subscribe { prefix } => {
                if wazoo_proto::path::validate_path(&prefix, false).is_err() {
                    return Ok(err(ErrorCode::BadArguments));
                }
                self.subs_changed |= self.subs().prefixes.insert(prefix);
                H::Done
            }
            R::Unsubscribe { prefix } => {
                self.subs_changed |= self.subs().prefixes.remove(&prefix);
                H::Done
            }
            R::WatchSession { session_id } => {
                if !self.sm.sessions().contains_key(&session_id) {
                    return Ok(err(ErrorCode::SessionExpired));
                }
                self.subs_changed |= self.subs().sessions.insert(session_id);
                H::Done
            }
            R::UnwatchSession { session_id } => {
                self.subs_changed |= self.subs().sessions.remove(&session_id);
                H::Done
            }
            R::SessionAlive { session_id } => H::Bool(self.sm.sessions().contains_key(&session_id)),
            R::SetTimer { name, at_ms } => {
                let timers = &mut self.subs().timers;
                if timers.len() >= MAX_WRITES_PER_INVOCATION && !timers.contains_key(&name) {
                    return Err(RecipeError::LimitExceeded(format!(
                        "more than {MAX_WRITES_PER_INVOCATION} timers"
                    )));
                }
                timers.insert(name, at_ms);
                self.subs_changed = true;
                H::Done
            }
            R::CancelTimer { name } => {
                self.subs_changed |= self.subs().timers.remove(&name).is_some();
                H::Done
            }
            R::Log(line) => {
                tracing::debug!(target: "wazoo::recipe", module = %self.module, "{line}");
                H::Done
            }
        })
    }
}

/// What a finished call tells the client.
pub enum CallResult {
    Completed(Vec<u8>),
    Parked,
}

impl StateMachine {
    // ---------------------------------------------------------------- registry

    /// The pinned determinism profile, if any module was ever uploaded.
    pub fn recipe_runtime_profile(&self) -> Option<String> {
        self.tree()
            .get(RUNTIME)
            .and_then(|n| n.data.as_deref())
            .and_then(|d| String::from_utf8(d.to_vec()).ok())
    }

    /// (version, sha256 hex) of `name` at `version` (-1: latest).
    pub fn recipe_resolve(&self, name: &str, version: i32) -> Option<(i32, String)> {
        let dir = self.tree().get(&format!("{MODULES}/{name}"))?;
        let child = if version < 0 {
            dir.children.iter().next_back()?.clone()
        } else {
            let c = format!("{version:010}");
            dir.children.contains(&c).then_some(c)?
        };
        let v: i32 = child.parse().ok()?;
        let meta: VersionMeta = self
            .tree()
            .get(&format!("{MODULES}/{name}/{child}"))
            .and_then(|n| n.data.as_deref())
            .and_then(|d| serde_json::from_slice(d).ok())?;
        Some((v, meta.sha256))
    }

    /// Every registered version of `name` ("" = every recipe), in name/version order.
    pub fn recipe_list(&self, name: &str) -> Vec<RecipeInfo> {
        let Some(modules) = self.tree().get(MODULES) else {
            return Vec::new();
        };
        let names: Vec<&String> = modules
            .children
            .iter()
            .filter(|n| name.is_empty() || n.as_str() == name)
            .collect();
        let mut out = Vec::new();
        for n in names {
            let Some(dir) = self.tree().get(&format!("{MODULES}/{n}")) else {
                continue;
            };
            for child in &dir.children {
                let Some(node) = self.tree().get(&format!("{MODULES}/{n}/{child}")) else {
                    continue;
                };
                let Some(meta) = node
                    .data
                    .as_deref()
                    .and_then(|d| serde_json::from_slice::<VersionMeta>(d).ok())
                else {
                    continue;
                };
                out.push(RecipeInfo {
                    name: n.clone(),
                    version: child.parse().unwrap_or(0),
                    sha256: meta.sha256,
                    size: meta.size as i32,
                    ctime: node.stat.ctime,
                    zxid: node.stat.czxid,
                });
            }
        }
        out
    }

    fn recipe_subs(&self, name: &str) -> ModuleSubs {
        self.tree()
            .get(&format!("{SUBSCRIPTIONS}/{name}"))
            .and_then(|n| n.data.as_deref())
            .and_then(|d| serde_json::from_slice(d).ok())
            .unwrap_or_default()
    }

    /// Writes a module's subscriptions (system write: no ACL, not undone by a failing
    /// handler unless inside its savepoint) and refreshes the in-memory index.
    fn store_recipe_subs(&mut self, name: &str, subs: &ModuleSubs, zxid: i64, time: i64) {
        let path = format!("{SUBSCRIPTIONS}/{name}");
        let exists = self.tree().get(&path).is_some();
        if subs.is_empty() {
            if exists {
                let _ = self.tree_mut().delete(&path, zxid);
            }
        } else if exists {
            let version = self.tree().get(&path).map(|n| n.stat.version).unwrap_or(0);
            let _ = self.tree_mut().set_data(
                &path,
                Some(json(subs)),
                version.wrapping_add(1),
                zxid,
                time,
            );
        } else {
            self.system_create(&path, json(subs), 0, zxid, time);
        }
        self.refresh_subs_index(name);
    }

    /// Reloads one module's entry of the subscription index from the tree.
    pub(crate) fn refresh_subs_index(&mut self, name: &str) {
        let subs = self.recipe_subs(name);
        let index = self.recipe_subs_index_mut();
        if subs.is_empty() {
            index.remove(name);
        } else {
            index.insert(name.to_string(), subs);
        }
    }

    /// Rebuilds the subscription index from the tree (after a restore).
    pub(crate) fn rebuild_subs_index(&mut self) {
        let names: Vec<String> = self
            .tree()
            .get(SUBSCRIPTIONS)
            .map(|n| n.children.iter().cloned().collect())
            .unwrap_or_default();
        self.recipe_subs_index_mut().clear();
        for n in names {
            self.refresh_subs_index(&n);
        }
    }

    /// The earliest recipe timer, for the leader's timer loop.
    pub fn next_recipe_timer(&self) -> Option<i64> {
        self.recipe_subs_index()
            .values()
            .flat_map(|s| s.timers.values().copied())
            .min()
    }

    /// Creates a system node (no ACL check), its parent must exist.
    fn system_create(&mut self, path: &str, data: Vec<u8>, owner: i64, zxid: i64, time: i64) {
        self.system_create_acl(path, data, acl::read_acl_unsafe(), owner, zxid, time)
    }

    fn system_create_acl(
        &mut self,
        path: &str,
        data: Vec<u8>,
        acl_list: Vec<Acl>,
        owner: i64,
        zxid: i64,
        time: i64,
    ) {
        let parent = wazoo_proto::path::parent(path).to_string();
        let cversion = self
            .tree()
            .get(&parent)
            .map(|p| p.stat.cversion)
            .unwrap_or(0);
        self.tree_mut().create(
            path,
            NewNode {
                data: Some(data),
                acl: acl_list,
                ephemeral_owner: owner,
            },
            cversion.wrapping_add(1),
            zxid,
            time,
        );
    }

    fn ensure_system_nodes(&mut self, zxid: i64, time: i64) {
        if self.tree().get(WAZOO).is_some() {
            return;
        }
        self.system_create(WAZOO, Vec::new(), 0, zxid, time);
        let modules_acl = vec![Acl {
            perms: perms::READ | perms::ADMIN,
            id: Id {
                scheme: "world".into(),
                id: "anyone".into(),
            },
        }];
        self.system_create_acl(MODULES, Vec::new(), modules_acl, 0, zxid, time);
        for p in [BLOBS, PARKED, SUBSCRIPTIONS] {
            self.system_create(p, Vec::new(), 0, zxid, time);
        }
        self.system_create_acl(RECIPES, Vec::new(), acl::open_acl_unsafe(), 0, zxid, time);
    }

    /// Upload and delete need ADMIN on /wazoo/modules (world has it until an operator
    /// restricts it with setAcl, like any ZooKeeper default).
    fn check_recipe_admin(&self, auth: &[Id]) -> Result<(), ErrorCode> {
        match self.tree().get(MODULES) {
            Some(n) => acl::check(&n.acl, perms::ADMIN, auth),
            None => Ok(()),
        }
    }

    /// Checks the entry's and this server's determinism profile against the pinned one.
    /// Err(response): the entry's profile differs (deterministic: every replica answers
    /// the same). A local mismatch cannot be answered deterministically, so it is fatal.
    fn check_profile(&mut self, entry_profile: &str) -> Result<(), Response> {
        let local = match self.recipe_runtime() {
            Some(rt) => rt.profile_id().to_string(),
            None => {
                self.set_fatal("this server has no recipe runtime but the log calls recipes");
                return Err(failure(
                    ErrorCode::RecipeRuntimeMismatch,
                    "no recipe runtime",
                ));
            }
        };
        if let Some(pinned) = self.recipe_runtime_profile() {
            if pinned != entry_profile {
                return Err(failure(
                    ErrorCode::RecipeRuntimeMismatch,
                    format!(
                        "the server that proposed this call runs determinism profile \
                         {entry_profile}, the cluster pinned {pinned}; run `wazoo recipe \
                         adopt-runtime` once every server is upgraded"
                    ),
                ));
            }
        }
        if local != entry_profile {
            self.set_fatal(&format!(
                "recipe determinism profile mismatch: this server runs {local}, the log \
                 entry was proposed under {entry_profile}; refusing to apply rather than \
                 diverge from the other replicas"
            ));
            return Err(failure(
                ErrorCode::RecipeRuntimeMismatch,
                "local profile mismatch",
            ));
        }
        Ok(())
    }

    pub(crate) fn recipe_upload(
        &mut self,
        zxid: i64,
        time: i64,
        auth: &[Id],
        name: &str,
        module: &[u8],
        profile: &str,
    ) -> Result<Response, ErrorCode> {
        self.recipe_upload_checked(zxid, time, auth, name, module, profile, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn recipe_upload_checked(
        &mut self,
        zxid: i64,
        time: i64,
        auth: &[Id],
        name: &str,
        module: &[u8],
        profile: &str,
        check_admin: bool,
    ) -> Result<Response, ErrorCode> {
        if let Err(code) = wazoo_proto::recipe::validate_recipe_name(name) {
            return Ok(failure(
                code,
                format!("bad recipe name {name:?}: 1 to 64 characters of A-Z a-z 0-9 _ . -"),
            ));
        }
        if check_admin {
            self.check_recipe_admin(auth)?;
        }
        if let Err(r) = self.check_profile(profile) {
            return Ok(r);
        }
        let Some(rt) = self.recipe_runtime() else {
            return Ok(failure(
                ErrorCode::RecipeRuntimeMismatch,
                "no recipe runtime",
            ));
        };
        let hash = match rt.load(module) {
            Ok(h) => h,
            Err(e) => return Ok(failure(error_code(&e), e.detail())),
        };
        let sha = hex(&hash);
        self.ensure_system_nodes(zxid, time);
        if self.tree().get(RUNTIME).is_none() {
            self.system_create(RUNTIME, profile.as_bytes().to_vec(), 0, zxid, time);
        }
        let blob = format!("{BLOBS}/{sha}");
        if self.tree().get(&blob).is_none() {
            self.system_create(&blob, module.to_vec(), 0, zxid, time);
        }
        if let Some((v, latest)) = self.recipe_resolve(name, -1) {
            if latest == sha {
                return Ok(Response::RecipeUploaded {
                    name: name.to_string(),
                    version: v,
                    sha256: sha,
                });
            }
        }
        let dir = format!("{MODULES}/{name}");
        let version = match self
            .tree()
            .get(&dir)
            .and_then(|n| n.data.as_deref())
            .and_then(|d| serde_json::from_slice::<ModuleMeta>(d).ok())
        {
            Some(m) => m.next_version,
            None => 1,
        };
        let meta = json(&ModuleMeta {
            next_version: version.wrapping_add(1),
        });
        if let Some(n) = self.tree().get(&dir) {
            let v = n.stat.version.wrapping_add(1);
            let _ = self.tree_mut().set_data(&dir, Some(meta), v, zxid, time);
        } else {
            self.system_create(&dir, meta, 0, zxid, time);
        }
        let vmeta = json(&VersionMeta {
            sha256: sha.clone(),
            size: module.len() as u64,
        });
        self.system_create(&version_path(name, version), vmeta, 0, zxid, time);
        Ok(Response::RecipeUploaded {
            name: name.to_string(),
            version,
            sha256: sha,
        })
    }

    /// Installs a built-in recipe unless one of that name exists (no ADMIN check: the
    /// server itself proposes it).
    pub(crate) fn recipe_install(
        &mut self,
        zxid: i64,
        time: i64,
        name: &str,
        module: &[u8],
        profile: &str,
    ) -> Result<Response, ErrorCode> {
        if self.tree().get(&format!("{MODULES}/{name}")).is_some() {
            return Ok(Response::Empty);
        }
        self.recipe_upload_checked(zxid, time, &[], name, module, profile, false)
    }

    pub(crate) fn recipe_delete(
        &mut self,
        zxid: i64,
        time: i64,
        auth: &[Id],
        name: &str,
        version: i32,
    ) -> Result<Response, ErrorCode> {
        if let Err(code) = wazoo_proto::recipe::validate_recipe_name(name) {
            return Ok(failure(
                code,
                format!("bad recipe name {name:?}: 1 to 64 characters of A-Z a-z 0-9 _ . -"),
            ));
        }
        let dir = format!("{MODULES}/{name}");
        let Some(node) = self.tree().get(&dir) else {
            return Ok(failure(
                ErrorCode::RecipeNotFound,
                format!("no recipe {name}"),
            ));
        };
        let children: Vec<String> = node.children.iter().cloned().collect();
        if children.is_empty() {
            return Ok(failure(
                ErrorCode::RecipeNotFound,
                format!("no recipe {name}"),
            ));
        }
        self.check_recipe_admin(auth)?;
        let doomed: Vec<String> = if version < 0 {
            children.clone()
        } else {
            let c = format!("{version:010}");
            if !children.contains(&c) {
                return Ok(failure(
                    ErrorCode::RecipeNotFound,
                    format!("no version {version} of recipe {name}"),
                ));
            }
            vec![c]
        };
        for c in &doomed {
            let _ = self.tree_mut().delete(&format!("{dir}/{c}"), zxid);
        }
        if doomed.len() == children.len() {
            // The recipe is gone: its subscriptions and timers, and its parked calls,
            // which are cancelled (their callers get RecipeCancelled). Its node stays,
            // with its version counter: a version number is never reused, so a client
            // pinned to version N can never run other code under that number.
            self.store_recipe_subs(name, &ModuleSubs::default(), zxid, time);
            let parked_dir = format!("{PARKED}/{name}");
            let parked: Vec<String> = self
                .tree()
                .get(&parked_dir)
                .map(|n| n.children.iter().cloned().collect())
                .unwrap_or_default();
            for c in parked {
                let path = format!("{parked_dir}/{c}");
                if let Some(p) = self
                    .tree()
                    .get(&path)
                    .and_then(|n| n.data.as_deref())
                    .and_then(|d| rmp_serde::from_slice::<abi::ParkedCall>(d).ok())
                {
                    self.queue_recipe_notification(PendingNotification {
                        session_id: p.session_id,
                        notification: RecipeNotification {
                            kind: NOTIFY_CALL_COMPLETED,
                            module: name.to_string(),
                            call_id: p.call_id,
                            err: ErrorCode::RecipeCancelled as i32,
                            message: format!("recipe {name} was deleted"),
                            payload: Vec::new(),
                        },
                    });
                }
                let _ = self.tree_mut().delete(&path, zxid);
            }
            if self.tree().get(&parked_dir).is_some() {
                let _ = self.tree_mut().delete(&parked_dir, zxid);
            }
        }
        self.collect_blobs(zxid);
        Ok(Response::Empty)
    }

    /// Deletes module bytes no version refers to any more.
    fn collect_blobs(&mut self, zxid: i64) {
        let used: BTreeSet<String> = self.recipe_list("").into_iter().map(|i| i.sha256).collect();
        let blobs: Vec<String> = self
            .tree()
            .get(BLOBS)
            .map(|n| n.children.iter().cloned().collect())
            .unwrap_or_default();
        for b in blobs {
            if !used.contains(&b) {
                let _ = self.tree_mut().delete(&format!("{BLOBS}/{b}"), zxid);
            }
        }
    }

    /// recipeAdoptRuntime (op 1004): pins `profile` (the proposer's) in /wazoo/runtime
    /// and answers it. Needs ADMIN on /wazoo/modules. A replica not running `profile`
    /// itself cannot honour the pin, so that is fatal here.
    pub(crate) fn recipe_adopt_runtime(
        &mut self,
        zxid: i64,
        time: i64,
        auth: &[Id],
        profile: &str,
    ) -> Result<Response, ErrorCode> {
        self.check_recipe_admin(auth)?;
        let local = self.recipe_runtime().map(|r| r.profile_id().to_string());
        if local.as_deref() != Some(profile) {
            self.set_fatal(&format!(
                "adopt-runtime pins profile {profile} but this server runs {local:?}; \
                 upgrade this server before adopting"
            ));
            return Ok(failure(
                ErrorCode::RecipeRuntimeMismatch,
                "local profile mismatch",
            ));
        }
        self.ensure_system_nodes(zxid, time);
        match self.tree().get(RUNTIME).map(|n| n.stat.version) {
            Some(v) => {
                let _ = self.tree_mut().set_data(
                    RUNTIME,
                    Some(profile.as_bytes().to_vec()),
                    v.wrapping_add(1),
                    zxid,
                    time,
                );
            }
            None => self.system_create(RUNTIME, profile.as_bytes().to_vec(), 0, zxid, time),
        }
        Ok(Response::RecipeRuntime {
            profile: profile.to_string(),
        })
    }

    // ---------------------------------------------------------------- preparation

    /// Whether `cmd` needs a module this server has not compiled yet, i.e. whether
    /// [`prepare_recipes`](Self::prepare_recipes) has slow work to do. Cheap: map
    /// lookups under the read lock, no copying or hashing of module bytes for calls
    /// (an upload or install hashes the module it brings). Called for every applied
    /// entry, so plain writes never leave the async worker for a no-op preparation.
    pub fn recipes_need_prepare(
        app: &parking_lot::RwLock<StateMachine>,
        cmd: &crate::command::Command,
    ) -> bool {
        let sm = app.read();
        match sm.recipe_runtime() {
            Some(rt) => !sm.modules_to_compile(&rt, cmd, false).is_empty(),
            None => false,
        }
    }

    /// Compiles (into the runtime's cache) the modules an entry will need, before it is
    /// applied and without holding `app`'s lock while compiling: uploads and installs
    /// bring their module; a call needs its recipe's current module, which may not be
    /// compiled in this process yet (after a restart). Compiling is a cache fill: a
    /// module that fails here fails the same way when apply validates it.
    pub fn prepare_recipes(app: &parking_lot::RwLock<StateMachine>, cmd: &crate::command::Command) {
        let (runtime, wanted) = {
            let sm = app.read();
            let Some(rt) = sm.recipe_runtime() else {
                return;
            };
            let wanted = sm.modules_to_compile(&rt, cmd, true);
            (rt, wanted)
        };
        for module in wanted {
            if let Err(e) = compile_in_background(&runtime, module) {
                tracing::debug!(error = %e, "module did not compile ahead of apply; apply reports it");
            }
        }
    }

    /// The modules `cmd` brings or calls that `rt` has not compiled. With `copy` false
    /// it stops at the first one and returns it empty (a yes/no answer without copying
    /// hundreds of KiB). A call's module is found by the sha256 in its blob's name
    /// (apply checks the bytes against it), so a call is never hashed here.
    fn modules_to_compile(
        &self,
        rt: &super::Runtime,
        cmd: &crate::command::Command,
        copy: bool,
    ) -> Vec<Vec<u8>> {
        let mut wanted: Vec<Vec<u8>> = Vec::new();
        for op in &cmd.ops {
            let missing: Option<&[u8]> = match op {
                crate::command::CommandOp::RecipeUpload { module, .. }
                | crate::command::CommandOp::RecipeInstall { module, .. } => {
                    (!rt.is_loaded(&super::Runtime::module_hash(module))).then_some(module)
                }
                crate::command::CommandOp::RecipeCall { name, version, .. } => {
                    match self.recipe_resolve(name, *version) {
                        Some((_, sha)) if !sha_from_hex(&sha).is_some_and(|h| rt.is_loaded(&h)) => {
                            self.tree()
                                .get(&format!("{BLOBS}/{sha}"))
                                .and_then(|n| n.data.as_deref())
                        }
                        _ => None,
                    }
                }
                _ => None,
            };
            if let Some(bytes) = missing {
                if !copy {
                    return vec![Vec::new()];
                }
                wanted.push(bytes.to_vec());
            }
        }
        wanted
    }

    /// Compiles every stored module into the runtime's cache (after a restart), one at
    /// a time, holding `app`'s read lock only to copy each module's bytes. Run off the
    /// async runtime: it takes seconds.
    pub fn precompile_all_recipes(app: &parking_lot::RwLock<StateMachine>) {
        let (runtime, shas) = {
            let sm = app.read();
            let Some(rt) = sm.recipe_runtime() else {
                return;
            };
            let shas: Vec<String> = sm
                .tree()
                .get(BLOBS)
                .map(|n| n.children.iter().cloned().collect())
                .unwrap_or_default();
            (rt, shas)
        };
        for sha in shas {
            let bytes = app
                .read()
                .tree()
                .get(&format!("{BLOBS}/{sha}"))
                .and_then(|n| n.data.clone());
            if let Some(bytes) = bytes {
                if let Err(e) = compile_in_background(&runtime, bytes) {
                    tracing::warn!(%sha, error = %e, "stored recipe module does not compile");
                }
            }
        }
    }

    // ---------------------------------------------------------------- invocation

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn recipe_call(
        &mut self,
        zxid: i64,
        time: i64,
        session_id: i64,
        auth: &[Id],
        name: &str,
        version: i32,
        function: &str,
        args: &[u8],
        profile: &str,
    ) -> Result<Response, ErrorCode> {
        let Some((version, sha)) = self.recipe_resolve(name, version) else {
            return Ok(failure(
                ErrorCode::RecipeNotFound,
                if version < 0 {
                    format!("no recipe {name}")
                } else {
                    format!("no version {version} of recipe {name}")
                },
            ));
        };
        if let Err(r) = self.check_profile(profile) {
            return Ok(r);
        }
        let call = abi::Call {
            call_id: zxid,
            function: function.to_string(),
            args: args.to_vec(),
            caller: abi::Caller {
                session_id,
                auth: auth
                    .iter()
                    .map(|i| abi::Identity {
                        scheme: i.scheme.clone(),
                        id: i.id.clone(),
                    })
                    .collect(),
            },
        };
        let parked = abi::ParkedCall {
            call_id: zxid,
            session_id,
            function: function.to_string(),
            args: args.to_vec(),
            auth: call.caller.auth.clone(),
        };
        match self.invoke(
            name,
            version,
            &sha,
            zxid,
            time,
            auth.to_vec(),
            Some((session_id, zxid)),
            abi::Invocation::Call(call),
        ) {
            Err(e) => Ok(failure(error_code(&e), e.detail())),
            Ok(CallResult::Completed(reply)) => Ok(Response::RecipeCall {
                state: 0,
                call_id: zxid,
                reply,
            }),
            Ok(CallResult::Parked) => {
                let dir = format!("{PARKED}/{name}");
                if self.tree().get(&dir).is_none() {
                    self.system_create(&dir, Vec::new(), 0, zxid, time);
                }
                let data = rmp_serde::to_vec_named(&parked).unwrap_or_default();
                // Ephemeral of the caller: it is found through the session's ephemerals
                // when the session ends, and cancelled then.
                self.system_create(&parked_path(name, zxid), data, session_id, zxid, time);
                Ok(Response::RecipeCall {
                    state: 1,
                    call_id: zxid,
                    reply: Vec::new(),
                })
            }
        }
    }

    /// Runs one invocation as a transaction. For a call, Ok says how it ended; an
    /// event's Ok carries nothing.
    #[allow(clippy::too_many_arguments)]
    fn invoke(
        &mut self,
        name: &str,
        version: i32,
        sha: &str,
        zxid: i64,
        time: i64,
        auth: Vec<Id>,
        call: Option<(i64, i64)>,
        invocation: abi::Invocation,
    ) -> Result<CallResult, RecipeError> {
        let Some(rt) = self.recipe_runtime() else {
            return Err(RecipeError::Invalid("no recipe runtime".into()));
        };
        let hash = self.ensure_loaded(&rt, sha)?;
        let input = abi::Input {
            context: abi::Context {
                module: name.to_string(),
                version,
                now_ms: time,
                zxid,
                seed: seed_of(zxid, name),
            },
            invocation,
        };
        let sp = self.tree_mut().savepoint();
        let env = RecipeEnv {
            sm: std::mem::replace(self, StateMachine::placeholder()),
            module: name.to_string(),
            zxid,
            time,
            auth,
            call,
            outcome: Outcome::None,
            subs: None,
            subs_changed: false,
            notifications: Vec::new(),
            writes: 0,
            written_bytes: 0,
        };
        let (env, result) = rt.invoke(&hash, &input, env);
        let fuel = match &result {
            Ok(o) => o.fuel_used,
            Err(RecipeError::FuelExhausted(budget)) => *budget,
            Err(_) => 0,
        };
        let RecipeEnv {
            sm,
            outcome,
            subs,
            subs_changed,
            notifications,
            ..
        } = env;
        *self = sm;
        let verdict = match result {
            Err(e) => Err(e),
            Ok(o) if o.status != 0 => Err(RecipeError::Failed(match outcome {
                Outcome::Fail(m) => m,
                _ => format!("handler returned status {}", o.status),
            })),
            Ok(_) => match (call.is_some(), outcome) {
                (false, _) => Ok(CallResult::Parked),
                (true, Outcome::Reply(r)) => Ok(CallResult::Completed(r)),
                (true, Outcome::Park) => Ok(CallResult::Parked),
                (true, Outcome::Fail(m)) => Err(RecipeError::Failed(m)),
                (true, Outcome::None) => Err(RecipeError::Failed(format!(
                    "{name}: the handler returned without reply, park or fail"
                ))),
            },
        };
        env_stats(self).record(name, call.is_some(), fuel, verdict.as_ref().err());
        match verdict {
            Ok(r) => {
                if let (true, Some(subs)) = (subs_changed, subs) {
                    self.store_recipe_subs(name, &subs, zxid, time);
                }
                self.tree_mut().release(sp);
                for n in notifications {
                    self.queue_recipe_notification(n);
                }
                Ok(r)
            }
            Err(e) => {
                self.tree_mut().rollback_to(sp);
                tracing::debug!(target: "wazoo::recipe", module = name, error = %e, "invocation discarded");
                Err(e)
            }
        }
    }

    fn ensure_loaded(&self, rt: &super::Runtime, sha: &str) -> Result<[u8; 32], RecipeError> {
        let bytes = self
            .tree()
            .get(&format!("{BLOBS}/{sha}"))
            .and_then(|n| n.data.as_deref());
        if let Some(hash) = sha_from_hex(sha) {
            if rt.is_loaded(&hash) {
                return Ok(hash);
            }
        }
        let bytes =
            bytes.ok_or_else(|| RecipeError::Invalid(format!("module bytes {sha} missing")))?;
        // Content addressing: bytes changed behind our back (a super user's setData)
        // are refused rather than run.
        let loaded = rt.load(bytes)?;
        if hex(&loaded) != sha {
            return Err(RecipeError::Invalid(format!(
                "module bytes do not match their sha256 {sha}"
            )));
        }
        Ok(loaded)
    }

    /// Runs an event handler of the latest version of `name`; a failure discards its
    /// writes and is only logged (nobody waits for an event).
    fn run_event(&mut self, name: &str, event: abi::Event, zxid: i64, time: i64) {
        let Some((version, sha)) = self.recipe_resolve(name, -1) else {
            return;
        };
        let auth = vec![Id {
            scheme: "recipe".into(),
            id: name.to_string(),
        }];
        if let Err(e) = self.invoke(
            name,
            version,
            &sha,
            zxid,
            time,
            auth,
            None,
            abi::Invocation::Event(event),
        ) {
            tracing::info!(target: "wazoo::recipe", module = name, error = %e, "event handler failed");
        }
    }

    /// Node events for recipes subscribed to the changed paths, in event order and,
    /// per event, module name order.
    pub(crate) fn recipe_node_events(&self, events: &[TreeEvent]) -> Vec<(String, abi::Event)> {
        let index = self.recipe_subs_index();
        if index.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for e in events {
            let (path, change) = match e {
                TreeEvent::Created(p) => (p, abi::NodeChange::Created),
                TreeEvent::Deleted(p) => (p, abi::NodeChange::Deleted),
                TreeEvent::DataChanged(p) => (p, abi::NodeChange::DataChanged),
                TreeEvent::ChildrenChanged(p) => (p, abi::NodeChange::ChildrenChanged),
            };
            if is_system_path(path) {
                continue;
            }
            for (module, subs) in index {
                if subs.prefixes.iter().any(|p| prefix_matches(p, path)) {
                    out.push((
                        module.clone(),
                        abi::Event::Node {
                            path: path.clone(),
                            change,
                        },
                    ));
                }
            }
        }
        out
    }

    /// Delivers node events to recipes, and the events their handlers cause, up to the
    /// cascade bounds. Called by the state machine's event flush.
    pub(crate) fn run_recipe_node_events(
        &mut self,
        triggered: Vec<(String, abi::Event)>,
        depth: usize,
        budget: &mut usize,
        zxid: i64,
        time: i64,
    ) {
        if depth >= MAX_CASCADE_DEPTH {
            tracing::warn!(target: "wazoo::recipe", dropped = triggered.len(), "recipe event cascade too deep; events dropped");
            return;
        }
        for (module, event) in triggered {
            if *budget == 0 {
                tracing::warn!(target: "wazoo::recipe", "recipe event budget of the operation used up; events dropped");
                return;
            }
            *budget -= 1;
            self.run_event(&module, event, zxid, time);
        }
    }

    /// Before a session's ephemerals are deleted: its parked calls, by module.
    pub(crate) fn recipe_parked_of(
        &self,
        session_id: i64,
    ) -> BTreeMap<String, Vec<abi::ParkedCall>> {
        let mut by_module: BTreeMap<String, Vec<abi::ParkedCall>> = BTreeMap::new();
        let prefix = format!("{PARKED}/");
        for path in self.tree().ephemerals_of(session_id) {
            let Some(rest) = path.strip_prefix(&prefix) else {
                continue;
            };
            let Some((module, _)) = rest.split_once('/') else {
                continue;
            };
            if let Some(p) = self
                .tree()
                .get(&path)
                .and_then(|n| n.data.as_deref())
                .and_then(|d| rmp_serde::from_slice::<abi::ParkedCall>(d).ok())
            {
                by_module.entry(module.to_string()).or_default().push(p);
            }
        }
        by_module
    }

    /// After a session ended (its ephemerals, parked calls included, are deleted):
    /// recipes that had calls parked by it or watched it get `SessionClosed`.
    pub(crate) fn recipe_session_closed(
        &mut self,
        session_id: i64,
        mut parked: BTreeMap<String, Vec<abi::ParkedCall>>,
        zxid: i64,
        time: i64,
    ) {
        let watchers: Vec<String> = self
            .recipe_subs_index()
            .iter()
            .filter(|(_, s)| s.sessions.contains(&session_id))
            .map(|(m, _)| m.clone())
            .collect();
        for m in &watchers {
            let mut subs = self.recipe_subs(m);
            subs.sessions.remove(&session_id);
            self.store_recipe_subs(m, &subs, zxid, time);
            parked.entry(m.clone()).or_default();
        }
        for (module, cancelled) in parked {
            self.run_event(
                &module,
                abi::Event::SessionClosed {
                    session_id,
                    cancelled,
                },
                zxid,
                time,
            );
        }
    }

    /// Fires every timer due at `time`, in (due time, module, name) order.
    pub(crate) fn recipe_fire_timers(&mut self, zxid: i64, time: i64) {
        let mut due: Vec<(i64, String, String)> = self
            .recipe_subs_index()
            .iter()
            .flat_map(|(m, s)| {
                s.timers
                    .iter()
                    .filter(|(_, at)| **at <= time)
                    .map(|(n, at)| (*at, m.clone(), n.clone()))
            })
            .collect();
        due.sort();
        for (_, module, name) in due {
            let mut subs = self.recipe_subs(&module);
            if subs.timers.remove(&name).is_none() {
                continue; // cancelled by an earlier handler of this entry
            }
            self.store_recipe_subs(&module, &subs, zxid, time);
            self.run_event(&module, abi::Event::Timer { name }, zxid, time);
        }
    }
}

fn env_stats(sm: &StateMachine) -> std::sync::Arc<super::stats::RecipeStats> {
    sm.recipe_stats()
}

/// The per-entry seed: the same on every replica, different per operation and module.
fn seed_of(zxid: i64, name: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(zxid.to_be_bytes());
    h.update(name.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// Compiles `module` into `runtime`'s cache on a thread of its own with a lower CPU
/// priority, and waits for it. Compiling takes about a second of CPU (more in debug
/// builds), on every member of an ensemble at once: at normal priority it can starve
/// raft's heartbeats on a small machine and cost an election.
fn compile_in_background(
    runtime: &std::sync::Arc<super::Runtime>,
    module: Vec<u8>,
) -> Result<[u8; 32], RecipeError> {
    let rt = runtime.clone();
    let worker = std::thread::Builder::new()
        .name("wazoo-compile".into())
        .spawn(move || {
            #[cfg(target_os = "linux")]
            // SAFETY: setpriority has no memory-safety preconditions; on Linux, `who` = 0
            // with PRIO_PROCESS names the calling thread only. A failure just leaves the
            // thread at normal priority.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, 0, 10);
            }
            rt.load(&module)
        });
    match worker {
        Ok(handle) => handle
            .join()
            .unwrap_or_else(|_| Err(RecipeError::Invalid("the compiler thread panicked".into()))),
        // No thread to spare: apply compiles it (this is only a head start).
        Err(_) => Err(RecipeError::Invalid(
            "cannot start a compiler thread".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_path_segments() {
        assert!(prefix_matches("/a", "/a"));
        assert!(prefix_matches("/a", "/a/b"));
        assert!(!prefix_matches("/a", "/ab"));
        assert!(prefix_matches("/", "/ab"));
    }

    #[test]
    fn recipe_bookkeeping_is_not_an_event_source() {
        assert!(is_system_path("/wazoo"));
        assert!(is_system_path("/wazoo/parked/lock/0000000000000000001"));
        assert!(is_system_path("/wazoo/subscriptions"));
        assert!(!is_system_path("/wazoo/recipes/lock/x"));
        assert!(!is_system_path("/wazoo/modulesx"));
    }
}
