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

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;
use tempfile::TempDir;

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
    pub voters: Vec<(u64, String)>,
    pub learners: Vec<(u64, String)>,
    pub sessions: usize,
    pub digest: String,
    pub digest_index: u64,
}

pub struct Member {
    pub id: u64,
    pub peer_addr: String,
    pub observer: bool,
    data_dir: PathBuf,
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
}

pub struct Ensemble {
    pub members: Vec<Member>,
    config_path: PathBuf,
    bin: PathBuf,
    _dir: TempDir,
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

impl Ensemble {
    /// Starts `voters` voting members and `observers` observers with
    /// [`TEST_SETTINGS`] plus `extra` zoo.cfg lines, and the built-in recipes of
    /// `$WAZOO_RECIPES_DIR` if it is set.
    pub fn start(voters: usize, observers: usize, extra: &[&str]) -> anyhow::Result<Ensemble> {
        let mut lines: Vec<String> = TEST_SETTINGS
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect();
        if let Ok(d) = std::env::var("WAZOO_RECIPES_DIR") {
            lines.push(format!("recipe.builtinDir={d}"));
        }
        Self::start_lines(voters, observers, &lines)
    }

    /// Starts an ensemble with exactly these zoo.cfg `settings` (plus its server lines).
    pub fn start_plain(
        voters: usize,
        observers: usize,
        settings: &[&str],
    ) -> anyhow::Result<Ensemble> {
        let lines: Vec<String> = settings.iter().map(|s| s.to_string()).collect();
        Self::start_lines(voters, observers, &lines)
    }

    fn start_lines(
        voters: usize,
        observers: usize,
        settings: &[String],
    ) -> anyhow::Result<Ensemble> {
        let dir = tempfile::Builder::new()
            .prefix("wazoo-ensemble-")
            .tempdir()?;
        let bin = wazoo_bin()?;
        let mut cfg = String::new();
        for line in settings {
            cfg.push_str(line);
            cfg.push('\n');
        }
        let mut members = Vec::new();
        for i in 0..voters + observers {
            let id = i as u64 + 1;
            let observer = i >= voters;
            let peer_port = crate::free_port()?;
            let election_port = crate::free_port()?;
            let peer_addr = format!("127.0.0.1:{peer_port}");
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
                observer,
                data_dir,
                process: None,
            });
        }
        let config_path = dir.path().join("zoo.cfg");
        std::fs::write(&config_path, &cfg)?;
        let mut e = Ensemble {
            members,
            config_path,
            bin,
            _dir: dir,
        };
        for i in 0..e.members.len() {
            e.start_member(i)?;
        }
        Ok(e)
    }

    fn start_member(&mut self, i: usize) -> anyhow::Result<()> {
        let args = vec![
            "--config".to_string(),
            self.config_path.display().to_string(),
        ];
        let m = &mut self.members[i];
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
        let addrs: Vec<&str> = self
            .members
            .iter()
            .filter(|m| m.process.is_some())
            .map(|m| m.peer_addr.as_str())
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

    /// Waits (polling status, up to `limit`) until the running members agree on one
    /// leader; returns its index in `members`.
    pub fn wait_leader(&self, limit: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + limit;
        let mut last_error = None;
        loop {
            let status = match self.status() {
                Ok(s) => s,
                Err(e) => {
                    last_error = Some(format!("{e:#}"));
                    Vec::new()
                }
            };
            let leaders: Vec<&MemberStatus> =
                status.iter().filter(|s| s.role == "leader").collect();
            let running = self.members.iter().filter(|m| m.process.is_some()).count();
            if leaders.len() == 1
                && status.len() == running
                && status.iter().all(|s| s.leader == Some(leaders[0].id))
            {
                let id = leaders[0].id;
                return self
                    .members
                    .iter()
                    .position(|m| m.id == id)
                    .ok_or_else(|| anyhow!("leader {id} is not a member"));
            }
            if Instant::now() > deadline {
                bail!(
                    "no agreed leader within {limit:?}: {status:#?} (last error: {last_error:?})"
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
