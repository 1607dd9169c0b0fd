//! Apache ZooKeeper (Debian's 3.8 packages) as a reference server for differential tests.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tempfile::TempDir;

use crate::{four_letter, free_port, log_tail};

const MAIN_CLASS: &str = "org.apache.zookeeper.server.ZooKeeperServerMain";
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A standalone Apache ZooKeeper on 127.0.0.1 with its own temp data dir, started as
/// `java -cp <classpath> org.apache.zookeeper.server.ZooKeeperServerMain <cfg>` with
/// `tickTime=2000`, `4lw.commands.whitelist=*` and `extendedTypesEnabled=true` (TTL
/// nodes). Ready once `ruok` answers `imok`. Dropping it kills the JVM and deletes the
/// temp dir.
///
/// Environment: `ZK_HOME` (default `/usr/share/zookeeper`), `ZK_CLASSPATH` (default: the
/// `CLASSPATH` set by `$ZK_HOME/bin/zkEnv.sh`), `JAVA` (default `java` on PATH).
pub struct ZooKeeperProcess {
    pub addr: SocketAddr,
    child: Child,
    dir: TempDir,
    log_path: PathBuf,
}

impl ZooKeeperProcess {
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("wazoo-zookeeper-")
            .tempdir()?;
        let log_path = dir.path().join("zookeeper.log");
        let classpath = classpath()?;
        let java = std::env::var("JAVA").unwrap_or_else(|_| "java".to_string());
        let mut last_err = String::new();
        // The free port can be taken between probing it and ZooKeeper binding it: retry.
        for attempt in 1..=3 {
            let port = free_port()?;
            let child = spawn(dir.path(), &log_path, attempt, port, &classpath, &java)?;
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let mut child = ChildGuard(Some(child));
            match wait_ready(addr, child.get(), &log_path) {
                Ok(()) => {
                    let child = child.0.take().expect("child");
                    return Ok(ZooKeeperProcess {
                        addr,
                        child,
                        dir,
                        log_path,
                    });
                }
                Err(e) => last_err = format!("{e:#}"), // ChildGuard kills it
            }
        }
        bail!("ZooKeeper did not start after 3 attempts: {last_err}")
    }

    /// `127.0.0.1:PORT`, as ZooKeeper clients take it.
    pub fn connect_string(&self) -> String {
        self.addr.to_string()
    }

    /// The temp dir holding the config, data dirs and `zookeeper.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log_path, n)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ZooKeeperProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- ZooKeeper {} log tail ({}) ---\n{}",
                self.addr,
                self.log_path.display(),
                self.log_tail(40)
            );
        }
        self.kill();
    }
}

/// ZooKeeper's classpath: `$ZK_CLASSPATH`, else `CLASSPATH` from `$ZK_HOME/bin/zkEnv.sh`
/// (Debian: `/etc/zookeeper/conf:/usr/share/java/zookeeper.jar`, whose manifest lists the
/// dependencies), plus slf4j-simple when present so the server logs to its log file.
pub fn classpath() -> anyhow::Result<String> {
    let mut cp = std::env::var("ZK_CLASSPATH").unwrap_or_default();
    if cp.is_empty() {
        let home = std::env::var("ZK_HOME").unwrap_or_else(|_| "/usr/share/zookeeper".into());
        let env_sh = Path::new(&home).join("bin/zkEnv.sh");
        if env_sh.exists() {
            let out = Command::new("bash")
                .args([
                    "-c",
                    r#". "$1" >/dev/null 2>&1; printf %s "$CLASSPATH""#,
                    "_",
                ])
                .arg(&env_sh)
                .stdin(Stdio::null())
                .output()
                .context("running bash to read zkEnv.sh")?;
            cp = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
    }
    if cp.is_empty() {
        cp = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar".into();
    }
    let jar = cp.split(':').find(|p| p.ends_with("zookeeper.jar"));
    if let Some(jar) = jar {
        if !Path::new(jar).exists() {
            bail!("{jar} not found: install Debian's zookeeper package (scripts/setup.sh)");
        }
    }
    let simple = "/usr/share/java/slf4j-simple.jar";
    if Path::new(simple).exists() && !cp.contains("slf4j-simple") {
        cp = format!("{cp}:{simple}");
    }
    Ok(cp)
}

/// Kills the child on drop unless taken.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn get(&mut self) -> &mut Child {
        self.0.as_mut().expect("child")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(
    dir: &Path,
    log_path: &Path,
    attempt: u32,
    port: u16,
    classpath: &str,
    java: &str,
) -> anyhow::Result<Child> {
    let data = dir.join(format!("data-{attempt}"));
    std::fs::create_dir_all(&data)?;
    let cfg = dir.join(format!("zoo-{attempt}.cfg"));
    std::fs::write(
        &cfg,
        format!(
            "tickTime=2000\n\
             dataDir={}\n\
             clientPort={port}\n\
             clientPortAddress=127.0.0.1\n\
             maxClientCnxns=0\n\
             4lw.commands.whitelist=*\n\
             extendedTypesEnabled=true\n\
             admin.enableServer=false\n",
            data.display()
        ),
    )?;
    let mut log: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)?;
    writeln!(
        log,
        "=== attempt {attempt}: port {port}, classpath {classpath}"
    )?;
    Command::new(java)
        .args([
            "-Xms64m",
            "-Xmx512m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            "-Dzookeeper.extendedTypesEnabled=true",
            "-Dzookeeper.admin.enableServer=false",
            "-cp",
            classpath,
            MAIN_CLASS,
        ])
        .arg(&cfg)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {java} (is a JRE installed? scripts/setup.sh)"))
}

/// Waits until `ruok` answers `imok` and `srvr` reports a mode, or the JVM exits.
fn wait_ready(addr: SocketAddr, child: &mut Child, log_path: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!(
                "ZooKeeper exited with {status}:\n{}",
                log_tail(log_path, 40)
            );
        }
        match four_letter(addr, "ruok") {
            Ok(r) if r == "imok" => match four_letter(addr, "srvr") {
                Ok(s) if s.contains("Mode:") => return Ok(()),
                Ok(s) => last = format!("srvr answered {s:?}"),
                Err(e) => last = format!("{e:#}"),
            },
            Ok(r) => last = format!("ruok answered {r:?}"),
            Err(e) => last = format!("{e:#}"),
        }
        // poll interval while waiting for the port to answer
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "ZooKeeper on {addr} not ready within {START_TIMEOUT:?} ({last}):\n{}",
        log_tail(log_path, 40)
    )
}
