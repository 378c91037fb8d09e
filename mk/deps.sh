#!/bin/sh
# Installs the Debian packages given as arguments that are not installed yet.
# As root it runs apt-get; otherwise it prints the exact command and fails.
# A no-op when everything is present.
set -u
missing=""
for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
        missing="$missing $p"
    fi
done
if [ -z "$missing" ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "deps: missing Debian packages. Run as root:" >&2
    echo "  apt-get install -y$missing" >&2
    exit 1
fi
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# Try without refreshing the package lists first: it is faster and works
# offline against a local mirror; refresh only if that fails.
if ! apt-get install -y -q $missing >/tmp/triad-deps.log 2>&1; then
    apt-get update -q >>/tmp/triad-deps.log 2>&1
    if ! apt-get install -y -q $missing >>/tmp/triad-deps.log 2>&1; then
        tail -n 20 /tmp/triad-deps.log >&2
        echo "deps: apt-get install failed (log: /tmp/triad-deps.log)" >&2
        exit 1
    fi
fi
echo "deps: done"
