//! `wazoo-proto`: Apache ZooKeeper's client wire protocol, as Wazoo speaks it.
//!
//! - [`jute`]: the binary encoding (reader/writer over one frame).
//! - [`frame`]: length-prefixed framing with the `jute.maxbuffer` limit.
//! - [`records`]: the records of `zookeeper.jute` that cross the client port.
//! - [`request`] / [`response`]: typed requests and replies, by opcode.
//! - [`error`]: `KeeperException.Code` values, the only errors on the wire.
//! - [`consts`]: opcodes, special xids, permissions, create modes, event types.
//! - [`path`]: znode path validation (`PathUtils`).
//! - [`recipe`]: Wazoo's recipe extension (opcodes 1000-1005, notification xid -100):
//!   constants and recipe-name validation.
//!
//! The server (`wazoo`), the client (`wazoo-client`) and the benchmark all use this
//! crate, so both directions of every record are encoded by one piece of code.

pub mod consts;
pub mod error;
pub mod frame;
pub mod jute;
pub mod path;
pub mod recipe;
pub mod records;
pub mod request;
pub mod response;

pub use error::{ErrorCode, ZkResult};
pub use jute::{DecodeError, Reader, Record, Writer};
pub use records::*;
pub use request::{CreateKind, CreateOp, ReadOp, Request, WriteOp};
pub use response::{OpResult, Response};
