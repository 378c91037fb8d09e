#!/bin/bash
# detection.sh: time from `lab.sh kill dc1` to ODOWN(dc1) at both DC2 and
# DC3, with the lab's default timings (probe interval 500 ms, fail_after 3,
# down_after 1 s), over N runs (default 20). Prints every run and the
# distribution. Target (issue 5): p50 under 2.5 s, p99 under 4 s.
#
#   tests/bench/detection.sh [RUNS]
# Needs root; runs its own lab (LAB_DIR=/tmp/triad-bench, netns triad-bench).
set -u
cd "$(dirname "$0")/../.." || exit 1
RUNS=${1:-20}
export LAB_DIR=/tmp/triad-bench LAB_NETNS=triad-bench
. tests/integration/lablib.sh
[ -x ./triad ] || { echo "build first: make" >&2; exit 1; }
trap '"$LAB" down >/dev/null 2>&1' EXIT
"$LAB" down >/dev/null 2>&1
"$LAB" up >/dev/null || { echo "lab up failed" >&2; exit 1; }

# The wall time of the first EVENT about dc1 in a site's log after a mark.
event_time() { # SITE EVENT
    tail -c +"$((MARK[$1] + 1))" "$LAB_DIR/$1/triad.log" |
        grep -m1 -- "event=$2 site=dc1" | sed -E 's/^ts=([^ ]+) .*/\1/'
}

results=()
for i in $(seq "$RUNS"); do
    if ! lab_reset; then
        echo "run $i: the lab did not settle; skipped"
        continue
    fi
    t0=$(date +%s.%N)
    "$LAB" kill dc1 >/dev/null 2>&1
    wait_for 20 bash -c "grep -q 'event=+odown site=dc1' <(tail -c +$((MARK[dc2] + 1)) $LAB_DIR/dc2/triad.log) &&
        grep -q 'event=+odown site=dc1' <(tail -c +$((MARK[dc3] + 1)) $LAB_DIR/dc3/triad.log)"
    a=$(date -d "$(event_time dc2 +odown)" +%s.%N 2>/dev/null)
    b=$(date -d "$(event_time dc3 +odown)" +%s.%N 2>/dev/null)
    if [ -z "$a" ] || [ -z "$b" ]; then
        echo "run $i: no ODOWN within 20 s"
        continue
    fi
    ms=$(awk -v t0="$t0" -v a="$a" -v b="$b" 'BEGIN { m = a > b ? a : b; printf "%d", (m - t0) * 1000 }')
    sd2=$(date -d "$(event_time dc2 +sdown)" +%s.%N)
    echo "run $i: kill -> +sdown at DC2 $(awk -v t="$t0" -v s="$sd2" 'BEGIN{printf "%d", (s-t)*1000}') ms, ODOWN at both $ms ms"
    results+=("$ms")
done
printf '%s\n' "${results[@]}" | sort -n | awk '
    { v[NR] = $1; s += $1 }
    END {
        if (NR == 0) { print "no results"; exit 1 }
        p50 = v[int((NR - 1) * 0.50) + 1]; p90 = v[int((NR - 1) * 0.90) + 1]; p99 = v[int((NR - 1) * 0.99) + 1]
        printf "kill -> ODOWN at DC2 and DC3 over %d runs: min %d ms, p50 %d ms, p90 %d ms, p99 %d ms, max %d ms, mean %d ms\n", NR, v[1], p50, p90, p99, v[NR], s / NR
        printf "target: p50 < 2500 ms (%s), p99 < 4000 ms (%s)\n", p50 < 2500 ? "met" : "MISSED", p99 < 4000 ? "met" : "MISSED"
    }'
