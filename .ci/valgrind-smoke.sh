#!/usr/bin/env bash
# valgrind memcheck on a short `cnnkit train` run: the seed model (parse, build, train, evaluate,
# checkpoint save) on a mini IDX copy of Fashion-MNIST made here: VALGRIND_IMAGES (default 8)
# training and as many test images, batch 8 (the full 10k test set would take an hour under
# valgrind; 256 + 256 images took 14 min on 2 busy cores). Fails on any memcheck error or
# a definite/indirect leak. Still-reachable / possibly-lost blocks of the OpenMP and OpenBLAS
# thread pools (alive until exit, not the library's) are listed in the log but do not fail.
#   bash .ci/valgrind-smoke.sh BUILD_DIR
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-build}"
SRC="${CNNKIT_DATA:-/usr/share/datasets/fashion-mnist}"
OUT="$BUILD/valgrind"
mkdir -p "$OUT/data"
command -v valgrind >/dev/null || { echo "valgrind-smoke: valgrind not installed"; exit 1; }
[[ -f "$SRC/train-images-idx3-ubyte.gz" || -f "$SRC/train-images-idx3-ubyte" ]] ||
  { echo "valgrind-smoke: no Fashion-MNIST in $SRC (dataset-fashion-mnist)"; exit 1; }
python3 - "$SRC" "$OUT/data" <<'PY'
import gzip, os, struct, sys
src, dst = sys.argv[1], sys.argv[2]
def read(name):
    p = os.path.join(src, name)
    if os.path.exists(p + ".gz"):
        with gzip.open(p + ".gz", "rb") as f:
            return f.read()
    with open(p, "rb") as f:
        return f.read()
N = int(os.environ.get("VALGRIND_IMAGES", "8"))
for split in ("train", "t10k"):
    im = read(f"{split}-images-idx3-ubyte")
    lb = read(f"{split}-labels-idx1-ubyte")
    _, _, r, c = struct.unpack(">IIII", im[:16])
    with open(os.path.join(dst, f"{split}-images-idx3-ubyte"), "wb") as f:
        f.write(struct.pack(">IIII", 0x803, N, r, c) + im[16:16 + N * r * c])
    with open(os.path.join(dst, f"{split}-labels-idx1-ubyte"), "wb") as f:
        f.write(struct.pack(">II", 0x801, N) + lb[8:8 + N])
PY
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
LOG="$OUT/memcheck.log"
set +e
valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite,indirect \
  --errors-for-leak-kinds=definite,indirect --error-exitcode=99 --track-origins=no \
  --num-callers=30 --suppressions="$ROOT/.ci/valgrind.supp" --log-file="$LOG" \
  "$BUILD/cnnkit" train "$ROOT/examples/seed_cnn.py" --data "$OUT/data" --device cpu \
  --epochs 1 --batch 8 --seed 1 --save "$OUT/smoke.ckpt" >"$OUT/train.out" 2>&1
rc=$?
set -e
tail -n 3 "$OUT/train.out" | sed 's/^/valgrind-smoke: cnnkit: /'
grep -E "ERROR SUMMARY|definitely lost|indirectly lost|possibly lost|still reachable" "$LOG" |
  sed 's/^==[0-9]*== */valgrind-smoke: /'
if ((rc != 0)); then
  echo "valgrind-smoke: FAILED (exit $rc), see $LOG"
  exit 1
fi
echo "valgrind-smoke: OK (no memcheck errors, no definite or indirect leaks)"
