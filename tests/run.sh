#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the tests need, idempotently, then
# runs the whole suite. Safe to run again and again; each install step checks first.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s ==\n' "$*"; }

log "toolchain"
cargo --version
rustc --version

log "format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

log "tests"
# Integration tests start real lockstep processes; they pick free loopback ports themselves.
cargo test --workspace --all-targets --locked -- --test-threads 2
