#!/bin/bash
# lab.sh: the three-datacenter lab of DESIGN.md section 9 on one machine.
#
#   lab.sh up | down | status [--json]
#   lab.sh kill SITE | revive SITE          SIGKILL a whole site (and isolate it) / bring it back
#   lab.sh isolate SITE | partition A B | heal
#   lab.sh daemons start|stop|restart SITE|all
#   lab.sh writer start [writer.py run options] | stop | check | stats
#   lab.sh pg start|stop SITE               (used by the BMC stand-in's power actions)
#   lab.sh sql SITE DB SQL                  run SQL as the superuser on a site's socket
#
# SITE is dc1, dc2 or dc3; partition also takes `shared` (127.0.9.0/24).
# Environment: LAB_DIR (default /tmp/triad-lab), LAB_NETNS (default
# triad-lab), TRIAD (default the repository's ./triad), LAB_DAEMON_ARGS
# (more arguments for `triad daemon`, e.g. --user nobody), LAB_NO_NETNS=1
# to force the plain-loopback fallback. Needs root. See examples/lab/README.md.
set -u -o pipefail

LAB_DIR=${LAB_DIR:-/tmp/triad-lab}
LAB_NETNS=${LAB_NETNS:-triad-lab}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
FIX=$REPO/tests/fixtures
TPL=$HERE/templates
TRIAD=${TRIAD:-$REPO/triad}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PY=/usr/bin/python3 # Debian's: it sees python3-psycopg2
SITES=(dc1 dc2 dc3)
SECRETS=$LAB_DIR/secrets
KEEPER_SOCK=$LAB_DIR/keeper.sock
export LAB_DIR LAB_NETNS

say() { printf 'lab: %s\n' "$*"; }
warn() { printf 'lab: WARNING: %s\n' "$*" >&2; }
die() {
    printf 'lab: error: %s\n' "$*" >&2
    exit 1
}

case $LAB_DIR in
/ | "" | *" "* | *[![:print:]]*) die "LAB_DIR must be a directory path without spaces, not '$LAB_DIR'" ;;
esac
LAB_DIR=${LAB_DIR%/}

site_ok() { case ${1:-} in dc1 | dc2 | dc3) return 0 ;; esac; return 1; }
need_site() { site_ok "${1:-}" || die "unknown site '${1:-}' (dc1, dc2 or dc3)"; }
num() { echo "${1#dc}"; }

# --- where commands run -------------------------------------------------------

mode() {
    if [ -n "${MODE_OVERRIDE:-}" ]; then
        echo "$MODE_OVERRIDE"
    else
        cat "$LAB_DIR/mode" 2>/dev/null || echo none
    fi
}

# Runs a command inside the lab's network (the namespace, or the host when
# the lab fell back to plain loopback).
nsx() {
    if [ "$(mode)" = netns ]; then
        ip netns exec "$LAB_NETNS" "$@"
    else
        "$@"
    fi
}

# The environment that gives a process its lab identity: the bind shim with
# its source address, its site (for `kill`), and this lab instance.
ident() { # SITE ADDR
    printf '%s\n' "LD_PRELOAD=$LAB_DIR/bindshim.so" "LAB_BIND_ADDR=$2" "LAB_SITE=$1" \
        "LAB_INSTANCE=$LAB_DIR" "LAB_DIR=$LAB_DIR" "LAB_NETNS=$LAB_NETNS"
}

# Starts a long-running process as a child of the keeper (see lab_keeper.py):
# kspawn LOG WAIT SITE ADDR -- ARGV. WAIT > 0 waits that long for it to exit
# and returns its status.
kspawn() {
    local log=$1 wait=$2 site=$3 addr=$4
    shift 5
    # shellcheck disable=SC2046 # ident prints one assignment per line, no spaces
    env $(ident "$site" "$addr") "$PY" "$HERE/lab_keeper.py" call --socket "$KEEPER_SOCK" \
        --log "$log" --wait "$wait" -- "$@"
}

# --- processes ------------------------------------------------------------------

alive() { # PID: running and not a zombie
    local st
    [ -n "${1:-}" ] || return 1
    st=$(sed -E 's/^.*\) (.).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

pidfile_pid() { # FILE: the pid in it when that process is alive and is this lab's
    local p
    p=$(head -n 1 "$1" 2>/dev/null | tr -dc 0-9)
    # Every lab process names a file of LAB_DIR on its command line: a pid
    # reused by an unrelated process is never taken for ours.
    alive "$p" && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF "$LAB_DIR/" && echo "$p"
}

# The pid files of a site's processes (or of every process with "all").
pidfiles() { # SITE|shared|all
    local s=$1 d
    if [ "$s" = all ]; then
        for d in "${SITES[@]}"; do pidfiles "$d"; done
        pidfiles shared
        return
    fi
    if [ "$s" = shared ]; then
        printf '%s\n' "$LAB_DIR/dns/named.pid" "$LAB_DIR/webhook.pid" "$LAB_DIR/writer.pid" \
            "$LAB_DIR/bmc-dc1.pid" "$LAB_DIR/bmc-dc2.pid" "$LAB_DIR/bmc-dc3.pid"
        return
    fi
    d=$LAB_DIR/$s
    printf '%s\n' "$d/pgdata/postmaster.pid" "$d/nginx/nginx.pid" "$d/synapse.pid" "$d/k8s.pid" \
        "$d/triad.pid"
}

# Every live process of this lab (or of one site), descendants included.
# Found three ways because each alone misses some: the LAB_INSTANCE/LAB_SITE
# environment (PostgreSQL and nginx overwrite theirs with their process
# titles), the pid files, and (for the whole lab) the namespace.
lab_pids() { # [SITE]
    local site=${1:-} roots=() f p
    local files
    files=$(grep -lzxF "LAB_INSTANCE=$LAB_DIR" /proc/[0-9]*/environ 2>/dev/null)
    if [ -n "$site" ] && [ -n "$files" ]; then
        # shellcheck disable=SC2086
        files=$(grep -lzxF "LAB_SITE=$site" $files 2>/dev/null)
    fi
    for f in $files; do
        p=${f#/proc/}
        roots+=("${p%/environ}")
    done
    while read -r f; do
        p=$(pidfile_pid "$f") && roots+=("$p")
    done < <(pidfiles "${site:-all}")
    if [ -z "$site" ] && [ "$(mode)" = netns ]; then
        local nsp
        mapfile -t nsp < <(ip netns pids "$LAB_NETNS" 2>/dev/null)
        roots+=("${nsp[@]}")
    fi
    [ ${#roots[@]} -gt 0 ] || return 0
    ps -e -o pid=,ppid= | awk -v roots="${roots[*]}" -v self="$$" '
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
            # Parents first: a parent killed before its children cannot
            # respawn them (nginx workers, PostgreSQL backends).
            for (p in want) {
                if (p == self || !(p in par)) continue
                d = 0
                for (q = par[p]; (q in want) && d < 64; q = par[q]) d++
                print d, p
            }
        }' | sort -n | while read -r _ p; do alive "$p" && echo "$p"; done
}

wait_gone() { # SECONDS PID...
    local t=$1 p left
    shift
    local deadline=$((SECONDS + t))
    while :; do
        left=()
        for p in "$@"; do alive "$p" && left+=("$p"); done
        [ ${#left[@]} -eq 0 ] && return 0
        [ $SECONDS -ge $deadline ] && return 1
        sleep 0.05
    done
}

listening() { # ADDR:PORT...: all are listening (TCP) or bound (UDP :53) in the lab network
    local have a
    have=$(nsx ss -Hlntu 2>/dev/null | awk '{print $5}')
    for a in "$@"; do
        grep -qxF "$a" <<<"$have" || return 1
    done
}

wait_listening() { # SECONDS ADDR:PORT...
    local t=$1
    shift
    local deadline=$((SECONDS + t))
    until listening "$@"; do
        [ $SECONDS -ge $deadline ] && return 1
        sleep 0.1
    done
}

# --- keeper -----------------------------------------------------------------------

keeper_alive() { "$PY" "$HERE/lab_keeper.py" ping --socket "$KEEPER_SOCK" >/dev/null 2>&1; }

keeper_start() {
    keeper_alive && return 0
    nsx env LAB_INSTANCE="$LAB_DIR" LAB_SITE=keeper setsid "$PY" "$HERE/lab_keeper.py" serve \
        --socket "$KEEPER_SOCK" --pidfile "$LAB_DIR/keeper.pid" </dev/null \
        >>"$LAB_DIR/keeper.log" 2>&1 &
    local _
    for _ in $(seq 50); do
        keeper_alive && return 0
        sleep 0.1
    done
    die "the process keeper did not start (see $LAB_DIR/keeper.log)"
}

# --- network ------------------------------------------------------------------------

ADDRS=()
for n in 1 2 3; do
    ADDRS+=("127.0.$n.1" "127.0.$n.5" "127.0.$n.10" "127.0.$n.20" "127.0.$n.30" "127.0.8.$n")
done
ADDRS+=(127.0.9.53 127.0.9.80 127.0.9.100)

net_setup() {
    local m
    m=$(mode)
    if [ "$m" = none ]; then
        if [ "${LAB_NO_NETNS:-0}" = 1 ]; then
            m=plain
        elif netns_exists || ip netns add "$LAB_NETNS" 2>/dev/null; then
            m=netns
        else
            m=plain
        fi
        echo "$m" >"$LAB_DIR/mode"
    fi
    if [ "$m" = netns ]; then
        netns_exists || ip netns add "$LAB_NETNS" ||
            die "cannot create network namespace $LAB_NETNS"
        { echo "link set lo up"; printf 'addr replace %s/32 dev lo\n' "${ADDRS[@]}"; } |
            ip netns exec "$LAB_NETNS" ip -batch - || die "cannot configure the namespace's loopback"
        ip netns exec "$LAB_NETNS" nft -f - <<EOF || die "cannot create the nftables table"
table inet triad_lab {
    chain output {
        type filter hook output priority 0; policy accept;
    }
}
EOF
    else
        warn "**************************************************************************"
        warn "NO NETWORK NAMESPACE: the lab runs on the host's plain loopback."
        warn "Partitions are DISABLED (isolate/partition/heal refuse, kill does not isolate)."
        warn "**************************************************************************"
        local a
        for a in "${ADDRS[@]}"; do
            if ! ip -4 addr show dev lo | awk '$1 == "inet" {print $2}' | grep -qxF "$a/32"; then
                if ip addr add "$a/32" dev lo 2>/dev/null; then
                    echo "$a" >>"$LAB_DIR/host-addrs"
                else
                    warn "cannot add $a to the host's lo; BIND may refuse it"
                fi
            fi
        done
    fi
}

netns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qxF "$LAB_NETNS"; }

need_partitions() {
    [ "$(mode)" = netns ] && return 0
    die "partitions are disabled: the lab runs on plain loopback (no network namespace)"
}

net_of() {
    case $1 in
    dc1 | dc2 | dc3) echo "127.0.$(num "$1").0/24" ;;
    shared) echo 127.0.9.0/24 ;;
    *) die "unknown network '$1' (dc1, dc2, dc3 or shared)" ;;
    esac
}

nft_rules() { # the lab's rules with their handles
    nsx nft -a list chain inet triad_lab output 2>/dev/null | grep -E '^\s+ip saddr'
}

cut_pair() { # A B TAG: drop A->B and B->A
    local a b
    a=$(net_of "$1") b=$(net_of "$2")
    nsx nft -f - <<EOF
add rule inet triad_lab output ip saddr $a ip daddr $b drop comment "$3"
add rule inet triad_lab output ip saddr $b ip daddr $a drop comment "$3"
EOF
}

drop_rules() { # TAG: delete the rules carrying that comment
    local h
    for h in $(nft_rules | grep -F "comment \"$1\"" | sed -E 's/.*# handle ([0-9]+).*/\1/'); do
        nsx nft delete rule inet triad_lab output handle "$h"
    done
}

# isolate SITE: cut from the other DCs and from the shared services, but
# not from the out-of-band network 127.0.8.0/24 (the BMCs).
isolate() {
    local s=$1 o
    need_partitions
    nft_rules | grep -qF "comment \"isolate $s\"" && return 0
    for o in "${SITES[@]}" shared; do
        [ "$o" = "$s" ] || cut_pair "$s" "$o" "isolate $s"
    done
}

# --- secrets and certificates ---------------------------------------------------------

new_secret() { # FILE CONTENT-COMMAND...: create once, mode 0600
    [ -s "$1" ] && return 0
    local f=$1
    shift
    (umask 077 && "$@" >"$f")
}

mkcert() { # DIR NAME CN SAN: a key and a certificate signed by DIR/ca
    local dir=$1 name=$2 cn=$3 san=$4
    [ -s "$dir/$name.pem" ] && [ -s "$dir/$name.key" ] && return 0
    (umask 077 && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/$name.key" -subj "/O=triad lab/CN=$cn" -out "$dir/$name.csr" 2>/dev/null) ||
        die "openssl: key for $name"
    printf '%s\n' "subjectAltName=$san" "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth,clientAuth" "subjectKeyIdentifier=hash" \
        "authorityKeyIdentifier=keyid" >"$dir/$name.ext"
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -set_serial "0x$(openssl rand -hex 12)" -days 825 -sha256 -extfile "$dir/$name.ext" \
        -out "$dir/$name.pem" 2>/dev/null || die "openssl: certificate for $name"
    rm -f "$dir/$name.csr" "$dir/$name.ext"
    chmod 0644 "$dir/$name.pem"
}

mkca() { # DIR CN
    [ -s "$1/ca.pem" ] && [ -s "$1/ca.key" ] && return 0
    (umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$1/ca.key" -out "$1/ca.pem" -days 3650 -sha256 -subj "/O=triad lab/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null) || die "openssl: CA $2"
    chmod 0644 "$1/ca.pem"
}

secrets_setup() {
    mkdir -p "$SECRETS/rogue" "$SECRETS/operators"
    chmod 0755 "$SECRETS" "$SECRETS/rogue" "$SECRETS/operators"
    local n s
    for s in triad replicator synapse; do
        new_secret "$SECRETS/pg-$s.pass" openssl rand -hex 16
    done
    for s in "${SITES[@]}"; do
        new_secret "$SECRETS/k8s-$s.token" openssl rand -hex 24
        new_secret "$SECRETS/bmc-$s" sh -c "printf 'admin:%s\n' \$(openssl rand -hex 12)"
    done
    [ -s "$SECRETS/tsig.key" ] || (umask 077 && tsig-keygen -a hmac-sha256 triad-key \
        >"$SECRETS/tsig.key") || die "tsig-keygen failed"
    mkca "$SECRETS" "triad lab CA"
    for s in "${SITES[@]}"; do
        n=$(num "$s")
        mkcert "$SECRETS" "$s" "$s" "DNS:$s"
        mkcert "$SECRETS" "k8s-$s" "k8s-$s" "IP:127.0.$n.30"
        mkcert "$SECRETS" "bmc-$s" "bmc-$s" "IP:127.0.8.$n"
    done
    mkcert "$SECRETS" ingress matrix.lab.test "DNS:matrix.lab.test"
    mkca "$SECRETS/rogue" "rogue CA (not the lab's)"
    mkcert "$SECRETS/rogue" dc2 dc2 "DNS:dc2"
    # Operators' client certificates for the HTTPS API come from a CA of
    # their own (api.https.client_ca_file), not the daemons' CA.
    mkca "$SECRETS/operators" "triad lab operators CA"
    mkcert "$SECRETS/operators" alice alice "DNS:alice"
    mkcert "$SECRETS/rogue" alice alice "DNS:alice"
}

render() { # TEMPLATE OUT KEY=VALUE...: replace @KEY@ by VALUE
    local t=$1 out=$2 kv text
    shift 2
    text=$(<"$t")
    for kv in "$@"; do
        text=${text//@${kv%%=*}@/${kv#*=}}
    done
    printf '%s\n' "$text" >"$out"
}

# --- PostgreSQL ---------------------------------------------------------------------------

pg_running() { # SITE
    local p
    p=$(pidfile_pid "$LAB_DIR/$1/pgdata/postmaster.pid") || return 1
    grep -q postgres "/proc/$p/cmdline" 2>/dev/null
}

psql_local() { # SITE DB SQL [psql args]: as the superuser on the site's socket
    local s=$1 db=$2 sql=$3
    shift 3
    runuser -u postgres -- "$PGBIN/psql" -h "$LAB_DIR/$s/pgsock" -p 5432 -d "$db" -XAtq \
        -v ON_ERROR_STOP=1 "$@" -c "$sql"
}

pg_conf() { # SITE: the site's lab.conf and pg_hba.conf
    local s=$1 d=$LAB_DIR/$1/pgdata
    render "$TPL/postgresql.conf.in" "$d/lab.conf" SITE="$s" PG_ADDR="127.0.$(num "$s").5" \
        SOCKDIR="$LAB_DIR/$s/pgsock"
    cp "$TPL/pg_hba.conf" "$d/pg_hba.conf"
    grep -qx "include 'lab.conf'" "$d/postgresql.conf" || echo "include 'lab.conf'" >>"$d/postgresql.conf"
    chown postgres:postgres "$d/lab.conf" "$d/pg_hba.conf"
}

pg_start() { # SITE
    local s=$1 d=$LAB_DIR/$1 f p
    pg_running "$s" && return 0
    [ -f "$d/pgdata/PG_VERSION" ] || die "no PostgreSQL data directory for $s (run lab.sh up)"
    # A power cut leaves lock files behind; PostgreSQL copes with a dead pid,
    # but not with one that was reused, so drop them when their pid is gone.
    for f in "$d/pgdata/postmaster.pid" "$d/pgsock/.s.PGSQL.5432.lock"; do
        [ -f "$f" ] || continue
        p=$(head -n 1 "$f" | tr -dc 0-9)
        if ! { alive "$p" && grep -q postgres "/proc/$p/cmdline" 2>/dev/null; }; then
            rm -f "$f"
        fi
    done
    touch "$d/postgres.log"
    chown postgres:postgres "$d/postgres.log"
    kspawn "$d/pg_ctl.log" 90 "$s" "127.0.$(num "$s").5" -- runuser -u postgres -- \
        "$PGBIN/pg_ctl" -D "$d/pgdata" -l "$d/postgres.log" -w -t 60 start >/dev/null ||
        die "PostgreSQL of $s did not start (see $d/postgres.log)"
}

pg_stop() { # SITE
    local d=$LAB_DIR/$1
    pg_running "$1" || return 0
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$d/pgdata" -m fast -w -t 30 stop >/dev/null
}

pg_primary_setup() {
    local d=$LAB_DIR/dc1 db
    if [ ! -f "$d/pg.done" ]; then
        rm -rf "$d/pgdata"
        mkdir -p "$d/pgdata" "$d/pgsock"
        chown postgres:postgres "$d/pgdata" "$d/pgsock"
        chmod 0700 "$d/pgdata"
        runuser -u postgres -- "$PGBIN/initdb" -D "$d/pgdata" -U postgres -E UTF8 --locale=C \
            --no-sync --auth-local=peer --auth-host=scram-sha-256 >"$d/initdb.log" 2>&1 ||
            die "initdb failed (see $d/initdb.log)"
        pg_conf dc1
    fi
    pg_start dc1
    [ -f "$d/pg.done" ] && return 0
    # Roles and databases; the admin session commits locally, because no
    # synchronous standby exists yet.
    PGOPTIONS="-c synchronous_commit=local" psql_local dc1 postgres "
        DO \$\$ BEGIN
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'replicator') THEN
            CREATE ROLE replicator LOGIN REPLICATION; END IF;
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'triad') THEN
            CREATE ROLE triad LOGIN; END IF;
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'synapse') THEN
            CREATE ROLE synapse LOGIN; END IF;
        END \$\$;" || die "creating roles failed"
    # Passwords through psql variables (never on a command line).
    PGOPTIONS="-c synchronous_commit=local" runuser -u postgres -- "$PGBIN/psql" \
        -h "$d/pgsock" -p 5432 -d postgres -XAtq -v ON_ERROR_STOP=1 \
        -v repl="$(cat "$SECRETS/pg-replicator.pass")" -v triad="$(cat "$SECRETS/pg-triad.pass")" \
        -v syn="$(cat "$SECRETS/pg-synapse.pass")" -f - <<'EOF' || die "setting passwords failed"
ALTER ROLE replicator PASSWORD :'repl';
ALTER ROLE triad PASSWORD :'triad';
ALTER ROLE synapse PASSWORD :'syn';
EOF
    for db in synapse mas; do
        psql_local dc1 postgres "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 ||
            PGOPTIONS="-c synchronous_commit=local" psql_local dc1 postgres "CREATE DATABASE $db" ||
            die "CREATE DATABASE $db failed"
    done
    # The triad role: the least its probes and actions need (README.md says why).
    PGOPTIONS="-c synchronous_commit=local" psql_local dc1 postgres "
        GRANT pg_monitor, pg_signal_backend, pg_checkpoint TO triad;
        GRANT ALTER SYSTEM ON PARAMETER default_transaction_read_only, primary_conninfo,
            primary_slot_name TO triad;" || die "cluster-wide grants failed"
    for db in postgres synapse mas; do
        PGOPTIONS="-c synchronous_commit=local" psql_local dc1 "$db" "
            GRANT EXECUTE ON FUNCTION pg_catalog.pg_promote(boolean, integer) TO triad;
            GRANT EXECUTE ON FUNCTION pg_catalog.pg_reload_conf() TO triad;
            GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO triad;
            GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_file(text, boolean) TO triad;
            GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text) TO triad;
            GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)
                TO triad;" || die "grants in $db failed"
    done
    for db in synapse mas; do
        PGOPTIONS="-c synchronous_commit=local" psql_local dc1 "$db" "
            CREATE SCHEMA IF NOT EXISTS triad AUTHORIZATION triad;" || die "schema triad in $db failed"
    done
    PGOPTIONS="-c synchronous_commit=local" psql_local dc1 synapse "
        CREATE TABLE IF NOT EXISTS public.writes (
            seq bigserial PRIMARY KEY,
            id bigint NOT NULL,
            site text NOT NULL,
            txid bigint,
            timeline integer,
            written_at timestamptz NOT NULL DEFAULT now());
        CREATE INDEX IF NOT EXISTS writes_id ON public.writes (id);
        ALTER TABLE public.writes OWNER TO synapse;" || die "creating the writes table failed"
    touch "$d/pg.done"
}

pg_replica_setup() { # SITE
    local s=$1 d=$LAB_DIR/$1 n
    n=$(num "$s")
    if [ ! -f "$d/pg.done" ]; then
        pg_running "$s" && pg_stop "$s"
        rm -rf "$d/pgdata"
        mkdir -p "$d/pgdata" "$d/pgsock"
        chown postgres:postgres "$d/pgdata" "$d/pgsock"
        chmod 0700 "$d/pgdata"
        psql_local dc1 postgres "SELECT pg_drop_replication_slot(slot_name)
            FROM pg_replication_slots WHERE slot_name = '$s' AND NOT active" >/dev/null
        # shellcheck disable=SC2046
        nsx env $(ident "$s" "127.0.$n.5") PGPASSWORD="$(cat "$SECRETS/pg-replicator.pass")" \
            runuser -u postgres -- "$PGBIN/pg_basebackup" -h 127.0.1.5 -p 5432 -U replicator \
            -D "$d/pgdata" -X stream -C -S "$s" --checkpoint=fast --no-sync \
            >"$d/basebackup.log" 2>&1 || die "pg_basebackup for $s failed (see $d/basebackup.log)"
        pg_conf "$s"
        {
            echo "primary_conninfo = 'host=127.0.1.5 port=5432 user=replicator password=$(cat "$SECRETS/pg-replicator.pass") application_name=$s connect_timeout=2'"
            echo "primary_slot_name = '$s'"
        } >>"$d/pgdata/postgresql.auto.conf"
        touch "$d/pgdata/standby.signal"
        chown postgres:postgres "$d/pgdata/postgresql.auto.conf" "$d/pgdata/standby.signal"
        chmod 0600 "$d/pgdata/postgresql.auto.conf"
        touch "$d/pg.done"
    fi
    pg_start "$s"
}

wait_replication() { # SECONDS: both replicas streaming from DC1
    local t=$1 deadline=$((SECONDS + $1)) c
    while :; do
        c=$(psql_local dc1 postgres "SELECT count(*) FROM pg_stat_replication
            WHERE state = 'streaming' AND application_name IN ('dc2', 'dc3')" 2>/dev/null)
        [ "$c" = 2 ] && return 0
        [ $SECONDS -ge $deadline ] && { warn "replication not streaming after ${t}s"; return 1; }
        sleep 0.2
    done
}

# --- the other components --------------------------------------------------------------------

dns_start() {
    local d=$LAB_DIR/dns
    [ -n "$(pidfile_pid "$d/named.pid")" ] && return 0
    mkdir -p "$d"
    render "$TPL/named.conf.in" "$d/named.conf" DNS_DIR="$d"
    [ -f "$d/lab.test.db" ] || cp "$TPL/lab.test.zone" "$d/lab.test.db"
    cp "$SECRETS/tsig.key" "$d/tsig.key"
    chown -R bind:bind "$d"
    chmod 0750 "$d"
    chmod 0600 "$d/tsig.key"
    kspawn "$d/named.log" 0 shared 127.0.9.53 -- /usr/sbin/named -g -u bind -c "$d/named.conf" \
        >/dev/null || die "named did not start"
}

nginx_start() { # SITE
    local s=$1 d=$LAB_DIR/$1/nginx n
    n=$(num "$s")
    [ -n "$(pidfile_pid "$d/nginx.pid")" ] && return 0
    mkdir -p "$d/logs" "$d/tmp"
    render "$TPL/nginx.conf.in" "$d/nginx.conf" SITE="$s" NGINX_DIR="$d" SECRETS="$SECRETS" \
        INGRESS_ADDR="127.0.$n.10" SYNAPSE_ADDR="127.0.$n.20"
    kspawn "$d/logs/stderr.log" 0 "$s" "127.0.$n.10" -- /usr/sbin/nginx -p "$d/" -c "$d/nginx.conf" \
        -e "$d/logs/error.log" >/dev/null || die "nginx of $s did not start"
}

k8s_start() { # SITE
    local s=$1 d=$LAB_DIR/$1 n seed
    n=$(num "$s")
    [ -n "$(pidfile_pid "$d/k8s.pid")" ] && return 0
    case $s in dc1) seed=helm-active ;; dc2) seed=helm-idle ;; *) seed=empty ;; esac
    kspawn "$d/k8s.log" 0 "$s" "127.0.$n.30" -- "$PY" "$FIX/k8s_standin.py" \
        --listen "127.0.$n.30:6443" --cert "$SECRETS/k8s-$s.pem" --key "$SECRETS/k8s-$s.key" \
        --token-file "$SECRETS/k8s-$s.token" --state "$d/k8s-state.json" --seed "$seed" \
        --fault-file "$d/k8s-fault" --pidfile "$d/k8s.pid" >/dev/null || die "k8s stand-in of $s"
}

synapse_start() { # SITE
    local s=$1 d=$LAB_DIR/$1 n
    n=$(num "$s")
    [ -n "$(pidfile_pid "$d/synapse.pid")" ] && return 0
    kspawn "$d/synapse.log" 0 "$s" "127.0.$n.20" -- "$PY" "$FIX/synapse_standin.py" --site "$s" \
        --listen "127.0.$n.20:8008" --pg-host "127.0.$n.5" \
        --pg-password-file "$SECRETS/pg-synapse.pass" --k8s-url "https://127.0.$n.30:6443" \
        --k8s-token-file "$SECRETS/k8s-$s.token" --ca-file "$SECRETS/ca.pem" \
        --pidfile "$d/synapse.pid" >/dev/null || die "Synapse stand-in of $s"
}

bmc_start() { # SITE
    local s=$1 n
    n=$(num "$s")
    [ -n "$(pidfile_pid "$LAB_DIR/bmc-$s.pid")" ] && return 0
    kspawn "$LAB_DIR/bmc-$s.log" 0 "bmc-$s" "127.0.8.$n" -- "$PY" "$FIX/bmc_standin.py" \
        --site "$s" --listen "127.0.8.$n:8000" --cert "$SECRETS/bmc-$s.pem" \
        --key "$SECRETS/bmc-$s.key" --credentials-file "$SECRETS/bmc-$s" \
        --pgdata "$LAB_DIR/$s/pgdata" --power-file "$LAB_DIR/$s/bmc-power" \
        --on-cmd "$HERE/lab.sh pg start $s" --off-cmd "$HERE/lab.sh pg stop $s" \
        --fault-file "$LAB_DIR/$s/bmc-fault" --pidfile "$LAB_DIR/bmc-$s.pid" >/dev/null ||
        die "BMC stand-in of $s"
}

webhook_start() {
    [ -n "$(pidfile_pid "$LAB_DIR/webhook.pid")" ] && return 0
    kspawn "$LAB_DIR/webhook.log" 0 shared 127.0.9.80 -- "$PY" "$FIX/webhook_sink.py" \
        --listen 127.0.9.80:8080 --store "$LAB_DIR/webhooks.jsonl" \
        --fault-file "$LAB_DIR/webhook-fault" --pidfile "$LAB_DIR/webhook.pid" >/dev/null ||
        die "webhook sink"
}

site_services_start() { # SITE: everything of a site except PostgreSQL and its daemon
    nginx_start "$1"
    k8s_start "$1"
    synapse_start "$1"
}

site_ports() { # SITE
    local n
    n=$(num "$1")
    echo "127.0.$n.5:5432 127.0.$n.10:443 127.0.$n.20:8008 127.0.$n.30:6443"
}

configs_write() {
    local s
    for s in "${SITES[@]}"; do
        mkdir -p "$LAB_DIR/$s/state"
        chmod 0700 "$LAB_DIR/$s/state"
        render "$TPL/triad.yaml.in" "$LAB_DIR/$s/triad.yaml" SITE="$s" SITE_N="$(num "$s")" LAB_DIR="$LAB_DIR" \
            RUNBOOK_DIR="$REPO/runbooks" LAB_SH="$HERE/lab.sh" HERE="$HERE" LAB_NETNS="$LAB_NETNS"
    done
}

# --- triad daemons ---------------------------------------------------------------------------

daemon_running() { [ -n "$(pidfile_pid "$LAB_DIR/$1/triad.pid")" ]; }

# Starts the daemons of the given sites; returns 3 when `triad daemon` is
# not implemented yet (it exits 2 saying so), 1 on another failure.
daemons_start() { # SITE...
    local s n out pid rc=0 notyet=0
    [ -x "$TRIAD" ] || { say "no triad binary at $TRIAD (run make)"; return 3; }
    # An AddressSanitizer build (make asan builds build-asan/triad; TRIAD=...)
    # insists on its runtime coming first in LD_PRELOAD, before the bind shim.
    # The daemon's children (pg_controldata, pg_rewind...) inherit it: their
    # own leaks must not change their exit status (LSAN_OPTIONS exitcode=0;
    # reports still go where ASAN_OPTIONS log_path says).
    local asan
    asan=$(ldd "$TRIAD" 2>/dev/null | awk '/libasan/ {print $3; exit}')
    for s in "$@"; do
        daemon_running "$s" && continue
        n=$(num "$s")
        : >>"$LAB_DIR/$s/triad.log"
        local before
        before=$(wc -c <"$LAB_DIR/$s/triad.log")
        out=$(kspawn "$LAB_DIR/$s/triad.log" 1 "$s" "127.0.$n.1" -- env ${asan:+LD_PRELOAD="$asan $LAB_DIR/bindshim.so" LSAN_OPTIONS="exitcode=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"} \
            "$TRIAD" daemon -c "$LAB_DIR/$s/triad.yaml" ${LAB_DAEMON_ARGS:-})
        local st=$?
        pid=${out%% *}
        if [[ $out == *running ]]; then
            echo "$pid" >"$LAB_DIR/$s/triad.pid"
            say "triad daemon of $s started (pid $pid)"
            continue
        fi
        if tail -c +"$((before + 1))" "$LAB_DIR/$s/triad.log" | grep -qi "not implemented"; then
            notyet=1
        else
            warn "triad daemon of $s exited with status $st: $(tail -c +"$((before + 1))" \
                "$LAB_DIR/$s/triad.log" | tail -n 3 | tr '\n' ' ')"
            rc=1
        fi
    done
    if [ $notyet = 1 ]; then
        say "triad daemon is not built yet; daemons not started"
        return 3
    fi
    return $rc
}

daemons_stop() { # SITE...
    local s p
    for s in "$@"; do
        p=$(pidfile_pid "$LAB_DIR/$s/triad.pid") || { rm -f "$LAB_DIR/$s/triad.pid"; continue; }
        kill -TERM "$p" 2>/dev/null
        wait_gone 10 "$p" || kill -KILL "$p" 2>/dev/null
        wait_gone 2 "$p"
        rm -f "$LAB_DIR/$s/triad.pid"
        say "triad daemon of $s stopped"
    done
}

# --- commands -------------------------------------------------------------------------------------

cmd_up() {
    local t0=$SECONDS s pids=() p
    [ "$(id -u)" = 0 ] || die "the lab needs root (network namespace, nftables, users postgres/bind)"
    [ -x "$PGBIN/pg_ctl" ] || die "PostgreSQL 15 is not installed ($PGBIN); run make deps"
    # A fresh lab lives on its own tmpfs: the disk here is mounted with
    # `discard`, which makes removing PostgreSQL's files take seconds, and
    # fsync-heavy setup is faster in memory. A SIGKILL "power cut" loses
    # nothing either way (the page cache survives it).
    if [ ! -e "$LAB_DIR" ] || { [ -z "$(ls -A "$LAB_DIR")" ] && ! mountpoint -q "$LAB_DIR"; }; then
        mkdir -p "$LAB_DIR"
        if [ "${LAB_TMPFS:-1}" = 1 ]; then
            mount -t tmpfs -o size=4g,mode=0755 triad-lab "$LAB_DIR" ||
                warn "cannot mount a tmpfs on $LAB_DIR; using the disk"
        fi
    fi
    chmod 0755 "$LAB_DIR"
    touch "$LAB_DIR/.triad-lab"
    for s in "${SITES[@]}"; do mkdir -p "$LAB_DIR/$s"; done
    net_setup
    cc -O2 -shared -fPIC -Wall -Wextra -Werror -o "$LAB_DIR/bindshim.so.new" \
        "$FIX/bindshim/bindshim.c" -ldl && mv "$LAB_DIR/bindshim.so.new" "$LAB_DIR/bindshim.so" ||
        die "cannot build the bind shim"
    keeper_start
    secrets_setup
    configs_write
    # Independent services first, in the background of PostgreSQL's setup.
    dns_start
    webhook_start
    for s in "${SITES[@]}"; do
        # `up` means everything up: a killed site is revived, a powered-off
        # database host powered on.
        if [ -f "$LAB_DIR/$s/killed" ]; then
            say "$s was killed: reviving it"
            [ "$(mode)" = netns ] && drop_rules "isolate $s"
            rm -f "$LAB_DIR/$s/killed"
        fi
        echo On >"$LAB_DIR/$s/bmc-power"
        bmc_start "$s"
        k8s_start "$s"
    done
    pg_primary_setup
    for s in dc2 dc3; do
        pg_replica_setup "$s" &
        pids+=($!)
    done
    for s in "${SITES[@]}"; do
        nginx_start "$s"
        synapse_start "$s"
    done
    for p in "${pids[@]}"; do wait "$p" || die "a replica could not be set up"; done
    local want=(127.0.9.53:53 127.0.9.80:8080 127.0.8.1:8000 127.0.8.2:8000 127.0.8.3:8000)
    # shellcheck disable=SC2207 # addresses have no spaces
    for s in "${SITES[@]}"; do want+=($(site_ports "$s")); done
    wait_listening 30 "${want[@]}" || die "not everything is listening: $(for a in "${want[@]}"; do
        listening "$a" || printf '%s ' "$a"; done)"
    wait_replication 30 || true
    if [ -f "$LAB_DIR/daemons.off" ]; then
        say "daemons were stopped with 'lab.sh daemons stop'; not starting them"
    else
        daemons_start "${SITES[@]}"
        case $? in
        0) touch "$LAB_DIR/daemons.wanted" ;;
        3) ;; # said so already
        *) warn "some triad daemons did not start (see $LAB_DIR/dcN/triad.log)" ;;
        esac
    fi
    say "lab up in $((SECONDS - t0)) s ($(mode) mode, LAB_DIR=$LAB_DIR, namespace $LAB_NETNS)"
}

cmd_down() {
    local m pids k
    m=$(mode)
    if [ ! -e "$LAB_DIR" ] && ! netns_exists; then
        say "nothing to take down"
        return 0
    fi
    if [ -e "$LAB_DIR" ] && [ ! -e "$LAB_DIR/.triad-lab" ] && [ -n "$(ls -A "$LAB_DIR")" ]; then
        die "$LAB_DIR is not a lab directory (no .triad-lab marker); not touching it"
    fi
    [ "$m" = none ] && netns_exists && m=netns
    k=$(pidfile_pid "$LAB_DIR/keeper.pid")
    # Everything but the keeper, which reaps them.
    pids=$(MODE_OVERRIDE=$m lab_pids | grep -vx "${k:-none}")
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null
        # shellcheck disable=SC2086
        wait_gone 10 $pids || warn "some processes survived SIGKILL: $pids"
    fi
    if [ -n "$k" ]; then
        kill -TERM "$k" 2>/dev/null
        wait_gone 5 "$k" || kill -KILL "$k" 2>/dev/null
    fi
    if netns_exists; then
        # Late stragglers (a process started while we were killing).
        pids=$(ip netns pids "$LAB_NETNS" 2>/dev/null)
        # shellcheck disable=SC2086
        [ -n "$pids" ] && kill -KILL $pids 2>/dev/null && wait_gone 5 $pids
        ip netns del "$LAB_NETNS" || warn "could not delete namespace $LAB_NETNS"
    fi
    if [ -f "$LAB_DIR/host-addrs" ]; then
        while read -r a; do ip addr del "$a/32" dev lo 2>/dev/null; done <"$LAB_DIR/host-addrs"
    fi
    if mountpoint -q "$LAB_DIR"; then
        umount "$LAB_DIR" 2>/dev/null || umount -l "$LAB_DIR" || warn "cannot unmount $LAB_DIR"
    fi
    rm -rf "$LAB_DIR"
    say "lab down"
}

cmd_kill() { # SITE
    local s=$1 pids
    need_site "$s"
    if [ "$(mode)" = netns ]; then
        isolate "$s"
    else
        warn "plain-loopback mode: $s is killed but cannot be isolated"
    fi
    pids=$(lab_pids "$s")
    # shellcheck disable=SC2086
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
    touch "$LAB_DIR/$s/killed"
    # shellcheck disable=SC2086
    [ -z "$pids" ] || wait_gone 10 $pids || warn "some processes of $s survived SIGKILL"
    say "$s killed ($(echo $pids | wc -w) processes)$([ "$(mode)" = netns ] && echo " and isolated")"
}

cmd_revive() { # SITE
    local s=$1
    need_site "$s"
    [ "$(mode)" = netns ] && drop_rules "isolate $s"
    rm -f "$LAB_DIR/$s/killed"
    echo On >"$LAB_DIR/$s/bmc-power"
    pg_start "$s"
    site_services_start "$s"
    # shellcheck disable=SC2046 # addresses have no spaces
    wait_listening 20 $(site_ports "$s") || die "$s did not come back"
    if [ -f "$LAB_DIR/daemons.wanted" ]; then
        daemons_start "$s" || warn "triad daemon of $s did not start"
    fi
    say "$s revived (PostgreSQL as it was on disk: $(psql_local "$s" postgres \
        "SELECT CASE WHEN pg_is_in_recovery() THEN 'replica' ELSE 'primary' END"))"
}

cmd_daemons() { # start|stop|restart SITE|all
    local what=${1:-} which=${2:-} list=()
    # All: the primary last, so its peers answer while it confirms its lease
    # (a primary that hears no majority within lease_margin/2 fences itself).
    if [ "$which" = all ]; then list=(dc3 dc2 dc1); else need_site "$which" && list=("$which"); fi
    case $what in
    start)
        rm -f "$LAB_DIR/daemons.off"
        daemons_start "${list[@]}"
        case $? in
        0) touch "$LAB_DIR/daemons.wanted" ;;
        3) die "triad daemon is not built yet; daemons not started" ;;
        *) die "some daemons did not start" ;;
        esac
        ;;
    stop)
        daemons_stop "${list[@]}"
        [ "$which" = all ] && rm -f "$LAB_DIR/daemons.wanted" && touch "$LAB_DIR/daemons.off"
        ;;
    restart)
        daemons_stop "${list[@]}"
        daemons_start "${list[@]}"
        case $? in
        0) touch "$LAB_DIR/daemons.wanted" ;;
        3) die "triad daemon is not built yet; daemons not started" ;;
        *) die "some daemons did not start" ;;
        esac
        ;;
    *) die "usage: lab.sh daemons start|stop|restart SITE|all" ;;
    esac
}

cmd_writer() { # start [opts] | stop | check [opts] | stats [opts]
    local what=${1:-} p
    shift || true
    case $what in
    start)
        if p=$(pidfile_pid "$LAB_DIR/writer.pid"); then
            say "writer already running (pid $p)"
            return 0
        fi
        kspawn "$LAB_DIR/writer.log" 0 shared 127.0.9.100 -- "$PY" "$FIX/writer.py" run \
            --log "$LAB_DIR/writer.jsonl" --pidfile "$LAB_DIR/writer.pid" "$@" >/dev/null ||
            die "writer did not start"
        for p in $(seq 30); do
            [ -s "$LAB_DIR/writer.pid" ] && break
            sleep 0.1
        done
        say "writer started (log $LAB_DIR/writer.jsonl)"
        ;;
    stop)
        p=$(pidfile_pid "$LAB_DIR/writer.pid") || { say "writer not running"; return 0; }
        kill -TERM "$p"
        wait_gone 10 "$p" || kill -KILL "$p"
        say "writer stopped"
        ;;
    check | stats)
        # Unbound and without the shim: the audit sees through partitions.
        nsx env LAB_DIR="$LAB_DIR" "$PY" "$FIX/writer.py" "$what" --log "$LAB_DIR/writer.jsonl" "$@"
        ;;
    *) die "usage: lab.sh writer start|stop|check|stats" ;;
    esac
}

cmd_status() {
    if [ ! -d "$LAB_DIR" ]; then
        if [ "${1:-}" = --json ]; then echo '{"up": false}'; else say "no lab at $LAB_DIR"; fi
        return 0
    fi
    nsx env LAB_DIR="$LAB_DIR" "$PY" "$HERE/lab_status.py" --mode "$(mode)" --netns "$LAB_NETNS" "$@"
}

main() {
    local cmd=${1:-}
    shift || true
    case $cmd in
    kill | revive | isolate | partition | heal | daemons | writer | pg)
        [ -e "$LAB_DIR/.triad-lab" ] || die "no lab at $LAB_DIR (run lab.sh up)"
        ;;
    esac
    case $cmd in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status "$@" ;;
    kill) cmd_kill "${1:-}" ;;
    revive) cmd_revive "${1:-}" ;;
    isolate)
        need_site "${1:-}"
        isolate "$1"
        say "$1 isolated from the other sites and the shared services (BMC network kept)"
        ;;
    partition)
        [ $# -eq 2 ] && [ "$1" != "$2" ] || die "usage: lab.sh partition A B"
        need_partitions
        net_of "$1" >/dev/null && net_of "$2" >/dev/null
        nft_rules | grep -qF "comment \"partition $1 $2\"" || cut_pair "$1" "$2" "partition $1 $2"
        say "$1 and $2 partitioned"
        ;;
    heal)
        if [ "$(mode)" = netns ]; then
            nsx nft flush chain inet triad_lab output
            say "all partitions removed"
        else
            warn "partitions are disabled in plain-loopback mode; nothing to heal"
        fi
        ;;
    daemons) cmd_daemons "$@" ;;
    sql)
        need_site "${1:-}"
        [ $# -ge 3 ] || die "usage: lab.sh sql SITE DB SQL"
        psql_local "$1" "$2" "$3"
        ;;
    writer) cmd_writer "$@" ;;
    pg)
        need_site "${2:-}"
        case ${1:-} in
        start) pg_start "$2" ;;
        stop) pg_stop "$2" ;;
        *) die "usage: lab.sh pg start|stop SITE" ;;
        esac
        ;;
    -h | --help | help | "") awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" ;;
    *) die "unknown command '$cmd' (lab.sh --help)" ;;
    esac
}

main "$@"
