#!/usr/bin/env bash
# Start a standalone Wazoo server (installs what is missing first).
#
#   ./scripts/serve.sh                       # 127.0.0.1:2181, data under ./data
#   ./scripts/serve.sh --config zoo.cfg      # a ZooKeeper zoo.cfg
#   ./scripts/serve.sh --help                # all options of `wazoo serve`
#
# Arguments are passed to `wazoo serve` unchanged. Relative paths (./data, --config) are
# taken from the directory you run this from.
#
# The built-in recipes (recipes/lock, election, barrier, config) are built to wasm first
# (scripts/build-recipes.sh; installs the wasm toolchain if missing) and installed by
# the server at start (`recipe.builtinDir`) unless the cluster already has them. If they
# cannot be built the server starts without them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/setup.sh
. "$ROOT/scripts/setup.sh"

ensure_server_deps

# Cargo reads .cargo/config.toml (ROCKSDB_LIB_DIR) from the working directory, so build
# from the repository root.
(cd "$ROOT" && cargo build --release -p wazoo)

builtin=()
if recipes_dir="$("$ROOT/scripts/build-recipes.sh" | tail -n 1)" && [ -d "$recipes_dir" ]; then
    builtin=(--set "recipe.builtinDir=$recipes_dir")
else
    echo "serve.sh: the built-in recipes could not be built; starting without them" >&2
fi

exec "$CARGO_TARGET_DIR/release/wazoo" serve "${builtin[@]}" "$@"
