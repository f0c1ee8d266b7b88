#!/usr/bin/env bash
# The one test command for posa: everything CI checks, stopping at the first failure.
#   rustfmt check, clippy -D warnings, the sync-shim check (clippy on the library where the
#   shim is loom's: every std sync type left is a bypass), rustdoc with warnings denied,
#   unit + integration + doc tests, the loom models (--cfg posa_loom, release, own target
#   dir), and a smoke run of every criterion bench.
# Usage: scripts/test.sh            (LOOM_MAX_PREEMPTIONS defaults to 2)
set -euo pipefail
cd "$(dirname "$0")/.."

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
t0=$(date +%s)
# A test that needs io_uring and finds the kernel refusing it appends a line here (see
# posa::proactor::skip_without_io_uring); the summary counts them.
export POSA_SKIP_LOG="$logs/skips"
: >"$POSA_SKIP_LOG"

step() {
    local name=$1
    shift
    local s
    s=$(date +%s)
    echo "==> $name: $*"
    if ! "$@" >"$logs/$name.log" 2>&1; then
        tail -n 60 "$logs/$name.log"
        echo "FAILED: $name ($(($(date +%s) - s)) s). Command: $*"
        exit 1
    fi
    echo "    ok ($(($(date +%s) - s)) s)"
}

# Sums the "N passed; M failed" of every `test result:` line in a log.
count() {
    awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
         END { printf "%d %d\n", p, f }' "$1"
}

step fmt cargo fmt --all -- --check
step clippy cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTFLAGS="${RUSTFLAGS:-} --cfg posa_loom" \
    step sync-shim cargo clippy -p posa --lib --locked --target-dir target/loom-clippy -- -D warnings
RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -D warnings" \
    step rustdoc cargo doc --no-deps -p posa --locked
step tests cargo test --workspace --locked
read -r test_passed test_failed < <(count "$logs/tests.log")

export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
RUSTFLAGS="${RUSTFLAGS:-} --cfg posa_loom -C debug-assertions" \
    step loom cargo test -p loom-tests --release --locked --target-dir target/loom
read -r loom_passed loom_failed < <(count "$logs/loom.log")
if [ "$loom_passed" -eq 0 ]; then
    echo "FAILED: loom ran 0 models (is --cfg posa_loom reaching the build?)"
    exit 1
fi

step bench-smoke cargo bench --benches --locked -- --test
benches=$(grep -c '^Success' "$logs/bench-smoke.log" || true)
if [ "$benches" -eq 0 ]; then
    echo "FAILED: the bench smoke run ran 0 benchmarks"
    exit 1
fi

skipped=$(sort -u "$POSA_SKIP_LOG" | grep -c . || true)
echo
if [ "$skipped" -gt 0 ]; then
    echo "skipped on io_uring:"
    sort -u "$POSA_SKIP_LOG" | sed 's/^/  /'
fi
echo "posa test summary: $test_passed tests, $loom_passed loom models (LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS), $benches benchmarks smoke-run, $skipped io_uring runs skipped, $(($(date +%s) - t0)) s"
echo "tests: $((test_passed + loom_passed)) passed, $((test_failed + loom_failed)) failed, $skipped skipped"
