#!/bin/bash
# vs-patroni.sh: triad against Patroni (Debian's patroni 3.0.2 + etcd 3.4) on
# the same three-site layout, the primary site killed the same way, N runs of
# each (default 10), interleaved (triad, Patroni with its defaults, Patroni
# tuned) so that a change of machine load hits all three alike.
#
# Layout: the lab's network namespace and its nftables table. triad runs the
# lab's own PostgreSQL (127.0.N.5) in automatic mode (`triad drill dc1-loss`,
# as tests/bench/failover.sh). Patroni gets one PostgreSQL per site on
# 127.0.N.6:5432 (REST API 127.0.N.6:8008) and one etcd member per site on
# 127.0.N.7:2379/2380, synchronous_mode on, a fresh cluster (new etcd, new
# initdb) for every run, DC1 the leader; its files live in
# /tmp/triad-vs-patroni (a tmpfs, like the lab's). Profiles:
#   patroni-defaults  ttl 30, loop_wait 10, retry_timeout 10 (the documented defaults)
#   patroni-tuned     ttl 10, loop_wait 2, retry_timeout 3 (loop_wait + 2 x
#                     retry_timeout <= ttl; Patroni 3.0.2 accepts it, later
#                     versions' documentation sets ttl >= 20)
# The kill, for both: isolate DC1 with the lab's rules (`lab.sh isolate dc1`)
# and SIGKILL everything of DC1 at once (triad: `lab.sh kill dc1` through
# the drill; Patroni: its patroni, PostgreSQL with every backend, and etcd
# member). etcd is Go and does not go through libc's connect(), so the bind
# shim cannot give it its site address: one more rule in the same table drops
# the survivors' (unbound, 127.0.1.7 -> 127.0.1.7) packets to DC1's etcd, or
# they would get a reset from the dead host instead of silence.
#
# Measured, from the kill (wall clock):
#   writable  the first write accepted by some PostgreSQL of the cluster other
#             than DC1's: every PostgreSQL polled every 100 ms (not in
#             recovery, then an INSERT that commits without the
#             synchronous-standby wait being cancelled); vp_client.py poll
#   writes    the first write acknowledged to an ordinary client: triad, the
#             lab's writer through the public name (DNS, TTL 5 s; the drill's
#             RTO); Patroni, a libpq multi-host client with
#             target_session_attrs=read-write writing every 100 ms
#   lost      acknowledged writes missing from the final primary
#   idle      RSS and CPU of triad's daemon vs patroni + etcd, per site, over
#             VP_IDLE_S seconds (default 60) of a steady cluster
#
#   tests/bench/vs-patroni.sh [RUNS]
#   VP_IDLE_S=SECONDS (0: no footprint), VP_SYSTEMS="triad defaults tuned" (a subset)
# Needs root, `make deps` (patroni, etcd-server) and `make`. Runs its own lab
# (LAB_DIR=/tmp/triad-bench-vp, netns triad-bench-vp); tears everything down
# on exit. Rows and logs: build/bench/vs-patroni/.
set -u
cd "$(dirname "$0")/../.." || exit 1
RUNS=${1:-10}
IDLE_S=${VP_IDLE_S:-60}
export LAB_DIR=/tmp/triad-bench-vp LAB_NETNS=triad-bench-vp
. tests/integration/lablib.sh
VP_DIR=/tmp/triad-vs-patroni
PY=/usr/bin/python3
CLIENT=$PWD/tests/bench/vp_client.py
KEEPER=$PWD/examples/lab/lab_keeper.py
PGBIN=/usr/lib/postgresql/15/bin
OUT_DIR=${BUILD:-build}/bench/vs-patroni
ROWS=$OUT_DIR/runs.tsv
CLIENT_ADDR=127.0.9.100 # the lab's "writer client" address (the lab's writer is off meanwhile)
SYSTEMS=${VP_SYSTEMS:-triad defaults tuned} # a subset, to debug one side
declare -A PATRONI_PID ETCD_PID

say() { printf '%s %s\n' "$(date +%T)" "$*"; }
[ "$(id -u)" = 0 ] || { echo "vs-patroni: needs root" >&2; exit 1; }
[ -x ./triad ] || { echo "vs-patroni: build first: make" >&2; exit 1; }
# An AddressSanitizer build would make the footprint meaningless.
if ldd ./triad | grep -q libasan; then
    echo "vs-patroni: ./triad is an ASan build; benchmark a plain one: make" >&2
    exit 1
fi
if ! command -v patroni >/dev/null || ! command -v etcd >/dev/null; then
    echo "vs-patroni: patroni and etcd missing: make deps" >&2
    exit 1
fi

# --- processes of the Patroni cluster ---------------------------------------------

# Pids of the Patroni cluster (or of one site): patroni and etcd carry
# VP_INSTANCE/VP_SITE in their environment; the postmaster (started by
# patroni in a session of its own) is found by its pid file and its working
# directory; then every descendant. Parents first.
vp_pids() { # [SITE]
    local site=${1:-} roots=() f p files
    files=$(grep -lzxF "VP_INSTANCE=$VP_DIR" /proc/[0-9]*/environ 2>/dev/null)
    if [ -n "$site" ] && [ -n "$files" ]; then
        # shellcheck disable=SC2086
        files=$(grep -lzxF "VP_SITE=$site" $files 2>/dev/null)
    fi
    for f in $files; do
        p=${f#/proc/}
        roots+=("${p%/environ}")
    done
    for f in "$VP_DIR"/${site:-dc?}/pgdata/postmaster.pid; do
        p=$(head -n 1 "$f" 2>/dev/null | tr -dc 0-9)
        [ -n "$p" ] && [ "$(readlink "/proc/$p/cwd" 2>/dev/null)" = "${f%/postmaster.pid}" ] &&
            roots+=("$p")
    done
    [ ${#roots[@]} -gt 0 ] || return 0
    ps -e -o pid=,ppid= | awk -v roots="${roots[*]}" '
        BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) want[r[i]] = 1 }
        { par[$1] = $2; pids[NR] = $1 }
        END {
            do {
                changed = 0
                for (i in pids) {
                    p = pids[i]
                    if (!(p in want) && (par[p] in want)) { want[p] = 1; changed = 1 }
                }
            } while (changed)
            for (p in want) if (p in par) print p
        }'
}

alive() { [ -d "/proc/$1" ] && ! grep -q '^State:.*[ZX]' "/proc/$1/status" 2>/dev/null; }

wait_gone() { # SECONDS PID...
    local end=$((SECONDS + $1)) p
    shift
    while :; do
        local left=0
        for p; do alive "$p" && left=1; done
        [ $left = 0 ] && return 0
        [ $SECONDS -ge $end ] && return 1
        sleep 0.05
    done
}

# Starts ARGV under the lab's keeper (its reaper: see lab_keeper.py) in the
# lab's namespace, with the bind shim and this cluster's marks; prints the pid.
kcall() { # LOG SITE ADDR -- ARGV
    local log=$1 site=$2 addr=$3
    shift 4
    env LD_PRELOAD="$LAB_DIR/bindshim.so" LAB_BIND_ADDR="$addr" VP_INSTANCE="$VP_DIR" \
        VP_SITE="$site" HOME=/var/lib/postgresql "$PY" "$KEEPER" call \
        --socket "$LAB_DIR/keeper.sock" --log "$log" --wait 0 -- "$@"
}

CLIENT_PIDS=()
clients_stop() {
    local p
    for p in "${CLIENT_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${CLIENT_PIDS[@]}"; do
        wait_gone 5 "$p" || kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    CLIENT_PIDS=()
}

vp_teardown() {
    local pids
    pids=$(vp_pids)
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null
        # shellcheck disable=SC2086
        wait_gone 10 $pids || say "WARNING: Patroni cluster processes survived SIGKILL: $pids"
    fi
    [ -e "$LAB_DIR/.triad-lab" ] && "$LAB" heal >/dev/null 2>&1
    rm -rf "${VP_DIR:?}"/dc? "$VP_DIR"/*.jsonl
}

cleanup() {
    clients_stop
    vp_teardown
    "$LAB" down >/dev/null 2>&1
    if mountpoint -q "$VP_DIR"; then umount "$VP_DIR" 2>/dev/null || umount -l "$VP_DIR"; fi
    rm -rf "$VP_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the Patroni cluster --------------------------------------------------------------

vp_secrets() {
    mkdir -p "$VP_DIR/secrets"
    chmod 0700 "$VP_DIR/secrets"
    [ -s "$VP_DIR/secrets/super.pass" ] ||
        (umask 077 && openssl rand -hex 16 >"$VP_DIR/secrets/super.pass")
    [ -s "$VP_DIR/secrets/repl.pass" ] ||
        (umask 077 && openssl rand -hex 16 >"$VP_DIR/secrets/repl.pass")
}

vp_config() { # SITE TTL LOOP_WAIT RETRY_TIMEOUT
    local s=$1 n=${1#dc} d=$VP_DIR/$1
    cat <<EOF
scope: vp
namespace: /vp/
name: $s
log:
  level: INFO
restapi:
  listen: 127.0.$n.6:8008
  connect_address: 127.0.$n.6:8008
etcd3:
  hosts: 127.0.1.7:2379,127.0.2.7:2379,127.0.3.7:2379
bootstrap:
  dcs:
    ttl: $2
    loop_wait: $3
    retry_timeout: $4
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        # As the lab's PostgreSQL (examples/lab/templates/postgresql.conf.in).
        max_connections: 60
        shared_buffers: 32MB
        work_mem: 4MB
        maintenance_work_mem: 32MB
        wal_level: replica
        max_wal_senders: 10
        max_replication_slots: 10
        max_slot_wal_keep_size: 1GB
        wal_keep_size: 128MB
        wal_log_hints: 'on'
        hot_standby: 'on'
        hot_standby_feedback: 'on'
        wal_sender_timeout: 5s
        wal_receiver_timeout: 5s
        wal_receiver_status_interval: 1s
        wal_retrieve_retry_interval: 1s
        tcp_keepalives_idle: 2
        tcp_keepalives_interval: 1
        tcp_keepalives_count: 3
        checkpoint_timeout: 5min
        max_wal_size: 256MB
        min_wal_size: 64MB
        log_min_messages: warning
  initdb:
    - encoding: UTF8
    - locale: C
postgresql:
  listen: 127.0.$n.6:5432
  connect_address: 127.0.$n.6:5432
  use_unix_socket: true
  data_dir: $d/pgdata
  bin_dir: $PGBIN
  pgpass: $d/pgpass
  authentication:
    superuser:
      username: postgres
      password: '$(cat "$VP_DIR/secrets/super.pass")'
    replication:
      username: replicator
      password: '$(cat "$VP_DIR/secrets/repl.pass")'
  parameters:
    unix_socket_directories: '$d/sock'
  pg_hba:
    - local all postgres peer
    - host replication replicator 127.0.0.0/8 scram-sha-256
    - host all all 127.0.0.0/8 scram-sha-256
watchdog:
  mode: 'off'
EOF
}

etcd_start() { # SITE RUN-TOKEN
    local s=$1 n=${1#dc} d=$VP_DIR/$1
    mkdir -p "$d/etcd"
    chmod 0700 "$d/etcd"
    # No bind shim: etcd is Go, its sockets do not go through libc (see the header).
    kcall "$d/etcd.log" "$s" "127.0.$n.7" -- env -u LD_PRELOAD etcd --name "$s" \
        --data-dir "$d/etcd" \
        --listen-client-urls "http://127.0.$n.7:2379" --advertise-client-urls "http://127.0.$n.7:2379" \
        --listen-peer-urls "http://127.0.$n.7:2380" --initial-advertise-peer-urls "http://127.0.$n.7:2380" \
        --initial-cluster "dc1=http://127.0.1.7:2380,dc2=http://127.0.2.7:2380,dc3=http://127.0.3.7:2380" \
        --initial-cluster-token "$2" --initial-cluster-state new --logger zap --log-level warn
}

patroni_start() { # SITE TTL LOOP_WAIT RETRY_TIMEOUT
    local s=$1 n=${1#dc} d=$VP_DIR/$1
    mkdir -p "$d/sock"
    vp_config "$@" >"$d/patroni.yml"
    chown -R postgres:postgres "$d/sock" "$d/patroni.yml"
    chmod 0600 "$d/patroni.yml"
    chown postgres:postgres "$d"
    touch "$d/patroni.log"
    kcall "$d/patroni.log" "$s" "127.0.$n.6" -- setpriv --reuid=postgres --regid=postgres \
        --init-groups -- patroni "$d/patroni.yml"
}

api() { # SITE PATH: Patroni's REST API (unbound: not subject to the partition rules)
    nsx curl -s -m 2 "http://127.0.${1#dc}.6:8008$2"
}

vp_psql() { # SITE SQL: as the superuser on the site's socket
    runuser -u postgres -- "$PGBIN/psql" -h "$VP_DIR/$1/sock" -p 5432 -d postgres -XAtq \
        -v ON_ERROR_STOP=1 -c "$2"
}

cluster_steady() { # DC1 leading, one synchronous standby and one replica, both streaming
    api dc1 /cluster | jq -e '
        (.members | length) == 3 and
        ([.members[] | select(.name == "dc1" and .role == "leader" and .state == "running")] | length) == 1 and
        ([.members[] | select(.role == "sync_standby" and (.state == "running" or .state == "streaming"))] | length) == 1 and
        ([.members[] | select(.role == "replica" and (.state == "running" or .state == "streaming"))] | length) == 1' \
        >/dev/null 2>&1 &&
        [ "$(vp_psql dc1 "SELECT count(*) FILTER (WHERE state = 'streaming') || '/' ||
            count(*) FILTER (WHERE sync_state = 'sync') FROM pg_stat_replication" 2>/dev/null)" = 2/1 ]
}

# A fresh cluster: three etcd members, then DC1's patroni (it bootstraps and
# leads), then DC2's and DC3's (they clone it); waits for the steady state.
vp_up() { # TTL LOOP_WAIT RETRY_TIMEOUT
    local s
    vp_teardown
    vp_secrets
    { echo "link set lo up"; for s in 1 2 3; do
        printf 'addr replace 127.0.%s.%s/32 dev lo\n' "$s" 6 "$s" 7
    done; } | nsx ip -batch - || return 1
    local token
    token=vp-$(date +%s%N)
    for s in dc1 dc2 dc3; do ETCD_PID[$s]=$(etcd_start "$s" "$token") || return 1; done
    wait_for 30 bash -c "for n in 1 2 3; do ip netns exec $LAB_NETNS curl -s -m 1 \
        http://127.0.\$n.7:2379/health | grep -q '\"health\":\"true\"' || exit 1; done" ||
        { say "etcd did not become healthy"; return 1; }
    PATRONI_PID[dc1]=$(patroni_start dc1 "$@") || return 1
    wait_for 60 bash -c "ip netns exec $LAB_NETNS curl -s -m 1 http://127.0.1.6:8008/patroni |
        jq -e '.role == \"master\" and .state == \"running\"'" ||
        { say "DC1's patroni did not bootstrap"; return 1; }
    for s in dc2 dc3; do PATRONI_PID[$s]=$(patroni_start "$s" "$@") || return 1; done
    local _
    for _ in $(seq 120); do
        cluster_steady && break
        sleep 0.5
    done
    cluster_steady || { say "the Patroni cluster did not reach its steady state"; return 1; }
    vp_psql dc1 "CREATE TABLE vp_writes (id bigint PRIMARY KEY, at timestamptz DEFAULT now());
        CREATE TABLE vp_probe (seq bigserial PRIMARY KEY, host text, at timestamptz DEFAULT now())" \
        >/dev/null || return 1
}

# Isolates DC1 with the lab's rules and SIGKILLs all of its Patroni site at
# once; prints the wall time (ms) taken just before.
vp_kill_dc1() {
    local pids t0
    pids=$(vp_pids dc1)
    t0=$(date +%s%3N)
    "$LAB" isolate dc1 >/dev/null
    nsx nft add rule inet triad_lab output ip saddr 127.0.1.7 ip daddr 127.0.1.7 drop \
        comment '"vs-patroni: unbound etcd traffic to dc1"'
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null
    echo "$t0"
}

# --- one run of each ------------------------------------------------------------------

LAB_HOSTS=127.0.1.5,127.0.2.5,127.0.3.5
VP_HOSTS=127.0.1.6,127.0.2.6,127.0.3.6

row() { # SYSTEM RUN WRITABLE WRITES LOST PROMOTED NOTE
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" \
        "$(cut -d' ' -f1 /proc/loadavg)" "$7" >>"$ROWS"
    say "$1 run $2: writable $3 s, writes $4 s, lost $5${6:+, promoted $6 s}${7:+ ($7)}"
}

triad_run() { # I
    local i=$1 s out rc run rep poll t0 w
    "$LAB" down >/dev/null 2>&1
    if ! "$LAB" up >/dev/null 2>&1; then
        row triad "$i" - - - - "lab up failed"
        return
    fi
    for s in dc1 dc2 dc3; do
        sed -i -E 's/^  mode: (manual|semi-automatic)$/  mode: automatic/' "$LAB_DIR/$s/triad.yaml"
    done
    "$LAB" sql dc1 synapse "CREATE TABLE public.vp_probe (seq bigserial PRIMARY KEY, host text,
        at timestamptz DEFAULT now()); ALTER TABLE public.vp_probe OWNER TO synapse" >/dev/null
    if ! lab_reset; then
        row triad "$i" - - - - "the lab did not settle"
        return
    fi
    poll=$OUT_DIR/triad-$i.poll.jsonl
    rm -f "$poll"
    nsx "$PY" "$CLIENT" poll --hosts "$LAB_HOSTS" --dbname synapse --user synapse \
        --password-file "$LAB_DIR/secrets/pg-synapse.pass" --table public.vp_probe --log "$poll" &
    CLIENT_PIDS+=($!)
    out=$(nsx "$TRIAD" drill dc1-loss -c "$LAB_DIR/dc2/triad.yaml" 2>&1)
    rc=$?
    clients_stop
    printf '%s\n' "$out" >"$OUT_DIR/triad-$i.drill.txt"
    run=$(sed -nE 's/^run ([^ ]+) .*/\1/p' <<<"$out" | head -n 1)
    if [ $rc != 0 ] || [ -z "$run" ]; then
        row triad "$i" - - - - "drill failed (exit $rc): $(tail -n 1 <<<"$out")"
        return
    fi
    rep=$(nsx "$TRIAD" report "$run" --format json -c "$LAB_DIR/dc2/triad.yaml")
    printf '%s\n' "$rep" >"$OUT_DIR/triad-$i.report.json"
    t0=$(jq -r '.drill.fault_ms // .t0_ms' <<<"$rep")
    local fw note=""
    fw=$("$PY" "$CLIENT" first --log "$poll" --t0 "$t0" --old 127.0.1.5)
    w=$(jq -r '.after_s // "-"' <<<"$fw")
    [ "$(jq -r '.old_after + 0' <<<"$fw")" = 0 ] || note="DC1 accepted writes after the kill"
    row triad "$i" "$w" "$(jq -r '.figures.rto_s // "-" | if type == "number" then (. * 100 | round / 100) else . end' <<<"$rep")" \
        "$(jq -r '.figures.acknowledged_writes_lost // "-"' <<<"$rep")" \
        "$(jq -r '.figures.promoted_s // "-" | if type == "number" then (. * 100 | round / 100) else . end' <<<"$rep")" "$note"
}

patroni_run() { # PROFILE I TTL LOOP_WAIT RETRY_TIMEOUT
    local prof=$1 i=$2 poll writes t0 w a audit lost note=""
    shift 2
    # The lab only lends its namespace, keeper and rules: no triad daemon runs.
    "$LAB" daemons stop all >/dev/null 2>&1
    "$LAB" heal >/dev/null 2>&1
    if ! vp_up "$@"; then
        mkdir -p "$OUT_DIR/$prof-$i"
        cp "$VP_DIR"/dc?/*.log "$OUT_DIR/$prof-$i/" 2>/dev/null
        row "patroni-$prof" "$i" - - - - "cluster did not come up"
        return
    fi
    poll=$OUT_DIR/patroni-$prof-$i.poll.jsonl
    writes=$OUT_DIR/patroni-$prof-$i.writes.jsonl
    rm -f "$poll" "$writes"
    nsx "$PY" "$CLIENT" poll --hosts "$VP_HOSTS" --dbname postgres --user postgres \
        --password-file "$VP_DIR/secrets/super.pass" --table vp_probe --log "$poll" &
    CLIENT_PIDS+=($!)
    nsx env LD_PRELOAD="$LAB_DIR/bindshim.so" LAB_BIND_ADDR=$CLIENT_ADDR "$PY" "$CLIENT" write \
        --hosts "$VP_HOSTS" --dbname postgres --user postgres \
        --password-file "$VP_DIR/secrets/super.pass" --log "$writes" &
    CLIENT_PIDS+=($!)
    # Some acknowledged writes before the fault, as the drill does.
    wait_for 15 bash -c "[ \$(grep -c '\"ev\":\"ack\"' '$writes') -ge 10 ]" ||
        note="few writes before the kill"
    t0=$(vp_kill_dc1)
    local end=$((SECONDS + 150))
    while [ $SECONDS -lt $end ]; do
        "$PY" "$CLIENT" first --log "$poll" --t0 "$t0" --old 127.0.1.6 >/dev/null &&
            "$PY" "$CLIENT" first --log "$writes" --t0 "$t0" --old 127.0.1.6 --ev ack >/dev/null &&
            break
        sleep 0.5
    done
    sleep 1 # a few more writes on the new primary
    clients_stop
    local fw fa
    fw=$("$PY" "$CLIENT" first --log "$poll" --t0 "$t0" --old 127.0.1.6)
    fa=$("$PY" "$CLIENT" first --log "$writes" --t0 "$t0" --old 127.0.1.6 --ev ack)
    w=$(jq -r '.after_s // "-"' <<<"$fw")
    a=$(jq -r '.after_s // "-"' <<<"$fa")
    [ "$(jq -r '.old_after + 0' <<<"$fw")" = 0 ] && [ "$(jq -r '.old_after + 0' <<<"$fa")" = 0 ] ||
        note="${note:+$note; }DC1 accepted writes after the kill"
    audit=$(nsx "$PY" "$CLIENT" audit --hosts "$VP_HOSTS" --dbname postgres --user postgres \
        --password-file "$VP_DIR/secrets/super.pass" --log "$writes")
    lost=$(jq -r '.lost // "-"' <<<"$audit")
    [ "$lost" = - ] && note="${note:+$note; }audit: $audit"
    mkdir -p "$OUT_DIR/$prof-$i"
    cp "$VP_DIR"/dc?/patroni.log "$OUT_DIR/$prof-$i/" 2>/dev/null
    for s in dc1 dc2 dc3; do cp "$VP_DIR/$s/patroni.log" "$OUT_DIR/$prof-$i/$s-patroni.log" 2>/dev/null; done
    rm -f "$OUT_DIR/$prof-$i/patroni.log"
    row "patroni-$prof" "$i" "$w" "$a" "$lost" "-" "$note"
    vp_teardown
}

# --- idle footprint -------------------------------------------------------------------

cpu_ticks() { # PID: utime + stime + reaped children's
    sed -E 's/^.*\) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 + $14 + $15 }'
}

# Prints "RSS_MB CPU_PCT" per group of pids (a group: pids joined by +),
# RSS averaged over one sample a second, CPU over the whole period.
idle_measure() { # SECONDS GROUP...
    local secs=$1 g p k hz t0 t1
    shift
    hz=$(getconf CLK_TCK)
    declare -A c0 rss
    for g; do for p in ${g//+/ }; do c0[$p]=$(cpu_ticks "$p"); rss[$p]=0; done; done
    t0=$(date +%s.%N)
    for ((k = 0; k < secs; k++)); do
        for p in "${!rss[@]}"; do # each pid once, whatever the groups
            rss[$p]=$((rss[$p] + $(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)))
        done
        sleep 1
    done
    t1=$(date +%s.%N)
    for g; do
        local r=0 c=0
        for p in ${g//+/ }; do
            r=$((r + rss[$p]))
            c=$((c + $(cpu_ticks "$p") - c0[$p]))
        done
        awk -v r="$r" -v n="$secs" -v c="$c" -v hz="$hz" -v t0="$t0" -v t1="$t1" \
            'BEGIN { printf "%.1f %.2f\n", r / n / 1024, 100 * c / hz / (t1 - t0) }'
    done
}

idle_triad() {
    local s groups=()
    "$LAB" down >/dev/null 2>&1
    if ! "$LAB" up >/dev/null 2>&1 || ! lab_reset; then
        say "idle: the lab did not settle"
        return 1
    fi
    sleep 5
    for s in dc1 dc2 dc3; do groups+=("$(cat "$LAB_DIR/$s/triad.pid")"); done
    ps -o pid=,rss=,args= -p "$(IFS=,; echo "${groups[*]}")" >"$OUT_DIR/idle-triad.ps"
    idle_measure "$IDLE_S" "${groups[@]}" | while read -r r c; do
        printf 'idle\ttriad\t%s\t%s\n' "$r" "$c" >>"$ROWS"
    done
    "$LAB" daemons stop all >/dev/null 2>&1
}

idle_patroni() { # PROFILE TTL LOOP_WAIT RETRY_TIMEOUT
    local prof=$1 s groups=()
    shift
    vp_up "$@" || { say "idle: the Patroni cluster did not come up"; return 1; }
    sleep 5
    for s in dc1 dc2 dc3; do
        groups+=("${PATRONI_PID[$s]}" "${ETCD_PID[$s]}" "${PATRONI_PID[$s]}+${ETCD_PID[$s]}")
        ps -o pid=,rss=,args= -p "${PATRONI_PID[$s]},${ETCD_PID[$s]}" >>"$OUT_DIR/idle-patroni-$prof.ps"
    done
    idle_measure "$IDLE_S" "${groups[@]}" | paste - - - | while read -r pr pc er ec sr sc; do
        printf 'idle\tpatroni-%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$prof" "$sr" "$sc" "$pr" "$pc" "$er" "$ec" >>"$ROWS"
    done
    vp_teardown
}

# --- main ---------------------------------------------------------------------------------

rm -rf "$OUT_DIR"
mkdir -p "$OUT_DIR"
printf 'system\trun\twritable_s\twrites_s\tlost\tpromoted_s\tload1\tnote\n' >"$ROWS"
"$LAB" down >/dev/null 2>&1
cleanup
mkdir -p "$VP_DIR"
mount -t tmpfs -o size=2g,mode=0755 triad-vs-patroni "$VP_DIR" || say "no tmpfs for $VP_DIR; using the disk"
LOAD_START=$(uptime)
say "start: $LOAD_START"
on() { [[ " $SYSTEMS " == *" $1 "* ]]; }
# The lab once, for its namespace, keeper and rules, when triad does not run.
on triad || "$LAB" up >/dev/null 2>&1 || { say "lab up failed"; exit 1; }
for i in $(seq "$RUNS"); do
    on triad && triad_run "$i"
    on defaults && patroni_run defaults "$i" 30 10 10
    on tuned && patroni_run tuned "$i" 10 2 3
done
if [ "$IDLE_S" -gt 0 ]; then
    say "idle footprint, ${IDLE_S} s each"
    on triad && idle_triad
    on triad || "$LAB" up >/dev/null 2>&1
    on defaults && idle_patroni defaults 30 10 10
    on tuned && idle_patroni tuned 10 2 3
fi
LOAD_END=$(uptime)
say "end: $LOAD_END"

echo
awk -F'\t' -v runs="$RUNS" '
    function median(key,   n, k, b, t, a) {
        n = cnt[key]
        if (n == 0) return "-"
        for (k = 1; k <= n; k++) a[k] = val[key, k]
        for (k = 1; k <= n; k++) for (b = k + 1; b <= n; b++) if (a[b] < a[k]) { t = a[k]; a[k] = a[b]; a[b] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function add(key, v) { if (v != "-" && v != "") val[key, ++cnt[key]] = v + 0 }
    function fmt(v, d) { return v == "-" ? "-" : sprintf("%." d "f", v) }
    function ratio(a, b) { return (a == "-" || b == "-" || b == 0) ? "-" : sprintf("%.2f", a / b) }
    NR == 1 { next }
    $1 == "idle" {
        add($2 ":rss", $3); add($2 ":cpu", $4)
        if ($2 != "triad") { add($2 ":prss", $5); add($2 ":pcpu", $6); add($2 ":erss", $7); add($2 ":ecpu", $8) }
        next
    }
    {
        sys[$1] = 1; add($1 ":writable", $3); add($1 ":writes", $4)
        if ($5 != "-") { lost[$1] += $5; audited[$1]++ }
    }
    END {
        split("triad patroni-defaults patroni-tuned", S, " ")
        printf "%-38s %12s %17s %14s\n", "median over " runs " runs", "triad", "patroni-defaults", "patroni-tuned"
        printf "%-38s %12s %17s %14s\n", "time to a writable primary (s)",
            fmt(median(S[1] ":writable"), 2), fmt(median(S[2] ":writable"), 2), fmt(median(S[3] ":writable"), 2)
        printf "%-38s %12s %17s %14s\n", "time to writes via the public name (s)",
            fmt(median(S[1] ":writes"), 2), fmt(median(S[2] ":writes"), 2), fmt(median(S[3] ":writes"), 2)
        printf "%-38s %12s %17s %14s\n", "runs measured (writable/writes)",
            cnt[S[1] ":writable"] + 0 "/" cnt[S[1] ":writes"] + 0, cnt[S[2] ":writable"] + 0 "/" cnt[S[2] ":writes"] + 0,
            cnt[S[3] ":writable"] + 0 "/" cnt[S[3] ":writes"] + 0
        printf "%-38s %12s %17s %14s\n", "acknowledged writes lost (all runs)",
            lost[S[1]] + 0 " in " audited[S[1]] + 0, lost[S[2]] + 0 " in " audited[S[2]] + 0, lost[S[3]] + 0 " in " audited[S[3]] + 0
        printf "%-38s %12s %17s %14s\n", "idle RSS per site (MB)",
            fmt(median(S[1] ":rss"), 1), fmt(median(S[2] ":rss"), 1), fmt(median(S[3] ":rss"), 1)
        printf "%-38s %12s %17s %14s\n", "  of which patroni / etcd (MB)", "",
            fmt(median(S[2] ":prss"), 1) " / " fmt(median(S[2] ":erss"), 1), fmt(median(S[3] ":prss"), 1) " / " fmt(median(S[3] ":erss"), 1)
        printf "%-38s %12s %17s %14s\n", "idle CPU per site (% of a core)",
            fmt(median(S[1] ":cpu"), 2), fmt(median(S[2] ":cpu"), 2), fmt(median(S[3] ":cpu"), 2)
        printf "%-38s %12s %17s %14s\n", "  of which patroni / etcd (%)", "",
            fmt(median(S[2] ":pcpu"), 2) " / " fmt(median(S[2] ":ecpu"), 2), fmt(median(S[3] ":pcpu"), 2) " / " fmt(median(S[3] ":ecpu"), 2)
        tw = median(S[1] ":writable"); dw = median(S[2] ":writable"); uw = median(S[3] ":writable")
        tp = median(S[1] ":writes"); dp = median(S[2] ":writes"); up = median(S[3] ":writes")
        printf "ratio triad/patroni-defaults time-to-writable: %s\n", ratio(tw, dw)
        printf "ratio triad/patroni-tuned time-to-writable: %s\n", ratio(tw, uw)
        printf "ratio triad/patroni-defaults time-to-writes: %s\n", ratio(tp, dp)
        printf "ratio triad/patroni-tuned time-to-writes: %s\n", ratio(tp, up)
        printf "ratio triad/patroni-defaults idle RSS: %s, idle CPU: %s\n", ratio(median(S[1] ":rss"), median(S[2] ":rss")), ratio(median(S[1] ":cpu"), median(S[2] ":cpu"))
        printf "target: time to writable <= 1/3 of patroni-defaults (%s), <= patroni-tuned (%s), 0 acknowledged writes lost (%s)\n",
            (tw != "-" && dw != "-" && tw <= dw / 3) ? "met" : "MISSED",
            (tw != "-" && uw != "-" && tw <= uw) ? "met" : "MISSED",
            (lost[S[1]] + lost[S[2]] + lost[S[3]] == 0 && audited[S[1]] == runs && audited[S[2]] == runs && audited[S[3]] == runs) ? "met" : "MISSED"
    }' "$ROWS"
echo "load: start: $LOAD_START"
echo "load: end:   $LOAD_END"
echo "rows: $ROWS"
