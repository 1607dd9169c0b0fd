//! The payload of a raft log entry, and what applying it returns.
//!
//! Everything the state machine needs to reach the same result on every replica is
//! in the entry: the time (the proposer's clock when it proposed), the caller's
//! session and identities (for ACL checks), and the request itself. The zxid is
//! derived from the entry's log index and the operation's position in it, at apply.

use serde::{Deserialize, Serialize};
use wazoo_proto::{CheckVersionRequest, ErrorCode, Id, Response, SetAclRequest, WriteOp};

/// One raft log entry: a batch of operations applied in order, atomically with
/// respect to the log (group commit: one fsync covers the whole batch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Milliseconds since the Unix epoch, from the proposer's clock: ctime/mtime and
    /// TTL decisions use this, never the applying server's clock.
    pub time_ms: i64,
    pub ops: Vec<CommandOp>,
}

/// Bits of a zxid below the log index: the position of an operation in its entry.
pub const ZXID_POSITION_BITS: u32 = 16;
/// The most operations one entry may carry.
pub const MAX_OPS_PER_ENTRY: usize = 1 << ZXID_POSITION_BITS;

/// The zxid of the operation at `position` in the entry at log `index`:
/// `index << 16 | position`. Derived from the log alone, so every replica assigns the
/// same zxids, and increasing in log order, which is all clients rely on.
pub fn zxid_of(index: u64, position: usize) -> i64 {
    ((index << ZXID_POSITION_BITS) | position as u64) as i64
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandOp {
    /// A new session; its id is derived from the zxid, so every replica agrees.
    CreateSession { timeout_ms: i32, passwd: Vec<u8> },
    /// The client asked to close its session.
    CloseSession { session_id: i64 },
    /// The leader saw no traffic from these sessions for their timeout.
    ExpireSessions { session_ids: Vec<i64> },
    /// A znode write on behalf of a session.
    Write {
        session_id: i64,
        auth: Vec<Id>,
        request: WriteRequest,
    },
    /// Empty containers and expired TTL nodes the leader found; each is re-checked at
    /// apply with the entry's time, so a node that changed in between survives.
    RemoveStale { paths: Vec<String> },
    /// Register a new version of a recipe module (docs/ABI.md). `profile` is the
    /// proposer's determinism profile id (see `recipe::runtime::DeterminismProfile`):
    /// the first upload pins it as the cluster's.
    RecipeUpload {
        session_id: i64,
        auth: Vec<Id>,
        name: String,
        #[serde(with = "serde_bytes")]
        module: Vec<u8>,
        profile: String,
    },
    /// A built-in recipe the server found in `recipe.builtinDir` at start: installed
    /// as version 1 only if the cluster has no recipe of that name (so an upload
    /// always wins, and every replica decides alike).
    RecipeInstall {
        name: String,
        #[serde(with = "serde_bytes")]
        module: Vec<u8>,
        profile: String,
    },
    /// Delete one version (or every version, -1) of a recipe.
    RecipeDelete {
        session_id: i64,
        auth: Vec<Id>,
        name: String,
        version: i32,
    },
    /// Call a recipe function; the call id is the operation's zxid.
    RecipeCall {
        session_id: i64,
        auth: Vec<Id>,
        name: String,
        version: i32,
        function: String,
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
        profile: String,
    },
    /// The leader saw recipe timers due: fire those due at the entry's time.
    RecipeTimers,
    /// Pin the proposer's determinism profile as the cluster's (after an upgrade of
    /// every server that changed it).
    RecipeAdoptRuntime {
        session_id: i64,
        auth: Vec<Id>,
        profile: String,
    },
}

impl CommandOp {
    /// Roughly how many bytes this operation adds to a log entry: what the proposer
    /// bounds a batch by, so one entry (and one append to a follower) stays small
    /// enough to replicate well within a heartbeat.
    pub fn approx_bytes(&self) -> usize {
        fn write_op(op: &WriteOp) -> usize {
            64 + op.path().len()
                + match op {
                    WriteOp::Create(c) => c.data.as_ref().map_or(0, Vec::len) + 32 * c.acl.len(),
                    WriteOp::SetData(s) => s.data.as_ref().map_or(0, Vec::len),
                    WriteOp::Delete(_) | WriteOp::Check(_) => 0,
                }
        }
        64 + match self {
            CommandOp::Write { request, .. } => match request {
                WriteRequest::Op(op) => write_op(op),
                WriteRequest::SetAcl(s) => s.path.len() + 32 * s.acl.len(),
                WriteRequest::Multi(ops) => ops.iter().map(write_op).sum(),
            },
            CommandOp::RecipeUpload { module, .. } | CommandOp::RecipeInstall { module, .. } => {
                module.len()
            }
            CommandOp::RecipeCall { args, .. } => args.len(),
            CommandOp::ExpireSessions { session_ids } => 8 * session_ids.len(),
            CommandOp::RemoveStale { paths } => paths.iter().map(String::len).sum(),
            CommandOp::CreateSession { .. }
            | CommandOp::CloseSession { .. }
            | CommandOp::RecipeDelete { .. }
            | CommandOp::RecipeTimers
            | CommandOp::RecipeAdoptRuntime { .. } => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteRequest {
    Op(WriteOp),
    SetAcl(SetAclRequest),
    Multi(Vec<WriteOp>),
}

impl WriteRequest {
    pub fn check(req: CheckVersionRequest) -> WriteRequest {
        WriteRequest::Op(WriteOp::Check(req))
    }
}

/// What applying a command returns to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutput {
    /// The entry's zxid (its log index).
    pub zxid: i64,
    pub result: Result<Response, ErrorCode>,
    /// For `CreateSession`: the new session's id.
    pub session_id: i64,
}

impl CommandOutput {
    pub fn noop(zxid: i64) -> CommandOutput {
        CommandOutput {
            zxid,
            result: Ok(Response::Empty),
            session_id: 0,
        }
    }
}
