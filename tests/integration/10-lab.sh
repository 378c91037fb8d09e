#!/bin/bash
# 10-lab.sh: the lab's acceptance checks (issue 3) against a real lab.
#
# Brings up its own lab (LAB_DIR=/tmp/triad-lab-it, namespace triad-lab-it,
# so a developer's lab is never touched), checks every component, DNS with
# TSIG, the ingress, the stand-ins, the writer and its audit, partitions
# (including that replication really stops), kill/revive, and that `down`
# leaves nothing behind, also after an interrupted `up`. TAP output.
set -u
cd "$(dirname "$0")/../.." || exit 1
REPO=$PWD

if [ "$(id -u)" != 0 ]; then
    echo "ok 1 # SKIP needs root"
    exit 0
fi

export LAB_DIR=/tmp/triad-lab-it LAB_NETNS=triad-lab-it
LAB=$REPO/examples/lab/lab.sh
S=$LAB_DIR/secrets
PGBIN=/usr/lib/postgresql/15/bin
LOG=${BUILD:-build}/test-logs/10-lab.detail.log
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
    fi
}
check() { # DESCRIPTION CMD...: ok when CMD succeeds
    local d=$1
    shift
    echo "### $d: $*" >>"$LOG"
    "$@" >>"$LOG" 2>&1
    ok $? "$d"
}
refute() { # DESCRIPTION CMD...: ok when CMD fails
    local d=$1
    shift
    echo "### $d (must fail): $*" >>"$LOG"
    if "$@" >>"$LOG" 2>&1; then ok 1 "$d"; else ok 0 "$d"; fi
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
nsx() { ip netns exec "$LAB_NETNS" "$@"; }

# HTTP(S) from a given source address: 0 when any HTTP answer came back.
reach() { # FROM URL
    nsx curl -s -k -o /dev/null --connect-timeout 1 -m 2 --interface "$1" "$2"
}
http_code() { # FROM URL [curl args]
    local from=$1 url=$2
    shift 2
    nsx curl -s -o /dev/null -w '%{http_code}' --connect-timeout 1 -m 3 --interface "$from" "$@" "$url"
}
k8s() { # SITE METHOD PATH [curl args]: the body
    local s=$1 m=$2 p=$3
    shift 3
    nsx curl -s -m 3 --cacert "$S/ca.pem" -H "Authorization: Bearer $(cat "$S/k8s-$s.token")" \
        -X "$m" "$@" "https://127.0.${s#dc}.30:6443$p"
}
bmc() { # SITE METHOD PATH [curl args]
    local s=$1 m=$2 p=$3
    shift 3
    nsx curl -s -m 3 --cacert "$S/ca.pem" -u "$(cat "$S/bmc-$s")" -X "$m" "$@" \
        "https://127.0.8.${s#dc}:8000$p"
}
psql_site() { # SITE SQL
    runuser -u postgres -- "$PGBIN/psql" -h "$LAB_DIR/$1/pgsock" -p 5432 -d postgres -XAtq -c "$2"
}
receiver() { # SITE: the wal receiver's status ('none' when there is none)
    psql_site "$1" "SELECT coalesce((SELECT status FROM pg_stat_wal_receiver), 'none')" 2>/dev/null ||
        echo down
}
streaming() { [ "$(receiver "$1")" = streaming ]; }
not_streaming() { [ "$(receiver "$1")" != streaming ]; }
senders() { psql_site dc1 "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"; }
status_json() { "$LAB" status --json; }
jqs() { status_json | jq -e "$1" >/dev/null; }
dig_a() { nsx dig +short +time=1 +tries=1 "$@"; }
nsupdate_key() { nsx nsupdate -k "$S/tsig.key" -t 3; }

leftovers() { # prints what a lab left behind; empty when nothing
    ip netns list 2>/dev/null | grep -qw "^$LAB_NETNS" && echo "namespace $LAB_NETNS"
    [ -e "$LAB_DIR" ] && echo "directory $LAB_DIR"
    grep -lzxF "LAB_INSTANCE=$LAB_DIR" /proc/[0-9]*/environ 2>/dev/null | sed 's/^/process env /'
    ps -e -o stat=,pid=,args= | awk -v d="$LAB_DIR/" '$1 !~ /^Z/ && index($0, d) { print "process " $0 }' |
        grep -v awk
    grep -E "$LAB_NETNS|$LAB_DIR" /proc/mounts | sed 's/^/mount /'
    nft list tables 2>/dev/null | grep -q triad_lab && echo "host nft table triad_lab"
    return 0
}
no_leftovers() {
    local l
    l=$(leftovers)
    [ -z "$l" ] && return 0
    echo "$l" | sed 's/^/# left: /'
    return 1
}

PLAIN_DIR=/tmp/triad-lab-it-plain
cleanup() {
    "$LAB" down >>"$LOG" 2>&1
    LAB_DIR=$PLAIN_DIR LAB_NETNS=triad-lab-it-plain "$LAB" down >>"$LOG" 2>&1
}
trap cleanup EXIT
trap 'exit 1' INT TERM

"$LAB" down >>"$LOG" 2>&1 # a previous run may have been killed

# --- an interrupted up, then down --------------------------------------------------------
setsid "$LAB" up >>"$LOG" 2>&1 &
upid=$!
sleep 2.5
kill -TERM -- "-$upid" 2>/dev/null
wait "$upid" 2>/dev/null
check "down after an interrupted up" "$LAB" down
check "nothing left after an interrupted up and down" no_leftovers

# --- up -----------------------------------------------------------------------------------
t=$SECONDS
start_ns=$(date +%s%N)
"$LAB" up >>"$LOG" 2>&1
rc=$?
up_ms=$((($(date +%s%N) - start_ns) / 1000000))
ok $rc "lab up succeeds"
diag "lab up took $up_ms ms"
[ $rc = 0 ] || {
    tail -n 20 "$LOG" | sed 's/^/# /'
    echo "1..$n"
    exit 1
}
ok $((up_ms < 60000 ? 0 : 1)) "lab up in under 60 s ($up_ms ms)"
check "up starts the three triad daemons" \
    bash -c "grep -q 'triad daemon of dc1 started' '$LOG' && grep -q 'triad daemon of dc3 started' '$LOG'"
# What follows tests the lab's own mechanics (partitions, kill, revive): the
# daemons would act on them (a cut-off DC1 fences itself), so they are off
# until the daemons section.
check "daemons stop all" "$LAB" daemons stop all

pm=$(head -n 1 "$LAB_DIR/dc1/pgdata/postmaster.pid")
check "a second up on a running lab succeeds" "$LAB" up
check "... and leaves PostgreSQL running as it was" test "$pm" = "$(head -n 1 "$LAB_DIR/dc1/pgdata/postmaster.pid")"

for s in dc1 dc2 dc3; do
    check "$s: postgres, nginx, synapse, k8s and BMC stand-ins up" jqs \
        ".sites.$s | .postgres.up and .nginx.up and .synapse.up and .k8s.up and .bmc.up"
done
check "shared: DNS, webhook sink and keeper up" jqs '.shared.dns.up and .shared.webhook.up and .keeper'
check "DC1 primary, DC2 and DC3 replicas" jqs \
    '.sites.dc1.postgres.role == "primary" and .sites.dc2.postgres.role == "replica" and .sites.dc3.postgres.role == "replica"'
check "pg_stat_replication: dc2 and dc3 streaming, in quorum/sync" jqs \
    '[.sites.dc1.postgres.replication[] | select(.state == "streaming" and (.sync_state == "quorum" or .sync_state == "sync")) | .name] == ["dc2", "dc3"]'
check "walreceivers connect from their own site's address (bind shim)" jqs \
    '[.sites.dc1.postgres.replication[] | .client] == ["127.0.2.5/32", "127.0.3.5/32"]'
check "status (text) shows the replication state" bash -c "'$LAB' status | grep -q 'dc1 -> dc2: streaming, quorum'"

# --- configs, secrets, certificates ----------------------------------------------------------
check_configs() {
    /usr/bin/python3 - "$LAB_DIR" <<'EOF'
import os, sys, yaml
lab = sys.argv[1]
for s in ("dc1", "dc2", "dc3"):
    c = yaml.safe_load(open(os.path.join(lab, s, "triad.yaml")))
    assert c["site"] == s and c["cluster"] == "lab", s
    assert c["api"]["socket"] == os.path.join(lab, s, "triad.sock")
    assert c["tls"]["cert_file"].endswith("/%s.pem" % s)
    assert set(c["sites"]) == {"dc1", "dc2", "dc3"}
    assert "kubernetes" not in c["sites"]["dc3"]
    files = [c["tls"]["ca_file"], c["tls"]["cert_file"], c["tls"]["key_file"],
             c["postgres"]["password_file"], c["postgres"]["replication"]["password_file"],
             c["dns"]["tsig_key_file"]]
    files += [v["kubernetes"]["token_file"] for v in c["sites"].values() if "kubernetes" in v]
    files += [f["credentials_file"] for f in c["fencing"] if "credentials_file" in f]
    for f in files:
        assert os.path.isfile(f), f
    assert c["failover"]["target"] == "dc2"
    assert [o.get("unix_user") for o in c["operators"]] == ["root", "nobody", None]
    assert [o.get("cert_cn") for o in c["operators"]] == [None, None, "alice"]
    assert c["api"]["https"]["listen"] == "127.0.%s.1:7443" % s[2:]
    assert os.path.isfile(c["api"]["https"]["client_ca_file"])
print("configs ok")
EOF
}
check "triad.yaml for dc1..dc3 parse and reference existing files" check_configs
if out=$(./triad check-config -c "$LAB_DIR/dc1/triad.yaml" 2>&1) || ! grep -qi "not implemented" <<<"$out"; then
    for s in dc1 dc2 dc3; do
        check "triad check-config accepts $s/triad.yaml" ./triad check-config -c "$LAB_DIR/$s/triad.yaml"
    done
else
    diag "triad check-config is not implemented yet: configs checked structurally only"
fi
keys_private() {
    local f bad=0
    for f in "$S"/*.key "$S"/*.pass "$S"/*.token "$S"/bmc-dc? "$S/tsig.key" "$S"/rogue/*.key "$S"/operators/*.key; do
        [ "$(stat -c %a "$f")" = 600 ] || { echo "$f is $(stat -c %a "$f")"; bad=1; }
    done
    return $bad
}
check "private keys, passwords and tokens are mode 0600" keys_private
check "dc1 certificate verifies against the lab CA" openssl verify -CAfile "$S/ca.pem" "$S/dc1.pem"
check "the operator certificate (alice) verifies against the operators CA, not the lab CA" bash -c \
    "openssl verify -CAfile '$S/operators/ca.pem' '$S/operators/alice.pem' >/dev/null &&
     ! openssl verify -CAfile '$S/ca.pem' '$S/operators/alice.pem' >/dev/null 2>&1"
check "dc1 certificate names DNS:dc1" bash -c "openssl x509 -in '$S/dc1.pem' -noout -ext subjectAltName | grep -q 'DNS:dc1'"
check "k8s and BMC certificates carry their IP SANs" bash -c \
    "openssl x509 -in '$S/k8s-dc2.pem' -noout -ext subjectAltName | grep -q 'IP Address:127.0.2.30' &&
     openssl x509 -in '$S/bmc-dc1.pem' -noout -ext subjectAltName | grep -q 'IP Address:127.0.8.1'"
refute "the rogue dc2 certificate does not verify against the lab CA" \
    openssl verify -CAfile "$S/ca.pem" "$S/rogue/dc2.pem"

# --- DNS ------------------------------------------------------------------------------------
check "dig matrix.lab.test answers DC1's ingress" test "$(dig_a @127.0.9.53 matrix.lab.test)" = 127.0.1.10
check "matrix.lab.test has TTL 5" bash -c "ip netns exec $LAB_NETNS dig +noall +answer @127.0.9.53 matrix.lab.test | awk '{print \$2}' | grep -qx 5"
check "fence record _triad.matrix.lab.test is epoch=0" test "$(dig_a @127.0.9.53 _triad.matrix.lab.test TXT)" = '"epoch=0"'
check "nsupdate with the TSIG key adds a record" nsupdate_key <<'EOF'
server 127.0.9.53 53
zone lab.test
update add probe.lab.test 5 A 127.0.2.10
send
EOF
check "... and the record is served" test "$(dig_a @127.0.9.53 probe.lab.test)" = 127.0.2.10
out=$(printf 'server 127.0.9.53 53\nzone lab.test\nupdate add probe2.lab.test 5 A 127.0.3.10\nsend\n' |
    nsx nsupdate -t 3 2>&1)
echo "$out" >>"$LOG"
check "nsupdate without the key is REFUSED" grep -q REFUSED <<<"$out"
check "... and changes nothing" test -z "$(dig_a @127.0.9.53 probe2.lab.test)"
out=$(printf '%s\n' "server 127.0.9.53 53" "zone lab.test" \
    'prereq yxrrset _triad.matrix.lab.test TXT "epoch=7"' \
    "update delete _triad.matrix.lab.test TXT" 'update add _triad.matrix.lab.test 5 TXT "epoch=8"' \
    send | nsupdate_key 2>&1)
echo "$out" >>"$LOG"
check "TXT compare-and-swap with a wrong epoch fails (NXRRSET)" grep -q NXRRSET <<<"$out"
check "compare-and-swap with the right epoch succeeds" nsupdate_key <<'EOF'
server 127.0.9.53 53
zone lab.test
prereq yxrrset _triad.matrix.lab.test TXT "epoch=0"
update delete _triad.matrix.lab.test TXT
update add _triad.matrix.lab.test 5 TXT "epoch=1"
send
EOF
check "... and the fence record is now epoch=1" test "$(dig_a @127.0.9.53 _triad.matrix.lab.test TXT)" = '"epoch=1"'

# --- ingress and Synapse ------------------------------------------------------------------------
check "curl through DC1's ingress by name returns OK (lab CA)" test "$(nsx curl -s -m 3 --cacert "$S/ca.pem" \
    --resolve matrix.lab.test:443:127.0.1.10 https://matrix.lab.test/health)" = OK
check "GET /_matrix/client/versions has the real shape" bash -c "ip netns exec $LAB_NETNS curl -s -m 3 \
    --cacert '$S/ca.pem' --resolve matrix.lab.test:443:127.0.1.10 https://matrix.lab.test/_matrix/client/versions |
    jq -e '(.versions | index(\"v1.11\")) and (.unstable_features | type == \"object\")'"
refute "the ingress certificate does not verify with the rogue CA" nsx curl -s -m 3 --cacert "$S/rogue/ca.pem" \
    --resolve matrix.lab.test:443:127.0.1.10 https://matrix.lab.test/health
check "DC2's Synapse is 503 while ess-synapse-main is at 0" test "$(http_code 127.0.2.1 http://127.0.2.20:8008/health)" = 503
check "DC2's ingress passes the 503 on" test "$(http_code 127.0.9.100 https://matrix.lab.test/health \
    --cacert "$S/ca.pem" --resolve matrix.lab.test:443:127.0.2.10)" = 503
k8s dc2 PATCH /apis/apps/v1/namespaces/ess/statefulsets/ess-synapse-main/scale \
    -H 'Content-Type: application/merge-patch+json' -d '{"spec":{"replicas":1}}' >>"$LOG"
dc2_ok() { [ "$(http_code 127.0.2.1 http://127.0.2.20:8008/health)" = 200 ]; }
t=$SECONDS
check "after scaling DC2's ess-synapse-main to 1, its Synapse answers 200" wait_for 10 dc2_ok
diag "DC2 Synapse served $((SECONDS - t)) s after the scale"
write_at() { # SITE ID: POST /write through that site's ingress, prints the body
    nsx curl -s -m 8 --cacert "$S/ca.pem" --resolve "matrix.lab.test:443:127.0.${1#dc}.10" \
        -H 'Content-Type: application/json' -d "{\"id\": $2}" https://matrix.lab.test/write
}
out=$(write_at dc2 999990)
echo "$out" >>"$LOG"
check "a write on DC2 (serving, but a replica) is refused as read-only" \
    jq -e '.reason == "read_only" and .site == "dc2"' <<<"$out"
k8s dc2 PATCH /apis/apps/v1/namespaces/ess/statefulsets/ess-synapse-main/scale \
    -H 'Content-Type: application/merge-patch+json' -d '{"spec":{"replicas":0}}' >>"$LOG"
dc2_503() { [ "$(http_code 127.0.2.1 http://127.0.2.20:8008/health)" = 503 ]; }
check "... and 503 again after scaling back to 0" wait_for 10 dc2_503
wr=$(nsx curl -s -m 5 --cacert "$S/ca.pem" --resolve matrix.lab.test:443:127.0.1.10 \
    -H 'Content-Type: application/json' -d '{"id": 999999}' https://matrix.lab.test/write)
echo "$wr" >>"$LOG"
check "POST /write on DC1 commits and acknowledges with site and txid" \
    jq -e '.id == 999999 and .site == "dc1" and (.txid | length > 0) and .timeline == 1' <<<"$wr"
check "... and the row is on a replica too (synchronous replication)" wait_for 5 bash -c \
    "runuser -u postgres -- $PGBIN/psql -h $LAB_DIR/dc2/pgsock -d synapse -XAtc 'SELECT count(*) FROM writes WHERE id = 999999' | grep -qx 1 ||
     runuser -u postgres -- $PGBIN/psql -h $LAB_DIR/dc3/pgsock -d synapse -XAtc 'SELECT count(*) FROM writes WHERE id = 999999' | grep -qx 1"

# --- the triad role's rights ------------------------------------------------------------------------
as_triad() { # SITE DB SQL...: each SQL its own statement (ALTER SYSTEM needs that)
    local site=$1 db=$2 q args=()
    shift 2
    for q in "$@"; do args+=(-c "$q"); done
    nsx env PGPASSWORD="$(cat "$S/pg-triad.pass")" "$PGBIN/psql" -h "127.0.${site#dc}.5" -U triad \
        -d "$db" -XAtq -v ON_ERROR_STOP=1 "${args[@]}"
}
check "triad: reads pg_stat_replication in full (pg_monitor)" test "$(as_triad dc1 synapse \
    "SELECT count(*) FROM pg_stat_replication WHERE sent_lsn IS NOT NULL AND sync_state = 'quorum'")" = 2
triad_funcs() {
    local db
    for db in postgres synapse mas; do
        as_triad dc1 "$db" "SELECT
            has_function_privilege('pg_promote(boolean,integer)', 'EXECUTE')
            AND has_function_privilege('pg_reload_conf()', 'EXECUTE')
            AND has_function_privilege('pg_ls_dir(text,boolean,boolean)', 'EXECUTE')
            AND has_function_privilege('pg_stat_file(text,boolean)', 'EXECUTE')
            AND has_function_privilege('pg_read_binary_file(text)', 'EXECUTE')
            AND has_function_privilege('pg_read_binary_file(text,bigint,bigint,boolean)', 'EXECUTE')
            AND pg_has_role('pg_signal_backend', 'MEMBER')" | grep -qx t || return 1
    done
}
check "triad: may promote, reload, signal, and run pg_rewind's functions (postgres, synapse, mas)" triad_funcs
check "triad: CHECKPOINT works (pg_checkpoint)" as_triad dc1 postgres "CHECKPOINT"
check "triad: owns schema triad in synapse and mas" test "$(as_triad dc1 synapse \
    "SELECT nspowner::regrole FROM pg_namespace WHERE nspname = 'triad'")$(as_triad dc1 mas \
    "SELECT nspowner::regrole FROM pg_namespace WHERE nspname = 'triad'")" = triadtriad
check "triad: is not a superuser and cannot write Synapse's table" test "$(as_triad dc1 synapse \
    "SELECT rolsuper::text || has_table_privilege('public.writes', 'INSERT')::text FROM pg_roles WHERE rolname = current_user")" = falsefalse
check "triad: the read-only fence (ALTER SYSTEM + reload)" as_triad dc1 postgres \
    "ALTER SYSTEM SET default_transaction_read_only = on" "SELECT pg_reload_conf()"
sleep 0.5
out=$(write_at dc1 999991)
echo "$out" >>"$LOG"
check "... makes DC1's Synapse refuse writes (503 read_only)" jq -e '.reason == "read_only"' <<<"$out"
check "triad: lifting the fence" as_triad dc1 postgres \
    "ALTER SYSTEM RESET default_transaction_read_only" "SELECT pg_reload_conf()"
sleep 0.5
out=$(write_at dc1 999992)
echo "$out" >>"$LOG"
check "... and writes are acknowledged again" jq -e '.id == 999992 and .site == "dc1"' <<<"$out"
rewrite_conninfo() { # as triad on a replica: write back its own primary_conninfo and slot
    nsx env PGPASSWORD="$(cat "$S/pg-triad.pass")" "$PGBIN/psql" -h 127.0.3.5 -U triad -d postgres \
        -XAtq -v ON_ERROR_STOP=1 <<'EOF'
SELECT format('ALTER SYSTEM SET primary_conninfo = %L', current_setting('primary_conninfo'))
UNION ALL SELECT format('ALTER SYSTEM SET primary_slot_name = %L', current_setting('primary_slot_name'))
\gexec
EOF
}
check "triad: ALTER SYSTEM on primary_conninfo and primary_slot_name (on DC3)" rewrite_conninfo
refute "triad: ALTER SYSTEM on another parameter is refused" as_triad dc1 postgres \
    "ALTER SYSTEM SET work_mem = '8MB'"

# --- Kubernetes stand-in ----------------------------------------------------------------------------
out=$(nsx curl -s -m 3 --cacert "$S/ca.pem" https://127.0.2.30:6443/apis/apps/v1/namespaces/ess/deployments)
check "k8s: no token -> 401 Status" jq -e '.kind == "Status" and .code == 401' <<<"$out"
out=$(nsx curl -s -m 3 --cacert "$S/ca.pem" -H "Authorization: Bearer $(cat "$S/k8s-dc1.token")" \
    https://127.0.2.30:6443/apis/apps/v1/namespaces/ess/deployments)
check "k8s: another site's token -> 401" jq -e '.code == 401 and .reason == "Unauthorized"' <<<"$out"
helm_seeded() {
    k8s dc1 GET /apis/apps/v1/namespaces/ess/statefulsets/ess-synapse-main | jq -e '.kind == "StatefulSet"
        and .spec.replicas == 1 and .status.readyReplicas == 1
        and .metadata.labels["app.kubernetes.io/component"] == "matrix-server"'
}
check "k8s: DC1 seeded with the Helm shape running" helm_seeded
mas_only() {
    k8s dc1 GET '/apis/apps/v1/namespaces/ess/deployments?labelSelector=app.kubernetes.io/component%3Dmatrix-authentication' |
        jq -e '.kind == "DeploymentList" and ([.items[].metadata.name] == ["ess-matrix-authentication-service"])'
}
check "k8s: label selector picks only the MAS deployment" mas_only
set_selector() {
    k8s dc1 GET '/apis/apps/v1/namespaces/ess/deployments?labelSelector=app.kubernetes.io/component+in+(matrix-authentication,matrix-stack-ingress),app.kubernetes.io/name!%3Dhaproxy' |
        jq -e '[.items[].metadata.name] == ["ess-matrix-authentication-service"]'
}
check "k8s: set-based selector and != work" set_selector
classic_seeded() {
    k8s dc1 GET /apis/apps/v1/namespaces/operator-onprem/deployments/element-operator-controller-manager |
        jq -e '.spec.replicas == 1' &&
        k8s dc2 GET /apis/apps/v1/namespaces/operator-onprem/deployments/element-operator-controller-manager |
        jq -e '.spec.replicas == 0'
}
check "k8s: classic shape seeded (operator-onprem, 1 in DC1, 0 in DC2)" classic_seeded
dc3_empty() {
    k8s dc3 GET /api/v1/namespaces/ess | jq -e '.kind == "Namespace"' &&
        k8s dc3 GET /apis/apps/v1/namespaces/ess/deployments | jq -e '.items == []'
}
check "k8s: DC3 has an empty ess namespace" dc3_empty
out=$(k8s dc2 GET /apis/apps/v1/namespaces/ess/deployments/ess-haproxy/scale)
check "k8s: GET scale is an autoscaling/v1 Scale" jq -e '.kind == "Scale" and .apiVersion == "autoscaling/v1" and (.status.selector | length > 0)' <<<"$out"
out=$(k8s dc2 PATCH /apis/apps/v1/namespaces/ess/deployments/ess-haproxy/scale \
    -H 'Content-Type: application/merge-patch+json' -d '{"spec":{"replicas":2}}')
check "k8s: PATCH scale sets spec.replicas" jq -e '.kind == "Scale" and .spec.replicas == 2' <<<"$out"
hap_ready() {
    k8s dc2 GET /apis/apps/v1/namespaces/ess/deployments/ess-haproxy | jq -e '.status.readyReplicas == 2'
}
check "k8s: readyReplicas follows spec.replicas after the delay" wait_for 5 hap_ready
out=$(k8s dc2 PATCH /apis/apps/v1/namespaces/ess/deployments/ess-haproxy \
    -H 'Content-Type: application/merge-patch+json' -d '{"metadata":{"annotations":{"triad.io/epoch":"1"}}}')
check "k8s: PATCH of metadata.annotations" jq -e '.metadata.annotations["triad.io/epoch"] == "1"' <<<"$out"
out=$(k8s dc2 PATCH /apis/apps/v1/namespaces/ess/deployments/ess-haproxy \
    -H 'Content-Type: application/merge-patch+json' -d '{"metadata":{"resourceVersion":"1"},"spec":{"replicas":0}}')
check "k8s: stale resourceVersion -> 409 Conflict Status" jq -e '.kind == "Status" and .code == 409 and .reason == "Conflict"' <<<"$out"
out=$(k8s dc2 GET /apis/apps/v1/namespaces/ess/deployments/nope)
check "k8s: missing object -> 404 NotFound Status" jq -e '.code == 404 and .reason == "NotFound"' <<<"$out"
echo 500 >"$LAB_DIR/dc2/k8s-fault"
out=$(k8s dc2 GET /apis/apps/v1/namespaces/ess/deployments)
rm -f "$LAB_DIR/dc2/k8s-fault"
check "k8s: the fault file injects a 500" jq -e '.code == 500' <<<"$out"

# --- BMC -------------------------------------------------------------------------------------------
check "BMC: 401 without credentials" test "$(http_code 127.0.2.1 https://127.0.8.1:8000/redfish/v1/Systems/1 \
    --cacert "$S/ca.pem")" = 401
power_is() { # SITE STATE
    bmc "$1" GET /redfish/v1/Systems/1 | jq -e --arg s "$2" '."@odata.id" == "/redfish/v1/Systems/1"
        and .PowerState == $s and (.Actions["#ComputerSystem.Reset"].target | length > 0)'
}
check "BMC: Systems/1 is On, in the Redfish shape" power_is dc1 On
pm=$(head -n 1 "$LAB_DIR/dc1/pgdata/postmaster.pid")
code=$(bmc dc1 POST /redfish/v1/Systems/1/Actions/ComputerSystem.Reset -o /dev/null -w '%{http_code}' \
    -H 'Content-Type: application/json' -d '{"ResetType":"ForceOff"}')
check "BMC: ForceOff -> 204" test "$code" = 204
pm_dead() { ! kill -0 "$pm" 2>/dev/null || grep -q '^State:.Z' "/proc/$pm/status"; }
check "BMC: ForceOff killed DC1's postmaster" wait_for 3 pm_dead
refute "BMC: ... and DC1's PostgreSQL does not answer" nsx "$PGBIN/pg_isready" -h 127.0.1.5 -t 1
out=$(write_at dc1 999993)
echo "$out" >>"$LOG"
check "... and DC1's Synapse refuses writes (503 unavailable)" jq -e '.reason == "unavailable"' <<<"$out"
check "BMC: PowerState is Off" power_is dc1 Off
code=$(bmc dc1 POST /redfish/v1/Systems/1/Actions/ComputerSystem.Reset -o /dev/null -w '%{http_code}' \
    -H 'Content-Type: application/json' -d '{"ResetType":"On"}')
check "BMC: On -> 204" test "$code" = 204
check "BMC: On restarted DC1's PostgreSQL" wait_for 30 nsx "$PGBIN/pg_isready" -h 127.0.1.5 -t 1
check "... as the primary it was" test "$(psql_site dc1 'SELECT pg_is_in_recovery()')" = f
two_senders() { [ "$(senders)" = 2 ]; }
check "... and both replicas stream from it again" wait_for 20 two_senders
echo lie >"$LAB_DIR/dc3/bmc-fault"
code=$(bmc dc3 POST /redfish/v1/Systems/1/Actions/ComputerSystem.Reset -o /dev/null -w '%{http_code}' \
    -H 'Content-Type: application/json' -d '{"ResetType":"ForceOff"}')
lied() { [ "$code" = 204 ] && power_is dc3 On && nsx "$PGBIN/pg_isready" -h 127.0.3.5 -t 1; }
check "BMC fault 'lie': ForceOff accepted, PowerState still On, PostgreSQL untouched" lied
rm -f "$LAB_DIR/dc3/bmc-fault"

# --- webhook sink ------------------------------------------------------------------------------------
code=$(http_code 127.0.2.1 http://127.0.9.80:8080/hook -H 'Content-Type: application/json' \
    -d '{"event":"odown","site":"dc1","test":"10-lab"}')
check "webhook sink accepts a POST" test "$code" = 200
check "webhook sink returns it from GET /hooks" bash -c "ip netns exec $LAB_NETNS curl -s -m 3 http://127.0.9.80:8080/hooks |
    jq -e '.[-1].payload == {\"event\":\"odown\",\"site\":\"dc1\",\"test\":\"10-lab\"} and .[-1].path == \"/hook\"'"
check "... and stores it in webhooks.jsonl" grep -q '"test":"10-lab"' "$LAB_DIR/webhooks.jsonl"

# --- writer -------------------------------------------------------------------------------------------
acks() { grep -c '"ev":"ack"' "$LAB_DIR/writer.jsonl" 2>/dev/null || echo 0; }
check "writer starts" "$LAB" writer start
some_acks() { [ "$(acks)" -ge 20 ]; }
check "writer gets acknowledgements through DNS and DC1's ingress" wait_for 10 some_acks
check "writer acks come from dc1 via 127.0.1.10" bash -c "grep '\"ev\":\"ack\"' '$LAB_DIR/writer.jsonl' | tail -n 1 |
    jq -e '.site == \"dc1\" and .addr == \"127.0.1.10\"'"
check "point matrix.lab.test at DC2 with nsupdate" nsupdate_key <<'EOF'
server 127.0.9.53 53
zone lab.test
update delete matrix.lab.test A
update add matrix.lab.test 5 A 127.0.2.10
send
EOF
t=$SECONDS
to_dc2() { tail -n 4 "$LAB_DIR/writer.jsonl" | grep -q '"addr":"127.0.2.10"'; }
check "the writer follows the DNS change within the TTL" wait_for 8 to_dc2
diag "writer followed DNS after $((SECONDS - t)) s (TTL 5 s)"
check "... and DC2 (scaled to 0, a replica) acknowledges nothing" bash -c \
    "! grep '\"ev\":\"ack\"' '$LAB_DIR/writer.jsonl' | grep -q '\"site\":\"dc2\"'"
nsupdate_key >>"$LOG" 2>&1 <<'EOF'
server 127.0.9.53 53
zone lab.test
update delete matrix.lab.test A
update add matrix.lab.test 5 A 127.0.1.10
send
EOF
n0=$(acks)
more_acks() { [ "$(acks)" -ge $((n0 + 10)) ]; }
check "writes are acknowledged again once the name points back at DC1" wait_for 12 more_acks
check "writer stops" "$LAB" writer stop
out=$("$LAB" writer check 2>&1)
rc=$?
echo "$out" >>"$LOG"
check "writer check exits 0" test $rc = 0
check "writer check: acknowledged writes lost: 0" grep -qx "acknowledged writes lost: 0" <<<"$out"
check "writer check: split-brain writes: 0" grep -q "^split-brain writes: 0 " <<<"$out"
check "writer stats reports the longest gap" bash -c "'$LAB' writer stats | grep -q 'longest gap between acknowledgements'"
# The audit must be able to fail: a row that only a replica has is split-brain.
# (Written on a copy of the log with a forged acknowledgement of a missing id.)
cp "$LAB_DIR/writer.jsonl" "$LAB_DIR/writer-forged.jsonl"
echo '{"ev":"ack","id":123456789,"site":"dc1","timeline":1,"mono":1e9,"wall":1e9}' >>"$LAB_DIR/writer-forged.jsonl"
echo '{"ev":"ack","id":123456790,"site":"dc2","timeline":2,"mono":1e9,"wall":1e9}' >>"$LAB_DIR/writer-forged.jsonl"
echo '{"ev":"ack","id":123456791,"site":"dc1","timeline":1,"mono":1e9,"wall":1e9}' >>"$LAB_DIR/writer-forged.jsonl"
out=$(nsx env LAB_DIR="$LAB_DIR" /usr/bin/python3 tests/fixtures/writer.py check --log "$LAB_DIR/writer-forged.jsonl" 2>&1)
rc=$?
echo "$out" >>"$LOG"
check "writer check fails (exit 1) on forged acknowledgements" test $rc = 1
check "... counting the 3 forged ids as lost" grep -q "^acknowledged writes lost: 3 " <<<"$out"
check "... counting the interleaved one as split-brain" grep -q "^split-brain writes: 1 " <<<"$out"

# --- isolate / heal -------------------------------------------------------------------------------------
check "isolate dc1" "$LAB" isolate dc1
refute "isolated: dc2 cannot reach DC1's Synapse" reach 127.0.2.1 http://127.0.1.20:8008/_standin/status
refute "isolated: dc3 cannot reach DC1's PostgreSQL port" nsx env LD_PRELOAD="$LAB_DIR/bindshim.so" \
    LAB_BIND_ADDR=127.0.3.5 "$PGBIN/pg_isready" -h 127.0.1.5 -t 1
refute "isolated: dc1 cannot reach DC2's Synapse" reach 127.0.1.1 http://127.0.2.20:8008/_standin/status
refute "isolated: dc1 cannot reach DC3's k8s" reach 127.0.1.1 https://127.0.3.30:6443/version
refute "isolated: the writer's address cannot reach DC1's ingress" reach 127.0.9.100 https://127.0.1.10/health
refute "isolated: dc1 cannot query the DNS" nsx dig +time=1 +tries=1 -b 127.0.1.1 @127.0.9.53 matrix.lab.test
check "isolated: dc2 still reaches dc3" reach 127.0.2.1 http://127.0.3.20:8008/_standin/status
check "isolated: dc2 still reaches DC1's BMC (out-of-band network)" reach 127.0.2.1 https://127.0.8.1:8000/redfish/v1
check "isolated: dc1 still reaches its BMC network" reach 127.0.1.1 https://127.0.8.2:8000/redfish/v1
t=$SECONDS
check "isolated: DC2's walreceiver stops streaming" wait_for 20 not_streaming dc2
check "isolated: DC3's walreceiver stops streaming" wait_for 20 not_streaming dc3
no_senders() { [ "$(senders)" = 0 ]; }
check "isolated: DC1's pg_stat_replication is empty" wait_for 20 no_senders
diag "replication cut seen after $((SECONDS - t)) s"
out=$(write_at dc1 999994)
echo "$out" >>"$LOG"
check "isolated: a write on DC1 is not acknowledged without a synchronous standby" \
    jq -e '.reason == "sync_rep_cancelled"' <<<"$out"
check "status lists the 6 isolation rules" jqs '[.partitions[] | select(test("isolate dc1"))] | length == 6'
check "heal" "$LAB" heal
check "healed: dc2 reaches DC1 again" reach 127.0.2.1 http://127.0.1.20:8008/_standin/status
check "healed: the DNS answers dc1 again" nsx dig +time=1 +tries=1 -b 127.0.1.1 @127.0.9.53 matrix.lab.test
t=$SECONDS
check "healed: DC2 streams again" wait_for 20 streaming dc2
check "healed: DC3 streams again" wait_for 20 streaming dc3
diag "replication back after $((SECONDS - t)) s"
check "healed: no rules left" jqs '.partitions == []'

# --- partition -----------------------------------------------------------------------------------------
check "partition dc1 dc2" "$LAB" partition dc1 dc2
refute "partitioned: dc1 -> dc2 cut" reach 127.0.1.1 http://127.0.2.20:8008/_standin/status
refute "partitioned: dc2 -> dc1 cut" reach 127.0.2.1 http://127.0.1.20:8008/_standin/status
check "partitioned: dc3 -> dc1 works" reach 127.0.3.1 http://127.0.1.20:8008/_standin/status
check "partitioned: dc3 -> dc2 works" reach 127.0.3.1 http://127.0.2.20:8008/_standin/status
check "partitioned: dc1 -> dc3 works" reach 127.0.1.1 http://127.0.3.20:8008/_standin/status
check "partitioned: dc2 -> dc3 works" reach 127.0.2.1 http://127.0.3.20:8008/_standin/status
check "partitioned: the shared services still reach dc1" reach 127.0.9.100 https://127.0.1.10/health
check "partitioned: DC2's walreceiver stops streaming" wait_for 20 not_streaming dc2
check "partitioned: DC3 keeps streaming" streaming dc3
wr=$(nsx curl -s -m 8 --cacert "$S/ca.pem" --resolve matrix.lab.test:443:127.0.1.10 \
    -H 'Content-Type: application/json' -d '{"id": 999998}' https://matrix.lab.test/write)
echo "$wr" >>"$LOG"
check "partitioned: DC1 still commits (DC3 is the quorum standby)" jq -e '.id == 999998' <<<"$wr"
check "heal after the partition" "$LAB" heal
check "healed: DC2 streams again" wait_for 20 streaming dc2

# --- kill / revive ---------------------------------------------------------------------------------------
k8s dc1 PATCH /apis/apps/v1/namespaces/ess/deployments/ess-haproxy \
    -H 'Content-Type: application/merge-patch+json' -d '{"metadata":{"annotations":{"lab/kept":"yes"}}}' >>"$LOG"
pm=$(head -n 1 "$LAB_DIR/dc1/pgdata/postmaster.pid")
check "kill dc1" "$LAB" kill dc1
dc1_procs() {
    # shellcheck disable=SC2046 # /proc paths have no spaces
    grep -lzxF "LAB_SITE=dc1" $(grep -lzxF "LAB_INSTANCE=$LAB_DIR" /proc/[0-9]*/environ 2>/dev/null) \
        /dev/null 2>/dev/null
}
check "killed: no process of dc1 is left" test -z "$(dc1_procs)"
check "killed: DC1's postmaster is gone" pm_dead
dc1_down() {
    local l
    l=$(nsx ss -Hltn | awk '{print $4}' | grep -E '^127\.0\.1\.')
    [ -z "$l" ] || { echo "still listening: $l"; return 1; }
}
check "killed: nothing listens on 127.0.1.x" dc1_down
check "killed: DC1's BMC is still up and reachable from dc2" reach 127.0.2.1 https://127.0.8.1:8000/redfish/v1
refute "killed: dc1 is isolated (dc1 address cannot reach dc2)" reach 127.0.1.1 http://127.0.2.20:8008/_standin/status
check "status shows dc1 killed" jqs '.sites.dc1.killed and (.sites.dc1.postgres.up | not) and .sites.dc2.postgres.up'
check "revive dc1" "$LAB" revive dc1
check "revived: every dc1 component is up" jqs \
    '.sites.dc1 | .postgres.up and .nginx.up and .synapse.up and .k8s.up and (.killed | not)'
check "revived: DC1 comes back as a primary (as on disk)" test "$(psql_site dc1 'SELECT pg_is_in_recovery()')" = f
check "revived: curl through DC1's ingress returns OK" wait_for 10 bash -c "test \"\$(ip netns exec $LAB_NETNS curl -s -m 3 \
    --cacert '$S/ca.pem' --resolve matrix.lab.test:443:127.0.1.10 https://matrix.lab.test/health)\" = OK"
check "revived: both replicas stream again" wait_for 20 two_senders
kept() {
    k8s dc1 GET /apis/apps/v1/namespaces/ess/deployments/ess-haproxy | jq -e '.metadata.annotations["lab/kept"] == "yes"'
}
check "revived: DC1's Kubernetes stand-in kept its state" kept

# --- daemons ---------------------------------------------------------------------------------------------
out=$("$LAB" daemons start all 2>&1)
rc=$?
echo "$out" >>"$LOG"
if grep -q "triad daemon is not built yet; daemons not started" <<<"$out"; then
    check "daemons start fails saying the daemon is not built yet" test $rc != 0
else
    check "daemons start all" test $rc = 0
    check "three daemons run" bash -c "for s in dc1 dc2 dc3; do kill -0 \$(cat $LAB_DIR/\$s/triad.pid) || exit 1; done"
    check "daemons stop all" "$LAB" daemons stop all
fi

# --- the audit sees a real split brain ----------------------------------------------------------------
# Last, because it leaves two primaries: DC1 isolated, DC2 promoted, and a
# row that only DC2 has.
check "split brain: isolate dc1" "$LAB" isolate dc1
check "split brain: promote DC2" runuser -u postgres -- "$PGBIN/pg_ctl" -D "$LAB_DIR/dc2/pgdata" -w promote
dc2_primary() { [ "$(psql_site dc2 'SELECT pg_is_in_recovery()')" = f ]; }
check "split brain: DC2 is a primary" wait_for 10 dc2_primary
check "split brain: a row written on DC2 only" runuser -u postgres -- "$PGBIN/psql" -h "$LAB_DIR/dc2/pgsock" \
    -d synapse -XAtq -c "SET synchronous_commit = local" \
    -c "INSERT INTO writes (id, site, timeline) VALUES (777777, 'dc2', 2)"
out=$("$LAB" writer check 2>&1)
rc=$?
echo "$out" >>"$LOG"
check "split brain: writer check exits 1" test $rc = 1
check "split brain: it names both primaries and picks the one DNS points at" \
    grep -q "^primary: dc1 (several primaries: dc1, dc2)" <<<"$out"
check "split brain: the row only DC2 has counts as a split-brain write" \
    grep -q "rows on a non-primary missing from the primary: 1)" <<<"$out"

# --- down ------------------------------------------------------------------------------------------------
t=$SECONDS
check "lab down" "$LAB" down
diag "lab down took $((SECONDS - t)) s"
check "nothing left: no process, namespace, nft table, mount or directory" no_leftovers
out=$("$LAB" down 2>&1)
rc=$?
check "down when nothing is up is fine" bash -c "test $rc = 0 && grep -q 'nothing to take down' <<<'$out'"

# --- the fallback without a network namespace ---------------------------------------------------------
lab_ports_free() { # nothing on the host uses the lab's addresses
    ! ss -Hlntu | awk '{print $5}' | grep -qE '^127\.0\.[1-9]\.[0-9]+:'
}
if lab_ports_free; then
    export LAB_DIR=$PLAIN_DIR LAB_NETNS=triad-lab-it-plain
    out=$(LAB_NO_NETNS=1 "$LAB" up 2>&1)
    rc=$?
    echo "$out" >>"$LOG"
    check "plain loopback (LAB_NO_NETNS=1): up succeeds" test $rc = 0
    check "plain loopback: it says loudly that partitions are disabled" grep -q "NO NETWORK NAMESPACE" <<<"$out"
    check "plain loopback: status shows plain mode and replication" jqs \
        '.mode == "plain" and .partitions == null and ([.sites.dc1.postgres.replication[] | select(.state == "streaming")] | length == 2)'
    check "plain loopback: no namespace was made" bash -c "! ip netns list | grep -qw triad-lab-it-plain"
    refute "plain loopback: isolate refuses" "$LAB" isolate dc1
    check "plain loopback: kill dc2 kills its PostgreSQL" bash -c "'$LAB' kill dc2 && ! kill -0 \$(head -n 1 $LAB_DIR/dc2/pgdata/postmaster.pid) 2>/dev/null"
    check "plain loopback: revive dc2" "$LAB" revive dc2
    check "plain loopback: down" "$LAB" down
    check "plain loopback: nothing left" no_leftovers
    check "plain loopback: the host's lo lost the lab addresses again" bash -c \
        "! ip -4 addr show dev lo | grep -qE 'inet 127\.0\.[1-9]\.[0-9]+/32'"
    export LAB_DIR=/tmp/triad-lab-it LAB_NETNS=triad-lab-it
else
    diag "lab addresses in use on the host: plain-loopback fallback not tested"
fi

diag "10-lab took $((SECONDS - T0)) s"
echo "1..$n"
[ $failed = 0 ]
