"""Both hooks under mixed precision: MMEngine's ``AmpOptimWrapper`` (what ``--amp`` sets) and
``ValLoop(fp16=True)``, in real Runners on the generated shapes data.

Parametrised on ``device``: bfloat16 on the CPU in the normal suite (with the stand-ins of
``helpers.runner.use_mixed_precision`` for what MMEngine, mmcv and MMDetection lack there),
float16 on ``cuda:0`` where there is one (marked ``cuda``; ``scripts/gpu_check.sh``).
"""
import copy

import cv2
import numpy as np
import pytest
import torch
from mmengine.runner import Runner

from helpers.runner import (MetricsRecorder, assert_same_tree, autocast_state, clone_tree,
                            half_dtype, image_steps, read_events, tiny_train_cfg,
                            use_mixed_precision)
from mmyolo_vis_hooks.hooks import BoxAMVisHook, FeatMapVisHook

pytestmark = pytest.mark.slow

# Largest difference allowed between a feature-map overlay drawn from validation's
# half-precision forward and the float32 one, in 8-bit pixel levels (mean over the image,
# 99th percentile, maximum). Measured on the demo detector (2 images x 3 neck levels),
# bfloat16 on the CPU: mean 0.12-0.28, p99 2, max 3-6; float16 (CUDA) keeps 3 more mantissa
# bits. The assertion message shows a run's values.
FEATMAP_MEAN_TOL = 1.0
FEATMAP_P99_TOL = 4
FEATMAP_MAX_TOL = 16


def _hooks(featmap_score_thr=0.3, **common) -> list:
    return [dict(type='FeatMapVisHook', target_layers=['neck'], strict=True,
                 score_thr=featmap_score_thr, **common),
            dict(type='BoxAMVisHook', topk=2, score_thr=0.2, strict=True, **common)]


def _guard_hooks(runner, device: str, enclosing_autocast: bool) -> list:
    """Wraps each vis hook's ``after_val_epoch``: the autocast state and the GradScaler's
    state (when training) must be the same after it as before; with ``enclosing_autocast``
    the hook is called inside an autocast region, as a loop that ran its hooks under
    autocast would. Returns the list the epochs of the checked calls are appended to."""
    checked = []
    for hook in runner.hooks:
        if not isinstance(hook, (FeatMapVisHook, BoxAMVisHook)):
            continue
        original = hook.after_val_epoch

        def guarded(runner_, metrics=None, original=original, hook=hook):
            wrapper = runner_.__dict__.get('optim_wrapper')
            scaler = getattr(wrapper, 'loss_scaler', None)
            scaler_before = None if scaler is None else clone_tree(scaler.state_dict())
            if enclosing_autocast:
                with torch.autocast(torch.device(device).type, dtype=half_dtype(device)):
                    before = autocast_state(device)
                    original(runner_, metrics)
                    after = autocast_state(device)
                assert before[0][1] or before[-2][1], before  # really inside autocast
            else:
                before = autocast_state(device)
                original(runner_, metrics)
                after = autocast_state(device)
            assert after == before, (type(hook).__name__, before, after)
            if scaler is not None:
                assert_same_tree(scaler_before, clone_tree(scaler.state_dict()), 'loss_scaler')
            checked.append((type(hook).__name__, runner_.epoch))
        hook.after_val_epoch = guarded
    return checked


def test_amp_training_bit_for_bit_with_and_without_hooks(tmp_path, shapes_data, demo_checkpoint,
                                                        device,
                                                        monkeypatch, reset_singletons,
                                                        fast_config_dump):
    """2 epochs with AmpOptimWrapper and fp16 validation: weights, buffers, optimizer and
    GradScaler state, val metrics and RNG are identical with both hooks and without; the
    hooks logged every epoch and left autocast and the GradScaler as they were."""
    base = tiny_train_cfg(shapes_data, '', epochs=2)
    base.train_dataloader.dataset.indices = 4  # one AMP iteration per epoch
    base.val_dataloader.dataset.indices = 4
    base.load_from = demo_checkpoint  # trained weights: boxes to explain from epoch 1
    use_mixed_precision(base, device, monkeypatch)

    def train(work, hooks):
        reset_singletons()
        cfg = copy.deepcopy(base)
        cfg.work_dir = str(tmp_path / work)
        cfg.custom_hooks = hooks
        runner = Runner.from_cfg(cfg)
        checked = _guard_hooks(runner, device, enclosing_autocast=False)
        recorder = MetricsRecorder()
        runner.register_hook(recorder, priority='LOWEST')
        runner.train()
        scaler = runner.optim_wrapper.loss_scaler
        assert type(runner.optim_wrapper).__name__ == 'AmpOptimWrapper' and scaler.is_enabled()
        assert next(runner.model.parameters()).device.type == torch.device(device).type
        return checked, dict(model=clone_tree(runner.model.state_dict()),
                             optimizer=clone_tree(runner.optim_wrapper.state_dict()),
                             metrics=recorder.metrics, torch_rng=torch.get_rng_state(),
                             numpy_rng=np.random.get_state()[1].copy())

    checked, hooked = train('hooked', _hooks(num_images=2))
    _, plain = train('plain', [])
    assert sorted(checked) == [(name, epoch) for name in ('BoxAMVisHook', 'FeatMapVisHook')
                               for epoch in (1, 2)]
    acc = read_events(str(tmp_path / 'hooked'))
    tags = [t for t in acc.Tags()['images'] if t.split('/')[0] in ('featmap', 'boxam')]
    assert {t.split('/')[0] for t in tags} == {'featmap', 'boxam'}
    assert all(image_steps(acc, t) == [1, 2] for t in tags), tags
    assert 'loss_scaler' in plain['optimizer'] and plain['optimizer']['loss_scaler']['scale'] > 0
    assert len(plain['metrics']) == 2 and 'coco/bbox_mAP' in plain['metrics'][0]
    assert_same_tree(plain['model'], hooked['model'], 'state_dict')
    assert_same_tree(plain['optimizer'], hooked['optimizer'], 'optimizer')
    assert plain['metrics'] == hooked['metrics']
    assert torch.equal(plain['torch_rng'], hooked['torch_rng'])
    assert np.array_equal(plain['numpy_rng'], hooked['numpy_rng'])


def _logged_images(work_dir: str) -> dict:
    acc = read_events(work_dir)
    return {tag: cv2.imdecode(np.frombuffer(acc.Images(tag)[-1].encoded_image_string,
                                            np.uint8), cv2.IMREAD_COLOR)
            for tag in acc.Tags()['images'] if tag.split('/')[0] in ('featmap', 'boxam')}


def test_amp_maps_equal_the_fp32_maps(tmp_path, shapes_data, demo_checkpoint, device,
                                      monkeypatch, reset_singletons, fast_config_dump):
    """Validation of the demo detector in float32, then with ``ValLoop(fp16=True)`` and the
    hooks called inside an autocast region: the box CAMs (explained in float32 either way)
    are the same pixels; the feature maps (validation's own half-precision activations)
    are within the stated tolerance."""
    base = tiny_train_cfg(shapes_data, '', epochs=1)
    base.val_dataloader.dataset.indices = 4
    base.load_from = demo_checkpoint

    def validate(work, mixed):
        reset_singletons()
        cfg = copy.deepcopy(base)
        cfg.work_dir = str(tmp_path / work)
        # Feature maps without the predicted boxes: half-precision boxes move edges by a pixel.
        cfg.custom_hooks = _hooks(num_images=2, featmap_score_thr=None)
        with monkeypatch.context() as patch:
            if mixed:
                use_mixed_precision(cfg, device, patch)
            else:
                patch.setattr('mmengine.runner.runner.get_device',
                              lambda: torch.device(device).type)
            runner = Runner.from_cfg(cfg)
            checked = _guard_hooks(runner, device, enclosing_autocast=mixed)
            runner.val()
            runner.visualizer.close()
        assert sorted(checked) == [('BoxAMVisHook', 0), ('FeatMapVisHook', 0)]
        return _logged_images(str(tmp_path / work))

    full = validate('fp32', mixed=False)
    half = validate('amp', mixed=True)
    assert full.keys() == half.keys()
    assert {t.split('/')[0] for t in full} == {'featmap', 'boxam'}
    measured = {}
    for tag, image in full.items():
        if tag.startswith('boxam/'):
            assert np.array_equal(image, half[tag]), tag
            continue
        diff = np.abs(image.astype(int) - half[tag].astype(int))
        measured[tag] = (round(float(diff.mean()), 2), float(np.percentile(diff, 99)),
                         int(diff.max()))
    assert measured
    assert all(mean <= FEATMAP_MEAN_TOL and p99 <= FEATMAP_P99_TOL and peak <= FEATMAP_MAX_TOL
               for mean, p99, peak in measured.values()), measured
    print('feature-map overlay difference (mean, p99, max):', measured)
    # The half-precision activations really differ (else this compares fp32 with itself).
    assert any(mean > 0 for mean, _, _ in measured.values()), measured
