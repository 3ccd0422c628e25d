"""The one inference path for slices and whole images (the tool and the sahi adapter use it).

Per image, the config's own test transforms run on the pixels (what ``LoadImageFromFile`` would
have produced: BGR uint8), so each slice gets exactly MMYOLO's test-time letterbox. A slice that
already has the model's input size passes through them untouched (no resize, no pad), which is
both exact and free. The batch then goes through the model's data preprocessor (channel order,
mean/std, size-divisor padding) as ONE stacked tensor, one forward (``mode='tensor'``), and the
head's decoding maps boxes back to each image's pixels: for every MMYOLO detection family
(whose heads use ``YOLOv5Head.predict_by_feat``) :func:`batched_predict_by_feat` decodes the
whole batch at once with exactly that method's boxes (tested bit for bit), other heads use
their own ``predict_by_feat``. The score threshold is handed to the decoding (never lowered
below the config's), which drops boxes before its NMS; boxes above the threshold come out the
same as with the config's threshold, because only higher-scored boxes can suppress or outrank
them.

On the CPU the batch is handed to the network in channels-last layout (NHWC in memory, the
layout the decoded slices already have): oneDNN's convolutions run about 30% faster on it
(YOLOv5-n, 320 px slices, ``benchmarks/bench_large_image.py``), and only the input changes:
the model's parameters keep their layout. Outputs differ from the standard layout by float
rounding only (about 1e-5 on logits).
"""
import copy
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config
from mmengine.model import is_model_wrapper

from ..core.devices import prefers_channels_last
from ..core.model_state import preserved_modes
from ..core.pipeline import test_pipeline_cfg, without_loading
from .detections import Detections

_PROBE_SIDE = 2048


def test_transform_cfgs(cfg: Config) -> List[dict]:
    """The config's test pipeline without its loading/packing steps."""
    try:
        return without_loading(test_pipeline_cfg(cfg))
    except ValueError as err:
        raise ValueError(f'{err}; sliced inference needs it to letterbox each slice') from None


@contextmanager
def inference_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no_grad for the block; every module's mode is set back after."""
    with preserved_modes(model, training=False), torch.no_grad():
        yield


def _fast_preprocessor_types() -> tuple:
    from mmdet.models.data_preprocessors import DetDataPreprocessor
    from mmyolo.models.data_preprocessors import YOLOv5DetDataPreprocessor
    return DetDataPreprocessor, YOLOv5DetDataPreprocessor


def _standard_predict_by_feat():
    from mmyolo.models.dense_heads import YOLOv5Head
    return YOLOv5Head.predict_by_feat


def has_standard_decoding(head: torch.nn.Module) -> bool:
    """Whether ``head`` decodes with ``YOLOv5Head.predict_by_feat`` (all 7 MMYOLO detection
    families do; instance/rotated/pose heads override it), which
    :func:`batched_predict_by_feat` reproduces."""
    return getattr(type(head), 'predict_by_feat', None) is _standard_predict_by_feat()


def _nms_keep(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
              nms_cfg: Optional[dict]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``mmcv.ops.batched_nms(boxes, scores, labels, nms_cfg)``'s kept indices and scores.

    For the plain ``nms`` type it computes the same class-offset boxes with the same float ops
    and calls the same C++ NMS directly, without batched_nms's per-call Python (its ``eval``,
    argument inspection and autograd Function cost ~6x the NMS itself on a slice's boxes);
    anything else goes through batched_nms itself.
    """
    from mmcv.ops import batched_nms
    from mmcv.ops.nms import ext_module
    cfg = dict(nms_cfg) if nms_cfg is not None else None
    plain = (cfg is not None and cfg.get('type', 'nms') == 'nms'
             and set(cfg) <= {'type', 'iou_threshold', 'iou_thr', 'offset', 'class_agnostic',
                              'split_thr'}
             and len(boxes) < cfg.get('split_thr', 10000))
    if not plain:
        dets, keep = batched_nms(boxes, scores, labels, cfg)
        return keep, dets[:, -1]
    if cfg.get('class_agnostic', False):
        boxes_for_nms = boxes
    else:
        offsets = labels.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
        boxes_for_nms = boxes + offsets[:, None]
    iou_thr = cfg.get('iou_threshold', cfg.get('iou_thr'))
    keep = ext_module.nms(boxes_for_nms, scores, iou_threshold=float(iou_thr),
                          offset=int(cfg.get('offset', 0)))
    return keep, scores[keep]


def batched_predict_by_feat(head: torch.nn.Module, cls_scores: Sequence[torch.Tensor],
                            bbox_preds: Sequence[torch.Tensor],
                            objectnesses: Optional[Sequence[torch.Tensor]] = None, *,
                            batch_img_metas: List[dict], cfg: dict
                            ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, List[int]]:
    """``YOLOv5Head.predict_by_feat(..., rescale=True, with_nms=True)`` for a whole batch,
    with the same boxes, scores and labels bit for bit (tested on several families) in the
    same order, as flat tensors.

    Why it is exact: every op that rounds (sigmoid, the box coder) runs, as in the original,
    once on the whole batch's tensors of the same shapes; after that only selections,
    comparisons and correctly rounded elementwise ops (products, differences, quotients,
    clamps), whose results do not depend on how many rows are processed together, are batched;
    the per-image sort and NMS (whose tie order depends on their input) run per image on the
    same values in the same order. What it saves is the per-image Python of the original
    (``InstanceData``, a deep copy of the config, mmcv's ``batched_nms`` wrapper): about 5x
    faster on a batch of 8 slices.

    Args:
        head (nn.Module): A head for which :func:`has_standard_decoding` holds.
        cls_scores, bbox_preds, objectnesses (Sequence[Tensor]): The head's outputs.
        batch_img_metas (list[dict]): Per image ``ori_shape``, ``scale_factor`` and
            optionally ``pad_param``.
        cfg (dict): The test config (``head.test_cfg`` with its score threshold).

    Returns:
        tuple: ``bboxes`` (K, 4), ``scores`` (K,), ``labels`` (K,) of all images, image after
        image, and the number of boxes of each image.
    """
    from mmengine.config import ConfigDict
    multi_label = bool(cfg.get('multi_label', False)) and head.num_classes > 1
    num_imgs = len(batch_img_metas)
    # --- as YOLOv5Head.predict_by_feat, on the whole batch (same ops, same shapes) ---
    featmap_sizes = [cls_score.shape[2:] for cls_score in cls_scores]
    if featmap_sizes != head.featmap_sizes:
        head.mlvl_priors = head.prior_generator.grid_priors(
            featmap_sizes, dtype=cls_scores[0].dtype, device=cls_scores[0].device)
        head.featmap_sizes = featmap_sizes
    flatten_priors = torch.cat(head.mlvl_priors)
    flatten_stride = torch.cat([
        flatten_priors.new_full((size.numel() * head.num_base_priors, ), stride)
        for size, stride in zip(featmap_sizes, head.featmap_strides)])
    flatten_cls_scores = torch.cat([
        s.permute(0, 2, 3, 1).reshape(num_imgs, -1, head.num_classes) for s in cls_scores],
        dim=1).sigmoid()
    flatten_bbox_preds = torch.cat([
        b.permute(0, 2, 3, 1).reshape(num_imgs, -1, 4) for b in bbox_preds], dim=1)
    flatten_boxes = head.bbox_coder.decode(flatten_priors[None], flatten_bbox_preds,
                                           flatten_stride)
    score_thr = cfg.get('score_thr', -1)
    yolox_style = cfg.get('yolox_style', False)
    # --- per image in the original; here batched where that cannot change a bit ---
    if objectnesses is not None:
        objectness = torch.cat([o.permute(0, 2, 3, 1).reshape(num_imgs, -1)
                                for o in objectnesses], dim=1).sigmoid()
        if score_thr > 0 and not yolox_style:
            img_idx, prior_idx = (objectness > score_thr).nonzero(as_tuple=True)
        else:
            img_idx, prior_idx = torch.ones_like(objectness, dtype=torch.bool).nonzero(
                as_tuple=True)
        scores = flatten_cls_scores[img_idx, prior_idx] * objectness[img_idx, prior_idx, None]
    else:
        img_idx, prior_idx = torch.ones(flatten_cls_scores.shape[:2], dtype=torch.bool,
                                        device=flatten_cls_scores.device).nonzero(as_tuple=True)
        scores = flatten_cls_scores[img_idx, prior_idx]
    boxes = flatten_boxes[img_idx, prior_idx]
    # filter_scores_and_topk's mask and nonzero, for all images at once (row-major order
    # keeps each image's candidates together and in the original order).
    if multi_label:
        valid = scores > score_thr
        cand, labels = valid.nonzero(as_tuple=True)
        cand_scores = scores[valid]
    else:
        best, labels = scores.max(1, keepdim=True)
        valid = best > score_thr
        cand, _ = valid.nonzero(as_tuple=True)
        cand_scores = best[valid]
        labels = labels[:, 0][cand]
    cand_img = img_idx[cand]
    cand_boxes = boxes[cand]
    # rescale=True: pad and scale factor per candidate (one value per image, as the
    # original's new_tensor of the meta values, in the same float type).
    # (x - 0 is x, bit for bit, for an image without padding)
    if any('pad_param' in m for m in batch_img_metas):
        pads = cand_boxes.new_tensor([
            [m['pad_param'][2], m['pad_param'][0]] * 2 if 'pad_param' in m else [0.0] * 4
            for m in batch_img_metas])
        cand_boxes = cand_boxes - pads[cand_img]
    scales = cand_boxes.new_tensor([list(m['scale_factor']) * 2 for m in batch_img_metas])
    cand_boxes = cand_boxes / scales[cand_img]
    min_size = cfg.get('min_bbox_size', -1)
    if min_size >= 0:
        wide = ((cand_boxes[:, 2] - cand_boxes[:, 0]) > min_size) & (
            (cand_boxes[:, 3] - cand_boxes[:, 1]) > min_size)
    counts = torch.bincount(cand_img, minlength=num_imgs).tolist()
    nms_pre = cfg.get('nms_pre', 100000)
    max_per_img = cfg.get('max_per_img')
    nms_cfg = cfg.get('nms')
    if isinstance(nms_cfg, ConfigDict):
        nms_cfg = nms_cfg.to_dict()
    out_index, out_scores, out_counts = [], [], []
    start = 0
    for img, count in enumerate(counts):
        stop = start + count
        if count == 0:
            out_counts.append(0)
            continue
        img_scores, order = cand_scores[start:stop].sort(descending=True)
        order = order[:min(nms_pre, count)] + start
        img_scores = img_scores[:len(order)]
        if min_size >= 0:
            keep_wide = wide[order]
            if not bool(keep_wide.all()):
                order, img_scores = order[keep_wide], img_scores[keep_wide]
        if len(order):
            keep, img_scores = _nms_keep(cand_boxes[order], img_scores, labels[order], nms_cfg)
            order = order[keep]
            if max_per_img is not None and not yolox_style:
                order, img_scores = order[:max_per_img], img_scores[:max_per_img]
        out_index.append(order)
        out_scores.append(img_scores)
        out_counts.append(len(order))
        start = stop
    if not out_index:
        empty = flatten_boxes.new_zeros((0, 4))
        return empty, empty[:, 0], labels.new_zeros(0), out_counts
    index = torch.cat(out_index)
    out_boxes = cand_boxes[index]
    out_img = cand_img[index]
    # clamp to each image's ori_shape (a clamp is exact, so one call when they agree)
    limits = torch.tensor([[m['ori_shape'][1], m['ori_shape'][0]] * 2
                           for m in batch_img_metas], dtype=out_boxes.dtype)
    out_boxes = torch.minimum(out_boxes.clamp_(min=0), limits.to(out_boxes.device)[out_img])
    return out_boxes, torch.cat(out_scores), labels[index], out_counts


class BatchPredictor:
    """Runs an MMYOLO detector on a batch of RGB images with its test-time semantics.

    Two routes give the same tensor (``tests/test_large_image.py`` checks it bit for bit):

    - exact route: per image, BGR pixels through the config's test transforms, then the model's
      data preprocessor on the stacked batch;
    - fast route, taken when the test transforms leave images of this shape untouched (a slice
      already at the input size: no resize, no pad; found once per shape by running them) and
      the data preprocessor is MMDet's/MMYOLO's standard one: the RGB slices are stacked and
      normalised in one pass with the preprocessor's own mean, std and channel order.

    Args:
        model (nn.Module): The detector (as built by ``engine.inference.build_detector``).
        cfg (Config, optional): Its config; ``model.cfg`` when None.
        channels_last (bool, optional): Give the network channels-last inputs. None: on when
            the data preprocessor's device is the CPU (where it is measured faster).
            Defaults to None.
        batched_decode (bool): Decode the whole batch at once with
            :func:`batched_predict_by_feat` when the head allows it (the same boxes as its
            ``predict_by_feat``, bit for bit, about 5x faster); False: the head's own
            ``predict_by_feat``. Defaults to True.
    """

    def __init__(self, model: torch.nn.Module, cfg: Optional[Config] = None,
                 channels_last: Optional[bool] = None, batched_decode: bool = True) -> None:
        from mmengine.registry import init_default_scope
        from mmyolo.registry import TRANSFORMS
        self.model = model.module if is_model_wrapper(model) else model
        cfg = cfg if cfg is not None else getattr(self.model, 'cfg', None)
        if cfg is None:
            raise ValueError('the model carries no config (model.cfg); build it with '
                             'engine.inference.build_detector or pass cfg=')
        head = getattr(self.model, 'bbox_head', None)
        if head is None or not hasattr(head, 'predict_by_feat'):
            raise TypeError(f'{type(self.model).__name__} has no bbox_head.predict_by_feat; '
                            'sliced inference supports single-stage (MMYOLO) detectors')
        if channels_last is None:
            channels_last = prefers_channels_last(self.device)
        elif not isinstance(channels_last, bool):
            raise TypeError(f'channels_last must be None or a bool, got {channels_last!r}')
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if not isinstance(batched_decode, bool):
            raise TypeError(f'batched_decode must be a bool, got {batched_decode!r}')
        self.batched_decode = batched_decode
        init_default_scope(cfg.get('default_scope', 'mmyolo'))
        self.transforms = [TRANSFORMS.build(t) for t in test_transform_cfgs(cfg)]
        self._untouched_meta: Dict[tuple, Optional[dict]] = {}
        self._guard_depth = 0
        probe = self._transform(np.zeros((_PROBE_SIDE, _PROBE_SIDE, 3), np.uint8))[0]
        self.input_size: Tuple[int, int] = tuple(probe.shape[:2])

    @property
    def device(self) -> torch.device:
        """Where the model runs (its data preprocessor's device)."""
        return torch.device(self.model.data_preprocessor.device)

    def _transform(self, rgb: np.ndarray) -> Tuple[np.ndarray, dict]:
        # The test pipeline expects what LoadImageFromFile yields: BGR.
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        results = dict(img=bgr, img_shape=bgr.shape[:2], ori_shape=bgr.shape[:2])
        for transform in self.transforms:
            results = transform(results)
            if results is None:
                raise ValueError(f'test transform {type(transform).__name__} dropped the image')
        meta = dict(ori_shape=tuple(bgr.shape[:2]), img_shape=tuple(results['img_shape'][:2]),
                    scale_factor=tuple(results.get('scale_factor', (1.0, 1.0))))
        if 'pad_param' in results:
            meta['pad_param'] = results['pad_param']
        return results['img'], meta

    def _meta_if_untouched(self, shape: tuple) -> Optional[dict]:
        """The metadata of images of this shape if the test transforms return them unchanged
        (same array, same pixels), else None. Decided once per shape on random pixels."""
        if shape not in self._untouched_meta:
            probe = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
            bgr = np.ascontiguousarray(probe[..., ::-1])
            out, meta = self._transform(probe)
            untouched = out.shape == bgr.shape and np.array_equal(out, bgr)
            self._untouched_meta[shape] = meta if untouched else None
        meta = self._untouched_meta[shape]
        return copy.deepcopy(meta) if meta is not None else None

    def _fast_inputs(self, images: Sequence[np.ndarray]) -> Optional[torch.Tensor]:
        """The data preprocessor's output computed directly from same-shaped RGB images, or
        None when the preprocessor is not a standard one or would pad."""
        dp = self.model.data_preprocessor
        height, width = images[0].shape[:2]
        divisor = getattr(dp, 'pad_size_divisor', 1)
        if type(dp) not in _fast_preprocessor_types() or height % divisor or width % divisor:
            return None
        if dp._enable_normalize and (dp.mean.numel() != 3 or dp.std.numel() != 3):
            return None
        if self.device.type == 'cpu':
            # Each slice (often a strided view of the large image) converted to float straight
            # into the batch: one pass over its pixels, no uint8 stack in between.
            pixels = torch.empty((len(images), height, width, 3), dtype=torch.float32)
            buffer = pixels.numpy()
            for k, img in enumerate(images):
                buffer[k] = img if dp._channel_conversion else img[..., ::-1]
        else:
            pixels = torch.from_numpy(np.stack(images))  # N, H, W, 3 in RGB, contiguous
            if not dp._channel_conversion:  # the model takes the pipeline's BGR as is
                pixels = pixels.flip(-1)
            pixels = pixels.to(dp.device).float()
        # Normalised as (N*H, W*3) rows with per-row mean/std, so the innermost loop runs over
        # W*3 values instead of 3 channels (7x faster than broadcasting (3, 1, 1) here); the
        # same float ops as the preprocessor's (x.float() - mean) / std, hence the same bits.
        rows = pixels.view(-1, width * 3)
        if dp._enable_normalize:
            rows.sub_(dp.mean.reshape(3).repeat(width)).div_(dp.std.reshape(3).repeat(width))
        # An N, C, H, W view of N, H, W, C values: channels-last strides already.
        inputs = rows.view(len(images), height, width, 3).permute(0, 3, 1, 2)
        return inputs.contiguous(memory_format=self.memory_format)

    def preprocess(self, images: Sequence[np.ndarray]) -> Tuple[torch.Tensor, List[dict]]:
        """Test transforms per image, then the data preprocessor on the whole batch.

        Args:
            images (Sequence[np.ndarray]): RGB uint8 (H, W, 3) images.

        Returns:
            tuple[Tensor, list[dict]]: The model input (N, C, H, W; channels-last in memory
            when ``channels_last``) and per-image metadata.
        """
        inputs = None
        shapes = {img.shape for img in images}
        # Only images already at the input size can pass the transforms untouched.
        if len(shapes) == 1 and next(iter(shapes))[:2] == self.input_size:
            meta = self._meta_if_untouched(next(iter(shapes)))
            if meta is not None:
                inputs = self._fast_inputs(images)
                packed = images
                metas = [copy.deepcopy(meta) for _ in images]
        if inputs is None:
            packed, metas = zip(*(self._transform(img) for img in images))
            if len({p.shape for p in packed}) == 1:
                batch = torch.from_numpy(np.stack(packed)).permute(0, 3, 1, 2).contiguous()
            else:  # the data preprocessor pads differently sized images like a test batch
                batch = [torch.from_numpy(np.ascontiguousarray(p.transpose(2, 0, 1)))
                         for p in packed]
            with torch.no_grad():
                inputs = self.model.data_preprocessor(dict(inputs=batch, data_samples=None),
                                                      False)['inputs']
            inputs = inputs.contiguous(memory_format=self.memory_format)
        batch_input_shape = tuple(inputs.shape[-2:])
        for meta, img in zip(metas, packed):
            meta.update(batch_input_shape=batch_input_shape, pad_shape=tuple(img.shape[:2]))
        return inputs, list(metas)

    @contextmanager
    def guard(self) -> Iterator[None]:
        """:func:`inference_mode` for a whole run of calls: the module walk it costs happens
        once instead of twice per batch. While one thread holds it, calls from other threads
        (``sliced_predict``'s helper) run under no_grad only; do not enter it from two threads
        at once."""
        if self._guard_depth:
            with torch.no_grad():
                yield
            return
        self._guard_depth += 1
        try:
            with inference_mode(self.model):
                yield
        finally:
            self._guard_depth -= 1

    def forward(self, inputs: torch.Tensor) -> tuple:
        """The network alone (backbone, neck, head) on a preprocessed batch."""
        with self.guard():
            return self.model(inputs, mode='tensor')

    def decode_flat(self, outs: tuple, metas: List[dict], score_thr: float = 0.0
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The head's decoding + NMS for a batch, as flat arrays: boxes in each image's pixels
        (K, 4), scores (K,) above ``score_thr``, labels (K,), and each box's image index (K,),
        images in order. Heads decoding with ``YOLOv5Head.predict_by_feat`` (every MMYOLO
        detection family) go through :func:`batched_predict_by_feat` (the same boxes, bit for
        bit) unless ``batched_decode`` is off; others through their own ``predict_by_feat``."""
        head = self.model.bbox_head
        test_cfg = copy.deepcopy(head.test_cfg)
        if test_cfg is not None:
            test_cfg['score_thr'] = max(float(test_cfg.get('score_thr', 0.0)), float(score_thr))
        with self.guard():
            if self.batched_decode and test_cfg is not None and has_standard_decoding(head):
                bboxes, scores, labels, counts = batched_predict_by_feat(
                    head, *outs, batch_img_metas=metas, cfg=test_cfg)
            else:
                results = head.predict_by_feat(*outs, batch_img_metas=metas, cfg=test_cfg,
                                               rescale=True)
                counts = [len(res) for res in results]
                bboxes = torch.cat([res.bboxes for res in results])
                scores = torch.cat([res.scores for res in results])
                labels = torch.cat([res.labels for res in results])
        image_index = np.repeat(np.arange(len(metas)), counts)
        bboxes, scores = bboxes.float().cpu().numpy(), scores.float().cpu().numpy()
        keep = scores > score_thr
        return (bboxes[keep], scores[keep], labels.cpu().numpy().astype(np.int64)[keep],
                image_index[keep])

    def decode(self, outs: tuple, metas: List[dict], score_thr: float = 0.0) -> List[Detections]:
        """The head's own decoding + NMS, boxes in each image's pixels, scores > score_thr."""
        bboxes, scores, labels, image_index = self.decode_flat(outs, metas, score_thr)
        splits = np.searchsorted(image_index, np.arange(1, len(metas)))
        return [Detections(b, s, lab) for b, s, lab in zip(
            np.split(bboxes, splits), np.split(scores, splits), np.split(labels, splits))]

    def predict(self, images: Sequence[np.ndarray], score_thr: float = 0.0) -> List[Detections]:
        """Detections for each image of one batch (one forward pass).

        Args:
            images (Sequence[np.ndarray]): RGB uint8 (H, W, 3) images; same-sized ones are
                stacked into one tensor.
            score_thr (float): Keep boxes scoring above this. Defaults to 0.

        Returns:
            list[Detections]: Per image, boxes in that image's pixels.
        """
        if not len(images):
            return []
        with self.guard():
            inputs, metas = self.preprocess(images)
            return self.decode(self.forward(inputs), metas, score_thr)
