"""BoxAMVisHook in a real Runner: TensorBoard read-back, model state kept, bad arguments.

Errors raised in a real Runner before training (unknown layer, layers the box scores do not
depend on, ...) are cases of
tests/hooks/test_bad_configuration.py::test_bad_configuration_fails_before_training, over both
hooks.
"""
import cv2
import numpy as np
import pytest
import torch
from mmengine.runner import Runner

from helpers.runner import image_steps, read_events, tiny_train_cfg
from mmyolo_vis_hooks.hooks import BoxAMVisHook
from mmyolo_vis_hooks.testing.cam_reference import write_saturated_checkpoint


def _model_state(model):
    return dict(
        modes=[m.training for m in model.modules()],
        requires_grad=[p.requires_grad for p in model.parameters()],
        grads=[p.grad for p in model.parameters()],
        grad_values=[None if p.grad is None else p.grad.clone() for p in model.parameters()],
        state={k: v.clone() for k, v in model.state_dict().items()},
        grad_enabled=torch.is_grad_enabled(),
        rng=torch.get_rng_state())


def _assert_same_state(before, after):
    assert after['modes'] == before['modes']
    assert after['requires_grad'] == before['requires_grad']
    assert all(a is b for a, b in zip(after['grads'], before['grads']))
    for a, b in zip(after['grad_values'], before['grad_values']):
        assert (a is None and b is None) or torch.equal(a, b)
    for key, value in before['state'].items():
        assert torch.equal(value, after['state'][key]), key
    assert after['grad_enabled'] == before['grad_enabled']
    assert torch.equal(after['rng'], before['rng'])


@pytest.mark.slow
def test_hook_logs_box_cams_and_energy_and_leaves_the_model_as_it_was(
        tmp_path, shapes_data, demo_checkpoint):
    hook = dict(type='BoxAMVisHook', interval=1, num_images=2, method=['gradcam', 'layercam'],
                topk=2, score_thr=0.2)
    # A second instance in the other alignment mode: merged, box-normalised EigenCAM maps
    # through the resize-only pipeline (same images: same seed), no scalar.
    resize_hook = dict(type='BoxAMVisHook', interval=2, num_images=2, method='eigencam',
                       merge=True, norm_in_bbox=True, align='resize', score_thr=0.2,
                       log_energy=False)
    cfg = tiny_train_cfg(shapes_data, str(tmp_path / 'hooked'), epochs=2,
                         custom_hooks=[hook, resize_hook])
    cfg.load_from = demo_checkpoint  # trained weights: there are boxes to explain
    runner = Runner.from_cfg(cfg)
    vis_hook, resize_vis_hook = [h for h in runner.hooks if isinstance(h, BoxAMVisHook)]
    around = []
    original = vis_hook.after_val_epoch

    def checked_after_val_epoch(runner_, metrics=None):
        # Validation just ran; the hook sees the model as the loop leaves it, and must leave
        # it exactly so: modes, requires_grad, .grad (objects and values), weights, buffers,
        # the grad-enabled flag and the RNG. (Training then goes on from that state, so it is
        # the same as without the hook.)
        # A harder state than the loop leaves: train mode (the CAM must run in eval and put
        # it back), grad disabled (as inside the val loop: the CAM needs gradients anyway),
        # a .grad tensor present on one parameter, one frozen parameter.
        model = runner_.model
        model.train()
        first, second = list(model.parameters())[:2]
        first.grad = torch.ones_like(first)
        second.requires_grad_(False)
        before = _model_state(model)
        with torch.no_grad():
            original(runner_, metrics)
        _assert_same_state(before, _model_state(model))
        first.grad = None
        second.requires_grad_(True)
        model.eval()
        around.append(runner_.epoch)

    vis_hook.after_val_epoch = checked_after_val_epoch
    runner.train()
    assert around == [1, 2]
    assert resize_vis_hook.align == 'resize' and resize_vis_hook.samples == vis_hook.samples

    acc = read_events(str(tmp_path / 'hooked'))
    names = [s.name for s in vis_hook.samples]
    assert len(names) == 2
    for name in names:
        for method in ('gradcam', 'layercam'):
            assert image_steps(acc, f'boxam/{name}/{method}') == [1, 2], (name, method)
    for method in ('gradcam', 'layercam'):
        events = acc.Scalars(f'boxam/energy_in_gt/{method}')
        assert [e.step for e in events] == [1, 2]
        assert all(0.0 < e.value <= 1.0 for e in events)
    # LayerCAM is box-local, so nearly all of its heat sits on the objects.
    assert acc.Scalars('boxam/energy_in_gt/layercam')[-1].value > 0.8
    # A per-box grid: two titled tiles of the original image's size side by side.
    tag = f'boxam/{names[0]}/gradcam'
    img = cv2.imdecode(np.frombuffer(acc.Images(tag)[-1].encoded_image_string, np.uint8),
                       cv2.IMREAD_COLOR)
    ori = cv2.imread(vis_hook.samples[0].img_path)
    assert img.shape == (ori.shape[0] + 16, 2 * ori.shape[1] + 4, 3)
    # The resize-mode instance (interval 2): one merged overlay of the original size at step 2.
    tag = f'boxam/{names[0]}/eigencam'
    assert image_steps(acc, tag) == [2]
    img = cv2.imdecode(np.frombuffer(acc.Images(tag)[0].encoded_image_string, np.uint8),
                       cv2.IMREAD_COLOR)
    assert img.shape == ori.shape
    assert not any(t.endswith('/eigencam') for t in acc.Tags()['scalars'])


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(method='scorecam'), ValueError, "method must be one of 'gradcam'"),
    (dict(method=[]), ValueError, 'method must name at least one item'),
    (dict(topk='3'), TypeError, 'topk must be an int'),
    (dict(score_thr=None), ValueError, 'score_thr must be a number'),
    (dict(norm_in_bbox='yes'), TypeError, 'norm_in_bbox must be a bool'),
    (dict(ratio_channels_to_ablate=2.0), ValueError,
     r'ratio_channels_to_ablate must be a number in \(0, 1\]'),
    (dict(batch_size=0), ValueError, 'batch_size must be a positive int'),
    (dict(target_layers=[]), ValueError, 'target_layers must name at least one item'),
    (dict(target='score'), ValueError, "target must be one of 'logit', 'log_score'"),
    (dict(align='stretch'), ValueError, 'align must be one of'),
    (dict(interval=0), ValueError, 'interval must be a positive int'),
])
def test_bad_arguments_fail_at_construction(kwargs, error, message):
    with pytest.raises(error, match=f'^BoxAMVisHook: {message}'):
        BoxAMVisHook(**kwargs)


@pytest.mark.slow
@pytest.mark.parametrize('strict', [False, True])
def test_saturated_box_warns_or_raises_naming_it(tmp_path, shapes_data, demo_checkpoint, strict):
    """target='log_score' on saturated scores: the gradient underflows to 0. The hook names
    every such box (image, index, label, score, reason) in a warning and logs its tile without
    heat, or with strict=True raises; target='logit' explains the same boxes."""
    from mmyolo_vis_hooks.hooks.base_vis_hook import VisualizationWarning
    cfg = tiny_train_cfg(shapes_data, str(tmp_path / 'work'), epochs=1, custom_hooks=[
        dict(type='BoxAMVisHook', num_images=1, method='gradcam', topk=2, score_thr=0.3,
             target='log_score', strict=strict),
        dict(type='BoxAMVisHook', num_images=1, method='layercam', topk=2, score_thr=0.3,
             target='logit', strict=True)])
    cfg.load_from = write_saturated_checkpoint(demo_checkpoint, str(tmp_path / 'saturated.pth'))
    runner = Runner.from_cfg(cfg)
    runner.load_or_resume()
    runner.val_loop  # noqa: B018 - builds the loop whose dataset the hooks draw from
    log_score_hook, logit_hook = [h for h in runner.hooks if isinstance(h, BoxAMVisHook)]
    for hook in (log_score_hook, logit_hook):
        hook.before_run(runner)
    name = log_score_hook.samples[0].name
    expected = (rf'gradcam: image {name}: box #0 \(label circle, score 1\.0000\) has no CAM, '
                rf'zero gradient')
    if strict:
        with pytest.raises(RuntimeError, match=expected):
            log_score_hook.after_val_epoch(runner)
    else:
        with pytest.warns(VisualizationWarning, match=expected) as record:
            log_score_hook.after_val_epoch(runner)
        assert sum('has no CAM' in str(w.message) for w in record) == 2  # both boxes
    logit_hook.after_val_epoch(runner)  # strict: any warning would raise
    runner.visualizer.close()
    acc = read_events(str(tmp_path / 'work'))
    assert image_steps(acc, f'boxam/{name}/layercam') == [0]
    if strict:
        return
    # The gradcam grid: each tile is the plain image with its box, captioned, no heat.
    img = cv2.imdecode(np.frombuffer(acc.Images(f'boxam/{name}/gradcam')[0].encoded_image_string,
                                     np.uint8), cv2.IMREAD_COLOR)
    ori = cv2.imread(log_score_hook.samples[0].img_path)
    tile = img[16:, :ori.shape[1]]
    assert tile.shape == ori.shape
    assert np.median(np.abs(tile.astype(int) - ori.astype(int))) == 0
    heat = cv2.imdecode(np.frombuffer(acc.Images(f'boxam/{name}/layercam')[0]
                                      .encoded_image_string, np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(heat[16:, :ori.shape[1]].astype(int) - ori.astype(int)).mean() > 10
