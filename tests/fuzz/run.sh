#!/bin/bash
# Runs the libFuzzer harnesses built in $BUILD/fuzz (make fuzz builds them).
#
#   tests/fuzz/run.sh              every harness
#   tests/fuzz/run.sh quorum dns   only these (names without fuzz_)
#
# Each harness runs for FUZZ_SECONDS (default 30) on a scratch copy of its
# committed corpus (tests/fuzz/corpus/NAME), so the committed corpus never
# grows; with its dictionary (tests/fuzz/NAME.dict) when there is one. Up to
# FUZZ_JOBS harnesses (default: the number of CPUs) run at once. One line per
# harness: executions, executions per second, coverage (edges) and features,
# corpus size, and the outcome. Any crash, sanitizer report, leak or timeout
# (an input running over FUZZ_TIMEOUT seconds, default 10) fails the run, and
# the line gives the input that caused it and the report's first lines.
# The scratch copies, logs and crash inputs stay in $BUILD/fuzz-work/NAME.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-fuzz}
secs=${FUZZ_SECONDS:-30}
tmo=${FUZZ_TIMEOUT:-10}
jobs=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}

# The config, runbook and journal harnesses write a file per input (the
# journal's append fsyncs): on tmpfs when there is one, it costs nothing.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
    export TMPDIR=/dev/shm
fi

targets=()
if [ $# -gt 0 ]; then
    targets=("$@")
else
    for b in "$BUILD"/fuzz/fuzz_*; do
        [ -x "$b" ] && targets+=("$(basename "$b" | sed 's/^fuzz_//')")
    done
fi
if [ ${#targets[@]} -eq 0 ]; then
    echo "fuzz: no harnesses in $BUILD/fuzz (run make fuzz)" >&2
    exit 1
fi

run_one() { # name
    local t=$1 bin=$BUILD/fuzz/fuzz_$1 work=$BUILD/fuzz-work/$1
    rm -rf "$work"
    mkdir -p "$work/corpus" "$work/crashes"
    if [ ! -x "$bin" ]; then
        echo "no such harness: $bin" >"$work/line"
        echo 1 >"$work/rc"
        return
    fi
    [ -d "tests/fuzz/corpus/$t" ] && cp tests/fuzz/corpus/"$t"/* "$work/corpus/" 2>/dev/null
    local dict=()
    [ -f "tests/fuzz/$t.dict" ] && dict=("-dict=tests/fuzz/$t.dict")
    local start=$SECONDS
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:symbolize=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        timeout -k 10 $((secs + tmo + 120)) "$bin" -max_total_time="$secs" -timeout="$tmo" \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/crashes/" \
        "${dict[@]}" "$work/corpus" >"$work/log" 2>&1
    local rc=$?
    local runs rate cov ft corp
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/log" | tail -n 1)
    local last
    last=$(grep -E '^#[0-9]+.*cov: [0-9]+' "$work/log" | tail -n 1)
    cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
    [ -z "$runs" ] && runs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$last")
    local outcome=ok
    if [ $rc -ne 0 ]; then
        local art why
        art=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$work/log" | head -n 1)
        [ -z "$art" ] && art=$(ls "$work"/crashes/* 2>/dev/null | head -n 1)
        why=$(grep -m 1 -E '^==[0-9]+==ERROR|^SUMMARY|runtime error|fuzz invariant|ERROR: libFuzzer' \
            "$work/log" | sed 's/^==[0-9]*==//')
        [ $rc -eq 124 ] || [ $rc -eq 137 ] && why="harness hung past ${secs}s (killed)"
        outcome="FAILED (exit $rc): ${why:-see $work/log}; input: ${art:-none saved}; log: $work/log"
    fi
    printf '%-12s %9s runs %7s/s  cov %5s  ft %6s  corpus %4s  %ds  %s\n' "$t" "${runs:-?}" \
        "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" $((SECONDS - start)) "$outcome" \
        >"$work/line"
    echo $rc >"$work/rc"
}

# Up to $jobs at a time; lines are printed in target order as they finish.
pids=()
for t in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
        wait -n
    done
    run_one "$t" &
    pids+=($!)
done
wait

failed=0
for t in "${targets[@]}"; do
    work=$BUILD/fuzz-work/$t
    cat "$work/line"
    [ "$(cat "$work/rc" 2>/dev/null)" = 0 ] || failed=$((failed + 1))
done
echo "fuzz: ${#targets[@]} harnesses, $failed failed, ${secs}s each"
[ $failed -eq 0 ]
