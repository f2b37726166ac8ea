#!/usr/bin/env bash
# Creates (once) the Python venv with real Keras that the Keras cross-checks and fixtures use:
# keras + the JAX CPU backend (a lighter install than TensorFlow) + h5py, from PyPI.
#   bash tools/keras_venv.sh [VENV_DIR]   (default $CNNKIT_KERAS_VENV or build/keras-venv)
# Prints the venv's python path on success; exit 1 (with the reason on stderr) when it cannot.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${CNNKIT_KERAS_VENV:-$ROOT/build/keras-venv}}"
PY="$VENV/bin/python"
PKGS=(keras==3.15.1 jax==0.10.2 h5py numpy)
if [[ -x "$PY" ]] && "$PY" -c "import keras, jax, h5py" >/dev/null 2>&1; then
  echo "$PY"
  exit 0
fi
PY3="$(command -v python3 || true)"
[[ -n "$PY3" ]] || { echo "keras_venv: no python3" >&2; exit 1; }
mkdir -p "$(dirname "$VENV")"
if ! "$PY3" -m venv "$VENV" >"$VENV.log" 2>&1; then
  echo "keras_venv: python3 -m venv failed (Debian: apt-get install python3-venv); see $VENV.log" >&2
  exit 1
fi
if ! timeout 180 "$PY" -m pip install -q --disable-pip-version-check --timeout 30 "${PKGS[@]}" >>"$VENV.log" 2>&1; then
  echo "keras_venv: pip install ${PKGS[*]} failed; see $VENV.log" >&2
  tail -n 3 "$VENV.log" >&2
  exit 1
fi
echo "$PY"
