"""scripts/gpu_check.sh where no CUDA device is visible: one line and exit 77 (its GPU path
runs only on a GPU machine)."""
import os
import subprocess
import sys

import pytest

from helpers import REPO_ROOT


@pytest.mark.slow  # starts Python twice and imports torch
def test_gpu_check_without_cuda_prints_one_line_and_exits_77(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', PYTHON=sys.executable,
               GPU_CHECK_DIR=str(tmp_path / 'check'))
    result = subprocess.run(['bash', os.path.join(REPO_ROOT, 'scripts', 'gpu_check.sh')],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 77, (result.stdout, result.stderr)
    assert result.stdout.splitlines() == [
        'gpu_check: no CUDA device visible (torch.cuda.is_available() is False); '
        'nothing was run'], result.stdout
    assert not (tmp_path / 'check').exists()  # nothing ran
