//! `wazoo-client`: an async ZooKeeper-protocol client on tokio, for Wazoo and Apache
//! ZooKeeper alike.
//!
//! One `Client` is one session over one TCP connection. Requests are pipelined:
//! [`Client::request`] assigns the next xid, queues the frame and resolves when the
//! matching reply arrives (replies come back in xid order; a reply out of order is a
//! protocol violation and ends the connection). Watch notifications arrive on the
//! channel from [`Client::take_events`], in the order the server sent them. A
//! background ping every negotiated-timeout/3 keeps the session alive.
//!
//! Wazoo's recipe extension (server-side wasm, docs/PROTOCOL.md "Recipe extension")
//! has typed helpers: [`Client::recipe_upload`], [`Client::recipe_list`],
//! [`Client::recipe_delete`], [`Client::recipe_adopt_runtime`],
//! [`Client::recipe_runtime_info`], [`Client::recipe_call`] (which waits out a parked call)
//! and [`Client::recipe_call_typed`]; messages recipes push to the session arrive on
//! [`Client::take_recipe_messages`]. Their failures are [`ClientError::Recipe`], with
//! the server's code and message.
//!
//! When the connection is lost every outstanding and later request (and every parked
//! recipe call) fails with [`ClientError::ConnectionClosed`]; there is no reconnect yet (see `connection.rs`
//! for where it goes). Dropping the last `Client` handle closes the socket without
//! closeSession, so the session lives on until the server expires it;
//! [`Client::close`] ends it properly.

mod connection;
#[cfg(test)]
mod recipe_tests;

pub use wazoo_proto as proto;

pub use wazoo_proto::RecipeInfo;

use connection::{Connection, ParkedCall, Reply};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::UnboundedReceiver;
use wazoo_proto::consts::perms;
use wazoo_proto::recipe;
use wazoo_proto::{
    Acl, AuthPacket, CheckVersionRequest, CreateKind, CreateOp, DecodeError, DeleteRequest,
    ErrorCode, Id, OpResult, PathWatchRequest, Request, Response, SetDataRequest, Stat, WriteOp,
};

/// Session parameters for [`Client::connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Requested session timeout; the server clamps it (ZooKeeper: to [2, 20] ticks).
    pub timeout_ms: i32,
    /// 0 asks for a new session; otherwise the session to resume (with `passwd`).
    pub session_id: i64,
    /// The session's password when resuming; empty sends 16 zero bytes.
    pub passwd: Vec<u8>,
    /// Whether a read-only server may accept this client.
    pub read_only: bool,
    /// Highest zxid this client has seen; a server behind it refuses the connection.
    pub last_zxid_seen: i64,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            timeout_ms: 30000,
            session_id: 0,
            passwd: Vec::new(),
            read_only: false,
            last_zxid_seen: 0,
        }
    }
}

/// A watch notification (xid -1) as received.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchedEvent {
    /// `consts::event::*`.
    pub event_type: i32,
    /// `consts::state::*`.
    pub state: i32,
    pub path: String,
    /// The reply header's zxid: -1 from ZooKeeper ≤ 3.8, the triggering zxid from 3.9+.
    pub zxid: i64,
}

/// A message a recipe pushed to this session (`RecipeNotification` kind 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeMessage {
    /// The recipe (module name) that sent it.
    pub module: String,
    /// MessagePack, as the recipe wrote it.
    pub payload: Vec<u8>,
    /// The notification header's zxid.
    pub zxid: i64,
}

/// The reply to a successful [`Client::recipe_upload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeUploaded {
    pub name: String,
    /// The version the server assigned to this module.
    pub version: i32,
    /// SHA-256 of the module, lowercase hex.
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot decode the server's reply: {0}")]
    Decode(#[from] DecodeError),
    /// The ConnectResponse carried timeout 0: unknown or expired session, or a bad password.
    #[error("session refused by the server (unknown or expired session, or wrong password)")]
    SessionRefused,
    #[error("connection closed")]
    ConnectionClosed,
    #[error("server returned {0}")]
    Zk(ErrorCode),
    /// A recipe operation failed: the server's code (a `Recipe*` code, or NoAuth,
    /// BadArguments, MarshallingError...) and its human-readable reason (empty when
    /// the server sent none). Displays as `NAME: message`, e.g.
    /// `RecipeFailed: unknown function x`.
    #[error("{}", recipe_error_text(.code, .message))]
    Recipe { code: ErrorCode, message: String },
    /// Recipe arguments that cannot be encoded, or a reply that does not decode, as
    /// the requested type ([`Client::recipe_call_typed`]).
    #[error("MessagePack: {0}")]
    MessagePack(String),
}

fn recipe_error_text(code: &ErrorCode, message: &str) -> String {
    if message.is_empty() {
        code.name().to_string()
    } else {
        format!("{}: {message}", code.name())
    }
}

impl From<ErrorCode> for ClientError {
    fn from(c: ErrorCode) -> Self {
        ClientError::Zk(c)
    }
}

impl ClientError {
    /// The ZooKeeper error code, if this is one. A lost connection is ConnectionLoss,
    /// as in ZooKeeper's clients.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Zk(c) | ClientError::Recipe { code: c, .. } => Some(*c),
            ClientError::ConnectionClosed => Some(ErrorCode::ConnectionLoss),
            _ => None,
        }
    }

    /// The server's message for a recipe error.
    pub fn recipe_message(&self) -> Option<&str> {
        match self {
            ClientError::Recipe { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// world:anyone with all permissions (`ZooDefs.Ids.OPEN_ACL_UNSAFE`).
pub fn open_acl_unsafe() -> Vec<Acl> {
    vec![Acl {
        perms: perms::ALL,
        id: Id {
            scheme: "world".into(),
            id: "anyone".into(),
        },
    }]
}

/// world:anyone read-only (`ZooDefs.Ids.READ_ACL_UNSAFE`).
pub fn read_acl_unsafe() -> Vec<Acl> {
    vec![Acl {
        perms: perms::READ,
        id: Id {
            scheme: "world".into(),
            id: "anyone".into(),
        },
    }]
}

/// All permissions for whoever is authenticated on the creating connection
/// (`ZooDefs.Ids.CREATOR_ALL_ACL`).
pub fn creator_all_acl() -> Vec<Acl> {
    vec![Acl {
        perms: perms::ALL,
        id: Id {
            scheme: "auth".into(),
            id: "".into(),
        },
    }]
}

/// A session handle. Cheap to clone; the connection closes (without closeSession)
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    session_id: i64,
    passwd: Vec<u8>,
    timeout_ms: i32,
    read_only: bool,
    conn: Connection,
    events: Mutex<Option<UnboundedReceiver<WatchedEvent>>>,
    recipe_messages: Mutex<Option<UnboundedReceiver<RecipeMessage>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("session_id", &format_args!("{:#x}", self.inner.session_id))
            .field("timeout_ms", &self.inner.timeout_ms)
            .finish()
    }
}

fn unexpected(resp: Response) -> ClientError {
    tracing::warn!(?resp, "reply body of an unexpected type");
    ClientError::Decode(DecodeError::Invalid("reply body of an unexpected type"))
}

impl Client {
    /// Connects to `addr` (`host:port`) and establishes (or resumes) a session.
    /// A refused session (ConnectResponse timeout 0) is [`ClientError::SessionRefused`].
    pub async fn connect(addr: &str, opts: ConnectOptions) -> Result<Client, ClientError> {
        let (conn, resp, channels) = connection::establish(addr, &opts).await?;
        Ok(Client {
            inner: Arc::new(Inner {
                session_id: resp.session_id,
                passwd: resp.passwd,
                timeout_ms: resp.timeout_ms,
                read_only: resp.read_only.unwrap_or(false),
                conn,
                events: Mutex::new(Some(channels.events)),
                recipe_messages: Mutex::new(Some(channels.recipe_messages)),
            }),
        })
    }

    pub fn session_id(&self) -> i64 {
        self.inner.session_id
    }

    pub fn session_passwd(&self) -> &[u8] {
        &self.inner.passwd
    }

    pub fn negotiated_timeout_ms(&self) -> i32 {
        self.inner.timeout_ms
    }

    /// Whether the server said this is a read-only connection.
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// Highest zxid seen in any reply header on this connection (starting from
    /// `ConnectOptions::last_zxid_seen`): what a reconnect passes as `last_zxid_seen`
    /// and setWatches as `relative_zxid`.
    pub fn last_zxid(&self) -> i64 {
        self.inner.conn.last_zxid()
    }

    /// Whether the connection has closed (server closed it, I/O error, protocol error).
    pub fn is_closed(&self) -> bool {
        self.inner.conn.shared.close_reason().is_some()
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<String> {
        self.inner.conn.shared.close_reason()
    }

    /// Pipelined: assigns the next xid, writes the frame, returns when the matching
    /// reply arrives. Replies arrive in xid order; the server may interleave
    /// notifications (xid -1). `Request::Ping`, `Request::Auth` and
    /// `Request::SetWatches` are sent with their reserved xids (-2, -4, -8), as the
    /// Java client does, and matched in order among their own kind.
    pub async fn request(
        &self,
        req: Request,
    ) -> Result<(i64, Result<Response, ErrorCode>), ClientError> {
        let r = self.inner.conn.request(&req).await?;
        Ok((r.zxid, r.result))
    }

    /// Like [`request`](Self::request), and also returns how many notifications this
    /// connection had received before the reply: notifications numbered below that
    /// (counting from 0 in `take_events` order) arrived before the reply, the others
    /// after. Lets a test place events exactly relative to replies.
    pub async fn request_ordered(
        &self,
        req: Request,
    ) -> Result<(i64, Result<Response, ErrorCode>, u64), ClientError> {
        let Reply {
            zxid,
            result,
            events_before,
            ..
        } = self.inner.conn.request(&req).await?;
        Ok((zxid, result, events_before))
    }

    /// Watch notifications in arrival order. Call once; further calls return None.
    /// The channel ends when the connection closes.
    pub fn take_events(&self) -> Option<UnboundedReceiver<WatchedEvent>> {
        self.inner.events.lock().unwrap().take()
    }

    async fn call(&self, req: Request) -> Result<Response, ClientError> {
        let (_, result) = self.request(req).await?;
        result.map_err(ClientError::Zk)
    }

    /// Sends an auth packet (xid -4) and waits for its reply. ZooKeeper answers an
    /// unknown scheme or bad credentials with `AuthFailed` and closes the connection.
    pub async fn add_auth(&self, scheme: &str, auth: &[u8]) -> Result<(), ClientError> {
        self.call(Request::Auth(AuthPacket {
            auth_type: 0,
            scheme: scheme.into(),
            auth: Some(auth.to_vec()),
        }))
        .await?;
        Ok(())
    }

    /// create (op 1), or createContainer (op 19) when `flags` is 4, as the Java client
    /// does. Returns the created path (with the sequence suffix, if any). TTL modes
    /// need [`create_ttl`](Self::create_ttl).
    pub async fn create(
        &self,
        path: &str,
        data: &[u8],
        acl: Vec<Acl>,
        flags: i32,
    ) -> Result<String, ClientError> {
        match self
            .call(create_request(CreateKind::Create, path, data, acl, flags))
            .await?
        {
            Response::Create { path } | Response::Create2 { path, .. } => Ok(path),
            other => Err(unexpected(other)),
        }
    }

    /// create2 (op 15): the created path and its Stat.
    pub async fn create2(
        &self,
        path: &str,
        data: &[u8],
        acl: Vec<Acl>,
        flags: i32,
    ) -> Result<(String, Stat), ClientError> {
        match self
            .call(create_request(CreateKind::Create2, path, data, acl, flags))
            .await?
        {
            Response::Create2 { path, stat } => Ok((path, stat)),
            other => Err(unexpected(other)),
        }
    }

    /// createTTL (op 21); `flags` 5 (persistent) or 6 (persistent sequential).
    pub async fn create_ttl(
        &self,
        path: &str,
        data: &[u8],
        acl: Vec<Acl>,
        flags: i32,
        ttl_ms: i64,
    ) -> Result<(String, Stat), ClientError> {
        match self
            .call(Request::Create(CreateOp {
                kind: CreateKind::Ttl,
                path: path.into(),
                data: Some(data.to_vec()),
                acl,
                flags,
                ttl: ttl_ms,
            }))
            .await?
        {
            Response::Create2 { path, stat } => Ok((path, stat)),
            other => Err(unexpected(other)),
        }
    }

    pub async fn get_data(
        &self,
        path: &str,
        watch: bool,
    ) -> Result<(Option<Vec<u8>>, Stat), ClientError> {
        match self
            .call(Request::GetData(PathWatchRequest {
                path: path.into(),
                watch,
            }))
            .await?
        {
            Response::GetData { data, stat } => Ok((data, stat)),
            other => Err(unexpected(other)),
        }
    }

    pub async fn set_data(
        &self,
        path: &str,
        data: &[u8],
        version: i32,
    ) -> Result<Stat, ClientError> {
        match self
            .call(Request::SetData(SetDataRequest {
                path: path.into(),
                data: Some(data.to_vec()),
                version,
            }))
            .await?
        {
            Response::Stat(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    pub async fn delete(&self, path: &str, version: i32) -> Result<(), ClientError> {
        self.call(Request::Delete(DeleteRequest {
            path: path.into(),
            version,
        }))
        .await?;
        Ok(())
    }

    /// `Ok(None)` for a missing node (the watch, if asked for, is still set).
    pub async fn exists(&self, path: &str, watch: bool) -> Result<Option<Stat>, ClientError> {
        match self
            .request(Request::Exists(PathWatchRequest {
                path: path.into(),
                watch,
            }))
            .await?
            .1
        {
            Ok(Response::Stat(s)) => Ok(Some(s)),
            Ok(other) => Err(unexpected(other)),
            Err(ErrorCode::NoNode) => Ok(None),
            Err(e) => Err(ClientError::Zk(e)),
        }
    }

    pub async fn get_children(&self, path: &str, watch: bool) -> Result<Vec<String>, ClientError> {
        match self
            .call(Request::GetChildren(PathWatchRequest {
                path: path.into(),
                watch,
            }))
            .await?
        {
            Response::Children(c) => Ok(c),
            other => Err(unexpected(other)),
        }
    }

    /// getChildren2 (op 12): children and the parent's Stat.
    pub async fn get_children2(
        &self,
        path: &str,
        watch: bool,
    ) -> Result<(Vec<String>, Stat), ClientError> {
        match self
            .call(Request::GetChildren2(PathWatchRequest {
                path: path.into(),
                watch,
            }))
            .await?
        {
            Response::Children2 { children, stat } => Ok((children, stat)),
            other => Err(unexpected(other)),
        }
    }

    /// check (op 13) as a single operation.
    pub async fn check(&self, path: &str, version: i32) -> Result<(), ClientError> {
        self.call(Request::Check(CheckVersionRequest {
            path: path.into(),
            version,
        }))
        .await?;
        Ok(())
    }

    /// multi (op 14). A failing multi is still `Ok`: its results are all
    /// `OpResult::Error`, 0 (`Ok`) before the failed op, the real code at it, and
    /// `RuntimeInconsistency` after it, and nothing was applied.
    pub async fn multi(&self, ops: Vec<WriteOp>) -> Result<Vec<OpResult>, ClientError> {
        match self.call(Request::Multi(ops)).await? {
            Response::Multi(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Messages recipes push to this session (`RecipeNotification` kind 2), in arrival
    /// order. Call once; further calls return None. The channel ends when the
    /// connection closes.
    pub fn take_recipe_messages(&self) -> Option<UnboundedReceiver<RecipeMessage>> {
        self.inner.recipe_messages.lock().unwrap().take()
    }

    /// Sends a recipe op; an error reply becomes [`ClientError::Recipe`] with the
    /// server's message. A parked recipeCall also returns its completion's receiver.
    async fn recipe_request(
        &self,
        req: Request,
    ) -> Result<(Response, Option<ParkedCall>), ClientError> {
        let reply = self.inner.conn.request(&req).await?;
        match reply.result {
            Ok(resp) => Ok((resp, reply.parked)),
            Err(code) => Err(ClientError::Recipe {
                code,
                message: reply.error_message.unwrap_or_default(),
            }),
        }
    }

    /// recipeUpload (op 1000): registers `module` (wasm bytes) as the next version of
    /// recipe `name`. Needs ADMIN permission when the server enforces it (NoAuth).
    pub async fn recipe_upload(
        &self,
        name: &str,
        module: &[u8],
    ) -> Result<RecipeUploaded, ClientError> {
        match self
            .recipe_request(Request::RecipeUpload {
                name: name.into(),
                module: module.to_vec(),
            })
            .await?
            .0
        {
            Response::RecipeUploaded {
                name,
                version,
                sha256,
            } => Ok(RecipeUploaded {
                name,
                version,
                sha256,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// recipeList (op 1001): the versions of recipe `name`, or of every recipe for "".
    pub async fn recipe_list(&self, name: &str) -> Result<Vec<RecipeInfo>, ClientError> {
        match self
            .recipe_request(Request::RecipeList { name: name.into() })
            .await?
            .0
        {
            Response::RecipeList(infos) => Ok(infos),
            other => Err(unexpected(other)),
        }
    }

    /// recipeDelete (op 1002): deletes one version of recipe `name`, or every version
    /// for `version` -1.
    pub async fn recipe_delete(&self, name: &str, version: i32) -> Result<(), ClientError> {
        self.recipe_request(Request::RecipeDelete {
            name: name.into(),
            version,
        })
        .await?;
        Ok(())
    }

    /// recipeAdoptRuntime (op 1004): pins the answering server's determinism profile as
    /// the cluster's, and returns the pinned profile id. Run it once every server is
    /// upgraded to a build whose profile changed; until then recipe calls fail with
    /// RecipeRuntimeMismatch. Needs ADMIN on /wazoo/modules when the server enforces
    /// it (NoAuth).
    pub async fn recipe_adopt_runtime(&self) -> Result<String, ClientError> {
        match self.recipe_request(Request::RecipeAdoptRuntime).await?.0 {
            Response::RecipeRuntime { profile } => Ok(profile),
            other => Err(unexpected(other)),
        }
    }

    /// recipeRuntimeInfo (op 1005): `(pinned, local)`, the determinism profile id the
    /// cluster pins ("" before the first upload) and the answering server's own.
    pub async fn recipe_runtime_info(&self) -> Result<(String, String), ClientError> {
        match self.recipe_request(Request::RecipeRuntimeInfo).await?.0 {
            Response::RecipeRuntimeInfo { pinned, local } => Ok((pinned, local)),
            other => Err(unexpected(other)),
        }
    }

    /// recipeCall (op 1003): runs `function` of recipe `name` (`version` -1: the
    /// latest) with MessagePack `args`, and returns its MessagePack reply. A call the
    /// server parks is awaited here until its completion notification arrives; if the
    /// connection closes first it fails with [`ClientError::ConnectionClosed`] (code
    /// ConnectionLoss). Failures are [`ClientError::Recipe`].
    pub async fn recipe_call(
        &self,
        name: &str,
        version: i32,
        function: &str,
        args: Vec<u8>,
    ) -> Result<Vec<u8>, ClientError> {
        let (resp, parked) = self
            .recipe_request(Request::RecipeCall {
                name: name.into(),
                version,
                function: function.into(),
                args,
            })
            .await?;
        match resp {
            Response::RecipeCall {
                state: recipe::CALL_COMPLETED,
                reply,
                ..
            } => Ok(reply),
            Response::RecipeCall {
                state: recipe::CALL_PARKED,
                call_id,
                ..
            } => {
                let parked = parked.ok_or(ClientError::Decode(DecodeError::Invalid(
                    "parked recipe call without a completion slot",
                )))?;
                let n = parked.await.unwrap_or(Err(ClientError::ConnectionClosed))?;
                tracing::trace!(call_id, err = n.err, "parked recipe call completed");
                completion_result(n.err, n.message, n.payload)
            }
            Response::RecipeCall { state, .. } => Err(ClientError::Decode(DecodeError::BadValue {
                field: "RecipeCallResponse.state",
                value: state as i64,
            })),
            other => Err(unexpected(other)),
        }
    }

    /// [`recipe_call`](Self::recipe_call) with typed arguments and reply: `args` is
    /// encoded with `rmp_serde::to_vec_named` (structs as maps, as the recipe SDK
    /// expects) and the reply decoded as `R`. Encoding or decoding failures are
    /// [`ClientError::MessagePack`].
    pub async fn recipe_call_typed<A, R>(
        &self,
        name: &str,
        version: i32,
        function: &str,
        args: &A,
    ) -> Result<R, ClientError>
    where
        A: serde::Serialize + ?Sized,
        R: serde::de::DeserializeOwned,
    {
        let args = rmp_serde::to_vec_named(args)
            .map_err(|e| ClientError::MessagePack(format!("encoding the arguments: {e}")))?;
        let reply = self.recipe_call(name, version, function, args).await?;
        rmp_serde::from_slice(&reply)
            .map_err(|e| ClientError::MessagePack(format!("decoding the reply: {e}")))
    }

    /// closeSession (op -11): ends the session (its ephemerals go) and waits for the
    /// reply. The server then closes the connection.
    pub async fn close(self) -> Result<(), ClientError> {
        self.call(Request::CloseSession).await?;
        Ok(())
    }
}

/// The result carried by a kind-1 recipe notification: `err` 0 is the reply.
fn completion_result(err: i32, message: String, payload: Vec<u8>) -> Result<Vec<u8>, ClientError> {
    if err == 0 {
        return Ok(payload);
    }
    match ErrorCode::from_i32(err) {
        Some(code) => Err(ClientError::Recipe { code, message }),
        None => Err(ClientError::Decode(DecodeError::BadValue {
            field: "RecipeNotification.err",
            value: err as i64,
        })),
    }
}

/// A create request as the Java client sends it: flags 4 (container) use the
/// createContainer opcode, anything else `kind`.
fn create_request(kind: CreateKind, path: &str, data: &[u8], acl: Vec<Acl>, flags: i32) -> Request {
    let kind = if flags == 4 {
        CreateKind::Container
    } else {
        kind
    };
    Request::Create(CreateOp {
        kind,
        path: path.into(),
        data: Some(data.to_vec()),
        acl,
        flags,
        ttl: -1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let o = ConnectOptions::default();
        assert_eq!(o.timeout_ms, 30000);
        assert_eq!(o.session_id, 0);
        assert_eq!(open_acl_unsafe()[0].perms, 31);
    }

    #[test]
    fn recipe_errors_show_name_and_message() {
        let e = ClientError::Recipe {
            code: ErrorCode::RecipeFailed,
            message: "unknown function x".into(),
        };
        assert_eq!(e.to_string(), "RecipeFailed: unknown function x");
        assert_eq!(e.code(), Some(ErrorCode::RecipeFailed));
        assert_eq!(e.recipe_message(), Some("unknown function x"));
        let e = ClientError::Recipe {
            code: ErrorCode::NoAuth,
            message: String::new(),
        };
        assert_eq!(e.to_string(), "NoAuth");
        assert_eq!(
            ClientError::ConnectionClosed.code(),
            Some(ErrorCode::ConnectionLoss)
        );
    }

    #[test]
    fn completions() {
        assert_eq!(
            completion_result(0, String::new(), vec![1]).unwrap(),
            vec![1]
        );
        match completion_result(-1106, "session closed".into(), vec![]) {
            Err(ClientError::Recipe { code, message }) => {
                assert_eq!(code, ErrorCode::RecipeCancelled);
                assert_eq!(message, "session closed");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            completion_result(-424242, String::new(), vec![]),
            Err(ClientError::Decode(_))
        ));
    }
}
