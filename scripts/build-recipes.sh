#!/usr/bin/env bash
# Builds the wasm recipes (recipes/*) and copies each module to $WAZOO_RECIPES_DIR as
# <name>.wasm, then prints that directory on stdout. Idempotent and quick when nothing
# changed (cargo decides; a .wasm is copied only when it differs).
#
#   ./scripts/build-recipes.sh          # build
#   ./scripts/build-recipes.sh --test   # also run the recipes' native tests (cargo test
#                                       # against wazoo_sdk::testing::Harness)
#
# Toolchain: rustup's cargo with the wasm32-unknown-unknown target when it is installed;
# otherwise (rustup cannot download targets on machines that only reach package
# registries) Debian's rustc-web with its std sources, building std with -Zbuild-std
# (ensure_wasm_toolchain in scripts/setup.sh installs those packages).
#
# Environment:
#   WAZOO_RECIPES_DIR   where the .wasm files go (default ~/.cache/wazoo/recipes)
#   WAZOO_WASM_TARGET_DIR  cargo target dir of the wasm build (default
#                       ~/.cache/wazoo/wasm-target; kept apart from the native one)
#   CARGO_TARGET_DIR    native target dir, for --test (default ~/.cache/wazoo/target)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/setup.sh
. "$ROOT/scripts/setup.sh"

run_tests=0
for arg in "$@"; do
    case "$arg" in
    --test) run_tests=1 ;;
    -h | --help)
        sed -n '2,20p' "$0"
        exit 0
        ;;
    *)
        echo "usage: $0 [--test]" >&2
        exit 2
        ;;
    esac
done

ensure_rust
ensure_wasm_toolchain

WAZOO_RECIPES_DIR="${WAZOO_RECIPES_DIR:-$WAZOO_CACHE_DIR/recipes}"
WAZOO_WASM_TARGET_DIR="${WAZOO_WASM_TARGET_DIR:-$WAZOO_CACHE_DIR/wasm-target}"
MANIFEST="$ROOT/recipes/Cargo.toml"
TARGET=wasm32-unknown-unknown

log() { printf 'build-recipes: %s\n' "$*" >&2; }

# A 64 KiB shadow stack instead of Rust's default 1 MiB: the stack then sits at the
# bottom of linear memory next to the data and heap, so an invocation touches a few
# contiguous pages that the runtime keeps resident between instances (see
# `linear_memory_keep_resident` in host/src/recipe/runtime.rs) instead of faulting in
# pages a megabyte apart on every call. Recipes needing deeper recursion hit the
# runtime's stack limit first anyway.
WASM_LINK_FLAGS="-C link-arg=-zstack-size=65536"

# The wasm build, in its own target dir (never mixed with native builds).
if rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    log "building with rustup's $TARGET target"
    CARGO_TARGET_DIR="$WAZOO_WASM_TARGET_DIR" RUSTFLAGS="$WASM_LINK_FLAGS" \
        cargo build --manifest-path "$MANIFEST" --workspace --release --target "$TARGET"
else
    # A wasm linker: rustup's rust-lld (Debian's rustc-web ships none), else lld's.
    lld=""
    for candidate in \
        "$(rustup run stable rustc --print sysroot 2>/dev/null)/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld" \
        "$(rustc --print sysroot 2>/dev/null)/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld" \
        "$(command -v rust-lld || true)" "$(command -v wasm-ld || true)" \
        "$(compgen -c wasm-ld- 2>/dev/null | sort -V | tail -n 1 | xargs -r command -v || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ] && [ -f "$candidate" ]; then
            lld="$candidate"
            break
        fi
    done
    if [ -z "$lld" ] || [ ! -x /usr/bin/rustc ]; then
        log "no wasm toolchain: need rustup's $TARGET target, or Debian's rustc-web and rust-lld"
        exit 1
    fi
    log "building with Debian's rustc ($(/usr/bin/rustc --version)) and -Zbuild-std"
    CARGO_TARGET_DIR="$WAZOO_WASM_TARGET_DIR" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
        RUSTFLAGS="-C linker=$lld $WASM_LINK_FLAGS" \
        cargo build --manifest-path "$MANIFEST" --workspace --release --target "$TARGET" \
        -Zbuild-std=std,panic_abort
fi

mkdir -p "$WAZOO_RECIPES_DIR"
out="$WAZOO_WASM_TARGET_DIR/$TARGET/release"
for toml in "$ROOT"/recipes/*/Cargo.toml; do
    name="$(basename "$(dirname "$toml")")"
    wasm="$out/$name.wasm"
    if [ ! -f "$wasm" ]; then
        log "missing $wasm (is the [lib] name of recipes/$name \"$name\"?)"
        exit 1
    fi
    if ! cmp -s "$wasm" "$WAZOO_RECIPES_DIR/$name.wasm"; then
        cp "$wasm" "$WAZOO_RECIPES_DIR/$name.wasm.tmp"
        mv "$WAZOO_RECIPES_DIR/$name.wasm.tmp" "$WAZOO_RECIPES_DIR/$name.wasm"
        log "$name.wasm: $(wc -c <"$WAZOO_RECIPES_DIR/$name.wasm") bytes"
    fi
done

if [ "$run_tests" = 1 ]; then
    log "native tests (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    cargo test --manifest-path "$MANIFEST" --workspace
fi

printf '%s\n' "$WAZOO_RECIPES_DIR"
