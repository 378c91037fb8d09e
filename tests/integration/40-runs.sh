#!/bin/bash
# 40-runs.sh: the runbook engine with real daemons in the lab (issue 6):
# a run started by the leader on ODOWN, gates approved through the CLI (at a
# follower, forwarded to the leader) and through `triad console` driven in
# tmux, a denied gate, a gate timing out, an abort, the two-person rule,
# operator identity (unknown user, bearer tokens), the journal replicated
# to the followers, and a run taken over by a new leader when its leader is
# killed mid-run (done steps not repeated). The runbook is a test one made
# of engine-level actions (fence by lease, wait, notify), so that this
# suite tests the engine, not the PostgreSQL or DNS actions. TAP output.
set -u
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/tap.sh
if [ "$(id -u)" != 0 ]; then
    echo "ok 1 # SKIP needs root"
    exit 0
fi
export LAB_DIR=/tmp/triad-lab-r LAB_NETNS=triad-lab-r
. tests/integration/lablib.sh
trap 'lab_down; tmux kill-session -t triad-console-test 2>/dev/null' EXIT

RB=$LAB_DIR/test-runbook.yaml
TOKEN=s3cret-token-of-the-bot
TOKEN_SHA=$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)

# configure MODE WAIT_S APPROVALS_REQUIRED GATE_TIMEOUT OPERATORS_YAML
configure() {
    cat >"$RB" <<EOF
runbook: dc1-loss
description: engine test runbook
steps:
  - id: fence
    action: fence
    approve: required
    params: {site: "\${run.from}", methods: ["\${run.from}-lease"]}
  - id: hold
    action: wait
    approve: ${5:-required}
    params: {duration: $2s}
  - id: tell
    action: notify
    params: {message: "run \${run.id} done"}
EOF
    local s
    for s in dc1 dc2 dc3; do
        python3 - "$LAB_DIR/$s/triad.yaml" "$RB" "$1" "$3" "$4" "$6" <<'PY'
import re, sys
path, rb, mode, req, tmo, ops = sys.argv[1:]
t = open(path).read()
t = re.sub(r"(?m)^  dc1-loss: .*$", "  dc1-loss: " + rb, t)
t = re.sub(r"(?ms)^failover:\n  mode: [a-z-]+", "failover:\n  mode: " + mode, t)
t = re.sub(r"(?ms)^approvals:\n  required: \d+\n  timeout: \S+", "approvals:\n  required: %s\n  timeout: %s" % (req, tmo), t)
t = re.sub(r"(?ms)^operators:\n.*?(?=^\S)", "operators:\n" + ops + "\n", t)
open(path, "w").write(t)
PY
    done
}

ROOT_OPS='  - {name: root, unix_user: root}
  - {name: bot, token_sha256: '"$TOKEN_SHA"'}'

dc() { nsx "$TRIAD" "$@"; }
run_id() { st dc2 '.run.id'; }
step_state() { st "$1" ".run.steps[] | select(.id == \"$2\") | .state"; }

"$LAB" down >/dev/null 2>&1
"$LAB" up >/dev/null 2>&1 || { not_ok "lab up"; tap_done; exit 1; }

# --- a run, gates approved at a follower (CLI) and in the console -----------
configure semi-automatic 1 1 2m required "$ROOT_OPS"
check "daemons restart on the test runbook" lab_reset
"$LAB" kill dc1 >/dev/null 2>&1
check "DC1 killed: the leader starts the failover run" wait_for 20 st_is dc2 .run.state waiting
R=$(run_id)
check "the first gate waits: fence" st_is dc2 '.run.current' fence
check "approve at a follower (DC3): forwarded to the leader" \
    bash -c "ip netns exec $LAB_NETNS $TRIAD approve $R fence -c $LAB_DIR/dc3/triad.yaml | grep -q approved"
check "the fence is verified by the lease and the next gate waits" wait_for 15 bash -c "
    [ \"\$(ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/dc2/triad.yaml | jq -r '.run.current')\" = hold ] &&
    [ \"\$(ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/dc2/triad.yaml | jq -r '.run.state')\" = waiting ]"
# the console, in a real terminal (tmux), answers the gate
tmux kill-session -t triad-console-test 2>/dev/null
tmux new-session -d -s triad-console-test -x 160 -y 50 \
    "ip netns exec $LAB_NETNS $TRIAD console -c $LAB_DIR/dc2/triad.yaml"
check "the console shows the prompt" wait_for 10 bash -c \
    "tmux capture-pane -p -t triad-console-test | grep -q \"Approve step 'hold' (wait 1s)? \\[y/N\\]\""
tmux send-keys -t triad-console-test y Enter
check "y in the console approves: the run completes" wait_for 15 st_is dc2 .run.state done
tmux send-keys -t triad-console-test q Enter
check "the journal on the leader holds both approvals with their operator" \
    bash -c "[ \$(jq -s '[.[] | select(.t == \"approval\" and .who == \"root\")] | length' $LAB_DIR/dc2/state/runs/$R.jsonl) = 2 ]"
check "the journal is replicated to DC3, run-end included" wait_for 10 bash -c \
    "grep -q '\"run-end\"' $LAB_DIR/dc3/state/runs/$R.jsonl"
check "DC3 reports the run as done too" st_is dc3 .run.state done
[ -n "${STOP_AFTER_FIRST:-}" ] && { tap_done; exit; }
check "the anti-flapping block holds after the run" st_is dc2 '.run.blocked_until_ms != null' true
check "triad ack lifts it" bash -c "ip netns exec $LAB_NETNS $TRIAD ack -c $LAB_DIR/dc3/triad.yaml | grep -q acknowledged"
check "lifted on the other sites too" wait_for 5 st_is dc2 '.run.blocked_until_ms' null
check "triad report renders the run (markdown)" bash -c \
    "ip netns exec $LAB_NETNS $TRIAD report $R -c $LAB_DIR/dc2/triad.yaml | grep -q '| fence | fence | done |'"

# --- a denied gate ----------------------------------------------------------------
configure semi-automatic 1 1 2m required "$ROOT_OPS"
check "reset" lab_reset
"$LAB" kill dc1 >/dev/null 2>&1
wait_for 20 st_is dc2 .run.state waiting
R=$(run_id)
check "deny needs a reason" bash -c "! ip netns exec $LAB_NETNS $TRIAD deny $R fence -c $LAB_DIR/dc2/triad.yaml"
dc deny "$R" fence --reason "not a real outage" -c "$LAB_DIR/dc2/triad.yaml" >/dev/null
check "a denied gate fails the run with the reason" wait_for 5 bash -c "
    ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/dc2/triad.yaml |
    jq -e '.run.state == \"failed\" and (.run.end_reason | contains(\"not a real outage\"))' >/dev/null"

# --- a gate nobody answers ----------------------------------------------------------
configure semi-automatic 1 1 3s required "$ROOT_OPS"
check "reset" lab_reset
"$LAB" kill dc1 >/dev/null 2>&1
wait_for 20 st_is dc2 .run.state waiting
check "an unanswered gate times out to deny" wait_for 10 bash -c "
    ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/dc2/triad.yaml |
    jq -e '.run.state == \"failed\" and (.run.end_reason | contains(\"nobody answered\"))' >/dev/null"

# --- abort, identities and the two-person rule ---------------------------------------
configure semi-automatic 30 2 2m none "$ROOT_OPS"
check "reset" lab_reset
"$LAB" kill dc1 >/dev/null 2>&1
wait_for 20 st_is dc2 .run.state waiting
R=$(run_id)
dc approve "$R" fence -c "$LAB_DIR/dc2/triad.yaml" >/dev/null
check "two-person rule: one approval is not enough" bash -c "sleep 1; [ \"\$(ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/dc2/triad.yaml | jq -r '.run.steps[0].state')\" = awaiting_approval ]"
check "the same operator cannot approve twice" bash -c "! ip netns exec $LAB_NETNS $TRIAD approve $R fence -c $LAB_DIR/dc2/triad.yaml"
code=$(nsx curl -s -o /dev/null -w '%{http_code}' --unix-socket "$LAB_DIR/dc2/triad.sock" \
    -H "Authorization: Bearer not-the-token" -X POST "http://triad/v1/runs/$R/steps/fence/approve")
check "a wrong bearer token is refused (403), not taken as the socket's user" test "$code" = 403
code=$(runuser -u nobody -- curl -s -o /dev/null -w '%{http_code}' --unix-socket "$LAB_DIR/dc2/triad.sock" \
    -X POST "http://triad/v1/runs/$R/steps/fence/approve" 2>/dev/null)
check "a user outside the socket's group cannot even connect (got '$code')" test "$code" = 000
code=$(nsx curl -s -o /dev/null -w '%{http_code}' --unix-socket "$LAB_DIR/dc2/triad.sock" \
    -H "Authorization: Bearer $TOKEN" -X POST "http://triad/v1/runs/$R/steps/fence/approve")
check "a second operator (bearer token) completes the approval" test "$code" = 200
check "the fence runs, then the 30 s wait" wait_for 15 st_is dc2 '.run.current' hold
dc abort "$R" -c "$LAB_DIR/dc3/triad.yaml" >/dev/null
check "abort (given at a follower) ends the run as aborted" wait_for 5 st_is dc2 .run.state aborted

# --- the leader killed mid-run ------------------------------------------------------
configure semi-automatic 8 1 2m none "$ROOT_OPS"
check "reset" lab_reset
"$LAB" kill dc1 >/dev/null 2>&1
wait_for 20 st_is dc2 .run.state waiting
R=$(run_id)
dc approve "$R" fence -c "$LAB_DIR/dc2/triad.yaml" >/dev/null
wait_for 15 st_is dc2 '.run.current' hold
# DC1 comes back (fenced: it learns the decision) so that DC1 and DC3 make a
# majority without the leader; then the leader's daemon dies.
"$LAB" revive dc1 >/dev/null 2>&1
wait_for 15 st_is dc1 .primary_site dc2
kill -9 "$(cat "$LAB_DIR/dc2/triad.pid")"
check "a new leader takes the run over" wait_for 25 bash -c "
    grep -q '\"takeover\"' $LAB_DIR/dc3/state/runs/$R.jsonl 2>/dev/null ||
    grep -q '\"takeover\"' $LAB_DIR/dc1/state/runs/$R.jsonl 2>/dev/null"
new=$(for s in dc1 dc3; do [ "$(st $s .role)" = leader ] && echo $s; done | head -n 1)
check "and completes it (new leader: ${new:-none})" wait_for 30 bash -c "
    for s in dc1 dc3; do
        ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/\$s/triad.yaml | jq -e '.run.state == \"done\"' >/dev/null && exit 0
    done; exit 1"
j=$LAB_DIR/${new:-dc3}/state/runs/$R.jsonl
check "the fence step was not repeated after the takeover" \
    bash -c "[ \$(jq -s '[.[] | select(.t == \"step\" and .step == \"fence\" and .to == \"running\")] | length' $j) = 1 ]"
check "the takeover is journaled with a higher epoch" \
    bash -c "jq -s -e '[.[] | select(.t == \"takeover\")][0].epoch > [.[] | select(.t == \"run-start\")][0].epoch' $j >/dev/null"

"$LAB" daemons stop all >/dev/null 2>&1
tap_done
