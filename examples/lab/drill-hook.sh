#!/bin/bash
# drill-hook.sh PHASE SCENARIO SITE: the lab's hook for `triad drill` (the
# `drill.hook` of the lab's triad.yaml). In production an operator provides
# one (a script of theirs, or one that tells a person what to do and waits).
#
#   prepare    start a fresh writer (numbered writes through the public name)
#   inject     the fault: dc1-loss kills SITE, dc1-isolation isolates it;
#              switchover and failback need none (triad is asked instead)
#   writes-ok  exit 0 once the writer has had a write acknowledged after the
#              fault (TRIAD_DRILL_FAULT_MS), by a site other than SITE for
#              the loss scenarios
#   stats      stop the writer and print its audit as JSON: acked_lost,
#              split_brain, first_ack_after_ms, acknowledged, attempts
#   finish     stop the writer
set -u
PHASE=${1:-} SCENARIO=${2:-} SITE=${3:-}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB=$HERE/lab.sh
LAB_DIR=${LAB_DIR:-/tmp/triad-lab}
LOG=$LAB_DIR/writer.jsonl
FAULT_MS=${TRIAD_DRILL_FAULT_MS:-0}

# The first acknowledgement after the fault (from another site when the
# site was lost), as wall-clock milliseconds, or nothing.
first_ack_after() {
    [ -f "$LOG" ] || return 0
    jq -r --argjson t "$FAULT_MS" --arg s "$SITE" --arg sc "$SCENARIO" \
        'select(.ev == "ack" and (.wall * 1000) > $t and
                (($sc != "dc1-loss" and $sc != "dc1-isolation") or .site != $s))
         | (.wall * 1000 | floor)' "$LOG" 2>/dev/null | head -n 1
}

case $PHASE in
prepare)
    "$LAB" writer stop >/dev/null 2>&1
    [ -f "$LOG" ] && mv "$LOG" "$LOG.$(date +%s)"
    "$LAB" writer start --rate 20 >/dev/null
    ;;
inject)
    case $SCENARIO in
    dc1-loss) "$LAB" kill "$SITE" >/dev/null ;;
    dc1-isolation) "$LAB" isolate "$SITE" >/dev/null ;;
    switchover | failback) ;;
    *)
        echo "drill-hook: unknown scenario $SCENARIO" >&2
        exit 2
        ;;
    esac
    ;;
writes-ok)
    [ -n "$(first_ack_after)" ]
    ;;
stats)
    first=$(first_ack_after)
    "$LAB" writer stop >/dev/null 2>&1
    audit=$("$LAB" writer check --json 2>/dev/null) || true
    [ -n "$audit" ] || audit='{}'
    jq -n --argjson a "$audit" --arg first "$first" '{
        acked_lost: ($a.lost // null), split_brain: ($a.split_brain // null),
        acknowledged: ($a.acknowledged // null), attempts: ($a.attempts // null),
        primary: ($a.primary // null),
        first_ack_after_ms: (if $first == "" then null else ($first | tonumber) end) }'
    ;;
finish)
    "$LAB" writer stop >/dev/null 2>&1
    ;;
*)
    echo "usage: drill-hook.sh prepare|inject|writes-ok|stats|finish SCENARIO SITE" >&2
    exit 2
    ;;
esac
