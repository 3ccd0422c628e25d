#!/usr/bin/env bash
# Creates .venv in the repo (when missing; MMYOLO_VIS_VENV=<dir> chooses another place) and installs the
# pinned stack plus this project (editable).
# Idempotent: when nothing changed since the last successful run it only checks imports (seconds).
# The mmcv wheel is compiled once and cached outside the clone, keyed by mmcv, torch and Python:
#   ${MMYOLO_VIS_CACHE:-~/.cache/mmyolo_vis_hooks}/wheels/mmcv<ver>-torch<ver>-cp<ver>/
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MMYOLO_VIS_VENV:-$ROOT/.venv}
BASE_PY=${PYTHON:-python3}
MMCV_VERSION=2.1.0
TORCH_VERSION=$(sed -n 's/^torch==//p' "$ROOT/requirements/torch.txt")
CACHE=${MMYOLO_VIS_CACHE:-$HOME/.cache/mmyolo_vis_hooks}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$BASE_PY" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

stamp_file="$VENV/.mmyolo_vis_hooks.stamp"
stamp=$(cat "$ROOT/requirements/"*.txt "$ROOT/setup.cfg" "$ROOT/setup.py" "$0" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ] \
   && "$PY" -c "import mmcv.ops, mmdet, mmyolo, pytorch_grad_cam, sahi, mmyolo_vis_hooks" 2>/dev/null; then
  echo "[setup] $VENV is up to date"
  exit 0
fi

echo "[setup] installing build tools and torch"
"${PIP[@]}" install --quiet -r "$ROOT/requirements/build.txt"
"${PIP[@]}" install --quiet -r "$ROOT/requirements/torch.txt"

pytag=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
wheel_dir="$CACHE/wheels/mmcv$MMCV_VERSION-torch$TORCH_VERSION-$pytag"
if ! "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null; then
  bash "$ROOT/scripts/build_mmcv_wheel.sh" "$PY" "$MMCV_VERSION" "$wheel_dir"
  "${PIP[@]}" install --quiet --no-deps "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl
fi

echo "[setup] installing the pinned OpenMMLab / grad-cam / sahi stack"
# xtcocotools (mmpose's) is built from source: its PyPI wheel is built for NumPy 1 and fails to
# import under NumPy 2 ("numpy.dtype size changed"), which also stops MMYOLO's models importing.
"${PIP[@]}" install --quiet --no-binary xtcocotools -r "$ROOT/requirements/pinned.txt"
# One OpenCV distribution (opencv-python, which mmengine, mmcv and sahi require). Venvs made before
# also had opencv-python-headless: both write cv2/, so removing one needs the other reinstalled.
if "$PY" -m pip show --quiet opencv-python-headless 2>/dev/null; then
  echo "[setup] removing opencv-python-headless (a second OpenCV distribution)"
  "${PIP[@]}" uninstall --quiet -y opencv-python-headless
  "${PIP[@]}" install --quiet --force-reinstall --no-deps \
    "$(grep '^opencv-python==' "$ROOT/requirements/pinned.txt")"
fi
# albumentations/albucore wheels require opencv-python-headless; their setup.py chooses the OpenCV
# already installed, so build them from source here (no isolation: setup.py must see this venv;
# no cache: a wheel built elsewhere may name the other OpenCV).
"${PIP[@]}" install --quiet --force-reinstall --no-deps --no-binary albumentations,albucore \
  --no-build-isolation --no-cache-dir -r "$ROOT/requirements/albumentations.txt"
"${PIP[@]}" check
"${PIP[@]}" install --quiet --no-deps --no-build-isolation -e "$ROOT"
"$PY" -c "import mmcv.ops, mmdet, mmyolo, mmpose, pytorch_grad_cam, sahi, mmyolo_vis_hooks"
echo "$stamp" > "$stamp_file"
echo "[setup] done: $VENV"
