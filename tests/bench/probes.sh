#!/bin/bash
# probes.sh: what probing costs one daemon, and how fast a probe failure
# becomes a site state (issue 4).
#
# load      1,000 http probes and 100 postgres probes, each at 1 Hz, in one
#           `triad daemon`: the lab's dc3 configuration (the witness: no
#           lease to lose, nothing to self-fence) with its own state
#           directory and socket and these probes instead of the lab's; the
#           lab's own daemons are stopped. After a warm-up (30 s: the
#           start - 100 PostgreSQL logins, a thousand first connections -
#           and the first readiness round, 10 s after the start, are then
#           behind; the next round comes 5 minutes later), over a window:
#           the daemon's CPU (utime+stime from /proc/PID/stat, % of one
#           core) and its memory (VmRSS, VmHWM from /proc/PID/status, with
#           the anonymous/file split and the PSS from smaps_rollup).
#           Targets: CPU under 5% of one core, RSS under 20 MB (VmRSS and
#           VmHWM).
#           The http targets are three tests/fixtures/http_fixture servers
#           (plain HTTP, GET /health -> 200 "OK"), one per site on
#           127.0.N.20:8081 beside the Synapse stand-in. Every probe makes
#           its own request each second, with the default keepalive (30s):
#           on a kept connection, replaced at least every 30 s so that the
#           connect is checked too. The postgres probes run the full probe query on
#           the lab's three PostgreSQL servers, spread evenly, each on its
#           own connection. The check rate actually achieved is read from
#           the daemon's /metrics and printed, and every probe must pass.
# floor     tests/fixtures/http_load, a bare libuv client, makes the same
#           http requests at the same rate (nothing else), each on a kept
#           connection, then each on a fresh one (what probes with
#           keepalive: 0 do): its CPU is the kernel's TCP work alone, a
#           floor for any implementation. On loopback a client is also
#           charged the server's half of each handshake, which over a real
#           network lands on the target's host.
# latency   with the lab's normal configuration and daemons, SIGKILL DC3's
#           PostgreSQL (the postmaster and every backend) N times and time
#           the kill to `+sdown site=dc3` in DC1's daemon log; p50, p99
#           (nearest rank) and the bound fail_after x interval + timeout of
#           the lab's configuration (the interval's jitter can stretch it by
#           up to fail_after x jitter x interval).
#
#   tests/bench/probes.sh [load|latency|all]     (default all; load includes the floor)
#
# Environment: BENCH_HTTP (1000), BENCH_PG (100), BENCH_WARMUP (30 s),
# BENCH_WINDOW (60 s), BENCH_FLOOR=0 (skip the floor), BENCH_KILLS (20),
# BENCH_HTTPS=1 (the http probes use TLS, against fixtures serving the lab's
# ingress certificate: a variant, not the target), BENCH_WRAP (a command put
# before the load's daemon, e.g. "heaptrack -o /tmp/ht": to find where the
# time or memory goes; the figures are then not the daemon's alone).
# Needs root; runs its own lab (LAB_DIR=/tmp/triad-bench-p, netns
# triad-bench-p); about 6 minutes. The machine's load average is printed
# before, during and after: CPU figures from a busy machine are not
# comparable (the benchmark itself keeps PostgreSQL and the fixtures busy).
set -u
cd "$(dirname "$0")/../.." || exit 1
WHAT=${1:-all}
N_HTTP=${BENCH_HTTP:-1000}
N_PG=${BENCH_PG:-100}
WARMUP=${BENCH_WARMUP:-30}
WINDOW=${BENCH_WINDOW:-60}
FLOOR=${BENCH_FLOOR:-1}
KILLS=${BENCH_KILLS:-20}
HTTPS=${BENCH_HTTPS:-0}
case $WHAT in load | latency | all) ;; *)
    echo "usage: tests/bench/probes.sh [load|latency|all]" >&2
    exit 2
    ;;
esac
if [ "$N_HTTP" -lt 3 ] || [ "$N_PG" -lt 3 ]; then
    echo "BENCH_HTTP and BENCH_PG must be at least 3: the stock runbooks check an 'ingress' and a 'postgres' probe in each site" >&2
    exit 2
fi
export LAB_DIR=/tmp/triad-bench-p LAB_NETNS=triad-bench-p
# shellcheck source=tests/integration/lablib.sh
. tests/integration/lablib.sh
FIXTURE=$PWD/${BUILD:-build}/fixtures/http_fixture
LOADER=$PWD/${BUILD:-build}/fixtures/http_load
if [ ! -x ./triad ] || [ ! -x "$FIXTURE" ] || [ ! -x "$LOADER" ]; then
    echo "build first: make all unit-bins" >&2
    exit 1
fi
BENCH=$LAB_DIR/bench
PIDS=()
stop_pids() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null
    done
    PIDS=()
}
trap 'stop_pids; "$LAB" down >/dev/null 2>&1' EXIT
"$LAB" down >/dev/null 2>&1
"$LAB" up >/dev/null || { echo "lab up failed" >&2; exit 1; }
# A plain command, not the nsx function, so that $! is the process itself.
NS=()
[ "$(cat "$LAB_DIR/mode")" = netns ] && NS=(ip netns exec "$LAB_NETNS")
loadavg() { uptime | sed 's/.*load average: *//'; }
echo "machine: $(nproc) cores, load average at start: $(loadavg)"

ticks() { # PID: utime + stime, in clock ticks
    sed -E 's/^.*\) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

kb() { # FILE FIELD: a "Field: N kB" value
    awk -v f="$2:" '$1 == f { print $2 }' "$1"
}

# CPU of PID over SECONDS, as % of one core.
cpu_over() { # PID SECONDS
    local c0 c1 w0 w1
    c0=$(ticks "$1")
    w0=$(date +%s.%N)
    sleep "$2"
    c1=$(ticks "$1")
    w1=$(date +%s.%N)
    awk -v c0="$c0" -v c1="$c1" -v w0="$w0" -v w1="$w1" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%.2f", (c1 - c0) / hz / (w1 - w0) * 100 }'
}

metrics() { # SOCKET
    nsx curl -s -m 10 --unix-socket "$1" http://triad/metrics
}

sum_counts() { # METRICS-FILE: probe checks finished so far, all probes
    awk '/^triad_probe_duration_seconds_count/ { s += $2 } END { printf "%d", s }' "$1"
}

# The bench configuration: the lab's dc3 file with its own state and
# socket, and these probes. The first probe of each kind in each site takes
# the name the stock runbooks check (ingress, postgres).
gen_config() {
    local scheme=http port=8081 i s n name
    [ "$HTTPS" = 1 ] && scheme=https
    awk -v bench="$BENCH" '
        /^[a-z_]+:/ { skip = ($1 == "probes:" || $1 == "probe_defaults:") }
        skip { next }
        /^state_dir:/ { print "state_dir: " bench "/state"; next }
        /^  socket:/ { print "  socket: " bench "/triad.sock"; next }
        { print }' "$LAB_DIR/dc3/triad.yaml"
    printf '\nprobe_defaults:\n  interval: 1s\n  timeout: 1s\n  jitter: 10%%\n\nprobes:\n'
    for i in $(seq "$N_HTTP"); do
        n=$(((i - 1) % 3 + 1))
        s=dc$n
        name=$(printf 'http-%04d' "$i")
        [ "$i" -le 3 ] && name=ingress
        printf '  - name: %s\n    kind: http\n    site: %s\n' "$name" "$s"
        if [ "$scheme" = https ]; then
            printf '    url: https://matrix.lab.test:%s/health\n' "$port"
            printf '    connect_to: 127.0.%s.20:%s\n' "$n" "$port"
            printf '    ca_file: %s/secrets/ca.pem\n' "$LAB_DIR"
        else
            printf '    url: http://127.0.%s.20:%s/health\n' "$n" "$port"
        fi
        printf '    expect_status: 200\n    expect_body: OK\n    critical: false\n'
    done
    for i in $(seq "$N_PG"); do
        s=dc$(((i - 1) % 3 + 1))
        name=$(printf 'pg-%03d' "$i")
        [ "$i" -le 3 ] && name=postgres
        printf '  - name: %s\n    kind: postgres\n    site: %s\n    cluster: synapse\n' "$name" "$s"
    done
}

bench_load() {
    echo "== load: $N_HTTP $([ "$HTTPS" = 1 ] && echo https || echo http) probes + $N_PG postgres probes at 1 Hz, one daemon"
    "$LAB" daemons stop all >/dev/null 2>&1
    rm -rf "$BENCH"
    mkdir -p "$BENCH/state"
    chmod 0700 "$BENCH/state"
    local n tls=()
    [ "$HTTPS" = 1 ] && tls=(--tls "$LAB_DIR/secrets/ingress.pem" "$LAB_DIR/secrets/ingress.key")
    for n in 1 2 3; do
        "${NS[@]}" env LAB_INSTANCE="$LAB_DIR" LAB_SITE=bench "$FIXTURE" --bind "127.0.$n.20" \
            --port 8081 "${tls[@]}" >"$BENCH/fixture-$n.out" 2>&1 &
        PIDS+=($!)
    done
    gen_config >"$BENCH/triad.yaml"
    if ! "$TRIAD" check-config -c "$BENCH/triad.yaml" >"$BENCH/check.out" 2>&1; then
        echo "the generated configuration is refused:" >&2
        head -n 20 "$BENCH/check.out" >&2
        return 1
    fi
    wait_for 5 bash -c "grep -q 8081 $BENCH/fixture-1.out && grep -q 8081 $BENCH/fixture-2.out &&
        grep -q 8081 $BENCH/fixture-3.out" || { echo "http fixtures did not start" >&2; return 1; }
    # No bind shim: partitions play no part here, and the figure is the
    # daemon's own cost.
    # shellcheck disable=SC2086 # BENCH_WRAP is a command line
    "${NS[@]}" env LAB_INSTANCE="$LAB_DIR" LAB_SITE=bench ${BENCH_WRAP:-} "$TRIAD" daemon \
        -c "$BENCH/triad.yaml" >"$BENCH/triad.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_for 30 test -S "$BENCH/triad.sock" || { echo "the bench daemon did not start" >&2; return 1; }
    sleep "$WARMUP"
    kill -0 "$pid" 2>/dev/null || { echo "the bench daemon died" >&2; tail -n 5 "$BENCH/triad.log" >&2; return 1; }
    metrics "$BENCH/triad.sock" >"$BENCH/metrics.0"
    local m0 m1 cpu
    m0=$(date +%s.%N)
    cpu=$(cpu_over "$pid" "$WINDOW")
    cp "/proc/$pid/status" "$BENCH/status"
    cp "/proc/$pid/smaps_rollup" "$BENCH/smaps_rollup"
    local during
    during=$(loadavg)
    metrics "$BENCH/triad.sock" >"$BENCH/metrics.1"
    m1=$(date +%s.%N)
    local probes up runs
    probes=$(grep -c '^triad_probe_up{' "$BENCH/metrics.1")
    up=$(grep -c '^triad_probe_up{.*} 1$' "$BENCH/metrics.1")
    runs=$(($(sum_counts "$BENCH/metrics.1") - $(sum_counts "$BENCH/metrics.0")))
    echo "load average at the end of the window: $during"
    awk -v cpu="$cpu" -v window="$WINDOW" -v rss="$(kb "$BENCH/status" VmRSS)" \
        -v hwm="$(kb "$BENCH/status" VmHWM)" -v anon="$(kb "$BENCH/status" RssAnon)" \
        -v file="$(kb "$BENCH/status" RssFile)" -v pss="$(kb "$BENCH/smaps_rollup" Pss)" \
        -v m0="$m0" -v m1="$m1" -v runs="$runs" -v probes="$probes" -v up="$up" \
        -v want="$((N_HTTP + N_PG))" 'BEGIN {
        printf "probes: %d configured, %d passing at the end; %.0f checks/s over the window (%d configured)\n",
            probes, up, runs / (m1 - m0), want
        printf "cpu: %.2f%% of one core over %d s  target < 5%%: %s\n", cpu, window,
            cpu < 5 ? "met" : "MISSED"
        printf "memory: VmRSS %.1f MB (anonymous %.1f, files %.1f; PSS %.1f), VmHWM %.1f MB  target < 20 MB: %s\n",
            rss / 1024, anon / 1024, file / 1024, pss / 1024, hwm / 1024,
            rss < 20 * 1024 && hwm < 20 * 1024 ? "met" : "MISSED"
    }'
    [ "$probes" = "$((N_HTTP + N_PG))" ] && [ "$up" = "$probes" ] ||
        echo "WARNING: not every probe passes; the figures are not valid (see $BENCH/metrics.1)"
    kill "$pid"
    wait "$pid" 2>/dev/null
    if [ "$FLOOR" = 1 ] && [ "$HTTPS" != 1 ]; then
        local mode
        for mode in --keepalive --fresh; do
            "${NS[@]}" env LAB_INSTANCE="$LAB_DIR" LAB_SITE=bench "$LOADER" --rate "$N_HTTP" \
                $([ "$mode" = --keepalive ] && echo --keepalive) \
                127.0.1.20:8081 127.0.2.20:8081 127.0.3.20:8081 >"$BENCH/load.out" 2>&1 &
            pid=$!
            PIDS+=("$pid")
            sleep 5
            cpu=$(cpu_over "$pid" 30)
            sleep 5
            echo "floor: tests/fixtures/http_load, the same $N_HTTP requests/s from a bare libuv client, $([ "$mode" = --keepalive ] && echo "each on a kept connection (as the probes by default)" || echo "a fresh connection each (as probes with keepalive: 0)"): $cpu% of one core ($(tail -n 1 "$BENCH/load.out"))"
            kill "$pid"
            wait "$pid" 2>/dev/null
        done
    fi
    stop_pids
    "$LAB" daemons start all >/dev/null 2>&1
}

# SIGKILL the postmaster of SITE and its children at once.
pg_kill() { # SITE
    local pm kids
    pm=$(head -n 1 "$LAB_DIR/$1/pgdata/postmaster.pid" 2>/dev/null | tr -dc 0-9)
    [ -n "$pm" ] || return 1
    kids=$(ps -o pid= --ppid "$pm" | tr '\n' ' ')
    # shellcheck disable=SC2086 # a list of pids
    kill -KILL "$pm" $kids 2>/dev/null # a backend may have ended meanwhile
    return 0
}

since_mark() { # SITE: the site's daemon log since its mark
    tail -c +"$((MARK[$1] + 1))" "$LAB_DIR/$1/triad.log"
}

# shellcheck disable=SC2317 # called through wait_for
seen_since_mark() { # SITE EVENT-AND-SITE, e.g. dc1 'event=+sdown site=dc3'
    since_mark "$1" | grep -q -- "$2"
}

bench_latency() {
    local cfg=$LAB_DIR/dc1/triad.yaml fa iv to ji bound
    section() { # SECTION KEY
        awk -v s="$1:" -v k="$2:" '$0 ~ "^" s { h = 1; next } /^[a-z]/ { h = 0 } h && $1 == k { print $2 }' "$cfg"
    }
    fa=$(section health fail_after)
    iv=$(section probe_defaults interval)
    to=$(section probe_defaults timeout)
    ji=$(section probe_defaults jitter)
    bound=$(awk -v fa="$fa" -v iv="$iv" -v to="$to" '
        function ms(d) { return d ~ /ms$/ ? d + 0 : d ~ /s$/ ? d * 1000 : -1 }
        BEGIN { printf "%d", fa * ms(iv) + ms(to) }')
    echo "== latency: kill -9 of DC3's PostgreSQL -> +sdown site=dc3 at DC1's daemon, $KILLS kills"
    echo "lab timings: fail_after $fa, interval $iv (jitter $ji), timeout $to: bound $fa x $iv + $to = $bound ms"
    if ! lab_reset; then
        echo "the lab did not settle" >&2
        return 1
    fi
    local i t0 ts ms results=()
    for i in $(seq "$KILLS"); do
        mark_logs
        sleep "0.$((RANDOM % 10))" # a random phase of the probe interval
        t0=$(date +%s.%N)
        pg_kill dc3 || { echo "kill $i: no postmaster"; continue; }
        if ! wait_for 10 seen_since_mark dc1 'event=+sdown site=dc3'; then
            echo "kill $i: no +sdown within 10 s"
        else
            ts=$(since_mark dc1 | grep -m1 -- 'event=+sdown site=dc3' | sed -E 's/^ts=([^ ]+) .*/\1/')
            ms=$(awk -v t0="$t0" -v t="$(date -d "$ts" +%s.%N)" 'BEGIN { printf "%d", (t - t0) * 1000 }')
            echo "kill $i: +sdown after $ms ms"
            results+=("$ms")
        fi
        "$LAB" pg start dc3 >/dev/null 2>&1
        wait_for 30 seen_since_mark dc1 'event=-sdown site=dc3' ||
            { echo "kill $i: dc3 did not recover within 30 s" >&2; return 1; }
    done
    printf '%s\n' "${results[@]}" | sort -n | awk -v bound="$bound" -v kills="$KILLS" '
        function rank(q,   k) { k = int(NR * q); if (k < NR * q) k++; return v[k < 1 ? 1 : k] }
        { v[NR] = $1; s += $1; if ($1 <= bound) within++ }
        END {
            if (NR == 0) { print "no results"; exit 1 }
            printf "kill -> +sdown over %d kills: min %d ms, p50 %d ms, p99 %d ms, max %d ms, mean %d ms\n",
                NR, v[1], rank(0.50), rank(0.99), v[NR], s / NR
            printf "bound %d ms: %d of %d within  p99 within the bound: %s\n", bound, within, kills,
                rank(0.99) <= bound && NR == kills ? "met" : "MISSED"
        }'
}

rc=0
if [ "$WHAT" = load ] || [ "$WHAT" = all ]; then
    bench_load || rc=1
fi
if [ "$WHAT" = latency ] || [ "$WHAT" = all ]; then
    bench_latency || rc=1
fi
echo "load average at the end: $(loadavg)"
exit $rc
