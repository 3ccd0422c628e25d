#!/usr/bin/env bash
# Builds, ahead and without a GPU, the mmcv 2.1.0 wheel with CUDA ops for one GPU arch, so that a
# GPU machine installs it in seconds instead of compiling for 20+ minutes on the spot
# (scripts/gpu_check.sh installs it from the cache; docs/install.md#on-a-gpu-machine).
#
#   bash scripts/build_mmcv_cuda_wheel.sh [ARCH]      ARCH: TORCH_CUDA_ARCH_LIST, default 9.0 (H100)
#
# PYTHON (default: the repository's .venv) must have a CUDA build of torch: the pinned
# torch==2.14.1 on x86_64 is one (CUDA 13.0). The CUDA compiler comes from the package registry:
# the `cuda-toolkit[nvcc,cccl]` release that this torch itself requires (its nvcc, crt, nvvm,
# cudart and CCCL wheels), installed with pip --target into the cache, never into the venv.
# CUDA_HOME is a folder of links joining it with the CUDA headers and libraries the venv already
# has for torch (cuBLAS, cuSPARSE, cuSOLVER, cuRAND). Then scripts/build_mmcv_wheel.sh compiles
# with FORCE_CUDA=1. The wheel lands outside the clone, keyed like setup_env.sh's CPU wheel:
#   ${MMYOLO_VIS_CACHE:-~/.cache/mmyolo_vis_hooks}/wheels/mmcv2.1.0-torch<v>-cp<v>-cu<v>-sm<arch>/
# TOOLKIT_ONLY=1 stops after the toolkit is in place and `nvcc --version` runs (no compile).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARCH=${1:-9.0}
PY=${PYTHON:-$ROOT/.venv/bin/python}
CACHE=${MMYOLO_VIS_CACHE:-$HOME/.cache/mmyolo_vis_hooks}
MMCV_VERSION=2.1.0

if ! [[ "$ARCH" =~ ^[0-9]+\.[0-9]+(\+PTX)?$ ]]; then
  echo "build_mmcv_cuda_wheel: ARCH must be one TORCH_CUDA_ARCH_LIST entry such as 9.0 (H100)," \
       "8.0 (A100) or 8.9 (L4), got '$ARCH'" >&2
  exit 2
fi
# What this torch was built with, and the toolkit release it requires.
read -r TORCH_VERSION CUDA_VERSION TOOLKIT PYTAG SITE < <("$PY" - <<'EOF'
import os, re, sys
from importlib import metadata
import torch
if not torch.version.cuda:
    sys.exit(f'build_mmcv_cuda_wheel: {sys.executable} has torch {torch.__version__} without '
             f'CUDA; install the pinned CUDA build (requirements/torch.txt) first')
spec = [r for r in metadata.requires('torch') or [] if r.startswith('cuda-toolkit')]
version = re.search(r'==\s*([0-9.]+)', spec[0]).group(1) if spec else ''
if not version:
    sys.exit(f'build_mmcv_cuda_wheel: torch {torch.__version__} does not name the cuda-toolkit '
             f'release it was built with (torch built for CUDA 13 does); give the toolkit wheels '
             f'by hand')
site = os.path.dirname(os.path.dirname(torch.__file__))
print(torch.__version__.split('+')[0], torch.version.cuda, version,
      f'cp{sys.version_info[0]}{sys.version_info[1]}', site)
EOF
)
CU=${CUDA_VERSION//./}
SM=${ARCH//./}
SM=${SM%+PTX}
OUT="$CACHE/wheels/mmcv$MMCV_VERSION-torch$TORCH_VERSION-$PYTAG-cu$CU-sm$SM"
if ls "$OUT"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
  echo "[cuda] $(ls "$OUT"/mmcv-"$MMCV_VERSION"-*.whl) is already built"
  exit 0
fi

# The toolkit: pip --target into the cache (about 100 MB download, 270 MB installed).
TK="$CACHE/toolkits/cuda-toolkit-$TOOLKIT"
if [ ! -x "$TK/site/nvidia/cu${CUDA_VERSION%%.*}/bin/nvcc" ]; then
  echo "[cuda] installing cuda-toolkit[nvcc,cccl]==$TOOLKIT into $TK/site"
  rm -rf "$TK"
  "$PY" -m pip install --quiet --disable-pip-version-check --target "$TK/site" \
    "cuda-toolkit[nvcc,cccl]==$TOOLKIT"
fi
tk_root="$TK/site/nvidia/cu${CUDA_VERSION%%.*}"
venv_root="$SITE/nvidia/cu${CUDA_VERSION%%.*}"

# CUDA_HOME: bin and nvvm from the toolkit; include and lib64 join the toolkit's and the venv's
# (links only). lib64 also gets the unversioned names the linker asks for (libcudart.so).
home="$TK/home"
rm -rf "$home"
mkdir -p "$home/include" "$home/lib64"
ln -s "$tk_root/bin" "$home/bin"
ln -s "$tk_root/nvvm" "$home/nvvm"
for root in "$tk_root" "$venv_root"; do
  [ -d "$root/include" ] && cp -rsn "$root/include/." "$home/include/"
  for lib in "$root"/lib/lib*.so*; do
    [ -e "$lib" ] || continue
    name=$(basename "$lib")
    ln -sfn "$lib" "$home/lib64/$name"
    ln -sfn "$lib" "$home/lib64/${name%%.so*}.so"
  done
done
"$home/bin/nvcc" --version | tail -n 2
[ "${TOOLKIT_ONLY:-0}" = 1 ] && { echo "[cuda] CUDA_HOME=$home (TOOLKIT_ONLY=1: no compile)"; exit 0; }

CUDA_HOME="$home" PATH="$home/bin:$PATH" FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" \
  bash "$ROOT/scripts/build_mmcv_wheel.sh" "$PY" "$MMCV_VERSION" "$OUT"
echo "[cuda] built $(ls "$OUT"/mmcv-"$MMCV_VERSION"-*.whl)"
