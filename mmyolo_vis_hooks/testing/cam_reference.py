"""References for box-CAM checks, shared by tests and ``benchmarks/bench_cam.py``: a random-init
detector that behaves like a network, a generated input, and grad-cam's view of our targets."""
import contextlib
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn


def calibrate_batchnorm(model: nn.Module, shape, batches: int = 2, seed: int = 0) -> None:
    """Random weights give exploding logits with BN's default running stats; refit the stats
    on random inputs (a random-init model that behaves like a network)."""
    from mmdet.models.detectors import DetectionTransformer, SparseRCNN
    from mmdet.models.detectors.single_stage_instance_seg import SingleStageInstanceSegmentor
    from mmyolo_vis_hooks.engine.detectors.base import default_metas, samples_of
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            inputs = torch.rand(*shape, generator=gen) * 2 - 1
            if isinstance(model, (DetectionTransformer, SingleStageInstanceSegmentor)):
                # their train-mode forwards want labels; the BNs are in backbone and neck
                model.extract_feat(inputs)  # (a transformer has LayerNorms)
            elif isinstance(model, SparseRCNN):  # its tensor mode wants labels too; predict
                # also runs QueryInst's mask head (BNs) on every proposal
                model.predict(inputs, samples_of(default_metas(shape[0], *shape[2:])))
            else:  # two-stage forwards read the image geometry from data samples
                model(inputs, samples_of(default_metas(shape[0], *shape[2:])), mode='tensor')
    model.eval()


def demo_input(model: nn.Module, size: int, seed: int = 3) -> torch.Tensor:
    """A generated shapes image of ``size`` x ``size`` through the model's data preprocessor."""
    from mmdet.structures import DetDataSample
    from mmyolo_vis_hooks.data.synthetic_shapes import render_image
    rgb, _ = render_image(np.random.default_rng(seed), size, size, 6, (24, 96))
    bgr = torch.from_numpy(np.ascontiguousarray(rgb[..., ::-1])).permute(2, 0, 1)
    meta = dict(ori_shape=(size, size), img_shape=(size, size), scale_factor=(1.0, 1.0),
                pad_param=np.zeros(4, np.float32), batch_input_shape=(size, size))
    data = model.data_preprocessor(
        dict(inputs=[bgr], data_samples=[DetDataSample(metainfo=meta)]), False)
    return data['inputs']


class FeatureTap(nn.Module):
    """Returns a fresh view of its input: a hook point that only the head consumes."""

    def forward(self, x):
        return x.view_as(x)


@contextlib.contextmanager
def tokens_through_taps(layer: nn.Module, taps: Sequence[nn.Module],
                        grids: Callable[[], Sequence[Tuple[int, int]]]):
    """Within the context, the token sequence ``layer`` returns (a DETR's encoder) goes on
    split into one map per level, each through its tap, joined again: grad-cam's target
    layers for a token layer. ``grids()`` gives the levels' ``(h, w)`` when the layer runs."""
    from mmyolo_vis_hooks.engine.core.layers import join_tokens, split_tokens

    def route(module, inputs, tokens):
        return join_tokens([tap(m) for tap, m in zip(taps, split_tokens(tokens, grids()))])
    handle = layer.register_forward_hook(route)
    try:
        yield
    finally:
        handle.remove()


class FlatScoresModel(nn.Module):
    """grad-cam's model: the detector's flat ``(B, N, C)`` candidate scores
    (``ExplainableDetector.candidates``), with a tap on each level's features (the head's
    inputs), or on each level of the tokens of ``token_layer``, to hook grad-cam's target
    layers on.

    Args:
        detector (nn.Module): The detector.
        token_layer (str, optional): A layer returning a transformer's token sequence (a
            DETR's ``encoder``). Defaults to None: the features.
    """

    def __init__(self, detector: nn.Module, token_layer: Optional[str] = None) -> None:
        from mmyolo_vis_hooks.engine.core.layers import resolve_layer
        from mmyolo_vis_hooks.engine.detectors import explainable_detector
        super().__init__()
        self.adapter = explainable_detector(detector)
        self.detector = self.adapter.model
        self.token_layer = None if token_layer is None else resolve_layer(self.detector,
                                                                          token_layer)
        param = next(self.detector.parameters())
        with torch.no_grad():
            feats = self.adapter.extract_feat(torch.zeros(1, 3, 64, 64, device=param.device))
        levels = len(feats) if token_layer is None else len(self.adapter.token_grids(feats))
        self.taps = nn.ModuleList(FeatureTap() for _ in range(levels))

    def forward(self, x):
        from mmyolo_vis_hooks.engine.detectors import FlatPredictions
        from mmyolo_vis_hooks.engine.detectors.base import default_metas
        feats = self.adapter.extract_feat(x)
        metas = default_metas(x.shape[0], *x.shape[-2:])
        if self.token_layer is None:
            feats = tuple(tap(f) for tap, f in zip(self.taps, feats))
            return FlatPredictions.cat(self.adapter.level_candidates(feats, metas=metas)).scores
        grids = self.adapter.token_grids(feats)
        with tokens_through_taps(self.token_layer, self.taps, lambda: grids):
            return FlatPredictions.cat(self.adapter.level_candidates(feats, metas=metas)).scores


class BoxScoreTarget:
    """grad-cam target: the score of one (prior, class) entry of the flat scores."""

    def __init__(self, prior: int, label: int) -> None:
        self.prior, self.label = prior, label

    def __call__(self, output):
        return output[self.prior, self.label]


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float('nan')


def saturated_state_dict(state: dict, shift: float = 200.0) -> dict:
    """A YOLOv5-family state dict whose objectness and class-0 logits are raised by ``shift``
    at every prior: with 200, every prior scores exactly 1.0 for class 0 in float32 and the
    gradient of its log score is exactly 0 (the saturation the CAM noise rule must catch).

    The prediction convs' biases are laid out per base prior as (4 box, objectness, classes).
    """
    out = dict(state)
    for key, bias in state.items():
        if key.startswith('bbox_head.head_module.convs_pred.') and key.endswith('.bias'):
            per_prior = bias.float().clone().view(3, -1)  # YOLOv5: 3 base priors per level
            per_prior[:, 4:6] += shift
            out[key] = per_prior.view(-1).to(bias.dtype)
    return out


def saturated_model(model: nn.Module, shift: float = 200.0) -> nn.Module:
    """A copy of a YOLOv5-family detector with :func:`saturated_state_dict`'s logits."""
    import copy
    model = copy.deepcopy(model)
    model.load_state_dict(saturated_state_dict(model.state_dict(), shift))
    return model


def write_saturated_checkpoint(src: str, dst: str, shift: float = 200.0) -> str:
    """The checkpoint ``src`` with :func:`saturated_state_dict`'s logits, written to ``dst``."""
    ckpt = torch.load(src, map_location='cpu', weights_only=True)
    if 'state_dict' in ckpt:
        ckpt['state_dict'] = saturated_state_dict(ckpt['state_dict'], shift)
    else:
        ckpt = saturated_state_dict(ckpt, shift)
    torch.save(ckpt, dst)
    return dst
