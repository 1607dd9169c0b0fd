//! Four-letter words on the client port (`ruok`, `srvr`, `mntr`, ...), answered as
//! text and followed by a close, with ZooKeeper's `4lw.commands.whitelist` rule: a
//! known word that is not whitelisted gets ZooKeeper's refusal sentence.

use super::Shared;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

/// The version reported to clients. Clients gate features on it (kazoo reads it with
/// `envi`), and Wazoo implements the 3.9 protocol.
pub const ZK_COMPAT_VERSION: &str = concat!("3.9.2-wazoo-", env!("CARGO_PKG_VERSION"));

pub fn respond(shared: &Shared, word: &str) -> String {
    if !shared.config.four_letter_allowed(word) {
        return format!("{word} is not executed because it is not in the whitelist.\n");
    }
    match word {
        "ruok" => "imok".to_string(),
        "srvr" => srvr(shared, false),
        "stat" => srvr(shared, true),
        "mntr" => mntr(shared),
        "cons" => cons(shared),
        "conf" => shared
            .config
            .to_lines()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect(),
        "envi" => envi(shared),
        "wchs" => {
            let s = shared.watches.summary();
            format!(
                "{} connections watching {} paths\nTotal watches:{}\n",
                s.connections, s.paths, s.watches
            )
        }
        "wchc" => {
            let mut out = String::new();
            for (sid, paths) in shared.watches.by_session() {
                let _ = writeln!(out, "0x{sid:x}");
                for p in paths {
                    let _ = writeln!(out, "\t{p}");
                }
            }
            out
        }
        "wchp" => {
            let mut out = String::new();
            for (path, sids) in shared.watches.by_path() {
                let _ = writeln!(out, "{path}");
                for s in sids {
                    let _ = writeln!(out, "\t0x{s:x}");
                }
            }
            out
        }
        "dump" => dump(shared),
        "isro" => "rw".to_string(),
        "dirs" => {
            let size = dir_size(&shared.config.data_dir);
            format!("datadir_size: {size}\nlogdir_size: {size}\n")
        }
        _ => format!("{word} is not a known command\n"),
    }
}

fn srvr(shared: &Shared, with_clients: bool) -> String {
    let (min, avg, max) = shared.stats.latency_ms();
    let sm = shared.sm.read();
    let mut out = format!("Zookeeper version: {ZK_COMPAT_VERSION}, built for Wazoo\n");
    if with_clients {
        out.push_str("Clients:\n");
        for (sid, remote) in shared.watches.connections() {
            let _ = writeln!(out, " /{remote}[1](queued=0,recved=0,sent=0,sid=0x{sid:x})");
        }
        out.push('\n');
    }
    let _ = write!(
        out,
        "Latency min/avg/max: {min:.0}/{avg:.4}/{max:.0}\nReceived: {}\nSent: {}\nConnections: {}\nOutstanding: {}\nZxid: 0x{:x}\nMode: standalone\nNode count: {}\n",
        shared.stats.packets_received.load(Relaxed),
        shared.stats.packets_sent.load(Relaxed),
        shared.stats.connections.load(Relaxed),
        shared.stats.outstanding.load(Relaxed).max(0),
        sm.last_zxid(),
        sm.tree().len(),
    );
    out
}

fn mntr(shared: &Shared) -> String {
    let (min, avg, max) = shared.stats.latency_ms();
    let sm = shared.sm.read();
    let w = shared.watches.summary();
    let data_size: usize = sm
        .tree()
        .iter()
        .map(|(p, n)| p.len() + n.data.as_ref().map_or(0, Vec::len))
        .sum();
    let rows: Vec<(&str, String)> = vec![
        ("zk_version", ZK_COMPAT_VERSION.to_string()),
        ("zk_server_state", "standalone".into()),
        ("zk_avg_latency", format!("{avg:.4}")),
        ("zk_max_latency", format!("{max:.0}")),
        ("zk_min_latency", format!("{min:.0}")),
        (
            "zk_packets_received",
            shared.stats.packets_received.load(Relaxed).to_string(),
        ),
        (
            "zk_packets_sent",
            shared.stats.packets_sent.load(Relaxed).to_string(),
        ),
        (
            "zk_num_alive_connections",
            shared.stats.connections.load(Relaxed).to_string(),
        ),
        (
            "zk_outstanding_requests",
            shared.stats.outstanding.load(Relaxed).max(0).to_string(),
        ),
        ("zk_znode_count", sm.tree().len().to_string()),
        ("zk_watch_count", w.watches.to_string()),
        (
            "zk_ephemerals_count",
            sm.tree().ephemeral_count().to_string(),
        ),
        ("zk_approximate_data_size", data_size.to_string()),
        ("zk_global_sessions", sm.sessions().len().to_string()),
        ("zk_last_zxid", sm.last_zxid().to_string()),
        (
            "zk_uptime",
            shared.stats.started.elapsed().as_millis().to_string(),
        ),
    ];
    rows.into_iter()
        .map(|(k, v)| format!("{k}\t{v}\n"))
        .collect()
}

fn cons(shared: &Shared) -> String {
    let mut out = String::new();
    for (sid, remote) in shared.watches.connections() {
        let _ = writeln!(out, " /{remote}[1](queued=0,recved=0,sent=0,sid=0x{sid:x})");
    }
    out.push('\n');
    out
}

fn envi(shared: &Shared) -> String {
    let mut out = String::from("Environment:\n");
    let _ = writeln!(
        out,
        "zookeeper.version={ZK_COMPAT_VERSION}, built for Wazoo"
    );
    let _ = writeln!(
        out,
        "host.name={}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into())
    );
    let _ = writeln!(out, "os.name={}", std::env::consts::OS);
    let _ = writeln!(out, "os.arch={}", std::env::consts::ARCH);
    let _ = writeln!(
        out,
        "user.dir={}",
        std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default()
    );
    let _ = writeln!(out, "wazoo.dataDir={}", shared.config.data_dir.display());
    out
}

fn dump(shared: &Shared) -> String {
    let sm = shared.sm.read();
    let mut out = String::from("SessionTracker dump:\n");
    let _ = writeln!(out, "Global Sessions({}):", sm.sessions().len());
    for (sid, s) in sm.sessions() {
        let _ = writeln!(out, "0x{sid:x}\t{}ms", s.timeout_ms);
    }
    let with_eph: Vec<(i64, Vec<String>)> = sm
        .sessions()
        .keys()
        .map(|sid| (*sid, sm.tree().ephemerals_of(*sid)))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let _ = writeln!(
        out,
        "ephemeral nodes dump:\nSessions with Ephemerals ({}):",
        with_eph.len()
    );
    for (sid, paths) in with_eph {
        let _ = writeln!(out, "0x{sid:x}:");
        for p in paths {
            let _ = writeln!(out, "\t{p}");
        }
    }
    out
}

fn dir_size(p: &std::path::Path) -> u64 {
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
