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
# PyYAML: tests/deploy.rs parses the Kubernetes manifests with it (no cluster needed).
python3 -c "import yaml" 2>/dev/null || python3 -m pip install --quiet pyyaml
# azurite: Azure Blob emulator for the object sync tests (npm, into a cache folder; the
# harness finds it there, or on PATH, or under $LOCKSTEP_TOOLS/azurite).
AZURITE_DIR="${LOCKSTEP_TOOLS:-$HOME/.cache/lockstep}/azurite"
if ! command -v azurite-blob >/dev/null 2>&1 && [ ! -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ]; then
  command -v npm >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq npm; }
  npm install --silent --no-audit --no-fund --prefix "$AZURITE_DIR" azurite
fi
# prometheus and promtool (Debian's package) for tests/observability.rs: promtool checks and
# unit-tests dashboards/alerts.yml; the prometheus binary is run by the test itself on a free
# loopback port with a temporary data folder (never as the package's service).
if ! command -v promtool >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
fi
promtool --version 2>&1 | head -n 1
# rclone: only the object sync benchmark's baseline (not a test). Installed when we can; the
# benchmark shows "-" for rclone without it.
if ! command -v rclone >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    { apt-get update -qq && apt-get install -y -qq rclone; } || echo "rclone not installed: the objects bench will skip it"
  else
    echo "not root: rclone not installed; the objects bench will skip it"
  fi
fi
# cargo-fuzz: runs the libFuzzer targets in fuzz/ (see the fuzz step below).
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --version 0.13.2 --locked
fi

log "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

log "tests"
# Integration tests start real lockstep processes; they pick free loopback ports themselves.
cargo test --workspace --all-targets --locked -- --test-threads 2

log "fuzz"
# Each target runs LOCKSTEP_FUZZ_SECONDS (default 60) from its seed corpus in fuzz/corpus/;
# new inputs go to a temp dir, so the repo stays clean. RUSTC_BOOTSTRAP=1 lets the stable
# toolchain take cargo-fuzz's flags; `-s none`: no AddressSanitizer (safe Rust), libFuzzer's
# coverage guidance and crash detection stay. `--codegen-units 16`: a much faster build on
# 2 cores for slightly slower runs. A crash fails the run and leaves the input in
# fuzz/artifacts/<target>/.
for target in config_parse druid_response; do
  work="$(mktemp -d)"
  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -s none --codegen-units 16 "$target" \
    "$work" "corpus/$target" -- -max_total_time="${LOCKSTEP_FUZZ_SECONDS:-60}" -rss_limit_mb=2048 \
    -print_final_stats=1 2>&1 | tail -n 20)
  rm -rf "$work"
done
