#!/usr/bin/env bash
# CI phase `keras`: the live cross-check against real Keras (tools/keras_crosscheck.py).
#   bash tools/keras_crosscheck.sh [BUILD_DIR [ARGS of keras_crosscheck.py...]]
# A venv that cannot be installed (no network, no python3-venv) or a missing data set is a skip
# (exit 0 with a message); a failed comparison is a failure (exit 1).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-build}"
shift || true
cd "$ROOT"
if ! PY="$(bash tools/keras_venv.sh)"; then
  echo "keras-crosscheck: skipped: the Keras venv could not be installed (see above)"
  exit 0
fi
"$PY" tools/keras_crosscheck.py "$BUILD" "$@" 2> >(grep -v -E "^W0000|absl|cuda|GPU" >&2)
rc=$?
if ((rc == 77)); then
  exit 0 # the script said why it skipped
fi
exit "$rc"
