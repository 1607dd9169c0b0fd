//! Starts Apache ZooKeeper (Debian's 3.8 package) as a reference server for the
//! client's tests. Missing java or the jar is a test failure, not a skip.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ZkServer {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The classpath from Debian's `zkEnv.sh`, or `$ZOOKEEPER_CLASSPATH`.
fn classpath() -> String {
    if let Ok(cp) = std::env::var("ZOOKEEPER_CLASSPATH") {
        return cp;
    }
    let env = std::fs::read_to_string("/usr/share/zookeeper/bin/zkEnv.sh").unwrap_or_default();
    let cp = env
        .lines()
        .find_map(|l| l.trim().strip_prefix("CLASSPATH="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar".to_string());
    for part in cp.split(':').filter(|p| p.ends_with(".jar")) {
        assert!(
            std::path::Path::new(part).exists(),
            "ZooKeeper jar {part} is missing: install Debian's zookeeper package (apt-get install zookeeper) or set ZOOKEEPER_CLASSPATH"
        );
    }
    cp
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn four_letter(addr: SocketAddr, cmd: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(cmd.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

impl ZkServer {
    pub fn start() -> ZkServer {
        let mut last_err = String::new();
        for _ in 0..3 {
            match Self::try_start() {
                Ok(s) => return s,
                Err(e) => last_err = e,
            }
        }
        panic!("cannot start Apache ZooKeeper: {last_err}");
    }

    fn try_start() -> Result<ZkServer, String> {
        let java = std::env::var("JAVA").unwrap_or_else(|_| "java".into());
        let cp = classpath();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port();
        let data: PathBuf = dir.path().join("data");
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        let cfg = dir.path().join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=2000\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n\
                 4lw.commands.whitelist=*\nextendedTypesEnabled=true\nmaxClientCnxns=0\n",
                data.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(dir.path().join("zookeeper.log")).map_err(|e| e.to_string())?;
        let child = Command::new(&java)
            .args([
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-Dzookeeper.admin.enableServer=false",
                "-cp",
                &cp,
                "org.apache.zookeeper.server.ZooKeeperServerMain",
            ])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {java} (Java 17 is needed for the reference ZooKeeper): {e}")
            });
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut server = ZkServer { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("java exited with {status}: {}", server.log()));
            }
            // `ruok` answers while the database is still loading; `srvr` reports the
            // version only once the server serves requests.
            if four_letter(addr, "srvr").is_some_and(|s| s.starts_with("Zookeeper version:")) {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "ZooKeeper did not start serving within 30 s: {}",
            server.log()
        ))
    }

    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("zookeeper.log")).unwrap_or_default()
    }
}
