//! A Wazoo ensemble of child processes on 127.0.0.1, for multi-server tests.
//!
//! Every member runs `$WAZOO_BIN serve --config ENSEMBLE/zoo.cfg --data-dir
//! ENSEMBLE/sN/data` with `myid` in its data dir, as ZooKeeper's members do. Peer ports
//! are picked free when the ensemble is created and kept for its life (a restarted
//! member must come back on its `server.N` address); client ports are picked by each
//! process (port 0) and re-read after a restart.
//!
//! Status comes from `wazoo admin status --json` on the peer ports, so the tests also
//! exercise the operator's tool.
//!
//! [`Ensemble::start_proxied`] puts a fault-injecting proxy ([`crate::proxy`]) on every
//! peer link: each `server.N` line names the member's proxy port, the member listens on
//! its real port (`--set raft.peerListenAddress=...`) and dials from its own loopback
//! address (`--set raft.peerSourceAddress=127.0.0.(10+id)`), and [`Ensemble::proxy`]
//! cuts and heals pairs. Status is always asked of the real ports, so a partitioned
//! member still reports.
//!
//! [`Ensemble::add_member`] starts one more server with its own configuration (the
//! ensemble's plus its own `server.N` line and extra lines such as
//! `raft.bootstrap=false`), for runtime membership changes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;
use tempfile::TempDir;

use crate::proxy::{source_ip, PeerProxy};
use crate::wazoo_process::{wazoo_bin, WazooProcess};

/// One member's status as `wazoo admin status --json` reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct MemberStatus {
    pub id: u64,
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_log_index: Option<u64>,
    pub applied: Option<u64>,
    /// Index of the last snapshot this member holds (built or installed).
    #[serde(default)]
    pub snapshot: Option<u64>,
    /// Index up to which its log is purged.
    #[serde(default)]
    pub purged: Option<u64>,
    pub voters: Vec<(u64, String)>,
    pub learners: Vec<(u64, String)>,
    /// On the leader: the index each member matched, as raft sees it.
    #[serde(default)]
    pub replication: serde_json::Value,
    pub sessions: usize,
    pub digest: String,
    pub digest_index: u64,
}

pub struct Member {
    pub id: u64,
    /// The address of its `server.N` line (the proxy's, in a proxied ensemble).
    pub peer_addr: String,
    /// Where it really listens for peers: status and admin requests go here.
    pub listen_addr: String,
    pub observer: bool,
    data_dir: PathBuf,
    /// Extra `serve` arguments of this member (after `--config`).
    extra_args: Vec<String>,
    /// Its own zoo.cfg, if not the ensemble's.
    config_path: Option<PathBuf>,
    /// None while the member is stopped (killed and not restarted yet).
    pub process: Option<WazooProcess>,
}

impl Member {
    /// `127.0.0.1:PORT` of the running process.
    pub fn client_addr(&self) -> anyhow::Result<String> {
        self.process
            .as_ref()
            .map(|p| p.connect_string())
            .ok_or_else(|| anyhow!("server {} is not running", self.id))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Its log (stdout and stderr of every run).
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.with_file_name("data.wazoo.log")
    }
}

pub struct Ensemble {
    pub members: Vec<Member>,
    config_path: PathBuf,
    /// The settings lines of zoo.cfg (without server.N lines), for added members.
    settings: String,
    bin: PathBuf,
    proxy: Option<PeerProxy>,
    // Dropped last: members' processes (fields above) are killed before their dirs go.
    // Kept (not deleted) when the test fails, for the members' logs.
    dir: Option<TempDir>,
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut p) = m.process.take() {
                let _ = p.kill9();
            }
        }
        if std::thread::panicking() || std::env::var_os("WAZOO_KEEP_ENSEMBLE").is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "ensemble dir kept for its logs (sN/data.wazoo.log): {}",
                    dir.keep().display()
                );
            }
        }
    }
}

/// Settings every test ensemble uses: fast elections and ticks, all four-letter words.
pub const TEST_SETTINGS: &[&str] = &[
    "tickTime=200",
    "raft.electionTimeoutMs=500",
    "raft.heartbeatMs=100",
    "4lw.commands.whitelist=*",
    "admin.enableServer=false",
];

/// The settings of the reference ZooKeeper (tickTime 2000, every four-letter word,
/// TTL nodes), for differential and real-client suites run against an ensemble. No
/// built-in recipes: those suites speak plain ZooKeeper.
pub const REFERENCE_SETTINGS: &[&str] = &[
    "tickTime=2000",
    "4lw.commands.whitelist=*",
    "extendedTypesEnabled=true",
    "admin.enableServer=false",
];

fn lines(base: &[&str], extra: &[&str]) -> Vec<String> {
    base.iter().chain(extra).map(|s| s.to_string()).collect()
}

impl Ensemble {
    /// Starts `voters` voting members and `observers` observers with
    /// [`TEST_SETTINGS`] plus `extra` zoo.cfg lines (no built-in recipes: compiling them
    /// on every member costs seconds of CPU; see [`Ensemble::start_with_recipes`]).
    pub fn start(voters: usize, observers: usize, extra: &[&str]) -> anyhow::Result<Ensemble> {
        Self::start_with(voters, observers, lines(TEST_SETTINGS, extra), false)
    }

    /// Like [`Ensemble::start`], plus the built-in recipes of `$WAZOO_RECIPES_DIR`
    /// (which must be set).
    pub fn start_with_recipes(
        voters: usize,
        observers: usize,
        extra: &[&str],
    ) -> anyhow::Result<Ensemble> {
        let dir = std::env::var("WAZOO_RECIPES_DIR").map_err(|_| {
            anyhow!("WAZOO_RECIPES_DIR is not set: build the recipes with scripts/build-recipes.sh")
        })?;
        let mut settings = lines(TEST_SETTINGS, extra);
        settings.push(format!("recipe.builtinDir={dir}"));
        Self::start_with(voters, observers, settings, false)
    }

    /// Starts an ensemble with exactly these zoo.cfg `settings` (plus its server lines).
    pub fn start_plain(
        voters: usize,
        observers: usize,
        settings: &[&str],
    ) -> anyhow::Result<Ensemble> {
        Self::start_with(voters, observers, lines(settings, &[]), false)
    }

    /// Like [`Ensemble::start`], with every peer link through a [`PeerProxy`].
    pub fn start_proxied(
        voters: usize,
        observers: usize,
        extra: &[&str],
    ) -> anyhow::Result<Ensemble> {
        Self::start_with(voters, observers, lines(TEST_SETTINGS, extra), true)
    }

    fn start_with(
        voters: usize,
        observers: usize,
        setting_lines: Vec<String>,
        proxied: bool,
    ) -> anyhow::Result<Ensemble> {
        let dir = tempfile::Builder::new()
            .prefix("wazoo-ensemble-")
            .tempdir()?;
        let bin = wazoo_bin()?;
        let mut settings = String::new();
        for line in &setting_lines {
            settings.push_str(line);
            settings.push('\n');
        }
        let proxy = proxied.then(PeerProxy::new);
        let mut cfg = settings.clone();
        let mut members = Vec::new();
        for i in 0..voters + observers {
            let id = i as u64 + 1;
            let observer = i >= voters;
            let listen_addr = format!("127.0.0.1:{}", crate::free_port()?);
            let mut extra_args = Vec::new();
            let peer_addr = match &proxy {
                None => listen_addr.clone(),
                Some(p) => {
                    extra_args.extend([
                        "--set".to_string(),
                        format!("raft.peerListenAddress={listen_addr}"),
                        "--set".to_string(),
                        format!("raft.peerSourceAddress={}", source_ip(id)),
                    ]);
                    p.listen(id, listen_addr.parse()?)?.to_string()
                }
            };
            let election_port = crate::free_port()?;
            cfg.push_str(&format!(
                "server.{id}={peer_addr}:{election_port}{}\n",
                if observer { ":observer" } else { "" }
            ));
            let data_dir = dir.path().join(format!("s{id}")).join("data");
            std::fs::create_dir_all(&data_dir)?;
            std::fs::write(data_dir.join("myid"), format!("{id}\n"))?;
            members.push(Member {
                id,
                peer_addr,
                listen_addr,
                observer,
                data_dir,
                extra_args,
                config_path: None,
                process: None,
            });
        }
        let config_path = dir.path().join("zoo.cfg");
        std::fs::write(&config_path, &cfg)?;
        let mut e = Ensemble {
            members,
            config_path,
            settings,
            bin,
            proxy,
            dir: Some(dir),
        };
        for i in 0..e.members.len() {
            e.start_member(i)?;
        }
        Ok(e)
    }

    /// Starts one more server (the next id) with its own zoo.cfg: the ensemble's plus its
    /// own `server.N` line and `extra` lines (e.g. `raft.bootstrap=false`, so it waits
    /// to be added with `wazoo admin add-server`). Not proxied. Returns its index.
    pub fn add_member(&mut self, extra: &[&str]) -> anyhow::Result<usize> {
        if self.proxy.is_some() {
            bail!("add_member does not support proxied ensembles");
        }
        let id = self.members.iter().map(|m| m.id).max().unwrap_or(0) + 1;
        let listen_addr = format!("127.0.0.1:{}", crate::free_port()?);
        let mut cfg = std::fs::read_to_string(&self.config_path)?;
        cfg.push_str(&format!(
            "server.{id}={listen_addr}:{}\n",
            crate::free_port()?
        ));
        for line in extra {
            cfg.push_str(line);
            cfg.push('\n');
        }
        let config_path = self.dir().path().join(format!("zoo-{id}.cfg"));
        std::fs::write(&config_path, cfg)?;
        let data_dir = self.dir().path().join(format!("s{id}")).join("data");
        std::fs::create_dir_all(&data_dir)?;
        std::fs::write(data_dir.join("myid"), format!("{id}\n"))?;
        self.members.push(Member {
            id,
            peer_addr: listen_addr.clone(),
            listen_addr,
            observer: false,
            data_dir,
            extra_args: Vec::new(),
            config_path: Some(config_path),
            process: None,
        });
        let i = self.members.len() - 1;
        self.start_member(i)?;
        Ok(i)
    }

    fn dir(&self) -> &TempDir {
        self.dir.as_ref().expect("the ensemble's dir")
    }

    /// The peer proxy of an ensemble made by [`Ensemble::start_proxied`].
    pub fn proxy(&self) -> &PeerProxy {
        self.proxy
            .as_ref()
            .expect("the ensemble was not started with start_proxied")
    }

    /// The settings lines every member's zoo.cfg starts with.
    pub fn settings(&self) -> &str {
        &self.settings
    }

    /// Index (into `members`) of the member with server id `id`.
    pub fn index_of(&self, id: u64) -> usize {
        self.members
            .iter()
            .position(|m| m.id == id)
            .unwrap_or_else(|| panic!("no member {id}"))
    }

    fn start_member(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &mut self.members[i];
        let config = m.config_path.as_ref().unwrap_or(&self.config_path);
        let mut args = vec!["--config".to_string(), config.display().to_string()];
        args.extend(m.extra_args.iter().cloned());
        m.process = Some(
            WazooProcess::start_with(&self.bin, &m.data_dir, args)
                .with_context(|| format!("starting server {}", m.id))?,
        );
        Ok(())
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// SIGKILL member `i` (an index into `members`).
    pub fn kill9(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut p) = self.members[i].process.take() {
            p.kill9()?;
        }
        Ok(())
    }

    /// Starts member `i` again on its data dir (after [`Ensemble::kill9`]).
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill9(i)?;
        self.start_member(i)
    }

    /// Every running member's client address, comma-separated (a ZooKeeper connect
    /// string).
    pub fn connect_string(&self) -> String {
        self.members
            .iter()
            .filter_map(|m| m.client_addr().ok())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs `wazoo admin ARGS` and returns its stdout.
    pub fn admin(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.bin)
            .arg("admin")
            .args(args)
            .output()
            .context("running wazoo admin")?;
        if !out.status.success() {
            bail!(
                "wazoo admin {args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Status of every running member (members that do not answer are left out).
    pub fn status(&self) -> anyhow::Result<Vec<MemberStatus>> {
        let running: Vec<usize> = (0..self.members.len())
            .filter(|i| self.members[*i].process.is_some())
            .collect();
        self.status_of(&running)
    }

    /// Status of members `indexes` (those that do not answer are left out).
    pub fn status_of(&self, indexes: &[usize]) -> anyhow::Result<Vec<MemberStatus>> {
        let addrs: Vec<&str> = indexes
            .iter()
            .map(|i| self.members[*i].listen_addr.as_str())
            .collect();
        let out = self.admin(&["status", "--json", "--servers", &addrs.join(",")])?;
        let mut v = Vec::new();
        for line in out.lines().filter(|l| !l.trim().is_empty()) {
            let j: serde_json::Value = serde_json::from_str(line)?;
            if let Some(s) = j.get("status") {
                v.push(serde_json::from_value(s.clone())?);
            }
        }
        Ok(v)
    }

    /// Indexes of the running members.
    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|i| self.members[*i].process.is_some())
            .collect()
    }

    /// Waits (polling status, up to `limit`) until the running members agree on one
    /// leader; returns its index in `members`.
    pub fn wait_leader(&self, limit: Duration) -> anyhow::Result<usize> {
        self.wait_leader_of(&self.running(), limit)
    }

    /// Waits (polling status, up to `limit`) until members `group` all answer and agree
    /// that one of them leads (at one term); returns the leader's index in `members`.
    /// Members outside the group (e.g. a partitioned old leader) are not asked.
    pub fn wait_leader_of(&self, group: &[usize], limit: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + limit;
        let mut last_error = None;
        loop {
            let status = match self.status_of(group) {
                Ok(s) => s,
                Err(e) => {
                    last_error = Some(format!("{e:#}"));
                    Vec::new()
                }
            };
            let leaders: Vec<&MemberStatus> =
                status.iter().filter(|s| s.role == "leader").collect();
            if leaders.len() == 1
                && status.len() == group.len()
                && status
                    .iter()
                    .all(|s| s.leader == Some(leaders[0].id) && s.term == leaders[0].term)
            {
                return Ok(self.index_of(leaders[0].id));
            }
            if Instant::now() > deadline {
                bail!(
                    "no agreed leader among {group:?} within {limit:?}: {status:#?} (last error: {last_error:?})"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every running member has applied the same index and then checks that
    /// their state digests are equal. Returns that index.
    pub fn assert_converged(&self, limit: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + limit;
        loop {
            let status = self.status()?;
            let running = self.members.iter().filter(|m| m.process.is_some()).count();
            let indexes: std::collections::BTreeSet<u64> =
                status.iter().map(|s| s.digest_index).collect();
            if status.len() == running && indexes.len() == 1 {
                let digests: std::collections::BTreeSet<&str> =
                    status.iter().map(|s| s.digest.as_str()).collect();
                if digests.len() != 1 {
                    bail!("replicas diverged at the same applied index: {status:#?}");
                }
                let index = *indexes.iter().next().expect("one index");
                eprintln!(
                    "ensemble converged: {running} servers at index {index}, digest {}",
                    &status[0].digest[..16]
                );
                return Ok(index);
            }
            if Instant::now() > deadline {
                bail!(
                    "replicas did not reach the same applied index within {limit:?}: {status:#?}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
