#!/usr/bin/env bash
# Install cnnkit's build and test dependencies on Debian 12 (bookworm).
#
# Idempotent: only packages that are missing are installed, and `apt-get update` runs at most
# once, and only when something is missing. Quiet: one line per action.
#
#   bash tools/install_deps.sh
#
# Required packages failing to install -> exit 1. Optional packages (the PyTorch reference used by
# tools/gen_golden.py and the Fashion-MNIST data set) only produce a warning.
# The CUDA toolkit and cuDNN are not Debian packages here; they are expected in /usr/local/cuda
# (or are absent, and then cnnkit builds CPU only).
set -euo pipefail

# libopenblas-openmp-dev: the OpenMP build of OpenBLAS shares libgomp's threads with cnnkit's own
# OpenMP loops (the pthreads build and libgomp spin against each other: 1.7x slower on 2 cores)
# libhdf5-dev, libzip-dev, libjansson-dev: the Keras file formats (.keras, .weights.h5, .h5)
# libopenmpi-dev, openmpi-bin: the MPI communicator and its 2- and 3-rank tests (docs/distributed.md)
REQUIRED=(cmake make gcc pkg-config libcriterion-dev zlib1g-dev libopenblas-dev libopenblas-openmp-dev
  libhdf5-dev libzip-dev libjansson-dev libopenmpi-dev openmpi-bin)
OPTIONAL=(dataset-fashion-mnist)
# PyTorch (large) is only needed to regenerate golden data and run bench/peer_torch.py:
# CNNKIT_WITH_TORCH=1 bash tools/install_deps.sh
if [[ "${CNNKIT_WITH_TORCH:-0}" == 1 ]]; then OPTIONAL+=(python3-torch); fi
# CI's hardening phases (.ci/run sets this): valgrind for `make valgrind`, clang (with its
# libFuzzer runtime) for `make fuzz`, python3 to cut the mini data set of the valgrind run, g++
# for `make test-emu` (the kernels compiled as C++ against kemu)
if [[ "${CNNKIT_WITH_CI_TOOLS:-0}" == 1 ]]; then REQUIRED+=(valgrind clang libclang-rt-14-dev python3 g++); fi

log() { printf 'install_deps: %s\n' "$*"; }

is_installed() {
  local status
  status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) || return 1
  [[ "$status" == *" ok installed" ]]
}

if ! command -v dpkg-query >/dev/null 2>&1; then
  log "dpkg-query not found: this script supports Debian/Ubuntu only."
  log "needed: ${REQUIRED[*]} (optional: ${OPTIONAL[*]})"
  exit 1
fi

missing_req=()
missing_opt=()
for p in "${REQUIRED[@]}"; do is_installed "$p" || missing_req+=("$p"); done
for p in "${OPTIONAL[@]}"; do is_installed "$p" || missing_opt+=("$p"); done

if ((${#missing_req[@]} == 0 && ${#missing_opt[@]} == 0)); then
  log "all packages present (${REQUIRED[*]} ${OPTIONAL[*]})"
  exit 0
fi

# How to run apt-get: directly as root, through non-interactive sudo otherwise.
SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    SUDO=(sudo -n)
  elif command -v sudo >/dev/null 2>&1 && [[ -t 0 ]]; then
    log "using sudo (it may ask for a password)"
    SUDO=(sudo)
  else
    ((${#missing_req[@]})) && log "missing required: ${missing_req[*]}"
    ((${#missing_opt[@]})) && log "missing optional: ${missing_opt[*]}"
    all_missing=("${missing_req[@]}" "${missing_opt[@]}")
    log "not root and no usable sudo; as root run: apt-get install ${all_missing[*]}"
    ((${#missing_req[@]} == 0)) && exit 0
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
APT_LOG=$(mktemp "${TMPDIR:-/tmp}/install_deps.XXXXXX")
trap 'rm -f "$APT_LOG"' EXIT

apt_install() { # apt_install PKG... ; output goes to $APT_LOG, shown only on failure
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "$@" >"$APT_LOG" 2>&1
}

log "apt-get update"
if ! "${SUDO[@]}" apt-get update -q >"$APT_LOG" 2>&1; then
  log "apt-get update failed (continuing with the current package lists):"
  tail -n 5 "$APT_LOG" | sed 's/^/  /'
fi

rc=0
if ((${#missing_req[@]})); then
  log "installing required: ${missing_req[*]}"
  if ! apt_install "${missing_req[@]}"; then
    tail -n 10 "$APT_LOG" | sed 's/^/  /'
    still=()
    for p in "${missing_req[@]}"; do is_installed "$p" || still+=("$p"); done
    log "ERROR: could not install required: ${still[*]:-?}"
    rc=1
  fi
fi

# Optional packages one by one, so that one unavailable package does not block the other.
for p in "${missing_opt[@]}"; do
  log "installing optional: $p"
  if ! apt_install "$p"; then
    log "WARNING: could not install optional package $p (continuing)"
  fi
done

if ((rc == 0)); then
  log "done"
fi
exit "$rc"
