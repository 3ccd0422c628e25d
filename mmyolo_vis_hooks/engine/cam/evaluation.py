"""Which box-CAM method to trust on a detector: every method's faithfulness, measured.

:func:`evaluate_methods` explains, in each image, the ``topk`` best boxes above ``score_thr``
with each method (``BoxCAM.explain_data``) and scores every box's map
(``faithfulness.py``): deletion AUC (lower is better) and insertion AUC (higher is better) of
the box's own score as pixels are removed from / revealed onto a blurred (or mean) image in the
map's order, in ``steps`` steps; with ground truth also the pointing game (map maximum within
``tolerance`` px of the ground-truth box the detection matches) and the share of map energy
inside that box; and the time the method took per box. A box the model no longer detects after
a step scores 0 there. ``reference=True`` adds two calibration rows on the same boxes:
``(box)``, the box's own rectangle as its map (a perfectly local map), and ``(uniform)``, a
flat map (pixels in random order: no information).

The :class:`EvaluationReport` it returns holds one record per box and method, the summary per
method (mean ± std of each metric, the mean curves), the best method per metric, a Markdown
table, the curve plot, and writes ``faithfulness.csv``, ``faithfulness.json``, ``boxes.csv``
and ``faithfulness_curves.png`` (what ``tools/boxam_eval.py`` writes: the tool only parses its
arguments, calls this module and prints).

Options are checked in one place, :meth:`EvaluationOptions.check`, before any model work:
``TypeError`` for a wrong type, ``ValueError`` for a wrong value, each naming the option and
what is accepted.

Example:
    >>> from mmyolo_vis_hooks.runtime.models import build_detector, build_image_loader
    >>> model = build_detector('configs/demo/yolov5_n_shapes.py',
    ...                        'tests/assets/yolov5_n_shapes.pth')
    >>> paths, truth = coco_ground_truth('data/shapes/annotations/val.json',
    ...                                  class_names=model.dataset_meta['classes'])
    >>> report = evaluate_methods(model, paths, ['gradcam', 'layercam'],
    ...                           load_image=build_image_loader(model.cfg),
    ...                           ground_truth=truth, max_images=4, steps=8)
    >>> print(report.table())
    >>> report.best_methods()  # e.g. {'deletion_auc': 'gradcam', ...}
"""
import csv
import dataclasses
import inspect
import json
import os
import os.path as osp
import time
from dataclasses import dataclass, field
from typing import (Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple,
                    Union)

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..core.checks import check_bool, check_int, check_str_list, owned_by
from ..core.geometry import original_size, segmentation_masks
from ..slicing.evaluate import category_labels, read_coco_file
from .compose import box_masks
from .engine import BoxCAM
from .faithfulness import (POINTING_TOLERANCE, Faithfulness, check_faithfulness_options,
                           detections_on_original, ground_truth_scores)
from ..detectors import ExplainedBoxes

METRICS = (  # key, heading, better
    ('deletion_auc', 'deletion AUC', 'lower'),
    ('insertion_auc', 'insertion AUC', 'higher'),
    ('pointing_game', 'pointing game', 'higher'),
    ('energy_in_gt', 'energy in GT box', 'higher'),
    ('seconds_per_box', 's / box', 'lower'),
)
# Calibration rows (reference=True): what a perfectly local map and a map without information
# give.
REFERENCES = ('(box)', '(uniform)')
# The BoxCAM options the settings record besides the target (they change the D-RISE maps).
DRISE_OPTIONS = ('num_masks', 'grid_size', 'keep_prob', 'mask_seed', 'drise_similarity',
                 'mask_sampling')
# BoxCAM's keyword arguments (and defaults) that ``cam_options`` may set: all but those the
# evaluation sets itself. Read from its signature so that a new BoxCAM option needs no change.
_CAM_DEFAULTS = {name: param.default for name, param in
                 inspect.signature(BoxCAM).parameters.items()
                 if name not in ('model', 'method', 'score_thr', 'topk')}
_CAM_CHECKED = set(inspect.signature(BoxCAM.check_options).parameters) - {'owner'}

ImageItem = Union[str, Dict[str, Any]]


class GroundTruth(NamedTuple):
    """The ground truth of one image, in original-image pixels.

    Attributes:
        boxes (np.ndarray): ``(G, 4)`` xyxy boxes.
        labels (np.ndarray): ``(G, )`` their model label indices.
        masks (np.ndarray, optional): ``(G, H, W)`` bool instance masks of the original
            image; where given, the pointing game and the energy are measured on the matched
            object's mask instead of its box. Defaults to None.
    """
    boxes: np.ndarray
    labels: np.ndarray
    masks: Optional[np.ndarray] = None


@dataclass(frozen=True)
class EvaluationOptions:
    """How :func:`evaluate_methods` explains and scores boxes.

    Args:
        score_thr (float): Explain boxes scoring above this. Defaults to 0.3.
        topk (int): Boxes explained per image, best first; ``<= 0`` for every box above
            ``score_thr``. Defaults to 3.
        max_images (int, optional): Evaluate only the first N images; all when None.
            Defaults to None.
        steps (int): Deletion/insertion steps per curve, >= 2 (the detector runs
            ``steps - 1`` times per box and curve, plus twice per image). Defaults to 16.
        baseline (str): What removed pixels become: ``'blur'`` (a Gaussian-blurred copy of
            the image) or ``'mean'`` (its per-channel mean). Defaults to 'blur'.
        blur_sigma (float): Blur sigma as a share of the image's shorter side, in (0, 1].
            Defaults to 0.1.
        eval_batch_size (int): Perturbed images per forward. Defaults to 16.
        match_iou_thr (float): A perturbed prediction of the box's class is the box when its
            IoU with it is at least this (the best-overlapping one counts). Defaults to 0.5.
        tolerance (float): Pointing game: pixels around the ground-truth box that count as a
            hit (Zhang et al. 2016: 15). Defaults to 15.0.
        reference (bool): Add the calibration rows ``(box)`` and ``(uniform)``
            (:data:`REFERENCES`). Defaults to False.
        cam_options (Mapping): Further keyword arguments of :class:`BoxCAM`, the same for
            every method: ``target_layers``, ``target``, ``batch_size``,
            ``ratio_channels_to_ablate``, ``match_iou_thr`` (AblationCAM's), ``num_masks``,
            ``grid_size``, ``keep_prob``, ``mask_seed``, ``mask_sampling``; BoxCAM's defaults
            for the others.
            Defaults to an empty dict.
    """
    score_thr: float = 0.3
    topk: int = 3
    max_images: Optional[int] = None
    steps: int = 16
    baseline: str = 'blur'
    blur_sigma: float = 0.1
    eval_batch_size: int = 16
    match_iou_thr: float = 0.5
    tolerance: float = POINTING_TOLERANCE
    reference: bool = False
    cam_options: Mapping[str, Any] = field(default_factory=dict)

    def check(self, methods: Union[str, Sequence[str]],
              owner: str = 'evaluate_methods') -> List[str]:
        """Checks these options for ``methods`` without a model (tools call it before they
        build one).

        Args:
            methods (str | Sequence[str]): Method names (``METHODS``), any case.
            owner (str): Put in front of every message. Defaults to 'evaluate_methods'.

        Returns:
            list[str]: The method names, lower case, each once, in the order given.

        Raises:
            TypeError: An option of the wrong type. ValueError: A value outside what is
            accepted.
        """
        with owned_by(owner):
            names = check_str_list('methods', methods, "['gradcam', 'layercam']")
            if self.max_images is not None:
                check_int('max_images', self.max_images, low=1)
            check_faithfulness_options(self.steps, self.baseline, self.blur_sigma,
                                       self.eval_batch_size, self.match_iou_thr,
                                       self.tolerance)
            check_bool('reference', self.reference)
            if not isinstance(self.cam_options, Mapping):
                raise TypeError(f'cam_options must be a dict of BoxCAM keyword arguments, got '
                                f'{type(self.cam_options).__name__}')
            unknown = sorted(set(self.cam_options) - set(_CAM_DEFAULTS))
            if unknown:
                raise ValueError(f'cam_options: unknown BoxCAM option(s) {", ".join(unknown)}; '
                                 f'accepted: {", ".join(_CAM_DEFAULTS)}')
            checked = {k: v for k, v in self.cam_options.items() if k in _CAM_CHECKED}
            for name in names:
                BoxCAM.check_options(method=name, score_thr=self.score_thr, topk=self.topk,
                                     owner=owner, **checked)
        return list(dict.fromkeys(name.lower() for name in names))

    def cam_option(self, name: str) -> Any:
        """A BoxCAM option as the evaluation uses it: given in ``cam_options``, else
        BoxCAM's default."""
        return self.cam_options.get(name, _CAM_DEFAULTS[name])


@dataclass
class EvaluationReport:
    """What :func:`evaluate_methods` measured.

    Args:
        records (dict[str, list[dict]]): Per method (and calibration row), one record per
            box: ``image`` (file name), ``box`` (index in its image), ``label``, ``score``,
            ``unreliable`` (its CAM is float noise: ``BoxCAMResult.reasons``), the metrics of
            :data:`METRICS` (None where not measured: the pointing game and the energy without
            a ground-truth match, the time for calibration rows) and its ``deletion_curve`` /
            ``insertion_curve`` (``(steps + 1, )`` arrays).
        fractions (list[float]): Share of the pixels removed (revealed) at each curve point.
        settings (dict): The options the numbers were measured with (written to the JSON).
            Defaults to an empty dict.

    Attributes:
        summary (dict[str, dict]): Per method: ``boxes``, ``unreliable``, ``gt_matched``
            (boxes with a ground-truth match), ``<metric>_mean`` / ``<metric>_std`` (None
            without any value) and the mean ``deletion_curve`` / ``insertion_curve`` (lists).
    """
    records: Dict[str, List[dict]]
    fractions: List[float]
    settings: Dict[str, Any] = field(default_factory=dict)
    summary: Dict[str, dict] = field(init=False)

    def __post_init__(self) -> None:
        self.summary = summarize(self.records)

    def best_methods(self) -> Dict[str, str]:
        """The best method per metric (lowest deletion AUC and time, highest of the others);
        the calibration rows do not compete, and a metric without values has none."""
        best = {}
        for key, _, better in METRICS:
            scored = [(e[f'{key}_mean'], m) for m, e in self.summary.items()
                      if e[f'{key}_mean'] is not None and m not in REFERENCES]
            if scored:
                best[key] = (min(scored) if better == 'lower' else max(scored))[1]
        return best

    def table(self) -> str:
        """A Markdown table: one row per method, ``mean ± std`` per metric (``-`` for none)."""
        head = ['method', 'boxes'] + [f'{title} ({"↓" if better == "lower" else "↑"})'
                                      for _, title, better in METRICS]
        lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
        for method, entry in self.summary.items():
            cells = [method, str(entry['boxes'])]
            for key, _, _ in METRICS:
                mean, std = entry[f'{key}_mean'], entry[f'{key}_std']
                digits = 4 if key == 'seconds_per_box' else 3
                cells.append('-' if mean is None else f'{mean:.{digits}f} ± {std:.{digits}f}')
            lines.append('| ' + ' | '.join(cells) + ' |')
        return '\n'.join(lines)

    def write(self, out_dir: str, settings: Optional[Mapping[str, Any]] = None
              ) -> Dict[str, str]:
        """Writes ``faithfulness.csv`` (the summary), ``boxes.csv`` (the records),
        ``faithfulness.json`` (settings, fractions, summary with the mean curves, best
        methods) and ``faithfulness_curves.png`` (:meth:`plot_curves`) to ``out_dir``.

        Args:
            out_dir (str): Output folder, created when missing.
            settings (Mapping, optional): More settings for the JSON (e.g. the tool's source,
                config and device), put before :attr:`settings`. Defaults to None.

        Returns:
            dict[str, str]: The paths, keyed ``csv``, ``json``, ``boxes`` and ``png``.
        """
        os.makedirs(out_dir, exist_ok=True)
        paths = dict(csv=osp.join(out_dir, 'faithfulness.csv'),
                     json=osp.join(out_dir, 'faithfulness.json'),
                     boxes=osp.join(out_dir, 'boxes.csv'),
                     png=osp.join(out_dir, 'faithfulness_curves.png'))
        columns = ['boxes', 'unreliable', 'gt_matched'] + [
            f'{key}_{s}' for key, _, _ in METRICS for s in ('mean', 'std')]
        _write_csv(paths['csv'], ['method'] + columns,
                   ([method] + [entry[c] for c in columns]
                    for method, entry in self.summary.items()))
        box_columns = ['image', 'box', 'label', 'score', 'unreliable'] + [
            k for k, _, _ in METRICS]
        _write_csv(paths['boxes'], ['method'] + box_columns,
                   ([method] + [row[c] for c in box_columns]
                    for method, rows in self.records.items() for row in rows))
        with open(paths['json'], 'w', encoding='utf-8') as f:
            json.dump(dict(settings={**(settings or {}), **self.settings},
                           fractions=self.fractions, methods=self.summary,
                           best=self.best_methods()), f, indent=2)
        self.plot_curves(paths['png'])
        return paths

    def plot_curves(self, path: str) -> None:
        """Saves the mean deletion and insertion curves per method, side by side (mean AUC in
        the legend; calibration rows dashed grey).

        Raises:
            ValueError: matplotlib is not installed.
        """
        try:
            import matplotlib
            matplotlib.use('Agg')
            import matplotlib.pyplot as plt
        except ImportError:
            raise ValueError('the curve plot needs matplotlib: pip install matplotlib') from None
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
        # tab10 without its grey: grey is the calibration rows' colour
        colours = [plt.cm.tab10(i) for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)]
        methods = [m for m in self.summary if m not in REFERENCES]
        for ax, kind, better in zip(axes, ('deletion', 'insertion'), ('lower', 'higher')):
            for method, entry in self.summary.items():
                curve = entry[f'{kind}_curve']
                if curve is None:
                    continue
                style = dict(linestyle='--', color='0.3' if method == '(box)' else '0.65',
                             marker='') if method in REFERENCES else dict(
                                 marker='.', color=colours[methods.index(method) % len(colours)])
                ax.plot(self.fractions, curve, linewidth=1.5,
                        label=f'{method} ({entry[f"{kind}_auc_mean"]:.3f})', **style)
            ax.set_title(f'{kind} (AUC {better} is better)')
            ax.set_xlabel('share of image pixels ' + ('removed' if kind == 'deletion' else
                                                      'revealed'))
            ax.set_ylabel("the box's own score")
            ax.set_xlim(0, 1)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, title='method (mean AUC)', title_fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


# ---------------------------------------------------------------------- the evaluation
def evaluate_methods(model: nn.Module,
                     images: Union[ImageItem, Sequence[ImageItem]],
                     methods: Union[str, Sequence[str]] = 'gradcam',
                     *,
                     options: Optional[EvaluationOptions] = None,
                     ground_truth: Optional[Sequence[Optional[GroundTruth]]] = None,
                     load_image: Optional[Callable[[Any, int], dict]] = None,
                     progress: bool = False,
                     **option_values: Any) -> EvaluationReport:
    """Faithfulness of each box-CAM method on ``model``'s boxes in ``images``.

    Every option is checked (:meth:`EvaluationOptions.check`), and so are the images and the
    ground truth, before the model is touched.

    Args:
        model (nn.Module): An (unwrapped) detector BoxCAM supports, with its data
            preprocessor (e.g. ``runtime.models.build_detector``'s).
        images (str | dict | Sequence): The images, one item each: a collated batch of ONE
            image (a test pipeline's output through ``pseudo_collate``, as
            ``BoxCAM.explain_data`` takes it) is used as is; any other item (a path) is
            loaded with ``load_image``. Loaded one at a time.
        methods (str | Sequence[str]): Method names (``METHODS``), any case; each is
            evaluated once. Defaults to 'gradcam'.
        options (EvaluationOptions, optional): The options; ``option_values`` override its
            fields. Defaults to None (``EvaluationOptions()``).
        ground_truth (Sequence[GroundTruth | None], optional): Per image, its ground truth
            (``(boxes, labels)``, original-image pixels) or None: the pointing game and the
            energy in the GT box are measured where given (:func:`coco_ground_truth` reads
            them from a COCO file). Defaults to None.
        load_image (callable, optional): ``load_image(item, index) -> collated batch of one``
            for items that are not batches, e.g. ``runtime.models.build_image_loader(
            model.cfg)`` for paths. Defaults to None.
        progress (bool): Show a progress bar over the images (tqdm). Defaults to False.
        **option_values: Fields of :class:`EvaluationOptions` (``score_thr=0.3``,
            ``topk=3``, ``steps=16``, ...).

    Returns:
        EvaluationReport: The records, summary and settings.

    Raises:
        TypeError: An option, image item or ground truth of the wrong type.
        ValueError: A value outside what is accepted, an unsupported detector or layer, a
            batch of more than one image, or no box above ``score_thr`` in any image.
    """
    options, methods, items = _prepare(images, methods, options, ground_truth, load_image,
                                       option_values)
    cams = {m: BoxCAM(model, m, score_thr=options.score_thr, topk=options.topk,
                      **options.cam_options) for m in methods}
    next(iter(cams.values())).check_target_layers()  # the same layers for every method
    faith = Faithfulness(model, options.steps, options.baseline, options.blur_sigma,
                         options.eval_batch_size, options.match_iou_thr)
    names = methods + (list(REFERENCES) if options.reference else [])
    records: Dict[str, List[dict]] = {m: [] for m in names}
    fractions: List[float] = []
    for index, (item, truth) in enumerate(tqdm(
            items, desc=f'faithfulness ({len(methods)} methods)', unit='img',
            disable=not progress)):
        data = item if isinstance(item, dict) else load_image(item, index)
        # The perturbed inputs start from the network input BoxCAM.explain_data explains.
        processed = model.data_preprocessor(data, False)
        inputs = processed['inputs']
        if len(inputs) != 1:
            raise ValueError(f'image {index}: a batch of {len(inputs)} images; each item of '
                             f'images must hold one image')
        meta = dict(processed['data_samples'][0].metainfo)
        name = osp.basename(str(item if isinstance(item, str) else
                                meta.get('img_path', index)))
        scorer = _BoxScorer(faith, inputs, meta, name, truth, options.tolerance)
        detections = None
        for method, cam in cams.items():
            start = time.perf_counter()
            (result, ), _ = cam.explain_data(data)
            seconds = time.perf_counter() - start
            if len(result) == 0:
                continue
            detections = result.detections
            records[method] += scorer(detections, result.box_maps(), result.box_maps(meta),
                                      result.reasons, seconds)
        if options.reference and detections is not None:
            for ref, (input_maps, original_maps) in reference_maps(
                    detections, meta, inputs.shape[-2:]).items():
                records[ref] += scorer(detections, input_maps, original_maps)
        fractions = scorer.fractions or fractions
    if not any(records.values()):
        raise ValueError(f'no box above score_thr={options.score_thr} in {len(items)} '
                         f'image(s): nothing to evaluate')
    settings = dict(images=len(items), topk=options.topk, score_thr=options.score_thr,
                    steps=options.steps, baseline=options.baseline,
                    blur_sigma=options.blur_sigma, match_iou_thr=options.match_iou_thr,
                    tolerance=options.tolerance, target=options.cam_option('target'),
                    **{k: options.cam_option(k) for k in DRISE_OPTIONS})
    return EvaluationReport(records, fractions, settings)


def _prepare(images: Union[ImageItem, Sequence[ImageItem]], methods: Union[str, Sequence[str]],
             options: Optional[EvaluationOptions], ground_truth: Optional[Sequence],
             load_image: Optional[Callable], option_values: Dict[str, Any]
             ) -> Tuple[EvaluationOptions, List[str], List[Tuple[ImageItem,
                                                                 Optional[GroundTruth]]]]:
    """The checked options, method names and ``(image item, ground truth)`` pairs of
    :func:`evaluate_methods`; raises before any model work."""
    with owned_by('evaluate_methods'):
        if options is not None and not isinstance(options, EvaluationOptions):
            raise TypeError(f'options must be an EvaluationOptions, got '
                            f'{type(options).__name__}')
        accepted = [f.name for f in dataclasses.fields(EvaluationOptions)]
        unknown = sorted(set(option_values) - set(accepted))
        if unknown:
            raise TypeError(f'unknown option(s) {", ".join(unknown)}; accepted: '
                            f'{", ".join(accepted)}')
    options = dataclasses.replace(options or EvaluationOptions(), **option_values)
    methods = options.check(methods)
    with owned_by('evaluate_methods'):
        if isinstance(images, (str, dict)):
            images = [images]
        if not isinstance(images, Sequence):
            raise TypeError(f'images must be a list of paths or collated batches, got '
                            f'{type(images).__name__}')
        if not images:
            raise ValueError('images is empty: nothing to evaluate')
        if ground_truth is None:
            ground_truth = [None] * len(images)
        elif not isinstance(ground_truth, Sequence):
            raise TypeError(f'ground_truth must be a list with one GroundTruth (or None) per '
                            f'image, got {type(ground_truth).__name__}')
        elif len(ground_truth) != len(images):
            raise ValueError(f'ground_truth must hold one entry (or None) per image: '
                             f'{len(images)} image(s), got {len(ground_truth)} entries')
        if load_image is None and not all(isinstance(item, dict) for item in images):
            raise ValueError('images holds items that are not collated batches (e.g. paths): '
                             'pass load_image, e.g. runtime.models.build_image_loader(model.cfg)')
        truths = [None if truth is None else _check_ground_truth(i, truth)
                  for i, truth in enumerate(ground_truth)]
    items = list(zip(images, truths))
    return options, methods, items[:options.max_images] if options.max_images else items


def _check_ground_truth(index: int, truth: Any) -> GroundTruth:
    """``truth`` as a :class:`GroundTruth` of float32 ``(G, 4)`` boxes and int64 labels."""
    try:
        boxes, labels, *rest = truth
        if len(rest) > 1:
            raise ValueError
        masks = rest[0] if rest else None
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        labels = np.asarray(labels, np.int64).reshape(-1)
        masks = None if masks is None else np.asarray(masks, dtype=bool)
    except (TypeError, ValueError):
        raise ValueError(f'ground_truth[{index}] must be (boxes (G, 4) xyxy, labels (G, )[, '
                         f'masks (G, H, W)]), got {type(truth).__name__}') from None
    if len(boxes) != len(labels):
        raise ValueError(f'ground_truth[{index}]: {len(boxes)} boxes but {len(labels)} labels')
    if masks is not None and (masks.ndim != 3 or len(masks) != len(boxes)):
        raise ValueError(f'ground_truth[{index}]: masks must be (G, H, W) with one mask per '
                         f'box ({len(boxes)}), got shape {masks.shape}')
    return GroundTruth(boxes, labels, masks)


class _BoxScorer:
    """The records of one image's box maps: curves (``Faithfulness``) and, with ground truth,
    the pointing game and energy."""

    def __init__(self, faith: Faithfulness, inputs: Tensor, meta: dict, image: str,
                 truth: Optional[GroundTruth], tolerance: float) -> None:
        self.faith, self.inputs, self.meta, self.image = faith, inputs, meta, image
        self.truth, self.tolerance = truth, tolerance
        self.fractions: List[float] = []

    def __call__(self, boxes: ExplainedBoxes, input_maps: Tensor, original_maps: Tensor,
                 reasons: Optional[Sequence[str]] = None,
                 seconds: Optional[float] = None) -> List[dict]:
        """One record per box; ``seconds``: the method's time for the image (None for the
        calibration rows)."""
        curves = self.faith(self.inputs, boxes, input_maps, self.meta)
        self.fractions = curves.fractions.tolist()
        gt = None if self.truth is None else ground_truth_scores(
            original_maps, detections_on_original(boxes, self.meta), boxes.labels.tolist(),
            self.truth.boxes, self.truth.labels, self.tolerance, self.truth.masks)
        deletion, insertion = curves.deletion_auc, curves.insertion_auc
        return [dict(image=self.image, box=k, label=int(boxes.labels[k]),
                     score=round(float(boxes.scores[k]), 6),
                     unreliable=bool(reasons[k]) if reasons else False,
                     deletion_auc=float(deletion[k]), insertion_auc=float(insertion[k]),
                     pointing_game=None if gt is None else gt.pointing[k],
                     energy_in_gt=None if gt is None else gt.energy[k],
                     seconds_per_box=None if seconds is None else seconds / len(boxes),
                     deletion_curve=curves.deletion[k].numpy(),
                     insertion_curve=curves.insertion[k].numpy())
                for k in range(len(boxes))]


def reference_maps(boxes: ExplainedBoxes, meta: dict, input_size: Tuple[int, int]
                   ) -> Dict[str, Tuple[Tensor, Tensor]]:
    """The calibration maps of :data:`REFERENCES` for ``boxes``: (on the network input, on
    the original image) each."""
    own = box_masks(boxes.boxes.detach().float().cpu(), tuple(input_size)).float()
    own_original = box_masks(detections_on_original(boxes, meta), original_size(meta)).float()
    return {'(box)': (own, own_original),
            '(uniform)': (torch.ones_like(own), torch.ones_like(own_original))}


# ---------------------------------------------------------------------- statistics
def _stats(values: Sequence[Optional[float]]) -> Tuple[Optional[float], Optional[float], int]:
    """Mean, sample standard deviation (0 for one value) and count of the values that are not
    None; (None, None, 0) when there are none."""
    kept = np.asarray([v for v in values if v is not None], np.float64)
    if not kept.size:
        return None, None, 0
    std = float(kept.std(ddof=1)) if kept.size > 1 else 0.0
    return float(kept.mean()), std, int(kept.size)


def summarize(records: Mapping[str, Sequence[dict]]) -> Dict[str, dict]:
    """Per method: box counts, mean/std of each metric, the mean curves (see
    :attr:`EvaluationReport.summary`)."""
    summary = {}
    for method, rows in records.items():
        entry = dict(boxes=len(rows), unreliable=sum(r['unreliable'] for r in rows),
                     gt_matched=sum(r['pointing_game'] is not None for r in rows))
        for key, _, _ in METRICS:
            mean, std, _ = _stats([r[key] for r in rows])
            entry[f'{key}_mean'], entry[f'{key}_std'] = mean, std
        for kind in ('deletion', 'insertion'):
            stack = [r[f'{kind}_curve'] for r in rows]
            entry[f'{kind}_curve'] = (np.mean(np.stack(stack), axis=0).tolist() if stack
                                      else None)
        summary[method] = entry
    return summary


def _write_csv(path: str, header: Sequence[str], rows) -> None:
    """A CSV file; None cells are written empty."""
    with open(path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow(['' if cell is None else cell for cell in row])


# ---------------------------------------------------------------------- inputs
def coco_ground_truth(ann_file: str, img_dir: Optional[str] = None,
                      class_names: Optional[Sequence[str]] = None
                      ) -> Tuple[List[str], List[GroundTruth]]:
    """The images of a COCO annotation file and their ground truth (crowd and ignored
    annotations left out), for :func:`evaluate_methods`.

    Args:
        ann_file (str): The COCO annotation file.
        img_dir (str, optional): The folder its ``file_name`` entries are relative to; when
            None, the first of: next to the file, ``<parent>/<file stem>`` (e.g.
            ``data/shapes/val`` for ``data/shapes/annotations/val.json``), ``<parent>``, that
            holds the first image. Defaults to None.
        class_names (Sequence[str], optional): The model's classes: categories map to labels
            by name (each must be one); by ascending category id when None or empty.
            Defaults to None.

    Returns:
        tuple[list[str], list[GroundTruth]]: The image paths and, per image, its
        ``(boxes (G, 4) xyxy, labels (G, ), masks)``; ``masks`` ``(G, H, W)`` where every
        annotation of the image has a segmentation, else None.

    Raises:
        FileNotFoundError: The file, the image folder or an image is missing.
        ValueError: Not a COCO file, no images, or a category that is not a model class.
    """
    coco = read_coco_file(ann_file)
    cat_to_label = category_labels(coco, class_names or None, ann_file)
    if not coco['images']:
        raise ValueError(f'{ann_file} lists no images')
    first = coco['images'][0]['file_name']
    if img_dir is None:
        here = osp.dirname(osp.abspath(ann_file))
        stem = osp.splitext(osp.basename(ann_file))[0]
        candidates = [here, osp.join(osp.dirname(here), stem), osp.dirname(here)]
        img_dir = next((c for c in candidates if osp.isfile(osp.join(c, first))), None)
        if img_dir is None:
            raise FileNotFoundError(f'cannot find the images of {ann_file} (its first is '
                                    f'{first!r}; looked in {", ".join(candidates)}); pass '
                                    f'their folder (--img-dir, img_dir)')
    by_image: Dict[int, list] = {im['id']: [] for im in coco['images']}
    for ann in coco['annotations']:
        if ann.get('iscrowd', 0) or ann.get('ignore_flag', 0) or ann['image_id'] not in by_image:
            continue
        by_image[ann['image_id']].append(ann)
    paths, truths = [], []
    for image in coco['images']:
        anns = by_image[image['id']]
        boxes = np.array([[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                           a['bbox'][1] + a['bbox'][3]] for a in anns], np.float32).reshape(-1, 4)
        labels = np.array([cat_to_label[a['category_id']] for a in anns], np.int64)
        masks = segmentation_masks([a.get('segmentation') for a in anns], image['height'],
                                   image['width']) if anns and 'height' in image else None
        path = osp.join(img_dir, image['file_name'])
        if not osp.isfile(path):
            raise FileNotFoundError(f'image {path} of {ann_file} not found (pass their folder: '
                                    f'--img-dir, img_dir)')
        paths.append(path)
        truths.append(GroundTruth(boxes, labels, masks))
    return paths, truths


__all__ = ['METRICS', 'REFERENCES', 'EvaluationOptions', 'EvaluationReport', 'GroundTruth',
           'coco_ground_truth', 'evaluate_methods', 'reference_maps', 'summarize']
