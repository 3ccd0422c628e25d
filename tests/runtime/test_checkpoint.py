"""Safe checkpoint loading (runtime/checkpoint.py): ``torch.load(weights_only=True)`` with the
package's allow-list refuses files that run code or reach beyond what the format needs."""
import os

import pytest
import torch


class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


@pytest.mark.slow  # build_detector builds the demo detector before it refuses the file
def test_checkpoint_that_runs_code_is_refused(tmp_path, demo_config):
    from mmengine.runner.checkpoint import _load_checkpoint

    from mmyolo_vis_hooks.runtime.checkpoint import UnsafeCheckpointError, load_checkpoint_file
    from mmyolo_vis_hooks.runtime.models import build_detector
    marker = tmp_path / 'pwned'
    path = str(tmp_path / 'evil.pth')
    torch.save(dict(state_dict={'w': torch.zeros(1)}, meta=_RunsCode(marker)), path)

    with pytest.raises(UnsafeCheckpointError, match='allow-list'):
        load_checkpoint_file(path)
    with pytest.raises(UnsafeCheckpointError):
        build_detector(demo_config, path)
    # MMEngine's own loader (Runner resume / load_from) hits the same safe default
    import pickle
    with pytest.raises(pickle.UnpicklingError):
        _load_checkpoint(path, map_location='cpu')
    assert not marker.exists()


class _ReachesAttribute:
    """Unpickling this calls getattr(HistoryBuffer, '__init__'): more than the checkpoint
    format needs (the allow-list answers only HistoryBuffer's statistics methods)."""

    def __reduce__(self):
        from mmengine.logging.history_buffer import HistoryBuffer
        return getattr, (HistoryBuffer, '__init__')


def test_allow_listed_getattr_answers_only_history_buffer_statistics(tmp_path):
    from mmengine.logging.history_buffer import HistoryBuffer

    from mmyolo_vis_hooks.runtime.checkpoint import UnsafeCheckpointError, load_checkpoint_file
    buffer = HistoryBuffer()
    buffer.update(2.0)
    buffer.update(4.0)
    good, bad = str(tmp_path / 'good.pth'), str(tmp_path / 'bad.pth')
    torch.save(dict(buffer=buffer), good)
    loaded = load_checkpoint_file(good)['buffer']
    assert loaded.mean() == 3.0 and loaded.statistics('current') == 4.0
    torch.save(dict(x=_ReachesAttribute()), bad)
    with pytest.raises(UnsafeCheckpointError, match='getattr'):
        load_checkpoint_file(bad)
