//! Typed requests: `RequestHeader.type` plus the body decoded into one enum, so the
//! server matches on meaning instead of opcodes. `encode` is the inverse, used by the
//! client and the benchmark.

use crate::consts::op;
use crate::jute::{DecodeError, Reader, Record, Writer};
use crate::records::*;
use serde::{Deserialize, Serialize};

/// Which create opcode was used; it decides the reply's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CreateKind {
    /// op 1, reply `CreateResponse{path}`.
    Create,
    /// op 15, reply `Create2Response{path, stat}`.
    Create2,
    /// op 19, flags must be 4.
    Container,
    /// op 21, carries a TTL.
    Ttl,
}

impl CreateKind {
    pub fn opcode(self) -> i32 {
        match self {
            CreateKind::Create => op::CREATE,
            CreateKind::Create2 => op::CREATE2,
            CreateKind::Container => op::CREATE_CONTAINER,
            CreateKind::Ttl => op::CREATE_TTL,
        }
    }
}

/// Any create: `CreateRequest` or `CreateTTLRequest` (ttl -1 when absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateOp {
    pub kind: CreateKind,
    pub path: String,
    pub data: Option<Vec<u8>>,
    pub acl: Vec<Acl>,
    pub flags: i32,
    pub ttl: i64,
}

impl CreateOp {
    fn decode(kind: CreateKind, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        if kind == CreateKind::Ttl {
            let t = CreateTtlRequest::decode(r)?;
            Ok(CreateOp {
                kind,
                path: t.path,
                data: t.data,
                acl: t.acl,
                flags: t.flags,
                ttl: t.ttl,
            })
        } else {
            let c = CreateRequest::decode(r)?;
            Ok(CreateOp {
                kind,
                path: c.path,
                data: c.data,
                acl: c.acl,
                flags: c.flags,
                ttl: -1,
            })
        }
    }

    fn encode(&self, w: &mut Writer) {
        w.write_ustring(&self.path);
        w.write_buffer(self.data.as_deref());
        w.write_vec(&self.acl, |w, a| a.encode(w));
        w.write_i32(self.flags);
        if self.kind == CreateKind::Ttl {
            w.write_i64(self.ttl);
        }
    }
}

/// A write inside `multi` (op 14).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    Create(CreateOp),
    Delete(DeleteRequest),
    SetData(SetDataRequest),
    Check(CheckVersionRequest),
}

impl WriteOp {
    pub fn opcode(&self) -> i32 {
        match self {
            WriteOp::Create(c) => c.kind.opcode(),
            WriteOp::Delete(_) => op::DELETE,
            WriteOp::SetData(_) => op::SET_DATA,
            WriteOp::Check(_) => op::CHECK,
        }
    }

    pub fn path(&self) -> &str {
        match self {
            WriteOp::Create(c) => &c.path,
            WriteOp::Delete(d) => &d.path,
            WriteOp::SetData(s) => &s.path,
            WriteOp::Check(c) => &c.path,
        }
    }
}

/// A read inside `multiRead` (op 22).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadOp {
    GetChildren(PathWatchRequest),
    GetData(PathWatchRequest),
}

/// A decoded client request (everything after the `RequestHeader`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Create(CreateOp),
    Delete(DeleteRequest),
    Exists(PathWatchRequest),
    GetData(PathWatchRequest),
    SetData(SetDataRequest),
    GetAcl(PathRequest),
    SetAcl(SetAclRequest),
    GetChildren(PathWatchRequest),
    GetChildren2(PathWatchRequest),
    Sync(PathRequest),
    Ping,
    Check(CheckVersionRequest),
    Multi(Vec<WriteOp>),
    MultiRead(Vec<ReadOp>),
    Reconfig(ReconfigRequest),
    CheckWatches(WatchesRequest),
    RemoveWatches(WatchesRequest),
    Auth(AuthPacket),
    /// setWatches (op 101) is decoded into the setWatches2 shape with empty persistent lists.
    SetWatches {
        v2: bool,
        watches: SetWatches2,
    },
    Sasl(Option<Vec<u8>>),
    GetEphemerals(PathRequest),
    GetAllChildrenNumber(PathRequest),
    AddWatch(AddWatchRequest),
    WhoAmI,
    CloseSession,
}

impl Request {
    /// Decodes the body of a request whose header carried `opcode`.
    pub fn decode(opcode: i32, r: &mut Reader<'_>) -> Result<Request, DecodeError> {
        Ok(match opcode {
            op::CREATE => Request::Create(CreateOp::decode(CreateKind::Create, r)?),
            op::CREATE2 => Request::Create(CreateOp::decode(CreateKind::Create2, r)?),
            op::CREATE_CONTAINER => Request::Create(CreateOp::decode(CreateKind::Container, r)?),
            op::CREATE_TTL => Request::Create(CreateOp::decode(CreateKind::Ttl, r)?),
            op::DELETE => Request::Delete(DeleteRequest::decode(r)?),
            op::EXISTS => Request::Exists(PathWatchRequest::decode(r)?),
            op::GET_DATA => Request::GetData(PathWatchRequest::decode(r)?),
            op::SET_DATA => Request::SetData(SetDataRequest::decode(r)?),
            op::GET_ACL => Request::GetAcl(PathRequest::decode(r)?),
            op::SET_ACL => Request::SetAcl(SetAclRequest::decode(r)?),
            op::GET_CHILDREN => Request::GetChildren(PathWatchRequest::decode(r)?),
            op::GET_CHILDREN2 => Request::GetChildren2(PathWatchRequest::decode(r)?),
            op::SYNC => Request::Sync(PathRequest::decode(r)?),
            op::PING => Request::Ping,
            op::CHECK => Request::Check(CheckVersionRequest::decode(r)?),
            op::MULTI => {
                let mut ops = Vec::new();
                for_each_multi_op(r, |opcode, r| {
                    ops.push(match opcode {
                        op::CREATE => WriteOp::Create(CreateOp::decode(CreateKind::Create, r)?),
                        op::CREATE2 => WriteOp::Create(CreateOp::decode(CreateKind::Create2, r)?),
                        op::CREATE_CONTAINER => {
                            WriteOp::Create(CreateOp::decode(CreateKind::Container, r)?)
                        }
                        op::CREATE_TTL => WriteOp::Create(CreateOp::decode(CreateKind::Ttl, r)?),
                        op::DELETE => WriteOp::Delete(DeleteRequest::decode(r)?),
                        op::SET_DATA => WriteOp::SetData(SetDataRequest::decode(r)?),
                        op::CHECK => WriteOp::Check(CheckVersionRequest::decode(r)?),
                        op::GET_DATA | op::GET_CHILDREN => {
                            return Err(DecodeError::Invalid("read operation in a write multi"))
                        }
                        other => return Err(DecodeError::UnknownOpCode(other)),
                    });
                    Ok(())
                })?;
                Request::Multi(ops)
            }
            op::MULTI_READ => {
                let mut ops = Vec::new();
                for_each_multi_op(r, |opcode, r| {
                    ops.push(match opcode {
                        op::GET_CHILDREN => ReadOp::GetChildren(PathWatchRequest::decode(r)?),
                        op::GET_DATA => ReadOp::GetData(PathWatchRequest::decode(r)?),
                        op::CREATE
                        | op::CREATE2
                        | op::CREATE_CONTAINER
                        | op::CREATE_TTL
                        | op::DELETE
                        | op::SET_DATA
                        | op::CHECK => {
                            return Err(DecodeError::Invalid("write operation in a read multi"))
                        }
                        other => return Err(DecodeError::UnknownOpCode(other)),
                    });
                    Ok(())
                })?;
                Request::MultiRead(ops)
            }
            op::RECONFIG => Request::Reconfig(ReconfigRequest::decode(r)?),
            op::CHECK_WATCHES => Request::CheckWatches(WatchesRequest::decode(r)?),
            op::REMOVE_WATCHES => Request::RemoveWatches(WatchesRequest::decode(r)?),
            op::AUTH => Request::Auth(AuthPacket::decode(r)?),
            op::SET_WATCHES => {
                let w = SetWatches::decode(r)?;
                Request::SetWatches {
                    v2: false,
                    watches: SetWatches2 {
                        relative_zxid: w.relative_zxid,
                        data_watches: w.data_watches,
                        exist_watches: w.exist_watches,
                        child_watches: w.child_watches,
                        persistent_watches: vec![],
                        persistent_recursive_watches: vec![],
                    },
                }
            }
            op::SET_WATCHES2 => Request::SetWatches {
                v2: true,
                watches: SetWatches2::decode(r)?,
            },
            op::SASL => Request::Sasl(r.read_buffer()?),
            op::GET_EPHEMERALS => Request::GetEphemerals(PathRequest::decode(r)?),
            op::GET_ALL_CHILDREN_NUMBER => Request::GetAllChildrenNumber(PathRequest::decode(r)?),
            op::ADD_WATCH => Request::AddWatch(AddWatchRequest::decode(r)?),
            op::WHO_AM_I => Request::WhoAmI,
            op::CLOSE_SESSION => Request::CloseSession,
            other => return Err(DecodeError::UnknownOpCode(other)),
        })
    }

    /// The opcode this request is sent with.
    pub fn opcode(&self) -> i32 {
        match self {
            Request::Create(c) => c.kind.opcode(),
            Request::Delete(_) => op::DELETE,
            Request::Exists(_) => op::EXISTS,
            Request::GetData(_) => op::GET_DATA,
            Request::SetData(_) => op::SET_DATA,
            Request::GetAcl(_) => op::GET_ACL,
            Request::SetAcl(_) => op::SET_ACL,
            Request::GetChildren(_) => op::GET_CHILDREN,
            Request::GetChildren2(_) => op::GET_CHILDREN2,
            Request::Sync(_) => op::SYNC,
            Request::Ping => op::PING,
            Request::Check(_) => op::CHECK,
            Request::Multi(_) => op::MULTI,
            Request::MultiRead(_) => op::MULTI_READ,
            Request::Reconfig(_) => op::RECONFIG,
            Request::CheckWatches(_) => op::CHECK_WATCHES,
            Request::RemoveWatches(_) => op::REMOVE_WATCHES,
            Request::Auth(_) => op::AUTH,
            Request::SetWatches { v2: false, .. } => op::SET_WATCHES,
            Request::SetWatches { v2: true, .. } => op::SET_WATCHES2,
            Request::Sasl(_) => op::SASL,
            Request::GetEphemerals(_) => op::GET_EPHEMERALS,
            Request::GetAllChildrenNumber(_) => op::GET_ALL_CHILDREN_NUMBER,
            Request::AddWatch(_) => op::ADD_WATCH,
            Request::WhoAmI => op::WHO_AM_I,
            Request::CloseSession => op::CLOSE_SESSION,
        }
    }

    /// Encodes the body (not the header).
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Request::Create(c) => c.encode(w),
            Request::Delete(d) => d.encode(w),
            Request::Exists(p)
            | Request::GetData(p)
            | Request::GetChildren(p)
            | Request::GetChildren2(p) => p.encode(w),
            Request::SetData(s) => s.encode(w),
            Request::GetAcl(p)
            | Request::Sync(p)
            | Request::GetEphemerals(p)
            | Request::GetAllChildrenNumber(p) => p.encode(w),
            Request::SetAcl(s) => s.encode(w),
            Request::Ping | Request::WhoAmI | Request::CloseSession => {}
            Request::Check(c) => c.encode(w),
            Request::Multi(ops) => {
                for o in ops {
                    MultiHeader {
                        op: o.opcode(),
                        done: false,
                        err: -1,
                    }
                    .encode(w);
                    match o {
                        WriteOp::Create(c) => c.encode(w),
                        WriteOp::Delete(d) => d.encode(w),
                        WriteOp::SetData(s) => s.encode(w),
                        WriteOp::Check(c) => c.encode(w),
                    }
                }
                MultiHeader {
                    op: -1,
                    done: true,
                    err: -1,
                }
                .encode(w);
            }
            Request::MultiRead(ops) => {
                for o in ops {
                    let (code, p) = match o {
                        ReadOp::GetChildren(p) => (op::GET_CHILDREN, p),
                        ReadOp::GetData(p) => (op::GET_DATA, p),
                    };
                    MultiHeader {
                        op: code,
                        done: false,
                        err: -1,
                    }
                    .encode(w);
                    p.encode(w);
                }
                MultiHeader {
                    op: -1,
                    done: true,
                    err: -1,
                }
                .encode(w);
            }
            Request::Reconfig(r) => r.encode(w),
            Request::CheckWatches(x) | Request::RemoveWatches(x) => x.encode(w),
            Request::Auth(a) => a.encode(w),
            Request::SetWatches { v2: true, watches } => watches.encode(w),
            Request::SetWatches { v2: false, watches } => SetWatches {
                relative_zxid: watches.relative_zxid,
                data_watches: watches.data_watches.clone(),
                exist_watches: watches.exist_watches.clone(),
                child_watches: watches.child_watches.clone(),
            }
            .encode(w),
            Request::Sasl(t) => w.write_buffer(t.as_deref()),
            Request::AddWatch(a) => a.encode(w),
        }
    }

    /// Whether this request changes the tree (and so goes through the raft log).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Create(_)
                | Request::Delete(_)
                | Request::SetData(_)
                | Request::SetAcl(_)
                | Request::Check(_)
                | Request::Multi(_)
                | Request::Reconfig(_)
                | Request::CloseSession
        )
    }
}

/// Walks `MultiHeader`-framed sub-requests until the `done` header.
fn for_each_multi_op(
    r: &mut Reader<'_>,
    mut f: impl FnMut(i32, &mut Reader<'_>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    loop {
        let h = MultiHeader::decode(r)?;
        if h.done {
            return Ok(());
        }
        f(h.op, r)?;
    }
}

/// Decodes a whole request frame body: header, then the typed request.
pub fn decode_request(frame: &[u8]) -> Result<(RequestHeader, Request), DecodeError> {
    let mut r = Reader::new(frame);
    let h = RequestHeader::decode(&mut r)?;
    let req = Request::decode(h.op, &mut r)?;
    Ok((h, req))
}

/// Encodes a full request frame (length prefix included).
pub fn encode_request_frame(xid: i32, req: &Request) -> Vec<u8> {
    let mut w = Writer::framed();
    RequestHeader {
        xid,
        op: req.opcode(),
    }
    .encode(&mut w);
    req.encode(&mut w);
    w.finish_frame()
}
