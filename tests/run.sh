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
# tansu: a Kafka-compatible broker for the end-to-end and fault suites (about 10 minutes to
# build on 2 cores, once; the binary stays in ~/.cargo/bin).
if ! command -v tansu >/dev/null 2>&1; then
  cargo install tansu --version 0.6.0 --locked --features dynostore
fi
tansu --version 2>/dev/null || true
# moto_server: S3, for tansu's durable storage in the fault suite (and object-store tests).
if ! command -v moto_server >/dev/null 2>&1; then
  python3 -m pip install --quiet "moto[server]"
fi
command -v curl >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq curl; }
# cargo-fuzz: runs the libFuzzer targets in fuzz/ (see the fuzz step below).
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --version 0.13.2 --locked
fi

log "format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

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
fuzz_targets=(config_parse)
fuzz_features=()
# The Druid response parser is in coordinator/src/druid once the drift work is merged.
if [ -f coordinator/src/druid/mod.rs ]; then
  fuzz_targets+=(druid_response)
  fuzz_features=(--features druid)
fi
for target in "${fuzz_targets[@]}"; do
  work="$(mktemp -d)"
  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -s none --codegen-units 16 "${fuzz_features[@]}" "$target" \
    "$work" "corpus/$target" -- -max_total_time="${LOCKSTEP_FUZZ_SECONDS:-60}" -rss_limit_mb=2048 \
    -print_final_stats=1 2>&1 | tail -n 20)
  rm -rf "$work"
done
