"""The tools as modules and their one-line errors; commands (torchrun and its workers) run
under a time limit."""
import importlib
import importlib.util
import os
import os.path as osp
import signal
import subprocess
import sys
import time
import types
from types import ModuleType
from typing import List, Optional, Sequence, Tuple

import pytest

from . import REPO_ROOT


def load_tool(name: str) -> ModuleType:
    """``tools/<name>.py`` imported as a module (the tools are scripts, not a package), e.g.
    ``load_tool('boxam_vis').main([...])`` runs the tool in this process."""
    path = osp.join(REPO_ROOT, 'tools', f'{name}.py')
    if not osp.isfile(path):
        raise ValueError(f'no tool {name!r}: {path} does not exist')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool_in_process(name: str, args: Sequence[str], capsys) -> types.SimpleNamespace:
    """What running ``tools/<name>.py args`` gives (``returncode``, ``stderr``), from the tool's
    ``main`` called in this process (a fresh process costs seconds of imports); for calls that
    end in an error (``SystemExit``)."""
    capsys.readouterr()
    main = importlib.import_module(f'mmyolo_vis_hooks.cli.{name}').main
    with pytest.raises(SystemExit) as info:
        main(list(args), prog=f'{name}.py')
    return types.SimpleNamespace(returncode=info.value.code, stderr=capsys.readouterr().err)


def assert_one_line_error(result, tool: str, *fragments: str) -> str:
    """Asserts the tool's one-line error: exit code 2, one stderr line
    ``<tool>.py: error: ...`` holding every fragment, no traceback. Returns the line."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f'{tool}.py: error: '), lines[0]
    assert 'Traceback' not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def run_bounded_together(cmds: Sequence[Sequence[str]], timeout: float,
                         env: Optional[dict] = None) -> List[Tuple[int, str]]:
    """Starts every command at once, each in its own process group; if they have not all
    finished within ``timeout`` seconds, kills every group still running and fails. Returns
    each one's exit code and output (stdout and stderr)."""
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env, start_new_session=True) for cmd in cmds]
    deadline = time.monotonic() + timeout
    outs = []
    try:
        for proc in procs:
            outs.append(proc.communicate(timeout=max(deadline - time.monotonic(), 0.01))[0])
    except subprocess.TimeoutExpired:
        late = [k for k, proc in enumerate(procs) if proc.poll() is None]
        for k in late:
            os.killpg(procs[k].pid, signal.SIGKILL)
        out = procs[late[0]].communicate()[0]
        pytest.fail(f'{[list(cmds[k][:3]) for k in late]} did not finish within {timeout} s '
                    f'(a rank waiting on another?)\n{out[-4000:]}')
    return [(proc.returncode, out) for proc, out in zip(procs, outs)]


def run_bounded(cmd: Sequence[str], timeout: float, env: Optional[dict] = None
                ) -> Tuple[int, str]:
    """Runs ``cmd`` in its own process group; on timeout kills that group (torchrun and its
    workers) and fails. Returns the exit code and the output (stdout and stderr)."""
    return run_bounded_together([cmd], timeout, env)[0]


def torchrun_launcher() -> List[str]:
    """The venv's ``torchrun``, or ``python -m torch.distributed.run``."""
    torchrun = osp.join(osp.dirname(sys.executable), 'torchrun')
    return [torchrun] if osp.isfile(torchrun) else [sys.executable, '-m',
                                                     'torch.distributed.run']
