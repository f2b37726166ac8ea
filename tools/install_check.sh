#!/usr/bin/env bash
# A downstream user's link of the installed library (CI phase `install`):
#   bash tools/install_check.sh [BUILD_DIR]
# installs BUILD_DIR into a temporary prefix, then builds and runs one small C program against
# it four ways: pkg-config (shared and --static) and CMake's find_package(cnnkit) (cnnkit::cnnkit
# and cnnkit::cnnkit_static), each from a folder outside the source tree. The shared library
# exports only ck_* functions. Any failure exits 1.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$(cd "${1:-$ROOT/build}" && pwd)"
TMP="$(mktemp -d /tmp/cnnkit-install-XXXXXX)"
trap 'rm -rf "$TMP"' EXIT
PREFIX="$TMP/prefix"
cmake --install "$BUILD" --prefix "$PREFIX" > "$TMP/install.log" || {
  cat "$TMP/install.log"
  exit 1
}
LIBDIR="$(dirname "$(find "$PREFIX" -name cnnkit.pc | head -1)")/.."
LIBDIR="$(cd "$LIBDIR" && pwd)"

mkdir -p "$TMP/app"
cat > "$TMP/app/app.c" << 'EOF'
/* A model from Keras text, trained one step and asked for probabilities. */
#include <cnnkit/cnnkit.h>
#include <cnnkit/model.h>
#include <math.h>
#include <stdio.h>

int main(void) {
    ck_context *ctx = NULL;
    ck_model *m = NULL;
    char err[256];
    if (ck_context_create(&ctx, CK_DEVICE_CPU, 0, 1) != CK_STATUS_SUCCESS ||
        ck_model_from_keras_text(ctx,
                                 "model = keras.Sequential([keras.Input(shape=(6, 6, 1)), "
                                 "layers.Conv2D(2, 3, activation='relu'), layers.Flatten(), "
                                 "layers.Dense(3, activation='softmax')])\n",
                                 &m, err, sizeof err) != CK_STATUS_SUCCESS ||
        ck_model_build(m, 0, 0, 0, 4) != CK_STATUS_SUCCESS) {
        fprintf(stderr, "app: %s\n", ck_context_last_error(ctx));
        return 1;
    }
    float x[4 * 36], p[4 * 3];
    int y[4] = {0, 1, 2, 1};
    for (int i = 0; i < 4 * 36; ++i)
        x[i] = (float)((i * 7) % 11) / 11.0f;
    ck_step_result r;
    if (ck_model_train_step(m, x, y, 4, &r) != CK_STATUS_SUCCESS ||
        ck_model_predict(m, x, 4, p) != CK_STATUS_SUCCESS) {
        fprintf(stderr, "app: %s\n", ck_context_last_error(ctx));
        return 1;
    }
    double sum = 0.0;
    for (int i = 0; i < 3; ++i)
        sum += p[i];
    printf("loss %.4f, p(sample 0) sums to %.6f\n", r.loss, sum);
    ck_model_destroy(m);
    ck_context_destroy(ctx);
    return fabs(sum - 1.0) < 1e-5 && isfinite(r.loss) ? 0 : 1;
}
EOF

fail=0
run() { # run WHAT BINARY
  local out
  if out="$("$2" 2>&1)"; then
    echo "install-check: $1: ok ($out)"
  else
    echo "install-check: $1: FAILED: $out"
    fail=1
  fi
}

export PKG_CONFIG_PATH="$LIBDIR/pkgconfig"
cd "$TMP/app"
# shared: the library's RUNPATH finds its OpenBLAS, the program's finds the library
if gcc -std=c11 -O1 app.c $(pkg-config --cflags --libs cnnkit) -Wl,-rpath,"$LIBDIR" -lm \
  -o app_shared 2> build.log; then
  run "pkg-config, shared" ./app_shared
else
  echo "install-check: pkg-config, shared: link FAILED"
  cat build.log
  fail=1
fi
# static: the archive by path, then what pkg-config --static says it needs
if gcc -std=c11 -O1 app.c $(pkg-config --cflags cnnkit) "$LIBDIR/libcnnkit.a" \
  $(pkg-config --static --libs cnnkit | sed 's/-lcnnkit\b//') -o app_static 2> build.log; then
  run "pkg-config --static" ./app_static
  if ldd ./app_static | grep -q libcnnkit; then
    echo "install-check: pkg-config --static: FAILED: the program loads libcnnkit.so"
    fail=1
  fi
  if ! ldd ./app_static | grep -q 'openblas-openmp'; then
    echo "install-check: pkg-config --static: FAILED: not the OpenMP OpenBLAS the library uses:"
    ldd ./app_static | grep -i blas || true
    fail=1
  fi
else
  echo "install-check: pkg-config --static: link FAILED"
  cat build.log
  fail=1
fi

for target in cnnkit cnnkit_static; do
  mkdir -p "$TMP/cm_$target"
  cat > "$TMP/cm_$target/CMakeLists.txt" << EOF
cmake_minimum_required(VERSION 3.16)
project(app C)
find_package(cnnkit REQUIRED)
add_executable(app ../app/app.c)
target_link_libraries(app PRIVATE cnnkit::$target m)
EOF
  if cmake -S "$TMP/cm_$target" -B "$TMP/cm_$target/b" -DCMAKE_PREFIX_PATH="$PREFIX" \
    > "$TMP/cm_$target.log" 2>&1 && cmake --build "$TMP/cm_$target/b" >> "$TMP/cm_$target.log" 2>&1; then
    run "find_package, cnnkit::$target" "$TMP/cm_$target/b/app"
  else
    echo "install-check: find_package, cnnkit::$target: FAILED"
    tail -20 "$TMP/cm_$target.log"
    fail=1
  fi
done

# the shared library's exports: the ck_* API and nothing else
other="$(nm -D --defined-only "$LIBDIR"/libcnnkit.so | awk '$2 ~ /[TDBRW]/ {print $3}' |
  grep -v -E '^(ck_|_init$|_fini$|_edata$|_end$|__bss_start$)' || true)"
if [ -n "$other" ]; then
  echo "install-check: exports besides ck_*: FAILED:"
  echo "$other" | head -20
  fail=1
else
  echo "install-check: libcnnkit.so exports only ck_* symbols: ok"
fi
exit "$fail"
