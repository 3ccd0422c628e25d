"""FeatMapVisHook and BoxAMVisHook in a real Runner on instance-segmentation detectors: MMYOLO's
YOLOv5-ins (its packaged config) and MMDetection's Mask R-CNN (tests/helpers/mmdet_models.py), small and
with random weights (YOLOv5-ins: the demo detector's trained weights with a random mask branch,
whose masks have outlines of their own), trained 2 epochs on generated data whose COCO
annotations carry polygon segmentations (the shapes' outlines; the wave images' inscribed
ellipses).

Per detector: every picture is read back from TensorBoard at step = epoch and the original image
size; the white mask outline of the explained instance lies on the boundary of the mask the
model itself predicts for that image (``model.test_step``, rescaled by the model's own code),
and covers it; the energy-in-GT scalar is logged; training is bit-identical to the same run
without the hooks (weights, buffers, optimizer state, losses, val metrics, RNG). YOLOv5-ins
runs with ``norm_in_mask``: outside its instance's mask the map is zero, so those pixels are
the image blended with the colour map's zero.
"""
import copy
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from helpers import packaged_config
from helpers.mmdet_models import runner_cfg, write_wave_dataset
from helpers.mmyolo_models import INSTANCE, yolov5_ins_with_demo_weights
from helpers.runner import (assert_same_trainings, image_steps, read_events, replace_key,
                            train_and_record)
from mmyolo_vis_hooks.data.synthetic_shapes import CLASSES, SplitSpec, generate_split
from mmyolo_vis_hooks.engine.cam.draw import energy_in_boxes
from mmyolo_vis_hooks.engine.core.pipeline import test_pipeline_cfg as packaged_test_pipeline
from mmyolo_vis_hooks.engine.core.draw import draw_boxes
from mmyolo_vis_hooks.hooks import BoxAMVisHook, FeatMapVisHook

# The hooks are registered in MMYOLO's registry: under the Mask R-CNN config's default scope
# 'mmdet' the scoped name reaches it (tests/hooks/test_boxam_mmdet_kinds.py); under 'mmyolo'
# only the bare name is found.
SCOPE_PREFIX = {'mmyolo': '', 'mmdet': 'mmyolo.'}
EPOCHS = 2
# The demo detector's input size: YOLOv5-ins starts from its trained weights.
YOLO_SIZE = 320
MASK_RCNN_SCALE = (160, 120)
# The outline may sit a pixel or two off the model's own rescaled mask: the hook samples the
# network-input mask through the letterbox geometry, the model resizes it its own way
# (Mask R-CNN pastes its 28 x 28 masks at the original resolution: islands a few pixels wide
# there may be gone at the network input's, hence a covered share below one).
OUTLINE_TOLERANCE = 2
MIN_COVERED = 0.8
# The colour map's zero (JET: dark blue), RGB.
JET_ZERO = cv2.cvtColor(cv2.applyColorMap(np.zeros((1, 1), np.uint8), cv2.COLORMAP_JET),
                        cv2.COLOR_BGR2RGB)[0, 0].astype(np.int32)


def _yolov5_ins_cfg(data_root: str, work_dir: str) -> Config:
    """YOLOv5-ins (n) on the shapes data at ``YOLO_SIZE``, starting from the demo detector's
    trained weights with a random mask branch (``yolov5_ins_with_demo_weights``, saved under
    ``work_dir``): the packaged test pipeline, and
    for training its letterbox with the instance masks (``Polygon2Mask`` as the packaged train
    pipeline ends) instead of mosaic and affine augmentations; one iteration of batch 4 per
    epoch."""
    cfg = Config.fromfile(packaged_config(INSTANCE['yolov5_ins']))
    replace_key(cfg.model, 'num_classes', len(CLASSES))
    test_pipeline = packaged_test_pipeline(cfg)
    for step in test_pipeline:
        if step.get('scale') is not None:
            step['scale'] = (YOLO_SIZE, YOLO_SIZE)
    resize_steps = [s for s in test_pipeline if 'Resize' in s['type']]
    packaged = {s['type']: s for s in cfg.train_pipeline}
    # The packaged affine step as an identity: it warps the polygons onto the letterboxed
    # image's own size (the letterbox alone may leave them a pixel short when it pads only
    # below or right, and masks of unequal sizes do not collate).
    identity_affine = dict(packaged['YOLOv5RandomAffine'], border=(0, 0),
                           scaling_ratio_range=(1.0, 1.0), max_translate_ratio=0.0)
    train_pipeline = [dict(type='LoadImageFromFile'),
                      dict(type='LoadAnnotations', with_bbox=True, with_mask=True,
                           mask2bbox=True),
                      *copy.deepcopy(resize_steps), identity_affine,
                      packaged['Polygon2Mask'],
                      dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                                                            'img_shape', 'scale_factor'))]
    for loader, split, pipeline in ((cfg.train_dataloader, 'train', train_pipeline),
                                    (cfg.val_dataloader, 'val', test_pipeline)):
        loader.update(batch_size=4, num_workers=0, persistent_workers=False)
        loader.dataset.update(data_root=data_root, metainfo=dict(classes=CLASSES),
                              ann_file=f'annotations/{split}.json',
                              data_prefix=dict(img=f'{split}/'), pipeline=pipeline)
        if loader.dataset.get('batch_shapes_cfg'):
            loader.dataset.batch_shapes_cfg.update(batch_size=4, img_size=YOLO_SIZE)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator = cfg.test_evaluator = dict(
        type='mmdet.CocoMetric', ann_file=data_root + 'annotations/val.json', metric='bbox')
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=EPOCHS, val_interval=1)
    cfg.default_hooks.param_scheduler.max_epochs = EPOCHS
    cfg.default_hooks.checkpoint = None
    cfg.custom_imports = dict(imports=['mmyolo_vis_hooks'], allow_failed_imports=False)
    cfg.visualizer.vis_backends = [dict(type='TensorboardVisBackend')]
    cfg.load_from = yolov5_ins_with_demo_weights(cfg, osp.join(work_dir, 'yolov5_ins.pth'))
    return cfg


def _decoded(event) -> np.ndarray:
    """An event's picture as RGB."""
    bgr = cv2.imdecode(np.frombuffer(event.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _top_instance(runner, hook: BoxAMVisHook, sample):
    """The model's own top-scoring prediction on ``sample`` (``test_step``: masks and box
    rescaled to the original image by the model's code): its bool mask and xyxy box."""
    model = runner.model
    model.eval()
    with torch.no_grad():
        (pred, ) = model.test_step(hook.load_batch(sample))
    instances = pred.pred_instances
    top = int(instances.scores.argmax())
    return instances.masks[top].cpu().numpy().astype(bool), instances.bboxes[top].cpu().numpy()


def _assert_outline_on_mask_boundary(picture: np.ndarray, mask: np.ndarray,
                                     box: np.ndarray) -> None:
    """The picture's white pixels (the mask outline, the box and its caption) lie on the
    boundary of ``mask`` or on the box's drawing, and the outline covers that boundary."""
    white = np.all(picture == 255, axis=-1)
    mask8 = mask.astype(np.uint8)
    boundary = mask & ~cv2.erode(mask8, np.ones((3, 3), np.uint8)).astype(bool)
    kernel = np.ones((2 * OUTLINE_TOLERANCE + 1, ) * 2, np.uint8)
    near_boundary = cv2.dilate(boundary.astype(np.uint8), kernel).astype(bool)
    box_drawing = draw_boxes(np.zeros_like(picture), box[None], [0], [1.0], ['x' * 12])
    near_box = cv2.dilate(box_drawing.any(axis=-1).astype(np.uint8), kernel).astype(bool)
    stray = white & ~near_boundary & ~near_box
    assert stray.sum() <= 0.02 * white.sum(), (int(stray.sum()), int(white.sum()))
    # The part of the boundary away from the box lines: the outline must be drawn there.
    outline = boundary & ~near_box
    assert outline.sum() >= 20, 'the predicted mask has no boundary of its own to check'
    near_white = cv2.dilate(white.astype(np.uint8), kernel).astype(bool)
    covered = (near_white & outline).sum() / outline.sum()
    assert covered >= MIN_COVERED, covered


def _run_and_check(tmp_path, base: Config, reset_singletons, method_options: dict,
                   norm_in_mask: bool) -> None:
    prefix = SCOPE_PREFIX[base.default_scope]
    hook_cfgs = [
        dict(type=prefix + 'BoxAMVisHook', num_images=1, topk=1, score_thr=0.0, strict=True,
             norm_in_mask=norm_in_mask, **method_options),
        dict(type=prefix + 'FeatMapVisHook', num_images=1, target_layers=['neck'], log_stats=False,
             strict=True),
    ]

    def train(work, hooks):
        cfg = copy.deepcopy(base)
        cfg.work_dir = str(tmp_path / work)
        cfg.randomness = dict(seed=0, deterministic=True)
        cfg.custom_hooks = [*cfg.get('custom_hooks', []), *hooks]
        runner, state = train_and_record(cfg, reset_singletons)
        assert runner.iter == EPOCHS  # one iteration per epoch
        return runner, state

    runner, hooked = train('hooked', hook_cfgs)
    _, plain = train('plain', [])

    epochs = list(range(1, EPOCHS + 1))
    acc = read_events(str(tmp_path / 'hooked'))
    (boxam, ) = [h for h in runner.hooks if isinstance(h, BoxAMVisHook)]
    (featmap, ) = [h for h in runner.hooks if isinstance(h, FeatMapVisHook)]
    assert boxam._cams['gradcam'].detector.predicts_masks
    (sample, ) = boxam.samples
    original = cv2.cvtColor(cv2.imread(sample.img_path), cv2.COLOR_BGR2RGB)
    methods = boxam.methods
    for method in methods:
        tag = f'boxam/{sample.name}/{method}'
        assert image_steps(acc, tag) == epochs, tag
        for event in acc.Images(tag):
            picture = _decoded(event)
            assert picture.shape == original.shape, (tag, picture.shape)
    # The last pictures were drawn with the final weights: the model's own prediction now is
    # the instance they explain.
    mask, box = _top_instance(runner, boxam, sample)
    assert 0 < mask.sum() < mask.size
    for method in methods:
        picture = _decoded(acc.Images(f'boxam/{sample.name}/{method}')[-1])
        _assert_outline_on_mask_boundary(picture, mask, box)
        # The check can fail: the same mask 3 tolerances to the right is not what was drawn.
        with pytest.raises(AssertionError):
            _assert_outline_on_mask_boundary(
                picture, np.roll(mask, 3 * OUTLINE_TOLERANCE, axis=1), box)
        if norm_in_mask:  # zero heat outside the mask: the image blended with JET's zero
            kernel = np.ones((2 * OUTLINE_TOLERANCE + 3, ) * 2, np.uint8)
            outside = ~cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
            x1, y1, x2, y2 = (int(round(float(v))) for v in box)
            # the box, and its caption: above or below it, as wide as its text (which
            # depends on OpenCV's version: 5.1 draws wider text than 5.0), so whole rows
            outside[max(y1 - 20, 0):y2 + 20] = False
            assert outside.sum() > 0.2 * mask.size
            blend = np.round(0.5 * original + 0.5 * JET_ZERO)
            miss = np.abs(picture.astype(np.int32) - blend)[outside]
            assert miss.max() <= 1, miss.max()
        assert np.abs(picture.astype(np.int32) - original).mean() > 10  # an overlay
    # The energy-in-GT scalar is measured on the ground-truth masks (the data has them):
    # the last one is the share of the last map inside the masks, not inside the boxes.
    gt_boxes, gt_masks = boxam._ground_truth(sample)
    assert gt_masks is not None and gt_masks.shape == (len(gt_boxes), *original.shape[:2])
    scalars = acc.Tags()['scalars']
    with torch.no_grad():
        data = boxam.load_batch(sample)
    for method in methods:
        tag = f'boxam/energy_in_gt/{method}'
        if tag not in scalars:  # a random network's Grad-CAM may have no heat (ReLU)
            continue
        energy = acc.Scalars(tag)
        assert {e.step for e in energy} <= set(epochs)
        assert all(0.0 <= e.value <= 1.0 for e in energy), tag
        if energy[-1].step == EPOCHS:
            (result, ), (meta, ) = boxam._cams[method].explain_data(data)
            by_mask = energy_in_boxes(result, meta, gt_boxes, original.shape[:2], gt_masks)
            by_box = energy_in_boxes(result, meta, gt_boxes, original.shape[:2])
            # (the recomputed map may differ in float rounding: 5e-6 seen on YOLOv5-ins)
            assert energy[-1].value == pytest.approx(by_mask, abs=1e-4), tag
            assert by_mask != pytest.approx(by_box, abs=1e-3), tag
    featmap_tags = {t for t in acc.Tags()['images'] if t.startswith('featmap/')}
    assert featmap_tags and all(t.startswith(f'featmap/{featmap.samples[0].name}/neck[')
                                for t in featmap_tags)
    for tag in featmap_tags:
        assert image_steps(acc, tag) == epochs, tag
        assert all(_decoded(e).shape[:2] == cv2.imread(featmap.samples[0].img_path).shape[:2]
                   for e in acc.Images(tag)), tag
    assert_same_trainings(plain, hooked)


@pytest.mark.slow
def test_yolov5_ins_hooks_draw_mask_outlines_and_leave_training_alone(
        tmp_path, reset_singletons, fast_config_dump):
    root = str(tmp_path / 'shapes')
    generate_split(root, 'train', SplitSpec(4), seed=0, segmentation=True)
    generate_split(root, 'val', SplitSpec(2), seed=0, segmentation=True)
    _run_and_check(tmp_path, _yolov5_ins_cfg(root + '/', str(tmp_path)), reset_singletons,
                   dict(method='gradcam'), norm_in_mask=True)


@pytest.mark.slow
def test_mask_rcnn_hooks_draw_mask_outlines_and_leave_training_alone(
        tmp_path, reset_singletons, fast_config_dump):
    dataset = write_wave_dataset(str(tmp_path / 'data'), segmentation=True)
    base = runner_cfg('mask_rcnn', dataset, '', [], scale=MASK_RCNN_SCALE)
    base.train_cfg.max_epochs = EPOCHS
    # Random weights spread the scores; the detector's own threshold would drop every box.
    replace_key(base.model.test_cfg, 'score_thr', 0.0)
    _run_and_check(tmp_path, base, reset_singletons,
                   dict(method=['gradcam', 'ablationcam'], ratio_channels_to_ablate=0.1,
                        batch_size=8), norm_in_mask=False)
