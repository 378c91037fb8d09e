#!/bin/bash
# failover.sh: N game days of `triad drill dc1-loss` in automatic mode with
# the lab's default timings (default 10), each on a fresh lab. For every run
# and as a distribution, in seconds from the kill:
#   detection   ODOWN(dc1) at the leader
#   decision    the decision recorded on a majority
#   promoted    DC2's PostgreSQL promoted (pg.promote done)
#   dns         the public name verified at DC2 on every server
#   dc2 serves  the first write acknowledged through DC2's ingress by a
#               client that does not wait for DNS (pinned to 127.0.2.10)
#   rto-ttl     the RTO without the lab's DNS TTL: max(dns, dc2 serves), when
#               a client without a cached answer writes again
#   rto         the writer's RTO through the public name (its cached answer
#               lives up to the TTL, 5 s in the lab)
# Target (issue 8): rto-ttl p50 under 10 s.
#
#   tests/bench/failover.sh [RUNS]
# Needs root; runs its own lab (LAB_DIR=/tmp/triad-bench-f, netns triad-bench-f).
set -u
cd "$(dirname "$0")/../.." || exit 1
RUNS=${1:-10}
export LAB_DIR=/tmp/triad-bench-f LAB_NETNS=triad-bench-f
. tests/integration/lablib.sh
[ -x ./triad ] || { echo "build first: make" >&2; exit 1; }
POLLER=
trap '[ -n "$POLLER" ] && kill "$POLLER" 2>/dev/null; "$LAB" down >/dev/null 2>&1' EXIT
OUT_DIR=${BUILD:-build}/bench
mkdir -p "$OUT_DIR"
ROWS=$OUT_DIR/failover.tsv
printf 'run\tdetection\tdecision\tpromoted\tdns\tdc2_serves\trto_ttl\trto\tlost\n' >"$ROWS"

# Writes pinned to DC2's ingress every 100 ms; the wall time (ms) of the
# first acknowledgement goes into FILE. Ids far above the writer's.
pinned_poller() { # FILE
    local id=900000000
    while :; do
        id=$((id + 1))
        if nsx curl -s -m 1 --interface 127.0.9.100 --cacert "$LAB_DIR/secrets/ca.pem" \
            --resolve matrix.lab.test:443:127.0.2.10 -H 'Content-Type: application/json' \
            -d "{\"id\": $id}" https://matrix.lab.test/write 2>/dev/null | grep -q '"txid"'; then
            date +%s%3N >"$1"
            return
        fi
        sleep 0.1
    done
}

for i in $(seq "$RUNS"); do
    "$LAB" down >/dev/null 2>&1
    if ! "$LAB" up >/dev/null 2>&1; then
        echo "run $i: lab up failed; skipped"
        continue
    fi
    for s in dc1 dc2 dc3; do
        sed -i -E 's/^  mode: (manual|semi-automatic)$/  mode: automatic/' "$LAB_DIR/$s/triad.yaml"
    done
    if ! lab_reset; then
        echo "run $i: the lab did not settle; skipped"
        continue
    fi
    rm -f "$LAB_DIR/dc2-serves"
    pinned_poller "$LAB_DIR/dc2-serves" &
    POLLER=$!
    out=$(nsx "$TRIAD" drill dc1-loss -c "$LAB_DIR/dc2/triad.yaml" 2>&1)
    rc=$?
    kill "$POLLER" 2>/dev/null
    wait "$POLLER" 2>/dev/null
    POLLER=
    run=$(sed -nE 's/^run ([^ ]+) .*/\1/p' <<<"$out" | head -n 1)
    if [ $rc != 0 ] || [ -z "$run" ]; then
        echo "run $i: the drill failed (exit $rc); see below"
        tail -n 5 <<<"$out" | sed 's/^/    /'
        continue
    fi
    rep=$(nsx "$TRIAD" report "$run" --format json -c "$LAB_DIR/dc2/triad.yaml")
    serves=$(cat "$LAB_DIR/dc2-serves" 2>/dev/null || echo)
    jq -r --arg i "$i" --arg serves "$serves" '
        .figures as $f | (.drill.fault_ms // .t0_ms) as $t0 |
        (if $serves == "" then null else (($serves | tonumber) - $t0) / 1000 end) as $s |
        [$i, $f.detection_s, $f.decision_s, $f.promoted_s, $f.dns_verified_s, $s,
         (if $s == null or $f.dns_verified_s == null then null
          else ([$s, $f.dns_verified_s] | max) end),
         $f.rto_s, $f.acknowledged_writes_lost]
        | map(if . == null then "-" elif type == "number" then (. * 100 | round / 100 | tostring) else tostring end)
        | @tsv' <<<"$rep" >>"$ROWS"
    tail -n 1 "$ROWS" | awk -F'\t' '{ printf "run %s: detection %s s, decision %s s, promoted %s s, dns %s s, dc2 serves %s s, rto-ttl %s s, rto %s s, writes lost %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9 }'
done

echo
awk -F'\t' 'NR > 1 { n++; for (c = 2; c <= 8; c++) v[c, n] = $c }
    function pct(c, p,   k, m, a, b, t) {
        m = 0
        for (k = 1; k <= n; k++) if (v[c, k] != "-") a[++m] = v[c, k] + 0
        if (m == 0) return "-"
        for (k = 1; k <= m; k++) for (b = k + 1; b <= m; b++) if (a[b] < a[k]) { t = a[k]; a[k] = a[b]; a[b] = t }
        return a[int((m - 1) * p) + 1]
    }
    END {
        if (n == 0) { print "no results"; exit 1 }
        split("detection decision promoted dns dc2-serves rto-ttl rto", name, " ")
        printf "over %d runs (seconds from the kill):\n", n
        for (c = 2; c <= 8; c++)
            printf "  %-11s p50 %5s  p90 %5s  max %5s\n", name[c - 1], pct(c, 0.5), pct(c, 0.9), pct(c, 1)
        p = pct(7, 0.5)
        printf "target: RTO without the DNS TTL p50 < 10 s: %s\n", (p != "-" && p < 10) ? "met" : "MISSED"
    }' "$ROWS"
echo "rows: $ROWS"
