#!/bin/bash
# make lint: formatting (clang-format), banned functions, cppcheck.
set -u
cd "$(dirname "$0")/.."
rc=0
srcs=$(git ls-files '*.c' '*.h' | grep -v '^tests/fixtures/.*\.py$')

if ! clang-format --dry-run --Werror $srcs 2>/tmp/triad-lint-fmt.log; then
    echo "lint: clang-format: these files need 'make fmt':"
    grep -oE '^[^:]+\.(c|h)' /tmp/triad-lint-fmt.log | sort -u | sed 's/^/  /'
    rc=1
fi

# Functions that invite overflows or silent errors; use snprintf, memcpy
# with explicit lengths, strtol/strtoull with error checks.
banned='\b(strcpy|strcat|sprintf|vsprintf|gets|atoi|atol|atoll|atof|strtok|strncpy|strncat|tmpnam|mktemp)[[:space:]]*\('
if hits=$(grep -nE "$banned" $srcs | grep -vE '^\S+:[0-9]+:\s*(/\*|\*|//)'); then
    echo "lint: banned functions:"
    echo "$hits" | sed 's/^/  /'
    rc=1
fi

if ! cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
    --std=c11 --inline-suppr -I. -D_GNU_SOURCE -DTRIAD_VERSION='"x"' \
    --suppress=missingIncludeSystem --suppress=unmatchedSuppression \
    lib probes fencing runbooks orchestrator 2>/tmp/triad-lint-cppcheck.log; then
    echo "lint: cppcheck:"
    sed 's/^/  /' /tmp/triad-lint-cppcheck.log
    rc=1
fi

[ $rc -eq 0 ] && echo "lint: ok"
exit $rc
