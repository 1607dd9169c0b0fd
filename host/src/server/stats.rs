//! Server counters for the four-letter words (`srvr`, `stat`, `mntr`).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

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
        }
    }
}

impl ServerStats {
    pub fn record_latency(&self, started: Instant) {
        let us = started.elapsed().as_micros() as u64;
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
