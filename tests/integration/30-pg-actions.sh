#!/bin/bash
# 30-pg-actions.sh: the pg.* actions (promote, follow, demote, rewind)
# against the lab's real PostgreSQL 15, one operation at a time through
# build/fixtures/action_runner (which stands in for the daemon's engine).
#
# Own lab instance (LAB_DIR=/tmp/triad-lab-pg, namespace triad-lab-pg), with
# the triad daemons stopped so that their quorum and self-fencing stay out
# of the way. Three lab lifetimes:
#   A. failover and failback: DC1 killed, promote DC2 (check before/after,
#      a new timeline, writes, the epoch row, a second run is "already
#      done", a run with an older epoch is refused), an already-primary
#      target, DC3 follows, an unreachable site fails pg.follow clearly, DC1
#      revived as a diverged primary and rewound into a replica of DC2.
#   B. switchover: pg.demote on DC1's host (final checkpoint replayed by DC2
#      before promotion), promote, the old primary follows without rewind,
#      no acknowledged row lost.
#   C. refusals: DC2 behind DC3 (cut from DC1 while DC1 writes) is refused,
#      not confirmed when asked, refused over max_lag, and a paused replay
#      times out with a detail saying so; once resumed (and fenced read-only
#      meanwhile), an operator-confirmed promotion lifts the read-only
#      setting and reports the
#      data it lacks as the RPO's lower bound; DC3 (ahead of the fork) cannot
#      follow and is rewound instead; DC1 back with wal_log_hints off cannot
#      be rewound: refused, or rebuilt with pg_basebackup once an operator
#      agrees.
# TAP output; details in build/test-logs/30-pg-actions.detail.log.
set -u
cd "$(dirname "$0")/../.." || exit 1
REPO=$PWD

if [ "$(id -u)" != 0 ]; then
    echo "ok 1 # SKIP needs root"
    exit 0
fi

export LAB_DIR=/tmp/triad-lab-pg LAB_NETNS=triad-lab-pg
LAB=$REPO/examples/lab/lab.sh
RUNNER=$REPO/${BUILD:-build}/fixtures/action_runner
LOG=$REPO/${BUILD:-build}/test-logs/30-pg-actions.detail.log
mkdir -p "$(dirname "$LOG")"
: >"$LOG"
T0=$SECONDS

n=0
failed=0
ok() { # STATUS DESCRIPTION
    n=$((n + 1))
    if [ "$1" = 0 ]; then
        echo "ok $n - $2"
    else
        echo "not ok $n - $2"
        failed=$((failed + 1))
        [ -n "${OUT:-}" ] && printf '%s\n' "$OUT" | sed 's/^/#   /' | head -20
    fi
}
check() { # DESCRIPTION CMD...
    local d=$1
    shift
    echo "### $d: $*" >>"$LOG"
    "$@" >>"$LOG" 2>&1
    ok $? "$d"
}
diag() { echo "# $*"; }
wait_for() { # SECONDS CMD...
    local end=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge $end ] && return 1
        sleep 0.2
    done
}

# act SITE [runner options] ACTION PARAMS: the runner with SITE's config
# (its daemon's point of view); the JSON in $OUT.
OUT=
act() {
    local site=$1
    shift
    echo "### action_runner ($site) $*" >>"$LOG"
    OUT=$(ip netns exec "$LAB_NETNS" "$RUNNER" -c "$LAB_DIR/$site/triad.yaml" "$@" 2>>"$LOG")
    local rc=$?
    printf '%s\n' "$OUT" >>"$LOG"
    return $rc
}
status() { jq -r .status <<<"$OUT"; }
detail() { jq -r .detail <<<"$OUT"; }
result() { jq -r ".result$1" <<<"$OUT"; }
status_is() { [ "$(status)" = "$1" ]; }
detail_has() { detail | grep -qiE -- "$1"; }

# Superuser SQL on a site's Unix socket (no network, no rules).
sql() { "$LAB" sql "$1" "${3:-postgres}" "$2" 2>>"$LOG"; }
# As the synapse role over TCP, like the Synapse stand-in.
synapse_sql() { # SITE SQL
    ip netns exec "$LAB_NETNS" env PGPASSWORD="$(cat "$LAB_DIR/secrets/pg-synapse.pass")" \
        PGCONNECT_TIMEOUT=3 /usr/lib/postgresql/15/bin/psql -XAtq -v ON_ERROR_STOP=1 \
        "host=127.0.${1#dc}.5 port=5432 user=synapse dbname=synapse" -c "$2" 2>>"$LOG"
}
in_recovery() { [ "$(sql "$1" "SELECT pg_is_in_recovery()")" = "$2" ]; }
timeline_of() { # SITE: the primary's current timeline, or the replica's received one
    sql "$1" "SELECT CASE WHEN pg_is_in_recovery() THEN (SELECT received_tli FROM pg_stat_wal_receiver)
        ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END"
}
streams_from() { # REPLICA PRIMARY-HOST
    [ "$(sql "$1" "SELECT status || ' ' || sender_host FROM pg_stat_wal_receiver")" = "streaming $2" ]
}
replay_lsn() { sql "$1" "SELECT pg_last_wal_replay_lsn()"; }
# a > b for two LSNs, compared by PostgreSQL.
lsn_gt() { [ "$(sql dc3 "SELECT '$1'::pg_lsn > '$2'::pg_lsn")" = t ]; }

lab_fresh() {
    "$LAB" down >>"$LOG" 2>&1
    "$LAB" up >>"$LOG" 2>&1 || return 1
    "$LAB" daemons stop all >>"$LOG" 2>&1
    wait_for 20 streams_from dc2 127.0.1.5 && wait_for 20 streams_from dc3 127.0.1.5
}

cleanup() { "$LAB" down >>"$LOG" 2>&1; }
trap cleanup EXIT
trap 'exit 1' INT TERM

if [ ! -x "$RUNNER" ]; then
    echo "not ok 1 - $RUNNER is built (make all unit-bins)"
    echo "1..1"
    exit 1
fi

PROMOTE='{"group":"ess","site":"dc2"}'
GROUP_DC2='"group":"ess","primary":"dc2"'

# === A. failover and failback =============================================================
t=$SECONDS
check "lab up (daemons stopped)" lab_fresh
diag "lab up in $((SECONDS - t)) s"

act dc2 --op ready pg.promote '{"group":"ess","site":"dc2","max_lag":"16MB"}'
ok $? "ready: dc2 is a streaming replica within max_lag"
check "ready says so" detail_has '^ready: .*dc2.* streams, lag'

act dc1 --epoch 1 pg.promote '{"group":"ess","site":"dc1"}'
ok $? "pg.promote of a node that is already primary succeeds"
check "... and is reported as already done" detail_has 'already done.*already primary'
check "... without leaving recovery anywhere else" in_recovery dc2 t

act dc2 --op check --epoch 5 pg.promote "$PROMOTE"
check "check before promotion: does not hold (dc2 is a replica)" status_is 0

"$LAB" kill dc1 >>"$LOG" 2>&1
TL_BEFORE=$(timeline_of dc2)
t_ms=$(date +%s%N)
act dc2 --epoch 5 --run-id run-a pg.promote "$PROMOTE"
ok $? "pg.promote dc2 with DC1 killed"
diag "promote took $((($(date +%s%N) - t_ms) / 1000000)) ms (runner start to exit)"
check "... detail says promoted" detail_has '^promoted 127\.0\.2\.5:5432 \(dc2\) to timeline'
check "... dc2 left recovery" in_recovery dc2 f
check "... on a new timeline" test "$(timeline_of dc2)" -gt "${TL_BEFORE:-0}"
check "... result carries target_lsn and the RPO basis" \
    test "$(result .target_lsn)" != null -a "$(result .rpo_basis)" != null
check "... the epoch row is in triad.epochs (synapse)" \
    test "$(sql dc2 "SELECT run_id || ':' || site FROM triad.epochs WHERE epoch = 5" synapse)" = run-a:dc2
check "... and in the other database of the group (mas)" \
    test "$(sql dc2 "SELECT count(*) FROM triad.epochs WHERE epoch = 5" mas)" = 1

act dc2 --op check --epoch 5 pg.promote "$PROMOTE"
check "check after promotion holds" status_is 1
act dc2 --epoch 5 pg.promote "$PROMOTE"
check "running pg.promote again is already done" detail_has '^already done'
act dc2 --epoch 3 pg.promote "$PROMOTE"
check "a run with an older epoch than triad.epochs holds is refused (stale)" test "$(status)" = -116
check "... saying a newer decision exists" detail_has 'epoch 5, newer than this run.s 3'

act dc2 --op check pg.follow "{$GROUP_DC2,\"sites\":[\"dc3\"]}"
check "pg.follow check before: does not hold" status_is 0
act dc2 pg.follow "{$GROUP_DC2,\"sites\":[\"dc3\"]}"
ok $? "pg.follow dc3 to dc2"
check "... dc3 streams from dc2" streams_from dc3 127.0.2.5
check "... on dc2's timeline" test "$(timeline_of dc3)" = "$(timeline_of dc2)"
check "... through slot dc3 on dc2" \
    test "$(sql dc2 "SELECT active FROM pg_replication_slots WHERE slot_name = 'dc3'")" = t
act dc2 --op check pg.follow "{$GROUP_DC2,\"sites\":[\"dc3\"]}"
check "pg.follow check after holds" status_is 1
check "writes accepted on dc2 (synchronous commit, dc3 following)" \
    synapse_sql dc2 "INSERT INTO writes (id, site) VALUES (1001, 'dc2')"
check "... and replicated to dc3" wait_for 10 test "$(sql dc3 "SELECT count(*) FROM writes WHERE id = 1001" synapse)" = 1

act dc2 pg.follow "{$GROUP_DC2,\"sites\":[\"dc3\",\"dc1\"]}"
check "pg.follow with dc1 down fails" test "$(status)" -lt 0
check "... naming dc1 as unreachable" detail_has '127\.0\.1\.5:5432 \(dc1\) is unreachable'
check "... after repointing the others" detail_has 'streaming: 127\.0\.3\.5'

# Failback: DC1 comes back from disk as a diverged primary (timeline 1).
"$LAB" revive dc1 >>"$LOG" 2>&1
check "revived dc1 is a (diverged) primary" in_recovery dc1 f
act dc1 --op check pg.rewind '{"group":"ess","site":"dc1","primary":"dc2"}'
check "pg.rewind check before: does not hold" status_is 0
act dc2 pg.rewind '{"group":"ess","site":"dc1","primary":"dc2"}'
check "pg.rewind on another site's daemon is refused (runs_on)" detail_has 'must run on the daemon of its site'
t_ms=$(date +%s%N)
act dc1 pg.rewind '{"group":"ess","site":"dc1","primary":"dc2"}'
ok $? "pg.rewind dc1 from dc2"
diag "rewind took $((($(date +%s%N) - t_ms) / 1000000)) ms (stop, pg_rewind, start, streaming)"
check "... detail says rewound and streaming" detail_has 'was rewound and streams from 127\.0\.2\.5'
check "... dc1 is a replica" in_recovery dc1 t
check "... streaming from dc2" streams_from dc1 127.0.2.5
check "... on dc2's timeline" test "$(timeline_of dc1)" = "$(timeline_of dc2)"
check "... its own lab.conf kept (listens on 127.0.1.5)" \
    grep -q "listen_addresses = '127.0.1.5'" "$LAB_DIR/dc1/pgdata/lab.conf"
check "... has dc2's write" wait_for 10 test "$(sql dc1 "SELECT count(*) FROM writes WHERE id = 1001" synapse)" = 1
act dc1 --op check pg.rewind '{"group":"ess","site":"dc1","primary":"dc2"}'
check "pg.rewind check after holds" status_is 1

# === B. switchover ==========================================================================
t=$SECONDS
check "lab reset" lab_fresh
diag "lab reset in $((SECONDS - t)) s"
check "a write on dc1 before the switchover" \
    synapse_sql dc1 "INSERT INTO writes (id, site) VALUES (2001, 'dc1')"
ROWS_DC1=$(sql dc1 "SELECT count(*) FROM writes" synapse)
DEMOTE='{"group":"ess","site":"dc1","target":"dc2"}'
act dc1 --op check pg.demote "$DEMOTE"
check "pg.demote check before: does not hold" status_is 0
t_ms=$(date +%s%N)
act dc1 pg.demote "$DEMOTE"
ok $? "pg.demote dc1 (target dc2)"
diag "demote took $((($(date +%s%N) - t_ms) / 1000000)) ms (checkpoint, stop, replayed, back as a replica)"
DEMOTE_LSN=$(result .demote_lsn)
diag "demote_lsn $DEMOTE_LSN, dc2 replayed $(replay_lsn dc2)"
check "... reports demote_lsn" test -n "$DEMOTE_LSN" -a "$DEMOTE_LSN" != null
check "... dc2 replayed past it before the step ended" lsn_gt "$(replay_lsn dc2)" "$DEMOTE_LSN"
check "... dc1 is back as a replica (cascading from dc2)" in_recovery dc1 t
act dc1 --op check pg.demote "$DEMOTE"
check "pg.demote check after holds" status_is 1
act dc2 --epoch 7 pg.promote '{"group":"ess","site":"dc2","if_behind":"refuse"}'
ok $? "pg.promote dc2 after the demotion"
check "... RPO 0 (against the demoted old primary)" test "$(result .rpo_bytes)" = 0
act dc2 pg.follow "{$GROUP_DC2,\"sites\":[\"dc1\"]}"
ok $? "pg.follow dc1 (the old primary) to dc2"
check "... dc1 streams from dc2 without rewind" streams_from dc1 127.0.2.5
check "... on the new timeline" test "$(timeline_of dc1)" = "$(timeline_of dc2)"
act dc2 pg.follow "{$GROUP_DC2,\"sites\":[\"dc3\"]}"
ok $? "pg.follow dc3 to dc2"
check "no row lost: dc2 has every row dc1 had" \
    test "$(sql dc2 "SELECT count(*) FROM writes" synapse)" = "$ROWS_DC1"
check "... including the last write" test "$(sql dc2 "SELECT count(*) FROM writes WHERE id = 2001" synapse)" = 1

# === C. refusals ===============================================================================
t=$SECONDS
check "lab reset" lab_fresh
diag "lab reset in $((SECONDS - t)) s"
# dc2: replay paused, then cut from dc1 while dc1 keeps writing (dc3 acks).
sql dc2 "SELECT pg_wal_replay_pause()" >/dev/null
synapse_sql dc1 "INSERT INTO writes (id, site) VALUES (3001, 'dc1')" >>"$LOG"
"$LAB" partition dc1 dc2 >>"$LOG" 2>&1
for i in $(seq 3002 3020); do synapse_sql dc1 "INSERT INTO writes (id, site) VALUES ($i, 'dc1')" >>"$LOG"; done
check "dc3 has the writes dc2 missed" wait_for 10 test "$(sql dc3 "SELECT count(*) FROM writes WHERE id = 3020" synapse)" = 1
"$LAB" kill dc1 >>"$LOG" 2>&1
act dc2 --epoch 9 pg.promote '{"group":"ess","site":"dc2","if_behind":"refuse"}'
check "promote refused: dc2 is behind dc3" test "$(status)" = -11
check "... with the numbers" detail_has 'dc2\) is [0-9.]+ [kM]?B behind 127\.0\.3\.5:5432 \(dc3\)'
check "... and dc2 is still a replica" in_recovery dc2 t
act dc2 --epoch 9 --confirm no pg.promote '{"group":"ess","site":"dc2","if_behind":"ask"}'
check "if_behind ask, operator says no: refused" detail_has 'not confirmed'
check "... still a replica" in_recovery dc2 t
t_ms=$(date +%s%N)
act dc2 --epoch 9 --timeout-ms 5000 pg.promote '{"group":"ess","site":"dc2","if_behind":"ignore"}'
check "a paused replay never catches up: times out" test "$(status)" = -110
diag "timed out after $((($(date +%s%N) - t_ms) / 1000000)) ms (step timeout 5 s)"
check "... saying that replay is paused" detail_has 'replay is paused'
check "... not promoted" in_recovery dc2 t
act dc2 --epoch 9 pg.promote '{"group":"ess","site":"dc2","if_behind":"ignore","max_lag":"1kB"}'
check "if_behind ignore but further behind than max_lag: refused" detail_has 'over max_lag 1 kB'
check "... still a replica" in_recovery dc2 t
sql dc2 "SELECT pg_wal_replay_resume()" >/dev/null
# A fence left dc2 read-only (ALTER SYSTEM, survives the promotion).
sql dc2 "ALTER SYSTEM SET default_transaction_read_only = on" >/dev/null
sql dc2 "SELECT pg_reload_conf()" >/dev/null
act dc2 --epoch 9 --confirm yes pg.promote '{"group":"ess","site":"dc2","if_behind":"ask"}'
ok $? "if_behind ask, operator says yes: promoted"
check "... noted as promoted although behind" detail_has 'although.*behind'
check "... the RPO's lower bound is what dc3 has and dc2 lacks" test "$(result .rpo_min_bytes)" -gt 0
check "... dc2 is primary" in_recovery dc2 f
check "... the fence's read-only setting was lifted" detail_has 'lifted default_transaction_read_only'
check "... dc2 takes writes again (synchronous_commit local: no standby yet)" \
    synapse_sql dc2 "SET synchronous_commit = local; INSERT INTO writes (id, site) VALUES (3100, 'dc2')"
"$LAB" heal >>"$LOG" 2>&1
act dc2 --timeout-ms 4000 pg.follow "{$GROUP_DC2,\"sites\":[\"dc3\"]}"
diag "dc3 (ahead of dc2's fork point) following dc2: $(detail)"
check "dc3, ahead of the new timeline's fork point, cannot simply follow" test "$(status)" != 0

# A replica that replayed past the fork point is rewound like an old primary.
REWIND3='{"group":"ess","site":"dc3","primary":"dc2"}'
act dc3 pg.rewind "$REWIND3"
ok $? "pg.rewind dc3 (a replica ahead of the fork point)"
check "... dc3 streams from dc2 on its timeline" streams_from dc3 127.0.2.5
check "... without the rows dc2 never had" \
    test "$(sql dc3 "SELECT count(*) FROM writes WHERE id = 3020" synapse)" = 0

# DC1 back, diverged, with wal_log_hints off (no checksums): no pg_rewind.
"$LAB" revive dc1 >>"$LOG" 2>&1
sql dc1 "ALTER SYSTEM SET wal_log_hints = off" >/dev/null
"$LAB" pg stop dc1 >>"$LOG" 2>&1
"$LAB" pg start dc1 >>"$LOG" 2>&1
REWIND1='{"group":"ess","site":"dc1","primary":"dc2"}'
act dc1 pg.rewind "$REWIND1"
check "pg.rewind refused up front: wal_log_hints off and no checksums" test "$(status)" = -95
check "... saying so and that nothing changed" detail_has 'wal_log_hints off.*nothing was changed'
check "... dc1 still runs" in_recovery dc1 f
act dc1 --confirm no pg.rewind '{"group":"ess","site":"dc1","primary":"dc2","allow_basebackup":true}'
check "allow_basebackup, operator says no: no rebuild" detail_has 'not confirmed'
check "... nothing changed: dc1 still runs, its data directory in place" \
    bash -c "[ \"\$($LAB sql dc1 postgres 'SELECT pg_is_in_recovery()')\" = f ] && ! ls -d $LAB_DIR/dc1/pgdata.triad-old* 2>/dev/null"
t_ms=$(date +%s%N)
act dc1 --confirm yes pg.rewind '{"group":"ess","site":"dc1","primary":"dc2","allow_basebackup":true}'
ok $? "allow_basebackup, operator says yes: dc1 rebuilt with pg_basebackup"
diag "rebuild took $((($(date +%s%N) - t_ms) / 1000000)) ms: $(detail)"
check "... streams from dc2 on its timeline" streams_from dc1 127.0.2.5
check "... the old data directory was kept aside" test -d "$(result .old_data_dir)"
check "... dc1 has dc2's data, not its own lost rows" \
    test "$(sql dc1 "SELECT count(*) FROM writes WHERE id = 3020" synapse)" = 0
check "... its own lab.conf kept (listens on 127.0.1.5)" \
    grep -q "listen_addresses = '127.0.1.5'" "$LAB_DIR/dc1/pgdata/lab.conf"
act dc1 --op check pg.rewind "$REWIND1"
check "pg.rewind check holds after the rebuild" status_is 1

# === D. catching up from the replica that is ahead (if_behind: catch_up) =====================
t=$SECONDS
check "lab reset" lab_fresh
diag "lab reset in $((SECONDS - t)) s"
"$LAB" partition dc1 dc2 >>"$LOG" 2>&1
not_streams_from() { ! streams_from "$@"; }
check "dc2 cut from dc1" wait_for 20 not_streams_from dc2 127.0.1.5
for i in $(seq 4001 4020); do synapse_sql dc1 "INSERT INTO writes (id, site) VALUES ($i, 'dc1')" >>"$LOG"; done
check "dc3 has writes dc2 lacks" wait_for 10 test "$(sql dc3 "SELECT count(*) FROM writes WHERE id = 4020" synapse)" = 1
"$LAB" kill dc1 >>"$LOG" 2>&1
# First with dc2's PostgreSQL unable to reach dc3's: it cannot fetch.
ip netns exec "$LAB_NETNS" nft add rule inet triad_lab output ip saddr 127.0.2.5 ip daddr 127.0.3.5 drop comment '"test no-catch-up"'
act dc2 --epoch 11 --confirm no pg.promote '{"group":"ess","site":"dc2","if_behind":"catch_up","catch_up_timeout":"2s"}'
check "catch_up that cannot fetch asks the operator, who says no: refused" detail_has 'not confirmed'
check "... the result says why it could not fetch" \
    grep -qE 'reached .* of .* from 127.0.3.5:5432 \(dc3\) in 2000 ms' <<<"$(result .catch_up)"
check "... dc2 is still a replica" in_recovery dc2 t
for h in $(ip netns exec "$LAB_NETNS" nft -a list chain inet triad_lab output | grep -F 'test no-catch-up' | sed -E 's/.*# handle ([0-9]+).*/\1/'); do
    ip netns exec "$LAB_NETNS" nft delete rule inet triad_lab output handle "$h"
done
t_ms=$(date +%s%N)
act dc2 --epoch 11 pg.promote '{"group":"ess","site":"dc2","if_behind":"catch_up"}'
ok $? "catch_up: dc2 fetches what dc3 has, then is promoted"
diag "catch-up and promotion took $((($(date +%s%N) - t_ms) / 1000000)) ms: $(detail)"
check "... noted in the detail" detail_has 'fetched the WAL it lacked from 127\.0\.3\.5:5432 \(dc3\)'
check "... dc2 has every write dc3 had" \
    test "$(sql dc2 "SELECT count(*) FROM writes WHERE id BETWEEN 4001 AND 4020" synapse)" = 20
"$LAB" heal >>"$LOG" 2>&1
act dc2 pg.follow "{$GROUP_DC2,\"sites\":[\"dc3\"]}"
ok $? "... so dc3 follows the new primary without a rewind"
check "... dc3 streams from dc2 on its timeline" streams_from dc3 127.0.2.5

# Every runner output and message of the suite is in $LOG: no secret there.
no_secret_in_log() {
    local f
    for f in pg-replicator pg-triad; do
        ! grep -qF "$(cat "$LAB_DIR/secrets/$f.pass")" "$LOG" || return 1
    done
}
check "no password in anything the actions printed" no_secret_in_log

diag "suite took $((SECONDS - T0)) s"
echo "1..$n"
[ "$failed" -eq 0 ]
