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
            _ => Response::Empty,
        })
    }
}

/// Encodes a full reply frame: length, `ReplyHeader`, then the body if `err` is 0.
pub fn encode_reply_frame(xid: i32, zxid: i64, result: &Result<Response, ErrorCode>) -> Vec<u8> {
    let mut w = Writer::framed();
    match result {
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
