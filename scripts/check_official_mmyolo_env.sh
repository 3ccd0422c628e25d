#!/usr/bin/env bash
# Installs this project's wheel into an environment that has the OFFICIAL mmyolo 0.6.0 and shows
# that `pip check` stays clean and the `mmyolo` distribution is untouched.
#
#   bash scripts/check_official_mmyolo_env.sh [WORK_DIR]      (default /tmp/official_mmyolo_env)
#
# The environment is MMYOLO's documented set-up (mmcv>=2.0.0rc4,<2.1.0, mmdet>=3, mmengine; here
# through `mmyolo[mim]==0.6.0`) in a new venv, except:
# - torch is the CPU build that this machine kind keeps on disk (TORCH_SPEC, default
#   torch==2.13.0), not a CUDA one;
# - mmcv 2.0.1 is built from its source with MMCV_WITH_OPS=0 (no compiled ops: ~10 min of
#   compiling on 2 cores saved; mmcv 2.0.1's -std=c++14 reportedly fails with torch 2.13's headers)
#   and its setup.py changed to keep the name `mmcv` (it calls such a build `mmcv-lite`). Its
#   metadata, and so `pip check`, is that of mmcv 2.0.1 with the ops;
#   but mmdet imports mmcv.ops, so `import mmyolo_vis_hooks` stops there (mmcv._ext is missing).
# Not part of the test suite: the set-up takes 7-11 min here (docs/official_mmyolo_check.md).
# The wheel is built from the committed HEAD (git archive), not from the working tree.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${1:-/tmp/official_mmyolo_env}
BASE_PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
rm -rf "$WORK"
mkdir -p "$WORK/src" "$WORK/dist" "$WORK/empty" "$WORK/sdist"
"$BASE_PY" -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

echo "== set-up: $TORCH_SPEC, mmcv 2.0.1 (MMCV_WITH_OPS=0), mmyolo[mim]==0.6.0"
"${PIP[@]}" install --quiet -r "$ROOT/requirements/build.txt"  # mmcv's setup.py: pkg_resources
"${PIP[@]}" install --quiet "$TORCH_SPEC"
# mmcv 2.0.1's setup.py names a build without ops `mmcv-lite`; keep the name `mmcv` (one line)
# so that mmyolo's and mmdet's requirements see the distribution they ask for.
"${PIP[@]}" download --quiet --no-deps --no-binary :all: --no-build-isolation -d "$WORK/sdist" \
  'mmcv==2.0.1'
tar -xzf "$WORK"/sdist/mmcv-2.0.1.tar.gz -C "$WORK/sdist"
sed -i "s/name='mmcv' if os.getenv('MMCV_WITH_OPS', '1') == '1' else 'mmcv-lite',/name='mmcv',/" \
  "$WORK/sdist/mmcv-2.0.1/setup.py"
grep -q "^    name='mmcv',$" "$WORK/sdist/mmcv-2.0.1/setup.py"
MMCV_WITH_OPS=0 "${PIP[@]}" install --quiet --no-build-isolation "$WORK/sdist/mmcv-2.0.1"
"${PIP[@]}" install --quiet 'mmyolo[mim]==0.6.0'

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
  echo "-- $1: $(grep -i '^mmyolo' "$WORK/freeze_$1.txt" | tr '\n' ' ')" \
       "($(wc -l < "$WORK/mmyolo_files_$1.txt") files, RECORD sha256" \
       "$(grep ' mmyolo-0.6.0.dist-info/RECORD$' "$WORK/mmyolo_files_$1.txt" | cut -c1-16)...)"
  echo "-- $1: pip check: $("${PIP[@]}" check 2>&1 | tr '\n' ' ')"
  echo "-- $1: OpenCV distributions: $(grep -i '^opencv' "$WORK/freeze_$1.txt" | tr '\n' ' ')"
}
snapshot before

echo "== the wheel (from HEAD $(git -C "$ROOT" rev-parse --short HEAD))"
git -C "$ROOT" archive HEAD | tar -x -C "$WORK/src"
"${PIP[@]}" wheel --quiet --no-deps --no-build-isolation -w "$WORK/dist" "$WORK/src"
wheel=$(ls "$WORK"/dist/mmyolo_vis_hooks-*.whl)
echo "$(basename "$wheel") requires: $(unzip -p "$wheel" '*.dist-info/METADATA' \
  | sed -n 's/^Requires-Dist: \([^;]*\)$/\1/p' | tr '\n' ',' )"
"${PIP[@]}" install --quiet "$wheel" 2>&1 | { grep -v "is ignored" || true; }
snapshot after

echo "== what the install changed (pip freeze before -> after)"
{ diff "$WORK/freeze_before.txt" "$WORK/freeze_after.txt" || true; } | grep '^[<>]' || true
if cmp -s "$WORK/mmyolo_files_before.txt" "$WORK/mmyolo_files_after.txt" \
   && cmp -s "$WORK/mmyolo_show_before.txt" "$WORK/mmyolo_show_after.txt"; then
  echo "mmyolo untouched: same version, same files, same sha256 of every file"
else
  echo "mmyolo CHANGED"; diff "$WORK/mmyolo_files_before.txt" "$WORK/mmyolo_files_after.txt" || true
  exit 1
fi
if [ -n "$("${PIP[@]}" check 2>&1 | grep -v '^No broken requirements found.$')" ]; then
  echo "pip check NOT clean"; exit 1
fi

echo "== import mmyolo_vis_hooks (from an empty folder)"
cd "$WORK/empty"
"$PY" -c "import mmyolo_vis_hooks; print('imported', mmyolo_vis_hooks.__file__)" 2>&1 | tail -n 3 \
  || true
