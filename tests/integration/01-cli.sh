#!/bin/bash
# The command line: help, version, exit codes, and check-config on good and
# bad configurations, including the file checks (secrets, certificates).
set -u
cd "$(dirname "$0")/../.."
. tests/integration/tap.sh
T=./triad
tmp=$(mktemp -d /tmp/triad-cli-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

out=$($T --help)
missing=""
for c in daemon check-config status probe plan failover switchover approve deny abort ack \
    console drill report version; do
    grep -qE "^  $c " <<<"$out" || missing="$missing $c"
done
check "triad --help lists every command${missing:+ (missing:$missing)}" test -z "$missing"

for c in daemon check-config status probe plan failover switchover approve deny abort ack \
    console drill report version; do
    $T "$c" --help >"$tmp/help" 2>&1 && grep -q "usage: triad $c" "$tmp/help" || missing="$missing $c"
done
check "triad CMD --help works for every command${missing:+ (broken:$missing)}" test -z "$missing"

out=$($T version)
bad=""
for lib in triad libuv libpq libcurl c-ares OpenSSL libyaml; do
    grep -qE "^$lib [0-9]" <<<"$out" || bad="$bad $lib"
done
check "triad version names triad and its libraries${bad:+ (missing:$bad)}" test -z "$bad"

$T check-config --no-file-checks -c examples/triad.yaml >"$tmp/out" 2>&1
check "examples/triad.yaml passes check-config --no-file-checks" test $? -eq 0

$T check-config --no-file-checks -c tests/fixtures/config/bad-key-and-site.yaml >"$tmp/out" 2>"$tmp/err"
rc=$?
check "a bad config exits with status 1 (got $rc)" test $rc -eq 1
check "misspelled key reported as FILE:LINE:COLUMN with a suggestion" \
    grep -q "^tests/fixtures/config/bad-key-and-site.yaml:10:3: unknown key 'heartbeat_intreval' (did you mean 'heartbeat_interval'?)" "$tmp/err"
check "unknown site reported as FILE:LINE:COLUMN" \
    grep -q "^tests/fixtures/config/bad-key-and-site.yaml:12:5: probe names unknown site 'dc9'" "$tmp/err"

TRIAD_CONFIG=tests/fixtures/config/bad-key-and-site.yaml $T check-config --no-file-checks >/dev/null 2>&1
check "TRIAD_CONFIG names the configuration" test $? -eq 1

$T plan -c examples/triad.yaml >"$tmp/out" 2>&1
rc=$?
check "plan refuses a configuration whose files are missing, with FILE:LINE:COLUMN" \
    bash -c "[ $rc -eq 1 ] && grep -qE '^examples/triad.yaml:[0-9]+:[0-9]+: /etc/triad/' '$tmp/out'"
check "the system CA bundle is accepted although it holds expired roots" \
    bash -c "! grep -q 'ca-certificates.crt' '$tmp/out'"
$T plan --fsm --json -c examples/triad.yaml >"$tmp/out" 2>&1
check "plan --fsm --json prints the step state machine" \
    bash -c "jq -e '.initial == \"pending\" and (.states | index(\"awaiting_approval\"))' '$tmp/out' >/dev/null"

# Manual pages: generated, and roff without a warning.
$T --man >"$tmp/triad.1"
check "triad --man is a manual page groff reads without a warning" \
    bash -c "[ -s '$tmp/triad.1' ] && [ -z \"\$(groff -man -Tutf8 -ww -z '$tmp/triad.1' 2>&1)\" ]"
man_has_all() {
    local c
    for c in daemon check-config status probe plan failover switchover approve deny abort ack \
        console drill report version; do
        grep -q "^\.SS \"$c" "$tmp/triad.1" || return 1
    done
}
check "... describing every command" man_has_all
sh mk/man-yaml.sh examples/triad.yaml 0 >"$tmp/triad.yaml.5"
check "triad.yaml(5) from the reference configuration, without a warning" \
    bash -c "grep -q 'readiness_interval' '$tmp/triad.yaml.5' && [ -z \"\$(groff -man -Tutf8 -ww -z '$tmp/triad.yaml.5' 2>&1)\" ]"

$T stauts >/dev/null 2>"$tmp/err"
rc=$?
check "an unknown command exits 2 with a suggestion" \
    bash -c "[ $rc -eq 2 ] && grep -q \"did you mean 'status'\" '$tmp/err'"
$T check-config --no-file-chekcs >/dev/null 2>"$tmp/err"
rc=$?
check "an unknown option exits 2 with a suggestion" \
    bash -c "[ $rc -eq 2 ] && grep -q \"did you mean '--no-file-checks'\" '$tmp/err'"

# File checks: a real CA and certificate, a secret with the wrong mode.
(
    cd "$tmp"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 30 \
        -subj /CN=test-ca >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -keyout dc2.key -out dc2.csr -subj /CN=dc2 >/dev/null 2>&1
    openssl x509 -req -in dc2.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out dc2.pem \
        -days 30 >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -keyout other.key -out other.csr -subj /CN=x >/dev/null 2>&1
    echo secret >pg.pass
    echo token >k8s.token
    echo 'key "k" { algorithm hmac-sha256; secret "aGVsbG8="; };' >tsig.key
    chmod 600 dc2.key pg.pass k8s.token tsig.key other.key
)
sed "s#../../../runbooks/#$PWD/runbooks/#" tests/fixtures/config/valid.yaml >"$tmp/triad.yaml"
$T check-config -c "$tmp/triad.yaml" >"$tmp/out" 2>&1
rc=$?
[ $rc -eq 0 ] || diag "$(cat "$tmp/out")"
check "check-config with file checks passes on real files" test $rc -eq 0

chmod 644 "$tmp/pg.pass"
$T check-config -c "$tmp/triad.yaml" >"$tmp/out" 2>&1
rc=$?
check "a world-readable secret file is refused with its position" \
    bash -c "[ $rc -eq 1 ] && grep -q 'triad.yaml:24:18: .*pg.pass holds a secret but is accessible by everyone' '$tmp/out'"
chmod 600 "$tmp/pg.pass"

cp "$tmp/other.key" "$tmp/dc2.key"
$T check-config -c "$tmp/triad.yaml" >"$tmp/out" 2>&1
check "a key that does not belong to the certificate is refused" \
    grep -q "does not belong to the certificate" "$tmp/out"

rm "$tmp/ca.pem"
$T check-config -c "$tmp/triad.yaml" >"$tmp/out" 2>&1
check "a missing CA file is reported" grep -q "ca.pem: No such file or directory" "$tmp/out"
$T check-config --no-file-checks -c "$tmp/triad.yaml" >"$tmp/out" 2>&1
check "--no-file-checks skips only the file checks" test $? -eq 0

tap_done
