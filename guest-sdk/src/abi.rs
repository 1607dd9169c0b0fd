//! The recipe ABI, version 1: the contract between the Wazoo host and a wasm guest.
//! docs/ABI.md is the prose version of this file; the two change together.
//!
//! The ABI is deliberately narrow: two imported functions and three exported ones.
//! Everything richer travels as MessagePack (rmp-serde, structs as maps so fields can
//! be added) in the types below, so one set of definitions serves the host, the safe
//! guest API and the native test harness, and a new host call is a new enum variant
//! rather than a new import that old hosts would reject.
//!
//! Guest exports (all required):
//! - `memory`: the guest's linear memory.
//! - [`ABI_MARKER_EXPORT`]: a function `() -> ()`; its name carries the ABI version,
//!   so a host recognises modules built for it without running them.
//! - [`ALLOC_EXPORT`]: `(len: i32) -> i32`, returns a pointer to `len` writable bytes
//!   in guest memory (the host writes the [`Input`] there).
//! - [`HANDLE_EXPORT`]: `(ptr: i32, len: i32) -> i32`, runs one invocation whose
//!   [`Input`] is at `ptr..ptr+len`. Returns 0 to commit the handler's writes, any
//!   other value to discard them all (the call then fails with `RecipeFailed`).
//!
//! Host imports (module [`HOST_MODULE`]; a module may import nothing else):
//! - [`HOST_CALL_IMPORT`]: `(ptr: i32, len: i32) -> i64`, performs the [`HostRequest`]
//!   at `ptr..ptr+len`. Returns the length of the encoded [`HostResponse`] (>= 0),
//!   which the guest then fetches with `host_read`. A request the host cannot decode,
//!   or a pointer outside guest memory, traps the guest (an ABI violation is a bug in
//!   the recipe, never a silent error).
//! - [`HOST_READ_IMPORT`]: `(ptr: i32, len: i32) -> i32`, copies the pending response
//!   into guest memory at `ptr` (at most `len` bytes), returns the bytes copied and
//!   forgets the response.

use serde::{Deserialize, Serialize};

/// ABI version. Bumped on any incompatible change to this file.
pub const ABI_VERSION: u32 = 1;
/// Import module name for host functions.
pub const HOST_MODULE: &str = "wazoo";
pub const HOST_CALL_IMPORT: &str = "host_call";
pub const HOST_READ_IMPORT: &str = "host_read";
pub const ABI_MARKER_EXPORT: &str = "wazoo_abi_version_1";
pub const ALLOC_EXPORT: &str = "wazoo_alloc";
pub const HANDLE_EXPORT: &str = "wazoo_handle";

/// What the host passes to `wazoo_handle`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    pub context: Context,
    pub invocation: Invocation,
}

/// Facts about the log entry being applied: the only sources of time and randomness a
/// recipe has, identical on every replica. Every invocation caused by one operation
/// (the call, and the event handlers its writes trigger) shares its `zxid` and
/// `now_ms`; `seed` is derived from the zxid and the module name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// The recipe's registered name and the version being run.
    pub module: String,
    pub version: i32,
    /// The entry's timestamp (milliseconds since the Unix epoch, the proposer's clock).
    pub now_ms: i64,
    /// The zxid of the operation being applied.
    pub zxid: i64,
    /// A seed derived from the entry (same on every replica, different per entry).
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Invocation {
    /// A client called `function`. The handler must `Reply`, `Park` or `Fail`.
    Call(Call),
    /// Something the module subscribed to happened. No reply is expected.
    Event(Event),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// Unique and increasing: the zxid of the call's log entry operation. A parked
    /// call is completed by this id.
    pub call_id: i64,
    pub function: String,
    /// MessagePack arguments, as the client sent them.
    #[serde(with = "serde_bytes")]
    pub args: Vec<u8>,
    pub caller: Caller,
}

/// Who made a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub session_id: i64,
    /// Authenticated identities (scheme, id), as ACL checks see them.
    pub auth: Vec<Identity>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identity {
    pub scheme: String,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A session the module watches (`WatchSession`) or that had calls parked in this
    /// module ended (closed or expired). Its parked calls were cancelled: they are
    /// listed here and no longer appear in `ListParked`.
    SessionClosed {
        session_id: i64,
        cancelled: Vec<ParkedCall>,
    },
    /// A znode under a subscribed prefix changed.
    Node { path: String, change: NodeChange },
    /// A timer set with `SetTimer` is due (the leader proposed a tick at or after it).
    Timer { name: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeChange {
    Created,
    Deleted,
    DataChanged,
    ChildrenChanged,
}

/// A call waiting for a later handler run to complete it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedCall {
    pub call_id: i64,
    pub session_id: i64,
    pub function: String,
    #[serde(with = "serde_bytes")]
    pub args: Vec<u8>,
    /// The caller's identities when it called (absent in records written before this
    /// field existed).
    #[serde(default)]
    pub auth: Vec<Identity>,
}

/// ZooKeeper's znode Stat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub data_length: i32,
    pub num_children: i32,
    pub pzxid: i64,
}

/// How a recipe creates a znode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateMode {
    /// Append ZooKeeper's 10-digit sequence suffix.
    pub sequential: bool,
    /// Owned by this session (removed when it ends); the session must exist. `None`
    /// creates a persistent node.
    pub ephemeral_owner: Option<i64>,
}

/// One write inside a `Multi`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    Create {
        path: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        mode: CreateMode,
    },
    Set {
        path: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// -1: any version.
        version: i32,
    },
    Delete {
        path: String,
        version: i32,
    },
    Check {
        path: String,
        version: i32,
    },
}

/// A host call. Writes are staged: they are visible to later host calls of the same
/// invocation and applied atomically only if the handler returns 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostRequest {
    /// -> `Data` / `Error`.
    Get { path: String },
    /// -> `Stat(Some)` / `Stat(None)` when absent. No ACL check (as ZooKeeper's exists).
    Exists { path: String },
    /// -> `Children` (sorted) / `Error(NoNode | NoAuth)`.
    Children { path: String },
    /// -> `Created` / `Error`.
    Create {
        path: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        mode: CreateMode,
    },
    /// -> `Stat(Some)` / `Error`.
    Set {
        path: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        version: i32,
    },
    /// -> `Done` / `Error`.
    Delete { path: String, version: i32 },
    /// All or nothing. -> `Multi` (one result per op; on failure ZooKeeper's shape:
    /// `Ok` before the failed op, its error, `RuntimeInconsistency` after).
    Multi(Vec<WriteOp>),
    /// Complete the current call with this reply. -> `Done`.
    Reply(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Fail the current call (and discard its writes) with this message. -> `Done`.
    Fail(String),
    /// Leave the current call waiting; a later run completes it by id. -> `Done`.
    Park,
    /// Complete a call parked in this module. -> `Done` / `Error(NoNode)` when no such
    /// parked call exists.
    Complete {
        call_id: i64,
        result: Result<serde_bytes::ByteBuf, String>,
    },
    /// The module's parked calls, oldest first. -> `Parked`.
    ListParked,
    /// Push a message to a session, in order with its other replies and events.
    /// -> `Done` / `Error(SessionExpired)` when the session does not exist.
    Notify {
        session_id: i64,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// Receive `Event::Node` for znodes at or under `prefix`. -> `Done`.
    Subscribe { prefix: String },
    /// -> `Done` (also when not subscribed).
    Unsubscribe { prefix: String },
    /// Receive `Event::SessionClosed` when this session ends. -> `Done` /
    /// `Error(SessionExpired)` when it has already ended.
    WatchSession { session_id: i64 },
    /// -> `Done`.
    UnwatchSession { session_id: i64 },
    /// Whether the session exists. -> `Bool`.
    SessionAlive { session_id: i64 },
    /// Fire `Event::Timer { name }` at or after `at_ms` (replaces a timer of the same
    /// name). -> `Done`.
    SetTimer { name: String, at_ms: i64 },
    /// -> `Done` (also when no such timer).
    CancelTimer { name: String },
    /// A debug line in the server log (tracing, target `wazoo::recipe`). -> `Done`.
    Log(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostResponse {
    Done,
    Data {
        data: Option<serde_bytes::ByteBuf>,
        stat: Stat,
    },
    Stat(Option<Stat>),
    Children(Vec<String>),
    /// The created path (with its sequence suffix) and its stat.
    Created {
        path: String,
        stat: Stat,
    },
    Multi(Vec<Result<OpResult, ErrorCode>>),
    Parked(Vec<ParkedCall>),
    Bool(bool),
    Error(ErrorCode),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    Created { path: String },
    Set { stat: Stat },
    Deleted,
    Checked,
}

/// ZooKeeper's error codes a host call can return, by their ZooKeeper names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// In a failed `Multi`: the ops before the failing one.
    Ok,
    RuntimeInconsistency,
    BadArguments,
    NoNode,
    NoAuth,
    BadVersion,
    NoChildrenForEphemerals,
    NodeExists,
    NotEmpty,
    SessionExpired,
    InvalidAcl,
    /// A host call not allowed here: `Reply`, `Park` or `Fail` in an event handler, or
    /// after the call already has an outcome (a second `Reply`, `Fail` after `Park`).
    /// Limits (writes, payload sizes, notifications) are not reported here: reaching
    /// one aborts the whole invocation with `RecipeLimitExceeded`.
    NotAllowed,
}
