"""Feature-map capture shared by ``FeatMapVisHook`` and the featmap tool: one forward with the
target layers recorded, and the probe forward that checks them before any image is drawn.
"""
import contextlib
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..core.dummy_forward import prepare_dummy_forward
from ..core.layers import ActivationCapture, flatten_output, resolve_layer
from ..core.model_state import preserved_model_state


@dataclass
class CapturedSample:
    """What one image's forward leaves for drawing.

    Attributes:
        maps (dict[str, Tensor]): Per output key (``layer``, ``layer[i]``, ``layer@call``:
            ``engine.core.layers.output_key``) a CHW map.
        meta (dict): The processed sample's metainfo (``ori_shape``, ``scale_factor``, ...).
        boxes, scores, labels (np.ndarray): Predictions in original-image pixels.
    """
    maps: Dict[str, torch.Tensor]
    meta: dict
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))


def captured_from_output(maps: Dict[str, torch.Tensor], data_sample) -> CapturedSample:
    """Pairs captured maps with a ``DetDataSample`` returned by ``val_step``/``test_step``."""
    pred = getattr(data_sample, 'pred_instances', None)
    sample = CapturedSample(maps=dict(maps), meta=dict(data_sample.metainfo))
    if pred is not None and len(pred) > 0:
        # rotated heads may give mmrotate's RotatedBoxes: their (K, 5) tensor
        sample.boxes = getattr(pred.bboxes, 'tensor', pred.bboxes).detach().float().cpu().numpy()
        sample.scores = pred.scores.detach().float().cpu().numpy()
        sample.labels = pred.labels.detach().cpu().numpy()
    return sample


def check_feature_maps(capture: ActivationCapture, owner: str) -> None:
    """After a forward: raises ValueError (prefixed with ``owner``) naming every target layer
    that gave nothing to draw (``ActivationCapture.missing_maps``) and what is accepted."""
    missing = capture.missing_maps()
    if not missing:
        return
    listed = '; '.join(f'{path!r} {why}' for path, why in missing.items())
    raise ValueError(
        f'{owner}: these target layers give no feature map to draw: {listed}. Accepted: layers '
        f'run by the network\'s forward whose output is a 4-D (N, C, H, W) tensor, or a '
        f'tuple/list of them (drawn as <layer>[i]; a module run several times per forward as '
        f'<layer>@<call>), e.g. "backbone.stem", "neck", '
        f'"neck.out_layers[0]"; for a head, one of its conv layers. --preview-model '
        f'(tools/featmap_vis.py) lists every layer\'s output shapes.')


@contextlib.contextmanager
def token_levels_from_features(model: nn.Module, capture: ActivationCapture):
    """Within the context, a layer that returns a transformer's token sequence (a DETR's
    encoder) is recorded as one map per feature level (``<layer>[i]``): each forward's
    features give ``capture`` the levels' grid (the detector adapter's ``token_grids``).
    A model without an adapter, or without a features module, is recorded as it is."""
    from ..detectors import UnsupportedDetectorError, explainable_detector
    from ..detectors.base import feature_module
    try:
        adapter = explainable_detector(model)
    except (UnsupportedDetectorError, ImportError):  # any model's maps can be drawn
        adapter = None
    module = None if adapter is None else feature_module(adapter.model)
    if module is None:
        yield
        return

    def watch(_module, _inputs, output):
        capture.token_grids = adapter.token_grids(flatten_output(output))
    handle = module.register_forward_hook(watch)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def forward_and_capture(model: nn.Module, data: dict, target_layers: Sequence[str],
                        owner: str = 'feature maps') -> List[CapturedSample]:
    """Runs ``model.test_step`` on a collated batch and captures ``target_layers``.

    The caller owns the model's mode (use ``engine.core.model_state.preserved_model_state``).

    Raises:
        ValueError: A target layer did not run or gave no 4-D map (message from ``owner``).
    """
    with ActivationCapture(model, target_layers) as capture, \
            token_levels_from_features(model, capture):
        outputs = model.test_step(data)
    check_feature_maps(capture, owner)
    return [captured_from_output(capture.maps(i), out) for i, out in enumerate(outputs)]


def probe_feature_layers(model: nn.Module, target_layers: Sequence[str], owner: str,
                         input_size: Tuple[int, int] = (64, 64)) -> Dict[str, Tuple[int, ...]]:
    """Checks target layers before any image is drawn: each path must name a layer (nearest
    valid names otherwise) that runs in the network's forward and gives a 4-D map.

    One forward of a blank image of ``input_size`` (``(H, W)``, a multiple of the largest
    stride; larger for DETRs that need more positions) in eval mode without gradients, run
    the way MMDetection runs its detectors (``engine.core.dummy_forward``); every module's
    mode, the buffers and the RNG states are restored afterwards. The hook and the featmap
    tool probe layers the same way.

    Returns:
        dict[str, tuple]: Per output key (``layer``, ``layer[i]``, ``layer@call``), the CHW
        shape of its map.

    Raises:
        ValueError: An unknown layer, or one that gives no feature map (message from
            ``owner``).
    """
    for path in target_layers:
        resolve_layer(model, path)
    with preserved_model_state(model), torch.no_grad():
        model.eval()
        forward = prepare_dummy_forward(model, (1, 3, *input_size))
        with ActivationCapture(model, target_layers) as capture, \
                token_levels_from_features(model, capture):
            forward()
    check_feature_maps(capture, owner)
    return {key: tuple(m.shape) for key, m in capture.maps().items()}
