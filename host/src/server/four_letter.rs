//! Four-letter words on the client port (`ruok`, `srvr`, `mntr`, ...), answered as
//! text and followed by a close, with ZooKeeper's `4lw.commands.whitelist` rule: a
//! known word that is not whitelisted gets ZooKeeper's refusal sentence.
//!
//! Each word first gathers a [`Report`] (plain structs); the text on the client port
//! ([`Report::text`]) and the JSON of the admin server's `/commands/<name>`
//! ([`Report::json`], see `crate::admin`) are both rendered from it, and the Prometheus
//! scrape reads the same [`Monitor`] numbers as `mntr`.

use super::Shared;
use crate::watch::WatchSummary;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

/// The version reported to clients. Clients gate features on it (kazoo reads it with
/// `envi`), and Wazoo implements the 3.9 protocol.
pub const ZK_COMPAT_VERSION: &str = concat!("3.9.2-wazoo-", env!("CARGO_PKG_VERSION"));

pub fn respond(shared: &Shared, word: &str) -> String {
    if !shared.config.four_letter_allowed(word) {
        return format!("{word} is not executed because it is not in the whitelist.\n");
    }
    match Report::gather(shared, word) {
        Some(r) => r.text(),
        None => format!("{word} is not a known command\n"),
    }
}

/// One client connection, as `cons` and `stat` list it.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionInfo {
    pub session_id: i64,
    pub remote_socket_address: String,
}

/// `srvr` (and `stat`, which adds the connections).
#[derive(Debug, Clone, Serialize)]
pub struct ServerSummary {
    pub version: &'static str,
    pub read_only: bool,
    pub server_state: &'static str,
    /// Milliseconds.
    pub min_latency: f64,
    pub avg_latency: f64,
    pub max_latency: f64,
    pub packets_received: u64,
    pub packets_sent: u64,
    pub num_alive_connections: i64,
    pub outstanding_requests: i64,
    pub last_zxid: i64,
    pub node_count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<Vec<ConnectionInfo>>,
}

/// `mntr`: ZooKeeper's monitor keys (the text prefixes each with `zk_`).
#[derive(Debug, Clone, Serialize)]
pub struct Monitor {
    pub version: &'static str,
    pub server_state: &'static str,
    pub avg_latency: f64,
    pub max_latency: f64,
    pub min_latency: f64,
    pub packets_received: u64,
    pub packets_sent: u64,
    pub num_alive_connections: i64,
    pub outstanding_requests: i64,
    pub znode_count: usize,
    pub watch_count: usize,
    pub ephemerals_count: usize,
    /// Bytes of paths plus data, summed over every znode.
    pub approximate_data_size: usize,
    pub global_sessions: usize,
    pub last_zxid: i64,
    /// Milliseconds since the server started.
    pub uptime: u128,
}

/// `wchc`.
#[derive(Debug, Clone, Serialize)]
pub struct WatchesBySession {
    pub session_id_to_watched_paths: BTreeMap<i64, Vec<String>>,
}

/// `wchp`.
#[derive(Debug, Clone, Serialize)]
pub struct WatchesByPath {
    pub path_to_session_ids: BTreeMap<String, Vec<i64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub session_id: i64,
    pub timeout_ms: i32,
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionEphemerals {
    pub session_id: i64,
    pub paths: Vec<String>,
}

/// `dump`: sessions, and the ephemeral nodes of those that have some.
#[derive(Debug, Clone, Serialize)]
pub struct SessionDump {
    pub sessions: Vec<SessionInfo>,
    pub ephemerals: Vec<SessionEphemerals>,
}

/// `dirs`, in bytes.
#[derive(Debug, Clone, Serialize)]
pub struct DirSizes {
    pub datadir_size: u64,
    pub logdir_size: u64,
}

/// Ordered `key=value` pairs (`conf`, `envi`); JSON renders them as one object.
#[derive(Debug, Clone)]
pub struct KeyValues(pub Vec<(String, String)>);

impl Serialize for KeyValues {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// What one four-letter word reports.
#[derive(Debug, Clone)]
pub enum Report {
    Ruok,
    Srvr(ServerSummary),
    Mntr(Monitor),
    Cons(Vec<ConnectionInfo>),
    Conf(KeyValues),
    Envi(KeyValues),
    Wchs(WatchSummary),
    Wchc(WatchesBySession),
    Wchp(WatchesByPath),
    Dump(SessionDump),
    Isro,
    Dirs(DirSizes),
}

impl Report {
    /// Gathers the data of `word`, or None if Wazoo does not know it. No whitelist
    /// check here: that is the client port's rule (see [`respond`]).
    pub fn gather(shared: &Shared, word: &str) -> Option<Report> {
        Some(match word {
            "ruok" => Report::Ruok,
            "srvr" => Report::Srvr(server_summary(shared, false)),
            "stat" => Report::Srvr(server_summary(shared, true)),
            "mntr" => Report::Mntr(Monitor::gather(shared)),
            "cons" => Report::Cons(connections(shared)),
            "conf" => Report::Conf(KeyValues(shared.config.to_lines())),
            "envi" => Report::Envi(environment(shared)),
            "wchs" => Report::Wchs(shared.watches.summary()),
            "wchc" => Report::Wchc(WatchesBySession {
                session_id_to_watched_paths: shared.watches.by_session(),
            }),
            "wchp" => Report::Wchp(WatchesByPath {
                path_to_session_ids: shared.watches.by_path(),
            }),
            "dump" => Report::Dump(session_dump(shared)),
            "isro" => Report::Isro,
            "dirs" => {
                let size = dir_size(&shared.config.data_dir);
                Report::Dirs(DirSizes {
                    datadir_size: size,
                    logdir_size: size,
                })
            }
            _ => return None,
        })
    }

    /// The four-letter-word answer, as ZooKeeper words it.
    pub fn text(&self) -> String {
        let mut out = String::new();
        match self {
            Report::Ruok => out.push_str("imok"),
            Report::Isro => out.push_str("rw"),
            Report::Srvr(s) => {
                let _ = writeln!(out, "Zookeeper version: {}, built for Wazoo", s.version);
                if let Some(conns) = &s.connections {
                    out.push_str("Clients:\n");
                    write_connections(&mut out, conns);
                    out.push('\n');
                }
                let _ = write!(
                    out,
                    "Latency min/avg/max: {:.0}/{:.4}/{:.0}\nReceived: {}\nSent: {}\nConnections: {}\nOutstanding: {}\nZxid: 0x{:x}\nMode: {}\nNode count: {}\n",
                    s.min_latency,
                    s.avg_latency,
                    s.max_latency,
                    s.packets_received,
                    s.packets_sent,
                    s.num_alive_connections,
                    s.outstanding_requests,
                    s.last_zxid,
                    s.server_state,
                    s.node_count,
                );
            }
            Report::Mntr(m) => {
                for (k, v) in m.rows() {
                    let _ = writeln!(out, "zk_{k}\t{v}");
                }
            }
            Report::Cons(conns) => {
                write_connections(&mut out, conns);
                out.push('\n');
            }
            Report::Conf(kv) => {
                for (k, v) in &kv.0 {
                    let _ = writeln!(out, "{k}={v}");
                }
            }
            Report::Envi(kv) => {
                out.push_str("Environment:\n");
                for (k, v) in &kv.0 {
                    let _ = writeln!(out, "{k}={v}");
                }
            }
            Report::Wchs(s) => {
                let _ = write!(
                    out,
                    "{} connections watching {} paths\nTotal watches:{}\n",
                    s.connections, s.paths, s.watches
                );
            }
            Report::Wchc(w) => {
                for (sid, paths) in &w.session_id_to_watched_paths {
                    let _ = writeln!(out, "0x{sid:x}");
                    for p in paths {
                        let _ = writeln!(out, "\t{p}");
                    }
                }
            }
            Report::Wchp(w) => {
                for (path, sids) in &w.path_to_session_ids {
                    let _ = writeln!(out, "{path}");
                    for s in sids {
                        let _ = writeln!(out, "\t0x{s:x}");
                    }
                }
            }
            Report::Dump(d) => {
                out.push_str("SessionTracker dump:\n");
                let _ = writeln!(out, "Global Sessions({}):", d.sessions.len());
                for s in &d.sessions {
                    let _ = writeln!(out, "0x{:x}\t{}ms", s.session_id, s.timeout_ms);
                }
                let _ = writeln!(
                    out,
                    "ephemeral nodes dump:\nSessions with Ephemerals ({}):",
                    d.ephemerals.len()
                );
                for e in &d.ephemerals {
                    let _ = writeln!(out, "0x{:x}:", e.session_id);
                    for p in &e.paths {
                        let _ = writeln!(out, "\t{p}");
                    }
                }
            }
            Report::Dirs(d) => {
                let _ = write!(
                    out,
                    "datadir_size: {}\nlogdir_size: {}\n",
                    d.datadir_size, d.logdir_size
                );
            }
        }
        out
    }

    /// The admin server's JSON body fields (always an object; the admin server adds
    /// `command` and `error`, as ZooKeeper's AdminServer does).
    pub fn json(&self) -> serde_json::Value {
        use serde_json::{json, to_value, Value};
        let v = match self {
            Report::Ruok => Ok(json!({})),
            Report::Isro => Ok(json!({ "read_only": false })),
            Report::Srvr(s) => to_value(s),
            Report::Mntr(m) => to_value(m),
            Report::Cons(c) => Ok(json!({ "connections": c })),
            Report::Conf(kv) | Report::Envi(kv) => to_value(kv),
            Report::Wchs(w) => to_value(w),
            Report::Wchc(w) => to_value(w),
            Report::Wchp(w) => to_value(w),
            Report::Dump(d) => to_value(d),
            Report::Dirs(d) => to_value(d),
        };
        match v {
            Ok(Value::Object(m)) => Value::Object(m),
            Ok(other) => json!({ "value": other }),
            Err(e) => json!({ "error": e.to_string() }),
        }
    }
}

impl Monitor {
    pub fn gather(shared: &Shared) -> Monitor {
        let (min, avg, max) = shared.stats.latency_ms();
        let sm = shared.sm.read();
        let w = shared.watches.summary();
        let data_size: usize = sm
            .tree()
            .iter()
            .map(|(p, n)| p.len() + n.data.as_ref().map_or(0, Vec::len))
            .sum();
        Monitor {
            version: ZK_COMPAT_VERSION,
            server_state: shared.role(),
            avg_latency: avg,
            max_latency: max,
            min_latency: min,
            packets_received: shared.stats.packets_received.load(Relaxed),
            packets_sent: shared.stats.packets_sent.load(Relaxed),
            num_alive_connections: shared.stats.connections.load(Relaxed),
            outstanding_requests: shared.stats.outstanding.load(Relaxed).max(0),
            znode_count: sm.tree().len(),
            watch_count: w.watches,
            ephemerals_count: sm.tree().ephemeral_count(),
            approximate_data_size: data_size,
            global_sessions: sm.sessions().len(),
            last_zxid: sm.last_zxid(),
            uptime: shared.stats.started.elapsed().as_millis(),
        }
    }

    /// `mntr`'s rows, in ZooKeeper's order, formatted as ZooKeeper prints them.
    fn rows(&self) -> Vec<(&'static str, String)> {
        vec![
            ("version", self.version.to_string()),
            ("server_state", self.server_state.to_string()),
            ("avg_latency", format!("{:.4}", self.avg_latency)),
            ("max_latency", format!("{:.0}", self.max_latency)),
            ("min_latency", format!("{:.0}", self.min_latency)),
            ("packets_received", self.packets_received.to_string()),
            ("packets_sent", self.packets_sent.to_string()),
            (
                "num_alive_connections",
                self.num_alive_connections.to_string(),
            ),
            (
                "outstanding_requests",
                self.outstanding_requests.to_string(),
            ),
            ("znode_count", self.znode_count.to_string()),
            ("watch_count", self.watch_count.to_string()),
            ("ephemerals_count", self.ephemerals_count.to_string()),
            (
                "approximate_data_size",
                self.approximate_data_size.to_string(),
            ),
            ("global_sessions", self.global_sessions.to_string()),
            ("last_zxid", self.last_zxid.to_string()),
            ("uptime", self.uptime.to_string()),
        ]
    }
}

fn server_summary(shared: &Shared, with_clients: bool) -> ServerSummary {
    let (min, avg, max) = shared.stats.latency_ms();
    let sm = shared.sm.read();
    ServerSummary {
        version: ZK_COMPAT_VERSION,
        read_only: false,
        server_state: shared.role(),
        min_latency: min,
        avg_latency: avg,
        max_latency: max,
        packets_received: shared.stats.packets_received.load(Relaxed),
        packets_sent: shared.stats.packets_sent.load(Relaxed),
        num_alive_connections: shared.stats.connections.load(Relaxed),
        outstanding_requests: shared.stats.outstanding.load(Relaxed).max(0),
        last_zxid: sm.last_zxid(),
        node_count: sm.tree().len(),
        connections: with_clients.then(|| connections(shared)),
    }
}

fn connections(shared: &Shared) -> Vec<ConnectionInfo> {
    shared
        .watches
        .connections()
        .into_iter()
        .map(|(session_id, remote_socket_address)| ConnectionInfo {
            session_id,
            remote_socket_address,
        })
        .collect()
}

fn write_connections(out: &mut String, conns: &[ConnectionInfo]) {
    for c in conns {
        let _ = writeln!(
            out,
            " /{}[1](queued=0,recved=0,sent=0,sid=0x{:x})",
            c.remote_socket_address, c.session_id
        );
    }
}

fn environment(shared: &Shared) -> KeyValues {
    let kv = |k: &str, v: String| (k.to_string(), v);
    KeyValues(vec![
        kv(
            "zookeeper.version",
            format!("{ZK_COMPAT_VERSION}, built for Wazoo"),
        ),
        kv(
            "host.name",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into()),
        ),
        kv("os.name", std::env::consts::OS.to_string()),
        kv("os.arch", std::env::consts::ARCH.to_string()),
        kv(
            "user.dir",
            std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
        ),
        kv(
            "wazoo.dataDir",
            shared.config.data_dir.display().to_string(),
        ),
    ])
}

fn session_dump(shared: &Shared) -> SessionDump {
    let sm = shared.sm.read();
    SessionDump {
        sessions: sm
            .sessions()
            .iter()
            .map(|(sid, s)| SessionInfo {
                session_id: *sid,
                timeout_ms: s.timeout_ms,
            })
            .collect(),
        ephemerals: sm
            .sessions()
            .keys()
            .map(|sid| SessionEphemerals {
                session_id: *sid,
                paths: sm.tree().ephemerals_of(*sid),
            })
            .filter(|e| !e.paths.is_empty())
            .collect(),
    }
}

/// Bytes of every file under `p` (one walk per call).
pub fn dir_size(p: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
