//! A Wazoo server process for end-to-end and crash tests.
//!
//! Runs `$WAZOO_BIN serve --client-port-address 127.0.0.1 --client-port 0 --data-dir DIR
//! [extra args]` and waits for the line Wazoo prints on stdout once it accepts clients:
//!
//! ```text
//! wazoo: serving ZooKeeper clients on 127.0.0.1:PORT
//! ```
//!
//! The process can be SIGKILLed ([`WazooProcess::kill9`]) and started again on the same
//! data dir ([`WazooProcess::restart`]); the port may change on restart, so read
//! [`WazooProcess::addr`] again afterwards.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tempfile::TempDir;

use crate::log_tail;

/// The prefix of the line Wazoo prints on stdout when it is ready for clients.
pub const READY_PREFIX: &str = "wazoo: serving ZooKeeper clients on ";

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Extra `serve` flags used by [`WazooProcess::start`] and [`WazooProcess::start_temp`]:
/// the same settings as the reference ZooKeeper's zoo.cfg (all four-letter words, TTL and
/// container nodes; tickTime 2000 is the default of both).
pub const REFERENCE_ARGS: [&str; 4] = [
    "--set",
    "4lw.commands.whitelist=*",
    "--set",
    "extendedTypesEnabled=true",
];

/// Parses `wazoo: serving ZooKeeper clients on 127.0.0.1:PORT` (anywhere in the line, so a
/// log prefix before it is fine).
pub fn parse_ready_line(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(READY_PREFIX)? + READY_PREFIX.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// The `wazoo` binary: `$WAZOO_BIN`, else `wazoo` in the target dir this test binary was
/// built into (`target/debug/deps/<test>` → `target/debug/wazoo`).
pub fn wazoo_bin() -> anyhow::Result<PathBuf> {
    if let Some(b) = std::env::var_os("WAZOO_BIN").filter(|b| !b.is_empty()) {
        let b = PathBuf::from(b);
        if !b.is_file() {
            bail!(
                "WAZOO_BIN={} does not exist: build it with `cargo build -p wazoo`",
                b.display()
            );
        }
        return Ok(b);
    }
    let exe = std::env::current_exe()?;
    let guess = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("wazoo"))
        .ok_or_else(|| anyhow!("cannot locate the target dir from {}", exe.display()))?;
    if !guess.is_file() {
        bail!(
            "WAZOO_BIN is unset and {} does not exist: run `cargo build -p wazoo` or set WAZOO_BIN",
            guess.display()
        );
    }
    Ok(guess)
}

pub struct WazooProcess {
    /// Where clients connect; updated by [`restart`](Self::restart).
    pub addr: SocketAddr,
    bin: PathBuf,
    data_dir: PathBuf,
    extra_args: Vec<String>,
    child: Option<Child>,
    log_path: PathBuf,
    starts: u32,
    _owned_dir: Option<TempDir>,
}

impl WazooProcess {
    /// Starts Wazoo (with [`REFERENCE_ARGS`]) on a fresh temp data dir, deleted on drop.
    pub fn start_temp() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("wazoo-server-").tempdir()?;
        let mut p = Self::start_with(wazoo_bin()?, dir.path().join("data"), REFERENCE_ARGS)?;
        p._owned_dir = Some(dir);
        Ok(p)
    }

    /// Starts Wazoo (with [`REFERENCE_ARGS`]) on `data_dir` (created if missing, kept on
    /// drop).
    pub fn start(data_dir: impl Into<PathBuf>) -> anyhow::Result<Self> {
        Self::start_with(wazoo_bin()?, data_dir, REFERENCE_ARGS)
    }

    /// Starts `bin serve ... --data-dir data_dir <extra_args>`.
    pub fn start_with<S: Into<String>>(
        bin: impl Into<PathBuf>,
        data_dir: impl Into<PathBuf>,
        extra_args: impl IntoIterator<Item = S>,
    ) -> anyhow::Result<Self> {
        let data_dir = data_dir.into();
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        // The log sits beside the data dir, so Wazoo's own files are all it finds inside.
        let name = data_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let log_path = data_dir.with_file_name(format!("{name}.wazoo.log"));
        let mut p = WazooProcess {
            addr: ([127, 0, 0, 1], 0).into(),
            bin: bin.into(),
            data_dir,
            extra_args: extra_args.into_iter().map(Into::into).collect(),
            child: None,
            log_path,
            starts: 0,
            _owned_dir: None,
        };
        p.spawn()?;
        Ok(p)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .args([
                "--client-port-address",
                "127.0.0.1",
                "--client-port",
                "0",
                "--data-dir",
            ])
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.try_clone()?);
        if std::env::var_os("RUST_BACKTRACE").is_none() {
            cmd.env("RUST_BACKTRACE", "1");
        }
        writeln!(log, "=== start {}: {cmd:?}", self.starts)?;
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // Drain stdout for the server's whole life (a full pipe would block it), copying
        // it to the log and reporting the ready line once.
        std::thread::spawn(move || pump(stdout, log, tx));
        self.child = Some(child);
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => {
                self.addr = addr;
                Ok(())
            }
            Err(e) => {
                let why = match e {
                    mpsc::RecvTimeoutError::Timeout => {
                        format!("no ready line within {START_TIMEOUT:?}")
                    }
                    mpsc::RecvTimeoutError::Disconnected => {
                        let status = self.child.as_mut().and_then(|c| c.wait().ok());
                        format!(
                            "it exited ({}) before printing the ready line",
                            fmt_status(status)
                        )
                    }
                };
                self.kill9()?;
                bail!(
                    "{} did not start: {why}; expected a stdout line `{READY_PREFIX}127.0.0.1:PORT`.\n{}",
                    self.bin.display(),
                    self.log_tail(40)
                )
            }
        }
    }

    /// SIGKILL the server (no clean shutdown) and reap it. A no-op if it is not running.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            if c.try_wait()?.is_none() {
                c.kill().context("SIGKILL wazoo")?;
            }
            c.wait()?;
        }
        Ok(())
    }

    /// SIGKILL (if running) and start again with the same data dir and arguments.
    /// `addr` is updated: the new process may listen on another port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9()?;
        self.spawn()
    }

    /// Whether the process is still running (false after it exited or was killed).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `127.0.0.1:PORT`, as ZooKeeper clients take it.
    pub fn connect_string(&self) -> String {
        self.addr.to_string()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// How many times the process was started (1 after start, +1 per restart).
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Stdout and stderr of every run, appended.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log_path, n)
    }
}

impl Drop for WazooProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- wazoo {} log tail ({}) ---\n{}",
                self.addr,
                self.log_path.display(),
                self.log_tail(40)
            );
        }
        let _ = self.kill9();
    }
}

fn pump(stdout: impl std::io::Read, mut log: File, tx: mpsc::Sender<SocketAddr>) {
    let mut tx = Some(tx);
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let _ = writeln!(log, "{line}");
        if let Some(addr) = tx.as_ref().and_then(|_| parse_ready_line(&line)) {
            let _ = tx.take().expect("sender").send(addr);
        }
    }
    // Dropping the sender tells spawn() the process ended without the ready line.
}

fn fmt_status(s: Option<ExitStatus>) -> String {
    s.map(|s| s.to_string())
        .unwrap_or_else(|| "status unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn parses_ready_line() {
        let want: SocketAddr = "127.0.0.1:41234".parse().unwrap();
        assert_eq!(
            parse_ready_line("wazoo: serving ZooKeeper clients on 127.0.0.1:41234"),
            Some(want)
        );
        assert_eq!(
            parse_ready_line(
                "2026-01-01T00:00:00Z INFO wazoo: serving ZooKeeper clients on 127.0.0.1:41234\r"
            ),
            Some(want)
        );
        assert_eq!(
            parse_ready_line("wazoo: serving ZooKeeper clients on [::1]:2181"),
            Some("[::1]:2181".parse().unwrap())
        );
        assert_eq!(
            parse_ready_line("wazoo: serving ZooKeeper clients on 127.0.0.1:notaport"),
            None
        );
        assert_eq!(parse_ready_line("wazoo: starting"), None);
    }

    /// A stand-in `wazoo` that records its arguments and start count in the data dir,
    /// prints the ready line with a port derived from the start count, then blocks.
    fn fake_wazoo(dir: &Path, body: &str) -> PathBuf {
        let bin = dir.join("fake-wazoo");
        std::fs::write(&bin, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        bin
    }

    const FAKE_SERVER: &str = r#"
# arguments: serve --client-port-address A --client-port 0 --data-dir D [extra]
data="$7"
echo "$*" >> "$data/args"
n=$(wc -l < "$data/args")
echo "starting run $n"
echo "wazoo: serving ZooKeeper clients on 127.0.0.1:$((40000 + n))"
exec sleep 600
"#;

    #[test]
    fn start_kill9_restart_on_same_data_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = fake_wazoo(tmp.path(), FAKE_SERVER);
        let data = tmp.path().join("data");
        let mut p = WazooProcess::start_with(&bin, &data, ["--extra", "x"]).unwrap();
        assert_eq!(p.addr, "127.0.0.1:40001".parse().unwrap());
        assert!(p.is_running());
        let args = std::fs::read_to_string(data.join("args")).unwrap();
        assert_eq!(
            args.trim(),
            format!(
                "serve --client-port-address 127.0.0.1 --client-port 0 --data-dir {} --extra x",
                data.display()
            )
        );

        p.kill9().unwrap();
        assert!(!p.is_running());
        p.restart().unwrap();
        assert!(p.is_running());
        assert_eq!(p.addr, "127.0.0.1:40002".parse().unwrap());
        assert_eq!(p.starts(), 2);
        assert_eq!(
            std::fs::read_to_string(data.join("args"))
                .unwrap()
                .lines()
                .count(),
            2
        );
        // restart also kills a running process first
        let old_pid = p.pid().unwrap();
        p.restart().unwrap();
        assert_ne!(p.pid().unwrap(), old_pid);
        assert_eq!(p.addr, "127.0.0.1:40003".parse().unwrap());
        assert!(
            p.log_tail(20).contains("starting run 3"),
            "{}",
            p.log_tail(20)
        );
    }

    #[test]
    fn exit_before_ready_line_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = fake_wazoo(
            tmp.path(),
            "echo 'wazoo: oops' ; echo 'bad config' >&2; exit 3",
        );
        let err = WazooProcess::start_with(&bin, tmp.path().join("d"), Vec::<String>::new())
            .err()
            .expect("must fail");
        let msg = format!("{err:#}");
        assert!(msg.contains("exit status: 3"), "{msg}");
        assert!(msg.contains("bad config"), "log tail missing: {msg}");
    }
}
