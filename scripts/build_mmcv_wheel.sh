#!/usr/bin/env bash
# Builds mmcv (with its compiled CPU ops) once and keeps the wheel in a cache outside the clone.
# PyPI ships only mmcv sources; torch 2.14 headers need C++20, mmcv 2.1.0 asks for C++17, so the
# three -std flags in its setup.py are raised before building (see docs/install.md).
# Usage: build_mmcv_wheel.sh PYTHON MMCV_VERSION OUT_DIR
# FORCE_CUDA=1 (with CUDA_HOME and TORCH_CUDA_ARCH_LIST set, as build_mmcv_cuda_wheel.sh does)
# compiles the CUDA ops too.
set -euo pipefail
PY="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")" MMCV_VERSION=$2 OUT=$3
mkdir -p "$OUT"
if ls "$OUT"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
  "mmcv==$MMCV_VERSION" -d "$work"
tar -xzf "$work/mmcv-$MMCV_VERSION.tar.gz" -C "$work"
src="$work/mmcv-$MMCV_VERSION"
sed -i 's/-std=c++17/-std=c++20/g; s/-std=c++14/-std=c++20/g' "$src/setup.py"
if [ "${FORCE_CUDA:-0}" = 1 ]; then
  echo "[setup] compiling mmcv $MMCV_VERSION ops for the CPU and CUDA" \
       "(arch ${TORCH_CUDA_ARCH_LIST:-?}, CUDA_HOME=${CUDA_HOME:-?}; done once)"
else
  echo "[setup] compiling mmcv $MMCV_VERSION ops for the CPU (about 12 min on 2 cores, done once)"
fi
(cd "$src" && MMCV_WITH_OPS=1 FORCE_CUDA=${FORCE_CUDA:-0} MAX_JOBS=${MAX_JOBS:-2} \
  "$PY" -m pip wheel --quiet --no-deps --no-build-isolation . -w "$work/dist")
cp "$work"/dist/mmcv-*.whl "$OUT"/
