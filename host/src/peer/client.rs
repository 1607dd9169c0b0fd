//! The dialing side of a peer connection: one TCP connection per remote server,
//! shared by every caller (raft replication, votes, forwarded writes), with responses
//! matched to requests by id.
//!
//! A call that finds no live connection dials one. When the connection fails, every
//! call waiting on it fails at once (its reader drops their reply senders), and the
//! next call dials again, so a restarted peer is reached without any reconnect loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use std::net::{IpAddr, SocketAddr};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};

use super::wire::{self, FrameError, PeerRequest, PeerResponse};

/// How long dialing a peer may take before the call fails as unreachable.
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a call produced no response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("peer {addr} unreachable: {why}")]
    Unreachable { addr: String, why: String },
    #[error("peer {addr}: connection lost before the response")]
    Lost { addr: String },
    #[error("peer {addr}: no response within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("peer message could not be encoded: {0}")]
    Encode(String),
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<PeerResponse>>>>;

struct Conn {
    frames: mpsc::UnboundedSender<Vec<u8>>,
    pending: Pending,
    next_id: AtomicU64,
    broken: Arc<AtomicBool>,
}

/// A handle on one remote server's peer port. Cheap to clone.
#[derive(Clone)]
pub struct PeerClient {
    addr: Arc<str>,
    source: Option<IpAddr>,
    conn: Arc<tokio::sync::Mutex<Option<Arc<Conn>>>>,
}

impl PeerClient {
    pub fn new(addr: &str) -> PeerClient {
        PeerClient::with_source(addr, None)
    }

    /// A client that dials from local address `source` (`raft.peerSourceAddress`).
    pub fn with_source(addr: &str, source: Option<IpAddr>) -> PeerClient {
        PeerClient {
            addr: addr.into(),
            source,
            conn: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `req` and returns a future of its response. The request is on the
    /// connection's queue when this returns, so requests sent one after another by one
    /// task reach the peer in that order.
    pub async fn send(
        &self,
        req: &PeerRequest,
    ) -> Result<oneshot::Receiver<PeerResponse>, CallError> {
        let conn = self.connection().await?;
        let id = conn.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = wire::encode(id, req).map_err(|e| CallError::Encode(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        conn.pending.lock().insert(id, tx);
        if conn.frames.send(frame).is_err() {
            conn.pending.lock().remove(&id);
            conn.broken.store(true, Ordering::Relaxed);
            return Err(CallError::Lost {
                addr: self.addr.to_string(),
            });
        }
        Ok(rx)
    }

    /// Sends `req` and waits up to `timeout` for its response.
    pub async fn call(
        &self,
        req: &PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, CallError> {
        let rx = tokio::time::timeout(timeout, self.send(req))
            .await
            .map_err(|_| CallError::Timeout {
                addr: self.addr.to_string(),
                timeout,
            })??;
        self.wait(rx, timeout).await
    }

    /// Waits up to `timeout` for the response of an earlier [`PeerClient::send`].
    pub async fn wait(
        &self,
        rx: oneshot::Receiver<PeerResponse>,
        timeout: Duration,
    ) -> Result<PeerResponse, CallError> {
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => Err(CallError::Lost {
                addr: self.addr.to_string(),
            }),
            Err(_) => Err(CallError::Timeout {
                addr: self.addr.to_string(),
                timeout,
            }),
        }
    }

    async fn connection(&self) -> Result<Arc<Conn>, CallError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.broken.load(Ordering::Relaxed) {
                return Ok(c.clone());
            }
        }
        *slot = None;
        let unreachable = |why: String| CallError::Unreachable {
            addr: self.addr.to_string(),
            why,
        };
        let stream = tokio::time::timeout(DIAL_TIMEOUT, dial(&self.addr, self.source))
            .await
            .map_err(|_| unreachable(format!("no connection within {DIAL_TIMEOUT:?}")))?
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let (frames, mut frames_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let broken = Arc::new(AtomicBool::new(false));
        let conn = Arc::new(Conn {
            frames,
            pending: pending.clone(),
            next_id: AtomicU64::new(1),
            broken: broken.clone(),
        });
        let addr = self.addr.clone();
        let writer_broken = broken.clone();
        let writer = tokio::spawn(async move {
            while let Some(frame) = frames_rx.recv().await {
                if let Err(e) = wire::write_frame(&mut wr, &frame).await {
                    tracing::debug!(peer = %addr, error = %e, "peer write failed");
                    break;
                }
            }
            writer_broken.store(true, Ordering::Relaxed);
        });
        let addr = self.addr.clone();
        tokio::spawn(async move {
            loop {
                match wire::read_frame::<PeerResponse>(&mut rd).await {
                    Ok(Some((id, resp))) => {
                        if let Some(tx) = pending.lock().remove(&id) {
                            let _ = tx.send(resp);
                        }
                    }
                    Ok(None) => break,
                    Err(FrameError::Decode(e)) => {
                        // A response we cannot read (e.g. a newer peer): fail this
                        // connection rather than leave its caller waiting forever.
                        tracing::warn!(peer = %addr, error = %e, "undecodable peer response; closing");
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(peer = %addr, error = %e, "peer connection closed");
                        break;
                    }
                }
            }
            broken.store(true, Ordering::Relaxed);
            // Dropping the senders fails every waiting call with `Lost`.
            pending.lock().clear();
            writer.abort();
        });
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

async fn dial(addr: &str, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(addr).await;
    };
    let mut last = None;
    for target in tokio::net::lookup_host(addr).await? {
        let socket = if target.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(source, 0))?;
        match socket.connect(target).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("{addr}: no address"))))
}

/// One [`PeerClient`] per address, shared by raft and the forwarder.
#[derive(Clone, Default)]
pub struct PeerPool {
    clients: Arc<Mutex<HashMap<String, PeerClient>>>,
    source: Option<IpAddr>,
}

impl PeerPool {
    /// A pool whose connections are dialed from `source`, if given.
    pub fn new(source: Option<IpAddr>) -> PeerPool {
        PeerPool {
            clients: Arc::default(),
            source,
        }
    }

    pub fn get(&self, addr: &str) -> PeerClient {
        self.clients
            .lock()
            .entry(addr.to_string())
            .or_insert_with(|| PeerClient::with_source(addr, self.source))
            .clone()
    }
}
