//! The records of `zookeeper.jute` that cross the client port, in field order.

use crate::jute::{DecodeError, Reader, Record, Writer};
use serde::{Deserialize, Serialize};

/// Implements `Record` for a struct whose fields are jute-encoded in order.
/// Field kinds: `i32`, `i64`, `bool`, `str` (ustring), `buf` (nullable buffer),
/// `bytes` (buffer read as empty when null), `strs` (vector<ustring>), `rec` (nested
/// record), `recs` (vector<record>).
macro_rules! record {
    ($(#[$m:meta])* $name:ident { $($field:ident : $kind:ident $(<$inner:ty>)?),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
        pub struct $name { $(pub $field: record!(@ty $kind $(<$inner>)?),)* }

        impl Record for $name {
            #[allow(unused_variables)]
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok($name { $($field: record!(@read r, $kind $(<$inner>)?),)* })
            }
            #[allow(unused_variables)]
            fn encode(&self, w: &mut Writer) {
                $(record!(@write w, &self.$field, $kind $(<$inner>)?);)*
            }
        }
    };
    (@ty i32) => { i32 };
    (@ty i64) => { i64 };
    (@ty bool) => { bool };
    (@ty str) => { String };
    (@ty buf) => { Option<Vec<u8>> };
    (@ty bytes) => { Vec<u8> };
    (@ty strs) => { Vec<String> };
    (@ty rec<$t:ty>) => { $t };
    (@ty recs<$t:ty>) => { Vec<$t> };
    (@read $r:ident, i32) => { $r.read_i32()? };
    (@read $r:ident, i64) => { $r.read_i64()? };
    (@read $r:ident, bool) => { $r.read_bool()? };
    (@read $r:ident, str) => { $r.read_ustring()? };
    (@read $r:ident, buf) => { $r.read_buffer()? };
    (@read $r:ident, bytes) => { $r.read_buffer()?.unwrap_or_default() };
    (@read $r:ident, strs) => { $r.read_string_vec()? };
    (@read $r:ident, rec<$t:ty>) => { <$t>::decode($r)? };
    (@read $r:ident, recs<$t:ty>) => { $r.read_vec(|r| <$t>::decode(r))? };
    (@write $w:ident, $v:expr, i32) => { $w.write_i32(*$v) };
    (@write $w:ident, $v:expr, i64) => { $w.write_i64(*$v) };
    (@write $w:ident, $v:expr, bool) => { $w.write_bool(*$v) };
    (@write $w:ident, $v:expr, str) => { $w.write_ustring($v) };
    (@write $w:ident, $v:expr, buf) => { $w.write_buffer($v.as_deref()) };
    (@write $w:ident, $v:expr, bytes) => { $w.write_buffer(Some($v)) };
    (@write $w:ident, $v:expr, strs) => { $w.write_string_vec($v) };
    (@write $w:ident, $v:expr, rec<$t:ty>) => { $v.encode($w) };
    (@write $w:ident, $v:expr, recs<$t:ty>) => { $w.write_vec($v, |w, x| x.encode(w)) };
}

record!(
    /// An identity: `scheme` (world, auth, digest, ip, super) and `id`.
    Id { scheme: str, id: str }
);
record!(
    /// One ACL entry: permission bits for an identity.
    Acl { perms: i32, id: rec<Id> }
);
record!(
    /// Znode metadata as clients see it.
    Stat {
        czxid: i64, mzxid: i64, ctime: i64, mtime: i64, version: i32, cversion: i32,
        aversion: i32, ephemeral_owner: i64, data_length: i32, num_children: i32, pzxid: i64,
    }
);
record!(ClientInfo {
    auth_scheme: str,
    user: str
});

record!(RequestHeader { xid: i32, op: i32 });
record!(ReplyHeader {
    xid: i32,
    zxid: i64,
    err: i32
});
record!(WatcherEvent {
    event_type: i32,
    state: i32,
    path: str
});
record!(AuthPacket {
    auth_type: i32,
    scheme: str,
    auth: buf
});
record!(MultiHeader {
    op: i32,
    done: bool,
    err: i32
});
record!(ErrorResponse { err: i32 });

record!(CreateRequest { path: str, data: buf, acl: recs<Acl>, flags: i32 });
record!(CreateTtlRequest { path: str, data: buf, acl: recs<Acl>, flags: i32, ttl: i64 });
record!(DeleteRequest {
    path: str,
    version: i32
});
record!(PathWatchRequest {
    path: str,
    watch: bool
});
record!(SetDataRequest {
    path: str,
    data: buf,
    version: i32
});
record!(PathRequest { path: str });
record!(SetAclRequest { path: str, acl: recs<Acl>, version: i32 });
record!(CheckVersionRequest {
    path: str,
    version: i32
});
record!(WatchesRequest {
    path: str,
    watcher_type: i32
});
record!(SetWatches {
    relative_zxid: i64,
    data_watches: strs,
    exist_watches: strs,
    child_watches: strs
});
record!(SetWatches2 {
    relative_zxid: i64,
    data_watches: strs,
    exist_watches: strs,
    child_watches: strs,
    persistent_watches: strs,
    persistent_recursive_watches: strs,
});
record!(AddWatchRequest {
    path: str,
    mode: i32
});
record!(ReconfigRequest {
    joining_servers: str,
    leaving_servers: str,
    new_members: str,
    cur_config_id: i64
});

record!(CreateResponse { path: str });
record!(Create2Response { path: str, stat: rec<Stat> });
record!(StatResponse { stat: rec<Stat> });
record!(GetDataResponse { data: buf, stat: rec<Stat> });
record!(GetAclResponse { acl: recs<Acl>, stat: rec<Stat> });
record!(GetChildrenResponse { children: strs });
record!(GetChildren2Response { children: strs, stat: rec<Stat> });
record!(PathResponse { path: str });
record!(GetEphemeralsResponse { ephemerals: strs });
record!(GetAllChildrenNumberResponse { total_number: i32 });
record!(WhoAmIResponse { client_info: recs<ClientInfo> });

// Wazoo's recipe extension (docs/PROTOCOL.md, "Recipe extension"; opcodes 1000-1005).
record!(
    /// recipeUpload (op 1000): a wasm module to register under `name`.
    RecipeUploadRequest { name: str, module: bytes }
);
record!(
    /// Reply to recipeUpload: the version assigned and the module's SHA-256 (lowercase hex).
    RecipeUploadResponse { name: str, version: i32, sha256: str }
);
record!(
    /// recipeList (op 1001): `name` "" lists every recipe.
    RecipeListRequest { name: str }
);
record!(
    /// One registered recipe version. `ctime` in ms since the epoch, `zxid` of the upload.
    RecipeInfo { name: str, version: i32, sha256: str, size: i32, ctime: i64, zxid: i64 }
);
record!(RecipeListResponse { recipes: recs<RecipeInfo> });
record!(
    /// recipeDelete (op 1002): `version` -1 deletes every version of `name`.
    RecipeDeleteRequest { name: str, version: i32 }
);
record!(
    /// recipeCall (op 1003): `version` -1 runs the latest; `args` is MessagePack.
    RecipeCallRequest { name: str, version: i32, function: str, args: bytes }
);
record!(
    /// Reply to recipeCall: `state` 0 completed (`reply` is MessagePack), 1 parked (the
    /// result comes later in a `RecipeNotification` of kind 1 with this `call_id`).
    RecipeCallResponse { state: i32, call_id: i64, reply: bytes }
);
record!(
    /// Reply to recipeAdoptRuntime (op 1004, empty request body): the determinism
    /// profile id the cluster now pins.
    RecipeAdoptRuntimeResponse { profile: str }
);
record!(
    /// Reply to recipeRuntimeInfo (op 1005, empty request body): the profile id the
    /// cluster pins ("" before the first upload) and the answering server's own.
    RecipeRuntimeInfoResponse { pinned: str, local: str }
);
record!(
    /// Body of a recipe op's error reply (after a `ReplyHeader` with `err != 0`).
    RecipeErrorResponse { message: str }
);
record!(
    /// Pushed with xid -100 (`consts::xid::RECIPE_NOTIFICATION`). `kind` 1: a parked call
    /// completed (`err` 0 and `payload` = reply, or `err` = code and `message`); kind 2:
    /// a message the recipe pushed to this session (`call_id` 0, `payload` MessagePack).
    RecipeNotification { kind: i32, module: str, call_id: i64, err: i32, message: str, payload: bytes }
);

/// First frame of a connection. `read_only` is absent in requests from clients
/// older than 3.9's protocol; the reply then omits it too.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectRequest {
    pub protocol_version: i32,
    pub last_zxid_seen: i64,
    pub timeout_ms: i32,
    pub session_id: i64,
    pub passwd: Vec<u8>,
    pub read_only: Option<bool>,
}

impl Record for ConnectRequest {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let protocol_version = r.read_i32()?;
        let last_zxid_seen = r.read_i64()?;
        let timeout_ms = r.read_i32()?;
        let session_id = r.read_i64()?;
        let passwd = r.read_buffer()?.unwrap_or_default();
        let read_only = if r.is_empty() {
            None
        } else {
            Some(r.read_bool()?)
        };
        Ok(ConnectRequest {
            protocol_version,
            last_zxid_seen,
            timeout_ms,
            session_id,
            passwd,
            read_only,
        })
    }

    fn encode(&self, w: &mut Writer) {
        w.write_i32(self.protocol_version);
        w.write_i64(self.last_zxid_seen);
        w.write_i32(self.timeout_ms);
        w.write_i64(self.session_id);
        w.write_buffer(Some(&self.passwd));
        if let Some(ro) = self.read_only {
            w.write_bool(ro);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectResponse {
    pub protocol_version: i32,
    pub timeout_ms: i32,
    pub session_id: i64,
    pub passwd: Vec<u8>,
    /// Written only when the request carried the readOnly byte.
    pub read_only: Option<bool>,
}

impl Record for ConnectResponse {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let protocol_version = r.read_i32()?;
        let timeout_ms = r.read_i32()?;
        let session_id = r.read_i64()?;
        let passwd = r.read_buffer()?.unwrap_or_default();
        let read_only = if r.is_empty() {
            None
        } else {
            Some(r.read_bool()?)
        };
        Ok(ConnectResponse {
            protocol_version,
            timeout_ms,
            session_id,
            passwd,
            read_only,
        })
    }

    fn encode(&self, w: &mut Writer) {
        w.write_i32(self.protocol_version);
        w.write_i32(self.timeout_ms);
        w.write_i64(self.session_id);
        w.write_buffer(Some(&self.passwd));
        if let Some(ro) = self.read_only {
            w.write_bool(ro);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_68_bytes_in_field_order() {
        let s = Stat {
            czxid: 1,
            mzxid: 2,
            ctime: 3,
            mtime: 4,
            version: 5,
            cversion: 6,
            aversion: 7,
            ephemeral_owner: 8,
            data_length: 9,
            num_children: 10,
            pzxid: 11,
        };
        let b = s.to_bytes();
        assert_eq!(b.len(), 68);
        assert_eq!(&b[..8], &1i64.to_be_bytes());
        assert_eq!(&b[60..], &11i64.to_be_bytes());
        assert_eq!(Stat::from_bytes(&b).unwrap(), s);
    }

    #[test]
    fn connect_request_read_only_is_optional() {
        let mut req = ConnectRequest {
            timeout_ms: 30000,
            passwd: vec![0; 16],
            ..Default::default()
        };
        assert_eq!(req.to_bytes().len(), 44);
        assert_eq!(
            ConnectRequest::from_bytes(&req.to_bytes())
                .unwrap()
                .read_only,
            None
        );
        req.read_only = Some(false);
        assert_eq!(req.to_bytes().len(), 45);
        assert_eq!(ConnectRequest::from_bytes(&req.to_bytes()).unwrap(), req);
        let resp = ConnectResponse {
            timeout_ms: 4000,
            session_id: 7,
            passwd: vec![1; 16],
            read_only: Some(false),
            ..Default::default()
        };
        assert_eq!(resp.to_bytes().len(), 37);
    }

    #[test]
    fn create_request_round_trips() {
        let c = CreateRequest {
            path: "/a".into(),
            data: Some(b"x".to_vec()),
            acl: vec![Acl {
                perms: 31,
                id: Id {
                    scheme: "world".into(),
                    id: "anyone".into(),
                },
            }],
            flags: 3,
        };
        assert_eq!(CreateRequest::from_bytes(&c.to_bytes()).unwrap(), c);
    }
}
