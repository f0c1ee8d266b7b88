#!/usr/bin/env bash
# Mutation testing: how strong are posa's tests? Two kinds.
#
#   scripts/mutants.sh                 the concurrency mutants in scripts/mutants/*.patch (bugs
#                                      cargo-mutants does not write: a notify removed, a
#                                      check-then-act split, a weakened ordering, a completion
#                                      answered early or dropped). Each is applied alone; the
#                                      test command in its header must fail. Prints killed /
#                                      survived and exits non-zero if any survives.
#   scripts/mutants.sh cargo [MODULES] cargo-mutants over the library's concurrency modules
#                                      (default: act monitor intercept pool reactor proactor),
#                                      each mutant judged by the unit tests plus the
#                                      integration tests that exercise that module (nextest,
#                                      8 test threads, 45 s timeout); results in
#                                      mutants.out/<module>/. Then
#                                      scripts/mutants/survivors.py lists every survivor
#                                      with its reason (docs/mutation-survivors.md).
#
# Needs a clean working tree (the patches are applied in place and reverted). Not part of CI:
# the concurrency set takes about 10 minutes, cargo-mutants hours.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-concurrency}

if [ "$mode" = cargo ]; then
    shift || true
    if ! command -v cargo-mutants >/dev/null; then
        echo "cargo-mutants is not installed: cargo install cargo-mutants --locked" >&2
        exit 2
    fi
    modules=("$@")
    if [ ${#modules[@]} -eq 0 ]; then
        modules=(act monitor intercept pool reactor proactor)
    fi
    for m in "${modules[@]}"; do
        # The judge: the unit tests and the integration tests that exercise the module.
        case $m in
            act | monitor) judge=(--lib) ;;
            intercept) judge=(--lib --test intercept) ;;
            pool) judge=(--lib --test scheduler_props --test act_executors) ;;
            reactor) judge=(--lib --test echo --test leader_followers --test connector --test emfile) ;;
            proactor) judge=(--lib --test echo --test proactor_shutdown --test connector) ;;
            *) echo "unknown module $m" >&2; exit 2 ;;
        esac
        cargo mutants --no-shuffle -j 2 --test-tool nextest --timeout 45 --build-timeout 240 \
            --output "mutants.out/$m" --file "src/$m.rs" --file "src/$m/*.rs" --file "src/$m/**/*.rs" \
            -- --test-threads 8 "${judge[@]}" || true
    done
    exit 0
fi

if ! git diff --quiet HEAD -- src; then
    echo "src/ has uncommitted changes: commit or stash them first (patches apply in place)" >&2
    exit 2
fi
logs=$(mktemp -d)
current=""
restore() {
    if [ -n "$current" ]; then git apply -R "$current" 2>/dev/null || git checkout -- src; fi
}
trap 'restore; rm -rf "$logs"' EXIT

killed=0
survived=()
for patch in scripts/mutants/*.patch; do
    name=$(basename "$patch" .patch)
    test=$(sed -n 's/^# test: //p' "$patch")
    why=$(sed -n 's/^# mutant: //p' "$patch")
    git apply "$patch"
    current=$patch
    s=$(date +%s)
    if timeout 900 bash -c "$test" >"$logs/$name.log" 2>&1; then
        survived+=("$name")
        echo "SURVIVED $name ($(($(date +%s) - s)) s): $why"
    else
        killed=$((killed + 1))
        why_failed=$(grep -m1 -E "panicked at|deadlock|FAILED|error\[" "$logs/$name.log" || true)
        echo "killed   $name ($(($(date +%s) - s)) s): $why"
        echo "         ${why_failed:0:150}"
    fi
    git apply -R "$patch"
    current=""
done
total=$((killed + ${#survived[@]}))
echo "concurrency mutants: $killed of $total killed"
if [ ${#survived[@]} -gt 0 ]; then
    echo "survivors: ${survived[*]}"
    exit 1
fi
