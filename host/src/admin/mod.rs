//! The admin HTTP server: ZooKeeper's AdminServer on its own port
//! (`admin.serverAddress`:`admin.serverPort`, `admin.enableServer`), plus Prometheus
//! metrics and health probes.
//!
//! | endpoint | answer |
//! | --- | --- |
//! | `GET /metrics` | Prometheus text format 0.0.4, metric names `wazoo_*` |
//! | `GET /health` | 200 `ok` while the process serves (liveness) |
//! | `GET /ready` | 200 when raft has a leader and this server applied everything it knows committed, else 503 with the reason |
//! | `GET /commands` | JSON list of the commands below |
//! | `GET /commands/<name>` | JSON like ZooKeeper's AdminServer: `{"command": .., "error": null, ...}`; 404 with an `error` for an unknown name |
//!
//! Commands: the four-letter words' data (`ruok`, `srvr`, `stat`, `mntr`, `conf`,
//! `cons`, `envi`, `isro`, `wchs`, `wchc`, `wchp`, `dump`, `dirs`, rendered from the same
//! [`crate::server::four_letter::Report`] as the client-port text, and also reachable by
//! ZooKeeper's long names such as `monitor`) and raft's view (`leader`, `voting_view`,
//! `lsnp`). The client port's `4lw.commands.whitelist` does not apply here: this port
//! is a separate, operator-facing listener, on loopback by default.
//!
//! SECURITY: every command here is read-only. Any future mutating command (ZooKeeper
//! has e.g. `snapshot`, `restore`, `reset stats`) MUST require authentication before it
//! is added, since anyone who can reach this port can call every command.

pub mod metrics;

use crate::server::four_letter::{dir_size, Monitor, Report};
use crate::server::Shared;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::{Encoder, RAFT_LOG_FSYNC};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;

/// Commands served under `/commands/<name>`: (short name, ZooKeeper's long names).
pub const COMMANDS: &[(&str, &[&str])] = &[
    ("ruok", &[]),
    ("srvr", &["server_stats"]),
    ("stat", &["stats"]),
    ("mntr", &["monitor"]),
    ("conf", &["configuration"]),
    ("cons", &["connections"]),
    ("envi", &["environment"]),
    ("isro", &["is_read_only"]),
    ("wchs", &["watch_summary"]),
    ("wchc", &["watches"]),
    ("wchp", &["watches_by_path"]),
    ("dump", &[]),
    ("dirs", &[]),
    ("leader", &["lead"]),
    ("voting_view", &[]),
    ("lsnp", &["last_snapshot"]),
];

/// How long a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `/ready` waits for this server to apply what is committed.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves admin HTTP on `listener` until the server shuts down.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let mut shutdown = shared.shutdown_signal();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let mut shutdown = shared.shutdown_signal();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(%remote, error = %e, "admin connection ended");
                },
                _ = shutdown.changed() => {}
            }
        });
    }
}

type Resp = Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_response(status: StatusCode, v: &Value) -> Resp {
    let body = serde_json::to_vec_pretty(v).unwrap_or_default();
    respond(status, "application/json", body)
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Resp {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET is supported\n",
        );
        r.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let path = req.uri().path().trim_end_matches('/');
    match path {
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            render_metrics(shared),
        ),
        "/health" => respond(StatusCode::OK, "text/plain", "ok"),
        "/ready" => match readiness(shared).await {
            Ok(()) => respond(StatusCode::OK, "text/plain", "ready"),
            Err(why) => respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", why),
        },
        "/commands" => {
            let list: Vec<Value> = COMMANDS
                .iter()
                .map(|(name, aliases)| json!({ "name": name, "aliases": aliases }))
                .collect();
            json_response(StatusCode::OK, &json!({ "commands": list }))
        }
        _ => match path.strip_prefix("/commands/") {
            Some(name) => {
                let (status, body) = command(shared, name);
                json_response(status, &body)
            }
            None => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        },
    }
}

/// Runs the admin command `name` (short or long name): its JSON and HTTP status.
pub fn command(shared: &Shared, name: &str) -> (StatusCode, Value) {
    let short = COMMANDS
        .iter()
        .find(|(n, aliases)| *n == name || aliases.contains(&name))
        .map(|(n, _)| *n);
    let fields = match short {
        Some("leader") => Some(leader(shared)),
        Some("voting_view") => Some(voting_view(shared)),
        Some("lsnp") => Some(last_snapshot(shared)),
        Some(word) => Report::gather(shared, word).map(|r| r.json()),
        None => None,
    };
    match fields {
        Some(Value::Object(mut m)) => {
            m.insert("command".into(), json!(short.unwrap_or(name)));
            m.entry("error").or_insert(Value::Null);
            (StatusCode::OK, Value::Object(m))
        }
        _ => (
            StatusCode::NOT_FOUND,
            json!({ "command": name, "error": format!("Unknown command: {name}") }),
        ),
    }
}

fn leader(shared: &Shared) -> Value {
    let m = shared.raft.metrics().borrow().clone();
    let leader_addr = m.current_leader.and_then(|id| {
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    });
    json!({
        "is_leader": m.current_leader == Some(m.id),
        "leader_id": m.current_leader,
        "leader_ip": leader_addr,
        "term": m.current_term,
    })
}

fn voting_view(shared: &Shared) -> Value {
    let m = shared.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    let mut view = serde_json::Map::new();
    for (id, node) in membership.nodes() {
        view.insert(
            id.to_string(),
            json!({
                "address": node.addr,
                "role": if voters.contains(id) { "participant" } else { "observer" },
            }),
        );
    }
    json!({ "current_config": view })
}

fn last_snapshot(shared: &Shared) -> Value {
    let m = shared.raft.metrics().borrow().clone();
    let seen = note_snapshot(shared, m.snapshot.map(|l| l.index));
    match m.snapshot {
        None => json!({ "last_snapshot": null }),
        Some(id) => {
            let (timestamp, age) = match seen {
                Some((index, at)) if index == id.index => (
                    at.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs()),
                    SystemTime::now()
                        .duration_since(at)
                        .ok()
                        .map(|d| d.as_secs_f64()),
                ),
                _ => (None, None),
            };
            json!({
                "last_snapshot": {
                    "index": id.index,
                    "term": id.leader_id.term,
                    "timestamp": timestamp,
                    "age_seconds": age,
                }
            })
        }
    }
}

/// Ok when raft has a leader and this server has applied everything it knows is
/// committed; otherwise why not.
pub async fn readiness(shared: &Shared) -> Result<(), String> {
    let m = shared.raft.metrics().borrow().clone();
    if let Err(e) = &m.running_state {
        return Err(format!("raft stopped: {e}"));
    }
    let Some(leader) = m.current_leader else {
        return Err("no raft leader".into());
    };
    if leader == m.id {
        // The leader's read index is its committed index; this waits until it is
        // applied (and confirms leadership).
        match tokio::time::timeout(READY_TIMEOUT, shared.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("not ready: {e}")),
            Err(_) => Err("not ready: committed entries not applied yet".into()),
        }
    } else {
        let applied = m.last_applied.map(|l| l.index);
        if applied >= m.last_log_index {
            Ok(())
        } else {
            Err(format!(
                "applying: applied {applied:?} of {:?}",
                m.last_log_index
            ))
        }
    }
}

/// One Prometheus exposition (the data directory is walked once per call).
pub fn render_metrics(shared: &Shared) -> String {
    let mon = Monitor::gather(shared);
    let raft = shared.raft.metrics().borrow().clone();
    let stats = &shared.stats;
    let mut e = Encoder::default();
    e.requests(
        "wazoo_requests_total",
        "wazoo_request_duration_seconds",
        &stats.requests,
    );
    e.histogram(
        "wazoo_write_commit_duration_seconds",
        "Time from proposing a write to raft to its applied result.",
        &stats.commit_latency,
    );
    e.histogram(
        "wazoo_raft_log_fsync_duration_seconds",
        "Time of each fsync of the raft log (one may cover many appends; process-wide).",
        &RAFT_LOG_FSYNC,
    );
    e.gauge(
        "wazoo_znodes",
        "Znodes in the tree.",
        mon.znode_count as f64,
    );
    e.gauge(
        "wazoo_znode_data_bytes",
        "Approximate size of the tree: path and data bytes of every znode.",
        mon.approximate_data_size as f64,
    );
    e.gauge(
        "wazoo_ephemeral_znodes",
        "Ephemeral znodes.",
        mon.ephemerals_count as f64,
    );
    let by_kind = shared.watches.count_by_kind();
    let kinds: Vec<(&str, f64)> = by_kind
        .iter()
        .map(|(k, n)| {
            let name = match k {
                crate::watch::WatchKind::Data => "data",
                crate::watch::WatchKind::Child => "child",
                crate::watch::WatchKind::Persistent => "persistent",
                crate::watch::WatchKind::PersistentRecursive => "persistent_recursive",
            };
            (name, *n as f64)
        })
        .collect();
    e.gauge_by(
        "wazoo_watches",
        "Watches registered on this server, by kind.",
        "kind",
        &kinds,
    );
    e.gauge(
        "wazoo_sessions",
        "Sessions (global).",
        mon.global_sessions as f64,
    );
    e.counter(
        "wazoo_session_expirations_total",
        "Sessions this server (as leader) decided to expire.",
        stats.session_expirations.load(Relaxed),
    );
    e.gauge(
        "wazoo_connections",
        "Open client connections.",
        mon.num_alive_connections as f64,
    );
    e.gauge(
        "wazoo_outstanding_requests",
        "Client requests received and not yet answered.",
        mon.outstanding_requests as f64,
    );
    e.gauge(
        "wazoo_raft_term",
        "Current raft term.",
        raft.current_term as f64,
    );
    e.gauge(
        "wazoo_raft_leader_id",
        "Node id of the current raft leader (-1 if none known).",
        raft.current_leader.map_or(-1.0, |l| l as f64),
    );
    e.gauge(
        "wazoo_raft_applied_index",
        "Index of the last log entry applied to the state machine.",
        raft.last_applied.map_or(0.0, |l| l.index as f64),
    );
    e.gauge(
        "wazoo_snapshot_last_index",
        "Log index covered by the last snapshot (-1 if none).",
        raft.snapshot.map_or(-1.0, |l| l.index as f64),
    );
    let age = note_snapshot(shared, raft.snapshot.map(|l| l.index))
        .and_then(|(_, at)| SystemTime::now().duration_since(at).ok())
        .map_or(-1.0, |d| d.as_secs_f64());
    e.gauge(
        "wazoo_snapshot_age_seconds",
        "Seconds since this server saw the last snapshot being taken or loaded (-1 if none).",
        age,
    );
    e.gauge(
        "wazoo_data_dir_bytes",
        "Bytes of every file under dataDir.",
        dir_size(&shared.config.data_dir) as f64,
    );
    let (recipes, parked) = {
        let sm = shared.sm.read();
        let parked: Vec<(String, f64)> = sm
            .recipe_list("")
            .into_iter()
            .map(|i| i.name)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|n| {
                let count = sm
                    .tree()
                    .get(&format!("{}/{n}", crate::recipe::apply::PARKED))
                    .map_or(0, |p| p.children.len());
                (n, count as f64)
            })
            .collect();
        (sm.recipe_stats().snapshot(), parked)
    };
    e.recipes(&recipes, &parked);
    e.gauge(
        "wazoo_uptime_seconds",
        "Seconds since the server started.",
        stats.started.elapsed().as_secs_f64(),
    );
    e.finish()
}

/// Records when raft's last snapshot changes (for `lsnp` and the snapshot age),
/// until raft stops.
pub async fn track_snapshots(shared: Arc<Shared>) {
    let mut rx = shared.raft.metrics();
    loop {
        let snap = rx.borrow_and_update().snapshot.map(|l| l.index);
        note_snapshot(&shared, snap);
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Records `snapshot` (raft's last snapshot index) as seen now unless it already was;
/// returns the record. Called by [`track_snapshots`] and by every reader, so a reader
/// never sees a snapshot the tracker has not recorded yet.
fn note_snapshot(shared: &Shared, snapshot: Option<u64>) -> Option<(u64, SystemTime)> {
    let mut seen = shared.stats.last_snapshot.lock();
    match (snapshot, *seen) {
        (Some(i), Some((j, _))) if i == j => {}
        (Some(i), _) => *seen = Some((i, SystemTime::now())),
        (None, _) => *seen = None,
    }
    *seen
}
