#!/usr/bin/env bash
# The wheel in an environment with the OFFICIAL mmyolo 0.6.0 (mmcv 2.0.1 with its compiled ops),
# end to end: install, import, the four console tools, a 2-epoch training run with both hooks read
# back from TensorBoard, and the unit tier and the hook/CAM tests; then mmrotate and mmpose 1.x.
#
#   bash scripts/check_official_mmyolo_env.sh [WORK_DIR]      (default /tmp/official_mmyolo_env)
#
# Stack: torch/torchvision as pinned in requirements/torch.txt (the project's), mmcv 2.0.1 built
# with its ops by scripts/build_mmcv_wheel.sh (compiled once, cached like setup_env.sh's 2.1.0
# wheel, keyed by mmcv, torch and Python), then `pip install 'mmyolo[mim]==0.6.0'` with the
# mmdet and mmengine versions pip picks, then this project's wheel built from the committed HEAD
# (git archive), not from the working tree. Everything after the install runs from folders that
# hold no copy of the package. Not part of the test suite; the measured output and timings are in
# docs/official_mmyolo_check.md. Set SKIP_EXTRAS=1 to leave out the mmrotate/mmpose stage.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${1:-/tmp/official_mmyolo_env}
BASE_PY=${PYTHON:-python3}
MMCV_VERSION=2.0.1
TORCH_VERSION=$(sed -n 's/^torch==//p' "$ROOT/requirements/torch.txt")
CACHE=${MMYOLO_VIS_CACHE:-$HOME/.cache/mmyolo_vis_hooks}
rm -rf "$WORK"
mkdir -p "$WORK/src" "$WORK/dist" "$WORK/run"
"$BASE_PY" -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
failures=()

# step NAME CMD...: runs CMD, prints its wall time and exit code, remembers a failure
step() {
  local name=$1 start rc
  shift
  start=$(date +%s)
  "$@"
  rc=$?
  echo "-- [$name] $(( $(date +%s) - start )) s, exit $rc"
  [ "$rc" -eq 0 ] || failures+=("$name")
  return 0
}
quiet_pip() { "${PIP[@]}" "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; }; }

echo "== set-up: $(sed -n 's/^\(torch[a-z]*==.*\)$/\1/p' "$ROOT/requirements/torch.txt" | tr '\n' ' ')," \
     "mmcv $MMCV_VERSION with ops, mmyolo[mim]==0.6.0 ($("$PY" -V), $(nproc) CPUs)"
step "build tools and torch" quiet_pip install --quiet -r "$ROOT/requirements/build.txt" \
  -r "$ROOT/requirements/torch.txt"
pytag=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
wheel_dir="$CACHE/wheels/mmcv$MMCV_VERSION-torch$TORCH_VERSION-$pytag"
cached=$(ls "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null && echo yes || echo no)
echo "mmcv wheel cache: $wheel_dir (cached before this run: ${cached##*$'\n'})"
step "mmcv $MMCV_VERSION wheel" bash "$ROOT/scripts/build_mmcv_wheel.sh" "$PY" "$MMCV_VERSION" \
  "$wheel_dir"
step "install mmcv wheel" quiet_pip install --quiet --no-deps "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl
step "install mmyolo[mim]==0.6.0" quiet_pip install --quiet 'mmyolo[mim]==0.6.0'

snapshot() {  # $1: before|after
  "${PIP[@]}" freeze > "$WORK/freeze_$1.txt"
  "${PIP[@]}" show -f mmyolo > "$WORK/mmyolo_show_$1.txt"
  # sha256 of every file the mmyolo distribution installed (its RECORD), and of RECORD itself
  "$PY" - "$WORK/mmyolo_files_$1.txt" <<'EOF'
import hashlib, sys
from importlib import metadata
dist = metadata.distribution('mmyolo')
with open(sys.argv[1], 'w') as out:
    for f in sorted(dist.files, key=str):
        path = f.locate()
        if path.is_file():
            out.write(f'{hashlib.sha256(path.read_bytes()).hexdigest()}  {f}\n')
EOF
  echo "-- $1: $(grep -iE '^(torch|torchvision|mmcv|mmdet|mmengine|mmyolo|numpy)==' \
    "$WORK/freeze_$1.txt" | tr '\n' ' ')"
  echo "-- $1: mmyolo $(wc -l < "$WORK/mmyolo_files_$1.txt") files, RECORD sha256" \
       "$(grep ' mmyolo-0.6.0.dist-info/RECORD$' "$WORK/mmyolo_files_$1.txt" | cut -c1-16)..."
  echo "-- $1: pip check: $("${PIP[@]}" check 2>&1 | tr '\n' ' ')"
  echo "-- $1: OpenCV distributions: $(grep -i '^opencv' "$WORK/freeze_$1.txt" | tr '\n' ' ')"
}
snapshot before

echo "== the wheel (from HEAD $(git -C "$ROOT" rev-parse --short HEAD))"
git -C "$ROOT" archive HEAD | tar -x -C "$WORK/src"
step "build the wheel" quiet_pip wheel --quiet --no-deps --no-build-isolation -w "$WORK/dist" \
  "$WORK/src"
wheel=$(ls "$WORK"/dist/mmyolo_vis_hooks-*.whl)
echo "$(basename "$wheel") Requires-Python: $(unzip -p "$wheel" '*.dist-info/METADATA' \
  | sed -n 's/^Requires-Python: //p'); requires: $(unzip -p "$wheel" '*.dist-info/METADATA' \
  | sed -n 's/^Requires-Dist: \([^;]*\)$/\1/p' | tr '\n' ',')"
# with its [sliced] extra (sahi, tifffile, imagecodecs), as the README installs it
step "install the wheel" quiet_pip install --quiet "$wheel[sliced]"
snapshot after

echo "== what the install changed (pip freeze before -> after)"
{ diff "$WORK/freeze_before.txt" "$WORK/freeze_after.txt" || true; } | grep '^[<>]' \
  | sed 's/ @ file:.*//' || true
if cmp -s "$WORK/mmyolo_files_before.txt" "$WORK/mmyolo_files_after.txt" \
   && cmp -s "$WORK/mmyolo_show_before.txt" "$WORK/mmyolo_show_after.txt"; then
  echo "mmyolo untouched: same version, same files, same sha256 of every file"
else
  echo "mmyolo CHANGED"; diff "$WORK/mmyolo_files_before.txt" "$WORK/mmyolo_files_after.txt"
  failures+=("mmyolo changed")
fi
[ -z "$("${PIP[@]}" check 2>&1 | grep -v '^No broken requirements found.$')" ] \
  || failures+=("pip check")

echo "== from an empty folder ($WORK/run): import, mmcv ops, demo data"
cd "$WORK/run"
step "import" "$PY" - <<'EOF'
import torch, mmcv, mmdet, mmengine, mmyolo
import mmyolo_vis_hooks
from mmcv.ops import batched_nms
print('mmyolo_vis_hooks from', mmyolo_vis_hooks.__file__)
print(f'torch {torch.__version__}, mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, '
      f'mmengine {mmengine.__version__}, mmyolo {mmyolo.__version__}')
boxes = torch.tensor([[0., 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])
dets, keep = batched_nms(boxes, torch.tensor([.9, .8, .7]), torch.tensor([0, 0, 0]),
                         dict(type='nms', iou_threshold=0.5))
print('mmcv.ops.batched_nms keeps', keep.tolist())
EOF
step "demo data" "$PY" -c "from mmyolo_vis_hooks.demo import ensure_demo_data; \
ensure_demo_data('data', 0)"
CFG=$("$PY" -c "import os.path as osp, mmyolo_vis_hooks.demo as d; \
print(osp.join(osp.dirname(d.DEMO_CONFIG), 'yolov5_n_shapes.py'))")
CKPT="$WORK/src/tests/assets/yolov5_n_shapes.pth"
ls data/shapes/val/*.png | head -n 4 > four_val_images.txt
echo "demo detector: $CFG + $CKPT; 4 val images"

echo "== the four console tools on the demo detector"
BIN="$WORK/venv/bin"
tool() {  # NAME OUT_DIR ARGS...: runs one console script, then counts what it wrote
  local name=$1 out=$2
  shift 2
  step "$name" "$BIN/$name" "$@" --out-dir "$out"
  echo "   $out: $(find "$out" -type f | wc -l) files ($(find "$out" -type f -printf '%f\n' \
    | sed 's/.*\.//' | sort | uniq -c | tr -s ' ' | tr '\n' ';'))"
}
tool mmyolo-featmap out/featmap four_val_images.txt "$CFG" "$CKPT" \
  --target-layers backbone neck --channel-reduction squeeze_mean
tool mmyolo-boxam out/boxam four_val_images.txt "$CFG" "$CKPT" --method gradcam --topk 3
tool mmyolo-boxam-eval out/eval data/shapes/annotations/val.json "$CFG" "$CKPT" \
  --method gradcam --max-images 4 --no-progress
cat out/eval/faithfulness.csv 2>/dev/null || true
tool mmyolo-sliced out/large data/large/large_00000.png "$CFG" "$CKPT" --class-agnostic \
  --no-progress

echo "== the demo config trained 2 epochs with both hooks (val every epoch), TensorBoard read back"
step "train 2 epochs" "$PY" - <<'EOF'
from mmyolo_vis_hooks import demo
cfg = demo.build_config(demo.DEMO_CONFIG, work_dir='work_dirs/demo', data_dir='data', epochs=2,
                        cfg_options={'train_cfg.val_interval': 1})
print('hooks:', [h['type'] for h in cfg.custom_hooks])
result = demo.train(cfg)
print('\n'.join(demo.summary_lines(result)))
EOF
step "read TensorBoard" "$PY" - <<'EOF'
import glob, io, os.path as osp
from collections import defaultdict
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
runs = sorted({osp.dirname(p) for p in glob.glob('work_dirs/demo/**/events.out.tfevents.*',
                                                   recursive=True)})
assert runs, 'no event file'
steps, sizes = defaultdict(set), {}
for run in runs:
    acc = EventAccumulator(run, size_guidance={'images': 0, 'histograms': 0, 'scalars': 0})
    acc.Reload()
    for tag in acc.Tags()['images']:
        for event in acc.Images(tag):
            steps[tag].add(event.step)
            sizes[tag] = Image.open(io.BytesIO(event.encoded_image_string)).size
    hist = acc.Tags()['histograms']
print(f'{len(runs)} event dirs, {len(steps)} image tags, {len(hist)} histogram tags (last dir)')
for prefix in ('featmap', 'boxam'):
    tags = sorted(t for t in steps if prefix in t.lower())
    print(f'{prefix}: {len(tags)} tags, steps {sorted(set.union(set(), *(steps[t] for t in tags)))}'
          f', e.g. {tags[:2]} sized {[sizes[t] for t in tags[:2]]}')
    assert tags and all(len(steps[t]) == 2 for t in tags), (prefix, {t: steps[t] for t in tags})
EOF

echo "== tests from the source at HEAD with the package taken out (the wheel is what imports)"
step "install albumentations from source (one OpenCV)" quiet_pip install --quiet --no-cache-dir \
  --no-binary albumentations,albucore --no-build-isolation -r "$ROOT/requirements/albumentations.txt"
# grad-cam 1.5.6+ requires opencv-python-headless, a second OpenCV: the pinned 1.5.5 as in .venv
step "install the tests extra" quiet_pip install --quiet "$wheel[tests]" \
  "$(grep '^grad-cam==' "$ROOT/requirements/pinned.txt")"
echo "-- OpenCV distributions: $("${PIP[@]}" freeze | grep -i '^opencv' | tr '\n' ' ');" \
     "pip check: $("${PIP[@]}" check 2>&1 | tr '\n' ' ')"
echo "-- test packages: $("${PIP[@]}" freeze | grep -iE '^(pytest|grad-cam|xaitk-saliency|sahi|albumentations)==' | tr '\n' ' ')"
cp -r "$WORK/src" "$WORK/tests_src"
rm -rf "$WORK/tests_src/mmyolo_vis_hooks"
cd "$WORK/tests_src"
step "unit tier" "$BIN/pytest" tests -m "not slow" -q -p no:warnings
step "hook and CAM tests" "$BIN/pytest" tests/hooks tests/engine/cam -q -p no:warnings

if [ "${SKIP_EXTRAS:-0}" != 1 ]; then
  # Findings, not pass/fail conditions of the check: their failures are printed, not counted.
  echo "== mmrotate and mmpose 1.x in this environment (after the tests: they may change it)"
  cd "$WORK/run"
  counted=("${failures[@]}")
  changed() {  # FREEZE_FILE: what pip freeze gained or lost since
    echo "   changed: $(diff "$1" <("${PIP[@]}" freeze) | grep '^[<>]' | sed 's/ @ file:.*//' \
      | tr '\n' ' ')"
  }
  try_package() {  # MODULE CONFIG PIP_ARGS...: install, import, build one MMYOLO config
    local module=$1 config=$2
    shift 2
    "${PIP[@]}" freeze > "$WORK/freeze_pre_extra.txt"
    step "pip install $*" quiet_pip install --quiet "$@"
    changed "$WORK/freeze_pre_extra.txt"
    step "import $module" "$PY" -c "import $module; print('$module', $module.__version__)"
    step "build mmyolo::$config" "$PY" - "mmyolo::$config" <<'EOF'
import sys, torch
from mmyolo_vis_hooks.runtime.models import build_detector, packaged_config_path
model = build_detector(packaged_config_path(sys.argv[1]))
with torch.no_grad():
    feats = model.extract_feat(torch.rand(1, 3, 256, 256))
print(type(model).__name__, type(model.bbox_head).__name__,
      sum(p.numel() for p in model.parameters()), 'parameters; neck outputs',
      [tuple(f.shape) for f in feats])
EOF
  }
  try_package mmrotate rtmdet/rotated/rtmdet-r_s_fast_1xb8-36e_dota.py 'mmrotate-dev==1.0.1'
  try_package mmpose yolox/pose/yolox-pose_s_8xb32-300e-rtmdet-hyp_coco.py 'mmpose==1.3.2'
  # mmpose imports; MMYOLO's models import mmpose's datasets, hence xtcocotools, whose binary
  # wheel may be built for NumPy 1 ("numpy.dtype size changed"): then build it from source
  if ! "$PY" -c 'import mmyolo.models' 2>/dev/null; then
    "$PY" -c 'import mmyolo.models' 2>&1 | tail -1 | sed 's/^/   mmyolo.models: /'
    try_package mmpose yolox/pose/yolox-pose_s_8xb32-300e-rtmdet-hyp_coco.py \
      --force-reinstall --no-deps --no-binary xtcocotools 'xtcocotools==1.14.3'
  fi
  echo "-- after mmrotate-dev and mmpose: pip check: $("${PIP[@]}" check 2>&1 | tr '\n' ' ')"
  # mmrotate==1.0.0rc1 writes the same mmrotate module: take mmrotate-dev out first
  quiet_pip uninstall --quiet -y mmrotate-dev
  try_package mmrotate rtmdet/rotated/rtmdet-r_s_fast_1xb8-36e_dota.py 'mmrotate==1.0.0rc1'
  failures=("${counted[@]}")
fi

echo "== failed steps: ${failures[*]:-none}"
[ ${#failures[@]} -eq 0 ]
