#!/usr/bin/env bash
# Benchmark Wazoo against Apache ZooKeeper 3.8 (Debian's) on this machine and write
# BENCHMARKS.md.
#
#   ./scripts/bench.sh                  # full run (~3 minutes), writes ./BENCHMARKS.md
#   BENCH_SECS=3 ./scripts/bench.sh     # shorter measured windows
#
# What it does:
#   1. builds `wazoo` in release mode;
#   2. starts Debian's ZooKeeper (standalone, forceSync=yes, the default; a fresh
#      dataDir on the local disk; 127.0.0.1, free port) and runs every workload below
#      with `wazoo bench`, then stops it;
#   3. starts Wazoo (release, a fresh data dir on the same disk; every write fsynced
#      through raft/RocksDB as always) and runs the same workloads, then stops it;
#   4. writes BENCHMARKS.md: machine, date, exact commands, one table.
# Only one server runs at a time, and the load generator shares the machine with it.
#
# Environment:
#   BENCH_SECS (10)  BENCH_WARMUP (2)  BENCH_CLIENTS (16)  BENCH_DEPTH (8)
#   BENCH_OUT (BENCHMARKS.md in the repository root)
#   BENCH_SEED (random; printed and recorded: it drives the mixed read/write choice)
#   ZK_HOME (/usr/share/zookeeper), ZK_CLASSPATH (CLASSPATH from $ZK_HOME/bin/zkEnv.sh)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/setup.sh
. "$ROOT/scripts/setup.sh"
ensure_test_deps

SECS="${BENCH_SECS:-10}"
WARMUP="${BENCH_WARMUP:-2}"
CLIENTS="${BENCH_CLIENTS:-16}"
DEPTH="${BENCH_DEPTH:-8}"
OUT="${BENCH_OUT:-$ROOT/BENCHMARKS.md}"
SEED="${BENCH_SEED:-$(od -An -N6 -tu8 /dev/urandom | tr -d ' ')}"
ZK_HOME="${ZK_HOME:-/usr/share/zookeeper}"
echo "bench.sh: seed $SEED (set BENCH_SEED=$SEED to repeat the mixed workload's choices)"

# workload clients depth: the high-concurrency set, then one session, one request at a
# time (the latency of a single acknowledged write, fsync included).
RUNS=(
    "write $CLIENTS $DEPTH"
    "read $CLIENTS $DEPTH"
    "mixed $CLIENTS $DEPTH"
    "create-delete $CLIENTS $DEPTH"
    "write 1 1"
    "read 1 1"
)

# Wazoo only: a no-op recipe call, compared with setData ("write") at the same load.
WAZOO_ONLY_RUNS=(
    "recipe-call $CLIENTS $DEPTH"
    "recipe-call 1 1"
)

echo "bench.sh: building wazoo (release) and the recipes"
cargo build --release -p wazoo
WAZOO="$CARGO_TARGET_DIR/release/wazoo"
RECIPES_DIR="$("$ROOT/scripts/build-recipes.sh" | tail -n 1)"
export WAZOO_RECIPES_DIR="$RECIPES_DIR"

# Temporary files on the local disk (not tmpfs: fsync must cost what it costs).
WORK="$(mktemp -d "${TMPDIR:-/tmp}/wazoo-bench.XXXXXX")"
SERVER_PID=""
stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# four_letter PORT WORD: the server's answer, or nothing.
four_letter() {
    python3 - "$1" "$2" <<'EOF' 2>/dev/null || true
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
s.sendall(sys.argv[2].encode())
out = b""
while True:
    b = s.recv(4096)
    if not b:
        break
    out += b
print(out.decode(errors="replace"))
EOF
}

zk_classpath() {
    local cp="${ZK_CLASSPATH:-}"
    if [ -z "$cp" ] && [ -f "$ZK_HOME/bin/zkEnv.sh" ]; then
        cp="$(bash -c '. "$1" >/dev/null 2>&1; printf %s "$CLASSPATH"' _ "$ZK_HOME/bin/zkEnv.sh")"
    fi
    [ -n "$cp" ] || cp="/etc/zookeeper/conf:/usr/share/java/zookeeper.jar"
    # Debian's zookeeper.jar has no slf4j binding; slf4j-simple logs to the log file.
    [ -f /usr/share/java/slf4j-simple.jar ] && cp="$cp:/usr/share/java/slf4j-simple.jar"
    printf %s "$cp"
}

ZK_CMD=""
start_zookeeper() {
    local port data cfg
    port="$(free_port)"
    data="$WORK/zookeeper-data"
    mkdir -p "$data"
    cfg="$WORK/zoo.cfg"
    # forceSync is left at its default (yes): every transaction is fsynced before it is
    # acknowledged, as Wazoo does.
    cat >"$cfg" <<EOF
tickTime=2000
dataDir=$data
clientPort=$port
clientPortAddress=127.0.0.1
maxClientCnxns=0
4lw.commands.whitelist=ruok,srvr
admin.enableServer=false
EOF
    ZK_CMD="java -Xms1g -Xmx1g -Dzookeeper.admin.enableServer=false -cp <classpath> org.apache.zookeeper.server.ZooKeeperServerMain $cfg"
    java -Xms1g -Xmx1g -Djava.awt.headless=true -Dzookeeper.admin.enableServer=false \
        -cp "$(zk_classpath)" org.apache.zookeeper.server.ZooKeeperServerMain "$cfg" \
        >"$WORK/zookeeper.log" 2>&1 </dev/null &
    SERVER_PID=$!
    local deadline=$((SECONDS + 60))
    until [ "$(four_letter "$port" ruok)" = imok ]; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
            echo "bench.sh: ZooKeeper did not start; its log:" >&2
            tail -50 "$WORK/zookeeper.log" >&2
            exit 1
        fi
        sleep 0.1 # polling interval while the JVM starts
    done
    SERVER_ADDR="127.0.0.1:$port"
}

WAZOO_CMD=""
start_wazoo() {
    local data="$WORK/wazoo-data" line
    WAZOO_CMD="$WAZOO serve --client-port-address 127.0.0.1 --client-port 0 --data-dir $data --set maxClientCnxns=0"
    mkfifo "$WORK/wazoo.ready"
    "$WAZOO" serve --client-port-address 127.0.0.1 --client-port 0 --data-dir "$data" --set maxClientCnxns=0 \
        >"$WORK/wazoo.ready" 2>"$WORK/wazoo.log" </dev/null &
    SERVER_PID=$!
    # The ready line carries the port; wait for it (the read ends at EOF if wazoo dies).
    exec 7<"$WORK/wazoo.ready"
    if ! IFS= read -r -t 120 line <&7 || [[ "$line" != "wazoo: serving ZooKeeper clients on "* ]]; then
        echo "bench.sh: Wazoo did not start (got: ${line:-nothing}); its log:" >&2
        tail -50 "$WORK/wazoo.log" >&2
        exit 1
    fi
    SERVER_ADDR="${line##* }"
}

# Microbenchmark of the recipe runtime alone (instantiate + call), before any server.
echo "bench.sh: recipe runtime microbenchmark"
MICRO="$WORK/micro.txt"
cargo bench -p wazoo --bench recipe_runtime 2>/dev/null | grep 'invocations:' | tee "$MICRO"

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
COMMANDS=()

run_all() { # kind [runs...]
    local kind="$1" run w c d cmd json
    shift
    for run in "$@"; do
        read -r w c d <<<"$run"
        cmd=(bench --servers "$SERVER_ADDR" --workload "$w" --clients "$c" --depth "$d" --secs "$SECS" --warmup-secs "$WARMUP" --value-size 100 --seed "$SEED")
        if [ "$w" = recipe-call ]; then cmd+=(--recipe-wasm "$RECIPES_DIR/noop.wasm"); fi
        echo "bench.sh: [$kind] wazoo ${cmd[*]}"
        COMMANDS+=("[$kind] wazoo ${cmd[*]}")
        json="$("$WAZOO" "${cmd[@]}")"
        echo "  $json"
        python3 -c 'import json, sys; r = json.loads(sys.argv[2]); r["server"] = sys.argv[1]; print(json.dumps(r))' "$kind" "$json" >>"$RESULTS"
    done
}

start_zookeeper
echo "bench.sh: ZooKeeper on $SERVER_ADDR ($(four_letter "${SERVER_ADDR##*:}" srvr | head -1))"
ZK_VERSION="$(four_letter "${SERVER_ADDR##*:}" srvr | head -1 | sed 's/^Zookeeper version: //')"
run_all zookeeper "${RUNS[@]}"
stop_server

start_wazoo
echo "bench.sh: Wazoo on $SERVER_ADDR"
run_all wazoo "${RUNS[@]}" "${WAZOO_ONLY_RUNS[@]}"
stop_server
# Exit 7's fd.
exec 7<&-

LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- BENCHMARKS.md ---
CPU_MODEL="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
DISK="$(df -hT "$WORK" | tail -1 | awk '{print $1" ("$2"), "$3" total, "$5" free, mounted on "$7}')"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ]; then COMMIT="$COMMIT (with uncommitted changes)"; fi
export CLIENTS DEPTH CPU_MODEL DISK COMMIT ZK_VERSION SEED SECS WARMUP ZK_CMD WAZOO_CMD LOAD_BEFORE LOAD_AFTER
export NPROC="$(nproc)" MEM="$(free -g | awk '/^Mem:/{print $2" GiB"}')" KERNEL="$(uname -r)"
export RUSTC="$(rustc --version)" JAVA="$(java -version 2>&1 | head -1)" DATE="$(date -u '+%Y-%m-%d %H:%M UTC')"
printf '%s\n' "${COMMANDS[@]}" >"$WORK/commands.txt"
python3 - "$RESULTS" "$WORK/commands.txt" "$OUT" "$MICRO" <<'EOF'
import json, os, sys
results = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
commands = [l.rstrip("\n") for l in open(sys.argv[2]) if l.strip()]
e = os.environ
by = {}
for r in results:
    by.setdefault((r["workload"], r["clients"], r["depth"]), {})[r["server"]] = r

def lat(r):
    return f'{r["p50_us"]/1000:.2f} / {r["p99_us"]/1000:.2f} / {r["p999_us"]/1000:.2f}'

rows = []
notes = []
for (w, c, d), s in by.items():
    zk, wz = s.get("zookeeper"), s.get("wazoo")
    if not (zk and wz):
        continue
    ratio = wz["ops_per_sec"] / zk["ops_per_sec"] if zk["ops_per_sec"] else float("nan")
    rows.append(f'| {w} | {c} × {d} | {zk["ops_per_sec"]:,.0f} | {wz["ops_per_sec"]:,.0f} | **{ratio:.2f}×** | {lat(zk)} | {lat(wz)} | {zk["errors"]} / {wz["errors"]} |')
    verdict = "faster" if ratio >= 1.05 else "slower" if ratio <= 0.95 else "about as fast"
    notes.append(f"- **{w}, {c} × {d}**: Wazoo is {verdict} than ZooKeeper ({ratio:.2f}× its throughput; p99 {wz['p99_us']/1000:.2f} ms vs {zk['p99_us']/1000:.2f} ms).")

recipe_rows = []
recipe_notes = []
for (w, c, d), s in by.items():
    call, write = s.get("wazoo"), by.get(("write", c, d), {}).get("wazoo")
    if w != "recipe-call" or not (call and write):
        continue
    ratio = call["p50_us"] / write["p50_us"] if write["p50_us"] else float("nan")
    recipe_rows.append(f'| {c} × {d} | {write["ops_per_sec"]:,.0f} | {call["ops_per_sec"]:,.0f} | {lat(write)} | {lat(call)} | **{ratio:.2f}×** | {write["errors"]} / {call["errors"]} |')
    verdict = "meets" if ratio <= 1.2 else "misses"
    recipe_notes.append(f"- **{c} × {d}**: a no-op recipe call's p50 latency is {ratio:.2f}× setData's, which {verdict} the goal of at most 1.2×.")
micro = [l.strip() for l in open(sys.argv[4]) if l.strip()]

text = f"""# Benchmarks: Wazoo vs Apache ZooKeeper

Generated by `scripts/bench.sh` on {e['DATE']} (commit {e['COMMIT']}). Re-run it to
regenerate this file; numbers from a different machine are not comparable.

## Machine

| | |
|---|---|
| CPUs (`nproc`) | {e['NPROC']} |
| CPU model | {e['CPU_MODEL']} |
| memory | {e['MEM']} |
| disk holding both data dirs (`df`) | {e['DISK']} |
| kernel | {e['KERNEL']} |
| Wazoo build | `cargo build --release` with {e['RUSTC']} |
| ZooKeeper | {e['ZK_VERSION']} (Debian), {e['JAVA']} |
| load average (1/5/15 min) before / after the runs | {e['LOAD_BEFORE']} / {e['LOAD_AFTER']} |

The load generator (`wazoo bench`) runs on the same 2 cores as the server under test,
so both servers are measured with a competing client process; only one server runs
at a time.

## Setup

- **ZooKeeper**: standalone, `forceSync=yes` (the default: the transaction log is
  fsynced before a write is acknowledged), fresh `dataDir`, 1 GiB heap:
  `{e['ZK_CMD']}`
- **Wazoo**: standalone, release build, fresh data dir; every write is committed
  through openraft and fsynced in RocksDB before it is acknowledged:
  `{e['WAZOO_CMD']}`
- **Load**: `wazoo bench` (crate `wazoo`, `host/src/bench.rs`): N sessions, each
  keeping D requests in flight (pipelined on one connection); {e['WARMUP']} s warmup, then
  {e['SECS']} s measured. An op counts if it started and finished in the measured window;
  latency is send → reply, exact percentiles over all such ops. Values are 100 bytes.
  `write` = setData on the session's own znode, `read` = getData of it,
  `mixed` = 90 % getData / 10 % setData (seeded: seed {e['SEED']}), `create-delete` =
  create a znode then delete it (each counts as one op).

## Results

Throughput in operations per second; latency p50 / p99 / p99.9 in milliseconds.
Ratio = Wazoo ops/s ÷ ZooKeeper ops/s (above 1: Wazoo is faster). The 1 × 1 rows
measure one request at a time (for writes: one fsync each); the 16 × 8 rows measure
throughput with 128 requests in flight, where a server can cover many writes with one
fsync (ZooKeeper's group commit).

| workload | clients × depth | ZooKeeper ops/s | Wazoo ops/s | ratio | ZooKeeper p50 / p99 / p99.9 ms | Wazoo p50 / p99 / p99.9 ms | errors (ZK / Wazoo) |
|---|---|---:|---:|---:|---|---|---|
""" + "\n".join(rows) + """

""" + "\n".join(notes) + """

## Recipes: a no-op recipe call against setData

Both on Wazoo, same clients and depth: `recipe-call` calls function `noop` of
`recipes/noop` (built with the Rust SDK; it decodes its input and replies nil), uploaded
as `bench-noop`; `write` is the setData row above. A recipe call is a log entry like
setData (fsynced, applied in the state machine, where a fresh wasm instance runs it).
Ratio = recipe-call p50 ÷ setData p50 (goal: at most 1.2×).

| clients × depth | setData ops/s | recipe-call ops/s | setData p50 / p99 / p99.9 ms | recipe-call p50 / p99 / p99.9 ms | p50 ratio | errors (setData / call) |
|---|---:|---:|---|---|---:|---|
""" + "\n".join(recipe_rows) + """

""" + "\n".join(recipe_notes) + """

Runtime alone (`cargo bench -p wazoo --bench recipe_runtime`, release, no server):
fresh instance + input encoding + call, per invocation (goal: at most 20 µs):

```
""" + "\n".join(micro) + """
```

## Exact commands

""" + f"Everything above: `BENCH_SECS={e['SECS']} BENCH_WARMUP={e['WARMUP']} BENCH_CLIENTS={e['CLIENTS']} BENCH_DEPTH={e['DEPTH']} BENCH_SEED={e['SEED']} ./scripts/bench.sh`." + """
Each load run, against the server named in brackets:

```
""" + "\n".join(commands) + """
```

Raw results (one JSON line per run, as printed by `wazoo bench`, plus the server):

```
""" + "\n".join(json.dumps(r) for r in results) + """
```
"""
open(sys.argv[3], "w").write(text)
print(f"bench.sh: wrote {sys.argv[3]}")
EOF
