#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the tests need, idempotently, then
# runs the whole suite. Safe to run again and again; each install step checks first.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s ==\n' "$*"; }

log "toolchain"
cargo --version
rustc --version

log "test servers"
# Where cargo and pip put their programs, whatever the caller's PATH says.
export PATH="$HOME/.cargo/bin:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
# tansu: a Kafka-compatible broker for the end-to-end and fault suites, with its SQLite
# storage engine (its object-store engine misreports high watermarks; see tests/common).
# About 15 minutes to build on 2 cores, once; the binary stays in ~/.cache/lockstep.
TANSU_ROOT="$HOME/.cache/lockstep/tansu-0.6.0-sql"
if [ ! -x "$TANSU_ROOT/bin/tansu" ]; then
  cargo install tansu --version 0.6.0 --locked --features dynostore,libsql --root "$TANSU_ROOT"
fi
export PATH="$TANSU_ROOT/bin:$PATH"
tansu --version 2>/dev/null || true
# moto_server: S3, for the object-store tests.
if ! command -v moto_server >/dev/null 2>&1; then
  python3 -m pip install --quiet "moto[server]"
fi
command -v curl >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq curl; }
# azurite: Azure Blob emulator for the object sync tests (npm, into a cache folder; the
# harness finds it there, or on PATH, or under $LOCKSTEP_TOOLS/azurite).
AZURITE_DIR="${LOCKSTEP_TOOLS:-$HOME/.cache/lockstep}/azurite"
if ! command -v azurite-blob >/dev/null 2>&1 && [ ! -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ]; then
  command -v npm >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq npm; }
  npm install --silent --no-audit --no-fund --prefix "$AZURITE_DIR" azurite
fi
# rclone: only the object sync benchmark's baseline (not a test). Installed when we can; the
# benchmark shows "-" for rclone without it.
if ! command -v rclone >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    { apt-get update -qq && apt-get install -y -qq rclone; } || echo "rclone not installed: the objects bench will skip it"
  else
    echo "not root: rclone not installed; the objects bench will skip it"
  fi
fi

log "format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

log "tests"
# Integration tests start real lockstep processes; they pick free loopback ports themselves.
cargo test --workspace --all-targets --locked -- --test-threads 2
