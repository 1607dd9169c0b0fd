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
    /// recipeUpload (op 1000, Wazoo extension): register a wasm module as `name`.
    RecipeUpload {
        name: String,
        module: Vec<u8>,
    },
    /// recipeList (op 1001): "" lists every recipe.
    RecipeList {
        name: String,
    },
    /// recipeDelete (op 1002): version -1 deletes every version.
    RecipeDelete {
        name: String,
        version: i32,
    },
    /// recipeCall (op 1003): version -1 runs the latest; `args` is MessagePack.
    /// `flags` (`recipe::CALL_DEFER_REPLY`, `recipe::CALL_QUIET`) is an optional
    /// trailing int: written only when not 0, read as 0 when absent, so a call
    /// without flags has the original encoding.
    RecipeCall {
        name: String,
        version: i32,
        function: String,
        args: Vec<u8>,
        flags: i32,
    },
    /// recipeAdoptRuntime (op 1004, empty body): pin the answering server's
    /// determinism profile as the cluster's (after every server was upgraded).
    RecipeAdoptRuntime,
    /// recipeRuntimeInfo (op 1005, empty body): the pinned profile and the answering
    /// server's own.
    RecipeRuntimeInfo,
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
            op::RECIPE_UPLOAD => {
                let b = RecipeUploadRequest::decode(r)?;
                Request::RecipeUpload {
                    name: b.name,
                    module: b.module,
                }
            }
            op::RECIPE_LIST => Request::RecipeList {
                name: RecipeListRequest::decode(r)?.name,
            },
            op::RECIPE_DELETE => {
                let b = RecipeDeleteRequest::decode(r)?;
                Request::RecipeDelete {
                    name: b.name,
                    version: b.version,
                }
            }
            op::RECIPE_CALL => {
                let b = RecipeCallRequest::decode(r)?;
                let flags = if r.remaining() >= 4 { r.read_i32()? } else { 0 };
                Request::RecipeCall {
                    name: b.name,
                    version: b.version,
                    function: b.function,
                    args: b.args,
                    flags,
                }
            }
            op::RECIPE_ADOPT_RUNTIME => Request::RecipeAdoptRuntime,
            op::RECIPE_RUNTIME_INFO => Request::RecipeRuntimeInfo,
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
            Request::RecipeUpload { .. } => op::RECIPE_UPLOAD,
            Request::RecipeList { .. } => op::RECIPE_LIST,
            Request::RecipeDelete { .. } => op::RECIPE_DELETE,
            Request::RecipeCall { .. } => op::RECIPE_CALL,
            Request::RecipeAdoptRuntime => op::RECIPE_ADOPT_RUNTIME,
            Request::RecipeRuntimeInfo => op::RECIPE_RUNTIME_INFO,
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
            Request::Ping
            | Request::WhoAmI
            | Request::CloseSession
            | Request::RecipeAdoptRuntime
            | Request::RecipeRuntimeInfo => {}
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
            // Field order as the records; written directly to avoid cloning the module.
            Request::RecipeUpload { name, module } => {
                w.write_ustring(name);
                w.write_buffer(Some(module));
            }
            Request::RecipeList { name } => w.write_ustring(name),
            Request::RecipeDelete { name, version } => {
                w.write_ustring(name);
                w.write_i32(*version);
            }
            Request::RecipeCall {
                name,
                version,
                function,
                args,
                flags,
            } => {
                w.write_ustring(name);
                w.write_i32(*version);
                w.write_ustring(function);
                w.write_buffer(Some(args));
                if *flags != 0 {
                    w.write_i32(*flags);
                }
            }
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
                // Recipes change replicated state (the registry, or the tree through a
                // call), so they are ordered by the log like any write.
                | Request::RecipeUpload { .. }
                | Request::RecipeDelete { .. }
                | Request::RecipeCall { .. }
                | Request::RecipeAdoptRuntime
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

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe_requests() -> Vec<Request> {
        vec![
            Request::RecipeUpload {
                name: "lock".into(),
                module: b"\0asm\x01\0\0\0".to_vec(),
            },
            Request::RecipeUpload {
                name: "empty".into(),
                module: vec![],
            },
            Request::RecipeList { name: "".into() },
            Request::RecipeList {
                name: "lock".into(),
            },
            Request::RecipeDelete {
                name: "lock".into(),
                version: -1,
            },
            Request::RecipeDelete {
                name: "lock".into(),
                version: 3,
            },
            Request::RecipeCall {
                name: "lock".into(),
                version: -1,
                function: "acquire".into(),
                args: vec![0x81, 0xa1, b'k', 0x01],
                flags: 0,
            },
            Request::RecipeCall {
                name: "lock".into(),
                version: 2,
                function: "release".into(),
                args: vec![0x80],
                flags: crate::recipe::CALL_DEFER_REPLY | crate::recipe::CALL_QUIET,
            },
            Request::RecipeAdoptRuntime,
            Request::RecipeRuntimeInfo,
        ]
    }

    #[test]
    fn recipe_requests_round_trip() {
        for req in recipe_requests() {
            let frame = encode_request_frame(7, &req);
            assert_eq!(
                i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize,
                frame.len() - 4
            );
            let (h, back) = decode_request(&frame[4..]).unwrap();
            assert_eq!(h.xid, 7);
            assert_eq!(h.op, req.opcode());
            assert_eq!(back, req);
        }
    }

    #[test]
    fn recipe_request_bodies_match_the_records() {
        // The hand-written encoder and the records agree on field order.
        let req = Request::RecipeCall {
            name: "n".into(),
            version: 2,
            function: "f".into(),
            args: vec![1, 2, 3],
            flags: 0,
        };
        let mut w = Writer::new();
        req.encode(&mut w);
        let rec = RecipeCallRequest {
            name: "n".into(),
            version: 2,
            function: "f".into(),
            args: vec![1, 2, 3],
        };
        assert_eq!(w.into_inner(), rec.to_bytes());
        let up = RecipeUploadRequest {
            name: "n".into(),
            module: vec![9; 5],
        };
        let mut w = Writer::new();
        Request::RecipeUpload {
            name: "n".into(),
            module: vec![9; 5],
        }
        .encode(&mut w);
        assert_eq!(w.into_inner(), up.to_bytes());
        assert_eq!(
            Request::RecipeList { name: "x".into() }.opcode(),
            op::RECIPE_LIST
        );
    }

    #[test]
    fn truncated_recipe_requests_are_decode_errors() {
        for req in recipe_requests() {
            let mut w = Writer::new();
            req.encode(&mut w);
            let body = w.into_inner();
            // A call's trailing flags are optional: a cut inside them leaves a call
            // without flags (as a server ignores trailing bytes it does not know).
            let required = match &req {
                Request::RecipeCall { flags, .. } if *flags != 0 => body.len() - 4,
                _ => body.len(),
            };
            for cut in 0..required {
                let res = Request::decode(req.opcode(), &mut Reader::new(&body[..cut]));
                assert!(res.is_err(), "{req:?} cut at {cut} decoded: {res:?}");
            }
            for cut in required..body.len() {
                match Request::decode(req.opcode(), &mut Reader::new(&body[..cut])) {
                    Ok(Request::RecipeCall { flags: 0, .. }) => {}
                    other => panic!("{req:?} cut at {cut} in its flags: {other:?}"),
                }
            }
        }
        // A buffer length past the end of the frame, and a negative one.
        let mut w = Writer::new();
        w.write_ustring("lock");
        w.write_i32(1 << 30);
        let b = w.into_inner();
        assert!(matches!(
            Request::decode(op::RECIPE_UPLOAD, &mut Reader::new(&b)),
            Err(DecodeError::BadLength { .. })
        ));
        let mut w = Writer::new();
        w.write_i32(-5);
        let b = w.into_inner();
        assert!(Request::decode(op::RECIPE_LIST, &mut Reader::new(&b)).is_err());
        // Invalid UTF-8 in the name.
        let mut w = Writer::new();
        w.write_buffer(Some(&[0xff, 0xfe]));
        w.write_i32(-1);
        let b = w.into_inner();
        assert!(matches!(
            Request::decode(op::RECIPE_DELETE, &mut Reader::new(&b)),
            Err(DecodeError::BadUtf8 { .. })
        ));
    }

    #[test]
    fn runtime_requests_have_empty_bodies() {
        for (req, code) in [
            (Request::RecipeAdoptRuntime, 1004),
            (Request::RecipeRuntimeInfo, 1005),
        ] {
            assert_eq!(req.opcode(), code);
            let mut w = Writer::new();
            req.encode(&mut w);
            assert!(w.into_inner().is_empty());
            assert_eq!(Request::decode(code, &mut Reader::new(&[])).unwrap(), req);
            // A header-only frame: length prefix, xid, opcode.
            let frame = encode_request_frame(3, &req);
            assert_eq!(frame.len(), 4 + 8);
        }
        // Adopting changes replicated state; the info is a local read.
        assert!(Request::RecipeAdoptRuntime.is_write());
        assert!(!Request::RecipeRuntimeInfo.is_write());
    }

    #[test]
    fn null_buffers_read_as_empty() {
        let mut w = Writer::new();
        w.write_ustring("lock");
        w.write_i32(-1);
        w.write_ustring("f");
        w.write_buffer(None);
        let b = w.into_inner();
        assert_eq!(
            Request::decode(op::RECIPE_CALL, &mut Reader::new(&b)).unwrap(),
            Request::RecipeCall {
                name: "lock".into(),
                version: -1,
                function: "f".into(),
                args: vec![],
                flags: 0,
            }
        );
    }

    #[test]
    fn recipe_call_flags_are_an_optional_trailing_int() {
        // Without flags the body is exactly the record (what servers before the
        // flags read); with flags, they follow it.
        let plain = RecipeCallRequest {
            name: "lock".into(),
            version: -1,
            function: "acquire".into(),
            args: vec![0x80],
        }
        .to_bytes();
        let mut with = plain.clone();
        with.extend_from_slice(&crate::recipe::CALL_DEFER_REPLY.to_be_bytes());
        let decoded = |b: &[u8]| Request::decode(op::RECIPE_CALL, &mut Reader::new(b)).unwrap();
        let flags_of = |r: Request| match r {
            Request::RecipeCall { flags, .. } => flags,
            other => panic!("decoded as {other:?}"),
        };
        assert_eq!(flags_of(decoded(&plain)), 0);
        assert_eq!(flags_of(decoded(&with)), crate::recipe::CALL_DEFER_REPLY);
        let mut w = Writer::new();
        decoded(&with).encode(&mut w);
        assert_eq!(w.into_inner(), with);
    }
}
