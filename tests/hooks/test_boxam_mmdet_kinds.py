"""BoxAMVisHook and FeatMapVisHook together in real Runners of three kinds of MMDetection 3.x
detectors: dense one-stage (RetinaNet), two-stage (Faster R-CNN) and DETR-like (DINO), small and
with random weights (tests/helpers/mmdet_models.py).

Per kind, two deterministic runs of 2 epochs (one training iteration and one validation epoch
each) from the same config, one with both hooks (strict: any visualization failure raises) and
one without: the pictures are read back from TensorBoard (one per epoch, step = epoch, at the
original image size) and the training state after the runs is compared bit for bit (weights,
buffers, optimizer state, losses, validation metrics, RNG). The hooks act after epoch 1's
validation, so anything they left behind would change epoch 2's training. Beside Grad-CAM each
kind runs perturbation methods with tiny settings (D-RISE, AblationCAM; RetinaNet both).

Also: the "no box" error names the detector's own score threshold when that one drops the boxes.
"""
import copy

import cv2
import numpy as np
import pytest
from mmengine.runner import Runner

from helpers.mmdet_models import IMAGE_SIZES, runner_cfg, wave_image, write_wave_dataset
from helpers.runner import (assert_same_trainings, image_steps, read_events, replace_key,
                            train_and_record)
from mmyolo_vis_hooks.hooks import BoxAMVisHook, FeatMapVisHook

# The hooks are registered in MMYOLO's registry; under these configs' default scope 'mmdet' a
# bare name is not found (KeyError): the scoped name reaches MMYOLO's registry from there.
BOXAM, FEATMAP = 'mmyolo.BoxAMVisHook', 'mmyolo.FeatMapVisHook'
EPOCHS = 2
# Half of helpers.mmdet_models.SCALE: the pictures are drawn at the original size all the same,
# and DINO still has more encoder tokens (about 400) than queries (100).
SCALE = (160, 120)
# Beside Grad-CAM, a perturbation method with tiny settings: D-RISE with 8 masks (one masked
# batch), AblationCAM on 10% of each neck level's 64 channels. Not D-RISE on Faster R-CNN: at
# this scale its random RoI head's best box is the whole image, which every masked copy
# re-detects just as well, so the D-RISE map is flat (rightly refused as noise).
TINY = dict(num_masks=8, grid_size=4, batch_size=8, ratio_channels_to_ablate=0.1)
METHODS = {
    'retinanet': ['gradcam', 'drise', 'ablationcam'],
    'faster_rcnn': ['gradcam', 'ablationcam'],
    'dino': ['gradcam', 'drise'],
}
NECK_LEVELS = {'retinanet': 5, 'faster_rcnn': 5, 'dino': 4}


def _decoded(event) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(event.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['retinanet', 'faster_rcnn', 'dino'])
def test_both_hooks_log_each_epoch_and_training_is_bit_identical(tmp_path, kind,
                                                                 reset_singletons,
                                                                 fast_config_dump):
    dataset = write_wave_dataset(str(tmp_path / 'data'))
    base = runner_cfg(kind, dataset, '', [], scale=SCALE)
    base.train_cfg.max_epochs = EPOCHS
    base.randomness = dict(seed=0, deterministic=True)
    # Random weights score near the classifiers' prior (0.01 for RetinaNet), below the
    # detector's own threshold (0.05), which the hook's score_thr=0.0 cannot lower.
    replace_key(base.model.test_cfg, 'score_thr', 0.0)

    def train(work, hooks):
        cfg = copy.deepcopy(base)
        cfg.work_dir = str(tmp_path / work)
        cfg.custom_hooks = hooks
        runner, state = train_and_record(cfg, reset_singletons)
        assert runner.iter == EPOCHS  # one iteration per epoch
        return runner, state

    hook_cfgs = [
        dict(type=BOXAM, num_images=1, method=METHODS[kind], topk=1, score_thr=0.0,
             strict=True, **TINY),
        dict(type=FEATMAP, num_images=1, target_layers=['neck'], log_stats=False,
             strict=True),
    ]
    runner, hooked = train('hooked', hook_cfgs)
    _, plain = train('plain', [])

    # The hooks really ran each epoch, at the original image size (else the comparison below
    # proves nothing).
    epochs = list(range(1, EPOCHS + 1))
    acc = read_events(str(tmp_path / 'hooked'))
    (boxam, ) = [h for h in runner.hooks if isinstance(h, BoxAMVisHook)]
    (featmap, ) = [h for h in runner.hooks if isinstance(h, FeatMapVisHook)]
    (sample, ) = boxam.samples
    assert featmap.samples == boxam.samples  # the same seeded choice
    width, height = IMAGE_SIZES[sample.index]
    original = wave_image(width, height)
    for method in METHODS[kind]:
        tag = f'boxam/{sample.name}/{method}'
        assert image_steps(acc, tag) == epochs, tag
        for event in acc.Images(tag):
            # topk=1 and a reliable map: one overlay of the original size, no caption row.
            picture = _decoded(event)
            assert picture.shape == original.shape, (tag, picture.shape)
            assert np.abs(picture.astype(int) - original).mean() > 10, tag  # an overlay
    # With strict=True every method found its box each epoch (else the run raised). The
    # pointing-game scalar needs heat as well: D-RISE maps are positive sums of masks, so it
    # is always logged, while a random network's Grad-CAM or AblationCAM map may be all
    # negative (ReLU: no heat, no scalar; seen with Faster R-CNN's Grad-CAM).
    scalars = acc.Tags()['scalars']
    for method in METHODS[kind]:
        tag = f'boxam/energy_in_gt/{method}'
        energy = acc.Scalars(tag) if tag in scalars else []
        steps = [e.step for e in energy]
        if method == 'drise':
            assert steps == epochs, tag
        assert set(steps) <= set(epochs), (tag, steps)
        assert all(0.0 <= e.value <= 1.0 for e in energy), tag
    featmap_tags = {t for t in acc.Tags()['images'] if t.startswith('featmap/')}
    assert featmap_tags == {f'featmap/{sample.name}/neck[{i}]'
                            for i in range(NECK_LEVELS[kind])}
    for tag in featmap_tags:
        assert image_steps(acc, tag) == epochs, tag
        assert all(_decoded(e).shape == original.shape for e in acc.Images(tag)), tag
    plain_tags = read_events(str(tmp_path / 'plain')).Tags()['images']
    assert not [t for t in plain_tags if t.split('/')[0] in ('boxam', 'featmap')]

    assert_same_trainings(plain, hooked)


@pytest.mark.slow
def test_no_box_error_names_the_detectors_own_threshold(tmp_path, fast_config_dump):
    """A freshly initialised RetinaNet scores near its classifier's prior (0.01), below its own
    ``test_cfg.score_thr`` (0.05), which drops every box before the hook's ``score_thr=0.0``:
    the error says so instead of blaming ``score_thr`` alone."""
    dataset = write_wave_dataset(str(tmp_path / 'data'))
    hook_cfg = dict(type=BOXAM, num_images=1, topk=1, score_thr=0.0, strict=True)
    runner = Runner.from_cfg(runner_cfg('retinanet', dataset, str(tmp_path / 'work'),
                                        [hook_cfg], scale=SCALE))
    runner.model.init_weights()  # what train() would do: the prior-probability bias
    runner.val_loop  # noqa: B018 - builds the loop whose dataset the hook draws from
    (hook, ) = [h for h in runner.hooks if isinstance(h, BoxAMVisHook)]
    hook.before_run(runner)
    with pytest.raises(RuntimeError, match=r"gradcam: no box above score_thr=0\.0 on wave_\d "
                                           r"\(the detector's own test_cfg score_thr=0\.05 "
                                           r"drops its boxes first\)"):
        hook.after_val_epoch(runner)
