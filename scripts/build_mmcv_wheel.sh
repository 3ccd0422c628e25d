#!/usr/bin/env bash
# Builds mmcv (with its compiled CPU ops) once and keeps the wheel in a cache outside the clone.
# PyPI ships only mmcv sources; torch 2.14 headers need C++20, mmcv 2.1.0 asks for C++17 and 2.0.1
# for C++14, so the -std flags in its setup.py are raised before building (see docs/install.md).
# The sources and objects stay in OUT_DIR/.build until the wheel exists: on a loaded 2-core machine
# the compile can take far longer than a session, and an interrupted one resumes where it stopped
# (ninja rebuilds only the objects that are missing or stale).
# Usage: build_mmcv_wheel.sh PYTHON MMCV_VERSION OUT_DIR
# FORCE_CUDA=1 (with CUDA_HOME and TORCH_CUDA_ARCH_LIST set, as build_mmcv_cuda_wheel.sh does)
# compiles the CUDA ops too.
set -euo pipefail
PY="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")" MMCV_VERSION=$2 OUT=$3
mkdir -p "$OUT"
if ls "$OUT"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
  exit 0
fi
build="$OUT/.build"
src="$build/mmcv-$MMCV_VERSION"
if [ ! -f "$src/.prepared" ]; then
  rm -rf "$build"
  mkdir -p "$build"
  "$PY" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
    "mmcv==$MMCV_VERSION" -d "$build"
  tar -xzf "$build/mmcv-$MMCV_VERSION.tar.gz" -C "$build"
  sed -i 's/-std=c++17/-std=c++20/g; s/-std=c++14/-std=c++20/g' "$src/setup.py"
  touch "$src/.prepared"
else
  echo "[setup] resuming the mmcv $MMCV_VERSION compile in $build" \
       "($(find "$src/build" -name '*.o' 2>/dev/null | wc -l) objects already there)"
fi
if [ "${FORCE_CUDA:-0}" = 1 ]; then
  echo "[setup] compiling mmcv $MMCV_VERSION ops for the CPU and CUDA" \
       "(arch ${TORCH_CUDA_ARCH_LIST:-?}, CUDA_HOME=${CUDA_HOME:-?}; done once)"
else
  echo "[setup] compiling mmcv $MMCV_VERSION ops for the CPU (77 files: about 12 min on 2 idle" \
       "cores, done once)"
fi
(cd "$src" && MMCV_WITH_OPS=1 FORCE_CUDA=${FORCE_CUDA:-0} MAX_JOBS=${MAX_JOBS:-2} \
  "$PY" -m pip wheel --quiet --no-deps --no-build-isolation . -w "$build/dist")
cp "$build"/dist/mmcv-*.whl "$OUT"/
rm -rf "$build"
