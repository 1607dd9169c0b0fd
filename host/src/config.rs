//! Server configuration: ZooKeeper's zoo.cfg keys (so operators can bring their
//! existing file), embedded defaults, and command-line overrides.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: line {line}: expected key=value, got {text:?}")]
    Syntax {
        origin: String,
        line: usize,
        text: String,
    },
    #[error("{key}: invalid value {value:?}: {why}")]
    Value {
        key: String,
        value: String,
        why: String,
    },
}

/// Every four-letter word Wazoo answers.
pub const FOUR_LETTER_WORDS: &[&str] = &[
    "ruok", "srvr", "stat", "mntr", "cons", "conf", "envi", "wchs", "wchc", "wchp", "dump", "isro",
    "dirs",
];

/// The recipes a server installs from `recipe.builtinDir` (recipes/<name>).
pub const BUILTIN_RECIPES: &[&str] = &["lock", "election", "barrier", "config"];

#[derive(Debug, Clone, PartialEq, Eq)]

pub struct Config {
    pub tick_time_ms: u32,
    pub data_dir: PathBuf,
    /// Accepted for zoo.cfg compatibility; the raft log lives in `data_dir` (RocksDB).
    pub data_log_dir: Option<PathBuf>,
    pub client_port: u16,
    pub client_port_address: IpAddr,
    /// Per client IP, as ZooKeeper's `maxClientCnxns` (0 = unlimited).
    pub max_client_cnxns: u32,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// `jute.maxbuffer`: the largest frame accepted, in bytes.
    pub jute_max_buffer: usize,
    /// `4lw.commands.whitelist`, expanded (`*` = all).
    pub four_letter_whitelist: BTreeSet<String>,
    /// `zookeeper.DigestAuthenticationProvider.superDigest`: `user:base64(sha1)`.
    pub super_digest: Option<String>,
    /// `snapCount`: a snapshot (and a log purge) every this many entries.
    pub snap_count: u64,
    /// `autopurge.snapRetainCount` (minimum 3, as in ZooKeeper): how many RocksDB info
    /// log files (`LOG`, `LOG.old.*`) are kept. Wazoo keeps exactly one raft snapshot
    /// whatever this says (raft only ever needs the latest; a new one replaces it).
    pub autopurge_snap_retain_count: usize,
    /// `autopurge.purgeInterval` (hours; 0 = off): how often every RocksDB column family
    /// is compacted, reclaiming purged log entries, overwritten rows and old snapshots.
    /// `None` when 0. Unlike ZooKeeper (default 0) it is on by default, every hour.
    pub autopurge_purge_interval: Option<std::time::Duration>,
    /// `rocksdb.maxTotalWalSize` (bytes): cap on RocksDB's write-ahead log; past it the
    /// column families holding the oldest WAL file are flushed and the file deleted.
    pub max_total_wal_bytes: u64,
    /// `znode.container.checkIntervalMs`: how often the leader looks for empty
    /// containers and expired TTL nodes.
    pub container_check_interval_ms: u64,
    /// `admin.enableServer`: run the admin HTTP server (`crate::admin`).
    pub admin_enable_server: bool,
    /// `admin.serverAddress`: the admin HTTP server's address.
    pub admin_server_address: IpAddr,
    /// `admin.serverPort`: the admin HTTP server's port (0 = pick a free one).
    pub admin_server_port: u16,
    /// `recipe.builtinDir`: a directory of built-in recipe modules (`<name>.wasm`, as
    /// scripts/build-recipes.sh writes them); each of [`BUILTIN_RECIPES`] found there
    /// is installed at start unless the cluster already has a recipe of that name.
    pub recipe_builtin_dir: Option<PathBuf>,
    /// `server.N=host:peerPort:electionPort[:observer][;clientAddr:clientPort]`: the
    /// ensemble. Empty means standalone (a one-voter raft cluster of its own).
    pub servers: BTreeMap<u64, ServerSpec>,
    /// `peerType=observer`: this server joins as a non-voting member even if its
    /// `server.N` line lacks `:observer` (as ZooKeeper's key).
    pub peer_type_observer: bool,
    /// `raft.electionTimeoutMs`: a follower that hears no leader for a random time in
    /// [t, 2t) starts an election. Failover time is about this plus one round trip.
    pub election_timeout_ms: u64,
    /// `raft.heartbeatMs`: how often the leader heartbeats its followers.
    pub heartbeat_ms: u64,
    /// `raft.bootstrap` (default true): a voter with an empty data dir proposes the
    /// file's voters as a new ensemble. Set it to false on a server that is to join an
    /// existing ensemble through `wazoo admin add-server`, so it waits to be added
    /// instead of forming an ensemble of its own.
    pub raft_bootstrap: bool,
    /// `raft.peerListenAddress`: where this server listens for peers, if not on the
    /// address of its own `server.N` line (behind a proxy or NAT, or on a multi-homed
    /// host).
    pub peer_listen_address: Option<std::net::SocketAddr>,
    /// `raft.peerSourceAddress`: the local address this server dials its peers from
    /// (default: chosen by the OS).
    pub peer_source_address: Option<IpAddr>,
    /// This server's id in the ensemble (the `myid` file in `data_dir`, read at start);
    /// 0 for a standalone server.
    pub my_id: u64,
    /// Keys the file had that Wazoo does not use (reported, not fatal, as ZooKeeper
    /// turns unknown keys into system properties).
    pub unknown: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tick_time_ms: 2000,
            data_dir: PathBuf::from("./data"),
            data_log_dir: None,
            client_port: 2181,
            client_port_address: IpAddr::from([127, 0, 0, 1]),
            max_client_cnxns: 60,
            min_session_timeout_ms: 4000,
            max_session_timeout_ms: 40000,
            jute_max_buffer: wazoo_proto::consts::DEFAULT_MAX_BUFFER,
            four_letter_whitelist: ["srvr".to_string()].into_iter().collect(),
            super_digest: None,
            snap_count: 100_000,
            autopurge_snap_retain_count: crate::raft::db::DEFAULT_INFO_LOG_FILES_KEPT,
            autopurge_purge_interval: Some(crate::raft::db::DEFAULT_COMPACTION_INTERVAL),
            max_total_wal_bytes: crate::raft::db::DEFAULT_MAX_TOTAL_WAL_BYTES,
            container_check_interval_ms: 60_000,
            admin_enable_server: true,
            admin_server_address: IpAddr::from([127, 0, 0, 1]),
            admin_server_port: 8080,
            recipe_builtin_dir: None,
            servers: BTreeMap::new(),
            my_id: 0,
            peer_type_observer: false,
            election_timeout_ms: 1500,
            heartbeat_ms: 250,
            raft_bootstrap: true,
            peer_listen_address: None,
            peer_source_address: None,
            unknown: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Reads a zoo.cfg-style file on top of the defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut c = Config::default();
        c.apply_text(&text, &path.display().to_string())?;
        Ok(c)
    }

    /// Applies `key=value` lines (comments with `#`, blank lines ignored).
    pub fn apply_text(&mut self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let mut min_set = false;
        let mut max_set = false;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(ConfigError::Syntax {
                    origin: origin.to_string(),
                    line: i + 1,
                    text: line.to_string(),
                });
            };
            let (k, v) = (k.trim(), v.trim());
            min_set |= k == "minSessionTimeout";
            max_set |= k == "maxSessionTimeout";
            self.set(k, v)?;
        }
        self.derive_session_bounds(min_set, max_set);
        Ok(())
    }

    /// ZooKeeper derives the session bounds from tickTime unless they are given.
    fn derive_session_bounds(&mut self, min_set: bool, max_set: bool) {
        if !min_set {
            self.min_session_timeout_ms = 2 * self.tick_time_ms as i32;
        }
        if !max_set {
            self.max_session_timeout_ms = 20 * self.tick_time_ms as i32;
        }
    }

    /// Sets one key, by its zoo.cfg name.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        fn num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            value.parse::<T>().map_err(|e| ConfigError::Value {
                key: key.into(),
                value: value.into(),
                why: e.to_string(),
            })
        }
        match key {
            "tickTime" => self.tick_time_ms = num(key, value)?,
            "dataDir" => self.data_dir = PathBuf::from(value),
            "dataLogDir" => self.data_log_dir = Some(PathBuf::from(value)),
            "clientPort" => self.client_port = num(key, value)?,
            "clientPortAddress" => self.client_port_address = num(key, value)?,
            "maxClientCnxns" => self.max_client_cnxns = num(key, value)?,
            "minSessionTimeout" => self.min_session_timeout_ms = num(key, value)?,
            "maxSessionTimeout" => self.max_session_timeout_ms = num(key, value)?,
            "jute.maxbuffer" => self.jute_max_buffer = num(key, value)?,
            "4lw.commands.whitelist" => self.four_letter_whitelist = parse_whitelist(value)?,
            "zookeeper.DigestAuthenticationProvider.superDigest" | "superDigest" => {
                self.super_digest = Some(value.to_string())
            }
            "snapCount" => self.snap_count = num::<u64>(key, value)?.max(1),
            // ZooKeeper raises values below 3 to 3; so do we.
            "autopurge.snapRetainCount" => {
                self.autopurge_snap_retain_count = num::<usize>(key, value)?.max(3)
            }
            "autopurge.purgeInterval" => {
                self.autopurge_purge_interval = match num::<u64>(key, value)? {
                    0 => None,
                    hours => Some(std::time::Duration::from_secs(hours.saturating_mul(3600))),
                }
            }
            "rocksdb.maxTotalWalSize" => {
                self.max_total_wal_bytes = num::<u64>(key, value)?.max(1 << 20)
            }
            "znode.container.checkIntervalMs" => {
                self.container_check_interval_ms = num::<u64>(key, value)?.max(1)
            }
            "admin.enableServer" => {
                self.admin_enable_server = num::<bool>(key, &value.to_ascii_lowercase())?
            }
            "admin.serverAddress" => self.admin_server_address = num(key, value)?,
            "admin.serverPort" => self.admin_server_port = num(key, value)?,
            "recipe.builtinDir" => self.recipe_builtin_dir = Some(PathBuf::from(value)),
            // TTL nodes are always enabled in Wazoo; ZooKeeper needs this switch for them.
            "extendedTypesEnabled" | "zookeeper.extendedTypesEnabled" => {}
            "peerType" => {
                self.peer_type_observer = match value {
                    "observer" => true,
                    "participant" => false,
                    _ => {
                        return Err(ConfigError::Value {
                            key: key.into(),
                            value: value.into(),
                            why: "expected observer or participant".into(),
                        })
                    }
                }
            }
            "raft.electionTimeoutMs" => self.election_timeout_ms = num::<u64>(key, value)?.max(10),
            "raft.heartbeatMs" => self.heartbeat_ms = num::<u64>(key, value)?.max(1),
            "raft.peerListenAddress" => self.peer_listen_address = Some(num(key, value)?),
            "raft.peerSourceAddress" => self.peer_source_address = Some(num(key, value)?),
            "raft.bootstrap" => {
                self.raft_bootstrap = num::<bool>(key, &value.to_ascii_lowercase())?
            }
            _ if key.starts_with("server.") => {
                let id = key["server.".len()..]
                    .parse::<u64>()
                    .map_err(|e| ConfigError::Value {
                        key: key.into(),
                        value: value.into(),
                        why: format!("server id: {e}"),
                    })?;
                let spec = ServerSpec::parse(value).map_err(|why| ConfigError::Value {
                    key: key.into(),
                    value: value.into(),
                    why,
                })?;
                self.servers.insert(id, spec);
            }
            _ => {
                self.unknown.insert(key.to_string(), value.to_string());
            }
        }
        if self.tick_time_ms == 0 {
            return Err(ConfigError::Value {
                key: "tickTime".into(),
                value: "0".into(),
                why: "must be positive".into(),
            });
        }
        Ok(())
    }

    /// Clamps a requested session timeout into [min, max], as ZooKeeper negotiates it.
    pub fn negotiate_timeout(&self, requested: i32) -> i32 {
        requested.clamp(
            self.min_session_timeout_ms,
            self.max_session_timeout_ms.max(self.min_session_timeout_ms),
        )
    }

    /// The bounds on the raft database's disk usage these keys ask for.
    pub fn storage_options(&self) -> crate::raft::StorageOptions {
        crate::raft::StorageOptions {
            max_total_wal_bytes: self.max_total_wal_bytes,
            info_log_files_kept: self.autopurge_snap_retain_count,
            compaction_interval: self.autopurge_purge_interval,
            ..Default::default()
        }
    }

    pub fn four_letter_allowed(&self, word: &str) -> bool {
        self.four_letter_whitelist.contains(word)
    }

    /// The effective configuration as `key=value` lines (`conf`).
    pub fn to_lines(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("clientPort".to_string(), self.client_port.to_string()),
            (
                "clientPortAddress".to_string(),
                self.client_port_address.to_string(),
            ),
            ("dataDir".to_string(), self.data_dir.display().to_string()),
            (
                "dataLogDir".to_string(),
                self.data_log_dir
                    .as_ref()
                    .unwrap_or(&self.data_dir)
                    .display()
                    .to_string(),
            ),
            ("tickTime".to_string(), self.tick_time_ms.to_string()),
            (
                "maxClientCnxns".to_string(),
                self.max_client_cnxns.to_string(),
            ),
            (
                "minSessionTimeout".to_string(),
                self.min_session_timeout_ms.to_string(),
            ),
            (
                "maxSessionTimeout".to_string(),
                self.max_session_timeout_ms.to_string(),
            ),
            (
                "jute.maxbuffer".to_string(),
                self.jute_max_buffer.to_string(),
            ),
            ("snapCount".to_string(), self.snap_count.to_string()),
            (
                "autopurge.snapRetainCount".to_string(),
                self.autopurge_snap_retain_count.to_string(),
            ),
            (
                "autopurge.purgeInterval".to_string(),
                // Hours, as in the file; fractions only when set in code (tests).
                self.autopurge_purge_interval
                    .map(|d| d.as_secs_f64() / 3600.0)
                    .unwrap_or(0.0)
                    .to_string(),
            ),
            (
                "rocksdb.maxTotalWalSize".to_string(),
                self.max_total_wal_bytes.to_string(),
            ),
            (
                "recipe.builtinDir".to_string(),
                self.recipe_builtin_dir
                    .as_ref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
            ),
            ("serverId".to_string(), self.my_id.to_string()),
            (
                "admin.enableServer".to_string(),
                self.admin_enable_server.to_string(),
            ),
            (
                "admin.serverAddress".to_string(),
                self.admin_server_address.to_string(),
            ),
            (
                "admin.serverPort".to_string(),
                self.admin_server_port.to_string(),
            ),
        ];
        for (id, spec) in &self.servers {
            let mut line = format!(
                "{}:{}:{}:{}",
                spec.host,
                spec.peer_port,
                spec.election_port,
                if spec.observer {
                    "observer"
                } else {
                    "participant"
                }
            );
            if let Some((addr, port)) = &spec.client {
                line.push_str(&format!(";{addr}:{port}"));
            }
            v.push((format!("server.{id}"), line));
        }
        if !self.servers.is_empty() {
            v.push((
                "raft.electionTimeoutMs".to_string(),
                self.election_timeout_ms.to_string(),
            ));
            v.push((
                "raft.heartbeatMs".to_string(),
                self.heartbeat_ms.to_string(),
            ));
        }
        v.sort();
        v
    }
}

/// One `server.N` line: where the server's peers and clients reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    pub host: String,
    /// Raft traffic (ZooKeeper's quorum port).
    pub peer_port: u16,
    /// Accepted for zoo.cfg compatibility and not bound: raft elects over the peer port.
    pub election_port: u16,
    /// `:observer`: a non-voting member (an openraft learner) that serves clients.
    pub observer: bool,
    /// `;clientAddr:clientPort`: this server's client address, if given here.
    pub client: Option<(String, u16)>,
}

impl ServerSpec {
    /// Parses `host:peerPort:electionPort[:participant|:observer][;[clientAddr:]clientPort]`.
    pub fn parse(value: &str) -> Result<ServerSpec, String> {
        let (peer_part, client_part) = match value.split_once(';') {
            Some((p, c)) => (p.trim(), Some(c.trim())),
            None => (value.trim(), None),
        };
        let fields: Vec<&str> = peer_part.split(':').collect();
        if fields.len() < 3 || fields.len() > 4 {
            return Err("expected host:peerPort:electionPort[:observer]".into());
        }
        let port = |s: &str, what: &str| s.parse::<u16>().map_err(|e| format!("{what} {s:?}: {e}"));
        let observer = match fields.get(3).copied() {
            None | Some("participant") => false,
            Some("observer") => true,
            Some(other) => return Err(format!("unknown peer type {other:?}")),
        };
        if fields[0].is_empty() {
            return Err("empty host".into());
        }
        let client = match client_part {
            None => None,
            Some(c) => Some(match c.rsplit_once(':') {
                Some((addr, p)) => (addr.to_string(), port(p, "client port")?),
                None => ("0.0.0.0".to_string(), port(c, "client port")?),
            }),
        };
        Ok(ServerSpec {
            host: fields[0].to_string(),
            peer_port: port(fields[1], "peer port")?,
            election_port: port(fields[2], "election port")?,
            observer,
            client,
        })
    }

    /// `host:peerPort`, the raft address peers dial.
    pub fn peer_addr(&self) -> String {
        format!("{}:{}", self.host, self.peer_port)
    }
}

fn parse_whitelist(value: &str) -> Result<BTreeSet<String>, ConfigError> {
    let mut set = BTreeSet::new();
    for w in value.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        if w == "*" {
            set.extend(FOUR_LETTER_WORDS.iter().map(|s| s.to_string()));
        } else if FOUR_LETTER_WORDS.contains(&w) {
            set.insert(w.to_string());
        } else {
            // ZooKeeper ignores words it does not know; so do we, loudly.
            tracing::warn!(
                word = w,
                "unknown four-letter word in 4lw.commands.whitelist; ignored"
            );
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_zoo_cfg_and_derives_bounds() {
        let mut c = Config::default();
        c.apply_text("# comment\ntickTime=1000\ndataDir=/tmp/x\nclientPort=2999\n4lw.commands.whitelist=ruok, stat\njute.maxbuffer=4096\nserver.1=a:2888:3888\n", "test").unwrap();
        assert_eq!(c.tick_time_ms, 1000);
        assert_eq!(
            (c.min_session_timeout_ms, c.max_session_timeout_ms),
            (2000, 20000)
        );
        assert_eq!(c.client_port, 2999);
        assert!(
            c.four_letter_allowed("ruok")
                && c.four_letter_allowed("stat")
                && !c.four_letter_allowed("srvr")
        );
        assert_eq!(c.jute_max_buffer, 4096);
        assert!(c.servers.contains_key(&1) && !c.unknown.contains_key("server.1"));
        assert_eq!(c.negotiate_timeout(100), 2000);
        assert_eq!(c.negotiate_timeout(600_000), 20000);
    }

    #[test]
    fn default_whitelist_is_srvr_and_star_expands() {
        let mut c = Config::default();
        assert!(c.four_letter_allowed("srvr") && !c.four_letter_allowed("ruok"));
        c.set("4lw.commands.whitelist", "*").unwrap();
        assert!(FOUR_LETTER_WORDS.iter().all(|w| c.four_letter_allowed(w)));
    }

    #[test]
    fn server_lines_parse_as_zookeeper_writes_them() {
        let mut c = Config::default();
        c.apply_text(
            "server.1=127.0.0.1:2888:3888\nserver.2=10.0.0.2:2889:3889:observer;127.0.0.1:2182\nserver.3=h3:1:2:participant;2183\n",
            "test",
        )
        .expect("parses");
        assert_eq!(c.servers.len(), 3);
        assert_eq!(c.servers[&1].peer_addr(), "127.0.0.1:2888");
        assert!(!c.servers[&1].observer);
        assert!(c.servers[&2].observer);
        assert_eq!(c.servers[&2].client, Some(("127.0.0.1".into(), 2182)));
        assert_eq!(c.servers[&3].client, Some(("0.0.0.0".into(), 2183)));
        for bad in [
            "server.x=a:1:2",
            "server.1=a:1",
            "server.1=a:1:2:voter",
            "server.1=:1:2",
        ] {
            let (k, v) = bad.split_once('=').unwrap();
            assert!(
                Config::default().set(k, v).is_err(),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn bad_values_are_errors() {
        let mut c = Config::default();
        assert!(c.apply_text("clientPort=abc", "t").is_err());
        assert!(c.apply_text("justaword", "t").is_err());
        assert!(c.set("tickTime", "0").is_err());
        assert!(c.set("admin.serverPort", "http").is_err());
        assert!(c.set("admin.enableServer", "maybe").is_err());
    }

    #[test]
    fn admin_server_keys() {
        let mut c = Config::default();
        assert!(c.admin_enable_server);
        assert_eq!(c.admin_server_port, 8080);
        c.apply_text(
            "admin.enableServer=False\nadmin.serverAddress=0.0.0.0\nadmin.serverPort=9090\n",
            "t",
        )
        .unwrap();
        assert!(!c.admin_enable_server);
        assert_eq!(c.admin_server_address.to_string(), "0.0.0.0");
        assert_eq!(c.admin_server_port, 9090);
        assert!(c
            .to_lines()
            .contains(&("admin.serverPort".to_string(), "9090".to_string())));
    }

    #[test]
    fn disk_usage_keys() {
        let mut c = Config::default();
        let d = c.storage_options();
        assert_eq!(d, crate::raft::StorageOptions::default());
        assert_eq!(d.info_log_files_kept, 3);
        assert_eq!(
            d.compaction_interval,
            Some(std::time::Duration::from_secs(3600))
        );
        c.apply_text(
            "autopurge.snapRetainCount=1\nautopurge.purgeInterval=24\nrocksdb.maxTotalWalSize=8388608\n",
            "t",
        )
        .unwrap();
        let d = c.storage_options();
        assert_eq!(d.info_log_files_kept, 3, "raised to ZooKeeper's minimum");
        assert_eq!(
            d.compaction_interval,
            Some(std::time::Duration::from_secs(24 * 3600))
        );
        assert_eq!(d.max_total_wal_bytes, 8 << 20);
        c.apply_text(
            "autopurge.snapRetainCount=10\nautopurge.purgeInterval=0\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.storage_options().info_log_files_kept, 10);
        assert_eq!(c.storage_options().compaction_interval, None);
        assert!(c
            .to_lines()
            .contains(&("autopurge.purgeInterval".to_string(), "0".to_string())));
        assert!(c.set("autopurge.purgeInterval", "-1").is_err());
        assert!(c.unknown.is_empty());
    }
}
