#!/usr/bin/env bash
# Run the whole Wazoo test suite (installs what is missing first).
#
#   ./scripts/test.sh
#
# Phases, all of which run even when an earlier one failed:
#   setup        apt packages, Python venv (scripts/setup.sh)
#   recipes      build the wasm recipes (recipes/*) into $WAZOO_RECIPES_DIR and run
#                their native tests (scripts/build-recipes.sh --test); the server's
#                recipe tests load the built modules from there
#   cargo build  cargo build --workspace --all-targets (debug)
#   cargo test   cargo test --workspace --no-fail-fast
#   diff ensemble  the differential scripts against a follower of a 3-server ensemble
#   pytest       tests/python (kazoo and zkCli.sh against Apache ZooKeeper, Wazoo, and a
#                follower of a 3-server Wazoo ensemble)
#   fuzz         cargo-fuzz on the frame decoder, briefly (WAZOO_FUZZ_SECS, default 20)
# Exits non-zero if any phase failed, after printing a summary with each phase's time.
#
# Useful environment:
#   PYTEST_ADDOPTS="-k zookeeper"   pass options to pytest (e.g. only the ZooKeeper half)
#   WAZOO_CACHE_DIR, CARGO_TARGET_DIR   see scripts/setup.sh
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/setup.sh
. "$ROOT/scripts/setup.sh"

export PYTHONDONTWRITEBYTECODE=1

PHASE_NAMES=()
PHASE_STATUS=()
# Everything the phases print, to count the tests at the end.
LOG="$(mktemp "${TMPDIR:-/tmp}/wazoo-test.XXXXXX")"
trap 'rm -f "$LOG"' EXIT
PHASE_SECS=()
T0=$SECONDS

record() { # name status secs
    PHASE_NAMES+=("$1")
    PHASE_STATUS+=("$2")
    PHASE_SECS+=("$3")
    printf '\n<== %s: %s in %ss\n' "$1" "$2" "$3"
}

# phase NAME TIMEOUT_SECS CMD...: runs CMD (a program, not a shell function) with a
# time limit, so a hung test cannot eat CI's whole budget.
phase() {
    local name="$1" limit="$2" start=$SECONDS rc status
    shift 2
    printf '\n==> %s: %s\n' "$name" "$*"
    timeout -k 30 "$limit" "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    case "$rc" in
    0) status=ok ;;
    124 | 137) status="FAILED (timed out after ${limit}s)" ;;
    *) status="FAILED (exit $rc)" ;;
    esac
    record "$name" "$status" $((SECONDS - start))
}

# --- setup (in this shell: it exports PATH/CARGO_TARGET_DIR) ---
printf '==> setup\n'
start=$SECONDS
setup_ok=1
ensure_test_deps || setup_ok=0
ensure_python_venv || setup_ok=0
ensure_deploy_lint_tools || setup_ok=0
if compgen -G "$ROOT/recipes/*/Cargo.toml" >/dev/null; then
    ensure_wasm_toolchain || setup_ok=0
fi
if [ "$setup_ok" = 1 ]; then record setup ok $((SECONDS - start)); else record setup FAILED $((SECONDS - start)); fi

export WAZOO_BIN="$CARGO_TARGET_DIR/debug/wazoo"
export ZK_HOME="${ZK_HOME:-/usr/share/zookeeper}"
printf 'CARGO_TARGET_DIR=%s\nWAZOO_BIN=%s\nZK_HOME=%s\nWAZOO_VENV=%s\n' \
    "$CARGO_TARGET_DIR" "$WAZOO_BIN" "$ZK_HOME" "$WAZOO_VENV"

# --- wasm recipes (before cargo test, which runs them in the server) ---
export WAZOO_RECIPES_DIR="${WAZOO_RECIPES_DIR:-$WAZOO_CACHE_DIR/recipes}"
phase "recipes" 1800 "$ROOT/scripts/build-recipes.sh" --test

# --- Rust ---
phase "cargo build" 2400 cargo build --workspace --all-targets
phase "cargo test" 1500 cargo test --workspace --no-fail-fast
# The differential scripts again, with the client on a follower of a 3-server ensemble.
phase "diff ensemble" 900 env WAZOO_DIFF_CANDIDATE=wazoo-ensemble \
    cargo test -p wazoo-tests --test differential --no-fail-fast

# --- Python: kazoo and zkCli.sh against both servers ---
phase "pytest" 1500 "$WAZOO_VENV/bin/python" -m pytest "$ROOT/tests/python" \
    -p no:cacheprovider -ra -v --durations=10 --timeout=180

# --- fuzz: the frame decoder under libFuzzer, briefly (longer: scripts/fuzz.sh SECS) ---
phase "fuzz" 1200 "$ROOT/scripts/fuzz.sh" "${WAZOO_FUZZ_SECS:-20}"

# --- summary ---
printf '\n==== test.sh summary ====\n'
failed=()
for i in "${!PHASE_NAMES[@]}"; do
    printf '  %-12s %-32s %6ss\n' "${PHASE_NAMES[$i]}" "${PHASE_STATUS[$i]}" "${PHASE_SECS[$i]}"
    [ "${PHASE_STATUS[$i]}" = ok ] || failed+=("${PHASE_NAMES[$i]}")
done
printf '  %-12s %-32s %6ss\n' total "" $((SECONDS - T0))
# Test counts from cargo ("test result: ok. N passed; M failed") and pytest ("N passed",
# "M failed" on its closing line).
cargo_counts=$(grep -E '^test result: ' "$LOG" | sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/')
pytest_line=$(grep -E '^=+ .*(passed|failed).* in [0-9.]+s' "$LOG" | tail -n 1)
py_passed=$(printf '%s' "$pytest_line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || true)
py_failed=$(printf '%s' "$pytest_line" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+' || true)
total_passed=$(( ${py_passed:-0} + $(printf '%s\n' "$cargo_counts" | awk '{s+=$1} END {print s+0}') ))
total_failed=$(( ${py_failed:-0} + $(printf '%s\n' "$cargo_counts" | awk '{s+=$2} END {print s+0}') ))
if [ "${#failed[@]}" -gt 0 ]; then
    printf 'test.sh: FAILED phases: %s\n' "$(IFS=,; echo "${failed[*]}")"
    printf 'tests: %d passed, %d failed\n' "$total_passed" "$total_failed"
    exit 1
fi
printf 'test.sh: all phases passed\n'
printf 'tests: %d passed, %d failed\n' "$total_passed" "$total_failed"
