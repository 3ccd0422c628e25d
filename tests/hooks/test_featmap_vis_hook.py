"""FeatMapVisHook and its engine: alignment, real Runner training, TensorBoard read-back.

Errors raised in a real Runner before training (unknown layer, a layer without a 4-D output,
...) are cases of
tests/hooks/test_bad_configuration.py::test_bad_configuration_fails_before_training, over both
hooks.
"""
import cv2
import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmengine.dataset import pseudo_collate
from mmengine.runner import Runner

from helpers import DEMO_CONFIG, packaged_config
from helpers.runner import image_steps, read_events, tiny_train_cfg
from mmyolo_vis_hooks.engine.core.geometry import map_to_original, stretch_to_original
from mmyolo_vis_hooks.engine.core.pipeline import resize_only_pipeline
from mmyolo_vis_hooks.engine.featmap import forward_and_capture
from mmyolo_vis_hooks.runtime.models import build_detector, load_config
from mmyolo_vis_hooks.engine.core.model_state import preserved_model_state
from mmyolo_vis_hooks.hooks import FeatMapVisHook

# A 400x200 black image (aspect 2: letterboxing to 320x320 pads 80 px above and below) with a
# white 20x20 square centred at (310, 60).
OBJECT_CENTRE = (310.0, 60.0)


def _object_image(path):
    img = np.zeros((200, 400, 3), np.uint8)
    cv2.rectangle(img, (300, 50), (319, 69), (255, 255, 255), -1)
    cv2.imwrite(path, img)
    return path


def _mean_filter_stem(model):
    """Makes the stem a local-brightness filter so its map peaks on the white square."""
    conv, bn = model.backbone.stem.conv, model.backbone.stem.bn
    with torch.no_grad():
        conv.weight.fill_(1.0 / conv.weight[0].numel())
        bn.weight.fill_(1.0)
        bn.bias.zero_()
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0)


def _peak_xy(heat):
    """Centre of the map's top plateau (>= 90% of the max): argmax alone picks a corner."""
    heat = heat.numpy()
    ys, xs = np.nonzero(heat >= heat.min() + 0.9 * (heat.max() - heat.min()))
    return float(xs.mean()), float(ys.mean())


@pytest.mark.slow
@pytest.mark.parametrize('align', ['letterbox', 'resize'])
def test_map_peak_lands_on_object(tmp_path, align):
    img_path = _object_image(str(tmp_path / 'object.png'))
    cfg = load_config(DEMO_CONFIG)
    model = build_detector(cfg)
    _mean_filter_stem(model)
    pipeline = [s for s in cfg.test_pipeline if 'LoadAnnotations' not in s['type']]
    if align == 'resize':
        pipeline = resize_only_pipeline(pipeline)
    data = pseudo_collate([Compose(pipeline)(dict(img_path=img_path, img_id=0))])
    sample = forward_and_capture(model, data, ['backbone.stem'])[0]
    heat = sample.maps['backbone.stem'].mean(0)
    if align == 'letterbox':
        assert sample.meta['pad_param'][0] > 40  # the letterbox really padded
    aligned = map_to_original(heat, sample.meta)
    assert aligned.shape == (200, 400)
    x, y = _peak_xy(aligned)
    assert abs(x - OBJECT_CENTRE[0]) <= 4 and abs(y - OBJECT_CENTRE[1]) <= 4, (x, y)
    if align == 'letterbox':  # the naive stretch misses the object: the test can fail
        sx, sy = _peak_xy(stretch_to_original(heat, sample.meta))
        assert abs(sy - OBJECT_CENTRE[1]) > 10


@pytest.mark.slow
@pytest.mark.parametrize('config', [
    'yolov5/yolov5_n-v61_syncbn_fast_8xb16-300e_coco.py',
    'yolov8/yolov8_n_syncbn_fast_8xb16-500e_coco.py',
    'rtmdet/rtmdet_tiny_syncbn_fast_8xb32-300e_coco.py',
    'yolox/yolox_tiny_fast_8xb8-300e_coco.py',
])
def test_capture_across_families(tmp_path, config):
    """Random-init detectors from MMYOLO's packaged configs: every output of backbone and neck
    becomes one map, aligned onto the original image, and the model is left as it was."""
    img_path = _object_image(str(tmp_path / 'object.png'))
    cfg = load_config(packaged_config(config))
    model = build_detector(cfg)
    model.train()
    pipeline = [s for s in cfg.test_pipeline if 'LoadAnnotations' not in s['type']]
    data = pseudo_collate([Compose(pipeline)(dict(img_path=img_path, img_id=0))])
    with preserved_model_state(model):
        model.eval()
        sample = forward_and_capture(model, data, ['backbone', 'neck'])[0]
    assert model.training and model.backbone.training
    keys = list(sample.maps)
    assert len([k for k in keys if k.startswith('backbone[')]) >= 3
    assert len([k for k in keys if k.startswith('neck[')]) == 3
    for key, featmap in sample.maps.items():
        assert featmap.dim() == 3 and torch.isfinite(featmap).all(), key
        assert map_to_original(featmap.mean(0), sample.meta).shape == (200, 400)


@pytest.mark.slow
def test_hook_logs_each_epoch_and_reuses_val_forward(tmp_path, shapes_data, monkeypatch):
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
    from tensorboard.summary.writer import record_writer
    monkeypatch.setattr(record_writer, 'masked_crc32c', masked_crc32c)  # TensorBoard's own
    hook = dict(type='FeatMapVisHook', interval=1, num_images=2,
                target_layers=['neck', 'backbone.stem'], channel_reduction='squeeze_mean')
    cfg = tiny_train_cfg(shapes_data, str(tmp_path / 'work'), epochs=2, custom_hooks=[hook],
                         vis_backends=[dict(type='LocalVisBackend'),
                                       dict(type='ActivationStatsVisBackend')])
    runner = Runner.from_cfg(cfg)
    stem_calls = []  # (batch size, input width) of every forward
    runner.model.backbone.stem.register_forward_hook(
        lambda m, i, o: stem_calls.append((i[0].shape[0], i[0].shape[-1])))
    runner.train()

    vis_hook = next(h for h in runner.hooks if isinstance(h, FeatMapVisHook))
    names = [s.name for s in vis_hook.samples]
    assert len(names) == 2
    acc = read_events(str(tmp_path / 'work'))
    tags = acc.Tags()['images']
    for name in names:
        for key in ('neck[0]', 'neck[1]', 'neck[2]', 'backbone.stem'):
            assert image_steps(acc, f'featmap/{name}/{key}') == [1, 2], (name, key)
    # The layer check at before_run: one forward of a 64x64 dummy image, then letterbox mode
    # adds no forward: 16 train images (batch 4) and 8 val (batch 4) per epoch.
    assert stem_calls[0] == (1, 64)
    assert sum(batch for batch, _ in stem_calls[1:]) == 2 * (16 + 8)
    assert all(width > 64 for _, width in stem_calls[1:])
    # Activation statistics per layer and epoch.
    for key in ('neck[0]', 'backbone.stem'):
        assert [e.step for e in acc.Scalars(f'featmap_stats/{key}/mean')] == [1, 2]
        dead = acc.Scalars(f'featmap_stats/{key}/dead_ratio')
        assert all(0.0 <= e.value <= 1.0 for e in dead)
        assert [e.step for e in acc.Histograms(f'featmap_stats/{key}')] == [1, 2]
    # The events were checksummed by the C CRC-32C the hook installed (and read back above
    # by TensorBoard's reader, which checks every record's CRC).
    assert record_writer.masked_crc32c is not masked_crc32c
    assert getattr(record_writer.masked_crc32c, '_mmyolo_vis_hooks_fast_crc', False)
    # LocalVisBackend wrote the same images as PNG files.
    pngs = list((tmp_path / 'work').rglob('featmap/*/neck[[]0]_2.png'))
    assert len(pngs) == 2
    assert len(tags) == 2 * 4


@pytest.mark.slow
def test_resize_mode_matches_own_pipeline(tmp_path, shapes_data):
    hook = dict(type='FeatMapVisHook', num_images=1, target_layers=['neck.out_layers[0]'],
                channel_reduction=None, topk=4, arrangement=(2, 2), align='resize',
                log_stats=False)
    cfg = tiny_train_cfg(shapes_data, str(tmp_path / 'work'), epochs=1, custom_hooks=[hook])
    runner = Runner.from_cfg(cfg)
    runner.train()
    acc = read_events(str(tmp_path / 'work'))
    (tag, ) = acc.Tags()['images']
    assert tag.endswith('/neck.out_layers[0]')
    (event, ) = acc.Images(tag)
    img = cv2.imdecode(np.frombuffer(event.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)
    vis_hook = next(h for h in runner.hooks if isinstance(h, FeatMapVisHook))
    ori = cv2.imread(vis_hook.samples[0].img_path)
    # A 2x2 grid of titled tiles, each the size of the original image (<= 640 px).
    assert img.shape[1] == 2 * ori.shape[1] + 4
    assert img.shape[0] == 2 * (ori.shape[0] + 16) + 4


@pytest.mark.parametrize('kwargs, message', [
    (dict(channel_reduction='max'), 'channel_reduction must be one of'),
    (dict(channel_reduction=None, topk=5, arrangement=(2, 2)), 'fewer than topk=5'),
    (dict(interval=0), 'interval must be a positive int'),
    (dict(alpha=1.5), r'alpha must be a number in \[0, 1\]'),
    (dict(align='stretch'), 'align must be one of'),
    (dict(target_layers=[]), 'target_layers must name at least one item'),
])
def test_bad_arguments_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FeatMapVisHook(**kwargs)


def test_fast_event_checksum_writes_the_same_bytes(monkeypatch, tmp_path):
    """The C CRC-32C gives TensorBoard's records byte for byte; a record with a wrong
    checksum is refused by TensorBoard's reader (so the read-back tests would notice)."""
    import io
    import os

    from tensorboard.compat.tensorflow_stub import errors
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import (PyRecordReader_New,
                                                                      masked_crc32c)
    from tensorboard.summary.writer import record_writer

    from mmyolo_vis_hooks.backends import install_fast_event_crc
    payloads = [b'', b'x', os.urandom(1000), os.urandom(300_000)]

    def records(crc):
        monkeypatch.setattr(record_writer, 'masked_crc32c', crc)
        buffer = io.BytesIO()
        writer = record_writer.RecordWriter(buffer)
        for data in payloads:
            writer.write(data)
        return buffer.getvalue()

    reference = records(masked_crc32c)
    monkeypatch.setattr(record_writer, 'masked_crc32c', masked_crc32c)
    assert install_fast_event_crc() and install_fast_event_crc()  # idempotent
    fast = record_writer.masked_crc32c
    assert fast is not masked_crc32c and records(fast) == reference

    monkeypatch.setenv('MMYOLO_VIS_HOOKS_KEEP_TB_CRC', '1')
    monkeypatch.setattr(record_writer, 'masked_crc32c', masked_crc32c)
    assert not install_fast_event_crc() and record_writer.masked_crc32c is masked_crc32c

    corrupt = records(lambda data: (masked_crc32c(data) + 1) & 0xFFFFFFFF)
    path = tmp_path / 'corrupt.tfevents'
    path.write_bytes(corrupt)
    reader = PyRecordReader_New(str(path))
    with pytest.raises(errors.DataLossError):
        reader.GetNext()
