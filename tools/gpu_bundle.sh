#!/usr/bin/env bash
# Make a relocatable folder that runs cnnkit's tests and benches on a GPU machine that has the
# NVIDIA driver and the CUDA runtime, cuBLAS and cuDNN, but not cnnkit's build dependencies.
#
#   bash tools/gpu_bundle.sh BUILD_DIR OUT_DIR      (`make gpu-bundle` does: build -> gpu-bundle)
#   OUT_DIR/run.sh LOG_DIR [--triage]                (on the GPU machine; docs/gpu-runbook.md)
#
# Layout of OUT_DIR:
#   bin/cnnkit_tests, bin/bench_*, bin/cnnkit   the binaries, unmodified (nothing is patched)
#   lib/                                  shared libraries they need that a GPU runner may lack
#   lib/fallback/                         libstdc++, libcudart: used only when the runner has
#                                         none (below)
#   run.sh                                copied from tools/bundle_run.sh; sets LD_LIBRARY_PATH
#   MANIFEST.txt                          files, sizes, sha256, git commit, date, libraries
#
# Which libraries are copied: every library that `ldd` resolves for the two binaries (ldd lists
# the whole dependency closure: Criterion's libnanomsg, libgit2, libffi, and what libgit2 pulls in
# such as mbedtls, libssh2, krb5, libcrypto, libz), EXCEPT
#   * the glibc family (libc, libm, libmvec, libpthread, libdl, librt, libresolv, libutil, libnsl,
#     libanl, ld-linux) and libgcc_s: they must match the runner's own dynamic loader, and any
#     runner newer than the build machine has compatible versions;
#   * the NVIDIA driver (libcuda, libnvidia-*) and the CUDA libraries (libcublas, libcublasLt,
#     libcudnn*, libnvrtc, libnvJitLink, ...): the GPU runner provides them, matched to its driver;
#     run.sh looks for them in /usr/local/cuda and, failing that, in the usual places, including
#     the pip "nvidia-*" wheels of a Python install (site-packages/nvidia/cudnn/lib of
#     nvidia-cudnn-cu13). They cannot travel: cuDNN 9 alone is ~500 MB (its precompiled engines
#     245 MB), cuBLASLt 540 MB, against the device tool's 64 MiB.
# libcudart (0.7 MB) goes into lib/fallback/: it matches the headers of the build, and the
# runner's own copy wins when it has one.
# libgomp (OpenMP runtime of the compiler that built cnnkit) goes into lib/: cnnkit's own code is
# its only user, and a minimal runner may lack it. libstdc++ is also kept, but in lib/fallback/,
# which run.sh adds at the END of LD_LIBRARY_PATH only when the runner lacks libstdc++ or
# libcudart: its users are the runner's CUDA libraries (cuDNN, cuBLAS), which may need a
# libstdc++ newer than the build machine's, so the runner's own libstdc++ is used whenever it has
# one (a folder on LD_LIBRARY_PATH is searched before the loader's cache), and the bundled copy
# only fills a gap.
set -euo pipefail

die() { printf 'gpu_bundle: error: %s\n' "$*" >&2; exit 1; }
log() { printf 'gpu_bundle: %s\n' "$*"; }

if [[ $# -ne 2 ]]; then
  echo "usage: $0 BUILD_DIR OUT_DIR" >&2
  exit 2
fi
BUILD_DIR="$1"
OUT_DIR="$2"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
RUN_TEMPLATE="$SCRIPT_DIR/bundle_run.sh"

command -v ldd >/dev/null 2>&1 || die "ldd not found"
[[ -d "$BUILD_DIR" ]] || die "build folder '$BUILD_DIR' does not exist (run 'make build' first)"
[[ -f "$RUN_TEMPLATE" ]] || die "missing $RUN_TEMPLATE"

declare -A BIN_SRC=(
  [cnnkit_tests]="$BUILD_DIR/tests/cnnkit_tests"
  [bench_cudnn]="$BUILD_DIR/bench/bench_cudnn"
  [bench_ops]="$BUILD_DIR/bench/bench_ops"
  [bench_train]="$BUILD_DIR/bench/bench_train"
  [cnnkit]="$BUILD_DIR/cnnkit"
)
BIN_NAMES=(cnnkit_tests bench_cudnn bench_ops bench_train cnnkit)
for b in "${BIN_NAMES[@]}"; do
  src="${BIN_SRC[$b]}"
  [[ -f "$src" && -x "$src" ]] ||
    die "binary '$src' is missing (is Criterion installed? did '$b' build? run 'make build')"
done

# Refuse to wipe a folder that is not an earlier bundle.
if [[ -e "$OUT_DIR" ]]; then
  [[ -d "$OUT_DIR" ]] || die "'$OUT_DIR' exists and is not a folder"
  if [[ -n "$(ls -A "$OUT_DIR")" && ! -f "$OUT_DIR/MANIFEST.txt" ]]; then
    die "'$OUT_DIR' is not empty and holds no MANIFEST.txt: not overwriting it"
  fi
  rm -rf "$OUT_DIR"
fi
mkdir -p "$OUT_DIR/bin" "$OUT_DIR/lib/fallback"

# Decide what happens to one library, from its soname: excluded (runner provides) or where to copy.
classify() { # prints: skip-system | skip-cuda | lib | fallback
  case "$1" in
    linux-vdso.so* | linux-gate.so* | ld-linux*.so* | ld64.so* | \
      libc.so.* | libm.so.* | libmvec.so.* | libpthread.so.* | libdl.so.* | librt.so.* | \
      libresolv.so.* | libutil.so.* | libnsl.so.* | libanl.so.* | libBrokenLocale.so.* | \
      libthread_db.so.* | libgcc_s.so.*)
      echo skip-system ;;
    libcudart.so.*)
      echo fallback ;;
    libcuda.so* | libnvidia-*.so* | libcublas.so* | libcublasLt.so* | \
      libcudnn*.so* | libnvrtc*.so* | libnvJitLink.so* | libcufft*.so* | libcurand.so* | \
      libcusparse*.so* | libcusolver*.so* | libnccl.so* | libnvToolsExt.so* | libcupti.so*)
      echo skip-cuda ;;
    libstdc++.so.*)
      echo fallback ;;
    *)
      echo lib ;;
  esac
}

declare -A COPIED=()   # soname -> where it went (lib or lib/fallback)
declare -A EXCLUDED=() # soname -> reason and where it resolved here
MISSING=()
uses_cuda=no
for b in "${BIN_NAMES[@]}"; do
  src="${BIN_SRC[$b]}"
  cp -p "$src" "$OUT_DIR/bin/$b"
  ldd_out="$(ldd "$src" 2>&1)" || die "ldd failed on $src: $ldd_out"
  while IFS= read -r line; do
    line="${line#"${line%%[![:space:]]*}"}" # trim leading blanks
    [[ -z "$line" ]] && continue
    name="${line%% *}"
    path=""
    if [[ "$line" == *" => not found"* ]]; then
      path="NOT-FOUND"
    elif [[ "$line" == *" => "* ]]; then
      path="${line#* => }"
      path="${path%% (*}"
    elif [[ "$line" == /* ]]; then
      path="${line%% (*}" # the dynamic loader itself
      name="$(basename "$path")"
    fi
    [[ -n "$path" ]] || continue # linux-vdso and "statically linked"
    name="$(basename "$name")"
    kind="$(classify "$name")"
    [[ "$name" == libcudart.so* ]] && uses_cuda=yes
    case "$kind" in
      skip-system) EXCLUDED[$name]="system: $path" ;;
      skip-cuda) EXCLUDED[$name]="cuda/driver (runner provides): $path" ;;
      lib | fallback)
        if [[ "$path" == "NOT-FOUND" ]]; then
          MISSING+=("$name (needed by $b)")
          continue
        fi
        [[ -n "${COPIED[$name]:-}" ]] && continue
        dest="lib"
        [[ "$kind" == fallback ]] && dest="lib/fallback"
        cp -L "$path" "$OUT_DIR/$dest/$name"
        chmod 0644 "$OUT_DIR/$dest/$name"
        COPIED[$name]="$dest (from $path)"
        ;;
    esac
  done <<<"$ldd_out"
done
if ((${#MISSING[@]})); then
  die "libraries that ldd cannot resolve here, so they cannot be bundled: ${MISSING[*]}"
fi

install -m 0755 "$RUN_TEMPLATE" "$OUT_DIR/run.sh"
# the model the benches and the training run use, the PyTorch peer script, and (when
# BUNDLE_DATA=1 and the Debian package is installed) Fashion-MNIST for a training run on the GPU
mkdir -p "$OUT_DIR/share"
cp "$REPO_DIR/examples/seed_cnn.py" "$REPO_DIR/examples/resnet20_v1.py" \
  "$REPO_DIR/examples/resnet20_v2.py" "$REPO_DIR/bench/peer_torch.py" "$REPO_DIR/bench/peer_keras.py" \
  "$REPO_DIR/bench/compare.py" "$OUT_DIR/share/"
# Keras for the Keras peer on the GPU host (which has JAX but no keras and no network): the wheels
# for its Python 3.12, fetched here at bundle time; without network the peer step skips there
KERAS_WHEELS=(keras==3.15.1 namex==0.1.0 optree==0.20.0)
if ! timeout 120 python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$OUT_DIR/share/wheels" "${KERAS_WHEELS[@]}" >/dev/null 2>&1; then
  echo "gpu_bundle: warning: could not download ${KERAS_WHEELS[*]}: the Keras peer will skip" >&2
  rm -rf "$OUT_DIR/share/wheels"
fi
# Keras's pure-Python dependencies that a Python with only JAX lacks (import keras needs each;
# h5py only for files, not here): share/wheels/fallback, put after the host's site-packages by
# peer_keras.py --fallback-path, so the host's own copies win
KERAS_FALLBACK=(typing_extensions==4.16.0 absl-py==2.5.1 rich==15.0.0 markdown-it-py==4.3.0
  mdurl==0.1.2 pygments==2.21.0 packaging==26.4)
if [[ -d "$OUT_DIR/share/wheels" ]] && ! timeout 120 python3 -m pip download -q --no-deps \
  --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
  -d "$OUT_DIR/share/wheels/fallback" "${KERAS_FALLBACK[@]}" >/dev/null 2>&1; then
  echo "gpu_bundle: warning: could not download ${KERAS_FALLBACK[*]}: the Keras peer needs them on the host" >&2
  rm -rf "$OUT_DIR/share/wheels/fallback"
fi
FMNIST=/usr/share/datasets/fashion-mnist
if [[ "${BUNDLE_DATA:-0}" == 1 && -d "$FMNIST" ]]; then
  mkdir -p "$OUT_DIR/share/fashion-mnist"
  cp "$FMNIST"/*.gz "$OUT_DIR/share/fashion-mnist/"
fi

# ---- MANIFEST.txt -------------------------------------------------------------------------------
commit="unknown"
describe="unknown"
if command -v git >/dev/null 2>&1 && git -C "$REPO_DIR" rev-parse HEAD >/dev/null 2>&1; then
  commit="$(git -C "$REPO_DIR" rev-parse HEAD)"
  describe="$(git -C "$REPO_DIR" describe --always --dirty 2>/dev/null || echo "$commit")"
fi
cuda_backend="unknown"
if [[ -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  if grep -q '^CNNKIT_CUDNN_LIB:FILEPATH=/' "$BUILD_DIR/CMakeCache.txt" && [[ "$uses_cuda" == yes ]]; then
    cuda_backend="ON"
  elif [[ "$uses_cuda" == no ]]; then
    cuda_backend="OFF"
  fi
fi

{
  echo "cnnkit GPU bundle"
  echo "commit: $commit"
  echo "describe: $describe"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  os="$(sed -n 's/^PRETTY_NAME="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release 2>/dev/null || true)"
  echo "built_on: $(uname -srm) (${os:-unknown OS})"
  echo "build_dir: $(cd "$BUILD_DIR" && pwd)"
  echo "cuda_backend: $cuda_backend"
  echo
  echo "files (bytes sha256 path):"
  (cd "$OUT_DIR" && find . -type f ! -name MANIFEST.txt -printf '%P\n' | LC_ALL=C sort |
    while IFS= read -r f; do
      printf '  %10d %s %s\n' "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -c1-64)" "$f"
    done)
  echo
  echo "bundled libraries (soname -> folder, source here):"
  printf '%s\n' "${!COPIED[@]}" | LC_ALL=C sort | while IFS= read -r n; do
    if [[ -n "$n" ]]; then echo "  $n -> ${COPIED[$n]}"; fi
  done
  echo
  echo "not bundled (the runner must provide them):"
  printf '%s\n' "${!EXCLUDED[@]}" | LC_ALL=C sort | while IFS= read -r n; do
    if [[ -n "$n" ]]; then echo "  $n: ${EXCLUDED[$n]}"; fi
  done
} >"$OUT_DIR/MANIFEST.txt"

total="$(du -sh "$OUT_DIR" | cut -f1)"
# a compressed copy next to the folder: the device tool carries at most 64 MiB in all (the
# archive and the rest of the working tree), so the archive must stay well under it
tar -C "$(dirname "$OUT_DIR")" -cJf "$OUT_DIR.tar.xz" "$(basename "$OUT_DIR")"
archive_bytes="$(stat -c %s "$OUT_DIR.tar.xz")"
limit_bytes=$((60 * 1024 * 1024))
if ((archive_bytes > limit_bytes)); then
  die "$OUT_DIR.tar.xz is $archive_bytes bytes, over the 60 MiB this bundle may take of the device tool's 64 MiB"
fi
log "archive $OUT_DIR.tar.xz ($archive_bytes bytes, $((archive_bytes / 1048576)) MiB); on the GPU machine: tar xJf it, then run.sh (docs/gpu-runbook.md)"
log "bundle in $OUT_DIR ($total): ${#BIN_NAMES[@]} binaries, ${#COPIED[@]} libraries, commit ${commit:0:12}, CUDA backend $cuda_backend"
if [[ "$cuda_backend" == OFF ]]; then
  log "WARNING: the binaries were built without the CUDA backend; GPU tests will all skip"
fi
