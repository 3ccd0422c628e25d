"""The foundation: package registration, the demo data generator, the main job (a real Runner
training that logs to TensorBoard and resumes under ``weights_only=True``), safe checkpoint
loading and the trained demo detector in ``tests/assets``.
"""
import contextlib
import glob
import hashlib
import inspect
import os
import os.path as osp

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from runner_utils import load_tool


def _tree_digest(root):
    """sha256 of every file under ``root`` keyed by relative path."""
    digests = {}
    for path in sorted(glob.glob(osp.join(root, '**', '*'), recursive=True)):
        if osp.isfile(path):
            with open(path, 'rb') as f:
                digests[osp.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def _box_iou(a, b):
    import torchvision
    return torchvision.ops.box_iou(torch.as_tensor(a, dtype=torch.float32).reshape(-1, 4),
                                   torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4))


def _recall(pred_boxes, pred_labels, gt_boxes, gt_labels, iou_thr=0.5):
    """Share of ground-truth boxes matched by a prediction of the same class at IoU >= thr."""
    if len(gt_boxes) == 0:
        raise ValueError('no ground truth')
    if len(pred_boxes) == 0:
        return 0.0
    iou = _box_iou(gt_boxes, pred_boxes)
    same = torch.as_tensor(gt_labels)[:, None] == torch.as_tensor(pred_labels)[None, :]
    return float(((iou >= iou_thr) & same).any(dim=1).float().mean())


def _xywh_to_xyxy(bbox):
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


# --------------------------------------------------------------------------- package


def test_package_imports_registers_and_allow_lists():
    from mmengine.hooks import Hook
    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.visualization.vis_backend import BaseVisBackend
    from mmyolo.registry import HOOKS, VISBACKENDS

    import mmyolo_vis_hooks
    from mmyolo_vis_hooks import backends, hooks
    from mmyolo_vis_hooks.engine.checkpoint import safe_globals

    assert isinstance(mmyolo_vis_hooks.__version__, str) and mmyolo_vis_hooks.__version__
    allowed = torch.serialization.get_safe_globals()
    assert HistoryBuffer in allowed
    assert all(obj in allowed for obj in safe_globals())
    assert np.ndarray in allowed and np.dtype in allowed

    # every concrete hook / backend the package exports is registered into mmyolo's registries
    for module, base, registry in ((hooks, Hook, HOOKS), (backends, BaseVisBackend, VISBACKENDS)):
        for name in getattr(module, '__all__', []):
            obj = getattr(module, name)
            if (inspect.isclass(obj) and issubclass(obj, base) and not name.startswith('Base')
                    and not inspect.isabstract(obj)):
                assert registry.get(name) is obj, f'{name} is not registered in mmyolo {registry}'


# --------------------------------------------------------------------------- data generator


def test_generator_is_deterministic(tmp_path):
    from mmyolo_vis_hooks.data.synthetic_shapes import SplitSpec, generate_split
    for name, seed in (('a', 3), ('b', 3), ('c', 4)):
        generate_split(str(tmp_path / name), 'train', SplitSpec(5), seed=seed)
    first, same, other = (_tree_digest(str(tmp_path / n)) for n in 'abc')
    assert len(first) == 6  # 5 images + the annotation file
    assert first == same
    assert set(first) == set(other)
    differing = [k for k in first if first[k] != other[k]]
    assert len(differing) == len(first), f'seed 3 and 4 share files: {set(first) - set(differing)}'


def test_annotations_are_valid_coco_and_letterbox_pads(shapes_data):
    from pycocotools.coco import COCO

    from mmyolo_vis_hooks.data.synthetic_shapes import CLASSES
    coco = COCO(osp.join(shapes_data, 'annotations', 'train.json'))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
    used = {a['category_id'] for a in coco.dataset['annotations']}
    assert len(used) >= 3
    for img in coco.dataset['images']:
        assert osp.isfile(osp.join(shapes_data, 'train', img['file_name']))
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img['id']))
        assert anns, f'{img["file_name"]} has no objects'
        for ann in anns:
            x, y, w, h = ann['bbox']
            assert w > 0 and h > 0
            assert x >= 0 and y >= 0
            assert x + w <= img['width'] + 1e-6 and y + h <= img['height'] + 1e-6
    aspects = [img['width'] / img['height'] for img in coco.dataset['images']]
    assert min(aspects) < 0.9 and max(aspects) > 1.1

    # The real MMYOLO test pipeline of the demo config pads both wide and tall images.
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmyolo.registry import DATASETS
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs', 'demo', 'yolov5_n_shapes_320.py'))
    init_default_scope('mmyolo')
    dataset_cfg = cfg.val_dataloader.dataset
    dataset_cfg.update(data_root=shapes_data, ann_file='annotations/train.json',
                       data_prefix=dict(img='train/'))
    dataset = DATASETS.build(dataset_cfg)
    pads = np.stack([dataset[i]['data_samples'].metainfo['pad_param']
                     for i in range(len(dataset))])
    assert (pads[:, :2].sum(axis=1) > 0).any(), 'no image padded at top/bottom'
    assert (pads[:, 2:].sum(axis=1) > 0).any(), 'no image padded left/right'


def test_large_image_has_small_shapes_inside(tmp_path):
    from pycocotools.coco import COCO

    from mmyolo_vis_hooks.data.synthetic_shapes import generate_large_image
    ann_file = generate_large_image(str(tmp_path), seed=1, width=640, height=480,
                                    num_objects=20)
    coco = COCO(ann_file)
    anns = coco.dataset['annotations']
    assert len(anns) >= 10
    for ann in anns:
        x, y, w, h = ann['bbox']
        assert 0 <= x and 0 <= y and x + w <= 640 + 1e-6 and y + h <= 480 + 1e-6
        # object size 16-40 px: a rotated square's box reaches size * sqrt(2)
        assert 10 <= max(w, h) <= 40 * 2**0.5 + 1, ann
    assert osp.isfile(tmp_path / 'large_00000.png')


# --------------------------------------------------------------------------- the main job


@pytest.fixture(scope='module')
def small_demo_data(tmp_path_factory):
    """The main job's data layout (``shapes/`` and ``large/``), small: 16 train, 8 val."""
    from mmyolo_vis_hooks.data.synthetic_shapes import (SplitSpec, generate_large_image,
                                                        generate_split)
    root = str(tmp_path_factory.mktemp('demo_data'))
    generate_split(osp.join(root, 'shapes'), 'train', SplitSpec(16), seed=0)
    generate_split(osp.join(root, 'shapes'), 'val', SplitSpec(8), seed=0)
    generate_large_image(osp.join(root, 'large'), seed=0, width=400, height=300, num_objects=5)
    return root


def _scalar_steps(event_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(event_dir, size_guidance={'scalars': 0})
    acc.Reload()
    if tag not in acc.Tags()['scalars']:
        return {}
    return {e.step: e.value for e in acc.Scalars(tag)}


@contextlib.contextmanager
def _torch_default_allow_list():
    """torch's own allow-list only (the package's additions removed, then restored)."""
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        yield
    finally:
        torch.serialization.add_safe_globals(saved)


FAST_OPTIONS = [
    '--cfg-options', 'train_dataloader.batch_size=4', 'train_dataloader.num_workers=0',
    'train_dataloader.persistent_workers=False', 'val_dataloader.num_workers=0',
    'default_hooks.logger.interval=1', 'train_cfg.val_interval=1'
]


@pytest.fixture
def restore_torch_threads():
    """run_demo.main sets torch's thread count (--threads, default 1); later tests get theirs
    back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_main_job_trains_logs_and_resumes_weights_only(small_demo_data, tmp_path, monkeypatch,
                                                       reset_singletons, capsys,
                                                       restore_torch_threads):
    run_demo = load_tool('run_demo')
    work_dir = str(tmp_path / 'work')
    common = ['--data-dir', small_demo_data, '--work-dir', work_dir]

    # every torch.load of the run (resume included) keeps weights_only=True
    real_load, weights_only_args = torch.load, []

    def spy_load(*args, **kwargs):
        weights_only_args.append(kwargs.get('weights_only'))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, 'load', spy_load)

    first = run_demo.main(common + ['--epochs', '1'] + FAST_OPTIONS)
    printed = capsys.readouterr().out
    iters_per_epoch = 16 // 4
    assert first['checkpoint'] == osp.join(work_dir, 'epoch_1.pth')
    assert 0.0 <= first['metrics']['coco/bbox_mAP_50'] <= 1.0
    assert 'val bbox mAP@50:' in printed and first['checkpoint'] in printed
    tb_dir = first['tensorboard_dir']
    assert f'tensorboard --logdir {tb_dir} --samples_per_plugin images=' in printed
    n_images = int(printed.split('--samples_per_plugin images=')[1].split()[0])
    assert n_images >= 1
    assert glob.glob(osp.join(tb_dir, 'events.out.tfevents.*'))
    losses = _scalar_steps(tb_dir, 'loss')
    assert sorted(losses) == list(range(1, iters_per_epoch + 1))
    assert all(np.isfinite(v) and v > 0 for v in losses.values())
    assert set(_scalar_steps(tb_dir, 'coco/bbox_mAP_50')) == {1}
    # the printed --samples_per_plugin keeps every logged image step of every tag
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(tb_dir, size_guidance={'images': 0})
    acc.Reload()
    for tag in acc.Tags()['images']:
        assert len({e.step for e in acc.Images(tag)}) <= n_images, tag

    # the checkpoint holds nothing outside the allow-list
    from mmyolo_vis_hooks.engine.checkpoint import safe_global_names
    with _torch_default_allow_list():
        beyond_torch = torch.serialization.get_unsafe_globals_in_checkpoint(first['checkpoint'])
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in beyond_torch
    assert set(beyond_torch) <= set(safe_global_names()), set(beyond_torch)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(first['checkpoint']) == []

    reset_singletons()
    second = run_demo.main(common + ['--epochs', '2', '--resume'] + FAST_OPTIONS)
    assert second['checkpoint'] == osp.join(work_dir, 'epoch_2.pth')
    assert second['tensorboard_dir'] != tb_dir
    resumed_losses = _scalar_steps(second['tensorboard_dir'], 'loss')
    assert sorted(resumed_losses) == list(range(iters_per_epoch + 1, 2 * iters_per_epoch + 1))
    assert set(_scalar_steps(second['tensorboard_dir'], 'coco/bbox_mAP_50')) == {2}
    meta = real_load(second['checkpoint'], weights_only=True)['meta']
    assert (meta['epoch'], meta['iter']) == (2, 2 * iters_per_epoch)
    assert weights_only_args and False not in weights_only_args


def test_main_job_generates_missing_data(tmp_path, monkeypatch):
    run_demo = load_tool('run_demo')
    calls = []
    monkeypatch.setattr(run_demo, 'generate_demo_data',
                        lambda out_dir, seed: calls.append((out_dir, seed)))
    assert run_demo.ensure_demo_data(str(tmp_path / 'data'), 5) is True
    assert calls == [(str(tmp_path / 'data'), 5)]
    for rel in run_demo.DATA_FILES:
        os.makedirs(osp.dirname(tmp_path / 'data' / rel), exist_ok=True)
        (tmp_path / 'data' / rel).write_text('{}')
    assert run_demo.ensure_demo_data(str(tmp_path / 'data'), 5) is False
    assert len(calls) == 1


def test_main_job_rejects_bad_numbers(capsys):
    run_demo = load_tool('run_demo')
    for flag in ('--epochs', '--threads'):
        with pytest.raises(SystemExit):
            run_demo.parse_args([flag, '0'])
        assert f'{flag} must be a positive integer, got 0' in capsys.readouterr().err


# --------------------------------------------------------------------------- safe loading


class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


def test_checkpoint_that_runs_code_is_refused(tmp_path, demo_config):
    from mmengine.runner.checkpoint import _load_checkpoint

    from mmyolo_vis_hooks.engine.checkpoint import UnsafeCheckpointError, load_checkpoint_file
    from mmyolo_vis_hooks.engine.inference import build_detector
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

    from mmyolo_vis_hooks.engine.checkpoint import UnsafeCheckpointError, load_checkpoint_file
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


# --------------------------------------------------------------------------- demo detector


def test_demo_checkpoint_is_small_and_loads_into_fp32(demo_config, demo_checkpoint):
    from mmyolo_vis_hooks.engine.checkpoint import load_checkpoint_file
    from mmyolo_vis_hooks.engine.inference import build_detector
    assert os.path.getsize(demo_checkpoint) <= 4.2 * 1024 * 1024
    ckpt = load_checkpoint_file(demo_checkpoint)
    assert set(ckpt) == {'state_dict', 'meta'}
    assert tuple(ckpt['meta']['dataset_meta']['classes']) == ('circle', 'square', 'triangle')
    model = build_detector(demo_config, demo_checkpoint)
    assert model.dataset_meta['classes'] == ckpt['meta']['dataset_meta']['classes']
    params = dict(model.state_dict())
    for key, value in ckpt['state_dict'].items():
        assert params[key].dtype == (torch.float32 if value.is_floating_point() else value.dtype)
        assert torch.equal(params[key], value.to(params[key].dtype))
    assert not model.training


def _detect(model, img_path, score_thr=0.3):
    from mmdet.apis import inference_detector
    pred = inference_detector(model, img_path).pred_instances
    keep = pred.scores >= score_thr
    return pred.bboxes[keep], pred.labels[keep]


def test_demo_checkpoint_detects_shapes(demo_config, demo_checkpoint, shapes_data):
    from pycocotools.coco import COCO

    from mmyolo_vis_hooks.engine.inference import build_detector
    model = build_detector(demo_config, demo_checkpoint)
    coco = COCO(osp.join(shapes_data, 'annotations', 'val.json'))
    recalls = []
    for img in coco.dataset['images']:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img['id']))
        boxes, labels = _detect(model, osp.join(shapes_data, 'val', img['file_name']))
        recalls.append(_recall(boxes, labels, [_xywh_to_xyxy(a['bbox']) for a in anns],
                               [a['category_id'] - 1 for a in anns]))
    assert np.mean(recalls) >= 0.8, recalls


def test_demo_checkpoint_detects_small_shapes_in_a_slice(demo_config, demo_checkpoint,
                                                         tmp_path):
    """A 320-px crop of a large-image-like scene (16-40 px shapes), seen at its own scale."""
    import cv2
    from pycocotools.coco import COCO

    from mmyolo_vis_hooks.data.synthetic_shapes import generate_large_image
    from mmyolo_vis_hooks.engine.inference import build_detector
    ann_file = generate_large_image(str(tmp_path), seed=11, width=320, height=320,
                                    num_objects=12)
    coco = COCO(ann_file)
    anns = coco.dataset['annotations']
    model = build_detector(demo_config, demo_checkpoint)
    boxes, labels = _detect(model, osp.join(tmp_path, 'large_00000.png'))
    recall = _recall(boxes, labels, [_xywh_to_xyxy(a['bbox']) for a in anns],
                     [a['category_id'] - 1 for a in anns])
    assert recall >= 0.7, (recall, len(anns))
    assert cv2.imread(osp.join(tmp_path, 'large_00000.png')).shape[:2] == (320, 320)
