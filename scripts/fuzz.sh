#!/usr/bin/env bash
# Fuzz Wazoo's wire decoders (fuzz/fuzz_targets/frame_decoder.rs) with cargo-fuzz.
#
#   ./scripts/fuzz.sh            # 60 seconds
#   ./scripts/fuzz.sh 600        # 10 minutes
#   FUZZ_TARGET=frame_decoder FUZZ_JOBS=2 ./scripts/fuzz.sh 300
#
# Installs cargo-fuzz (`cargo install cargo-fuzz --locked`) when it is missing; from
# scratch that takes a few minutes on 2 cores. cargo-fuzz passes nightly-only flags
# (-Zsanitizer=address, ...) to rustc: RUSTC_BOOTSTRAP=1 lets the stable toolchain
# accept them, so no nightly toolchain is needed.
#
# The corpus grows in fuzz/corpus/<target>/ (not committed; kept between runs). A crash
# leaves its input in fuzz/artifacts/<target>/ and makes this script exit non-zero; replay
# it with: RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/setup.sh
. "$ROOT/scripts/setup.sh"
ensure_rust
ensure_c_toolchain

SECS="${1:-60}"
TARGET="${FUZZ_TARGET:-frame_decoder}"
JOBS="${FUZZ_JOBS:-1}"
case "$SECS" in '' | *[!0-9]*)
    echo "usage: $0 [SECONDS]" >&2
    exit 2
    ;;
esac

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    start=$SECONDS
    cargo install cargo-fuzz --locked
    echo "fuzz.sh: cargo-fuzz installed in $((SECONDS - start))s"
fi

export RUSTC_BOOTSTRAP=1
# The fuzz crate is its own workspace with its own target directory: its
# sanitizer-instrumented build must not share artifacts with the main one.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$WAZOO_CACHE_DIR/fuzz-target}"
cd "$ROOT"
mkdir -p "fuzz/corpus/$TARGET"
echo "fuzz.sh: cargo fuzz run $TARGET for ${SECS}s ($(cargo fuzz --version))"
EXTRA=()
if [ "$JOBS" -gt 1 ]; then EXTRA=(-jobs="$JOBS" -workers="$JOBS"); fi
cargo fuzz run "$TARGET" "fuzz/corpus/$TARGET" -- \
    -max_total_time="$SECS" -print_final_stats=1 -rss_limit_mb=2048 "${EXTRA[@]}"
echo "fuzz.sh: $TARGET ran ${SECS}s without a crash"
