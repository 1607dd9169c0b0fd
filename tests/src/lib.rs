//! Cross-server test harness for Wazoo.
//!
//! * [`ZooKeeperProcess`]: Debian's Apache ZooKeeper 3.8, started directly with
//!   `java ... ZooKeeperServerMain` on 127.0.0.1 with a free port and a temp data dir, as
//!   the reference for differential tests.
//! * [`WazooProcess`]: `$WAZOO_BIN serve ...` on a given data dir, with [`WazooProcess::kill9`]
//!   and [`WazooProcess::restart`] for crash tests.
//! * [`four_letter`]: ZooKeeper's four-letter admin words (`ruok`, `srvr`, ...).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

pub mod diff;
pub mod ensemble;
pub mod proxy;
pub mod wazoo_process;
pub mod zookeeper;

pub use ensemble::Ensemble;
pub use wazoo_process::WazooProcess;
pub use zookeeper::ZooKeeperProcess;

/// Sends a four-letter word (`ruok`, `srvr`, `stat`, `mntr`, ...) and returns the whole
/// reply (the server closes the connection after answering).
pub fn four_letter(addr: SocketAddr, cmd: &str) -> anyhow::Result<String> {
    let timeout = Duration::from_secs(10);
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr} for `{cmd}`"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(cmd.as_bytes())?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)
        .with_context(|| format!("reading the reply to `{cmd}` from {addr}"))?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// A loopback port that was free a moment ago, for servers that cannot bind port 0
/// themselves (ZooKeeper refuses `clientPort=0`). Callers retry if it got taken.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The last `n` lines of a log file (or why it could not be read).
pub fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}
