# Helpers for the integration suites that run triad daemons in a lab:
# source after tap.sh with LAB_DIR and LAB_NETNS set.
LAB=$PWD/examples/lab/lab.sh
TRIAD=${TRIAD:-$PWD/triad}

nsx() { ip netns exec "$LAB_NETNS" "$@"; }

wait_for() { # SECONDS CMD...: 0 once CMD succeeds, 1 on timeout
    local end=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge $end ] && return 1
        sleep 0.2
    done
}

# A value from a site daemon's status document, e.g. st dc2 .epoch
st() { # SITE JQ-FILTER
    nsx "$TRIAD" status --json -c "$LAB_DIR/$1/triad.yaml" 2>/dev/null | jq -r "$2"
}

st_is() { # SITE JQ-FILTER VALUE
    [ "$(st "$1" "$2")" = "$3" ]
}

# Count of an event in a site's log since the suite's mark.
events() { # SITE EVENT
    local f=$LAB_DIR/$1/triad.log
    local from=${MARK[$1]:-0}
    tail -c +"$((from + 1))" "$f" 2>/dev/null | grep -c -- "event=$2 " || true
}

# Remember where each log ends: events() counts from here.
declare -A MARK
mark_logs() {
    local s
    for s in dc1 dc2 dc3; do
        MARK[$s]=$(stat -c %s "$LAB_DIR/$s/triad.log" 2>/dev/null || echo 0)
    done
}

# Superuser SQL on a site's database (its Unix socket, no network).
sql() { # SITE SQL
    "$LAB" sql "$1" postgres "$2" 2>/dev/null
}

# Fresh daemons over a healthy lab: every partition healed, killed sites
# revived, fences lifted, quorum state wiped; then wait for a full quorum
# and DC1 holding its lease.
lab_reset() {
    "$LAB" daemons stop all >/dev/null 2>&1
    "$LAB" heal >/dev/null 2>&1
    local s
    for s in dc1 dc2 dc3; do
        [ -e "$LAB_DIR/$s/killed" ] && "$LAB" revive "$s" >/dev/null 2>&1
    done
    sql dc1 "ALTER SYSTEM RESET default_transaction_read_only" >/dev/null
    sql dc1 "SELECT pg_reload_conf()" >/dev/null
    rm -rf "$LAB_DIR"/dc?/state
    "$LAB" daemons start all >/dev/null 2>&1 || return 1
    mark_logs
    wait_for 20 st_is dc1 .lease.held true &&
        wait_for 10 st_is dc1 '[.lease.fenced, .lease.fence_actions_running]|tostring' '[false,0]' &&
        wait_for 10 bash -c "[ \"\$('$LAB' sql dc1 postgres 'SHOW default_transaction_read_only')\" = off ]" &&
        wait_for 10 st_is dc2 .quorum.have 3 &&
        wait_for 10 st_is dc3 .quorum.have 3
}

# For the EXIT trap: after a failure, keep each daemon's log beside the
# suite's (build/test-logs/SUITE-dcN.log), then take the lab down unless
# KEEP_LAB=1.
lab_down() {
    local s suite
    suite=$(basename "$0" .sh)
    if [ "${tap_failed:-0}" -gt 0 ]; then
        mkdir -p "${BUILD:-build}/test-logs"
        for s in dc1 dc2 dc3; do
            cp "$LAB_DIR/$s/triad.log" "${BUILD:-build}/test-logs/$suite-$s.log" 2>/dev/null
        done
    fi
    [ "${KEEP_LAB:-0}" = 1 ] || "$LAB" down >/dev/null 2>&1
}
