//! Hand-rolled Prometheus primitives (a counter, a fixed-bucket histogram) and the
//! text exposition format 0.0.4 encoder behind `GET /metrics`.
//!
//! Everything is a relaxed atomic: recording on a hot path costs a few uncontended
//! atomic adds, and a scrape reads whatever values are current (no cross-metric
//! snapshot consistency, as with any Prometheus client).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use wazoo_proto::consts::op;

/// Upper bounds, in seconds, of every latency histogram (`+Inf` is implied).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
const NB: usize = LATENCY_BUCKETS.len();

/// A latency histogram over [`LATENCY_BUCKETS`].
pub struct Histogram {
    /// Non-cumulative per-bucket counts; the last slot is `+Inf`.
    buckets: [AtomicU64; NB + 1],
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub const fn new() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; NB + 1],
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(NB);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// Writes the `_bucket`, `_sum` and `_count` samples; `labels` is either empty or
    /// `key="value",...` without braces.
    fn encode_samples(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Relaxed);
            let le = match LATENCY_BUCKETS.get(i) {
                Some(v) => format!("{v}"),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// Client opcodes with their ZooKeeper names, the `op` label of request metrics.
pub const OPCODES: &[(i32, &str)] = &[
    (op::CREATE, "create"),
    (op::DELETE, "delete"),
    (op::EXISTS, "exists"),
    (op::GET_DATA, "getData"),
    (op::SET_DATA, "setData"),
    (op::GET_ACL, "getACL"),
    (op::SET_ACL, "setACL"),
    (op::GET_CHILDREN, "getChildren"),
    (op::SYNC, "sync"),
    (op::PING, "ping"),
    (op::GET_CHILDREN2, "getChildren2"),
    (op::CHECK, "check"),
    (op::MULTI, "multi"),
    (op::CREATE2, "create2"),
    (op::RECONFIG, "reconfig"),
    (op::CHECK_WATCHES, "checkWatches"),
    (op::REMOVE_WATCHES, "removeWatches"),
    (op::CREATE_CONTAINER, "createContainer"),
    (op::DELETE_CONTAINER, "deleteContainer"),
    (op::CREATE_TTL, "createTTL"),
    (op::MULTI_READ, "multiRead"),
    (op::AUTH, "auth"),
    (op::SET_WATCHES, "setWatches"),
    (op::SASL, "sasl"),
    (op::GET_EPHEMERALS, "getEphemerals"),
    (op::GET_ALL_CHILDREN_NUMBER, "getAllChildrenNumber"),
    (op::SET_WATCHES2, "setWatches2"),
    (op::ADD_WATCH, "addWatch"),
    (op::WHO_AM_I, "whoAmI"),
    (op::RECIPE_UPLOAD, "recipeUpload"),
    (op::RECIPE_LIST, "recipeList"),
    (op::RECIPE_DELETE, "recipeDelete"),
    (op::RECIPE_CALL, "recipeCall"),
    (op::RECIPE_ADOPT_RUNTIME, "recipeAdoptRuntime"),
    (op::RECIPE_RUNTIME_INFO, "recipeRuntimeInfo"),
    (op::CLOSE_SESSION, "closeSession"),
];
const NOPS: usize = OPCODES.len();

/// Request count and latency per opcode (one extra slot for opcodes not in
/// [`OPCODES`]).
pub struct RequestMetrics {
    latency: [Histogram; NOPS + 1],
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            latency: [const { Histogram::new() }; NOPS + 1],
        }
    }
}

impl RequestMetrics {
    /// Records one answered request of opcode `opcode`, received `elapsed` ago.
    pub fn observe(&self, opcode: i32, elapsed: Duration) {
        let i = OPCODES
            .iter()
            .position(|(o, _)| *o == opcode)
            .unwrap_or(NOPS);
        self.latency[i].observe(elapsed);
    }

    /// Requests answered so far for `opcode`.
    pub fn count(&self, opcode: i32) -> u64 {
        OPCODES
            .iter()
            .position(|(o, _)| *o == opcode)
            .map_or(0, |i| self.latency[i].count())
    }

    fn labelled(&self) -> impl Iterator<Item = (&'static str, &Histogram)> {
        OPCODES
            .iter()
            .map(|(_, n)| *n)
            .chain(std::iter::once("unknown"))
            .zip(self.latency.iter())
            // Opcodes never seen are left out, to keep scrapes short.
            .filter(|(_, h)| h.count() > 0)
    }
}

/// Builds one exposition: `# HELP`/`# TYPE` headers then samples, per family.
#[derive(Default)]
pub struct Encoder {
    out: String,
}

impl Encoder {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.header(name, "gauge", help);
        let _ = writeln!(self.out, "{name} {value}");
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, "counter", help);
        let _ = writeln!(self.out, "{name} {value}");
    }

    /// A gauge family with one label.
    pub fn gauge_by(&mut self, name: &str, help: &str, label: &str, values: &[(&str, f64)]) {
        self.header(name, "gauge", help);
        for (l, v) in values {
            let _ = writeln!(self.out, "{name}{{{label}=\"{l}\"}} {v}");
        }
    }

    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.header(name, "histogram", help);
        h.encode_samples(&mut self.out, name, "");
    }

    /// The per-recipe families: invocations, errors by name, fuel, parked calls.
    pub fn recipes(
        &mut self,
        counters: &std::collections::BTreeMap<String, crate::recipe::stats::ModuleCounters>,
        parked: &[(String, f64)],
    ) {
        self.header(
            "wazoo_recipe_calls_total",
            "counter",
            "Recipe calls run on this server, by recipe.",
        );
        for (m, c) in counters {
            let _ = writeln!(
                self.out,
                "wazoo_recipe_calls_total{{recipe=\"{m}\"}} {}",
                c.calls
            );
        }
        self.header(
            "wazoo_recipe_events_total",
            "counter",
            "Recipe event handler runs (node, session, timer events), by recipe.",
        );
        for (m, c) in counters {
            let _ = writeln!(
                self.out,
                "wazoo_recipe_events_total{{recipe=\"{m}\"}} {}",
                c.events
            );
        }
        self.header(
            "wazoo_recipe_errors_total",
            "counter",
            "Failed recipe invocations (writes discarded), by recipe and error name.",
        );
        for (m, c) in counters {
            for (e, n) in &c.errors {
                let _ = writeln!(
                    self.out,
                    "wazoo_recipe_errors_total{{recipe=\"{m}\",error=\"{e}\"}} {n}"
                );
            }
        }
        self.header(
            "wazoo_recipe_fuel_used_total",
            "counter",
            "Wasm fuel consumed by recipe invocations, by recipe.",
        );
        for (m, c) in counters {
            let _ = writeln!(
                self.out,
                "wazoo_recipe_fuel_used_total{{recipe=\"{m}\"}} {}",
                c.fuel
            );
        }
        self.header(
            "wazoo_recipe_parked_calls",
            "gauge",
            "Recipe calls parked (waiting for a later run to complete them), by recipe.",
        );
        for (m, n) in parked {
            let _ = writeln!(self.out, "wazoo_recipe_parked_calls{{recipe=\"{m}\"}} {n}");
        }
    }

    /// `<prefix>_total{op}` counters and the `<latency>{op}` histogram family.
    pub fn requests(&mut self, total: &str, latency: &str, m: &RequestMetrics) {
        self.header(total, "counter", "Client requests answered, by opcode.");
        for (op, h) in m.labelled() {
            let _ = writeln!(self.out, "{total}{{op=\"{op}\"}} {}", h.count());
        }
        self.header(
            latency,
            "histogram",
            "Time from reading a client request to queueing its reply, by opcode.",
        );
        for (op, h) in m.labelled() {
            h.encode_samples(&mut self.out, latency, &format!("op=\"{op}\""));
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Process-wide: time around each `flush_wal(true)` of the raft log's fsync thread
/// (one fsync may cover many appends). Shared by every server in the process.
pub static RAFT_LOG_FSYNC: Histogram = Histogram::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let mut e = Encoder::default();
        e.histogram("x_seconds", "help", &h);
        let text = e.finish();
        assert!(
            text.contains("x_seconds_bucket{le=\"0.0001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{le=\"0.005\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("x_seconds_bucket{le=\"10\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("x_seconds_count 3\n"), "{text}");
    }
}
