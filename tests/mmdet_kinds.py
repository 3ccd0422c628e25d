"""Small MMDetection 3.x detectors of three kinds, from MMDetection's packaged configs with random
weights, and images whose content proves alignment (imported by tests).

Kinds: a dense one-stage detector (RetinaNet), a two-stage one (Faster R-CNN, and Mask R-CNN
for instance segmentation) and a DETR-like one (DINO). Each is shrunk for the CPU: a ResNet-18
backbone, narrow necks and heads, fewer queries and transformer layers, the test pipeline's
``Resize(keep_ratio=True)`` at ``SCALE`` instead of (1333, 800). ``Pretrained`` ``init_cfg``
entries are dropped: nothing can be downloaded here.

The alignment images carry, per channel, a trapezoid wave (0-plateau, ramp, 255-plateau, ramp;
period 64 px): red along x, green along y, blue 0. Between the wave's kinks the content is
affine, which bilinear resizing (OpenCV's) and bilinear sampling reproduce exactly, up to
uint8 rounding; the ramps rise by 10.6 grey levels per pixel, so a map half an input pixel
off misses by 4 or more levels. Both images start and end in a plateau along each axis, so
their borders are exact too, and have different aspects: batched together, one is padded at
the bottom, the other at the right.
"""
import json
import os
import os.path as osp
from typing import Dict, List, Tuple

import cv2
import mmdet
import numpy as np
from mmengine.config import Config

from runner_utils import replace_key

MMDET_CONFIGS = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs')
KINDS = {
    'retinanet': 'retinanet/retinanet_r18_fpn_1x_coco.py',
    'faster_rcnn': 'faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    'mask_rcnn': 'mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    'dino': 'dino/dino-4scale_r50_8xb2-12e_coco.py',
}
# (w, h) of the keep-ratio resize; neither side a multiple of 32, so pad_size_divisor pads.
SCALE = (330, 250)
CLASSES = ('wave', )
# (w, h) of the two alignment images: landscape and portrait.
IMAGE_SIZES = ((450, 321), (286, 385))
PERIOD, PLATEAU, RAMP = 64, 8, 24
# Original pixels between a kink and the nearest pixel compared: the resize and the sampling
# back each blend pixels up to one input pixel away (1.6 original pixels at most here).
KINK_MARGIN = 4


def mmdet_config(relpath: str) -> str:
    """Path of a config shipped inside the mmdet package."""
    return osp.join(MMDET_CONFIGS, relpath)


def wave(length: int) -> np.ndarray:
    """The trapezoid wave over ``length`` pixels as float grey levels (255-plateau at 0)."""
    t = np.arange(length) % PERIOD
    distance = np.abs(t - PERIOD / 2)  # 32 at t=0 (255-plateau), 0 at t=32 (0-plateau)
    return np.clip((distance - PLATEAU / 2) * 255.0 / RAMP, 0, 255)


def affine_mask(length: int) -> np.ndarray:
    """True where the wave is affine at least ``KINK_MARGIN`` pixels around."""
    t = np.arange(length) % PERIOD
    kinks = np.array([PLATEAU / 2, PLATEAU / 2 + RAMP, PERIOD - PLATEAU / 2 - RAMP,
                      PERIOD - PLATEAU / 2])  # 4, 28, 36, 60
    distance = np.abs(t[:, None] - kinks[None, :])
    distance = np.minimum(distance, PERIOD - distance).min(axis=1)
    return distance >= KINK_MARGIN


def wave_image(width: int, height: int) -> np.ndarray:
    """BGR uint8 image: red = wave along x, green = wave along y, blue = 0."""
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 2] = np.round(wave(width))[None, :]
    img[..., 1] = np.round(wave(height))[:, None]
    return img


def wave_ellipse(width: int, height: int, vertices: int = 48) -> np.ndarray:
    """The ``(vertices, 2)`` polygon of the ellipse inscribed in an image's ground-truth box
    (its instance mask; not the box, so that a mask-based measure differs from the box's)."""
    angles = np.arange(vertices) * 2 * np.pi / vertices
    return np.stack([width / 2 + width / 4 * np.cos(angles),
                     height / 2 + height / 4 * np.sin(angles)], axis=1)


def write_wave_dataset(root: str, segmentation: bool = False) -> Dict[str, str]:
    """Writes the alignment images and a COCO annotation file (one box each; with
    ``segmentation`` also its instance mask, :func:`wave_ellipse` as a COCO polygon) under
    ``root``.

    Returns:
        dict: ``data_root``, ``ann_file`` (relative) and ``images`` (file names in order).
    """
    os.makedirs(osp.join(root, 'images'), exist_ok=True)
    images, annotations, names = [], [], []
    for idx, (width, height) in enumerate(IMAGE_SIZES):
        name = f'wave_{idx}.png'
        cv2.imwrite(osp.join(root, 'images', name), wave_image(width, height))
        images.append(dict(id=idx + 1, file_name=name, width=width, height=height))
        box = [width / 4, height / 4, width / 2, height / 2]
        annotations.append(dict(id=idx + 1, image_id=idx + 1, category_id=1, bbox=box,
                                area=box[2] * box[3], iscrowd=0))
        if segmentation:
            annotations[-1]['segmentation'] = [
                np.round(wave_ellipse(width, height), 2).ravel().tolist()]
        names.append(name)
    ann = dict(images=images, annotations=annotations,
               categories=[dict(id=1, name=CLASSES[0])])
    with open(osp.join(root, 'annotations.json'), 'w', encoding='utf-8') as f:
        json.dump(ann, f)
    return dict(data_root=root + '/', ann_file='annotations.json', images=names)


def _drop_pretrained(node) -> None:
    """Removes every ``init_cfg=dict(type='Pretrained', ...)`` (a download)."""
    if isinstance(node, dict):
        init_cfg = node.get('init_cfg')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            node['init_cfg'] = None
        for value in node.values():
            _drop_pretrained(value)
    elif isinstance(node, (list, tuple)):
        for item in node:
            _drop_pretrained(item)


def _at_scale(pipeline: List[dict], scale: Tuple[int, int]) -> List[dict]:
    for step in pipeline:
        if step['type'].split('.')[-1] == 'Resize':
            step['scale'] = scale
    return pipeline


def small_kind_cfg(kind: str, scale: Tuple[int, int] = SCALE) -> Config:
    """The packaged config of ``kind`` shrunk for the CPU (see the module docstring), with
    ``len(CLASSES)`` classes; its pipelines resize to ``scale`` ``(w, h)``."""
    cfg = Config.fromfile(mmdet_config(KINDS[kind]))
    model = cfg.model
    _drop_pretrained(model)
    replace_key(model, 'num_classes', len(CLASSES))
    model.backbone.depth = 18
    if kind == 'retinanet':
        model.neck.update(in_channels=[64, 128, 256, 512], out_channels=64)
        model.bbox_head.update(in_channels=64, feat_channels=64, stacked_convs=1)
    elif kind in ('faster_rcnn', 'mask_rcnn'):
        model.neck.update(in_channels=[64, 128, 256, 512], out_channels=64)
        model.rpn_head.update(in_channels=64, feat_channels=64)
        model.roi_head.bbox_roi_extractor.out_channels = 64
        model.roi_head.bbox_head.update(in_channels=64, fc_out_channels=128)
        model.test_cfg.rpn.update(nms_pre=200, max_per_img=100)
        model.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=100)
        model.train_cfg.rcnn.sampler.num = 64
        if kind == 'mask_rcnn':
            model.roi_head.mask_roi_extractor.out_channels = 64
            model.roi_head.mask_head.update(in_channels=64, conv_out_channels=64, num_convs=2)
    elif kind == 'dino':
        model.neck.in_channels = [128, 256, 512]
        model.num_queries = 100
        model.encoder.num_layers = 1
        model.decoder.num_layers = 1
        model.encoder.layer_cfg.ffn_cfg.feedforward_channels = 256
        model.decoder.layer_cfg.ffn_cfg.feedforward_channels = 256
        model.dn_cfg.group_cfg.num_dn_queries = 10
        model.test_cfg.max_per_img = 100
    else:
        raise ValueError(f'unknown kind {kind!r}; expected one of {sorted(KINDS)}')
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        _at_scale(cfg[loader].dataset.pipeline, scale)
    if cfg.get('test_pipeline'):
        _at_scale(cfg.test_pipeline, scale)
    return cfg


def runner_cfg(kind: str, dataset: Dict[str, str], work_dir: str,
               custom_hooks: List[dict], scale: Tuple[int, int] = SCALE) -> Config:
    """``small_kind_cfg(kind, scale)`` on the alignment images: one training iteration (batch
    2, the test-time resize; instance masks loaded for a model with a mask head), then one
    validation epoch with both images in one batch."""
    cfg = small_kind_cfg(kind, scale)
    with_mask = 'mask_head' in cfg.model.get('roi_head', {})
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=0)
    val_pipeline = cfg.val_dataloader.dataset.pipeline
    resize = next(s for s in val_pipeline if s['type'] == 'Resize')
    train_pipeline = [dict(type='LoadImageFromFile'),
                      dict(type='LoadAnnotations', with_bbox=True, with_mask=with_mask),
                      dict(resize),
                      dict(type='PackDetInputs')]
    for loader, pipeline in ((cfg.train_dataloader, train_pipeline),
                             (cfg.val_dataloader, val_pipeline)):
        loader.update(batch_size=2, num_workers=0, persistent_workers=False)
        loader.sampler = dict(type='DefaultSampler', shuffle=False)
        loader.pop('batch_sampler', None)  # AspectRatioBatchSampler would split the pair
        loader.dataset.update(data_root=dataset['data_root'], ann_file=dataset['ann_file'],
                              data_prefix=dict(img='images/'), metainfo=dict(classes=CLASSES),
                              pipeline=pipeline, filter_cfg=None)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator = cfg.test_evaluator = dict(
        type='CocoMetric', ann_file=dataset['data_root'] + dataset['ann_file'], metric='bbox')
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=1)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = None
    cfg.custom_imports = dict(imports=['mmyolo_vis_hooks'], allow_failed_imports=False)
    cfg.custom_hooks = list(custom_hooks)
    cfg.visualizer.vis_backends = [dict(type='TensorboardVisBackend')]
    return cfg


def batch_layout(divisor: int) -> Tuple[Tuple[int, int], List[Tuple[int, int]]]:
    """The validation batch of the two alignment images at ``SCALE``: its padded ``(H, W)``
    (largest image, then ``pad_size_divisor``) and each image's resized ``(h, w)``, from
    MMCV's own keep-ratio rule (``mmcv.rescale_size``)."""
    import mmcv
    sizes = [mmcv.rescale_size((w, h), SCALE)[::-1] for w, h in IMAGE_SIZES]
    height = max(h for h, _ in sizes)
    width = max(w for _, w in sizes)
    return ((-(-height // divisor) * divisor, -(-width // divisor) * divisor), sizes)
