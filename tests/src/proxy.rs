//! A fault-injecting TCP proxy for the peer links of an [`crate::Ensemble`].
//!
//! Each member's `server.N` line names a proxy port; the proxy forwards every accepted
//! connection to the member's real peer port (`raft.peerListenAddress`). Members dial
//! their peers from distinct loopback addresses (`raft.peerSourceAddress=127.0.0.(10+id)`),
//! so the proxy knows who is connecting from the source address of the accepted
//! connection. Connections from any other address (the harness, `wazoo admin`) are
//! never cut.
//!
//! [`PeerProxy::cut`] blocks the connections member `from` dials to member `to`: the
//! open ones are closed at once and new ones are closed as soon as they are accepted
//! (the dialer sees its connection drop, as after a crash of the other side). A peer
//! connection carries requests one way and their responses back, so cutting both
//! `(a, b)` and `(b, a)` isolates `a` and `b` from each other. [`PeerProxy::heal`]
//! lets new connections through again.
//!
//! Plain threads, so the proxy keeps forwarding however busy the test's runtime is.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The loopback address member `id` dials its peers from.
pub fn source_ip(id: u64) -> Ipv4Addr {
    assert!(id < 200, "member ids of proxied ensembles stay below 200");
    Ipv4Addr::new(127, 0, 0, 10 + id as u8)
}

/// The member a peer connection comes from (0: not a member).
fn member_of(addr: SocketAddr) -> u64 {
    match addr.ip() {
        IpAddr::V4(v4) if v4.octets()[..3] == [127, 0, 0] && v4.octets()[3] > 10 => {
            u64::from(v4.octets()[3]) - 10
        }
        _ => 0,
    }
}

struct Link {
    from: u64,
    to: u64,
    /// Both sockets of the forwarded connection (accepted side, upstream side).
    sockets: [TcpStream; 2],
}

#[derive(Default)]
struct State {
    cut: Mutex<BTreeSet<(u64, u64)>>,
    links: Mutex<HashMap<u64, Link>>,
    next_link: AtomicU64,
    stopped: AtomicBool,
    /// Connections refused because their pair was cut (for test assertions/logs).
    refused: AtomicU64,
}

/// The proxies of one ensemble: one listener per member.
pub struct PeerProxy {
    state: Arc<State>,
    listeners: Mutex<Vec<SocketAddr>>,
}

impl Default for PeerProxy {
    fn default() -> Self {
        Self::new()
    }
}

impl PeerProxy {
    pub fn new() -> PeerProxy {
        PeerProxy {
            state: Arc::default(),
            listeners: Mutex::new(Vec::new()),
        }
    }

    /// Starts a proxy for member `to` whose real peer port is `upstream`; returns the
    /// proxy's address (what the member's `server.N` line must name).
    pub fn listen(&self, to: u64, upstream: SocketAddr) -> anyhow::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        self.listeners.lock().unwrap().push(addr);
        let state = self.state.clone();
        std::thread::Builder::new()
            .name(format!("peer-proxy-{to}"))
            .spawn(move || accept_loop(state, listener, to, upstream))?;
        Ok(addr)
    }

    /// Blocks the connections `from` dials to `to` (closing the open ones).
    pub fn cut(&self, from: u64, to: u64) {
        self.state.cut.lock().unwrap().insert((from, to));
        let links = self.state.links.lock().unwrap();
        for l in links.values().filter(|l| l.from == from && l.to == to) {
            for s in &l.sockets {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// Cuts `id` off from every other member in `ids`, both ways.
    pub fn isolate(&self, id: u64, ids: impl IntoIterator<Item = u64>) {
        for other in ids.into_iter().filter(|o| *o != id) {
            self.cut(id, other);
            self.cut(other, id);
        }
    }

    /// Lets every pair connect again.
    pub fn heal(&self) {
        self.state.cut.lock().unwrap().clear();
    }

    /// How many connections were refused because their pair was cut.
    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::Relaxed)
    }
}

impl Drop for PeerProxy {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        for l in self.state.links.lock().unwrap().values() {
            for s in &l.sockets {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        // Wake the accept loops so they see `stopped`.
        for addr in self.listeners.lock().unwrap().iter() {
            let _ = TcpStream::connect_timeout(addr, Duration::from_millis(200));
        }
    }
}

fn accept_loop(state: Arc<State>, listener: TcpListener, to: u64, upstream: SocketAddr) {
    for stream in listener.incoming() {
        if state.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(down) = stream else { continue };
        let from = down.peer_addr().map(member_of).unwrap_or(0);
        if state.cut.lock().unwrap().contains(&(from, to)) {
            state.refused.fetch_add(1, Ordering::Relaxed);
            let _ = down.shutdown(Shutdown::Both);
            continue;
        }
        let state = state.clone();
        std::thread::spawn(move || {
            let Ok(up) = TcpStream::connect_timeout(&upstream, Duration::from_secs(1)) else {
                let _ = down.shutdown(Shutdown::Both);
                return;
            };
            let _ = up.set_nodelay(true);
            let _ = down.set_nodelay(true);
            let (Ok(d2), Ok(u2), Ok(d3), Ok(u3)) = (
                down.try_clone(),
                up.try_clone(),
                down.try_clone(),
                up.try_clone(),
            ) else {
                return;
            };
            let id = state.next_link.fetch_add(1, Ordering::Relaxed);
            {
                // Register under the cut lock, so a cut racing with this accept either
                // sees the link or is seen here.
                let cut = state.cut.lock().unwrap();
                if cut.contains(&(from, to)) {
                    let _ = down.shutdown(Shutdown::Both);
                    let _ = up.shutdown(Shutdown::Both);
                    return;
                }
                state.links.lock().unwrap().insert(
                    id,
                    Link {
                        from,
                        to,
                        sockets: [d3, u3],
                    },
                );
            }
            let t = std::thread::spawn(move || pipe(d2, u2));
            pipe(up, down);
            let _ = t.join();
            state.links.lock().unwrap().remove(&id);
        });
    }
}

/// Copies `from` → `to` until either side fails, then closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_of_source_address() {
        assert_eq!(member_of("127.0.0.11:5000".parse().unwrap()), 1);
        assert_eq!(member_of("127.0.0.15:5000".parse().unwrap()), 5);
        assert_eq!(member_of("127.0.0.1:5000".parse().unwrap()), 0);
        assert_eq!(member_of("[::1]:5000".parse().unwrap()), 0);
    }

    #[test]
    fn forwards_cuts_and_heals() {
        // An echo server as the upstream.
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in echo.incoming() {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut r, &mut s);
                });
            }
        });
        let proxy = PeerProxy::new();
        let addr = proxy.listen(2, upstream).unwrap();
        let dial = |id: u64| {
            let sock = dial_from(source_ip(id), addr);
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            sock
        };
        let roundtrip = |s: &mut TcpStream| -> bool {
            if s.write_all(b"ping").is_err() {
                return false;
            }
            let mut b = [0u8; 4];
            s.read_exact(&mut b).is_ok() && &b == b"ping"
        };
        let mut a = dial(1);
        assert!(roundtrip(&mut a));
        let mut c = dial(3);
        assert!(roundtrip(&mut c));
        proxy.cut(1, 2);
        // The open link from 1 is closed, the one from 3 is untouched.
        assert!(!roundtrip(&mut a));
        assert!(roundtrip(&mut c));
        let mut a2 = dial(1);
        assert!(!roundtrip(&mut a2));
        proxy.heal();
        let mut a3 = dial(1);
        assert!(roundtrip(&mut a3));
        assert!(proxy.refused() >= 1);
    }

    /// Connects to `to` from `source` (std has no bind-before-connect: tokio's socket
    /// on a small runtime does it).
    fn dial_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let s = rt.block_on(async {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind(SocketAddr::new(source.into(), 0)).unwrap();
            s.connect(to).await.unwrap().into_std().unwrap()
        });
        s.set_nonblocking(false).unwrap();
        s
    }
}
