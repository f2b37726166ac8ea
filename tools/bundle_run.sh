#!/usr/bin/env bash
# run.sh of a cnnkit GPU bundle (made by tools/gpu_bundle.sh from tools/bundle_run.sh).
#
#   ./run.sh OUT_LOG_DIR [--quick]
#
# Runs, in order of what a short GPU session most needs, each with its own log in OUT_LOG_DIR,
# carrying on after failures:
#   gpu_tests     bin/cnnkit_tests --filter 'gpu*/*' (every GPU test)                gpu_tests.log
#   train_bench   bin/bench_train --device cuda (batch 128, 512, 2048)               bench_train.log
#   train_fmnist  cnnkit train on the bundled Fashion-MNIST (2 epochs quick, else 10) train_fmnist.log
#   train_profile cnnkit train --profile, batch 512                                  train_profile.log
#   peer_torch    share/peer_torch.py --device cuda (PyTorch eager/channels_last/compile)
#   bench         bin/bench_kernels --json OUT_LOG_DIR/bench_kernels.json [--quick]   bench_kernels.log
#   memcheck      compute-sanitizer --tool memcheck --leak-check full on GPU tests   memcheck.log
#   racecheck     compute-sanitizer --tool racecheck on GPU tests                    racecheck.log
#   initcheck     compute-sanitizer --tool initcheck on GPU tests                    initcheck.log
#   tests         bin/cnnkit_tests --jobs 1 --verbose (the whole suite, CPU too)     tests.log
# then writes OUT_LOG_DIR/summary.json and prints a table. Exit status: 0 when no step failed or
# timed out, 1 otherwise, 2 on bad usage.
#
# Time: with --quick the steps share a DEADLINE (default 470 s from the first step): each step's
# timeout is cut to what is left, a step with under 15 s left is skipped ("out of time"), and the
# sanitizer steps get at most SANITIZER_CAP seconds each (default 90 with --quick), so the summary
# is always written inside a 10-minute device call.
#
# A step's status is one of
#   ok           exit status 0
#   failed       non-zero exit status
#   timeout      killed after STEP_TIMEOUT seconds (rc 124/137)
#   skipped      the tool is absent (compute-sanitizer not found)
#   unsupported  compute-sanitizer exited non-zero and its own output (lines "========= ...")
#                says it cannot work on this machine or GPU (e.g. "Device not supported" under
#                gVisor, "no CUDA-capable device"); not counted as a failure unless
#                STRICT_SANITIZER=1
#
# Environment:
#   STEP_TIMEOUT      seconds per step (default 300)
#   DEADLINE          seconds for all steps (default 470 with --quick, none otherwise)
#   SANITIZER_CAP     seconds per sanitizer step at most (default 90 with --quick, else STEP_TIMEOUT)
#   PEER_CAP          seconds for the PyTorch peer at most (default 150 with --quick: its
#                     torch.compile modes take minutes; else STEP_TIMEOUT)
#   SANITIZER_FILTER  Criterion --filter for the sanitizer runs (default 'gpu/*', the kernel
#                     tests, with --quick; 'gpu*/*' otherwise)
#   TEST_ARGS         extra arguments for the tests step, split at blanks (no shell quoting),
#                     e.g. TEST_ARGS="--filter gpu/*"
#   BENCH_ARGS        extra arguments for bench_kernels, split the same way
#   CNNKIT_EXTRA_LIB_DIRS  colon-separated folders searched for the CUDA libraries
#   STRICT_SANITIZER  1: an "unsupported" sanitizer step counts as a failure
#
# Libraries: LD_LIBRARY_PATH = bundle/lib : /usr/local/cuda/lib64 : /usr/lib/x86_64-linux-gnu
# [: folders found holding a CUDA library still unresolved] [: the caller's LD_LIBRARY_PATH]
# : bundle/lib/fallback (libstdc++, used only where the machine has none). The binaries are
# not patched.
set -uo pipefail

usage() { echo "usage: $0 OUT_LOG_DIR [--quick]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
[[ "$1" != -* ]] || usage
QUICK=0
if [[ $# -eq 2 ]]; then
  [[ "$2" == "--quick" ]] || usage
  QUICK=1
fi

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$1" || { echo "run.sh: cannot create $1" >&2; exit 2; }
LOG_DIR="$(cd "$1" && pwd)"
STEP_TIMEOUT="${STEP_TIMEOUT:-300}"
KILL_AFTER=10 # seconds between a step's SIGTERM and SIGKILL
if ((QUICK)); then
  DEADLINE="${DEADLINE:-470}"
  SANITIZER_CAP="${SANITIZER_CAP:-90}"
  PEER_CAP="${PEER_CAP:-150}"
  SANITIZER_FILTER="${SANITIZER_FILTER:-gpu/*}"
else
  DEADLINE="${DEADLINE:-0}"
  SANITIZER_CAP="${SANITIZER_CAP:-$STEP_TIMEOUT}"
  PEER_CAP="${PEER_CAP:-$STEP_TIMEOUT}"
  SANITIZER_FILTER="${SANITIZER_FILTER:-gpu*/*}"
fi
for v in STEP_TIMEOUT DEADLINE SANITIZER_CAP PEER_CAP; do # whole seconds; 0: no limit
  [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "run.sh: $v must be a whole number of seconds, got '${!v}'" >&2; exit 2; }
done
read -r -a EXTRA_TEST_ARGS <<<"${TEST_ARGS:-}"
read -r -a EXTRA_BENCH_ARGS <<<"${BENCH_ARGS:-}"
TESTS_BIN="$HERE/bin/cnnkit_tests"
BENCH_BIN="$HERE/bin/bench_kernels"
TRAIN_BENCH_BIN="$HERE/bin/bench_train"
CLI_BIN="$HERE/bin/cnnkit"

COMMIT="unknown"
if [[ -f "$HERE/MANIFEST.txt" ]]; then
  COMMIT="$(sed -n 's/^commit: *//p' "$HERE/MANIFEST.txt" | head -n 1)"
  COMMIT="${COMMIT:-unknown}"
fi

# ---- libraries ------------------------------------------------------------------------------------
ORIG_LDP="${LD_LIBRARY_PATH:-}"
LDP="$HERE/lib:/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu"
export LD_LIBRARY_PATH="$LDP${ORIG_LDP:+:$ORIG_LDP}:$HERE/lib/fallback"

# Folders that may hold libcudart / libcublas / libcudnn on a runner (CUDA images keep cuDNN in
# different places; Python images carry it in the pip wheels nvidia-cudnn-cu*, nvidia-cublas...).
candidate_lib_dirs() {
  local d
  if [[ -n "${CNNKIT_EXTRA_LIB_DIRS:-}" ]]; then tr ':' '\n' <<<"$CNNKIT_EXTRA_LIB_DIRS"; fi
  for d in /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64 \
    /usr/local/cuda-*/lib /usr/local/cuda-*/targets/x86_64-linux/lib /usr/local/lib \
    /usr/local/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu /usr/local/nvidia/lib64 \
    /usr/local/nvidia/lib /opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib \
    /opt/*/lib/python3*/site-packages/nvidia/*/lib /usr/local/lib/python3*/dist-packages/nvidia/*/lib \
    /usr/local/lib/python3*/site-packages/nvidia/*/lib /usr/lib/python3/dist-packages/nvidia/*/lib \
    "$HOME"/.local/lib/python3*/site-packages/nvidia/*/lib; do
    [[ -d "$d" ]] && echo "$d"
  done
  # the nvidia wheels of whatever python3 is on PATH
  if command -v python3 >/dev/null 2>&1; then
    python3 - 2>/dev/null <<'EOF' || true
import glob, os
try:
    import nvidia
    for p in nvidia.__path__:
        for d in sorted(glob.glob(os.path.join(p, "*", "lib"))):
            print(d)
except Exception:
    pass
EOF
  fi
}

unresolved() { # sonames that ldd cannot resolve for the two binaries, one a line
  local b
  for b in "$TESTS_BIN" "$BENCH_BIN" "$TRAIN_BENCH_BIN" "$CLI_BIN"; do
    [[ -x "$b" ]] && ldd "$b" 2>/dev/null | awk '/=> not found/ {print $1}'
  done | sort -u
}

missing="$(unresolved)"
if [[ -n "$missing" ]]; then
  extra=""
  while IFS= read -r so; do
    [[ -n "$so" ]] || continue
    while IFS= read -r d; do
      if [[ -e "$d/$so" ]]; then
        case ":$LDP$extra:" in *":$d:"*) ;; *) extra="$extra:$d" ;; esac
        break
      fi
    done < <(candidate_lib_dirs)
  done <<<"$missing"
  LDP="$LDP$extra"
fi
export LD_LIBRARY_PATH="$LDP${ORIG_LDP:+:$ORIG_LDP}:$HERE/lib/fallback"

# ---- helpers ------------------------------------------------------------------------------------
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
json_str() { # JSON string literal of $1 (quotes, backslashes escaped; control characters dropped)
  local s="${1//\\/\\\\}"
  s="${s//\"/\\\"}"
  s="$(printf '%s' "$s" | tr -d '\000-\037')"
  printf '"%s"' "$s"
}

S_NAME=() S_STATUS=() S_RC=() S_SECS=() S_LOG=() S_NOTE=()
record() { # record NAME STATUS RC SECONDS LOG NOTE
  S_NAME+=("$1") S_STATUS+=("$2") S_RC+=("$3") S_SECS+=("$4") S_LOG+=("$5") S_NOTE+=("$6")
}

# Short note from a log: Criterion's synthesis line, compute-sanitizer's error count.
log_note() {
  local f="$1" note="" errs
  note="$(grep -a -o 'Tested: [0-9]* | Passing: [0-9]* | Failing: [0-9]* | Crashing: [0-9]*' "$f" |
    tail -n 1 | sed 's/ | /, /g')"
  errs="$(grep -a -o 'ERROR SUMMARY: [0-9]* error' "$f" | awk '{ n += $3; c++ } END { if (c) print n }')"
  if [[ -n "$errs" ]]; then note="${note:+$note; }sanitizer errors: $errs"; fi
  printf '%s' "$note"
}

# This step's timeout: STEP_TIMEOUT, at most SANITIZER_CAP for sanitizer steps and STEP_CAP when
# the caller sets it, at most what is left before DEADLINE (minus the SIGKILL grace period);
# prints 0 when under 10 s would be left.
step_timeout() { # step_timeout KIND   (0 for a limit means none)
  local t="$STEP_TIMEOUT" left
  ((t > 0)) || t=86400
  if [[ "$1" == sanitizer ]] && ((SANITIZER_CAP > 0 && SANITIZER_CAP < t)); then t="$SANITIZER_CAP"; fi
  if [[ -n "${STEP_CAP:-}" ]] && ((STEP_CAP > 0 && STEP_CAP < t)); then t="$STEP_CAP"; fi
  if ((DEADLINE > 0)); then # leave room for the SIGKILL grace period
    left="$(awk -v a="$T_ALL" -v b="$(now)" -v d="$DEADLINE" -v k="$KILL_AFTER" \
      'BEGIN { printf "%d", d - (b - a) - k - 2 }')"
    if ((left < 10)); then echo 0; return; fi
    ((left < t)) && t="$left"
  fi
  echo "$t"
}

run_step() { # run_step NAME LOGNAME KIND CMD...   (KIND: plain | sanitizer)
  local name="$1" logname="$2" kind="$3"
  shift 3
  local logf="$LOG_DIR/$logname" t0 t1 rc status secs note tmo
  tmo="$(step_timeout "$kind")"
  if ((tmo == 0)); then
    skip_step "$name" "$logname" "out of time (DEADLINE $DEADLINE s)"
    return
  fi
  echo "run.sh: [$name] $*"
  {
    printf '# command:'
    printf ' %q' "$@"
    printf '\n# started %s, timeout %s s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$tmo"
  } >"$logf"
  t0="$(now)"
  timeout --kill-after="$KILL_AFTER" "$tmo" "$@" >>"$logf" 2>&1 </dev/null
  rc=$?
  t1="$(now)"
  secs="$(elapsed "$t0" "$t1")"
  if ((rc == 0)); then
    status=ok
  elif ((rc == 124 || rc == 137)); then
    status=timeout
  else
    status=failed
  fi
  note="$(log_note "$logf")"
  if [[ "$kind" == sanitizer && "$status" == failed ]] &&
    grep -a -q -i -E '^=+ .*(device not supported|device is not supported|not supported on this (platform|device)|unable to (find|load) injection library|no CUDA-capable device)' "$logf"; then
    status=unsupported
    note="${note:+$note; }compute-sanitizer cannot run on this machine (see log)"
    [[ "${STRICT_SANITIZER:-0}" == 1 ]] && status=failed
  fi
  [[ "$status" == timeout ]] && note="${note:+$note; }killed after ${tmo} s"
  printf '# exit status %s (%s) after %s s\n' "$rc" "$status" "$secs" >>"$logf"
  echo "run.sh: [$name] $status (rc $rc, ${secs} s)${note:+: $note}"
  record "$name" "$status" "$rc" "$secs" "$logname" "$note"
}

skip_step() { # skip_step NAME LOGNAME REASON
  echo "skipped: $3" >"$LOG_DIR/$2"
  echo "run.sh: [$1] skipped: $3"
  record "$1" skipped null 0 "$2" "$3"
}

find_sanitizer() {
  local c
  if c="$(command -v compute-sanitizer 2>/dev/null)"; then echo "$c"; return 0; fi
  for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer \
    /usr/local/cuda-*/bin/compute-sanitizer /usr/local/cuda-*/compute-sanitizer/compute-sanitizer; do
    if [[ -x "$c" ]]; then echo "$c"; return 0; fi
  done
  return 1
}

# ---- environment --------------------------------------------------------------------------------
GPU_LINE=""
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -a)"
  echo "bundle: $HERE (commit $COMMIT)"
  echo "quick: $QUICK   STEP_TIMEOUT: $STEP_TIMEOUT   DEADLINE: $DEADLINE   SANITIZER_CAP: $SANITIZER_CAP   SANITIZER_FILTER: $SANITIZER_FILTER"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  echo
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi 2>&1 || true
  else
    echo "nvidia-smi: not found"
  fi
  for b in "$TESTS_BIN" "$BENCH_BIN"; do
    echo
    echo "ldd $b:"
    ldd "$b" 2>&1 || true
  done
} >"$LOG_DIR/env.log" 2>&1

echo "run.sh: bundle commit $COMMIT, logs in $LOG_DIR"
if command -v nvidia-smi >/dev/null 2>&1; then
  smi="$(nvidia-smi -L 2>&1)" || true
  echo "$smi"
  GPU_LINE="$(grep -m 1 '^GPU ' <<<"$smi" || true)"
else
  echo "run.sh: nvidia-smi not found"
fi
still_missing="$(unresolved | tr '\n' ' ')"
if [[ -n "${still_missing// /}" ]]; then
  echo "run.sh: WARNING: unresolved libraries (the binaries will not start): $still_missing"
  echo "run.sh: set CNNKIT_EXTRA_LIB_DIRS to the folders that hold them; details in env.log"
fi

# ---- steps --------------------------------------------------------------------------------------
T_ALL="$(now)"
# 1. every GPU test (kernels vs CPU twins, the model on the device, planned vs unplanned, ...)
run_step gpu_tests gpu_tests.log plain "$TESTS_BIN" --jobs 1 --verbose --filter 'gpu*/*' \
  "${EXTRA_TEST_ARGS[@]}"

# 2. training throughput of the question's model on the GPU
if [[ -x "$TRAIN_BENCH_BIN" ]]; then
  run_step train_bench bench_train.log plain "$TRAIN_BENCH_BIN" --device cuda \
    --model "$HERE/share/seed_cnn.py" --json "$LOG_DIR/bench_train.json" \
    $( ((QUICK)) && echo "--steps 5" || echo "--steps 20")
fi

# 3. accuracy on the GPU: the question's model on Fashion-MNIST (bundled with BUNDLE_DATA=1), and
#    where a GPU training step spends its time: per planned node, forward and backward (issue 5)
if [[ -x "$CLI_BIN" && -d "$HERE/share/fashion-mnist" ]]; then
  run_step train_fmnist train_fmnist.log plain "$CLI_BIN" train "$HERE/share/seed_cnn.py" \
    --data "$HERE/share/fashion-mnist" --device cuda --batch 128 --seed 1 \
    --epochs "${TRAIN_EPOCHS:-$( ((QUICK)) && echo 2 || echo 10)}" --log "$LOG_DIR/train_fmnist.csv"
  run_step train_profile train_profile.log plain "$CLI_BIN" train "$HERE/share/seed_cnn.py" \
    --data "$HERE/share/fashion-mnist" --device cuda --batch 512 --seed 1 --epochs 1 \
    --limit 25600 --profile
else
  skip_step train_fmnist train_fmnist.log "no bundled Fashion-MNIST (make gpu-bundle BUNDLE_DATA=1)"
  skip_step train_profile train_profile.log "no bundled Fashion-MNIST (make gpu-bundle BUNDLE_DATA=1)"
fi

# 4. the PyTorch peer on the same GPU (the ratio comes from this run)
if command -v python3 >/dev/null 2>&1 && python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  STEP_CAP="$PEER_CAP" run_step peer_torch peer_torch.log plain python3 -u "$HERE/share/peer_torch.py" \
    --device cuda --json "$LOG_DIR/peer_torch.json"
else
  skip_step peer_torch peer_torch.log "python3 with CUDA-enabled torch not found"
fi

# 5. kernel benches (cnnkit vs cuDNN vs a device copy)
BENCH_CMD=("$BENCH_BIN" --json "$LOG_DIR/bench_kernels.json")
((QUICK)) && BENCH_CMD+=(--quick)
run_step bench bench_kernels.log plain "${BENCH_CMD[@]}" "${EXTRA_BENCH_ARGS[@]}"

# 6. compute-sanitizer on the GPU tests
if CS="$(find_sanitizer)"; then
  echo "run.sh: compute-sanitizer: $CS"
  "$CS" --version >>"$LOG_DIR/env.log" 2>&1 || true
  run_step memcheck memcheck.log sanitizer "$CS" --tool memcheck --leak-check full \
    --target-processes all --error-exitcode 1 "$TESTS_BIN" --jobs 1 --verbose --filter "$SANITIZER_FILTER"
  run_step racecheck racecheck.log sanitizer "$CS" --tool racecheck \
    --target-processes all --error-exitcode 1 "$TESTS_BIN" --jobs 1 --verbose --filter "$SANITIZER_FILTER"
  run_step initcheck initcheck.log sanitizer "$CS" --tool initcheck \
    --target-processes all --error-exitcode 1 "$TESTS_BIN" --jobs 1 --verbose --filter "$SANITIZER_FILTER"
else
  for t in memcheck racecheck initcheck; do
    skip_step "$t" "$t.log" "compute-sanitizer not found"
  done
fi

# 7. the whole suite (the CPU tests also run in CI on every change)
run_step tests tests.log plain "$TESTS_BIN" --jobs 1 --verbose "${EXTRA_TEST_ARGS[@]}"
TOTAL_SECS="$(elapsed "$T_ALL" "$(now)")"

# ---- summary ------------------------------------------------------------------------------------
n_failed=0
for i in "${!S_NAME[@]}"; do
  case "${S_STATUS[$i]}" in failed | timeout) n_failed=$((n_failed + 1)) ;; esac
done
{
  printf '{\n  "steps": [\n'
  for i in "${!S_NAME[@]}"; do
    ((i > 0)) && printf ',\n'
    printf '    {"name": %s, "status": %s, "rc": %s, "seconds": %s, "log": %s, "note": %s}' \
      "$(json_str "${S_NAME[$i]}")" "$(json_str "${S_STATUS[$i]}")" "${S_RC[$i]}" \
      "${S_SECS[$i]}" "$(json_str "${S_LOG[$i]}")" "$(json_str "${S_NOTE[$i]}")"
  done
  printf '\n  ],\n'
  printf '  "commit": %s,\n' "$(json_str "$COMMIT")"
  printf '  "quick": %s,\n' "$( ((QUICK)) && echo true || echo false)"
  printf '  "gpu": %s,\n' "$(if [[ -n "$GPU_LINE" ]]; then json_str "$GPU_LINE"; else echo null; fi)"
  printf '  "date": %s,\n' "$(json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)")"
  printf '  "total_seconds": %s,\n' "$TOTAL_SECS"
  printf '  "failed": %d\n}\n' "$n_failed"
} >"$LOG_DIR/summary.json"

echo
printf '%-10s %-11s %5s %9s  %s\n' step status rc seconds note
printf '%-10s %-11s %5s %9s  %s\n' ---------- ----------- ----- --------- ----
for i in "${!S_NAME[@]}"; do
  printf '%-10s %-11s %5s %9s  %s\n' "${S_NAME[$i]}" "${S_STATUS[$i]}" \
    "$([[ "${S_RC[$i]}" == null ]] && echo - || echo "${S_RC[$i]}")" "${S_SECS[$i]}" "${S_NOTE[$i]}"
done
echo "run.sh: $n_failed step(s) failed; commit $COMMIT; ${TOTAL_SECS} s; summary in $LOG_DIR/summary.json"
((n_failed == 0))
