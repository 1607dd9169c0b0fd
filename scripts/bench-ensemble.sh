#!/usr/bin/env bash
# Benchmark a 3-server Wazoo ensemble against a 3-server Apache ZooKeeper 3.8 ensemble
# on this machine, and write the "Ensembles" section of BENCHMARKS.md.
#
#   ./scripts/bench-ensemble.sh                 # ~4 minutes
#   BENCH_SECS=3 ./scripts/bench-ensemble.sh    # shorter measured windows
#
# Both ensembles run on 127.0.0.1 with every write fsynced (ZooKeeper's forceSync=yes,
# Wazoo's raft log), one ensemble at a time, with `wazoo bench` spreading its sessions
# over the three servers. Then, for each ensemble, `wazoo bench-failover` SIGKILLs the
# leader under a write load (BENCH_FAILOVER_RUNS times, a fresh ensemble each time) and
# reports the time from the kill to the first acknowledged write sent after it.
#
# Environment: BENCH_SECS (10) BENCH_WARMUP (2) BENCH_CLIENTS (16) BENCH_DEPTH (8)
#   BENCH_FAILOVER_RUNS (3) BENCH_OUT (BENCHMARKS.md) WAZOO_BIN (skip the release build)
#   ZK_HOME (/usr/share/zookeeper)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/setup.sh
. "$ROOT/scripts/setup.sh"
ensure_test_deps
if [ -z "${WAZOO_BIN:-}" ]; then
    echo "bench-ensemble.sh: building wazoo (release)"
    cargo build --release -p wazoo
    WAZOO_BIN="$CARGO_TARGET_DIR/release/wazoo"
fi
export WAZOO_BIN ZK_HOME="${ZK_HOME:-/usr/share/zookeeper}"
exec python3 "$ROOT/scripts/bench_ensemble.py"
