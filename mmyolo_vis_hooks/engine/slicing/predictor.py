"""The one inference path for slices and whole images (the tool and the sahi adapter use it).

Per image, the config's own test transforms run on the pixels (what ``LoadImageFromFile`` would
have produced: BGR uint8), so each slice gets exactly MMYOLO's test-time letterbox. A slice that
already has the model's input size passes through them untouched (no resize, no pad), which is
both exact and free. The batch then goes through the model's data preprocessor (channel order,
mean/std, size-divisor padding) as ONE stacked tensor, one forward (``mode='tensor'``), and the
head's own ``predict_by_feat`` maps boxes back to each image's pixels. The score threshold is
handed to the head's decoding (never lowered below the config's), which drops boxes before its
NMS; boxes above the threshold come out the same as with the config's threshold, because only
higher-scored boxes can suppress or outrank them.

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
    """

    def __init__(self, model: torch.nn.Module, cfg: Optional[Config] = None,
                 channels_last: Optional[bool] = None) -> None:
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
            channels_last = torch.device(self.model.data_preprocessor.device).type == 'cpu'
        elif not isinstance(channels_last, bool):
            raise TypeError(f'channels_last must be None or a bool, got {channels_last!r}')
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        init_default_scope(cfg.get('default_scope', 'mmyolo'))
        self.transforms = [TRANSFORMS.build(t) for t in test_transform_cfgs(cfg)]
        self._untouched_meta: Dict[tuple, Optional[dict]] = {}
        self._guard_depth = 0
        probe = self._transform(np.zeros((_PROBE_SIDE, _PROBE_SIDE, 3), np.uint8))[0]
        self.input_size: Tuple[int, int] = tuple(probe.shape[:2])

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
        pixels = torch.from_numpy(np.stack(images))  # N, H, W, 3 in RGB, contiguous
        if not dp._channel_conversion:  # the model takes the pipeline's BGR as is
            pixels = pixels.flip(-1)
        # Normalised as (N*H, W*3) rows with per-row mean/std, so the innermost loop runs over
        # W*3 values instead of 3 channels (7x faster than broadcasting (3, 1, 1) here); the
        # same float ops as the preprocessor's (x.float() - mean) / std, hence the same bits.
        rows = pixels.to(dp.device).view(-1, width * 3).float()
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
        once instead of twice per batch. Not for concurrent use from several threads."""
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

    def decode(self, outs: tuple, metas: List[dict], score_thr: float = 0.0) -> List[Detections]:
        """The head's own decoding + NMS, boxes in each image's pixels, scores > score_thr."""
        head = self.model.bbox_head
        test_cfg = copy.deepcopy(head.test_cfg)
        if test_cfg is not None:
            test_cfg['score_thr'] = max(float(test_cfg.get('score_thr', 0.0)), float(score_thr))
        with self.guard():
            results = head.predict_by_feat(*outs, batch_img_metas=metas, cfg=test_cfg,
                                           rescale=True)
        dets = []
        for res in results:
            det = Detections(res.bboxes.float().cpu().numpy(), res.scores.float().cpu().numpy(),
                             res.labels.cpu().numpy())
            dets.append(det.select(det.scores > score_thr))
        return dets

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
