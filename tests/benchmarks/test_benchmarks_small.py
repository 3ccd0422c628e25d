"""Benchmarks in their small mode: a benchmark that no longer runs, or whose equality claim no
longer holds (it exits non-zero then), fails the suite. Ratios are printed, never asserted."""
import os
import os.path as osp
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def run_benchmark(name: str, *args: str) -> str:
    # The checkout's package, not whichever copy is installed (a script's own folder comes
    # first on its sys.path, not the working directory).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    result = subprocess.run([sys.executable, osp.join(REPO, 'benchmarks', name), *args],
                            capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:])
    return result.stdout


@pytest.mark.slow
def test_bench_cam_small_agrees_with_grad_cam():
    out = run_benchmark('bench_cam.py', '--small')
    rows = [line.split() for line in out.splitlines() if line.split()[:1] and
            line.split()[0] in ('gradcam', 'gradcam++', 'xgradcam', 'layercam', 'eigengradcam')]
    assert len(rows) == 5, out
    assert all(float(row[-2]) >= 0.999 for row in rows), out  # corr min column
    # part 3: Faster R-CNN against grad-cam's predict-style per-box loop
    rcnn = [line.split() for line in out.splitlines() if line.startswith('faster_rcnn ')]
    assert len(rcnn) == 1 and float(rcnn[0][-3]) >= 0.999, out


@pytest.mark.slow
def test_bench_drise_small_agrees_with_xaitk_and_prints_the_ratio_at_the_limit():
    out = run_benchmark('bench_drise.py', '--small')
    ratios = [line.split() for line in out.splitlines() if line.split()[:1] in (['1'], ['2'])]
    assert [row[0] for row in ratios] == ['1', '2'], out  # the limit at 1 and 2 threads
    assert 'xaitk all boxes' in out and 'xaitk per box' in out, out


@pytest.mark.slow
def test_bench_drise_masks_small_runs_and_both_samplings_converge_to_one_map(tmp_path):
    out = run_benchmark('bench_drise_masks.py', '--small', '--cache-dir', str(tmp_path))
    assert 'same limit: random vs balanced' in out, out
    assert 'random / balanced masks for the same correlation' in out, out
