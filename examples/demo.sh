#!/bin/bash
# make demo: the three-datacenter lab, a DC1 loss, the failover runbook with
# its approval gates, and the drill's report.
#
# With a terminal, the operator watches the run in `triad console` and
# answers its gates (y/N); without one, or with DEMO_YES=1, the script gives
# the approvals through the CLI and prints them. DEMO_KEEP=1 leaves the lab
# up afterwards (lab.sh down removes it). Needs root (network namespaces).
set -u
cd "$(dirname "$0")/.." || exit 1
REPO=$PWD
export LAB_DIR=${LAB_DIR:-/tmp/triad-lab} LAB_NETNS=${LAB_NETNS:-triad-lab}
LAB=$REPO/examples/lab/lab.sh
T=$REPO/triad
NS() { ip netns exec "$LAB_NETNS" "$@"; }
say() { printf '\n== %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
    echo "demo: needs root (network namespaces, nftables, PostgreSQL as its own user)" >&2
    exit 1
fi
start=$SECONDS
cleanup() {
    if [ "${DEMO_KEEP:-0}" = 1 ]; then
        echo "demo: the lab stays up (DEMO_KEEP=1): $LAB status, $LAB down"
    else
        "$LAB" down >/dev/null 2>&1
    fi
}
trap cleanup EXIT

say "starting the lab: PostgreSQL 15 (DC1 primary, DC2/DC3 replicas), BIND, nginx, stand-ins, three triad daemons"
"$LAB" down >/dev/null 2>&1
"$LAB" up || exit 1
for i in $(seq 50); do
    NS "$T" status --json -c "$LAB_DIR/dc1/triad.yaml" 2>/dev/null | jq -e '.lease.held' >/dev/null && break
    sleep 0.2
done
NS "$T" status -c "$LAB_DIR/dc2/triad.yaml"

interactive=0
[ -t 0 ] && [ "${DEMO_YES:-0}" != 1 ] && interactive=1

say "drill dc1-loss: the writer posts through matrix.lab.test; DC1 is killed"
if [ $interactive = 1 ]; then
    echo "The run will wait for your approval at its gates: answer them in the console below."
    echo "(The console shows the run; press q + Enter to leave it once the run is over.)"
    sleep 2
    NS "$T" drill dc1-loss -c "$LAB_DIR/dc2/triad.yaml" >"$LAB_DIR/drill.out" 2>&1 &
    drill=$!
    NS "$T" console -c "$LAB_DIR/dc2/triad.yaml"
    wait $drill
    rc=$?
    cat "$LAB_DIR/drill.out"
else
    echo "(no terminal or DEMO_YES=1: approvals are given through the CLI by this script)"
    NS "$T" drill dc1-loss --yes -c "$LAB_DIR/dc2/triad.yaml"
    rc=$?
fi

say "after the failover"
NS "$T" status -c "$LAB_DIR/dc2/triad.yaml" | head -n 5
echo "matrix.lab.test now answers: $(NS dig +short @127.0.9.53 matrix.lab.test A)"
echo "demo took $((SECONDS - start)) s"
exit $rc
