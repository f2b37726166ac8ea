#!/usr/bin/env bash
# The bit gate of a refactor: fixed CPU training runs and the CLI's text, written into OUT.
#
#   tools/bitcheck.sh OUT        (from the repository root, after `make build`; builds nothing)
#
# Take a baseline before the refactor and compare after it; any difference is a change:
#   make build && tools/bitcheck.sh /tmp/ck-base
#   ... refactor ...
#   make build && tools/bitcheck.sh /tmp/ck-now && diff -r /tmp/ck-base /tmp/ck-now
#
# OUT gets bench_bits' checkpoints, losses and predictions (examples/seed_cnn.py and
# tests/data/rewrites.py, planned and unplanned, Adam and SGD; see bench/bench_bits.c) and
# cli.txt: `cnnkit summary`, `check` and `check --json` of examples/*.py and tests/data/*.py with
# their exit codes. OUT must be new or empty. BUILD names the build folder (default build).
# Runs on the CPU in a few seconds.
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 OUT" >&2
    exit 2
fi
out=$1
build=${BUILD:-build}
for b in "$build/bench/bench_bits" "$build/cnnkit"; do
    [ -x "$b" ] || { echo "bitcheck: $b is missing (make build first)" >&2; exit 2; }
done
if [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then
    echo "bitcheck: $out is not empty (remove it first)" >&2
    exit 2
fi
mkdir -p "$out"
# fixed threads: the bits must not depend on the machine's core count
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=1 CUDA_VISIBLE_DEVICES=
"$build/bench/bench_bits" "$out"
for f in examples/*.py tests/data/*.py; do
    for cmd in "summary" "check" "check --json"; do
        echo "==== cnnkit $cmd $f"
        rc=0
        # shellcheck disable=SC2086
        "$build/cnnkit" $cmd "$f" 2>&1 || rc=$?
        echo "==== exit $rc"
    done
done >> "$out/cli.txt"
echo "bitcheck: wrote $(ls "$out" | wc -l) files into $out"
