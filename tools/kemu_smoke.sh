#!/usr/bin/env bash
# Every step of the GPU bundle's run.sh (tools/bundle_run.sh) once, at tiny sizes, against a kemu
# build (the CPU emulation of CUDA, cuDNN and cuBLAS: README, "GPU tests without a GPU"): the
# plumbing of the device calls (commands, flags, file names, the JSON compare reads, summary.json)
# checked without device time. The figures mean nothing; the GPU tests themselves are
# `make test-emu`'s, so gpu_tests and the sanitizer steps run one test here.
#
#   bash tools/kemu_smoke.sh [EMU_BUILD [LOG_DIR]]     (defaults build-emu, build-emu/smoke)
#
# EMU_BUILD must hold the benches and the CLI: cmake -S . -B build-emu -DCNNKIT_EMU=ON
# -DCNNKIT_BUILD_BENCH=ON -DCNNKIT_NCCL=OFF -DCNNKIT_MPI=OFF && cmake --build build-emu.
# The data: the first 256 training and 128 test images of Fashion-MNIST. The sanitizer steps skip
# without compute-sanitizer, the peers without torch or JAX on a GPU; STEPS, GPU_FILTER and the
# other knobs of run.sh may be set. About 10 minutes on 2 cores. Exit status: run.sh's.
set -euo pipefail
BUILD="${1:-build-emu}"
LOGS="${2:-$BUILD/smoke}"
SRC=/usr/share/datasets/fashion-mnist
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[[ -x "$BUILD/bench/bench_train" && -x "$BUILD/cnnkit" ]] ||
  { echo "kemu_smoke: no $BUILD/bench/bench_train or $BUILD/cnnkit (see the header)" >&2; exit 2; }
grep -q '^CNNKIT_EMU:BOOL=ON' "$BUILD/CMakeCache.txt" 2>/dev/null ||
  { echo "kemu_smoke: $BUILD is not a kemu build (-DCNNKIT_EMU=ON)" >&2; exit 2; }
[[ -f "$SRC/train-images-idx3-ubyte.gz" ]] || { echo "kemu_smoke: no Fashion-MNIST in $SRC" >&2; exit 2; }
mkdir -p "$LOGS/data"
python3 - "$SRC" "$LOGS/data" <<'EOF'
import gzip, struct, sys
src, dst = sys.argv[1:]
for name, n in [("train-images-idx3-ubyte", 256), ("train-labels-idx1-ubyte", 256),
                ("t10k-images-idx3-ubyte", 128), ("t10k-labels-idx1-ubyte", 128)]:
    d = gzip.open(f"{src}/{name}.gz").read()
    nd = d[3]
    dims = list(struct.unpack(f">{nd}I", d[4:4 + 4 * nd]))
    per = 1
    for x in dims[1:]:
        per *= x
    head = d[:4] + struct.pack(f">{nd}I", n, *dims[1:])
    with gzip.open(f"{dst}/{name}.gz", "wb") as f:
        f.write(head + d[4 + 4 * nd:4 + 4 * nd + n * per])
EOF
ALL=versions,gpu_tests,train_short,train_fmnist,train_fmnist_bf16,study_gpu,train_resnet,study_resnet
ALL=$ALL,train_profile,train_profile_bf16,train_profile_tf32,bench_train,bench_train_graph
ALL=$ALL,bench_train_fastest,bench_train_tf32,bench_train_bf16,bench_cudnn,bench_ops,peer_torch
ALL=$ALL,peer_torch_bf16,peer_keras,compare,memcheck,racecheck_train
export KEMU_PROTECT=1 OMP_NUM_THREADS=1 CNNKIT_DATA="$LOGS/data"
exec env STEPS="${STEPS:-$ALL}" DEADLINE="${DEADLINE:-0}" GPU_TEST_JOBS="${GPU_TEST_JOBS:-1}" \
  GPU_FILTER="${GPU_FILTER:-gpu_bf16/kernels_match_cpu_bits}" \
  SANITIZER_FILTER="${SANITIZER_FILTER:-gpu_bf16/kernels_match_cpu_bits}" \
  TRAIN_EPOCHS="${TRAIN_EPOCHS:-1}" STUDY_SEEDS="${STUDY_SEEDS:-2}" STUDY_EPOCHS="${STUDY_EPOCHS:-1}" \
  RESNET_EPOCHS="${RESNET_EPOCHS:-1}" RESNET_STUDY_SEEDS="${RESNET_STUDY_SEEDS:-2}" \
  RESNET_STUDY_EPOCHS="${RESNET_STUDY_EPOCHS:-1}" BENCH_BATCHES="${BENCH_BATCHES:-8,16}" \
  BENCH_STEPS="${BENCH_STEPS:-2}" BENCH_ARGS="${BENCH_ARGS:---quick --repeats 2}" \
  bash "$HERE/bundle_run.sh" "$LOGS" --build "$BUILD"
