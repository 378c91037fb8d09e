#!/bin/bash
# make model: check tests/model/quorum.pml with spin (exhaustive search),
# then check that the model catches seeded protocol bugs (a model that
# cannot fail proves nothing). Prints one line per check and ends with
# "N passed, N failed"; exit status 1 on any failure.
set -u
cd "$(dirname "$0")" || exit 1
work=$(mktemp -d /tmp/triad-model-XXXXXX)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

# verify NAME MODEL-FILE EXPECT(pass|fail)
verify() {
    local name=$1 model=$2 expect=$3 out
    (
        cd "$work" || exit 2
        rm -f pan pan.* ./*.trail
        spin -a "$model" >spin.log 2>&1 || exit 2
        gcc -O2 -w -DSAFETY -DNOREDUCE -o pan pan.c >>spin.log 2>&1 || exit 2
        ./pan -m400000 >pan.log 2>&1
        grep -q "errors: 0" pan.log
    )
    local rc=$?
    out=$(grep -E "states, stored|assertion violated" "$work/pan.log" 2>/dev/null | head -2 | tr -s ' ' | tr '\n' ';')
    if [ $rc = 2 ]; then
        echo "not ok - $name: spin or the compiler failed ($(tail -n 3 "$work/spin.log" | tr '\n' ' '))"
        failed=$((failed + 1))
    elif { [ "$expect" = pass ] && [ $rc = 0 ]; } || { [ "$expect" = fail ] && [ $rc != 0 ]; }; then
        echo "ok - $name ($out)"
        passed=$((passed + 1))
    else
        echo "not ok - $name: expected the check to $expect ($out)"
        failed=$((failed + 1))
    fi
}

# mutant NAME FROM TO: the model with one line changed must fail.
mutant() {
    local name=$1 from=$2 to=$3
    grep -qF -- "$from" quorum.pml || {
        echo "not ok - mutant '$name': pattern not found"
        failed=$((failed + 1))
        return
    }
    python3 -c 'import sys; s=open(sys.argv[1]).read(); open(sys.argv[2],"w").write(s.replace(sys.argv[3], sys.argv[4], 1))' \
        quorum.pml "$work/mutant.pml" "$from" "$to"
    verify "mutant caught: $name" "$work/mutant.pml" fail
}

verify "quorum.pml: one leader per epoch, no decision without a majority, never two writable" \
    "$PWD/quorum.pml" pass
mutant "peers promise no longer than the primary's lease" "#define GRANT   4" "#define GRANT   3"
mutant "a leader without a majority of votes" ":: votes >= MAJ ->" ":: votes >= 1 ->"
mutant "promotion without waiting for the lease" "now >= lease_expiry -> pg_primary[target] = true" "true -> pg_primary[target] = true"
mutant "peers keep granting the old primary after a decision" ":: j != p && up(p, j) && primary[j] == p ->" ":: j != p && up(p, j) ->"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
