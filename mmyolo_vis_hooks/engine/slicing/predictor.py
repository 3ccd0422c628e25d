"""The one inference path for slices and whole images (the tool and the sahi adapter use it).

Per image, the config's own test transforms run on the pixels (what ``LoadImageFromFile`` would
have produced: BGR uint8), so each slice gets exactly MMYOLO's test-time letterbox. A slice that
already has the model's input size passes through them untouched (no resize, no pad), which is
both exact and free. The batch then goes through the model's data preprocessor (channel order,
mean/std, size-divisor padding) as ONE stacked tensor, one forward, and the detector's own
decoding (``ExplainableDetector.decode`` of ``engine.detectors``: for MMYOLO's detection
families the whole batch at once, bit for bit the boxes of ``YOLOv5Head.predict_by_feat``)
maps boxes back to each image's pixels. The score threshold is handed to the decoding (never lowered
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
from ..core.pipeline import (LOADING_TRANSFORMS, test_pipeline_cfg, transform_type,
                             without_loading)
from ..detectors import explainable_detector
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
    try:
        from mmyolo.models.data_preprocessors import YOLOv5DetDataPreprocessor
    except ImportError:  # MMYOLO is optional
        return (DetDataPreprocessor, )
    return DetDataPreprocessor, YOLOv5DetDataPreprocessor


class BatchPredictor:
    """Runs a detector on a batch of RGB images with its test-time semantics.

    Two routes give the same tensor (``tests/engine/slicing/test_predictor.py`` checks it bit
    for bit):

    - exact route: per image, BGR pixels through the config's test transforms, then the model's
      data preprocessor on the stacked batch;
    - fast route, taken when the test transforms leave images of this shape untouched (a slice
      already at the input size: no resize, no pad; found once per shape by running them) and
      the data preprocessor is MMDet's/MMYOLO's standard one: the RGB slices are stacked and
      normalised in one pass with the preprocessor's own mean, std and channel order.

    Args:
        model (nn.Module): The detector (as built by ``runtime.models.build_detector``).
        cfg (Config, optional): Its config; ``model.cfg`` when None.
        channels_last (bool, optional): Give the network channels-last inputs. None: on when
            the data preprocessor's device is the CPU (where it is measured faster) and the
            model holds no mmcv op that reads contiguous memory
            (``core.devices.reads_contiguous_memory``). Defaults to None.
        batched_decode (bool): Decode with the detector's own batched decoding
            (``ExplainableDetector.decode``: for MMYOLO heads the same boxes as their
            ``predict_by_feat``, bit for bit, about 5x faster); False: the head's own
            ``predict_by_feat``. Defaults to True.
    """

    def __init__(self, model: torch.nn.Module, cfg: Optional[Config] = None,
                 channels_last: Optional[bool] = None, batched_decode: bool = True) -> None:
        from mmengine.registry import TRANSFORMS, init_default_scope
        self.model = model.module if is_model_wrapper(model) else model
        cfg = cfg if cfg is not None else getattr(self.model, 'cfg', None)
        if cfg is None:
            raise ValueError('the model carries no config (model.cfg); build it with '
                             'runtime.models.build_detector or pass cfg=')
        self.detector = explainable_detector(self.model)
        if channels_last is None:
            channels_last = prefers_channels_last(self.device, self.model)
        elif not isinstance(channels_last, bool):
            raise TypeError(f'channels_last must be None or a bool, got {channels_last!r}')
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if not isinstance(batched_decode, bool):
            raise TypeError(f'batched_decode must be a bool, got {batched_decode!r}')
        self.batched_decode = batched_decode
        init_default_scope(cfg.get('default_scope', 'mmyolo'))
        self.transforms = [TRANSFORMS.build(t) for t in test_transform_cfgs(cfg)]
        # the image as its loading step gives it: float32 where it asks (CenterNet's
        # RandomCenterCropPad refuses uint8)
        self.to_float32 = any(transform_type(step) in LOADING_TRANSFORMS
                              and step.get('to_float32') for step in test_pipeline_cfg(cfg))
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
        if self.to_float32:
            bgr = bgr.astype(np.float32)
        results = dict(img=bgr, img_shape=bgr.shape[:2], ori_shape=bgr.shape[:2])
        for transform in self.transforms:
            results = transform(results)
            if results is None:
                raise ValueError(f'test transform {type(transform).__name__} dropped the image')
        meta = dict(ori_shape=tuple(bgr.shape[:2]), img_shape=tuple(results['img_shape'][:2]),
                    scale_factor=tuple(results.get('scale_factor', (1.0, 1.0))))
        for key in ('pad_param', 'border'):  # where the content lies in the input
            if key in results:
                meta[key] = results[key]
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
            return self.detector.forward(inputs)

    def decode_flat(self, outs: tuple, metas: List[dict], score_thr: float = 0.0
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The head's decoding + NMS for a batch, as flat arrays: boxes in each image's pixels
        (K, 4) (rotated: (K, 5)), scores (K,) above ``score_thr``, labels (K,), and each box's image index (K,),
        images in order: the detector's own decoding (``ExplainableDetector.decode``), or
        with ``batched_decode`` off its head's ``predict_by_feat``."""
        test_cfg = copy.deepcopy(self.detector.test_cfg)
        if test_cfg is not None:
            test_cfg['score_thr'] = max(float(test_cfg.get('score_thr', 0.0)), float(score_thr))
        with self.guard():
            decode = self.detector.decode if self.batched_decode else \
                self.detector.decode_unbatched
            bboxes, scores, labels, counts = decode(outs, metas, test_cfg)
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
