#!/usr/bin/env bash
# run.sh of a cnnkit GPU bundle (tools/gpu_bundle.sh copies this file), and the engine of
# `make test-gpu` on a GPU host that has a build tree.
#
#   ./run.sh LOG_DIR [--triage | --ci] [--build BUILD_DIR]
#
# Modes: the steps they run, in order (STEPS="a,b,..." runs those instead, in that order; a+b+c
# runs those steps at the same time: correctness runs only, never a timing), and the DEADLINE
# (seconds for all steps; each step's timeout is cut to what is left, a step with under 10 s left
# is not run and is listed under "out_of_time"; 0 = none):
#   (default) full  versions gpu_tests+memcheck+racecheck+initcheck+synccheck+memcheck_train+
#                   racecheck_train+initcheck_train+synccheck_train train_fmnist bench_train
#                   bench_train_graph bench_train_fastest bench_train_tf32 bench_train_bf16
#                   bench_cudnn bench_ops peer_torch peer_keras compare train_profile tests
#                   train_profile_tf32
#                                                                                DEADLINE 400
#   --triage        versions gpu_tests+train_short+memcheck+initcheck            DEADLINE 150
#   --ci            versions suite+memcheck+racecheck+initcheck+synccheck+memcheck_train+
#                   racecheck_train+initcheck_train+synccheck_train             DEADLINE 0
# --build BUILD_DIR: run the binaries of a build tree (make test-gpu) instead of the bundle's bin/.
#
# Steps (each writes LOG_DIR/NAME.log):
#   versions         cnnkit version (CUDA runtime and driver, the cuDNN loaded vs the one built
#                    against, cuBLAS, the GPU), nvidia-smi, the CUDA libraries the binaries
#                    resolve, compute-sanitizer, python3/torch
#   gpu_tests        the GPU tests (GPU_FILTER) with CNNKIT_REQUIRE_GPU=1: a GPU test that
#                    cannot run fails; a run of zero tests is a failed step (gpu_graph/*: the
#                    CUDA graphs of the training step against the eager step, bit for bit)
#   suite            the whole suite with CNNKIT_REQUIRE_GPU=1
#   train_short      cnnkit train: the seed model, 1 epoch of 12,800 Fashion-MNIST images
#                    (without the data: bench_train, 20 steps at batch 128)
#   train_fmnist     cnnkit train: the seed model, TRAIN_EPOCHS (10) epochs, seed 1, batch 128
#   train_profile_bf16  train_profile with --precision bf16 (per-node times and x roofline at the
#                    bf16 peak): only when named in STEPS
#   train_fmnist_bf16  the same with --precision bf16 (issue 16: test accuracy within 0.3 points
#                    of train_fmnist's; train_fmnist_bf16.csv): only when named in STEPS
#   bench_train      bench_train --device cuda, batches 128, 512 and 2048, 20 timed steps (BENCH_BATCHES,
#                    BENCH_STEPS; bench_train.json):
#                    the default settings (deterministic algorithms, strict fp32, CUDA graphs on)
#   bench_train_graph  the same, each batch size eager (--cuda-graph off) then with CUDA graphs,
#                    and their ratio (bench_train_graph.json)
#   bench_train_fastest  the same with --conv-algo fastest (cuDNN algorithms timed at build,
#                    non-deterministic allowed; bench_train_fastest.json)
#   bench_train_tf32 the same with --conv-algo fastest --math tf32 (bench_train_tf32.json)
#   bench_train_bf16 the same with --precision bf16 (issue 16: bf16 activations on the tensor
#                    cores; bench_train_bf16.json); PyTorch's bf16 figure is peer_torch_bf16's,
#                    only when named in STEPS
#   bench_cudnn      bench_cudnn: cnnkit's BN/dropout vs cuDNN vs a device copy, Dense vs cuBLAS
#                    (bench_cudnn.json)
#   bench_ops        bench_ops --bench-sizes: every op of the table (tests/ops) timed on the CPU
#                    and the GPU, GB/s, ratio to a device copy, re-checked (bench_ops.csv)
#   peer_torch       share/peer_torch.py --device cuda: PyTorch, the caller's environment
#   study_gpu        cnnkit study on the device (STUDY_SEEDS=20, STUDY_EPOCHS=3): only when named
#                    in STEPS, e.g. a third call: STEPS=study_gpu DEADLINE=0 STEP_TIMEOUT=540
#   train_resnet     issue 15: cnnkit train of ResNet-20 v1 and v2 (share/resnet20_v1.py, _v2.py),
#                    RESNET_EPOCHS (20) epochs each, seed 1, batch 128, logs
#                    train_resnet20_v1.csv / _v2.csv (summary.json: test_accuracies, v1 then v2):
#                    only when named in STEPS
#   study_resnet     issue 15: cnnkit study of ResNet-20 v1, the five placements of He et al.
#                    2016 (RESNET_STUDY_SEEDS=5, RESNET_STUDY_EPOCHS=3): only when named in STEPS
#   peer_keras       share/peer_keras.py: Keras 3 on the host's JAX (CUDA), batch 128/512/2048,
#                    from the wheels in share/wheels (keras, namex, optree; installed into a
#                    temporary folder, nothing fetched); skipped without them or without JAX
#                    on a GPU
#   peer_torch_bf16  share/peer_torch.py --precision bf16: PyTorch autocast bf16, channels_last
#                    eager and torch.compile (issue 16's peer; peer_torch_bf16.json): only when
#                    named in STEPS, e.g. STEPS=peer_torch_bf16
#   compare          share/compare.py over bench_train*.json, peer_torch.json, peer_keras.jsonl:
#                    cnnkit's ratio to the best PyTorch mode and best peer per batch size, and
#                    memory against PyTorch's peak (compare.json, compare.md; CPU only, seconds)
#   memcheck, racecheck, initcheck, synccheck   compute-sanitizer on the kernel tests
#                    (SANITIZER_FILTER)
#   memcheck_train ... synccheck_train   compute-sanitizer on a 20-step GPU training of the seed
#                    model (bench_train: 2 warm-up + 18 steps at batch 128, synthetic data;
#                    racecheck_train: 2 + 2 steps at batch 32, the same kernels; CUDA graphs on,
#                    so from the third step the sanitizer sees graph replays)
#   train_profile    cnnkit train --profile: time per planned node, batch 512, 25,600 images
#   train_profile_tf32  the same with --conv-algo fastest --math tf32 (last: runs when time is
#                    left)
#   tests            the whole suite as CI runs it (GPU tests may skip)
# then LOG_DIR/summary.json (rewritten after every step, so it exists whatever stops the run) and
# a table. Exit status 0 when no step failed or timed out, 1 otherwise, 2 on bad usage.
#
# A step's status: ok; failed (non-zero exit, or a test run of zero tests); timeout (killed at its
# limit); skipped (a tool or the data is absent, or out of time); unsupported (compute-sanitizer
# says it cannot work on this machine; a failure with STRICT_SANITIZER=1).
#
# Environment:
#   STEPS             the steps to run, comma-separated, in that order
#   STEP_TIMEOUT      seconds per step (default 300; --ci 1200)       DEADLINE  see above
#   SANITIZER_CAP     seconds per sanitizer step at most (with a deadline: 120, triage 90)
#   PEER_CAP          seconds for the PyTorch peer at most (default 100: torch.compile is slow)
#   STUDY_SEEDS, STUDY_EPOCHS   the study_gpu step (default 20 seeds, 3 epochs)
#   RESNET_EPOCHS, RESNET_STUDY_SEEDS, RESNET_STUDY_EPOCHS   train_resnet, study_resnet
#   TRAIN_EPOCHS      epochs of train_fmnist (default 10)
#   BENCH_BATCHES     batch sizes of the bench_train* steps and the peers, e.g. 128,512 (default:
#                     bench_train's own, 128,512,2048 on a GPU; the peers' the same)
#   BENCH_STEPS       timed steps of the bench_train* steps and of peer_keras (default 20)
#   GPU_TEST_JOBS     Criterion --jobs of gpu_tests and suite (default 4)
#   GPU_FILTER        Criterion filter of gpu_tests; SANITIZER_FILTER that of the sanitizer runs
#   TEST_ARGS, BENCH_ARGS  extra arguments of the test runs and of bench_cudnn (split at blanks)
#   CNNKIT_EXTRA_LIB_DIRS  colon-separated folders searched for the CUDA libraries (cuDNN...)
#   COMPUTE_SANITIZER where compute-sanitizer is, when not on PATH or in /usr/local/cuda
#   STRICT_SANITIZER  1: an "unsupported" sanitizer step counts as a failure
#
# Libraries (bundle only; the binaries are not patched): our binaries run with
# LD_LIBRARY_PATH = the caller's LD_LIBRARY_PATH : CNNKIT_EXTRA_LIB_DIRS : bundle/lib
#   : /usr/local/cuda/lib64 : folders found holding a CUDA library still unresolved (e.g. the
#   nvidia-cudnn-cu13 wheel of a Python install) [: bundle/lib/fallback (libstdc++, libcudart),
#   only when the machine has no copy of one of them]. Everything else (python3, nvidia-smi)
#   runs with the caller's environment unchanged.
set -uo pipefail

usage() {
  echo "usage: $0 LOG_DIR [--triage | --ci] [--build BUILD_DIR]" >&2
  exit 2
}
[[ $# -ge 1 && "$1" != -* ]] || usage
LOG_ARG="$1"
shift
MODE=full
BUILD_DIR=""
while (($#)); do
  case "$1" in
    --triage) MODE=triage ;;
    --ci) MODE=ci ;;
    --build)
      [[ $# -ge 2 ]] || usage
      BUILD_DIR="$2"
      shift
      ;;
    *) usage ;;
  esac
  shift
done

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$LOG_ARG" || { echo "run.sh: cannot create $LOG_ARG" >&2; exit 2; }
LOG_DIR="$(cd "$LOG_ARG" && pwd)"
if [[ -n "$BUILD_DIR" ]]; then # a build tree: this file is tools/bundle_run.sh of the repository
  [[ -d "$BUILD_DIR" ]] || { echo "run.sh: no build folder $BUILD_DIR" >&2; exit 2; }
  BUILD_DIR="$(cd "$BUILD_DIR" && pwd)"
  REPO="$(cd "$HERE/.." && pwd)"
  TESTS_BIN="$BUILD_DIR/tests/cnnkit_tests"
  BENCH_BIN="$BUILD_DIR/bench/bench_cudnn"
  OPS_BENCH_BIN="$BUILD_DIR/bench/bench_ops"
  TRAIN_BENCH_BIN="$BUILD_DIR/bench/bench_train"
  CLI_BIN="$BUILD_DIR/cnnkit"
  MODEL="$REPO/examples/seed_cnn.py"
  RESNETS="$REPO/examples"
  PEER="$REPO/bench/peer_torch.py"
  PEER_KERAS="$REPO/bench/peer_keras.py"
  COMPARE="$REPO/bench/compare.py"
  WHEELS="${CNNKIT_WHEELS:-$BUILD_DIR/wheels}"
  DATA="${CNNKIT_DATA:-/usr/share/datasets/fashion-mnist}"
  COMMIT="$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)"
else
  TESTS_BIN="$HERE/bin/cnnkit_tests"
  BENCH_BIN="$HERE/bin/bench_cudnn"
  OPS_BENCH_BIN="$HERE/bin/bench_ops"
  TRAIN_BENCH_BIN="$HERE/bin/bench_train"
  CLI_BIN="$HERE/bin/cnnkit"
  MODEL="$HERE/share/seed_cnn.py"
  RESNETS="$HERE/share"
  PEER="$HERE/share/peer_torch.py"
  PEER_KERAS="$HERE/share/peer_keras.py"
  COMPARE="$HERE/share/compare.py"
  WHEELS="$HERE/share/wheels"
  DATA="$HERE/share/fashion-mnist"
  COMMIT="$(sed -n 's/^describe: *//p' "$HERE/MANIFEST.txt" 2>/dev/null | head -n 1)"
fi
COMMIT="${COMMIT:-unknown}"

case "$MODE" in
  full)
    DEFAULT_STEPS="versions gpu_tests+memcheck+racecheck+initcheck+synccheck+memcheck_train+racecheck_train+initcheck_train+synccheck_train train_fmnist bench_train bench_train_graph bench_train_fastest bench_train_tf32 bench_train_bf16 bench_cudnn bench_ops peer_torch peer_keras compare train_profile tests train_profile_tf32"
    DEADLINE="${DEADLINE:-400}"
    ;;
  triage)
    DEFAULT_STEPS="versions gpu_tests+train_short+memcheck+initcheck"
    DEADLINE="${DEADLINE:-150}"
    SANITIZER_CAP="${SANITIZER_CAP:-90}"
    ;;
  ci)
    DEFAULT_STEPS="versions suite+memcheck+racecheck+initcheck+synccheck+memcheck_train+racecheck_train+initcheck_train+synccheck_train"
    DEADLINE="${DEADLINE:-0}"
    STEP_TIMEOUT="${STEP_TIMEOUT:-1200}" # CI: a slow GPU under a sanitizer, not a lease
    ;;
esac
read -r -a STEP_LIST <<<"$(tr ',' ' ' <<<"${STEPS:-$DEFAULT_STEPS}")"
STEP_TIMEOUT="${STEP_TIMEOUT:-300}"
if ((DEADLINE > 0)); then SANITIZER_CAP="${SANITIZER_CAP:-120}"; else SANITIZER_CAP="${SANITIZER_CAP:-0}"; fi
PEER_CAP="${PEER_CAP:-100}"
STUDY_SEEDS="${STUDY_SEEDS:-20}"
STUDY_EPOCHS="${STUDY_EPOCHS:-3}"
TRAIN_EPOCHS="${TRAIN_EPOCHS:-10}"
BENCH_STEPS="${BENCH_STEPS:-20}"
BENCH_BATCHES="${BENCH_BATCHES:-}"
RESNET_EPOCHS="${RESNET_EPOCHS:-20}"
RESNET_STUDY_SEEDS="${RESNET_STUDY_SEEDS:-5}"
RESNET_STUDY_EPOCHS="${RESNET_STUDY_EPOCHS:-3}"
GPU_TEST_JOBS="${GPU_TEST_JOBS:-4}"
for v in STEP_TIMEOUT DEADLINE SANITIZER_CAP PEER_CAP TRAIN_EPOCHS GPU_TEST_JOBS STUDY_SEEDS STUDY_EPOCHS \
  RESNET_EPOCHS RESNET_STUDY_SEEDS RESNET_STUDY_EPOCHS BENCH_STEPS; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "run.sh: $v must be a whole number, got '${!v}'" >&2; exit 2; }
done
((BENCH_STEPS > 0)) || { echo "run.sh: BENCH_STEPS must be at least 1" >&2; exit 2; }
[[ -z "$BENCH_BATCHES" || "$BENCH_BATCHES" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] ||
  { echo "run.sh: BENCH_BATCHES must be batch sizes like 128,512, got '$BENCH_BATCHES'" >&2; exit 2; }
# the size arguments of every bench_train* step, and the peers' batch sizes to match
BENCH_SIZE=(--steps "$BENCH_STEPS")
PEER_BATCHES=()
if [[ -n "$BENCH_BATCHES" ]]; then
  BENCH_SIZE+=(--batches "$BENCH_BATCHES")
  PEER_BATCHES=(--batches "$BENCH_BATCHES")
fi
# The GPU tests: every gpu* suite, the golden values on CUDA, the workspace check on the device and
# the GPU determinism tests. The sanitizers take the tests that run kernels directly (the model
# tests train through the same kernels: the *_train steps cover them), except the three that plan
# with cudnnFind (conv_fastest_*, conv_tf32_matches_cpu: CK_CONV_ALGO_FASTEST times every
# algorithm of every direction in both layouts of each shape): cuDNN's kernels run over and over,
# slow under the sanitizers (not measured), for nothing of cnnkit's that conv_matches_cpu and
# conv_nchw_fallback_matches_cpu do not run (the full run's sanitizers took 108 of their 120 s
# with 36 tests on 2026-12-04). Alone, when time is left:
# STEPS=memcheck SANITIZER_FILTER='gpu_layers/conv_fastest_matches_cpu'.
GPU_FILTER="${GPU_FILTER:-@(gpu*/*|*/gpu_*|ops/*|*/*_cuda|errors/workspace_too_small_on_gpu|hardening/*_gpu)}"
SANITIZER_FILTER="${SANITIZER_FILTER:-@(gpu/*|gpu_layers/!(conv_fastest_*|conv_tf32_matches_cpu)|golden/*_cuda|errors/workspace_too_small_on_gpu|gpu_bf16/kernels_match_cpu_bits|gpu_bf16/conv_matches_cpu_twin|gpu_bf16/dense_matches_cpu_twin)}"
read -r -a EXTRA_TEST_ARGS <<<"${TEST_ARGS:-}"
read -r -a EXTRA_BENCH_ARGS <<<"${BENCH_ARGS:-}"
KNOWN_STEPS=" versions gpu_tests suite train_short train_fmnist train_fmnist_bf16 bench_train bench_train_graph bench_train_fastest bench_train_tf32 bench_train_bf16 bench_cudnn bench_ops peer_torch peer_torch_bf16 peer_keras compare memcheck racecheck initcheck synccheck memcheck_train racecheck_train initcheck_train synccheck_train train_profile train_profile_tf32 train_profile_bf16 study_gpu train_resnet study_resnet tests "
for s in $(tr '+' ' ' <<<"${STEP_LIST[*]}"); do
  [[ "$KNOWN_STEPS" == *" $s "* ]] || { echo "run.sh: unknown step '$s' (steps:$KNOWN_STEPS)" >&2; exit 2; }
done

# ---- libraries ------------------------------------------------------------------------------------
ORIG_LDP="${LD_LIBRARY_PATH:-}"
LDP=""
# Folders that may hold the CUDA libraries on a GPU host: CUDA images keep cuDNN in different
# places, Python images in the pip wheels (nvidia-cudnn-cu13: site-packages/nvidia/cudnn/lib).
candidate_lib_dirs() {
  local d
  if [[ -n "${CNNKIT_EXTRA_LIB_DIRS:-}" ]]; then tr ':' '\n' <<<"$CNNKIT_EXTRA_LIB_DIRS"; fi
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib \
    /usr/local/cuda-*/lib64 /usr/local/cuda-*/lib /usr/local/cuda-*/targets/x86_64-linux/lib \
    /usr/local/lib /usr/local/lib/x86_64-linux-gnu /usr/local/nvidia/lib64 /usr/local/nvidia/lib \
    /opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib /opt/*/lib/python3*/site-packages/nvidia/*/lib \
    /usr/local/lib/python3*/dist-packages/nvidia/*/lib /usr/local/lib/python3*/site-packages/nvidia/*/lib \
    /usr/lib/python3/dist-packages/nvidia/*/lib "$HOME"/.local/lib/python3*/site-packages/nvidia/*/lib; do
    [[ -d "$d" ]] && echo "$d"
  done
  if command -v python3 >/dev/null 2>&1; then # the wheels of the python3 on PATH
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

# sonames our binaries need that cannot be found: ldd's "not found", and libraries cuDNN opens
# itself (DLOPENED: nvrtc for its runtime-compiled engines; NCCL, which cnnkit opens for its
# GPU communicator: nvidia-nccl-cu13 in a torch install) that no folder of the path holds
DLOPENED=(libnvrtc.so.13 libnccl.so.2)
# have_lib SONAME: the loader finds it, in a folder of LDP or in its cache (ldconfig -p prints
# "<TAB>libfoo.so.1 (libc6,x86-64) => /path": the name is the first field)
have_lib() {
  local d
  while IFS= read -r d; do [[ -n "$d" && -e "$d/$1" ]] && return 0; done < <(tr ':' '\n' <<<"$LDP")
  ldconfig -p 2>/dev/null | awk -v so="$1" '$1 == so { found = 1 } END { exit !found }'
}
unresolved() {
  local b so
  for b in "$TESTS_BIN" "$BENCH_BIN" "$OPS_BENCH_BIN" "$TRAIN_BENCH_BIN" "$CLI_BIN"; do
    [[ -x "$b" ]] && env ${LDP:+LD_LIBRARY_PATH="$LDP"} ldd "$b" 2>/dev/null | awk '/=> not found/ {print $1}'
  done | sort -u
  for so in "${DLOPENED[@]}"; do
    have_lib "$so" || echo "$so"
  done
}

if [[ -z "$BUILD_DIR" ]]; then
  LDP="${ORIG_LDP:+$ORIG_LDP:}${CNNKIT_EXTRA_LIB_DIRS:+$CNNKIT_EXTRA_LIB_DIRS:}$HERE/lib:/usr/local/cuda/lib64"
  extra=""
  while IFS= read -r so; do
    [[ -n "$so" ]] || continue
    while IFS= read -r d; do
      if [[ -e "$d/$so" ]]; then
        case ":$LDP$extra:" in *":$d:"*) ;; *) extra="$extra:$d" ;; esac
        break
      fi
    done < <(candidate_lib_dirs)
  done < <(unresolved)
  LDP="$LDP$extra"
  # lib/fallback (the build machine's libstdc++ and libcudart) only when this machine lacks one
  # of them: the loader searches LD_LIBRARY_PATH before its cache, so on the path it would also
  # put the build's older libstdc++ ahead of the machine's own, the one its cuDNN and cuBLAS
  # were installed with
  for f in "$HERE"/lib/fallback/*.so*; do
    if [[ -e "$f" ]] && ! have_lib "$(basename "$f")"; then
      LDP="$LDP:$HERE/lib/fallback"
      break
    fi
  done
fi
# the prefix of every step that runs our binaries (steps run under `timeout`: no functions)
LIBENV=(env)
[[ -n "$LDP" ]] && LIBENV+=("LD_LIBRARY_PATH=$LDP")

# ---- helpers ------------------------------------------------------------------------------------
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
json_str() { # JSON string literal of $1 (quotes, backslashes escaped; control characters dropped)
  local s="${1//\\/\\\\}"
  s="${s//\"/\\\"}"
  s="$(printf '%s' "$s" | tr -d '\000-\037')"
  printf '"%s"' "$s"
}
json_num() { if [[ "$1" =~ ^-?[0-9]+(\.[0-9]+)?$ ]]; then printf '%s' "$1"; else printf null; fi; }

S_NAME=() S_STATUS=() S_RC=() S_SECS=() S_LOG=() S_NOTE=() S_EXTRA=()
NOT_RUN=()
record() { # record NAME STATUS RC SECONDS LOG NOTE EXTRA_JSON_FIELDS
  S_NAME+=("$1") S_STATUS+=("$2") S_RC+=("$3") S_SECS+=("$4") S_LOG+=("$5") S_NOTE+=("$6") S_EXTRA+=("$7")
  write_summary
}

# Criterion's synthesis, the suite's GPU-skip line, compute-sanitizer's error counts, the test
# accuracy of a training run: a short note and JSON fields
LAST_NOTE="" LAST_FIELDS="" LAST_TESTED=""
parse_log() {
  local f="$1" syn skip errs acc=() n a
  LAST_NOTE="" LAST_FIELDS="" LAST_TESTED=""
  syn="$(grep -a -o 'Tested: [0-9]* | Passing: [0-9]* | Failing: [0-9]* | Crashing: [0-9]*' "$f" | tail -n 1)"
  if [[ -n "$syn" ]]; then
    read -r -a n <<<"$(tr -cs '0-9' ' ' <<<"$syn")"
    LAST_TESTED="${n[0]}"
    LAST_NOTE="$(sed 's/ | /, /g' <<<"$syn")"
    LAST_FIELDS=", \"tested\": ${n[0]}, \"passing\": ${n[1]}, \"failing\": ${n[2]}, \"crashing\": ${n[3]}"
  fi
  skip="$(grep -a -o '[0-9]* GPU tests\{0,1\} skipped: .*' "$f" | tail -n 1)"
  if [[ -n "$skip" ]]; then
    LAST_NOTE="${LAST_NOTE:+$LAST_NOTE; }$skip"
    LAST_FIELDS="$LAST_FIELDS, \"gpu_skipped\": ${skip%% *}"
  fi
  errs="$(grep -a -o 'ERROR SUMMARY: [0-9]* error' "$f" | awk '{ n += $3; c++ } END { if (c) print n }')"
  if [[ -n "$errs" ]]; then
    LAST_NOTE="${LAST_NOTE:+$LAST_NOTE; }sanitizer errors: $errs"
    LAST_FIELDS="$LAST_FIELDS, \"sanitizer_errors\": $errs"
  fi
  # one value per training the step ran, in order (train_resnet: v1, then v2)
  read -r -a acc <<<"$(grep -a -o 'test accuracy: [0-9.]*' "$f" | awk '{print $3}' | tr '\n' ' ')"
  if ((${#acc[@]} == 1)); then
    LAST_NOTE="${LAST_NOTE:+$LAST_NOTE; }test accuracy ${acc[0]}"
    LAST_FIELDS="$LAST_FIELDS, \"test_accuracy\": $(json_num "${acc[0]}")"
  elif ((${#acc[@]} > 1)); then
    LAST_NOTE="${LAST_NOTE:+$LAST_NOTE; }test accuracies $(sed 's/ /, /g' <<<"${acc[*]}")"
    LAST_FIELDS="$LAST_FIELDS, \"test_accuracies\": [$(for a in "${acc[@]}"; do json_num "$a"; printf ','; done | sed 's/,$//')]"
  fi
}

# This step's timeout: STEP_TIMEOUT, at most the cap given (0: none), at most what is left before
# DEADLINE minus the SIGKILL grace; 0 when under 10 s would be left.
KILL_AFTER=10
step_timeout() { # step_timeout CAP
  local t="$STEP_TIMEOUT" left
  ((t > 0)) || t=86400
  if (($1 > 0 && $1 < t)); then t="$1"; fi
  if ((DEADLINE > 0)); then
    left="$(awk -v a="$T_ALL" -v b="$(now)" -v d="$DEADLINE" -v k="$KILL_AFTER" \
      'BEGIN { printf "%d", d - (b - a) - k - 2 }')"
    if ((left < 10)); then echo 0; return; fi
    ((left < t)) && t="$left"
  fi
  echo "$t"
}

# run_step NAME KIND CAP CMD...   KIND: plain | tests (a run of zero tests fails) | san (a
# compute-sanitizer run) | san_tests (both). Inside a group (IN_GROUP=1) the command starts in the
# background and finish_steps waits for it; otherwise run_step waits itself.
P_NAME=() P_KIND=() P_PID=() P_T0=() P_TMO=()
run_step() {
  local name="$1" kind="$2" cap="$3"
  shift 3
  local logf="$LOG_DIR/$name.log" tmo
  tmo="$(step_timeout "$cap")"
  if ((tmo == 0)); then
    NOT_RUN+=("$name")
    skip_step "$name" "out of time (DEADLINE $DEADLINE s)"
    return
  fi
  echo "run.sh: [$name] $*"
  {
    printf '# command:'
    printf ' %q' "$@"
    printf '\n# started %s, timeout %s s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$tmo"
  } >"$logf"
  P_NAME+=("$name") P_KIND+=("$kind") P_T0+=("$(now)") P_TMO+=("$tmo")
  # the end time of the step itself: finish_steps waits in start order, so a group's later steps
  # would otherwise be timed to when the steps started before them ended
  (
    timeout --kill-after="$KILL_AFTER" "$tmo" "$@" >>"$logf" 2>&1 </dev/null
    rc=$?
    now >"$LOG_DIR/.$name.end"
    exit $rc
  ) &
  P_PID+=("$!")
  ((IN_GROUP)) || finish_steps
}

# Waits for the started steps, in start order, and records each.
finish_steps() {
  local i rc status secs note name kind logf t1
  for i in "${!P_PID[@]}"; do
    wait "${P_PID[$i]}"
    rc=$?
    name="${P_NAME[$i]}" kind="${P_KIND[$i]}" logf="$LOG_DIR/${P_NAME[$i]}.log"
    t1="$(cat "$LOG_DIR/.$name.end" 2>/dev/null)" || t1="$(now)"
    rm -f "$LOG_DIR/.$name.end"
    secs="$(elapsed "${P_T0[$i]}" "${t1:-$(now)}")"
    if ((rc == 0)); then status=ok; elif ((rc == 124 || rc == 137)); then status=timeout; else status=failed; fi
    parse_log "$logf"
    note="$LAST_NOTE"
    if [[ "$kind" == *tests && "$status" == ok && "${LAST_TESTED:-0}" == 0 ]]; then
      status=failed # a broken setup must not pass as "nothing to test"
      note="${note:+$note; }ran zero tests"
    fi
    if [[ "$kind" == san* && "$status" == failed ]] &&
      grep -a -q -i -E '^=+ .*(device not supported|device is not supported|not supported on this (platform|device)|unable to (find|load) injection library|no CUDA-capable device)' "$logf"; then
      status=unsupported
      note="${note:+$note; }compute-sanitizer cannot run on this machine (see log)"
      [[ "${STRICT_SANITIZER:-0}" == 1 ]] && status=failed
    fi
    [[ "$status" == timeout ]] && note="${note:+$note; }killed after ${P_TMO[$i]} s"
    if [[ "$status" != ok && -z "$LAST_NOTE" ]]; then # the command's last words say why
      note="${note:+$note; }$(grep -a -v '^# ' "$logf" | grep -a . | tail -n 1 | cut -c1-240)"
    fi
    printf '# exit status %s (%s) after %s s\n' "$rc" "$status" "$secs" >>"$logf"
    echo "run.sh: [$name] $status (rc $rc, ${secs} s)${note:+: $note}"
    record "$name" "$status" "$rc" "$secs" "$name.log" "$note" "$LAST_FIELDS"
  done
  P_NAME=() P_KIND=() P_PID=() P_T0=() P_TMO=()
}

skip_step() { # skip_step NAME REASON
  echo "skipped: $2" >"$LOG_DIR/$1.log"
  echo "run.sh: [$1] skipped: $2"
  record "$1" skipped null 0 "$1.log" "$2" ""
}

find_sanitizer() {
  local c
  for c in "${COMPUTE_SANITIZER:-}" "$(command -v compute-sanitizer 2>/dev/null)" \
    /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer \
    /usr/local/cuda-*/bin/compute-sanitizer /usr/local/cuda-*/compute-sanitizer/compute-sanitizer; do
    if [[ -n "$c" && -x "$c" ]]; then echo "$c"; return 0; fi
  done
  return 1
}

write_summary() {
  local i n_failed=0 tmp="$LOG_DIR/summary.json.tmp"
  for i in "${!S_NAME[@]}"; do
    case "${S_STATUS[$i]}" in failed | timeout) n_failed=$((n_failed + 1)) ;; esac
  done
  {
    printf '{\n  "mode": %s,\n  "commit": %s,\n' "$(json_str "$MODE")" "$(json_str "$COMMIT")"
    printf '  "gpu": %s,\n' "$(if [[ -n "$GPU_LINE" ]]; then json_str "$GPU_LINE"; else echo null; fi)"
    printf '  "versions": %s,\n' "$(if [[ -n "$VERSIONS_LINE" ]]; then json_str "$VERSIONS_LINE"; else echo null; fi)"
    printf '  "date": %s,\n  "deadline": %s,\n' "$(json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)")" "$DEADLINE"
    printf '  "total_seconds": %s,\n' "$(elapsed "$T_ALL" "$(now)")"
    printf '  "steps": ['
    for i in "${!S_NAME[@]}"; do
      ((i > 0)) && printf ','
      printf '\n    {"name": %s, "status": %s, "rc": %s, "seconds": %s, "log": %s, "note": %s%s}' \
        "$(json_str "${S_NAME[$i]}")" "$(json_str "${S_STATUS[$i]}")" "${S_RC[$i]}" \
        "${S_SECS[$i]}" "$(json_str "${S_LOG[$i]}")" "$(json_str "${S_NOTE[$i]}")" "${S_EXTRA[$i]}"
    done
    printf '\n  ],\n  "out_of_time": ['
    for i in "${!NOT_RUN[@]}"; do
      ((i > 0)) && printf ', '
      json_str "${NOT_RUN[$i]}"
    done
    printf '],\n  "failed": %d\n}\n' "$n_failed"
  } >"$tmp" && mv -f "$tmp" "$LOG_DIR/summary.json"
  N_FAILED=$n_failed
}

# ---- the steps ----------------------------------------------------------------------------------
versions_report() { # the versions step: what this run actually loads
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -a)"
  echo "cnnkit: $COMMIT, mode $MODE, DEADLINE $DEADLINE, logs $LOG_DIR"
  echo "caller's LD_LIBRARY_PATH=$ORIG_LDP"
  echo "binaries' LD_LIBRARY_PATH=${LDP:-(unchanged: build tree)}"
  echo
  timeout 60 "${LIBENV[@]}" "$CLI_BIN" version
  local rc=$? cs
  echo
  if command -v nvidia-smi >/dev/null 2>&1; then timeout 30 nvidia-smi 2>&1; else echo "nvidia-smi: not found"; fi
  echo
  echo "CUDA libraries as the binaries resolve them:"
  "${LIBENV[@]}" ldd "$TESTS_BIN" 2>&1 | grep -E 'cud|cublas|nvrtc|not found'
  if cs="$(find_sanitizer)"; then timeout 30 "$cs" --version 2>&1 | tail -n 2; else echo "compute-sanitizer: not found"; fi
  timeout 60 python3 -c 'import torch; print("python3 torch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version(), "GPU", torch.cuda.is_available())' 2>&1 | tail -n 1
  return $rc
}

have_data() { [[ -f "$DATA/train-images-idx3-ubyte.gz" || -f "$DATA/train-images-idx3-ubyte" ]]; }

train_20_steps=("$TRAIN_BENCH_BIN" --device cuda --model "$MODEL" --batches 128 --steps 18)
# racecheck checks shared memory within each launch, the same kernels every step: 20 steps at
# batch 128 ran past 120 s on the H200 (2026-12-04); 4 steps at batch 32 took about 70 s
train_race_steps=("$TRAIN_BENCH_BIN" --device cuda --model "$MODEL" --batches 32 --steps 2)

run_named() {
  local s="$1" cs t0 rc
  local gpu_env=("${LIBENV[@]}" CNNKIT_REQUIRE_GPU=1)
  # a step's figures are named after it: an earlier run's (the logs folder of a warm machine is
  # reused) must not stand in for a step that fails or skips now, nor be appended to
  rm -f "$LOG_DIR/$s.json" "$LOG_DIR/$s.jsonl" "$LOG_DIR/$s.md"
  case "$s" in
    versions) # a function (not under one timeout: each command in it has its own)
      echo "run.sh: [versions]"
      t0="$(now)"
      versions_report >"$LOG_DIR/versions.log" 2>&1
      rc=$?
      VERSIONS_LINE="$(sed -n '/^cnnkit [0-9]/{n;p;q}' "$LOG_DIR/versions.log")"
      echo "run.sh: [versions] rc $rc: ${VERSIONS_LINE:-no version line}"
      record versions "$([[ $rc == 0 ]] && echo ok || echo failed)" "$rc" "$(elapsed "$t0" "$(now)")" \
        versions.log "$VERSIONS_LINE" ""
      ;;
    gpu_tests)
      # 4 OpenMP threads a job keep the CPU halves off each other (a hung test fails after the
      # GPU suites' own 300 s: Criterion's --timeout only lowers a test's declared timeout)
      run_step gpu_tests tests 0 "${gpu_env[@]}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}" \
        "$TESTS_BIN" --jobs "$GPU_TEST_JOBS" --verbose \
        --filter "$GPU_FILTER" "${EXTRA_TEST_ARGS[@]}"
      ;;
    suite)
      run_step suite tests 0 "${gpu_env[@]}" "$TESTS_BIN" --jobs "$GPU_TEST_JOBS" "${EXTRA_TEST_ARGS[@]}"
      ;;
    train_short)
      if have_data; then
        run_step train_short plain 0 "${LIBENV[@]}" "$CLI_BIN" train "$MODEL" --data "$DATA" \
          --device cuda --batch 128 --seed 1 --epochs 1 --limit 12800 --log "$LOG_DIR/train_short.csv"
      else
        run_step train_short plain 0 "${LIBENV[@]}" "${train_20_steps[@]}"
      fi
      ;;
    train_fmnist)
      if have_data; then
        run_step train_fmnist plain 0 "${LIBENV[@]}" "$CLI_BIN" train "$MODEL" --data "$DATA" \
          --device cuda --batch 128 --seed 1 --epochs "$TRAIN_EPOCHS" --log "$LOG_DIR/train_fmnist.csv"
      else
        skip_step train_fmnist "no Fashion-MNIST in $DATA (make gpu-bundle BUNDLE_DATA=1)"
      fi
      ;;
    train_fmnist_bf16) # issue 16: the same training in bf16; only when named
      if have_data; then
        run_step train_fmnist_bf16 plain 0 "${LIBENV[@]}" "$CLI_BIN" train "$MODEL" --data "$DATA" \
          --device cuda --batch 128 --seed 1 --epochs "$TRAIN_EPOCHS" --precision bf16 \
          --log "$LOG_DIR/train_fmnist_bf16.csv"
      else
        skip_step train_fmnist_bf16 "no Fashion-MNIST in $DATA (make gpu-bundle BUNDLE_DATA=1)"
      fi
      ;;
    study_gpu) # issue 19's study on the device; not in any default list (a call of its own)
      if have_data; then
        run_step study_gpu plain 0 "${LIBENV[@]}" "$CLI_BIN" study "$MODEL" --data "$DATA" \
          --device cuda --seeds "$STUDY_SEEDS" --epochs "$STUDY_EPOCHS" --batch 128 \
          --csv "$LOG_DIR/study_gpu.csv" --svg "$LOG_DIR/study_gpu.svg"
      else
        skip_step study_gpu "no Fashion-MNIST in $DATA (make gpu-bundle BUNDLE_DATA=1)"
      fi
      ;;
    train_resnet) # issue 15: v1 then v2, one after the other (timed: alone on the GPU)
      if have_data; then
        run_step train_resnet plain 0 env R="$RESNETS" D="$DATA" E="$RESNET_EPOCHS" L="$LOG_DIR" \
          bash -c 'set -e; for v in 1 2; do "$@" train "$R/resnet20_v$v.py" --data "$D" --device cuda \
            --batch 128 --seed 1 --epochs "$E" --log "$L/train_resnet20_v$v.csv"; done' \
          _ "${LIBENV[@]}" "$CLI_BIN"
      else
        skip_step train_resnet "no Fashion-MNIST in $DATA (make gpu-bundle BUNDLE_DATA=1)"
      fi
      ;;
    study_resnet) # issue 15: the five placements around the addition
      if have_data; then
        run_step study_resnet plain 0 "${LIBENV[@]}" "$CLI_BIN" study "$RESNETS/resnet20_v1.py" --data "$DATA" \
          --device cuda --seeds "$RESNET_STUDY_SEEDS" --epochs "$RESNET_STUDY_EPOCHS" --batch 128 \
          --csv "$LOG_DIR/study_resnet.csv" --svg "$LOG_DIR/study_resnet.svg"
      else
        skip_step study_resnet "no Fashion-MNIST in $DATA (make gpu-bundle BUNDLE_DATA=1)"
      fi
      ;;
    train_profile)
      if have_data; then
        run_step train_profile plain 0 "${LIBENV[@]}" "$CLI_BIN" train "$MODEL" --data "$DATA" \
          --device cuda --batch 512 --seed 1 --epochs 1 --limit 25600 --profile
      else
        skip_step train_profile "no Fashion-MNIST in $DATA (make gpu-bundle BUNDLE_DATA=1)"
      fi
      ;;
    train_profile_bf16) # issue 16: the per-node profile in bf16 (roofline at the bf16 peak); named
      if have_data; then
        run_step train_profile_bf16 plain 0 "${LIBENV[@]}" "$CLI_BIN" train "$MODEL" --data "$DATA" \
          --device cuda --batch 512 --seed 1 --epochs 1 --limit 25600 --profile --precision bf16
      else
        skip_step train_profile_bf16 "no Fashion-MNIST in $DATA (make gpu-bundle BUNDLE_DATA=1)"
      fi
      ;;
    train_profile_tf32)
      if have_data; then
        run_step train_profile_tf32 plain 0 "${LIBENV[@]}" "$CLI_BIN" train "$MODEL" --data "$DATA" \
          --device cuda --batch 512 --seed 1 --epochs 1 --limit 25600 --profile \
          --conv-algo fastest --math tf32
      else
        skip_step train_profile_tf32 "no Fashion-MNIST in $DATA (make gpu-bundle BUNDLE_DATA=1)"
      fi
      ;;
    bench_train)
      run_step bench_train plain 0 "${LIBENV[@]}" "$TRAIN_BENCH_BIN" --device cuda --model "$MODEL" \
        "${BENCH_SIZE[@]}" --json "$LOG_DIR/bench_train.json"
      ;;
    bench_train_graph) # the same three sizes, eager then graphs, in one process
      run_step bench_train_graph plain 0 "${LIBENV[@]}" "$TRAIN_BENCH_BIN" --device cuda \
        --model "$MODEL" "${BENCH_SIZE[@]}" --cuda-graph both --json "$LOG_DIR/bench_train_graph.json"
      ;;
    bench_train_fastest)
      run_step bench_train_fastest plain 0 "${LIBENV[@]}" "$TRAIN_BENCH_BIN" --device cuda \
        --model "$MODEL" "${BENCH_SIZE[@]}" --conv-algo fastest --json "$LOG_DIR/bench_train_fastest.json"
      ;;
    bench_train_bf16)
      run_step bench_train_bf16 plain 0 "${LIBENV[@]}" "$TRAIN_BENCH_BIN" --device cuda \
        --model "$MODEL" "${BENCH_SIZE[@]}" --precision bf16 --json "$LOG_DIR/bench_train_bf16.json"
      ;;
    bench_train_tf32)
      run_step bench_train_tf32 plain 0 "${LIBENV[@]}" "$TRAIN_BENCH_BIN" --device cuda \
        --model "$MODEL" "${BENCH_SIZE[@]}" --conv-algo fastest --math tf32 \
        --json "$LOG_DIR/bench_train_tf32.json"
      ;;
    bench_cudnn)
      run_step bench_cudnn plain 0 "${LIBENV[@]}" "$BENCH_BIN" --json "$LOG_DIR/bench_cudnn.json" \
        "${EXTRA_BENCH_ARGS[@]}"
      ;;
    bench_ops) # the CSV on stdout; bench_ops.log keeps its stderr (the device, the failures)
      run_step bench_ops plain 0 "${LIBENV[@]}" bash -c '"$0" --bench-sizes --csv >"$1"' \
        "$OPS_BENCH_BIN" "$LOG_DIR/bench_ops.csv"
      ;;
    peer_torch) # python3 as the caller has it: the bundle's libraries stay out of its way
      if command -v python3 >/dev/null 2>&1 &&
        python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
        run_step peer_torch plain "$PEER_CAP" env PYTHONUNBUFFERED=1 python3 "$PEER" --device cuda \
          "${PEER_BATCHES[@]}" --json "$LOG_DIR/peer_torch.json"
      else
        skip_step peer_torch "python3 with CUDA-enabled torch not found"
      fi
      ;;
    peer_torch_bf16)
      if command -v python3 >/dev/null 2>&1 &&
        python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
        run_step peer_torch_bf16 plain "$PEER_CAP" env PYTHONUNBUFFERED=1 python3 "$PEER" --device cuda \
          --precision bf16 "${PEER_BATCHES[@]}" --json "$LOG_DIR/peer_torch_bf16.json"
      else
        skip_step peer_torch_bf16 "python3 with CUDA-enabled torch not found"
      fi
      ;;
    peer_keras) # the caller's python3 and JAX; keras from the bundle's wheels, into a temp folder
      if [[ -f "$PEER_KERAS" ]] && compgen -G "$WHEELS/keras-*.whl" >/dev/null &&
        command -v python3 >/dev/null 2>&1 && XLA_PYTHON_CLIENT_PREALLOCATE=false \
        python3 -c 'import jax, sys; sys.exit(0 if jax.default_backend() == "gpu" else 1)' 2>/dev/null; then
        # JAX would otherwise take 75% of the GPU up front; one JSON line per batch size
        # (wheels/fallback: keras's own dependencies, used only where the host's Python lacks them)
        run_step peer_keras plain "$PEER_CAP" env PYTHONUNBUFFERED=1 \
          XLA_PYTHON_CLIENT_PREALLOCATE=false bash -c 'site="$(mktemp -d)" && fb="$(mktemp -d)" &&
            python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$1"/*.whl &&
            if compgen -G "$1/fallback/*.whl" >/dev/null; then
              python3 -m pip install -q --no-index --no-deps --no-compile --target "$fb" "$1"/fallback/*.whl
            fi &&
            out="$(mktemp)" &&
            for b in ${4//,/ }; do
              PYTHONPATH="$site" python3 "$2" --backend jax --batch "$b" --steps "$5" --warmup 3 \
                --fallback-path "$fb" >"$out" || exit 1
              # only the JSON line goes to the JSONL (compare.py reads it strictly); the rest
              # a library printed stays in the log
              grep "^{" "$out" >>"$3"; grep -v "^{" "$out" || true
            done' _ "$WHEELS" "$PEER_KERAS" "$LOG_DIR/peer_keras.jsonl" "${BENCH_BATCHES:-128,512,2048}" \
          "$BENCH_STEPS"
      else
        skip_step peer_keras "no keras wheels in $WHEELS or no python3 with JAX on a GPU"
      fi
      ;;
    compare) # what the timed steps before it wrote: each file that exists
      local cargs=()
      # a file that cannot be read is left out, so the others compare; a bench killed at its
      # timeout leaves its JSON cut after its last whole row: compare.py reads those rows
      json_ok() { [[ -s "$1" ]] && python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$1" 2>/dev/null; }
      bench_ok() {
        [[ -s "$1" ]] && python3 -c 'import json, sys
t = open(sys.argv[1]).read()
try:
    d = json.loads(t)
except ValueError:
    d = json.loads(t.rstrip() + "]}")
sys.exit(0 if d.get("results") else 1)' "$1" 2>/dev/null
      }
      # bench_train_graph has the default settings both eager and with graphs: it stands for
      # bench_train when it has figures
      local base=bench_train
      bench_ok "$LOG_DIR/bench_train_graph.json" && base=bench_train_graph
      for f in $base:deterministic bench_train_fastest:fastest bench_train_tf32:fastest+tf32 \
        bench_train_bf16:bf16; do
        bench_ok "$LOG_DIR/${f%%:*}.json" && cargs+=(--cnnkit "${f#*:}=$LOG_DIR/${f%%:*}.json")
      done
      local n_cnnkit=${#cargs[@]}
      json_ok "$LOG_DIR/peer_torch.json" && cargs+=(--torch "$LOG_DIR/peer_torch.json")
      json_ok "$LOG_DIR/peer_torch_bf16.json" && cargs+=(--torch "$LOG_DIR/peer_torch_bf16.json")
      [[ -s "$LOG_DIR/peer_keras.jsonl" ]] && cargs+=(--keras "$LOG_DIR/peer_keras.jsonl")
      if ((n_cnnkit == 0)) || ! command -v python3 >/dev/null 2>&1; then
        skip_step compare "no bench_train figures in $LOG_DIR or no python3"
      else
        run_step compare plain 60 python3 "$COMPARE" "${cargs[@]}" --json "$LOG_DIR/compare.json" \
          --markdown "$LOG_DIR/compare.md"
      fi
      ;;
    memcheck | racecheck | initcheck | synccheck | *_train)
      local tool="${s%_train}" kind=san target
      if ! cs="$(find_sanitizer)"; then
        skip_step "$s" "compute-sanitizer not found"
        return
      fi
      local flags=(--tool "$tool" --target-processes all --error-exitcode 1)
      [[ "$tool" == memcheck ]] && flags+=(--leak-check full)
      # Criterion forks a process per test: --target-processes all follows them
      if [[ "$s" == racecheck_train ]]; then
        target=("${train_race_steps[@]}")
      elif [[ "$s" == *_train ]]; then
        target=("${train_20_steps[@]}")
      else
        kind=san_tests
        target=("$TESTS_BIN" --jobs 1 --filter "$SANITIZER_FILTER")
      fi
      run_step "$s" "$kind" "$SANITIZER_CAP" "${gpu_env[@]}" "$cs" "${flags[@]}" "${target[@]}"
      ;;
    tests)
      run_step tests tests 0 "${LIBENV[@]}" "$TESTS_BIN" --jobs "$(nproc)" "${EXTRA_TEST_ARGS[@]}"
      ;;
  esac
}

# ---- run ----------------------------------------------------------------------------------------
GPU_LINE="" VERSIONS_LINE="" N_FAILED=0
T_ALL="$(now)"
echo "run.sh: cnnkit $COMMIT, mode $MODE (${STEP_LIST[*]}), DEADLINE ${DEADLINE} s, logs in $LOG_DIR"
if command -v nvidia-smi >/dev/null 2>&1; then
  smi="$(nvidia-smi -L 2>&1)" || true
  echo "$smi"
  GPU_LINE="$(grep -m 1 '^GPU ' <<<"$smi" || true)"
else
  echo "run.sh: nvidia-smi not found"
fi
if [[ -z "$BUILD_DIR" ]]; then
  still="$(unresolved | tr '\n' ' ')"
  if [[ -n "${still// /}" ]]; then
    echo "run.sh: WARNING: unresolved libraries: $still"
    echo "run.sh: set CNNKIT_EXTRA_LIB_DIRS to the folders that hold them (versions.log lists the rest)"
  fi
fi
write_summary
IN_GROUP=0
for entry in "${STEP_LIST[@]}"; do # a+b+c: those steps at the same time (correctness runs only)
  IFS=+ read -r -a group <<<"$entry"
  ((${#group[@]} > 1)) && IN_GROUP=1
  for s in "${group[@]}"; do run_named "$s"; done
  IN_GROUP=0
  finish_steps
done

echo
printf '%-19s %-11s %5s %8s  %s\n' step status rc seconds note
for i in "${!S_NAME[@]}"; do
  printf '%-19s %-11s %5s %8s  %s\n' "${S_NAME[$i]}" "${S_STATUS[$i]}" \
    "$([[ "${S_RC[$i]}" == null ]] && echo - || echo "${S_RC[$i]}")" "${S_SECS[$i]}" "${S_NOTE[$i]}"
done
echo "run.sh: $N_FAILED step(s) failed${NOT_RUN[*]:+; out of time: ${NOT_RUN[*]}}; $COMMIT; $(elapsed "$T_ALL" "$(now)") s; $LOG_DIR/summary.json"
((N_FAILED == 0))
