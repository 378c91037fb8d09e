#!/bin/bash
# Runs the test suites and prints one summary line: `N passed, N failed`.
#
#   tests/run.sh unit          cmocka suites in $BUILD/tests (TAP output)
#   tests/run.sh integration   tests/integration/*.sh (TAP output, need root)
#   tests/run.sh all           both
#
# Every suite speaks TAP ("ok N - name" / "not ok N - name"); a suite that
# exits non-zero without reporting a failure, or times out, counts as one
# failure, so a crash is never silent. TRIAD_VALGRIND=1 runs unit suites
# under valgrind (any error or leak fails). TESTS=pattern filters suites.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
what=${1:-all}
passed=0
failed=0
skipped=0
failures=()
logdir=$BUILD/test-logs
mkdir -p "$logdir"

run_suite() { # name timeout cmd...
    local name=$1 tmo=$2
    shift 2
    local log=$logdir/$name.log
    local start=$SECONDS
    timeout -k 10 "$tmo" "$@" >"$log" 2>&1
    local rc=$?
    local p f s
    # cmocka prints a skipped test as "not ok N # SKIP": a skip, not a failure.
    p=$(grep -cE '^ok [0-9]+' "$log" | tr -d ' ')
    s=$(grep -cE '^(not )?ok [0-9]+.*# *(SKIP|skip)' "$log" | tr -d ' ')
    local sn
    sn=$(grep -cE '^not ok [0-9]+.*# *(SKIP|skip)' "$log" | tr -d ' ')
    f=$(grep -cE '^not ok [0-9]+' "$log" | tr -d ' ')
    p=$((p - (s - sn)))
    f=$((f - sn))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
            echo "not ok - $name: timed out after $tmo" >>"$log"
        else
            echo "not ok - $name: exited with status $rc" >>"$log"
        fi
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    skipped=$((skipped + s))
    printf '%-28s %3d passed %3d failed %3d skipped  (%ds)\n' "$name" "$p" "$f" "$s" \
        $((SECONDS - start))
    if [ "$f" -gt 0 ]; then
        failures+=("$name")
        grep -E '^not ok|^# ' "$log" | grep -vE '^# (ok|Subtest)' | head -n 40 | sed 's/^/    /'
    fi
}

if [ "$what" = unit ] || [ "$what" = all ]; then
    for t in "$BUILD"/tests/test_*; do
        [ -x "$t" ] || continue
        name=$(basename "$t")
        [ -n "${TESTS:-}" ] && [[ $name != *${TESTS}* ]] && continue
        if [ "${TRIAD_VALGRIND:-0}" = 1 ]; then
            run_suite "$name" 900 env CMOCKA_MESSAGE_OUTPUT=TAP TRIAD_UNDER_VALGRIND=1 \
                valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
                --show-leak-kinds=definite,indirect --track-fds=no "$t"
        else
            run_suite "$name" 300 env CMOCKA_MESSAGE_OUTPUT=TAP "$t"
        fi
    done
fi

if [ "$what" = integration ] || [ "$what" = all ]; then
    for t in tests/integration/[0-9]*.sh; do
        [ -x "$t" ] || continue
        name=$(basename "$t" .sh)
        [ -n "${TESTS:-}" ] && [[ $name != *${TESTS}* ]] && continue
        run_suite "$name" 900 env BUILD="$BUILD" "$t"
    done
fi

if [ ${#failures[@]} -gt 0 ]; then
    echo "failed suites: ${failures[*]} (logs in $logdir)"
fi
[ "$skipped" -gt 0 ] && echo "$skipped skipped"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
