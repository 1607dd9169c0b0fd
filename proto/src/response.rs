//! Typed replies. The server encodes them after a `ReplyHeader`; the client decodes
//! them knowing which opcode it sent (jute replies are not self-describing).

use crate::consts::op;
use crate::error::ErrorCode;
use crate::jute::{DecodeError, Reader, Record, Writer};
use crate::records::*;
use serde::{Deserialize, Serialize};

/// One result inside a `multi`/`multiRead` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// op 1.
    Create {
        path: String,
    },
    /// ops 15, 19, 21 (ZooKeeper reports them all as create2).
    Create2 {
        path: String,
        stat: Stat,
    },
    Delete,
    SetData {
        stat: Stat,
    },
    Check,
    GetData {
        data: Option<Vec<u8>>,
        stat: Stat,
    },
    GetChildren {
        children: Vec<String>,
    },
    Error(ErrorCode),
}

impl OpResult {
    fn encode(&self, w: &mut Writer) {
        let (t, err) = match self {
            OpResult::Create { .. } => (op::CREATE, 0),
            OpResult::Create2 { .. } => (op::CREATE2, 0),
            OpResult::Delete => (op::DELETE, 0),
            OpResult::SetData { .. } => (op::SET_DATA, 0),
            OpResult::Check => (op::CHECK, 0),
            OpResult::GetData { .. } => (op::GET_DATA, 0),
            OpResult::GetChildren { .. } => (op::GET_CHILDREN, 0),
            OpResult::Error(e) => (op::ERROR, e.code()),
        };
        MultiHeader {
            op: t,
            done: false,
            err,
        }
        .encode(w);
        match self {
            OpResult::Create { path } => w.write_ustring(path),
            OpResult::Create2 { path, stat } => {
                w.write_ustring(path);
                stat.encode(w);
            }
            OpResult::Delete | OpResult::Check => {}
            OpResult::SetData { stat } => stat.encode(w),
            OpResult::GetData { data, stat } => {
                w.write_buffer(data.as_deref());
                stat.encode(w);
            }
            OpResult::GetChildren { children } => w.write_string_vec(children),
            OpResult::Error(e) => w.write_i32(e.code()),
        }
    }

    fn decode(h: &MultiHeader, r: &mut Reader<'_>) -> Result<OpResult, DecodeError> {
        Ok(match h.op {
            op::CREATE => OpResult::Create {
                path: r.read_ustring()?,
            },
            op::CREATE2 | op::CREATE_TTL | op::CREATE_CONTAINER => OpResult::Create2 {
                path: r.read_ustring()?,
                stat: Stat::decode(r)?,
            },
            op::DELETE => OpResult::Delete,
            op::SET_DATA => OpResult::SetData {
                stat: Stat::decode(r)?,
            },
            op::CHECK => OpResult::Check,
            op::GET_DATA => OpResult::GetData {
                data: r.read_buffer()?,
                stat: Stat::decode(r)?,
            },
            op::GET_CHILDREN => OpResult::GetChildren {
                children: r.read_string_vec()?,
            },
            op::ERROR => {
                let code = r.read_i32()?;
                OpResult::Error(ErrorCode::from_i32(code).ok_or(DecodeError::BadValue {
                    field: "err",
                    value: code as i64,
                })?)
            }
            other => return Err(DecodeError::UnknownOpCode(other)),
        })
    }
}

/// The body of a successful reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// delete, setWatches, removeWatches, checkWatches, closeSession, auth: no body.
    Empty,
    Create {
        path: String,
    },
    Create2 {
        path: String,
        stat: Stat,
    },
    /// exists, setData, setACL, check.
    Stat(Stat),
    GetData {
        data: Option<Vec<u8>>,
        stat: Stat,
    },
    GetAcl {
        acl: Vec<Acl>,
        stat: Stat,
    },
    Children(Vec<String>),
    Children2 {
        children: Vec<String>,
        stat: Stat,
    },
    /// sync.
    Path(String),
    Multi(Vec<OpResult>),
    Ephemerals(Vec<String>),
    AllChildrenNumber(i32),
    /// addWatch: the body is `ErrorResponse{err: 0}`.
    AddWatch,
    WhoAmI(Vec<ClientInfo>),
    /// sasl.
    Sasl(Option<Vec<u8>>),
    /// recipeUpload (op 1000): `RecipeUploadResponse`.
    RecipeUploaded {
        name: String,
        version: i32,
        sha256: String,
    },
    /// recipeList (op 1001): `RecipeListResponse`.
    RecipeList(Vec<RecipeInfo>),
    /// recipeCall (op 1003): `RecipeCallResponse`; `state` is `recipe::CALL_COMPLETED`
    /// or `recipe::CALL_PARKED`.
    RecipeCall {
        state: i32,
        call_id: i64,
        reply: Vec<u8>,
    },
    /// recipeAdoptRuntime (op 1004): `RecipeAdoptRuntimeResponse`, the determinism
    /// profile id the cluster now pins.
    RecipeRuntime {
        profile: String,
    },
    /// recipeRuntimeInfo (op 1005): `RecipeRuntimeInfoResponse`; `pinned` is "" while
    /// no profile is pinned (before the first upload), `local` the answering server's.
    RecipeRuntimeInfo {
        pinned: String,
        local: String,
    },
    /// The error reply of a recipe op (1000-1005): [`encode_reply_frame`] writes `code`
    /// in the header's `err` and `RecipeErrorResponse{message}` as the body. Never
    /// produced by [`Response::decode`] (which only decodes success bodies); the client
    /// reads the message with [`decode_recipe_error`].
    RecipeFailure {
        code: ErrorCode,
        message: String,
    },
}

impl Response {
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Response::Empty => {}
            Response::Create { path } | Response::Path(path) => w.write_ustring(path),
            Response::Create2 { path, stat } => {
                w.write_ustring(path);
                stat.encode(w);
            }
            Response::Stat(s) => s.encode(w),
            Response::GetData { data, stat } => {
                w.write_buffer(data.as_deref());
                stat.encode(w);
            }
            Response::GetAcl { acl, stat } => {
                w.write_vec(acl, |w, a| a.encode(w));
                stat.encode(w);
            }
            Response::Children(c) | Response::Ephemerals(c) => w.write_string_vec(c),
            Response::Children2 { children, stat } => {
                w.write_string_vec(children);
                stat.encode(w);
            }
            Response::Multi(results) => {
                for r in results {
                    r.encode(w);
                }
                MultiHeader {
                    op: -1,
                    done: true,
                    err: -1,
                }
                .encode(w);
            }
            Response::AllChildrenNumber(n) => w.write_i32(*n),
            Response::AddWatch => w.write_i32(0),
            Response::WhoAmI(infos) => w.write_vec(infos, |w, i| i.encode(w)),
            Response::Sasl(t) => w.write_buffer(t.as_deref()),
            Response::RecipeUploaded {
                name,
                version,
                sha256,
            } => {
                w.write_ustring(name);
                w.write_i32(*version);
                w.write_ustring(sha256);
            }
            Response::RecipeList(infos) => w.write_vec(infos, |w, i| i.encode(w)),
            Response::RecipeCall {
                state,
                call_id,
                reply,
            } => {
                w.write_i32(*state);
                w.write_i64(*call_id);
                w.write_buffer(Some(reply));
            }
            Response::RecipeRuntime { profile } => w.write_ustring(profile),
            Response::RecipeRuntimeInfo { pinned, local } => {
                w.write_ustring(pinned);
                w.write_ustring(local);
            }
            Response::RecipeFailure { message, .. } => w.write_ustring(message),
        }
    }

    /// Decodes the body of a successful reply to a request sent with `opcode`.
    pub fn decode(opcode: i32, r: &mut Reader<'_>) -> Result<Response, DecodeError> {
        Ok(match opcode {
            op::CREATE => Response::Create {
                path: r.read_ustring()?,
            },
            op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => Response::Create2 {
                path: r.read_ustring()?,
                stat: Stat::decode(r)?,
            },
            op::EXISTS | op::SET_DATA | op::SET_ACL | op::CHECK => Response::Stat(Stat::decode(r)?),
            op::GET_DATA | op::RECONFIG => Response::GetData {
                data: r.read_buffer()?,
                stat: Stat::decode(r)?,
            },
            op::GET_ACL => Response::GetAcl {
                acl: r.read_vec(Acl::decode)?,
                stat: Stat::decode(r)?,
            },
            op::GET_CHILDREN => Response::Children(r.read_string_vec()?),
            op::GET_CHILDREN2 => Response::Children2 {
                children: r.read_string_vec()?,
                stat: Stat::decode(r)?,
            },
            op::SYNC => Response::Path(r.read_ustring()?),
            op::MULTI | op::MULTI_READ => {
                let mut results = Vec::new();
                loop {
                    let h = MultiHeader::decode(r)?;
                    if h.done {
                        break;
                    }
                    results.push(OpResult::decode(&h, r)?);
                }
                Response::Multi(results)
            }
            op::GET_EPHEMERALS => Response::Ephemerals(r.read_string_vec()?),
            op::GET_ALL_CHILDREN_NUMBER => Response::AllChildrenNumber(r.read_i32()?),
            op::ADD_WATCH => {
                r.read_i32()?;
                Response::AddWatch
            }
            op::WHO_AM_I => Response::WhoAmI(r.read_vec(ClientInfo::decode)?),
            op::SASL => Response::Sasl(r.read_buffer()?),
            op::RECIPE_UPLOAD => {
                let b = RecipeUploadResponse::decode(r)?;
                Response::RecipeUploaded {
                    name: b.name,
                    version: b.version,
                    sha256: b.sha256,
                }
            }
            op::RECIPE_LIST => Response::RecipeList(RecipeListResponse::decode(r)?.recipes),
            op::RECIPE_CALL => {
                let b = RecipeCallResponse::decode(r)?;
                Response::RecipeCall {
                    state: b.state,
                    call_id: b.call_id,
                    reply: b.reply,
                }
            }
            op::RECIPE_ADOPT_RUNTIME => Response::RecipeRuntime {
                profile: RecipeAdoptRuntimeResponse::decode(r)?.profile,
            },
            op::RECIPE_RUNTIME_INFO => {
                let b = RecipeRuntimeInfoResponse::decode(r)?;
                Response::RecipeRuntimeInfo {
                    pinned: b.pinned,
                    local: b.local,
                }
            }
            _ => Response::Empty,
        })
    }
}

/// Encodes a full reply frame: length, `ReplyHeader`, then the body if `err` is 0.
/// `Ok(Response::RecipeFailure{code, message})` is the one error with a body: header
/// `err = code`, then `RecipeErrorResponse{message}`.
pub fn encode_reply_frame(xid: i32, zxid: i64, result: &Result<Response, ErrorCode>) -> Vec<u8> {
    let mut w = Writer::framed();
    match result {
        Ok(Response::RecipeFailure { code, message }) => {
            ReplyHeader {
                xid,
                zxid,
                err: code.code(),
            }
            .encode(&mut w);
            w.write_ustring(message);
        }
        Ok(resp) => {
            ReplyHeader { xid, zxid, err: 0 }.encode(&mut w);
            resp.encode(&mut w);
        }
        Err(e) => ReplyHeader {
            xid,
            zxid,
            err: e.code(),
        }
        .encode(&mut w),
    }
    w.finish_frame()
}

/// Encodes a watch notification frame (xid -1).
pub fn encode_event_frame(zxid: i64, event: &WatcherEvent) -> Vec<u8> {
    let mut w = Writer::framed();
    ReplyHeader {
        xid: crate::consts::xid::NOTIFICATION,
        zxid,
        err: 0,
    }
    .encode(&mut w);
    event.encode(&mut w);
    w.finish_frame()
}

/// Decodes what follows the `ReplyHeader` of a recipe op's error reply: the
/// `RecipeErrorResponse{message}` body, or `None` when the server sent the error
/// header-only (as for any ZooKeeper error); clients must accept both.
pub fn decode_recipe_error(r: &mut Reader<'_>) -> Result<Option<String>, DecodeError> {
    if r.is_empty() {
        return Ok(None);
    }
    Ok(Some(RecipeErrorResponse::decode(r)?.message))
}

/// Encodes a recipe notification frame (xid -100, err 0), pushed like
/// [`encode_event_frame`] to a session that used the recipe extension.
pub fn encode_recipe_notification_frame(zxid: i64, n: &RecipeNotification) -> Vec<u8> {
    let mut w = Writer::framed();
    ReplyHeader {
        xid: crate::consts::xid::RECIPE_NOTIFICATION,
        zxid,
        err: 0,
    }
    .encode(&mut w);
    n.encode(&mut w);
    w.finish_frame()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::xid;
    use crate::recipe;

    fn infos() -> Vec<RecipeInfo> {
        vec![
            RecipeInfo {
                name: "lock".into(),
                version: 1,
                sha256: "ab".repeat(32),
                size: 1234,
                ctime: 1_700_000_000_000,
                zxid: 0x1_0000_0005,
            },
            RecipeInfo {
                name: "queue".into(),
                version: 7,
                sha256: "00".repeat(32),
                size: 0,
                ctime: 0,
                zxid: 9,
            },
        ]
    }

    fn recipe_responses() -> Vec<(i32, Response)> {
        vec![
            (
                op::RECIPE_UPLOAD,
                Response::RecipeUploaded {
                    name: "lock".into(),
                    version: 3,
                    sha256: "0f".repeat(32),
                },
            ),
            (op::RECIPE_LIST, Response::RecipeList(infos())),
            (op::RECIPE_LIST, Response::RecipeList(vec![])),
            (op::RECIPE_DELETE, Response::Empty),
            (
                op::RECIPE_CALL,
                Response::RecipeCall {
                    state: recipe::CALL_COMPLETED,
                    call_id: 42,
                    reply: vec![0x92, 0x01, 0x02],
                },
            ),
            (
                op::RECIPE_CALL,
                Response::RecipeCall {
                    state: recipe::CALL_PARKED,
                    call_id: i64::MAX,
                    reply: vec![],
                },
            ),
            (
                op::RECIPE_ADOPT_RUNTIME,
                Response::RecipeRuntime {
                    profile: "7f".repeat(32),
                },
            ),
            (
                op::RECIPE_RUNTIME_INFO,
                Response::RecipeRuntimeInfo {
                    pinned: "profile-a".into(),
                    local: "profile-b".into(),
                },
            ),
            (
                op::RECIPE_RUNTIME_INFO,
                Response::RecipeRuntimeInfo {
                    pinned: "".into(),
                    local: "profile-b".into(),
                },
            ),
        ]
    }

    /// Splits a frame into its header and body, checking the length prefix.
    fn split(frame: &[u8]) -> (ReplyHeader, &[u8]) {
        assert_eq!(
            i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize,
            frame.len() - 4
        );
        let mut r = Reader::new(&frame[4..]);
        let h = ReplyHeader::decode(&mut r).unwrap();
        (h, r.rest())
    }

    #[test]
    fn recipe_responses_round_trip() {
        for (opcode, resp) in recipe_responses() {
            let frame = encode_reply_frame(5, 77, &Ok(resp.clone()));
            let (h, body) = split(&frame);
            assert_eq!((h.xid, h.zxid, h.err), (5, 77, 0));
            let mut r = Reader::new(body);
            assert_eq!(Response::decode(opcode, &mut r).unwrap(), resp);
            assert!(r.is_empty(), "{resp:?} left bytes");
        }
    }

    #[test]
    fn recipe_response_bodies_match_the_records() {
        let mut w = Writer::new();
        Response::RecipeList(infos()).encode(&mut w);
        assert_eq!(
            w.into_inner(),
            RecipeListResponse { recipes: infos() }.to_bytes()
        );
        let mut w = Writer::new();
        Response::RecipeUploaded {
            name: "a".into(),
            version: 1,
            sha256: "ff".into(),
        }
        .encode(&mut w);
        assert_eq!(
            w.into_inner(),
            RecipeUploadResponse {
                name: "a".into(),
                version: 1,
                sha256: "ff".into()
            }
            .to_bytes()
        );
        let mut w = Writer::new();
        Response::RecipeRuntime {
            profile: "p".into(),
        }
        .encode(&mut w);
        assert_eq!(
            w.into_inner(),
            RecipeAdoptRuntimeResponse {
                profile: "p".into()
            }
            .to_bytes()
        );
        let mut w = Writer::new();
        Response::RecipeRuntimeInfo {
            pinned: "".into(),
            local: "l".into(),
        }
        .encode(&mut w);
        let b = w.into_inner();
        // ustring "" (length 0), then ustring "l".
        assert_eq!(b, [0, 0, 0, 0, 0, 0, 0, 1, b'l']);
        assert_eq!(
            b,
            RecipeRuntimeInfoResponse {
                pinned: "".into(),
                local: "l".into()
            }
            .to_bytes()
        );
        // RecipeInfo: ustring, int, ustring, int, long, long.
        let b = infos()[1].to_bytes();
        assert_eq!(b.len(), (4 + 5) + 4 + (4 + 64) + 4 + 8 + 8);
    }

    #[test]
    fn truncated_recipe_responses_are_decode_errors() {
        for (opcode, resp) in recipe_responses() {
            if resp == Response::Empty {
                continue;
            }
            let mut w = Writer::new();
            resp.encode(&mut w);
            let body = w.into_inner();
            for cut in 0..body.len() {
                let res = Response::decode(opcode, &mut Reader::new(&body[..cut]));
                assert!(res.is_err(), "{resp:?} cut at {cut} decoded: {res:?}");
            }
        }
        // A vector count larger than the frame is refused before allocating.
        let huge = i32::MAX.to_be_bytes();
        assert!(matches!(
            Response::decode(op::RECIPE_LIST, &mut Reader::new(&huge)),
            Err(DecodeError::BadLength { .. })
        ));
    }

    #[test]
    fn recipe_failure_carries_code_and_message() {
        let fail = Response::RecipeFailure {
            code: ErrorCode::RecipeFailed,
            message: "unknown function x".into(),
        };
        let frame = encode_reply_frame(9, 12, &Ok(fail));
        let (h, body) = split(&frame);
        assert_eq!((h.xid, h.zxid, h.err), (9, 12, -1104));
        let mut r = Reader::new(body);
        assert_eq!(
            decode_recipe_error(&mut r).unwrap().as_deref(),
            Some("unknown function x")
        );
        assert!(r.is_empty());

        // Header-only errors stay header-only, and read as no message.
        let frame = encode_reply_frame(9, 12, &Err(ErrorCode::NoAuth));
        let (h, body) = split(&frame);
        assert_eq!(h.err, ErrorCode::NoAuth.code());
        assert!(body.is_empty());
        assert_eq!(decode_recipe_error(&mut Reader::new(body)).unwrap(), None);

        // A truncated message is an error, not a panic.
        let mut w = Writer::new();
        w.write_i32(10);
        w.buf.extend_from_slice(b"abc");
        assert!(decode_recipe_error(&mut Reader::new(&w.into_inner())).is_err());
        assert!(decode_recipe_error(&mut Reader::new(&[0, 0])).is_err());
    }

    #[test]
    fn runtime_op_errors_carry_a_message() {
        // recipeAdoptRuntime fails like the other recipe ops: code in the header, then
        // the message.
        let frame = encode_reply_frame(
            4,
            8,
            &Ok(Response::RecipeFailure {
                code: ErrorCode::RecipeRuntimeMismatch,
                message: "local profile mismatch".into(),
            }),
        );
        let (h, body) = split(&frame);
        assert_eq!(h.err, ErrorCode::RecipeRuntimeMismatch.code());
        assert!(recipe::is_recipe_op(op::RECIPE_ADOPT_RUNTIME));
        assert_eq!(
            decode_recipe_error(&mut Reader::new(body))
                .unwrap()
                .as_deref(),
            Some("local profile mismatch")
        );
    }

    #[test]
    fn recipe_notification_frames() {
        let notes = [
            RecipeNotification {
                kind: recipe::NOTIFY_CALL_COMPLETED,
                module: "lock".into(),
                call_id: 17,
                err: 0,
                message: "".into(),
                payload: vec![0xc3],
            },
            RecipeNotification {
                kind: recipe::NOTIFY_CALL_COMPLETED,
                module: "lock".into(),
                call_id: 18,
                err: ErrorCode::RecipeCancelled.code(),
                message: "session closed".into(),
                payload: vec![],
            },
            RecipeNotification {
                kind: recipe::NOTIFY_MESSAGE,
                module: "queue".into(),
                call_id: 0,
                err: 0,
                message: "".into(),
                payload: vec![0x81, 0xa1, b'a', 0x01],
            },
        ];
        for n in notes {
            let frame = encode_recipe_notification_frame(0x55, &n);
            let (h, body) = split(&frame);
            assert_eq!((h.xid, h.zxid, h.err), (xid::RECIPE_NOTIFICATION, 0x55, 0));
            assert_eq!(h.xid, -100);
            let mut r = Reader::new(body);
            assert_eq!(RecipeNotification::decode(&mut r).unwrap(), n);
            assert!(r.is_empty());
            for cut in 0..body.len() {
                assert!(RecipeNotification::decode(&mut Reader::new(&body[..cut])).is_err());
            }
        }
    }
}
