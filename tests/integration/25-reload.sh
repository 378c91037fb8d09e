#!/bin/bash
# 25-reload.sh: SIGHUP with real daemons in the lab. What applies live
# (failover mode, operators, probes) does, without touching the quorum; an
# invalid file and a change that needs a restart are refused with the
# reason, the running configuration kept; a reload during a run waits until
# the run is over. TAP output.
set -u
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/tap.sh
if [ "$(id -u)" != 0 ]; then
    echo "ok 1 # SKIP needs root"
    exit 0
fi
export LAB_DIR=/tmp/triad-lab-rl LAB_NETNS=triad-lab-rl
. tests/integration/lablib.sh
trap 'lab_down' EXIT

"$LAB" down >/dev/null 2>&1
"$LAB" up >/dev/null 2>&1 || { not_ok "lab up"; tap_done; exit 1; }
check "three daemons form a quorum" lab_reset
CFG=$LAB_DIR/dc2/triad.yaml
cp "$CFG" "$LAB_DIR/dc2.yaml.orig"
hup() { # SITE: SIGHUP, then wait for the daemon's answer in its log
    local before
    before=$(stat -c %s "$LAB_DIR/$1/triad.log")
    kill -HUP "$(cat "$LAB_DIR/$1/triad.pid")"
    wait_for 10 bash -c "tail -c +$((before + 1)) '$LAB_DIR/$1/triad.log' | grep -qE 'event=(\+reload|reload-rejected|reload-waiting) '"
    tail -c +"$((before + 1))" "$LAB_DIR/$1/triad.log" >"$LAB_DIR/hup.log"
}
logged() { grep -qE -- "$1" "$LAB_DIR/hup.log"; }
epoch0=$(st dc2 .epoch)

# --- live changes ---
sed -i -E 's/^  mode: semi-automatic$/  mode: automatic/' "$CFG"
sed -i -E 's/^operators:$/operators:\n  - {name: carol, unix_user: nobody}/' "$CFG"
python3 - "$CFG" <<'PY'
import re, sys
p = sys.argv[1]
t = open(p).read()
extra = """  - name: dns-extra
    kind: dns
    site: dc3
    query: matrix.lab.test
    type: A
    servers: [127.0.9.53:53]
    expect: 127.0.1.10
    critical: false
"""
t = re.sub(r"(?m)^probes:\n", "probes:\n" + extra, t, count=1)
open(p, "w").write(t)
PY
check "the edited file is valid" nsx "$TRIAD" check-config -c "$CFG"
hup dc2
names_all() { logged 'event=\+reload .*changed=.*failover' && logged 'event=\+reload .*changed=.*operators' &&
    logged 'event=\+reload .*changed=.*probes'; }
check "SIGHUP: applied without a restart, naming what changed" names_all
check "the failover mode is now automatic" wait_for 5 st_is dc2 .mode automatic
check "the new probe runs" wait_for 10 st_is dc2 '[.sites.dc3.probes[] | select(.name == "dns-extra")][0].state' up
check "the daemon keeps its quorum state (epoch, quorum, DC1's lease)" bash -c "
    [ \"\$(ip netns exec $LAB_NETNS $TRIAD status --json -c $CFG | jq -r '[.epoch, .quorum.have] | join(\",\")')\" = $epoch0,3 ] &&
    [ \"\$(ip netns exec $LAB_NETNS $TRIAD status --json -c $LAB_DIR/dc1/triad.yaml | jq -r .lease.held)\" = true ]"
check "no site is seen down after the probes were replaced" \
    bash -c "! grep -q 'event=+sdown' $LAB_DIR/dc2/triad.log"

# --- refused ---
cp "$CFG" "$LAB_DIR/dc2.yaml.good"
printf 'nonsense: [\n' >>"$CFG"
hup dc2
check "an invalid file is refused with FILE:LINE:COLUMN" logged "event=reload-rejected .*triad.yaml:[0-9]+:[0-9]+:"
# (the CLI itself needs a valid file to find the daemon: the copy)
mode_via_copy() { nsx "$TRIAD" status --json -c "$LAB_DIR/dc2.yaml.good" | jq -e '.mode == "automatic" and .quorum.have == 3' >/dev/null; }
check "... and the daemon runs on with its configuration" mode_via_copy
cp "$LAB_DIR/dc2.yaml.good" "$CFG"
sed -i -E 's/^  mode: automatic$/  mode: manual/' "$CFG"
sed -i -E 's/^  lease_timeout: .*/  lease_timeout: 6s/' "$CFG"
hup dc2
check "a change that needs a restart is refused, naming it" \
    logged 'event=reload-rejected .*restart_needed=quorum'
check "... and nothing of the file was applied (the mode stays automatic)" st_is dc2 .mode automatic

# --- during a run ---
cp "$LAB_DIR/dc2.yaml.orig" "$CFG"
hup dc2
check "back to the original file (semi-automatic)" wait_for 5 st_is dc2 .mode semi-automatic
"$LAB" kill dc1 >/dev/null 2>&1
check "DC1 killed: a run waits at its first gate" wait_for 20 st_is dc2 .run.state waiting
R=$(st dc2 .run.id)
run_metrics() {
    nsx curl -s --unix-socket "$LAB_DIR/dc2/triad.sock" http://triad/metrics >"$LAB_DIR/metrics.txt" &&
        grep -q '^triad_run_active 1$' "$LAB_DIR/metrics.txt" &&
        grep -q '^triad_run_gates_waiting 1$' "$LAB_DIR/metrics.txt" &&
        grep -q "^triad_run_info{run=\"$R\",runbook=\"dc1-loss\",state=\"waiting\"} 1$" "$LAB_DIR/metrics.txt" &&
        grep -q '^triad_run_steps{state="awaiting_approval"} 1$' "$LAB_DIR/metrics.txt" &&
        grep -q '^triad_primary{site="dc2"} 1$' "$LAB_DIR/metrics.txt"
}
check "/metrics shows the run, its waiting gate, its steps and the decided primary" run_metrics
dashboard_metrics_exist() { # every metric the Grafana dashboard queries is exported
    local m
    for m in $(jq -r '[.. | .expr? // empty] | .[]' examples/grafana/triad-dashboard.json |
        grep -o 'triad_[a-z_]*' | sort -u); do
        grep -q "^$m[{ ]" "$LAB_DIR/metrics.txt" || { echo "missing: $m"; return 1; }
    done
}
check "every metric of examples/grafana/triad-dashboard.json is exported" dashboard_metrics_exist
sed -i -E 's/^  mode: semi-automatic$/  mode: automatic/' "$CFG"
hup dc2
check "a reload during the run waits" logged 'event=reload-waiting .*reason="a run is in progress"'
check "... status says so" st_is dc2 .reload_pending true
check "... the mode is unchanged meanwhile" st_is dc2 .mode semi-automatic
nsx "$TRIAD" abort "$R" -c "$CFG" >/dev/null 2>&1
check "after the run, the reload applies" wait_for 15 st_is dc2 .mode automatic
check "... and nothing waits any more" st_is dc2 .reload_pending false
check "the daemons never crashed" bash -c "for s in dc1 dc2 dc3; do [ \$s = dc1 ] && continue; kill -0 \$(cat $LAB_DIR/\$s/triad.pid) || exit 1; done"

# --- started as root with --user: root given up once bound ---
"$LAB" daemons stop dc3 >/dev/null 2>&1
LAB_DAEMON_ARGS="--user nobody" "$LAB" daemons start dc3 >/dev/null 2>&1
pid3=$(cat "$LAB_DIR/dc3/triad.pid" 2>/dev/null)
check "--user nobody: DC3's daemon runs as nobody" wait_for 5 bash -c "[ \"\$(ps -o user= -p ${pid3:-0})\" = nobody ]"
check "... says so in its log" grep -q 'event=privileges-dropped user=nobody' "$LAB_DIR/dc3/triad.log"
check "... its state and socket were handed over" bash -c "
    [ \"\$(stat -c %U $LAB_DIR/dc3/state/quorum.json)\" = nobody ] && [ \"\$(stat -c %U $LAB_DIR/dc3/triad.sock)\" = nobody ]"
check "... it takes part in the quorum (DC2 and DC3; DC1 was killed)" wait_for 10 st_is dc3 .quorum.have 2
check "... and DC2 hears it" wait_for 10 st_is dc2 '.sites.dc3.link | startswith("up")' true
"$LAB" daemons stop dc3 >/dev/null 2>&1
check "... and stops cleanly" bash -c "tail -n 1 $LAB_DIR/dc3/triad.log | grep -q 'event=stop '"

"$LAB" daemons stop all >/dev/null 2>&1
tap_done
