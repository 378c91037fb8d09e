#!/bin/bash
# 50-e2e.sh: the stock runbooks end to end in the lab, driven by `triad
# drill` as an operator would (issue 8):
#   A. dc1-loss in automatic mode: the writer loses no acknowledged write,
#      DNS, DC3 and ESS end at DC2; DC1 powered back on stays fenced; then a
#      failback rewinds it (pg_rewind, no pg_basebackup) and makes it primary.
#   B. dc1-isolation: DC1 fences itself, the failover completes, and after
#      the partition heals DC1 never accepts a write.
#   C. a planned switchover then a failback: no write lost, the old primary
#      rejoins without pg_basebackup.
#   D. the leader killed in the middle of the real dc1-loss run: the next
#      leader completes it without repeating done steps; the report shows
#      the takeover.
# TAP output. KEEP_LAB=1 leaves the last lab up.
set -u
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/tap.sh
if [ "$(id -u)" != 0 ]; then
    echo "ok 1 # SKIP needs root"
    exit 0
fi
export LAB_DIR=/tmp/triad-lab-e LAB_NETNS=triad-lab-e
. tests/integration/lablib.sh
trap 'lab_down' EXIT
LOG=$PWD/${BUILD:-build}/test-logs/50-e2e.detail.log
mkdir -p "$(dirname "$LOG")"
: >"$LOG"
T0=$SECONDS

# A fresh lab whose daemons run in MODE; with "gated", the stock dc1-loss
# runbook gets one more gate, on the DNS step.
fresh_lab() { # MODE [gated]
    "$LAB" down >>"$LOG" 2>&1
    "$LAB" up >>"$LOG" 2>&1 || return 1
    local s rb=$LAB_DIR/dc1-loss-gated.yaml
    sed 's/^    action: dns.update$/    action: dns.update\n    approve: required/' \
        runbooks/dc1-loss.yaml >"$rb"
    for s in dc1 dc2 dc3; do
        sed -i -E "s/^  mode: (manual|semi-automatic|automatic)$/  mode: $1/" "$LAB_DIR/$s/triad.yaml"
        [ "${2:-}" = gated ] && sed -i -E "s|^  dc1-loss: .*$|  dc1-loss: $rb|" "$LAB_DIR/$s/triad.yaml"
    done
    lab_reset
}

# triad drill at DC2, its output kept in $OUT and the log.
drill() { # SCENARIO [OPTIONS...]
    echo "### triad drill $*" >>"$LOG"
    OUT=$(nsx "$TRIAD" drill "$@" -c "$LAB_DIR/dc2/triad.yaml" 2>&1)
    local rc=$?
    printf '%s\n' "$OUT" >>"$LOG"
    return $rc
}
has() { grep -qE -- "$1" <<<"$OUT"; }
line_value() { sed -nE "s/^$1: ([0-9.]+).*/\\1/p" <<<"$OUT" | head -n 1; }

pg() { "$LAB" sql "$1" postgres "$2" 2>/dev/null; }
in_recovery() { [ "$(pg "$1" 'SELECT pg_is_in_recovery()')" = "$2" ]; }
streams_from() { # REPLICA HOST
    [ "$(pg "$1" "SELECT status || ' ' || sender_host FROM pg_stat_wal_receiver")" = "streaming $2" ]
}
dns_answer() { nsx dig +short +time=1 +tries=1 -b 127.0.9.1 @127.0.9.53 matrix.lab.test A; }
no_basebackup() { ! ls -d "$LAB_DIR"/dc?/pgdata.triad-old* >/dev/null 2>&1; }
# DC1 refuses writes (read-only or down) at every sample for SECONDS.
never_writable() { # SITE SECONDS
    local end=$((SECONDS + $2)) v
    while [ $SECONDS -lt $end ]; do
        v=$(pg "$1" "SELECT pg_is_in_recovery() OR current_setting('default_transaction_read_only')::bool")
        [ -z "$v" ] || [ "$v" = t ] || {
            echo "$1 writable at $(date +%T.%N)" >>"$LOG"
            return 1
        }
        sleep 0.3
    done
}
# The drill's summary: no acknowledged write lost, none taken by two primaries.
summary_ok() {
    has '^acknowledged writes lost: 0$' && has '^writes accepted by two primaries: 0$'
}
report_ok() { # the HTML report named in the summary: self-contained, with its SVG timeline
    local f
    f=$(sed -nE 's/^report: (.*\.html)$/\1/p' <<<"$OUT")
    [ -s "$f" ] && grep -q '<svg' "$f" && ! grep -qiE '<(script|link|img)[^>]+(src|href)=|url\(' "$f"
}

# === A. dc1-loss, automatic; DC1 back; failback ====================================================
check "A: lab up, daemons in automatic mode" fresh_lab automatic
drill dc1-loss
check "A: drill dc1-loss succeeds" test $? = 0
summary_lines() { has '^RTO: [0-9]+\.[0-9] s' && has '^RPO: [0-9]+ bytes' && has '^report: /.*\.html$'; }
check "A: the summary has the RTO, RPO and report lines" summary_lines
check "A: no acknowledged write lost, none accepted by two primaries" summary_ok
check "A: the HTML report is self-contained and has its SVG timeline" report_ok
diag "A: dc1-loss RTO $(line_value RTO) s"
check "A: DNS points at DC2" test "$(dns_answer)" = 127.0.2.10
check "A: DC2 is the primary" in_recovery dc2 f
check "A: DC3 streams from DC2" wait_for 10 streams_from dc3 127.0.2.5
check "A: ESS serves from DC2" wait_for 5 bash -c "'$LAB' status --json | jq -e '.sites.dc2.synapse.up' >/dev/null"
replayed_plan() { # the same runbook again: every step whose outcome holds is skipped
    nsx "$TRIAD" plan dc1-loss --to dc2 --json -c "$LAB_DIR/dc2/triad.yaml" 2>>"$LOG" |
        jq -e '[.steps[] | {(.id): .verdict}] | add
            | .promote == "skip" and .["others-follow"] == "skip" and .dns == "skip" and .["start-ess"] == "skip"' >/dev/null
}
check "A: plan of the same runbook afterwards: promote, follow, DNS and ESS would be skipped" replayed_plan
"$LAB" revive dc1 >>"$LOG" 2>&1
check "A: DC1 powered back on never accepts a write (8 s)" never_writable dc1 8
check "A: ... and its daemon knows DC2 is primary and DC1 fenced" \
    bash -c "[ \"\$(ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/dc1/triad.yaml | jq -r '[.primary_site, .lease.fenced] | join(\",\")')\" = dc2,true ]"
drill failback --yes
check "A: drill failback succeeds" test $? = 0
check "A: failback: no acknowledged write lost" summary_ok
rewound() {
    cat "$LAB_DIR"/dc2/state/runs/*.jsonl | jq -s -e '[.[] | select(.t == "step" and .step == "rewind" and .to == "done")]
        | length > 0 and all(.detail | test("was rewound"))' >/dev/null
}
check "A: DC1 was rewound (pg_rewind)" rewound
check "A: ... not rebuilt with pg_basebackup" no_basebackup
check "A: DC1 is the primary again" in_recovery dc1 f
check "A: DC2 and DC3 stream from DC1" \
    wait_for 10 bash -c "'$LAB' sql dc2 postgres 'SELECT sender_host FROM pg_stat_wal_receiver' | grep -qx 127.0.1.5 &&
        '$LAB' sql dc3 postgres 'SELECT sender_host FROM pg_stat_wal_receiver' | grep -qx 127.0.1.5"
check "A: DNS points at DC1 again" test "$(dns_answer)" = 127.0.1.10

# === B. dc1-isolation ===============================================================================
check "B: fresh lab, automatic mode" fresh_lab automatic
drill dc1-isolation
check "B: drill dc1-isolation succeeds" test $? = 0
check "B: no acknowledged write lost, none accepted by two primaries" summary_ok
check "B: DC1 fenced itself (its lease lost)" grep -q 'event=+self-fence ' "$LAB_DIR/dc1/triad.log"
check "B: DNS points at DC2" test "$(dns_answer)" = 127.0.2.10
"$LAB" heal >>"$LOG" 2>&1
check "B: after heal DC1 learns the decision and stays fenced" \
    wait_for 10 bash -c "[ \"\$(ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/dc1/triad.yaml | jq -r '[.primary_site, .lease.fenced] | join(\",\")')\" = dc2,true ]"
check "B: ... and DC1 never accepts a write (8 s)" never_writable dc1 8

# === C. switchover, then failback ===================================================================
check "C: fresh lab, semi-automatic mode" fresh_lab semi-automatic
drill switchover --yes
check "C: drill switchover (gates approved with --yes) succeeds" test $? = 0
check "C: switchover: no acknowledged write lost" summary_ok
check "C: DC2 is the primary, DC1 streams from it" \
    bash -c "[ \"\$('$LAB' sql dc2 postgres 'SELECT pg_is_in_recovery()')\" = f ] && [ \"\$('$LAB' sql dc1 postgres 'SELECT sender_host FROM pg_stat_wal_receiver')\" = 127.0.2.5 ]"
check "C: RPO 0 against the demoted primary" has '^RPO: 0 bytes'
drill failback --yes
check "C: drill failback succeeds" test $? = 0
check "C: failback: no acknowledged write lost" summary_ok
check "C: DC1 is the primary again, DC2 streams from it" \
    bash -c "[ \"\$('$LAB' sql dc1 postgres 'SELECT pg_is_in_recovery()')\" = f ] && [ \"\$('$LAB' sql dc2 postgres 'SELECT sender_host FROM pg_stat_wal_receiver')\" = 127.0.1.5 ]"
check "C: no site was rebuilt with pg_basebackup" no_basebackup

# === D. the leader killed mid-run =================================================================
# One more gate, on the DNS step, so that the run is surely in its middle
# when the leader dies.
check "D: fresh lab, semi-automatic, dc1-loss with a gate on the DNS step" fresh_lab semi-automatic gated
"$LAB" isolate dc1 >>"$LOG" 2>&1
check "D: DC1 isolated: the run waits at its first gate" wait_for 20 st_is dc2 .run.current fence-old-primary
R=$(st dc2 .run.id)
approve() { nsx "$TRIAD" approve "$R" "$1" -c "$LAB_DIR/$2/triad.yaml" >>"$LOG" 2>&1; }
approve fence-old-primary dc3
check "D: fence approved (at DC3); promote waits" wait_for 15 st_is dc2 .run.current promote
approve promote dc2
check "D: promote approved; the DNS gate waits" wait_for 20 st_is dc2 .run.current dns
# DC1 back in the quorum (fenced: its PostgreSQL was powered off by the BMC
# fence), so that a majority remains without the leader.
"$LAB" heal >>"$LOG" 2>&1
wait_for 15 st_is dc1 .primary_site dc2
leader=$(st dc2 .leader)
survivor=$([ "$leader" = dc2 ] && echo dc3 || echo dc2)
diag "D: leader $leader killed; DC1 and $survivor remain"
kill -9 "$(cat "$LAB_DIR/$leader/triad.pid")"
check "D: a new leader takes the run over" wait_for 30 bash -c "
    for s in dc1 $survivor; do
        ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/\$s/triad.yaml | jq -e '.role == \"leader\" and .run.current == \"dns\"' >/dev/null && exit 0
    done; exit 1"
approve dns "$survivor"
check "D: ... and completes it" wait_for 40 st_is "$survivor" .run.state done
new=$(st "$survivor" .leader)
j=$LAB_DIR/$new/state/runs/$R.jsonl
ran() { jq -s "[.[] | select(.t == \"step\" and .step == \"$1\" and .to == \"running\")] | length" "$j"; }
check "D: fence and promote ran once (not repeated by the new leader)" \
    test "$(ran fence-old-primary),$(ran promote)" = 1,1
check "D: the report shows the takeover" \
    bash -c "ip netns exec $LAB_NETNS $TRIAD report $R --format md -c $LAB_DIR/$new/triad.yaml | grep -q 'takeover (epoch'"
check "D: DC2 is the primary, DNS points at it" bash -c "[ \"\$('$LAB' sql dc2 postgres 'SELECT pg_is_in_recovery()')\" = f ] && [ \"\$(ip netns exec $LAB_NETNS dig +short -b 127.0.9.1 @127.0.9.53 matrix.lab.test A)\" = 127.0.2.10 ]"

diag "50-e2e took $((SECONDS - T0)) s"
"$LAB" daemons stop all >/dev/null 2>&1
tap_done
