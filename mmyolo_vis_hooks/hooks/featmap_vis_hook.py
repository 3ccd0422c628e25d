"""FeatMapVisHook: feature maps of chosen layers on fixed validation images, every N epochs."""
import contextlib
from typing import Dict, Optional, Sequence, Tuple

import torch
from mmengine.registry import HOOKS

from ..engine.core.checks import check_bool, check_str_list, owned_by
from ..engine.core.draw import display_image
from ..engine.core.layers import ActivationCapture
from ..engine.core.model_state import autocast_off, preserved_model_state
from ..engine.featmap import (CapturedSample, activation_stats, captured_from_output,
                              check_reduction, draw_layer, forward_and_capture,
                              probe_feature_layers, token_levels_from_features)
from ..runtime.images import read_rgb
from .base_vis_hook import BaseVisHook


@HOOKS.register_module()
class FeatMapVisHook(BaseVisHook):
    """Logs feature maps of ``target_layers`` for a fixed set of validation images.

    With ``align='letterbox'`` the maps are captured during the validation forward itself (no
    extra forward); images validation did not reach on this process (e.g. another rank's shard)
    get one eval forward of their own. ``align='resize'`` always runs one eval forward per
    image through the resize-only pipeline. Tags: ``featmap/<image>/<key>``, step = epoch, where
    the key names one map:

    - ``<layer>``: the layer's output;
    - ``<layer>[i]``: element ``i`` of a layer returning a tuple/list (e.g. ``neck[2]``);
    - ``<layer>@<c>``: call ``c`` (from 0) of a module that runs more than once per forward,
      e.g. RTMDet's head convolutions shared across pyramid levels (``share_conv=True``):
      ``bbox_head.head_module.cls_convs[0][0].conv@0``, ``@1``, ``@2`` are levels 0, 1, 2;
      with a tuple output, ``<layer>@<c>[i]``.

    Mixed precision: under ``ValLoop(fp16=True)`` the maps captured during validation are
    those of its float16 (CUDA) or bfloat16 (CPU) forward, drawn and summarised in float32;
    the hook's own forwards (``align='resize'``, images validation did not reach) run in
    float32 with autocast switched off and put back as it was afterwards. On the demo detector
    (bfloat16, CPU) the overlays differ from the float32 ones by 0.12-0.28 of 255 pixel levels
    on average, 2 at the 99th percentile (``tests/hooks/test_amp.py`` compares the logged
    images). Training is not changed under ``AmpOptimWrapper`` either (weights stay float32,
    its GradScaler is never touched).

    With ``log_stats`` every
    backend that has ``add_activation_stats`` (``ActivationStatsVisBackend``) also gets
    per-layer statistics over the chosen images.

    Example:
        >>> custom_imports = dict(imports=['mmyolo_vis_hooks'], allow_failed_imports=False)
        >>> custom_hooks = [dict(type='FeatMapVisHook', interval=1, num_images=4,
        ...                      target_layers=['backbone', 'neck'],
        ...                      channel_reduction='squeeze_mean')]

    Args:
        target_layers (Sequence[str]): Dotted layer paths with indexing, e.g. ``'neck'``,
            ``'backbone.stage4'``, ``'neck.out_layers[2]'``. Each layer must run in the
            network's forward and output a 4-D (N, C, H, W) tensor, or a tuple/list holding
            such tensors (each drawn as ``<layer>[i]``; other elements are skipped). Every call
            of a module that runs several times is drawn (``<layer>@<c>``). Anything
            else (a loss module, a head returning lists per level, a 2-D/3-D tensor) is
            refused before training, found by one eval forward of a blank 64x64 image, run as
            MMDetection runs the detector (with data samples; larger for DETRs that select
            their queries from the encoder). Defaults to ('neck',).
        channel_reduction (str, optional): ``'squeeze_mean'``, ``'select_max'`` or None
            (then ``topk`` channels). Defaults to 'squeeze_mean'.
        topk (int): With ``channel_reduction=None``, how many of the most active channels to
            draw; -1 draws the map itself (1 or 3 channels only). Defaults to 4.
        arrangement (tuple[int, int]): (rows, cols) of the top-k grid. Defaults to (2, 2).
        log_stats (bool): Send per-layer activation statistics. Defaults to True.
        **kwargs: ``interval``, ``num_images``, ``img_indices``, ``seed``, ``align``,
            ``alpha``, ``score_thr``, ``max_size``, ``strict``; see ``BaseVisHook``.
    """

    tag_prefix = 'featmap'

    def __init__(self,
                 target_layers: Sequence[str] = ('neck', ),
                 channel_reduction: Optional[str] = 'squeeze_mean',
                 topk: int = 4,
                 arrangement: Tuple[int, int] = (2, 2),
                 log_stats: bool = True,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        with owned_by('FeatMapVisHook'):
            target_layers = check_str_list('target_layers', target_layers,
                                           '"neck.out_layers[2]"')
            check_reduction(channel_reduction, topk, arrangement)
            check_bool('log_stats', log_stats)
        self.target_layers = list(target_layers)
        self.channel_reduction = channel_reduction
        self.topk = topk
        self.arrangement = tuple(arrangement)
        self.log_stats = bool(log_stats)
        self._capture: Optional[ActivationCapture] = None
        self._attached: Optional[contextlib.ExitStack] = None  # the capture's hooks
        self._captured: Dict[str, CapturedSample] = {}
        self._batch_hits: list = []

    def check_model(self, model) -> None:
        """What the target layers output is only known from a forward: the engine's probe
        (one small eval forward, the model restored afterwards) raises before training
        instead of drawing nothing. With ``topk=-1`` and no reduction each map is drawn as it
        is, which needs 1 or 3 channels."""
        try:
            shapes = probe_feature_layers(model, self.target_layers, 'FeatMapVisHook')
        except ValueError:
            raise
        except Exception as err:  # noqa: BLE001 - an unusual model: warn, draw what comes
            self.fail('could not check the outputs of the target layers with a dummy forward',
                      err)
            return
        if self.channel_reduction is not None or self.topk > 0:
            return
        bad = {key: shape[0] for key, shape in shapes.items() if shape[0] not in (1, 3)}
        if bad:
            raise ValueError(
                f'FeatMapVisHook: channel_reduction=None with topk={self.topk} draws each map '
                f'as it is, which needs 1 or 3 channels; these layers have more or fewer: '
                f'{bad}. Use channel_reduction="squeeze_mean" or "select_max", or topk > 0.')

    # ------------------------------------------------ reuse of the validation forward
    def before_val_epoch(self, runner) -> None:
        self._captured = {}
        self._batch_hits = []
        if self.align != 'letterbox' or not self.is_due(runner):
            return
        try:
            model = self.unwrap(runner.model)
            self._capture = ActivationCapture(model, self.target_layers)
            self._attached = contextlib.ExitStack()
            self._attached.enter_context(self._capture)
            self._attached.enter_context(token_levels_from_features(model, self._capture))
            self._capture.enabled = False
        except Exception as err:  # noqa: BLE001
            self._release()
            self.fail('could not attach to the target layers', err)

    def before_val_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._capture is None or not data_batch:
            return
        wanted = {s.img_path for s in self.samples}
        paths = [ds.metainfo.get('img_path') for ds in data_batch.get('data_samples', [])]
        self._batch_hits = [(j, p) for j, p in enumerate(paths)
                            if p in wanted and p not in self._captured]
        self._capture.clear()  # calls are counted per forward: a new batch starts at @0
        self._capture.enabled = bool(self._batch_hits)

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self._capture is None or not self._batch_hits:
            return
        try:
            for j, path in self._batch_hits:
                self._captured[path] = captured_from_output(self._capture.maps(j), outputs[j])
        except Exception as err:  # noqa: BLE001
            self.fail('could not keep the captured maps of this batch', err)
        finally:
            self._capture.enabled = False
            self._batch_hits = []

    def _release(self) -> None:
        if self._attached is not None:
            self._attached.close()
            self._attached = None
        self._capture = None

    def after_val(self, runner) -> None:
        self._release()  # also when a val epoch ended abnormally

    # ------------------------------------------------ drawing and logging
    def after_val_epoch(self, runner, metrics=None) -> None:
        self._release()
        if not self.is_due(runner):
            return
        step = runner.epoch
        model = self.unwrap(runner.model)
        stats_maps: Dict[str, list] = {}
        for sample in self.samples:
            try:
                captured = self._captured.get(sample.img_path)
                if captured is None:
                    with preserved_model_state(model), autocast_off(model):
                        model.eval()
                        captured = forward_and_capture(model, self.load_batch(sample),
                                                       self.target_layers, 'FeatMapVisHook')[0]
                image = display_image(read_rgb(sample.img_path), self.max_size)
            except Exception as err:  # noqa: BLE001
                self.fail(f'skipped image {sample.name}', err)
                continue
            for key, featmap in captured.maps.items():
                try:
                    if not torch.isfinite(featmap).all():
                        self.fail(f'layer {key} has NaN/Inf activations on {sample.name}; '
                                  f'drawn with them zeroed')
                    drawn = draw_layer(image, featmap, captured, self.channel_reduction,
                                         self.topk, self.arrangement, self.alpha,
                                         score_thr=self.score_thr,
                                         class_names=self._class_names)
                except Exception as err:  # noqa: BLE001
                    self.fail(f'skipped layer {key} on {sample.name}', err)
                    continue
                self.log_image(runner, f'{self.tag_prefix}/{sample.name}/{key}', drawn, step)
                stats_maps.setdefault(key, []).append(featmap)
        self._captured = {}
        if self.log_stats:
            self._log_stats(runner, stats_maps, step)

    def _log_stats(self, runner, stats_maps: Dict[str, list], step: int) -> None:
        for key, maps in stats_maps.items():
            if len({m.shape for m in maps}) != 1:  # letterbox batch shapes differ per image
                maps = [m.flatten(1)[:, :, None] for m in maps]
                maps = [torch.cat(maps, dim=1)]
            try:
                stats = activation_stats(maps)
            except Exception as err:  # noqa: BLE001
                self.fail(f'no statistics for layer {key}', err)
                continue
            for name, backend in self._backends(runner).items():
                add = getattr(backend, 'add_activation_stats', None)
                if add is None:
                    continue
                try:
                    add(f'{self.tag_prefix}_stats/{key}', stats, step=step)
                except Exception as err:  # noqa: BLE001
                    self.fail(f'backend {name} failed to write statistics of {key}', err)
