"""A sahi ``DetectionModel`` for MMYOLO detectors, batched, on this project's inference path."""
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from sahi.models.base import DetectionModel
from sahi.prediction import ObjectPrediction
from sahi.utils.compatibility import fix_full_shape_list, fix_shift_amount_list

from .runtime.models import build_detector
from .engine.slicing import BatchPredictor, Detections
from .engine.core.draw import to_rgb
from .engine.slicing.grid import image_geometry


class MMYOLODetectionModel(DetectionModel):
    """sahi ``DetectionModel`` for MMYOLO configs (sahi 0.12's ``mmdet`` model type fails on
    them with ``ValueError: Resize is not found in the test pipeline``).

    Contract (what sahi calls, and what each call does):

    - ``__init__(model_path=None, model=None, config_path=None, device=None,
      confidence_threshold=0.3, category_mapping=None, category_remapping=None,
      load_at_init=True, cfg_options=None, unsafe_load=False, fuse_conv_bn=False)``:
      with ``load_at_init``, builds the model (``load_model``) or takes ``model``
      (``set_model``). ``mask_threshold`` and ``image_size`` are accepted for sahi's signature
      and unused: boxes only, and the input size is the config's test pipeline.
    - ``load_model()``: builds the detector from ``config_path`` (path or ``mmyolo::`` name,
      ``cfg_options`` merged in) and loads ``model_path`` with ``torch.load(weights_only=True)``
      (``unsafe_load=True`` is the explicit opt-out); ``model_path=None`` keeps random weights.
      ``fuse_conv_bn=True`` fuses conv + BN (the model is then for inference only).
    - ``set_model(model)``: takes a built detector that carries its config (``model.cfg``, as
      ``runtime.models.build_detector`` sets it). The model is not modified: its train/eval
      flags are restored after every call and no gradients are recorded.
    - ``perform_inference(image)``: one image (H, W, 3) RGB uint8 (sahi's order; grey and RGBA
      are converted); a batch of one.
    - ``perform_batch_inference(images)``: ONE forward pass over the list (same-sized images are
      stacked; sahi's slices are). Each image gets the config's test transforms (letterbox),
      the model's data preprocessor, and the head's own decoding with the score threshold
      ``confidence_threshold`` (read at call time, so sahi's per-call override works). Results
      are kept in ``original_predictions``: a list of ``Detections`` (xyxy float32 boxes in that
      image's pixels, scores, 0-based labels).
    - ``convert_original_predictions(shift_amount, full_shape)`` (sahi's base class) ->
      ``_create_object_prediction_list_from_original_predictions``: one ``ObjectPrediction`` per
      box with ``category_id`` = 0-based label and the class name, shifted by each image's
      ``shift_amount`` when sahi asks for the shifted prediction.
    - ``category_mapping``: ``{"0": name0, ...}`` from the model's ``dataset_meta['classes']``
      unless given; ``category_remapping`` is applied by sahi's base class.

    The tool ``tools/large_image_infer.py`` runs the same ``BatchPredictor``, so sahi's
    ``get_sliced_prediction`` with this model and the tool find the same slice boxes.
    """

    required_packages = ['torch', 'mmcv', 'mmdet', 'mmyolo']

    def __init__(self, model_path: Optional[str] = None, model: Any = None,
                 config_path: Optional[str] = None, device: Optional[str] = None,
                 mask_threshold: float = 0.5, confidence_threshold: float = 0.3,
                 category_mapping: Optional[Dict[str, str]] = None,
                 category_remapping: Optional[Dict[str, int]] = None,
                 load_at_init: bool = True, image_size: Optional[int] = None,
                 cfg_options: Optional[Dict] = None, unsafe_load: bool = False,
                 fuse_conv_bn: bool = False) -> None:
        self.cfg_options = cfg_options
        self.unsafe_load = unsafe_load
        self.fuse_conv_bn = fuse_conv_bn
        self.predictor: Optional[BatchPredictor] = None
        super().__init__(model_path=model_path, model=model, config_path=config_path,
                         device=device, mask_threshold=mask_threshold,
                         confidence_threshold=confidence_threshold,
                         category_mapping=category_mapping,
                         category_remapping=category_remapping, load_at_init=load_at_init,
                         image_size=image_size)

    def load_model(self) -> None:
        if self.config_path is None:
            raise ValueError('config_path is required to build an MMYOLO model')
        model = build_detector(self.config_path, self.model_path, device=str(self.device),
                               cfg_options=self.cfg_options, unsafe_load=self.unsafe_load)
        if self.fuse_conv_bn:
            from mmcv.cnn import fuse_conv_bn
            model = fuse_conv_bn(model)
        self.set_model(model)

    def set_model(self, model: Any, **kwargs: Any) -> None:
        self.model = model
        predictor = BatchPredictor(model)
        if predictor.detector.box_dim != 4:  # sahi's ObjectPrediction holds xyxy boxes
            raise ValueError(f'sahi takes axis-aligned boxes; {predictor.detector.kind} '
                             f'predicts rotated ones (mmyolo-sliced merges them itself)')
        self.predictor = predictor
        if self.category_mapping is None:
            classes = self.predictor.detector.class_names
            self.category_mapping = {str(i): str(name) for i, name in enumerate(classes)}

    @property
    def num_categories(self) -> int:
        return len(self.category_mapping or {})

    @property
    def has_mask(self) -> bool:
        return False

    @property
    def category_names(self) -> List[str]:
        return list((self.category_mapping or {}).values())

    def perform_inference(self, image: np.ndarray) -> None:
        self.perform_batch_inference([image])

    def perform_batch_inference(self, images: Sequence[np.ndarray]) -> None:
        if self.predictor is None:
            raise RuntimeError('no model: call load_model() or set_model() first')
        rgb = []
        for image in images:
            image_geometry(image)
            rgb.append(to_rgb(np.asarray(image)))
        self._original_predictions = self.predictor.predict(
            rgb, score_thr=float(self.confidence_threshold))
        self._original_shapes = [img.shape for img in rgb]

    def _create_object_prediction_list_from_original_predictions(
            self, shift_amount_list: Optional[List[List[float]]] = [[0, 0]],
            full_shape_list: Optional[List[List[float]]] = None) -> None:
        predictions: List[Detections] = self._original_predictions or []
        shifts = fix_shift_amount_list(shift_amount_list)
        shapes = fix_full_shape_list(full_shape_list)
        per_image = []
        for idx, dets in enumerate(predictions):
            shift = [int(v) for v in shifts[idx]] if idx < len(shifts) else [0, 0]
            full_shape = None if shapes is None else [int(v) for v in shapes[idx]]
            per_image.append([
                ObjectPrediction(bbox=box.tolist(), category_id=int(label),
                                 category_name=self.category_mapping[str(int(label))],
                                 score=float(score), shift_amount=shift, full_shape=full_shape)
                for box, score, label in zip(dets.bboxes, dets.scores, dets.labels)
            ])
        self._object_prediction_list_per_image = per_image
