"""ActivationStatsVisBackend (backends/activation_stats_backend.py) on its own: registered,
lazy, writes a layer's statistics (histogram + mean/std/dead_ratio scalars) and everything
TensorboardVisBackend writes, read back from the event file. (With FeatMapVisHook in a real
Runner: tests/hooks/test_featmap_vis_hook.py.)"""
import glob
import os.path as osp

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mmyolo.registry import VISBACKENDS
from mmyolo_vis_hooks.backends import ActivationStatsVisBackend


@pytest.fixture
def restore_tensorboard_crc(monkeypatch):
    """The backend installs the C CRC-32C into TensorBoard's writer: put back what was there
    after the test (monkeypatch restores the attribute), with the opt-out variable unset."""
    from tensorboard.summary.writer import record_writer
    monkeypatch.setattr(record_writer, 'masked_crc32c', record_writer.masked_crc32c)
    monkeypatch.delenv('MMYOLO_VIS_HOOKS_KEEP_TB_CRC', raising=False)
    return record_writer


def _events(save_dir):
    (path, ) = glob.glob(osp.join(save_dir, '**', 'events.out.tfevents.*'), recursive=True)
    acc = EventAccumulator(path, size_guidance={'scalars': 0, 'histograms': 0, 'images': 0})
    acc.Reload()
    return acc


def test_registered_and_lazy(tmp_path):
    backend = VISBACKENDS.build(dict(type='ActivationStatsVisBackend',
                                     save_dir=str(tmp_path / 'vis')))
    assert isinstance(backend, ActivationStatsVisBackend)
    assert not glob.glob(str(tmp_path / '**' / 'events.*'), recursive=True)  # nothing yet


def test_stats_images_and_scalars_read_back(tmp_path, restore_tensorboard_crc):
    save_dir = str(tmp_path / 'vis')
    backend = ActivationStatsVisBackend(save_dir)
    values = np.array([0.0, 1.0, 1.0, 2.0, 4.0], np.float32)
    backend.add_activation_stats('featmap_stats/neck[0]',
                                 dict(mean=1.6, std=1.2, dead_ratio=0.25, values=values), step=3)
    backend.add_activation_stats('featmap_stats/stem', dict(mean=0.5, values=np.zeros(0)),
                                 step=4)  # no values: no histogram
    backend.add_image('featmap/val_00000/neck[0]', np.full((8, 6, 3), 200, np.uint8), step=3)
    backend.add_scalar('loss', 0.75, step=2)
    backend.close()
    assert getattr(restore_tensorboard_crc.masked_crc32c, '_mmyolo_vis_hooks_fast_crc', False)

    acc = _events(save_dir)  # TensorBoard's reader checks every record's CRC
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
               for tag in acc.Tags()['scalars']}
    assert scalars == {'featmap_stats/neck[0]/mean': [(3, pytest.approx(1.6))],
                       'featmap_stats/neck[0]/std': [(3, pytest.approx(1.2))],
                       'featmap_stats/neck[0]/dead_ratio': [(3, 0.25)],
                       'featmap_stats/stem/mean': [(4, 0.5)],
                       'loss': [(2, 0.75)]}
    assert acc.Tags()['histograms'] == ['featmap_stats/neck[0]']
    (hist, ) = acc.Histograms('featmap_stats/neck[0]')
    assert hist.step == 3
    assert (hist.histogram_value.min, hist.histogram_value.max) == (0.0, 4.0)
    assert hist.histogram_value.num == 5 and hist.histogram_value.sum == pytest.approx(8.0)
    (image, ) = acc.Images('featmap/val_00000/neck[0]')
    assert (image.step, image.width, image.height) == (3, 6, 8)
