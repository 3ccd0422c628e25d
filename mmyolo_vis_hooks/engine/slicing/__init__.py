"""Sliced inference on large images (shared by tools/large_image_infer.py and the sahi adapter).

``BatchPredictor`` is the one inference path (test transforms per slice, the data preprocessor
and one forward per batch, the head's own decoding); ``sliced_predict`` cuts an image into a
grid of slices, batches them through it and merges the boxes.
"""
from .detections import Detections, coco_categories, coco_document, to_coco_annotations
from .draw import draw_detections, draw_windows
from .evaluate import (CocoEvaluation, MatchStats, evaluate_coco, load_coco_ground_truth,
                       match_detections, matched_fraction)
from .grid import image_geometry, read_window, slice_windows, to_rgb
from .merge import MERGE_METHODS, MATCH_METRICS, MergeConfig, merge_detections
from .predictor import BatchPredictor, inference_mode
from .sliced import SlicedResult, SliceSettings, resolve_patch_size, sliced_predict

__all__ = [
    'BatchPredictor', 'CocoEvaluation', 'Detections', 'MATCH_METRICS', 'MERGE_METHODS',
    'MatchStats',
    'MergeConfig', 'SliceSettings', 'SlicedResult', 'coco_categories',
    'coco_document', 'draw_detections', 'draw_windows', 'evaluate_coco', 'image_geometry',
    'inference_mode',
    'load_coco_ground_truth', 'match_detections', 'matched_fraction', 'merge_detections',
    'read_window', 'resolve_patch_size', 'slice_windows', 'sliced_predict',
    'to_coco_annotations', 'to_rgb'
]
