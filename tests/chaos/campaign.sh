#!/bin/bash
# campaign.sh: randomized fault schedules over the lab, with invariants
# checked after each (tests/chaos/check.py says which).
#
#   tests/chaos/campaign.sh [-n SCHEDULES] [-s SEED] [-d SECONDS]
#
# Each schedule: a fresh lab, daemons in automatic mode, the writer posting
# through the public name and a sampler watching which PostgreSQL servers
# accept writes; then SECONDS of faults drawn from the seeded generator
# (kill -9 of a daemon or of a PostgreSQL, the leader killed in the middle
# of a run, a site isolated, a pair partitioned, DC1 flapping, slow peer
# links, the DNS
# server frozen, the Kubernetes stand-in answering 500/503 or hanging), then
# every fault undone, the daemons left to settle, and the invariants
# checked. Schedule i uses seed SEED+i: rerun one with -n 1 -s THAT_SEED
# (the same faults at the same moments; the system's timing varies).
# Prints a line per schedule, then `schedules run: N`, `violations: N` and
# the seeds of the failed schedules; exit 1 on any violation. Traces stay
# in build/chaos/SEED/. Needs root; its own lab (LAB_DIR=/tmp/triad-chaos).
#
# The daemons' peer links go through tests/chaos/delayproxy.py (an
# nftables DNAT in the lab's namespace), so that a schedule can also make
# links slow: 0.1 to 3 s one way, between two sites or to/from one. Not
# modelled: clock jumps.
set -u
cd "$(dirname "$0")/../.." || exit 1
N=3 SEED=$(($(date +%s) % 100000)) DURATION=30
while getopts "n:s:d:" o; do
    case $o in
    n) N=$OPTARG ;;
    s) SEED=$OPTARG ;;
    d) DURATION=$OPTARG ;;
    *)
        echo "usage: campaign.sh [-n SCHEDULES] [-s SEED] [-d SECONDS]" >&2
        exit 2
        ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "chaos: needs root" >&2; exit 2; }
export LAB_DIR=/tmp/triad-chaos LAB_NETNS=triad-chaos
. tests/integration/lablib.sh
[ -x "$TRIAD" ] || { echo "chaos: build first (make)" >&2; exit 2; }
OUT=$PWD/${BUILD:-build}/chaos
SAMPLER= PROXY=
trap '[ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null; [ -n "$PROXY" ] && kill "$PROXY" 2>/dev/null; "$LAB" down >/dev/null 2>&1' EXIT

now() { date +%s.%N | cut -c1-14; }
calc() { awk "BEGIN { printf \"%.3f\", $* }"; } # float arithmetic
before() { awk "BEGIN { exit !($1 < $2) }"; }      # A < B, floats
ev() { # WHAT [SITE] [DETAIL]: one line of what the schedule did
    printf '{"t": %s, "what": "%s", "site": "%s", "detail": "%s"}\n' "$(now)" "$1" "${2:-}" "${3:-}" >>"$CH/events.jsonl"
    printf '  %6.1fs %s %s %s\n' "$(calc "$(now) - $T0")" "$1" "${2:-}" "${3:-}" >>"$CH/schedule.txt"
}
rnd() { echo $((RANDOM % $1)); }         # 0..N-1
pick() { local a=("$@"); echo "${a[RANDOM % ${#a[@]}]}"; }
pm_pid() { head -n 1 "$LAB_DIR/$1/pgdata/postmaster.pid" 2>/dev/null; }
daemon_pid() { cat "$LAB_DIR/$1/triad.pid" 2>/dev/null; }

# Undo actions due at a time: "TIME COMMAND..." lines in $CH/undo.
undo_due() {
    local t line rest
    [ -s "$CH/undo" ] || return 0
    t=$(now)
    : >"$CH/undo.next"
    while read -r line; do
        rest=${line#* }
        if ! before "$t" "${line%% *}"; then
            eval "$rest" </dev/null
        else
            echo "$line" >>"$CH/undo.next"
        fi
    done <"$CH/undo"
    mv "$CH/undo.next" "$CH/undo"
}
later() { # MS COMMAND...: undo after MS
    echo "$(calc "$(now) + $1 / 1000") ${*:2}" >>"$CH/undo"
}

# The undo commands (logged so that check.py knows what the schedule did).
do_pg_start() { "$LAB" pg start "$1" >/dev/null 2>&1; ev pg-start "$1"; }
do_daemon_start() { "$LAB" daemons start "$1" >/dev/null 2>&1; ev daemon-start "$1"; }
do_heal() { "$LAB" heal >/dev/null 2>&1; ev heal; }
do_dns_thaw() { kill -CONT "$(cat "$LAB_DIR/dns/named.pid")" 2>/dev/null; ev dns-thaw; }
do_k8s_clear() { : >"$LAB_DIR/$1/k8s-fault"; ev k8s-clear "$1"; }
do_fast() { : >"$CH/delays"; ev fast; }

# Daemons we did not kill must be alive.
declare -A KILLED
liveness() {
    local s p
    for s in dc1 dc2 dc3; do
        [ -n "${KILLED[$s]:-}" ] && continue
        p=$(daemon_pid "$s")
        if [ -z "$p" ] || ! kill -0 "$p" 2>/dev/null; then
            ev crash "$s" "the daemon of $s died (not killed by the schedule)"
            KILLED[$s]=crashed
        fi
    done
}

fault() {
    local s a b p kind
    kind=$(pick kill-daemon kill-pg kill-leader isolate partition flap dns k8s kill-pg slow slow)
    case $kind in
    kill-daemon)
        s=$(pick dc1 dc2 dc3)
        p=$(daemon_pid "$s")
        [ -n "$p" ] && kill -9 "$p" 2>/dev/null && KILLED[$s]=1 && ev kill-daemon "$s"
        later $((1000 + $(rnd 7000))) do_daemon_start "$s" ";" "unset KILLED[$s]"
        ;;
    kill-pg)
        s=$(pick dc1 dc1 dc2 dc3)
        p=$(pm_pid "$s")
        [ -n "$p" ] && kill -9 "$p" 2>/dev/null && ev kill-pg "$s"
        later $((2000 + $(rnd 8000))) do_pg_start "$s"
        ;;
    kill-leader)
        s=$(st dc2 .leader 2>/dev/null)
        [ -z "$s" ] || [ "$s" = null ] && s=$(st dc3 .leader 2>/dev/null)
        case $s in dc1 | dc2 | dc3) ;; *) return ;; esac
        p=$(daemon_pid "$s")
        [ -n "$p" ] && kill -9 "$p" 2>/dev/null && KILLED[$s]=1 && ev kill-leader "$s" "run $(st "$s" .run.state 2>/dev/null)"
        later $((2000 + $(rnd 6000))) do_daemon_start "$s" ";" "unset KILLED[$s]"
        ;;
    isolate)
        s=$(pick dc1 dc1 dc2 dc3)
        "$LAB" isolate "$s" >/dev/null 2>&1 && ev isolate "$s"
        later $((2000 + $(rnd 10000))) do_heal
        ;;
    partition)
        a=$(pick dc1 dc2 dc3)
        b=$(pick dc1 dc2 dc3)
        [ "$a" = "$b" ] && return
        "$LAB" partition "$a" "$b" >/dev/null 2>&1 && ev partition "$a" "$b"
        later $((2000 + $(rnd 10000))) do_heal
        ;;
    flap)
        ev flap dc1
        for _ in 1 2 3 4; do
            "$LAB" isolate dc1 >/dev/null 2>&1
            sleep 0.5
            "$LAB" heal >/dev/null 2>&1
            sleep 0.5
        done
        ;;
    slow)
        a=$(pick '*' dc1 dc2 dc3)
        b=$(pick '*' dc1 dc2 dc3)
        [ "$a" = "$b" ] && b='*'
        p=$((100 * (1 + $(rnd 30)))) # 0.1 to 3 s
        echo "$a $b $p" >"$CH/delays" && ev slow "$a->$b" "${p} ms"
        later $((3000 + $(rnd 9000))) do_fast
        ;;
    dns)
        kill -STOP "$(cat "$LAB_DIR/dns/named.pid")" 2>/dev/null && ev dns-freeze
        later $((3000 + $(rnd 7000))) do_dns_thaw
        ;;
    k8s)
        s=$(pick dc1 dc2)
        a=$(pick 500 503 timeout)
        echo "$a" >"$LAB_DIR/$s/k8s-fault" && ev k8s-fault "$s" "$a"
        later $((3000 + $(rnd 7000))) do_k8s_clear "$s"
        ;;
    esac
}

# Everything undone: faults cleared, servers and daemons running.
heal_all() {
    local s
    while [ -s "$CH/undo" ]; do
        sed -i 's/^[0-9.]* /0 /' "$CH/undo"
        undo_due
    done
    "$LAB" heal >/dev/null 2>&1
    : >"$CH/delays"
    kill -CONT "$(cat "$LAB_DIR/dns/named.pid")" 2>/dev/null
    for s in dc1 dc2 dc3; do
        : >"$LAB_DIR/$s/k8s-fault"
        [ -n "$(pm_pid "$s")" ] && kill -0 "$(pm_pid "$s")" 2>/dev/null || do_pg_start "$s"
    done
    KILLED=()
    "$LAB" daemons start all >/dev/null 2>&1
}

# Settled: every daemon in the quorum and no run in progress.
settled() {
    local s
    for s in dc1 dc2 dc3; do
        [ "$(st $s .quorum.have)" = 3 ] || return 1
        case $(st $s .run.state) in running | waiting) return 1 ;; esac
    done
}

failed_seeds=()
total=0
vio_total=0
mkdir -p "$OUT"
for i in $(seq 0 $((N - 1))); do
    seed=$((SEED + i))
    RANDOM=$seed
    CH=$OUT/$seed
    rm -rf "$CH"
    mkdir -p "$CH"
    : >"$CH/undo"
    KILLED=()
    "$LAB" down >/dev/null 2>&1
    if ! "$LAB" up >"$CH/lab-up.log" 2>&1; then
        echo "schedule seed $seed: lab up failed (see $CH/lab-up.log)"
        failed_seeds+=("$seed")
        continue
    fi
    for s in dc1 dc2 dc3; do
        sed -i -E 's/^  mode: (manual|semi-automatic)$/  mode: automatic/' "$LAB_DIR/$s/triad.yaml"
    done
    # The daemons' peer links through the delay proxy (new connections:
    # lab_reset restarts the daemons).
    : >"$CH/delays"
    nsx python3 tests/chaos/delayproxy.py --control "$CH/delays" >"$CH/proxy.log" 2>&1 &
    PROXY=$!
    nsx nft -f - <<EOF || echo "schedule seed $seed: no DNAT to the delay proxy: slow links are not tested"
table ip triad_chaos {
    chain out {
        type nat hook output priority -100; policy accept;
        ip saddr != { 127.0.1.3, 127.0.2.3, 127.0.3.3 } ip daddr 127.0.1.1 tcp dport 7400 dnat to 127.0.1.2:7401
        ip saddr != { 127.0.1.3, 127.0.2.3, 127.0.3.3 } ip daddr 127.0.2.1 tcp dport 7400 dnat to 127.0.2.2:7401
        ip saddr != { 127.0.1.3, 127.0.2.3, 127.0.3.3 } ip daddr 127.0.3.1 tcp dport 7400 dnat to 127.0.3.2:7401
    }
}
EOF
    if ! lab_reset; then
        echo "schedule seed $seed: the lab did not settle before the faults"
        failed_seeds+=("$seed")
        continue
    fi
    T0=$(now)
    runuser -u postgres -- env LAB_DIR="$LAB_DIR" python3 tests/chaos/sampler.py >"$CH/sampler.jsonl" 2>"$CH/sampler.err" &
    SAMPLER=$!
    "$LAB" writer start --rate 20 >/dev/null 2>&1
    sleep 2
    end=$(calc "$(now) + $DURATION")
    while before "$(now)" "$end"; do
        fault
        liveness
        wait_ms=$((500 + $(rnd 5500)))
        while [ "$wait_ms" -gt 0 ]; do
            undo_due
            sleep 0.25
            wait_ms=$((wait_ms - 250))
        done
    done
    liveness
    heal_all
    ev healed
    wait_for 120 settled || ev not-settled "" "still running or not in quorum after 120 s"
    sleep 2
    "$LAB" writer stop >/dev/null 2>&1
    "$LAB" writer check --json >"$CH/writer-check.json" 2>"$CH/writer-check.err"
    kill "$SAMPLER" 2>/dev/null
    wait "$SAMPLER" 2>/dev/null
    SAMPLER=
    for s in dc1 dc2 dc3; do cp "$LAB_DIR/$s/triad.log" "$CH/$s.log" 2>/dev/null; done
    kill "$PROXY" 2>/dev/null
    wait "$PROXY" 2>/dev/null
    PROXY=
    python3 tests/chaos/check.py "$LAB_DIR" "$CH" >"$CH/violations.txt" 2>&1
    v=$(sed -nE 's/^violations: ([0-9]+)$/\1/p' "$CH/violations.txt")
    v=${v:-1}
    runs=$(ls "$LAB_DIR"/dc?/state/runs/*.jsonl 2>/dev/null | xargs -r -n1 basename | sort -u | wc -l)
    faults=$(grep -cvE '"what": "(heal|pg-start|daemon-start|dns-thaw|k8s-clear|fast|healed)"' "$CH/events.jsonl")
    printf 'schedule seed %s: %d faults, %d run(s), violations: %d\n' "$seed" "$faults" "$runs" "$v"
    if [ "$v" != 0 ]; then
        sed 's/^/    /' "$CH/violations.txt" | grep -v '^    violations:'
        sed 's/^/    /' "$CH/schedule.txt"
        failed_seeds+=("$seed")
    fi
    total=$((total + 1))
    vio_total=$((vio_total + v))
done
echo "schedules run: $total"
echo "violations: $vio_total"
[ ${#failed_seeds[@]} -eq 0 ] || echo "failed seeds: ${failed_seeds[*]} (rerun: tests/chaos/campaign.sh -n 1 -s SEED)"
[ "$vio_total" -eq 0 ] && [ ${#failed_seeds[@]} -eq 0 ]
