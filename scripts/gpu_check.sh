#!/usr/bin/env bash
# The checks that need a CUDA device, run on cuda:0 in at most 8 minutes, then one table:
# what, pass/fail, seconds. Without a CUDA device it prints one line and exits 77.
#
#   bash scripts/gpu_check.sh        (PYTHON=<python of the project's set-up>, default .venv)
#
# Before the checks, mmcv's CUDA ops: when the installed mmcv has none (the CPU build of
# scripts/setup_env.sh), the wheel scripts/build_mmcv_cuda_wheel.sh built ahead for this GPU's
# arch is installed from the cache, if it is there (docs/install.md#on-a-gpu-machine).
# Logs: $GPU_CHECK_DIR (default a new folder under /tmp). Exit status: 0 when every check
# passed, 1 otherwise, 77 without a CUDA device.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
CACHE=${MMYOLO_VIS_CACHE:-$HOME/.cache/mmyolo_vis_hooks}
BUDGET_S=${GPU_CHECK_BUDGET_S:-480}
MMCV_VERSION=2.1.0

if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "gpu_check: $PY cannot import torch; set up the project first (scripts/setup_env.sh)"
  exit 1
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null
then
  echo "gpu_check: no CUDA device visible (torch.cuda.is_available() is False); nothing was run"
  exit 77
fi

# The Runner tests train with randomness.deterministic=True, which makes MMEngine call
# torch.use_deterministic_algorithms(True); cuBLAS then needs a fixed workspace.
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}
WORK=${GPU_CHECK_DIR:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$WORK/logs"
START=$(date +%s)
ROWS=()
FAILED=0

# run_step NAME LIMIT_S COMMAND...: runs COMMAND (in the repository, output to a log) for at
# most LIMIT_S seconds, never past the budget, and adds a row to the table.
run_step() {
  local name=$1 limit=$2 log
  shift 2
  log="$WORK/logs/$(echo "$name" | tr -c 'A-Za-z0-9' '_').log"
  local left=$((BUDGET_S - ($(date +%s) - START)))
  if [ "$left" -lt 10 ]; then
    ROWS+=("$name|skipped (8 min budget spent)|0")
    FAILED=1
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0=$SECONDS status
  (cd "$ROOT" && timeout --signal=KILL "$limit" "$@") >"$log" 2>&1
  local rc=$?
  if [ "$rc" -eq 0 ]; then
    status=pass
  elif [ "$rc" -eq 137 ]; then
    status="fail (over ${limit} s)"
    FAILED=1
  else
    status="fail (exit $rc; $log)"
    FAILED=1
  fi
  ROWS+=("$name|$status|$((SECONDS - t0))")
}

# mmcv's CUDA ops: where the installed mmcv has none, the cached wheel built for this torch,
# Python, CUDA and GPU arch (scripts/build_mmcv_cuda_wheel.sh).
mmcv_has_cuda() {
  "$PY" -c 'import sys; from mmcv.ops import get_compiling_cuda_version as v
sys.exit(0 if v() not in ("", "not available") else 1)' 2>/dev/null
}
t0=$SECONDS
if mmcv_has_cuda; then
  ROWS+=("mmcv CUDA ops (installed)|pass|$((SECONDS - t0))")
else
  TAG=$("$PY" -c 'import sys, torch
major, minor = torch.cuda.get_device_capability(0)
print(f"torch{torch.__version__.split(\"+\")[0]}-cp{sys.version_info[0]}{sys.version_info[1]}"
      f"-cu{torch.version.cuda.replace(\".\", \"\")}-sm{major}{minor}")')
  WHEELS="$CACHE/wheels/mmcv$MMCV_VERSION-$TAG"
  if ls "$WHEELS"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1 \
     && "$PY" -m pip install --quiet --no-deps --force-reinstall \
          "$WHEELS"/mmcv-"$MMCV_VERSION"-*.whl >"$WORK/logs/mmcv.log" 2>&1 \
     && mmcv_has_cuda; then
    ROWS+=("mmcv CUDA ops (installed from the cached wheel)|pass|$((SECONDS - t0))")
  else
    ROWS+=("mmcv CUDA ops: no wheel in $WHEELS (scripts/build_mmcv_cuda_wheel.sh)|fail|$((SECONDS - t0))")
    FAILED=1
  fi
fi

# Data: 4 validation images and one 1500x1000 image with small shapes.
"$PY" - "$WORK" <<'EOF' >"$WORK/logs/data.log" 2>&1
import sys
from mmyolo_vis_hooks.data.synthetic_shapes import SplitSpec, generate_large_image, generate_split
generate_split(sys.argv[1] + '/shapes', 'val', SplitSpec(4), seed=0)
generate_large_image(sys.argv[1] + '/large', seed=3, width=1500, height=1000, num_objects=60)
EOF
CONFIG=configs/demo/yolov5_n_shapes.py
CKPT=tests/assets/yolov5_n_shapes.pth
PYTEST=("$PY" -m pytest -q -p no:cacheprovider -m cuda)

run_step "torch.load (weights_only) of the demo checkpoint onto cuda:0" 60 "$PY" -c "
import torch
ckpt = torch.load('$CKPT', map_location='cuda:0', weights_only=True)
tensors = [v for v in ckpt['state_dict'].values() if torch.is_tensor(v)]
assert tensors and all(t.device.type == 'cuda' for t in tensors)"
run_step "both hooks, 2-epoch Runner, AmpOptimWrapper fp16 + ValLoop(fp16=True)" 200 \
  "${PYTEST[@]}" tests/hooks/test_amp.py
run_step "7 layer CAM methods: maps equal to the CPU's" 120 \
  "${PYTEST[@]}" tests/engine/cam/test_cam_engine.py -k "device_gives_the_cpu_maps and not drise"
run_step "D-RISE: maps equal to the CPU's" 60 \
  "${PYTEST[@]}" tests/engine/cam/test_cam_engine.py -k "device_gives_the_cpu_maps and drise"
run_step "faithfulness evaluation (mmyolo-boxam-eval, 4 images)" 90 \
  "$PY" -m mmyolo_vis_hooks.cli.boxam_eval "$WORK/shapes/annotations/val.json" "$CONFIG" "$CKPT" \
  --method gradcam drise --num-masks 100 --max-images 4 --steps 8 --device cuda:0 \
  --out-dir "$WORK/eval" --no-progress
run_step "sliced tool (mmyolo-sliced, 1500x1000)" 60 \
  "$PY" -m mmyolo_vis_hooks.cli.large_image_infer "$WORK/large/large_00000.png" "$CONFIG" "$CKPT" \
  --class-agnostic --device cuda:0 --out-dir "$WORK/sliced" --no-progress
run_step "sliced benchmark ratio (bench_large_image.py, 1 round)" 120 \
  "$PY" benchmarks/bench_large_image.py --image "$WORK/large/large_00000.png" \
  --ann "$WORK/large/large.json" --rounds 1 --folder-copies 1 --no-phases

echo
echo "gpu_check on $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))') (torch" \
     "$("$PY" -c 'import torch; print(torch.__version__)'), logs in $WORK/logs)"
printf '%-72s %-8s %s\n' "what" "result" "seconds"
for row in "${ROWS[@]}"; do
  IFS='|' read -r name status secs <<<"$row"
  printf '%-72s %-8s %s\n' "$name" "$status" "$secs"
done
echo "total: $(($(date +%s) - START)) s (budget $BUDGET_S s)"
bench_log="$WORK/logs/$(echo "sliced benchmark ratio (bench_large_image.py, 1 round)" \
  | tr -c 'A-Za-z0-9' '_').log"
if [ -s "$bench_log" ]; then
  echo "bench_large_image.py (its last lines):"
  tail -n 6 "$bench_log"
fi
exit "$FAILED"
