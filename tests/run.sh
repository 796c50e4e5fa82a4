#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the tests need, idempotently, then
# runs the whole suite. Safe to run again and again; each install step checks first.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s (at %ss) ==\n' "$*" "$SECONDS"; }

log "toolchain"
cargo --version
rustc --version

log "test servers"
# Where cargo and pip put their programs, whatever the caller's PATH says.
export PATH="$HOME/.cargo/bin:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
# Programs only cargo can build go to the background, so they compile while the lints, the
# workspace build, the other tests and the fuzzers below run:
# - tansu: a Kafka-compatible broker for the end-to-end and fault suites, with its SQLite
#   storage engine (its object-store engine misreports high watermarks; see tests/common).
#   The longest step on a fresh machine: 33-39 minutes beside the rest on 2 cores (466 crates,
#   the C of SQLite and aws-lc among them), once; the binary stays in ~/.cache/lockstep.
#   The two suites that need it run last.
# - cargo-fuzz: runs the libFuzzer targets in fuzz/ (the fuzz step below).
TANSU_ROOT="$HOME/.cache/lockstep/tansu-0.6.0-sql"
export PATH="$TANSU_ROOT/bin:$PATH"
# Each install runs in the background with its own log; wait_install waits for it (and does
# nothing when it was not needed) and shows the log's tail if it failed.
declare -A INSTALL_PID INSTALL_LOG
# At the end, the elapsed time (for the CI time budget), and any install still running: a
# failed step ends this script, not the background build, which finishes and is kept.
on_exit() {
  echo "(run.sh: ${SECONDS}s in all)"
  if [ -n "$(jobs -pr)" ]; then
    echo "note: installs still running in the background finish and are kept (logs: ${INSTALL_LOG[*]})"
  fi
}
trap on_exit EXIT
start_install() {
  local name=$1
  shift
  INSTALL_LOG[$name]="$(mktemp)"
  ("$@") >"${INSTALL_LOG[$name]}" 2>&1 &
  INSTALL_PID[$name]=$!
}
wait_install() {
  local name=$1
  [ -n "${INSTALL_PID[$name]:-}" ] || return 0
  if ! wait "${INSTALL_PID[$name]}"; then
    tail -n 40 "${INSTALL_LOG[$name]}"
    echo "installing $name failed (log above)" >&2
    exit 1
  fi
}
if [ ! -x "$TANSU_ROOT/bin/tansu" ]; then
  start_install tansu cargo install tansu --version 0.6.0 --locked --features dynostore,libsql \
    --root "$TANSU_ROOT"
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  start_install cargo-fuzz cargo install cargo-fuzz --version 0.13.2 --locked
fi

# Debian packages, in one apt run: promtool and prometheus (tests/observability.rs checks and
# unit-tests dashboards/alerts.yml, and runs prometheus itself on a free loopback port with a
# temporary data folder, never as the package's service); chromium and chromium-driver
# (tests/status_page_browser.rs); npm for azurite; curl. rclone and kcat are only the
# benchmarks' baselines: installed when possible, skipped by the benches otherwise.
need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
AZURITE_DIR="${LOCKSTEP_TOOLS:-$HOME/.cache/lockstep}/azurite"
if ! command -v azurite-blob >/dev/null 2>&1 && [ ! -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ]; then
  command -v npm >/dev/null 2>&1 || need+=(npm)
fi
optional=()
command -v rclone >/dev/null 2>&1 || optional+=(rclone)
command -v kcat >/dev/null 2>&1 || optional+=(kcat)
if [ "${#need[@]}" -gt 0 ] || [ "${#optional[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    if [ "${#need[@]}" -gt 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
    fi
    if [ "${#optional[@]}" -gt 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${optional[@]}" \
        || echo "not installed: ${optional[*]} (benchmark baselines only)"
    fi
  elif [ "${#need[@]}" -gt 0 ]; then
    echo "not root: install these Debian packages first: ${need[*]}" >&2
    exit 1
  fi
fi
promtool --version 2>&1 | head -n 1
chromium --version 2>/dev/null || true
# moto_server: S3, for the object-store and standby tests.
if ! command -v moto_server >/dev/null 2>&1; then
  python3 -m pip install --quiet "moto[server]"
fi
# PyYAML: tests/deploy.rs parses the Kubernetes manifests with it (no cluster needed).
python3 -c "import yaml" 2>/dev/null || python3 -m pip install --quiet pyyaml
# azurite: Azure Blob emulator for the object sync and standby tests (npm, into a cache folder; the
# harness finds it there, or on PATH, or under $LOCKSTEP_TOOLS/azurite).
if ! command -v azurite-blob >/dev/null 2>&1 && [ ! -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ]; then
  npm install --silent --no-audit --no-fund --prefix "$AZURITE_DIR" azurite
fi

log "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

log "tests"
# Build every test first, while tansu may still compile. Integration tests start real
# lockstep processes and servers; they pick free loopback ports themselves.
cargo test --workspace --all-targets --locked --no-run
# Everything but the tansu suites runs now, while tansu may still be compiling: on a
# fresh machine its build is the longest step, and these tests mostly wait on timers and
# sockets, so they cost its build little. The tansu suites (tests/mirror_faults.rs,
# tests/mirror_pause.rs, tests/tansu_contract.rs, and the Kafka test of tests/region_outage.rs)
# run once it is installed; `--skip` matches their test names.
TANSU_TESTS=(--test mirror_faults --test mirror_pause --test tansu_contract --test region_outage)
cargo test --workspace --all-targets --locked -- --test-threads 2 \
  --skip exactly_once_through_worker_kills_coordinator_and_broker_restarts \
  --skip pausing_the_busy_worker_five_times \
  --skip a_second_process_with_the_same_worker_id \
  --skip a_restarted_task_resumes_from_its_checkpoint_while_another_probe_is_open \
  --skip test_broker_watermarks_mid_batch_fetch_and_restart \
  --skip a_dead_region_stops_nobody_and_catches_up_exactly_once

log "fuzz"
# Each target runs LOCKSTEP_FUZZ_SECONDS (default 60) from its seed corpus in fuzz/corpus/;
# new inputs go to a temp dir, so the repo stays clean. RUSTC_BOOTSTRAP=1 lets the stable
# toolchain take cargo-fuzz's flags; `-s none`: no AddressSanitizer (safe Rust), libFuzzer's
# coverage guidance and crash detection stay. `--codegen-units 16`: a much faster build on
# 2 cores for slightly slower runs. A crash fails the run and leaves the input in
# fuzz/artifacts/<target>/. cargo-fuzz is installed in the background step above.
wait_install cargo-fuzz
for target in config_parse druid_response; do
  work="$(mktemp -d)"
  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -s none --codegen-units 16 "$target" \
    "$work" "corpus/$target" -- -max_total_time="${LOCKSTEP_FUZZ_SECONDS:-60}" -rss_limit_mb=2048 \
    -print_final_stats=1 2>&1 | tail -n 20)
  rm -rf "$work"
done

log "tests on tansu"
wait_install tansu
tansu --version 2>/dev/null || true
# (tests/region_outage.rs's objects test ran above already.)
cargo test --locked "${TANSU_TESTS[@]}" -- --test-threads 2 \
  --skip a_dead_region_stops_no_copy_elsewhere_and_copies_only_what_it_missed
