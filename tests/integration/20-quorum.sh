#!/bin/bash
# 20-quorum.sh: three real daemons in the lab agree that a datacenter is
# lost (or not), elect one leader, record the decision on a majority, and a
# primary cut off from the majority fences itself (issue 5). TAP output.
set -u
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/tap.sh
if [ "$(id -u)" != 0 ]; then
    echo "ok 1 # SKIP needs root"
    exit 0
fi
export LAB_DIR=/tmp/triad-lab-q LAB_NETNS=triad-lab-q
. tests/integration/lablib.sh
trap lab_down EXIT

"$LAB" down >/dev/null 2>&1
if ! "$LAB" up >/dev/null 2>&1; then
    not_ok "lab up"
    tap_done
    exit 1
fi
check "three daemons form a quorum and DC1 holds its lease" lab_reset

# --- steady state ---
check "every daemon sees every site up" wait_for 10 bash -c "
    for s in dc1 dc2 dc3; do for t in dc1 dc2 dc3; do
        [ \"\$(ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/\$s/triad.yaml | jq -r .sites.\$t.state)\" = up ] || exit 1
    done; done"
check "epoch 0, no leader, DC1 primary and not fenced" bash -c "
    [ \"\$(ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/dc2/triad.yaml | jq -r '[.epoch, .leader, .primary_site] | join(\",\")')\" = 0,,dc1 ]"
check "/metrics reports lease, quorum and probes" wait_for 10 bash -c "
    ip netns exec $LAB_NETNS curl -s --unix-socket $LAB_DIR/dc1/triad.sock http://triad/metrics >$LAB_DIR/metrics.txt &&
    grep -q '^triad_lease_held 1' $LAB_DIR/metrics.txt &&
    grep -q '^triad_quorum_have 3' $LAB_DIR/metrics.txt &&
    grep -qF 'triad_probe_up{site=\"dc2\",probe=\"postgres\"} 1' $LAB_DIR/metrics.txt" ||
    diag "$(wc -c <"$LAB_DIR/metrics.txt") bytes of metrics" \
        "$(grep -E '^triad_(lease_held|quorum_have)|probe_up.site="dc2"' "$LAB_DIR/metrics.txt")"
check "... streamed whole: a triad_probe_up line per probe, and the last family at the end" bash -c "
    [ \"\$(grep -c '^triad_probe_up{' $LAB_DIR/metrics.txt)\" = \"\$(ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/dc1/triad.yaml | jq '[.sites[].probes[]] | length')\" ] &&
    tail -n 1 $LAB_DIR/metrics.txt | grep -q '^triad_reload_pending '"
check "http probes keep their connection between checks (reused)" wait_for 10 st_is dc2 \
    '[.sites[].probes[] | select(.kind == "http") | .reused] | (length > 0 and all)' true ||
    diag "$(st dc2 '[.sites[].probes[] | select(.kind == "http") | {site, name, reused, detail}]')"

# --- DC1's daemon restarted: it keeps its lease (state_dir/lease) ---
mark_logs
"$LAB" daemons restart dc1 >/dev/null 2>&1
check "DC1's daemon restarted: its lease is restored, not fenced" \
    wait_for 10 bash -c "tail -c +$((MARK[dc1] + 1)) $LAB_DIR/dc1/triad.log | grep -q 'event=+lease .*restored=true'"
check "... and renewed by the peers" wait_for 10 st_is dc1 '[.lease.held, .lease.fenced]|tostring' '[true,false]'
check "... with no self-fence on the way" test "$(events dc1 +self-fence)" -eq 0
check "... DC1's PostgreSQL stayed writable" bash -c "[ \"\$('$LAB' sql dc1 postgres 'SHOW default_transaction_read_only')\" = off ]"

# --- the lease back while DC1's fence still runs: that fence is cancelled,
# then the fence is lifted (rounds never overlap); lifting it fails (the
# Kubernetes API answers 500) and is tried again ---
"$LAB" daemons stop all >/dev/null 2>&1
rm -rf "$LAB_DIR"/dc?/state # no lease file: DC1 starts without a lease
echo timeout >"$LAB_DIR/dc1/k8s-fault"
mark_logs
"$LAB" daemons start dc1 >/dev/null 2>&1
wait_for 10 bash -c "tail -c +$((MARK[dc1] + 1)) $LAB_DIR/dc1/triad.log | grep -q 'event=fence method=postgres'"
sleep 0.5 # the Kubernetes fence's first request is in, and hangs
echo 500 >"$LAB_DIR/dc1/k8s-fault"
"$LAB" daemons start dc2 >/dev/null 2>&1
"$LAB" daemons start dc3 >/dev/null 2>&1
check "DC1 alone at start fences itself; the lease comes back while its Kubernetes fence hangs: that fence is cancelled" \
    wait_for 15 bash -c "tail -c +$((MARK[dc1] + 1)) $LAB_DIR/dc1/triad.log | grep -q 'event=fence-superseded fence=dc1-ess'"
check "... lifting the fence fails while the Kubernetes API answers 500" \
    wait_for 15 bash -c "tail -c +$((MARK[dc1] + 1)) $LAB_DIR/dc1/triad.log | grep -q 'event=unfence method=k8s name=dc1-ess site=dc1 result=failed'"
: >"$LAB_DIR/dc1/k8s-fault"
check "... and is tried again, and verified, once it answers" \
    wait_for 15 bash -c "tail -c +$((MARK[dc1] + 1)) $LAB_DIR/dc1/triad.log | grep -q 'event=unfence method=k8s name=dc1-ess site=dc1 result=verified'"
check "... nothing left running, PostgreSQL writable" bash -c "
    [ \"\$(ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/dc1/triad.yaml | jq -c '[.lease.fenced, .lease.fence_actions_running]')\" = '[false,0]' ] &&
    [ \"\$('$LAB' sql dc1 postgres 'SHOW default_transaction_read_only')\" = off ]"
check "... the retry is logged" bash -c "tail -c +$((MARK[dc1] + 1)) $LAB_DIR/dc1/triad.log | grep -q 'lifting the fence again'"
wait_for 10 st_is dc2 .quorum.have 3
wait_for 10 st_is dc3 .quorum.have 3

# --- DC1 killed ---
t0=$(date +%s%N)
"$LAB" kill dc1 >/dev/null 2>&1
wait_for 15 st_is dc2 .sites.dc1.state odown
t2=$(date +%s%N)
wait_for 15 st_is dc3 .sites.dc1.state odown
check "DC1 killed: DC2 and DC3 reach ODOWN(dc1)" st_is dc3 .sites.dc1.state odown
diag "kill -> ODOWN seen by DC2's status: $(((t2 - t0) / 1000000)) ms"
check "a decision is recorded on both survivors" wait_for 15 bash -c "
    [ \"\$(ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/dc2/triad.yaml | jq -r .decision.epoch)\" != null ] &&
    [ \"\$(ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/dc3/triad.yaml | jq -r .decision.epoch)\" = \
      \"\$(ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/dc2/triad.yaml | jq -r .decision.epoch)\" ]"
sleep 3
leaders=$(($(events dc2 +leader) + $(events dc3 +leader)))
check "exactly one leader was elected (got $leaders)" test "$leaders" -eq 1
check "both agree on the leader and on DC2 as the new primary" bash -c "
    a=\$(ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/dc2/triad.yaml | jq -r '[.leader,.primary_site]|join(\",\")')
    b=\$(ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/dc3/triad.yaml | jq -r '[.leader,.primary_site]|join(\",\")')
    [ \"\$a\" = \"\$b\" ] && [ \"\${a#*,}\" = dc2 ]"
check "the decision is on disk (quorum.json) at both survivors" bash -c "
    jq -e '.decision.to == \"dc2\"' $LAB_DIR/dc2/state/quorum.json >/dev/null && jq -e '.decision.to == \"dc2\"' $LAB_DIR/dc3/state/quorum.json >/dev/null"

# --- DC1 isolated but alive ---
check "reset" lab_reset
"$LAB" writer start --rate 20 >/dev/null 2>&1
wait_for 10 bash -c "jq -e 'select(.ev == \"ack\" and .site == \"dc1\")' '$LAB_DIR/writer.jsonl' | grep -q ."
sleep 1
t_iso=$(date +%s.%N)
"$LAB" isolate dc1 >/dev/null 2>&1
check "isolated DC1 fences itself within lease_timeout (4 s) + 2 s" \
    wait_for 6 bash -c "[ \"\$('$LAB' sql dc1 postgres 'SHOW default_transaction_read_only')\" = on ]"
check "DC1's PostgreSQL refuses a write" bash -c "! '$LAB' sql dc1 postgres 'BEGIN; CREATE TEMP TABLE x (i int); COMMIT' 2>/dev/null ||
    [ \"\$('$LAB' sql dc1 postgres 'SHOW default_transaction_read_only')\" = on ]"
check "DC2 and DC3 elect a leader and record a decision" wait_for 15 bash -c "
    [ \"\$(ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/dc3/triad.yaml | jq -r .decision.to)\" = dc2 ]"
"$LAB" writer stop >/dev/null 2>&1
last_dc1=$(jq -r 'select(.ev == "ack" and .site == "dc1") | .wall' "$LAB_DIR/writer.jsonl" 2>/dev/null | tail -n 1)
n_dc1=$(jq -r 'select(.ev == "ack" and .site == "dc1") | .id' "$LAB_DIR/writer.jsonl" 2>/dev/null | wc -l)
check "the writer had acknowledged writes from DC1 before the isolation ($n_dc1)" test "$n_dc1" -gt 0
check "no write acknowledged by DC1 after its lease expired" \
    awk -v a="${last_dc1:-0}" -v b="$t_iso" 'BEGIN { exit !(a + 0 < b + 4.0) }'
"$LAB" heal >/dev/null 2>&1
check "after heal DC1 learns the decision and stays fenced" wait_for 10 bash -c "
    [ \"\$(ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/dc1/triad.yaml | jq -r '[.primary_site, .lease.fenced]|join(\",\")')\" = dc2,true ]"
sleep 2
check "DC1's PostgreSQL is still read-only after heal" \
    bash -c "[ \"\$('$LAB' sql dc1 postgres 'SHOW default_transaction_read_only')\" = on ]"

# --- only the DC1-DC2 link cut ---
check "reset" lab_reset
"$LAB" partition dc1 dc2 >/dev/null 2>&1
sleep 15 # five times the detection time
check "DC1-DC2 cut: DC2 sees DC1 down but there is no ODOWN" st_is dc2 .sites.dc1.state sdown ||
    diag "DC2's view of DC1: $(st dc2 '.sites.dc1|tostring')" "$(nsx $TRIAD probe -c $LAB_DIR/dc2/triad.yaml --once 2>&1 | grep dc1)"
check "no ODOWN, no election, no decision anywhere" bash -c "
    for s in dc2 dc3; do
        [ \"\$(ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/\$s/triad.yaml | jq -r '[.epoch, .decision]|tostring')\" = '[0,null]' ] || exit 1
    done"
check "no +odown or +leader event in any log" test "$(($(events dc2 +odown) + $(events dc3 +odown) + $(events dc2 +leader) + $(events dc3 +leader)))" -eq 0
check "DC1 keeps its lease through DC3 and is not fenced" st_is dc1 '[.lease.held, .lease.fenced]|tostring' '[true,false]'

# --- witness lost ---
check "reset" lab_reset
"$LAB" kill dc3 >/dev/null 2>&1
sleep 10
check "DC3 lost: DC1 keeps its lease (majority DC1+DC2), no failover" bash -c "
    [ \"\$(ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/dc1/triad.yaml | jq -r '[.lease.held, .lease.fenced, .epoch]|tostring')\" = '[true,false,0]' ]"
check "DC3 is reported ODOWN (an alert, not a failover)" st_is dc2 .sites.dc3.state odown

# --- standby lost ---
check "reset" lab_reset
"$LAB" kill dc2 >/dev/null 2>&1
sleep 10
check "DC2 lost: no failover, DC1 keeps its lease" bash -c "
    [ \"\$(ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/dc1/triad.yaml | jq -r '[.lease.held, .epoch, .decision]|tostring')\" = '[true,0,null]' ]"
check "DC2 is reported ODOWN" st_is dc3 .sites.dc2.state odown

# --- flapping DC1 ---
check "reset" lab_reset
for i in $(seq 8); do
    "$LAB" isolate dc1 >/dev/null 2>&1
    sleep 0.7
    "$LAB" heal >/dev/null 2>&1
    sleep 0.7
done
sleep 2
check "DC1 flapping faster than down_after: no ODOWN" test "$(($(events dc2 +odown) + $(events dc3 +odown)))" -eq 0
check "and no decision" st_is dc2 .decision null

# --- a daemon restarted mid-election keeps its vote ---
check "reset" lab_reset
"$LAB" kill dc1 >/dev/null 2>&1
wait_for 15 bash -c "jq -e '.voted_epoch >= 1' $LAB_DIR/dc3/state/quorum.json"
before=$(jq -c '[.voted_epoch, .voted_for]' "$LAB_DIR/dc3/state/quorum.json")
"$LAB" daemons restart dc3 >/dev/null 2>&1
sleep 2
after=$(jq -c '[.voted_epoch, .voted_for]' "$LAB_DIR/dc3/state/quorum.json")
check "DC3's persisted vote survives its restart ($before -> $after)" test "$before" = "$after"
check "DC3 reports the same epoch after restart" wait_for 10 bash -c "
    [ \"\$(ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/dc3/triad.yaml | jq -r .epoch)\" -ge \"$(jq '.[0]' <<<"$before")\" ]"

# --- DC1's PostgreSQL down while DC1 fences itself ---
check "reset" lab_reset
"$LAB" pg stop dc1 >/dev/null 2>&1
"$LAB" isolate dc1 >/dev/null 2>&1
check "DC1 isolated with its PostgreSQL down: its self-fence fails" \
    wait_for 15 grep -q 'event=-fence-failed fence=dc1-postgres' "$LAB_DIR/dc1/triad.log"
"$LAB" pg start dc1 >/dev/null 2>&1
check "PostgreSQL started again: the fence is retried and it comes back read-only" \
    wait_for 15 bash -c "[ \"\$('$LAB' sql dc1 postgres 'SHOW default_transaction_read_only')\" = on ]"
check "... the retry is logged" grep -q 'trying the self-fence again' "$LAB_DIR/dc1/triad.log"
"$LAB" heal >/dev/null 2>&1

# --- a peer with the wrong certificate ---
S=$LAB_DIR/secrets
nsx timeout 3 openssl s_client -connect 127.0.3.1:7400 -cert "$S/rogue/dc2.pem" -key "$S/rogue/dc2.key" \
    -CAfile "$S/ca.pem" </dev/null >/dev/null 2>&1
nsx timeout 3 openssl s_client -connect 127.0.2.1:7400 -cert "$S/dc2.pem" -key "$S/dc2.key" \
    -CAfile "$S/ca.pem" </dev/null >/dev/null 2>&1
sleep 1
check "a peer certificate from another CA is refused and logged" \
    grep -q 'event=peer-refused.*certificate' "$LAB_DIR/dc3/triad.log"
check "a certificate of the right CA with the wrong site name is refused and logged" \
    grep -q "event=peer-refused.*'dc2' is not one of the accepted names" "$LAB_DIR/dc2/triad.log"

"$LAB" daemons stop all >/dev/null 2>&1
tap_done
