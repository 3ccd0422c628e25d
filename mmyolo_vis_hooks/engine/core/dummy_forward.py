"""The dummy forward: blank images run through a detector the way MMDetection runs real ones,
for the checks and previews that need a forward before any image is read (the feature-layer
probe, the layer preview).

MMDetection's tensor-mode forward needs data samples: a two-stage detector's ``_forward`` runs
``rpn_head.predict(x, batch_data_samples)`` and DETR-like detectors build their padding masks
and positional encodings from ``img_shape`` / ``batch_input_shape``. So the blank images are
packed by MMDetection's own ``PackDetInputs`` and go through the model's data preprocessor,
as a test pipeline and ``test_step`` would pass them.
"""
import math
from typing import Callable, Sequence, Tuple

import numpy as np
import torch
from torch import nn


def dummy_batch(model: nn.Module, input_size: Tuple[int, int] = (64, 64),
                batch_size: int = 1) -> dict:
    """A batch of black images as a test pipeline and ``model.data_preprocessor`` give it.

    Each image is packed by MMDetection's ``PackDetInputs`` as a test pipeline (with its
    ``LoadAnnotations``) packs an image without objects that it did not need to resize:
    ``ori_shape`` = ``img_shape`` = ``input_size``, ``scale_factor`` (1.0, 1.0), no flip, and
    empty ground truth (boxes, labels, masks): the tensor-mode forward of single-stage
    instance segmentors (CondInst, YOLACT) runs its box head's ``loss`` on it. The model's
    data preprocessor then normalizes the batch, pads it to its ``pad_size_divisor`` and adds
    ``pad_shape`` and ``batch_input_shape``, exactly as in ``test_step``.

    Args:
        model (nn.Module): An MMEngine model with a ``data_preprocessor`` (an MMDetection or
            MMYOLO detector).
        input_size (tuple[int, int]): ``(H, W)`` of each image. Defaults to (64, 64).
        batch_size (int): Number of images. Defaults to 1.

    Returns:
        dict: ``inputs`` (Tensor, ``(N, 3, H', W')`` on the model's device) and
        ``data_samples`` (list[DetDataSample]).
    """
    from mmdet.datasets.transforms import PackDetInputs
    from mmdet.structures.mask import BitmapMasks
    from mmengine.dataset import pseudo_collate

    height, width = (int(v) for v in input_size)
    pack = PackDetInputs()
    packed = [
        pack.transform(dict(
            img=np.zeros((height, width, 3), np.uint8), img_id=index,
            ori_shape=(height, width), img_shape=(height, width), scale_factor=(1.0, 1.0),
            flip=False, flip_direction=None, gt_bboxes=np.zeros((0, 4), np.float32),
            gt_bboxes_labels=np.zeros((0, ), np.int64), gt_ignore_flags=np.zeros((0, ), bool),
            gt_masks=BitmapMasks(np.zeros((0, height, width), np.uint8), height, width)))
        for index in range(batch_size)
    ]
    return model.data_preprocessor(pseudo_collate(packed), False)


def dummy_input_size(model: nn.Module, input_size: Tuple[int, int] = (64, 64)
                     ) -> Tuple[int, int]:
    """``input_size``, grown where the detector cannot run on so small an input.

    DETR-like detectors that select their queries from the encoder's memory (DINO, DDQ-DETR,
    Deformable DETR with ``as_two_stage=True``) take the top ``num_queries`` positions over
    all feature levels; fewer positions fail (``selected index k out of range``). For them the
    finest level's stride is measured with one backbone and neck forward, and the input grows
    to a square, a multiple of 32, whose finest level alone has ``num_queries`` positions
    (DINO's 900 queries at stride 8: 256 x 256). Other models keep ``input_size``.

    The caller owns the model's mode and the grad mode.

    Args:
        model (nn.Module): The (unwrapped) model.
        input_size (tuple[int, int]): ``(H, W)`` wanted. Defaults to (64, 64).

    Returns:
        tuple[int, int]: ``(H, W)`` to use.
    """
    height, width = (int(v) for v in input_size)
    num_queries = getattr(model, 'num_queries', None)
    if not (getattr(model, 'as_two_stage', False) and num_queries):
        return height, width
    inputs = dummy_batch(model, (height, width))['inputs']
    finest = model.extract_feat(inputs)[0]
    stride = inputs.shape[-1] / finest.shape[-1]
    side = 32 * math.ceil(stride * math.ceil(math.sqrt(num_queries)) / 32)
    return max(height, side), max(width, side)


def prepare_dummy_forward(model: nn.Module, input_shape: Sequence[int] = (1, 3, 64, 64)
                          ) -> Callable[[], object]:
    """Prepares one forward of blank images through the network part of ``model``, without
    post-processing: call the returned function to run it.

    A detector (an MMEngine ``BaseModel``) gets :func:`dummy_batch` at
    :func:`dummy_input_size` and runs MMDetection's tensor-mode forward,
    ``model(inputs, data_samples, mode='tensor')``, which every kind accepts (dense
    one-stage, two-stage, DETR-like, MMYOLO). Any other module is called with a zero tensor of
    ``input_shape``. Preparing runs the data preprocessor (and, for DETRs that select queries,
    the sizing forward), so hooks attached between preparing and running record the network's
    forward alone.

    The caller owns the model's mode and the grad mode (``core.model_state``): neither is
    changed here.

    Args:
        model (nn.Module): The (unwrapped) model.
        input_shape (Sequence[int]): ``(N, C, H, W)``; a detector gets ``N`` 3-channel images
            of ``H x W`` (then padded by its data preprocessor). Defaults to (1, 3, 64, 64).

    Returns:
        Callable[[], object]: Runs the forward and returns its output.
    """
    from mmengine.model import BaseModel

    batch_size, _, height, width = (int(v) for v in input_shape)
    if isinstance(model, BaseModel):
        data = dummy_batch(model, dummy_input_size(model, (height, width)), batch_size)
        return lambda: model(data['inputs'], data['data_samples'], mode='tensor')
    param = next(model.parameters(), None)
    inputs = torch.zeros(tuple(input_shape), device=param.device if param is not None else 'cpu')
    return lambda: model(inputs)
