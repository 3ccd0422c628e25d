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
    # first on its sys.path, not the working directory). The timeout only catches a hung run:
    # on a 2-core machine shared with other jobs (load 20-30) a small mode of under a minute of
    # CPU took over 15 minutes of wall time.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    result = subprocess.run([sys.executable, osp.join(REPO, 'benchmarks', name), *args],
                            capture_output=True, text=True, timeout=2400, cwd=REPO, env=env)
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


@pytest.mark.slow
def test_bench_cam_targets_small_claims_hold():
    out = run_benchmark('bench_cam_targets.py', '--small')
    assert '| layercam | log_score |' in out and '- ablationcam: ' in out, out


@pytest.mark.slow
def test_bench_input_layout_small_maps_agree():
    out = run_benchmark('bench_input_layout.py', '--small')
    assert 'min correlation per box' in out, out


@pytest.mark.slow
def test_bench_featmap_hook_small_runs_and_logs():
    out = run_benchmark('bench_featmap_hook.py', '--small')
    assert 'wall-time ratio with/without' in out and 'images logged' in out, out


@pytest.mark.slow
def test_bench_memory_small_leaves_no_hooks():
    out = run_benchmark('bench_memory.py', '--small')
    assert 'growth due to the hooks' in out, out


@pytest.mark.slow
def test_bench_large_image_small_boxes_agree():
    out = run_benchmark('bench_large_image.py', '--small')
    assert '(b)/(a2) wall' in out and 'boxes: (b) ' in out, out
    assert 'sliced, class-wise NMS IOU' in out, out  # the quality table ran


@pytest.mark.slow
def test_bench_large_tiff_small_layouts_agree():
    out = run_benchmark('bench_large_tiff.py', '--small')
    assert '(t) tool, tiled' in out and '(t) tool, strips' in out, out


@pytest.mark.slow
def test_census_small_gets_the_known_statuses():
    out = run_benchmark('census.py', '--small')
    assert '2 pass, 0 fail, 1 excluded' in out, out


@pytest.mark.slow
def test_refusal_sweep_small_classifies_every_file():
    out = run_benchmark('refusal_sweep.py', '--small')
    assert 'mmyolo: ' in out and 'mmdet: ' in out and 'buildable' in out, out
