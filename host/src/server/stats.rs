//! Server counters for the four-letter words (`srvr`, `stat`, `mntr`) and the
//! Prometheus metrics of the admin server (`crate::admin`).

use crate::admin::metrics::{Histogram, RequestMetrics};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

pub struct ServerStats {
    pub started: Instant,
    pub packets_received: AtomicU64,
    pub packets_sent: AtomicU64,
    pub outstanding: AtomicI64,
    pub connections: AtomicI64,
    latency_count: AtomicU64,
    latency_total_us: AtomicU64,
    latency_min_us: AtomicU64,
    latency_max_us: AtomicU64,
    /// Count and latency of answered requests, by opcode.
    pub requests: RequestMetrics,
    /// Time from proposing an operation to its applied result (shared with the
    /// [`super::Proposer`]).
    pub commit_latency: Arc<Histogram>,
    /// Sessions this server (as leader) decided to expire (counted once each, before
    /// the expiry is proposed through raft).
    pub session_expirations: AtomicU64,
    /// The last snapshot raft reported (index) and when this server first saw it.
    pub last_snapshot: parking_lot::Mutex<Option<(u64, SystemTime)>>,
}

impl Default for ServerStats {
    fn default() -> Self {
        ServerStats {
            started: Instant::now(),
            packets_received: AtomicU64::new(0),
            packets_sent: AtomicU64::new(0),
            outstanding: AtomicI64::new(0),
            connections: AtomicI64::new(0),
            latency_count: AtomicU64::new(0),
            latency_total_us: AtomicU64::new(0),
            latency_min_us: AtomicU64::new(u64::MAX),
            latency_max_us: AtomicU64::new(0),
            requests: RequestMetrics::default(),
            commit_latency: Arc::new(Histogram::new()),
            session_expirations: AtomicU64::new(0),
            last_snapshot: parking_lot::Mutex::new(None),
        }
    }
}

impl ServerStats {
    /// A request of opcode `opcode` answered: counted in the per-opcode metrics and
    /// in the four-letter-word latency.
    pub fn record_request(&self, opcode: i32, started: Instant) {
        let elapsed = started.elapsed();
        self.requests.observe(opcode, elapsed);
        self.record_latency_us(elapsed.as_micros() as u64);
    }

    pub fn record_latency(&self, started: Instant) {
        self.record_latency_us(started.elapsed().as_micros() as u64);
    }

    fn record_latency_us(&self, us: u64) {
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_total_us.fetch_add(us, Relaxed);
        self.latency_min_us.fetch_min(us, Relaxed);
        self.latency_max_us.fetch_max(us, Relaxed);
    }

    /// (min, avg, max) in milliseconds, as ZooKeeper prints them.
    pub fn latency_ms(&self) -> (f64, f64, f64) {
        let n = self.latency_count.load(Relaxed);
        if n == 0 {
            return (0.0, 0.0, 0.0);
        }
        let min = self.latency_min_us.load(Relaxed) as f64 / 1000.0;
        let max = self.latency_max_us.load(Relaxed) as f64 / 1000.0;
        let avg = self.latency_total_us.load(Relaxed) as f64 / n as f64 / 1000.0;
        (min, avg, max)
    }

    pub fn reset_latency(&self) {
        self.latency_count.store(0, Relaxed);
        self.latency_total_us.store(0, Relaxed);
        self.latency_min_us.store(u64::MAX, Relaxed);
        self.latency_max_us.store(0, Relaxed);
    }
}
