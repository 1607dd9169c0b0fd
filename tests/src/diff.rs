//! Differential testing: run one scripted sequence of ZooKeeper operations against
//! Apache ZooKeeper and against Wazoo, and compare what a client saw.
//!
//! A script is an async fn over a [`Runner`]. Every step it takes is recorded as one
//! normalized transcript line; watch notifications are recorded where they arrived
//! relative to the replies of the session that received them (exactly: the client
//! reports how many notifications preceded each reply). Normalization removes what
//! legitimately differs between two correct servers:
//!
//! - zxids (czxid, mzxid, pzxid) become labels `z1`, `z2`, ... by first appearance in
//!   the transcript (0 stays `0`), so equalities between them are still compared
//!   (czxid == mzxid after a create, all nodes of one multi share a zxid, a parent's
//!   pzxid is its newest child's czxid) but not absolute values;
//! - ctime and mtime become `T` (or `0` when zero);
//! - ephemeralOwner becomes `own` (the session that asked), `session:<name>` for another
//!   session of the script, `0`, `container`, `ttl:<ms>` or `unknown-session`
//!   (ZooKeeper itself reports 0 for container and TTL nodes: their owner markers are
//!   server-internal, so `container`/`ttl:` only show up when a server leaks them);
//! - children, getEphemerals and whoAmI lists are sorted;
//! - notification zxids are left out (ZooKeeper 3.8 sends -1, 3.9 the real zxid);
//! - the relative zxid of setWatches is the one the client saw, printed as a placeholder.
//!
//! Event ordering relies on ZooKeeper's guarantee that a notification triggered by a
//! write is queued on the watcher's connection before that write is acknowledged: a
//! script lets another session write, then calls [`Runner::barrier`] (an unrecorded
//! `exists /` on the watcher) to collect the notifications.
//!
//! Which servers are compared: the reference is always Apache ZooKeeper
//! ([`crate::zookeeper::ZooKeeperProcess`]); the candidate is Wazoo
//! ([`crate::wazoo_process::WazooProcess`], which needs `WAZOO_BIN`), or a second
//! ZooKeeper when `WAZOO_DIFF_CANDIDATE=zookeeper` (that run checks the normalization
//! itself: ZooKeeper against ZooKeeper must always match).
//!
//! `WAZOO_DIFF_SHOW=1` prints ZooKeeper's transcript to stderr; `WAZOO_DIFF_DUMP=DIR`
//! writes both transcripts of every script to `DIR/<script>.<server>.txt`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use wazoo_client::proto::consts::{
    event, state, CONTAINER_EPHEMERAL_OWNER, TTL_EPHEMERAL_OWNER_MASK,
};
use wazoo_client::proto::*;
use wazoo_client::{Client, ClientError, ConnectOptions, WatchedEvent};

/// How long one request may take before the script is declared stuck.
pub const OP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a whole script may take.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// A script: `|r| Box::pin(my_script(r))`.
pub type Script =
    for<'a> fn(&'a mut Runner) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;

/// Handle of one session of a script (an index into the runner's sessions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sess(usize);

struct Session {
    name: String,
    client: Option<Client>,
    events: Option<UnboundedReceiver<WatchedEvent>>,
    /// Notifications already taken from `events` (and recorded).
    events_taken: u64,
    session_id: i64,
    passwd: Vec<u8>,
}

/// Runs one script against one server, recording the transcript.
pub struct Runner {
    addr: String,
    sessions: Vec<Session>,
    lines: Vec<String>,
    zxid_labels: HashMap<i64, String>,
}

/// The server's answer to a recorded request (not `must_use`: scripts mostly ignore it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply(pub Result<Response, ErrorCode>);

/// The outcome of a recorded request: `Err` when the client got no reply at all
/// (connection closed, timeout), so `?` stops the script there.
pub type Outcome = Result<Reply, ClientError>;

impl Runner {
    pub fn new(addr: SocketAddr) -> Runner {
        Runner {
            addr: addr.to_string(),
            sessions: Vec::new(),
            lines: Vec::new(),
            zxid_labels: HashMap::new(),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn transcript(&self) -> &[String] {
        &self.lines
    }

    /// Records a free-form line (a heading, or something the script computed).
    pub fn note(&mut self, text: impl Into<String>) {
        self.lines.push(format!("# {}", text.into()));
    }

    fn record(&mut self, s: Sess, text: String) {
        let line = format!("{}: {}", self.sessions[s.0].name, text);
        self.lines.push(line);
    }

    pub fn client(&self, s: Sess) -> &Client {
        self.sessions[s.0]
            .client
            .as_ref()
            .expect("session was dropped")
    }

    pub fn session_id(&self, s: Sess) -> i64 {
        self.sessions[s.0].session_id
    }

    pub fn passwd(&self, s: Sess) -> Vec<u8> {
        self.sessions[s.0].passwd.clone()
    }

    /// Highest zxid the session's connection has seen (for setWatches).
    pub fn last_zxid(&self, s: Sess) -> i64 {
        self.sessions[s.0]
            .client
            .as_ref()
            .map(|c| c.last_zxid())
            .unwrap_or(0)
    }

    /// A new session with the default 30 s timeout.
    pub async fn connect(&mut self, name: &str) -> anyhow::Result<Sess> {
        self.connect_with(name, ConnectOptions::default())
            .await
            .map_err(|e| anyhow::anyhow!("session {name}: connect failed: {e}"))
    }

    /// Connects with explicit options (resume a session, bogus ids, short timeouts) and
    /// records the outcome: `connect -> ok timeout=<negotiated>` or the error. The
    /// session gets `name` in the transcript unless it resumes a session the script
    /// already knows, whose name it keeps for ephemeralOwner mapping.
    pub async fn connect_with(
        &mut self,
        name: &str,
        opts: ConnectOptions,
    ) -> Result<Sess, ClientError> {
        let what = if opts.session_id == 0 {
            let lz = if opts.last_zxid_seen == 0 {
                String::new()
            } else {
                " last_zxid_seen=<nonzero>".to_string()
            };
            format!("connect timeout={}{lz}", opts.timeout_ms)
        } else {
            let known = self
                .sessions
                .iter()
                .find(|s| s.session_id == opts.session_id)
                .map(|s| s.name.clone());
            let passwd = match self
                .sessions
                .iter()
                .find(|s| s.session_id == opts.session_id)
            {
                Some(s) if s.passwd == opts.passwd => "right",
                _ => "wrong",
            };
            let lz = if opts.last_zxid_seen == 0 {
                "0"
            } else {
                "<nonzero>"
            };
            format!(
                "resume session={} passwd={passwd} last_zxid_seen={lz} timeout={}",
                known.unwrap_or_else(|| "<unknown>".into()),
                opts.timeout_ms
            )
        };
        let r = match tokio::time::timeout(OP_TIMEOUT, Client::connect(&self.addr, opts)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            ))),
        };
        let s = Sess(self.sessions.len());
        match r {
            Ok(client) => {
                let events = client.take_events();
                let line = format!("{what} -> ok timeout={}", client.negotiated_timeout_ms());
                self.sessions.push(Session {
                    name: name.to_string(),
                    session_id: client.session_id(),
                    passwd: client.session_passwd().to_vec(),
                    client: Some(client),
                    events,
                    events_taken: 0,
                });
                self.record(s, line);
                Ok(s)
            }
            Err(e) => {
                self.lines
                    .push(format!("{name}: {what} -> {}", fmt_client_error(&e)));
                Err(e)
            }
        }
    }

    /// Resumes `old`'s session on a new connection (its id and password), as a client
    /// does after a connection loss. `old`'s connection should be dropped first.
    pub async fn resume(
        &mut self,
        name: &str,
        old: Sess,
        last_zxid_seen: i64,
    ) -> Result<Sess, ClientError> {
        let opts = ConnectOptions {
            session_id: self.session_id(old),
            passwd: self.passwd(old),
            last_zxid_seen,
            ..Default::default()
        };
        self.connect_with(name, opts).await
    }

    /// Sends `req` on session `s` and records it with its outcome, preceded by the
    /// notifications the session received before the reply.
    pub async fn op(&mut self, s: Sess, req: Request) -> Outcome {
        // multi and multiRead get one line per sub-operation (with its result), so a
        // difference in one result shows as one changed line.
        let sub_ops = sub_operations(&req);
        let shown = match (&req, &sub_ops) {
            (Request::Multi(_), Some(ops)) => format!("multi ({} ops)", ops.len()),
            (Request::MultiRead(_), Some(ops)) => format!("multiRead ({} ops)", ops.len()),
            _ => fmt_request(&req),
        };
        let Some(client) = self.sessions[s.0].client.clone() else {
            self.record(s, format!("{shown} -> (session was dropped)"));
            self.record_sub_ops(s, sub_ops, None);
            return Err(ClientError::ConnectionClosed);
        };
        let r = tokio::time::timeout(OP_TIMEOUT, client.request_ordered(req)).await;
        match r {
            Err(_) => {
                self.collect_events(s, None);
                self.record(s, format!("{shown} -> TIMEOUT after {OP_TIMEOUT:?}"));
                self.record_sub_ops(s, sub_ops, None);
                Err(ClientError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "request timed out",
                )))
            }
            Ok(Err(e)) => {
                // Connection gone: whatever notifications came before it are in the channel.
                self.collect_events(s, None);
                self.record(s, format!("{shown} -> {}", fmt_client_error(&e)));
                self.record_sub_ops(s, sub_ops, None);
                Err(e)
            }
            Ok(Ok((_zxid, result, events_before))) => {
                self.collect_events(s, Some(events_before));
                match (&result, sub_ops) {
                    (Ok(Response::Multi(results)), Some(ops)) => {
                        self.record(s, format!("{shown} -> ok ({} results)", results.len()));
                        let results = results.clone();
                        self.record_sub_ops(s, Some(ops), Some(&results));
                    }
                    (_, sub_ops) => {
                        let text = match &result {
                            Ok(resp) => self.fmt_response(s, resp),
                            Err(code) => fmt_code(*code),
                        };
                        self.record(s, format!("{shown} -> {text}"));
                        self.record_sub_ops(s, sub_ops, None);
                    }
                }
                Ok(Reply(result))
            }
        }
    }

    /// The lines under a multi/multiRead: `  #i <op> -> <result>`.
    fn record_sub_ops(&mut self, s: Sess, ops: Option<Vec<String>>, results: Option<&[OpResult]>) {
        let Some(ops) = ops else { return };
        let n = ops.len().max(results.map_or(0, |r| r.len()));
        for i in 0..n {
            let op = ops.get(i).map(String::as_str).unwrap_or("(no such op)");
            let line = match results {
                None => format!("  #{i} {op}"),
                Some(rs) => match rs.get(i) {
                    Some(r) => {
                        let r = self.fmt_op_result(s, r);
                        format!("  #{i} {op} -> {r}")
                    }
                    None => format!("  #{i} {op} -> (no result)"),
                },
            };
            self.record(s, line);
        }
    }

    /// Records the session's notifications that have arrived, up to `upto` in total
    /// (all of those already in the channel when `None`).
    fn collect_events(&mut self, s: Sess, upto: Option<u64>) {
        loop {
            let sess = &mut self.sessions[s.0];
            if upto.is_some_and(|n| sess.events_taken >= n) {
                return;
            }
            let Some(rx) = sess.events.as_mut() else {
                return;
            };
            match rx.try_recv() {
                Ok(ev) => {
                    sess.events_taken += 1;
                    let line = fmt_event(&ev);
                    self.record(s, line);
                }
                Err(_) => return,
            }
        }
    }

    /// Collects the notifications sent to `s` so far: an unrecorded `exists /` whose
    /// reply comes after everything the server queued for the session before it.
    pub async fn barrier(&mut self, s: Sess) {
        let Some(client) = self.sessions[s.0].client.clone() else {
            return;
        };
        match tokio::time::timeout(
            OP_TIMEOUT,
            client.request_ordered(Request::Exists(PathWatchRequest {
                path: "/".into(),
                watch: false,
            })),
        )
        .await
        {
            Ok(Ok((_, _, n))) => self.collect_events(s, Some(n)),
            Ok(Err(e)) => {
                self.collect_events(s, None);
                self.record(s, format!("(barrier) -> {}", fmt_client_error(&e)));
            }
            Err(_) => self.record(s, "(barrier) -> TIMEOUT".into()),
        }
    }

    /// Waits (up to `limit`) for the session's next notification and records it, or
    /// records that none came. For events caused by the server on its own (session
    /// expiry), where there is no write to wait for.
    pub async fn wait_event(&mut self, s: Sess, limit: Duration) -> Option<WatchedEvent> {
        let sess = &mut self.sessions[s.0];
        let Some(rx) = sess.events.as_mut() else {
            self.record(s, "wait for event -> (no event channel)".into());
            return None;
        };
        match tokio::time::timeout(limit, rx.recv()).await {
            Ok(Some(ev)) => {
                sess.events_taken += 1;
                let line = fmt_event(&ev);
                self.record(s, line);
                Some(ev)
            }
            Ok(None) => {
                self.record(s, "wait for event -> connection closed".into());
                None
            }
            Err(_) => {
                self.record(s, format!("wait for event -> none within {limit:?}"));
                None
            }
        }
    }

    /// Collects the notifications sent to `s` so far (as [`barrier`](Self::barrier))
    /// but records them sorted: for one transaction that fires several events whose
    /// relative order ZooKeeper does not define (closeSession deleting many ephemerals).
    pub async fn barrier_unordered(&mut self, s: Sess) {
        let start = self.lines.len();
        self.barrier(s).await;
        let prefix = format!("{}: event ", self.sessions[s.0].name);
        let end = self.lines[start..]
            .iter()
            .position(|l| !l.starts_with(&prefix))
            .map(|i| start + i)
            .unwrap_or(self.lines.len());
        self.lines[start..end].sort();
    }

    /// Drops the session's connection without closeSession (the session lives on
    /// until the server expires it).
    pub fn drop_connection(&mut self, s: Sess) {
        self.collect_events(s, None);
        self.sessions[s.0].client = None;
        self.sessions[s.0].events = None;
        self.record(s, "drop connection (no closeSession)".into());
    }

    /// closeSession, recorded.
    pub async fn close(&mut self, s: Sess) -> Outcome {
        let r = self.op(s, Request::CloseSession).await;
        self.sessions[s.0].client = None;
        self.sessions[s.0].events = None;
        r
    }

    /// Records whether the session's connection is still open, after giving the server
    /// a moment to close it (used after AuthFailed).
    pub async fn expect_closed(&mut self, s: Sess) {
        let Some(client) = self.sessions[s.0].client.clone() else {
            return;
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !client.is_closed() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.collect_events(s, None);
        let text = if client.is_closed() {
            "connection closed by server"
        } else {
            "connection still open after 5s"
        };
        self.record(s, text.into());
    }

    /// Flushes every open session's pending notifications into the transcript.
    pub async fn finish(&mut self) {
        for i in 0..self.sessions.len() {
            if self.sessions[i]
                .client
                .as_ref()
                .is_some_and(|c| !c.is_closed())
            {
                self.barrier(Sess(i)).await;
            } else {
                self.collect_events(Sess(i), None);
            }
        }
    }

    // ------------------------------------------------------------------ formatting

    fn zxid(&mut self, z: i64) -> String {
        if z == 0 {
            return "0".into();
        }
        let n = self.zxid_labels.len() + 1;
        self.zxid_labels
            .entry(z)
            .or_insert_with(|| format!("z{n}"))
            .clone()
    }

    fn owner(&self, s: Sess, owner: i64) -> String {
        if owner == 0 {
            "0".into()
        } else if owner == CONTAINER_EPHEMERAL_OWNER {
            "container".into()
        } else if owner & TTL_EPHEMERAL_OWNER_MASK == TTL_EPHEMERAL_OWNER_MASK {
            format!("ttl:{}", owner & 0x00ff_ffff_ffff)
        } else if owner == self.sessions[s.0].session_id {
            "own".into()
        } else if let Some(o) = self.sessions.iter().find(|x| x.session_id == owner) {
            format!("session:{}", o.name)
        } else {
            "unknown-session".into()
        }
    }

    fn fmt_stat(&mut self, s: Sess, st: &Stat) -> String {
        let t = |v: i64| if v == 0 { "0" } else { "T" };
        format!(
            "{{czxid={} mzxid={} pzxid={} ctime={} mtime={} version={} cversion={} aversion={} owner={} dataLength={} numChildren={}}}",
            self.zxid(st.czxid),
            self.zxid(st.mzxid),
            self.zxid(st.pzxid),
            t(st.ctime),
            t(st.mtime),
            st.version,
            st.cversion,
            st.aversion,
            self.owner(s, st.ephemeral_owner),
            st.data_length,
            st.num_children
        )
    }

    fn fmt_response(&mut self, s: Sess, r: &Response) -> String {
        match r {
            Response::Empty => "ok".into(),
            Response::Create { path } => format!("ok path={}", esc(path)),
            Response::Create2 { path, stat } => {
                format!("ok path={path} stat={}", self.fmt_stat(s, stat))
            }
            Response::Stat(st) => format!("ok stat={}", self.fmt_stat(s, st)),
            Response::GetData { data, stat } => format!(
                "ok data={} stat={}",
                fmt_data(data.as_deref()),
                self.fmt_stat(s, stat)
            ),
            Response::GetAcl { acl, stat } => {
                format!("ok acl={} stat={}", fmt_acl(acl), self.fmt_stat(s, stat))
            }
            Response::Children(c) => format!("ok children={}", fmt_sorted(c)),
            Response::Children2 { children, stat } => format!(
                "ok children={} stat={}",
                fmt_sorted(children),
                self.fmt_stat(s, stat)
            ),
            Response::Path(p) => format!("ok path={}", esc(p)),
            Response::Multi(results) => {
                // Only for a multi reply to something other than multi/multiRead.
                let parts: Vec<String> = results.iter().map(|r| self.fmt_op_result(s, r)).collect();
                format!("ok results=[{}]", parts.join(", "))
            }
            Response::Ephemerals(e) => format!("ok ephemerals={}", fmt_sorted(e)),
            Response::AllChildrenNumber(n) => format!("ok total={n}"),
            Response::AddWatch => "ok".into(),
            Response::WhoAmI(infos) => {
                let mut v: Vec<String> = infos
                    .iter()
                    .map(|i| format!("{}:{}", i.auth_scheme, i.user))
                    .collect();
                v.sort();
                format!("ok clientInfo=[{}]", v.join(", "))
            }
            Response::Sasl(t) => format!("ok token={}", fmt_data(t.as_deref())),
            Response::RecipeUploaded {
                name,
                version,
                sha256,
            } => format!("ok recipe={name} version={version} sha256={sha256}"),
            Response::RecipeList(infos) => {
                let v: Vec<String> = infos
                    .iter()
                    .map(|i| format!("{}@{}:{}", i.name, i.version, i.sha256))
                    .collect();
                format!("ok recipes=[{}]", v.join(", "))
            }
            Response::RecipeCall {
                state,
                call_id,
                reply,
            } => format!(
                "ok state={state} callId={call_id} reply={}",
                fmt_data(Some(reply))
            ),
            Response::RecipeRuntime { profile } => format!("ok profile={profile}"),
            Response::RecipeRuntimeInfo { pinned, local } => {
                format!("ok pinned={pinned:?} local={local:?}")
            }
            Response::RecipeFailure { code, message } => {
                format!("{} message={message:?}", fmt_code(*code))
            }
        }
    }

    fn fmt_op_result(&mut self, s: Sess, r: &OpResult) -> String {
        match r {
            OpResult::Create { path } => format!("create path={path}"),
            OpResult::Create2 { path, stat } => {
                format!("create2 path={path} stat={}", self.fmt_stat(s, stat))
            }
            OpResult::Delete => "delete".into(),
            OpResult::SetData { stat } => format!("setData stat={}", self.fmt_stat(s, stat)),
            OpResult::Check => "check".into(),
            OpResult::GetData { data, stat } => format!(
                "getData data={} stat={}",
                fmt_data(data.as_deref()),
                self.fmt_stat(s, stat)
            ),
            OpResult::GetChildren { children } => {
                format!("getChildren children={}", fmt_sorted(children))
            }
            OpResult::Error(c) => format!("error {}", fmt_code(*c)),
        }
    }
}

fn fmt_write_op(o: &WriteOp) -> String {
    match o {
        WriteOp::Create(c) => fmt_create(c),
        WriteOp::Delete(d) => format!("delete {} v={}", esc(&d.path), d.version),
        WriteOp::SetData(x) => format!(
            "setData {} {} v={}",
            esc(&x.path),
            fmt_data(x.data.as_deref()),
            x.version
        ),
        WriteOp::Check(c) => format!("check {} v={}", esc(&c.path), c.version),
    }
}

fn fmt_create(c: &CreateOp) -> String {
    let op = match c.kind {
        CreateKind::Create => "create",
        CreateKind::Create2 => "create2",
        CreateKind::Container => "createContainer",
        CreateKind::Ttl => "createTTL",
    };
    let ttl = if c.kind == CreateKind::Ttl {
        format!(" ttl={}", c.ttl)
    } else {
        String::new()
    };
    format!(
        "{op} {} {} acl={} flags={}{ttl}",
        esc(&c.path),
        fmt_data(c.data.as_deref()),
        fmt_acl(&c.acl),
        c.flags
    )
}

/// A path as shown in a transcript: as is, unless it holds control or other
/// invisible characters, which are escaped (`"/a\u{0}"`).
fn esc(path: &str) -> String {
    let invisible = |c: char| {
        c.is_control()
            || ('\u{e000}'..='\u{f8ff}').contains(&c)
            || ('\u{fff0}'..='\u{ffff}').contains(&c)
    };
    if !path.is_empty() && !path.chars().any(invisible) {
        path.to_string()
    } else {
        format!("{:?}", path)
    }
}

/// The sub-operations of a multi or multiRead, formatted.
fn sub_operations(req: &Request) -> Option<Vec<String>> {
    let w = |p: &PathWatchRequest| if p.watch { " watch" } else { "" };
    match req {
        Request::Multi(ops) => Some(ops.iter().map(fmt_write_op).collect()),
        Request::MultiRead(ops) => Some(
            ops.iter()
                .map(|o| match o {
                    ReadOp::GetChildren(p) => format!("getChildren {}{}", esc(&p.path), w(p)),
                    ReadOp::GetData(p) => format!("getData {}{}", esc(&p.path), w(p)),
                })
                .collect(),
        ),
        _ => None,
    }
}

/// One request, as shown in a transcript.
pub fn fmt_request(req: &Request) -> String {
    let w = |p: &PathWatchRequest| if p.watch { " watch" } else { "" };
    match req {
        Request::Create(c) => fmt_create(c),
        Request::Delete(d) => format!("delete {} v={}", esc(&d.path), d.version),
        Request::Exists(p) => format!("exists {}{}", esc(&p.path), w(p)),
        Request::GetData(p) => format!("getData {}{}", esc(&p.path), w(p)),
        Request::SetData(x) => format!(
            "setData {} {} v={}",
            esc(&x.path),
            fmt_data(x.data.as_deref()),
            x.version
        ),
        Request::GetAcl(p) => format!("getACL {}", esc(&p.path)),
        Request::SetAcl(x) => format!(
            "setACL {} {} v={}",
            esc(&x.path),
            fmt_acl(&x.acl),
            x.version
        ),
        Request::GetChildren(p) => format!("getChildren {}{}", esc(&p.path), w(p)),
        Request::GetChildren2(p) => format!("getChildren2 {}{}", esc(&p.path), w(p)),
        Request::Sync(p) => format!("sync {}", esc(&p.path)),
        Request::Ping => "ping".into(),
        Request::Check(c) => format!("check {} v={}", esc(&c.path), c.version),
        Request::Multi(ops) => format!(
            "multi [{}]",
            ops.iter().map(fmt_write_op).collect::<Vec<_>>().join(", ")
        ),
        Request::MultiRead(ops) => format!(
            "multiRead [{}]",
            ops.iter()
                .map(|o| match o {
                    ReadOp::GetChildren(p) => format!("getChildren {}{}", esc(&p.path), w(p)),
                    ReadOp::GetData(p) => format!("getData {}{}", esc(&p.path), w(p)),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Request::Reconfig(r) => format!(
            "reconfig joining={:?} leaving={:?} members={:?} config={}",
            r.joining_servers, r.leaving_servers, r.new_members, r.cur_config_id
        ),
        Request::CheckWatches(x) => format!(
            "checkWatches {} type={}",
            esc(&x.path),
            watcher_type_name(x.watcher_type)
        ),
        Request::RemoveWatches(x) => format!(
            "removeWatches {} type={}",
            esc(&x.path),
            watcher_type_name(x.watcher_type)
        ),
        Request::Auth(a) => format!("auth scheme={} {}", a.scheme, fmt_data(a.auth.as_deref())),
        Request::SetWatches { v2, watches: x } => format!(
            "{} rel={} data={:?} exist={:?} child={:?}{}",
            if *v2 { "setWatches2" } else { "setWatches" },
            if x.relative_zxid == 0 {
                "0"
            } else {
                "<nonzero>"
            },
            x.data_watches,
            x.exist_watches,
            x.child_watches,
            if *v2 {
                format!(
                    " persistent={:?} recursive={:?}",
                    x.persistent_watches, x.persistent_recursive_watches
                )
            } else {
                String::new()
            }
        ),
        Request::Sasl(t) => format!("sasl {}", fmt_data(t.as_deref())),
        Request::GetEphemerals(p) => format!("getEphemerals {:?}", p.path),
        Request::GetAllChildrenNumber(p) => format!("getAllChildrenNumber {}", esc(&p.path)),
        Request::AddWatch(a) => format!(
            "addWatch {} mode={}",
            esc(&a.path),
            if a.mode == 0 {
                "persistent".into()
            } else if a.mode == 1 {
                "persistentRecursive".into()
            } else {
                a.mode.to_string()
            }
        ),
        Request::WhoAmI => "whoAmI".into(),
        Request::CloseSession => "closeSession".into(),
        Request::RecipeUpload { name, module } => {
            format!("recipeUpload {name:?} ({} bytes)", module.len())
        }
        Request::RecipeList { name } => format!("recipeList {name:?}"),
        Request::RecipeDelete { name, version } => format!("recipeDelete {name:?} v{version}"),
        Request::RecipeCall {
            name,
            version,
            function,
            args,
            flags,
        } => format!(
            "recipeCall {name:?} v{version} {function:?} args={} flags={flags}",
            fmt_data(Some(args))
        ),
        Request::RecipeAdoptRuntime => "recipeAdoptRuntime".into(),
        Request::RecipeRuntimeInfo => "recipeRuntimeInfo".into(),
    }
}

fn watcher_type_name(t: i32) -> String {
    match t {
        1 => "children".into(),
        2 => "data".into(),
        3 => "any".into(),
        4 => "persistent".into(),
        5 => "persistentRecursive".into(),
        x => x.to_string(),
    }
}

fn fmt_code(c: ErrorCode) -> String {
    format!("err {}({})", c.name(), c.code())
}

fn fmt_client_error(e: &ClientError) -> String {
    match e {
        ClientError::Zk(c) => fmt_code(*c),
        ClientError::SessionRefused => "SessionRefused".into(),
        ClientError::ConnectionClosed => "ConnectionClosed".into(),
        ClientError::Io(e) => format!("io error ({:?})", e.kind()),
        ClientError::Decode(d) => format!("decode error ({d})"),
        ClientError::Recipe { code, message } => {
            format!("{} message={message:?}", fmt_code(*code))
        }
        ClientError::MessagePack(m) => format!("msgpack error ({m})"),
    }
}

fn fmt_data(d: Option<&[u8]>) -> String {
    match d {
        None => "null".into(),
        Some(b) => format!("{:?}", String::from_utf8_lossy(b)),
    }
}

fn fmt_acl(acl: &[Acl]) -> String {
    let v: Vec<String> = acl
        .iter()
        .map(|a| format!("{}:{}={}", a.id.scheme, a.id.id, a.perms))
        .collect();
    format!("[{}]", v.join(", "))
}

fn fmt_sorted(v: &[String]) -> String {
    let mut v = v.to_vec();
    v.sort();
    format!("[{}]", v.join(", "))
}

fn fmt_event(ev: &WatchedEvent) -> String {
    let t = match ev.event_type {
        event::NONE => "None",
        event::NODE_CREATED => "NodeCreated",
        event::NODE_DELETED => "NodeDeleted",
        event::NODE_DATA_CHANGED => "NodeDataChanged",
        event::NODE_CHILDREN_CHANGED => "NodeChildrenChanged",
        event::DATA_WATCH_REMOVED => "DataWatchRemoved",
        event::CHILD_WATCH_REMOVED => "ChildWatchRemoved",
        event::PERSISTENT_WATCH_REMOVED => "PersistentWatchRemoved",
        _ => "?",
    };
    let st = match ev.state {
        state::SYNC_CONNECTED => "SyncConnected".to_string(),
        state::DISCONNECTED => "Disconnected".into(),
        state::EXPIRED => "Expired".into(),
        state::AUTH_FAILED => "AuthFailed".into(),
        state::CLOSED => "Closed".into(),
        x => x.to_string(),
    };
    format!("event {t}({}) {} state={st}", ev.event_type, esc(&ev.path))
}

// ---------------------------------------------------------------------- requests

/// Constructors for the requests scripts send (data as `&str`; `None` where a null
/// buffer matters is written out by hand).
pub mod req {
    use super::*;
    use wazoo_client::open_acl_unsafe;

    pub fn create_op(
        kind: CreateKind,
        path: &str,
        data: &str,
        acl: Vec<Acl>,
        flags: i32,
        ttl: i64,
    ) -> CreateOp {
        CreateOp {
            kind,
            path: path.into(),
            data: Some(data.as_bytes().to_vec()),
            acl,
            flags,
            ttl,
        }
    }
    pub fn create(path: &str, data: &str, flags: i32) -> Request {
        Request::Create(create_op(
            CreateKind::Create,
            path,
            data,
            open_acl_unsafe(),
            flags,
            -1,
        ))
    }
    pub fn create_acl(path: &str, data: &str, acl: Vec<Acl>, flags: i32) -> Request {
        Request::Create(create_op(CreateKind::Create, path, data, acl, flags, -1))
    }
    pub fn create2(path: &str, data: &str, flags: i32) -> Request {
        Request::Create(create_op(
            CreateKind::Create2,
            path,
            data,
            open_acl_unsafe(),
            flags,
            -1,
        ))
    }
    pub fn create_container(path: &str, data: &str) -> Request {
        Request::Create(create_op(
            CreateKind::Container,
            path,
            data,
            open_acl_unsafe(),
            4,
            -1,
        ))
    }
    pub fn create_ttl(path: &str, data: &str, flags: i32, ttl: i64) -> Request {
        Request::Create(create_op(
            CreateKind::Ttl,
            path,
            data,
            open_acl_unsafe(),
            flags,
            ttl,
        ))
    }
    pub fn delete(path: &str, version: i32) -> Request {
        Request::Delete(DeleteRequest {
            path: path.into(),
            version,
        })
    }
    pub fn exists(path: &str, watch: bool) -> Request {
        Request::Exists(PathWatchRequest {
            path: path.into(),
            watch,
        })
    }
    pub fn get_data(path: &str, watch: bool) -> Request {
        Request::GetData(PathWatchRequest {
            path: path.into(),
            watch,
        })
    }
    pub fn set_data(path: &str, data: &str, version: i32) -> Request {
        Request::SetData(SetDataRequest {
            path: path.into(),
            data: Some(data.as_bytes().to_vec()),
            version,
        })
    }
    pub fn get_acl(path: &str) -> Request {
        Request::GetAcl(PathRequest { path: path.into() })
    }
    pub fn set_acl(path: &str, acl: Vec<Acl>, version: i32) -> Request {
        Request::SetAcl(SetAclRequest {
            path: path.into(),
            acl,
            version,
        })
    }
    pub fn get_children(path: &str, watch: bool) -> Request {
        Request::GetChildren(PathWatchRequest {
            path: path.into(),
            watch,
        })
    }
    pub fn get_children2(path: &str, watch: bool) -> Request {
        Request::GetChildren2(PathWatchRequest {
            path: path.into(),
            watch,
        })
    }
    pub fn sync(path: &str) -> Request {
        Request::Sync(PathRequest { path: path.into() })
    }
    pub fn check(path: &str, version: i32) -> Request {
        Request::Check(CheckVersionRequest {
            path: path.into(),
            version,
        })
    }
    pub fn get_all_children_number(path: &str) -> Request {
        Request::GetAllChildrenNumber(PathRequest { path: path.into() })
    }
    pub fn get_ephemerals(prefix: &str) -> Request {
        Request::GetEphemerals(PathRequest {
            path: prefix.into(),
        })
    }
    pub fn add_watch(path: &str, mode: i32) -> Request {
        Request::AddWatch(AddWatchRequest {
            path: path.into(),
            mode,
        })
    }
    pub fn check_watches(path: &str, watcher_type: i32) -> Request {
        Request::CheckWatches(WatchesRequest {
            path: path.into(),
            watcher_type,
        })
    }
    pub fn remove_watches(path: &str, watcher_type: i32) -> Request {
        Request::RemoveWatches(WatchesRequest {
            path: path.into(),
            watcher_type,
        })
    }
    pub fn auth(scheme: &str, auth: &str) -> Request {
        Request::Auth(AuthPacket {
            auth_type: 0,
            scheme: scheme.into(),
            auth: Some(auth.as_bytes().to_vec()),
        })
    }
    pub fn multi(ops: Vec<WriteOp>) -> Request {
        Request::Multi(ops)
    }
    pub fn multi_read(ops: Vec<ReadOp>) -> Request {
        Request::MultiRead(ops)
    }
    pub fn set_watches(
        relative_zxid: i64,
        data: &[&str],
        exist: &[&str],
        child: &[&str],
    ) -> Request {
        set_watches2_impl(false, relative_zxid, data, exist, child, &[], &[])
    }
    pub fn set_watches2(
        relative_zxid: i64,
        data: &[&str],
        exist: &[&str],
        child: &[&str],
        persistent: &[&str],
        recursive: &[&str],
    ) -> Request {
        set_watches2_impl(
            true,
            relative_zxid,
            data,
            exist,
            child,
            persistent,
            recursive,
        )
    }
    fn set_watches2_impl(
        v2: bool,
        relative_zxid: i64,
        data: &[&str],
        exist: &[&str],
        child: &[&str],
        persistent: &[&str],
        recursive: &[&str],
    ) -> Request {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Request::SetWatches {
            v2,
            watches: SetWatches2 {
                relative_zxid,
                data_watches: v(data),
                exist_watches: v(exist),
                child_watches: v(child),
                persistent_watches: v(persistent),
                persistent_recursive_watches: v(recursive),
            },
        }
    }

    // multi sub-operations
    pub fn op_create(path: &str, data: &str, flags: i32) -> WriteOp {
        WriteOp::Create(create_op(
            CreateKind::Create,
            path,
            data,
            open_acl_unsafe(),
            flags,
            -1,
        ))
    }
    pub fn op_create2(path: &str, data: &str, flags: i32) -> WriteOp {
        WriteOp::Create(create_op(
            CreateKind::Create2,
            path,
            data,
            open_acl_unsafe(),
            flags,
            -1,
        ))
    }
    pub fn op_create_container(path: &str, data: &str) -> WriteOp {
        WriteOp::Create(create_op(
            CreateKind::Container,
            path,
            data,
            open_acl_unsafe(),
            4,
            -1,
        ))
    }
    pub fn op_create_ttl(path: &str, data: &str, flags: i32, ttl: i64) -> WriteOp {
        WriteOp::Create(create_op(
            CreateKind::Ttl,
            path,
            data,
            open_acl_unsafe(),
            flags,
            ttl,
        ))
    }
    pub fn op_delete(path: &str, version: i32) -> WriteOp {
        WriteOp::Delete(DeleteRequest {
            path: path.into(),
            version,
        })
    }
    pub fn op_set_data(path: &str, data: &str, version: i32) -> WriteOp {
        WriteOp::SetData(SetDataRequest {
            path: path.into(),
            data: Some(data.as_bytes().to_vec()),
            version,
        })
    }
    pub fn op_check(path: &str, version: i32) -> WriteOp {
        WriteOp::Check(CheckVersionRequest {
            path: path.into(),
            version,
        })
    }
    pub fn read_data(path: &str, watch: bool) -> ReadOp {
        ReadOp::GetData(PathWatchRequest {
            path: path.into(),
            watch,
        })
    }
    pub fn read_children(path: &str, watch: bool) -> ReadOp {
        ReadOp::GetChildren(PathWatchRequest {
            path: path.into(),
            watch,
        })
    }

    // ACLs
    pub fn acl(perms: i32, scheme: &str, id: &str) -> Acl {
        Acl {
            perms,
            id: Id {
                scheme: scheme.into(),
                id: id.into(),
            },
        }
    }
    pub fn world(perms: i32) -> Vec<Acl> {
        vec![acl(perms, "world", "anyone")]
    }
}

// ---------------------------------------------------------------------- running

/// Runs `script` against the server at `addr` and returns its transcript. A script
/// that fails or times out still returns what it recorded, ending with a line that
/// says why it stopped.
pub async fn run_script(addr: SocketAddr, script: Script) -> Vec<String> {
    let mut runner = Runner::new(addr);
    let outcome = tokio::time::timeout(SCRIPT_TIMEOUT, script(&mut runner)).await;
    match outcome {
        Ok(Ok(())) => runner.finish().await,
        Ok(Err(e)) => runner.note(format!("script stopped: {e:#}")),
        Err(_) => runner.note(format!("script timed out after {SCRIPT_TIMEOUT:?}")),
    }
    runner.lines
}

/// Lines of unchanged context shown around each difference.
const DIFF_CONTEXT: usize = 4;

/// A line diff of two transcripts (longest common subsequence) with a few lines of
/// context around each change, `None` if they are equal. Line numbers are the left
/// transcript's.
pub fn diff_transcripts(
    left_name: &str,
    left: &[String],
    right_name: &str,
    right: &[String],
) -> Option<String> {
    if left == right {
        return None;
    }
    let (n, m) = (left.len(), right.len());
    // lcs[i][j] = LCS length of left[i..] and right[j..]
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if left[i] == right[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // (marker, left line number, text)
    let mut ops: Vec<(char, usize, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && left[i] == right[j] {
            ops.push((' ', i + 1, &left[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', i + 1, &left[i]));
            i += 1;
        } else {
            ops.push(('+', i + 1, &right[j]));
            j += 1;
        }
    }
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.0 != ' ')
        .map(|(k, _)| k)
        .collect();
    let near = |k: usize| changed.iter().any(|&c| c.abs_diff(k) <= DIFF_CONTEXT);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "--- {left_name} ({n} lines)\n+++ {right_name} ({m} lines)"
    );
    let mut skipped = false;
    for (k, (mark, line, text)) in ops.iter().enumerate() {
        if near(k) {
            if skipped || k == 0 {
                let _ = writeln!(out, "@@ line {line} @@");
            }
            skipped = false;
            let _ = writeln!(out, "{mark} {text}");
        } else {
            skipped = true;
        }
    }
    Some(out)
}

/// One server under test, kept alive while its transcript is produced.
pub trait TestServer {
    fn client_addr(&self) -> SocketAddr;
}

/// Runs `script` on the reference ZooKeeper and on the candidate (Wazoo, or a second
/// ZooKeeper with `WAZOO_DIFF_CANDIDATE=zookeeper`) and panics with a readable diff if
/// the transcripts differ. Also panics if either server cannot be started (a missing
/// `WAZOO_BIN` included): a differential test never silently passes.
pub async fn check(name: &str, script: Script) {
    let reference = servers::start_zookeeper()
        .await
        .unwrap_or_else(|e| panic!("{name}: cannot start Apache ZooKeeper: {e:#}"));
    let zk_lines = run_script(reference.client_addr(), script).await;
    drop(reference);

    let candidate_kind = std::env::var("WAZOO_DIFF_CANDIDATE").unwrap_or_else(|_| "wazoo".into());
    let (cand_name, candidate): (&str, Box<dyn TestServer>) = match candidate_kind.as_str() {
        "zookeeper" => (
            "second Apache ZooKeeper",
            servers::start_zookeeper()
                .await
                .unwrap_or_else(|e| panic!("{name}: cannot start a second ZooKeeper: {e:#}")),
        ),
        "wazoo" => (
            "Wazoo",
            servers::start_wazoo()
                .await
                .unwrap_or_else(|e| panic!("{name}: cannot start Wazoo: {e:#}")),
        ),
        "wazoo-ensemble" => (
            "a follower of a 3-server Wazoo ensemble",
            servers::start_wazoo_ensemble()
                .await
                .unwrap_or_else(|e| panic!("{name}: cannot start a Wazoo ensemble: {e:#}")),
        ),
        other => panic!(
            "WAZOO_DIFF_CANDIDATE={other}: expected `wazoo` (default), `wazoo-ensemble` or `zookeeper`"
        ),
    };
    let cand_lines = run_script(candidate.client_addr(), script).await;
    drop(candidate);

    if std::env::var_os("WAZOO_DIFF_SHOW").is_some() {
        eprintln!(
            "==== {name}: Apache ZooKeeper transcript ====\n{}",
            zk_lines.join("\n")
        );
    }
    if let Some(dir) = std::env::var_os("WAZOO_DIFF_DUMP") {
        let dir = std::path::PathBuf::from(dir);
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(
            dir.join(format!("{name}.zookeeper.txt")),
            zk_lines.join("\n") + "\n",
        );
        let _ = std::fs::write(
            dir.join(format!("{name}.{candidate_kind}.txt")),
            cand_lines.join("\n") + "\n",
        );
    }
    if let Some(d) = diff_transcripts("Apache ZooKeeper", &zk_lines, cand_name, &cand_lines) {
        panic!("{name}: transcripts differ (- ZooKeeper, + {cand_name}):\n{d}");
    }
}

/// Starting the servers (through the harness's process wrappers).
pub mod servers {
    use super::TestServer;
    use std::net::SocketAddr;

    impl TestServer for crate::zookeeper::ZooKeeperProcess {
        fn client_addr(&self) -> SocketAddr {
            self.addr
        }
    }

    impl TestServer for crate::wazoo_process::WazooProcess {
        fn client_addr(&self) -> SocketAddr {
            self.addr
        }
    }

    /// A 3-voter ensemble with the reference settings; the transcript's client talks to
    /// one of the followers.
    struct FollowerOf {
        ensemble: crate::ensemble::Ensemble,
        follower: usize,
    }

    impl TestServer for FollowerOf {
        fn client_addr(&self) -> SocketAddr {
            self.ensemble.members[self.follower]
                .process
                .as_ref()
                .map(|p| p.addr)
                .expect("the follower runs")
        }
    }

    pub async fn start_wazoo_ensemble() -> anyhow::Result<Box<dyn TestServer>> {
        let f = tokio::task::spawn_blocking(|| -> anyhow::Result<FollowerOf> {
            let ensemble =
                crate::ensemble::Ensemble::start_plain(3, 0, crate::ensemble::REFERENCE_SETTINGS)?;
            let leader = ensemble.wait_leader(std::time::Duration::from_secs(60))?;
            let follower = (leader + 1) % 3;
            Ok(FollowerOf { ensemble, follower })
        })
        .await??;
        Ok(Box::new(f))
    }

    pub async fn start_zookeeper() -> anyhow::Result<Box<dyn TestServer>> {
        let zk = tokio::task::spawn_blocking(crate::zookeeper::ZooKeeperProcess::start).await??;
        Ok(Box::new(zk))
    }

    pub async fn start_wazoo() -> anyhow::Result<Box<dyn TestServer>> {
        anyhow::ensure!(
            std::env::var_os("WAZOO_BIN").is_some(),
            "WAZOO_BIN is not set: build the server (cargo build -p wazoo) and set WAZOO_BIN to the binary, or set \
             WAZOO_DIFF_CANDIDATE=zookeeper to check the scripts against a second ZooKeeper"
        );
        let w =
            tokio::task::spawn_blocking(crate::wazoo_process::WazooProcess::start_temp).await??;
        Ok(Box::new(w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_shows_changed_lines_with_context() {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a = v(&["x", "y", "z"]);
        assert_eq!(diff_transcripts("a", &a, "b", &a), None);
        let d = diff_transcripts("a", &a, "b", &v(&["x", "Y", "z", "w"])).unwrap();
        assert_eq!(
            d,
            "--- a (3 lines)\n+++ b (4 lines)\n@@ line 1 @@\n  x\n- y\n+ Y\n  z\n+ w\n"
        );
        let long: Vec<String> = (0..30).map(|i| i.to_string()).collect();
        let mut changed = long.clone();
        changed[20] = "twenty".into();
        let d = diff_transcripts("a", &long, "b", &changed).unwrap();
        assert!(
            d.starts_with("--- a (30 lines)\n+++ b (30 lines)\n@@ line 17 @@\n  16\n"),
            "{d}"
        );
        assert!(d.contains("- 20\n+ twenty\n  21\n"), "{d}");
        assert!(!d.contains("  15\n") && !d.contains("  25\n"), "{d}");
    }
}
