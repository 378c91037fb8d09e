#!/bin/bash
# 45-api-https.sh: the HTTPS control listener (api.https) of real daemons in
# the lab: it opens next to the Unix socket (+api-https); an operator's
# client certificate (secrets/operators/alice.pem, CN alice) reads the
# status and acts as operator alice; a client with neither certificate nor
# token gets 401 (health stays open); an operator's bearer token works, a
# wrong one does not; certificates from another CA (the rogue CA, and the
# daemons' own CA) are refused in the handshake; a switchover started and
# approved through HTTPS is journaled with the operator's name; a port
# already taken stops the daemon at start-up with a clear message and exit
# code 6, a key that does not match its certificate with exit code 1.
# TAP output.
set -u
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/tap.sh
if [ "$(id -u)" != 0 ]; then
    echo "ok 1 # SKIP needs root"
    exit 0
fi
export LAB_DIR=/tmp/triad-lab-h LAB_NETNS=triad-lab-h
. tests/integration/lablib.sh
BLOCKER=
trap '[ -n "$BLOCKER" ] && kill "$BLOCKER" 2>/dev/null; lab_down' EXIT

S=$LAB_DIR/secrets
TOKEN=lab-https-token-of-the-bot
TOKEN_SHA=$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)
RB=$LAB_DIR/https-runbook.yaml

# hcurl SITE PATH [curl options...]: prints the body, then the status code
# on a line of its own (000 when there was no HTTP answer).
hcurl() {
    local s=$1 path=$2 n=${1#dc}
    shift 2
    nsx curl -sS --max-time 10 --cacert "$S/ca.pem" --resolve "$s:7443:127.0.$n.1" \
        -w '\n%{http_code}' "$@" "https://$s:7443$path" 2>/dev/null
}
code() { hcurl "$@" | tail -n 1; }
jqb() { jq -e "$1" >/dev/null 2>&1 <<<"$2"; } # FILTER JSON
ALICE=(--cert "$S/operators/alice.pem" --key "$S/operators/alice.key")

t0=$SECONDS
"$LAB" down >/dev/null 2>&1
"$LAB" up >/dev/null 2>&1 || { not_ok "lab up"; tap_done; exit 1; }
diag "lab up in $((SECONDS - t0)) s"

# A bot operator with a token, and a switchover runbook with one gate.
cat >"$RB" <<'EOF'
runbook: switchover
description: HTTPS API test runbook
steps:
  - id: hold
    action: wait
    approve: required
    params: {duration: 1s}
  - id: tell
    action: notify
    params: {message: "run ${run.id} done"}
EOF
for s in dc1 dc2 dc3; do
    /usr/bin/python3 - "$LAB_DIR/$s/triad.yaml" "$RB" "$TOKEN_SHA" <<'PY'
import re, sys
path, rb, sha = sys.argv[1:]
t = open(path).read()
t = re.sub(r"(?m)^  switchover: .*$", "  switchover: " + rb, t)
t = t.replace("operators:\n", "operators:\n  - {name: bot, token_sha256: %s}\n" % sha, 1)
open(path, "w").write(t)
PY
done
check "check-config accepts the lab's api.https" bash -c "ip netns exec $LAB_NETNS $TRIAD check-config -c $LAB_DIR/dc2/triad.yaml >/dev/null"
check "daemons start with api.https and form a quorum" lab_reset
for s in dc1 dc2 dc3; do
    n=${s#dc}
    check "$s logs +api-https with its address" \
        grep -q "event=+api-https .*address=127.0.$n.1:7443" "$LAB_DIR/$s/triad.log"
done

# --- identities -----------------------------------------------------------------
out=$(hcurl dc2 /v1/status "${ALICE[@]}")
check "alice's certificate reads /v1/status (200)" test "$(tail -n 1 <<<"$out")" = 200
check "... and it is DC2's status document" jqb '.site == "dc2" and .quorum.have == 3' "$(head -n -1 <<<"$out")"
check "no certificate, no token: 401 on /v1/status" test "$(code dc2 /v1/status)" = 401
check "no certificate, no token: 401 on an operator endpoint (approve)" \
    test "$(code dc2 /v1/runs/x/steps/hold/approve -X POST)" = 401
check "the 401 asks for a bearer token (WWW-Authenticate)" bash -c \
    "ip netns exec $LAB_NETNS curl -sS -D - -o /dev/null --cacert $S/ca.pem --resolve dc2:7443:127.0.2.1 https://dc2:7443/v1/status | grep -qi '^WWW-Authenticate: Bearer'"
check "/v1/health needs nothing (200)" test "$(code dc2 /v1/health)" = 200
check "the bot's bearer token reads /v1/status (200)" \
    test "$(code dc2 /v1/status -H "Authorization: Bearer $TOKEN")" = 200
check "a wrong bearer token: 401" \
    test "$(code dc2 /v1/status -H "Authorization: Bearer not-the-token")" = 401
mark_logs
c=$(code dc2 /v1/status --cert "$S/rogue/alice.pem" --key "$S/rogue/alice.key")
check "a certificate from another CA (CN alice too) is refused in the handshake (got '$c')" test "$c" = 000
check "... and DC2 logs the refusal" wait_for 5 bash -c "[ \$(tail -c +$((MARK[dc2] + 1)) $LAB_DIR/dc2/triad.log | grep -c 'event=tls-stream-refused') -ge 1 ]"
c=$(code dc2 /v1/status --cert "$S/dc1.pem" --key "$S/dc1.key")
check "a daemon's certificate (the peers' CA, not the operators') is refused too (got '$c')" test "$c" = 000
c=$(code dc2 /v1/status --cacert "$S/rogue/ca.pem")
check "a client that does not trust DC2's certificate gets no answer (got '$c')" test "$c" = 000

# --- a run started and approved over HTTPS --------------------------------------
out=$(hcurl dc2 /v1/runs "${ALICE[@]}" -X POST -H 'Content-Type: application/json' \
    -d '{"kind": "switchover", "to": "dc2"}')
check "alice starts a switchover over HTTPS (202)" test "$(tail -n 1 <<<"$out")" = 202
[ "$(tail -n 1 <<<"$out")" = 202 ] || diag "$out"
check "DC2 logs +operator-run by alice" wait_for 5 \
    grep -q 'event=+operator-run .*who=alice' "$LAB_DIR/dc2/triad.log"
check "the run waits at its gate" wait_for 20 st_is dc2 .run.state waiting
R=$(st dc2 .run.id)
c=$(code dc3 "/v1/runs/$R/steps/hold/approve" -X POST)
check "an anonymous approval is refused (401)" test "$c" = 401
c=$(code dc3 "/v1/runs/$R/steps/hold/approve" "${ALICE[@]}" -X POST \
    -H 'Content-Type: application/json' -d '{"shown": "hold: wait 1s"}')
check "alice approves over HTTPS at a follower (DC3, forwarded): 200" test "$c" = 200
check "the run completes" wait_for 15 st_is dc2 .run.state done
check "the journal records the approval by alice" bash -c \
    "[ \$(jq -s '[.[] | select(.t == \"approval\" and .who == \"alice\")] | length' $LAB_DIR/dc2/state/runs/$R.jsonl) = 1 ]"

# --- start-up failures ---------------------------------------------------------------
"$LAB" daemons stop dc3 >/dev/null 2>&1
nsx /usr/bin/python3 -c 'import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.3.1", 7443)); s.listen(); time.sleep(60)' &
BLOCKER=$!
wait_for 5 nsx bash -c 'ss -ltn | grep -q "127.0.3.1:7443 "'
err=$(nsx timeout 20 "$TRIAD" daemon -c "$LAB_DIR/dc3/triad.yaml" 2>&1)
rc=$?
kill "$BLOCKER" 2>/dev/null
wait "$BLOCKER" 2>/dev/null
BLOCKER=
check "a taken HTTPS port stops the daemon at start-up with exit code 6 (got $rc)" test "$rc" = 6
[ "$rc" = 6 ] || diag "$(tail -n 5 <<<"$err")"
check "... saying why" grep -q 'event=api-failed .*cannot serve the HTTPS API on 127.0.3.1:7443: cannot listen on 127.0.3.1:7443: address already in use' <<<"$err"
sed -i "s|^  https:.*|&\n    cert_file: $S/dc3.pem\n    key_file: $S/dc1.key|" "$LAB_DIR/dc3/triad.yaml"
err=$(nsx timeout 20 "$TRIAD" daemon -c "$LAB_DIR/dc3/triad.yaml" 2>&1)
rc=$?
check "a key that does not belong to the API certificate: exit code 1 (got $rc)" test "$rc" = 1
check "... saying which files" grep -q "dc1.key does not belong to the certificate in .*dc3.pem" <<<"$err"

"$LAB" daemons stop all >/dev/null 2>&1
diag "suite took $((SECONDS - t0)) s"
tap_done
