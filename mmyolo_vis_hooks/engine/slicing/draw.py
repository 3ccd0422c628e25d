"""Pictures of sliced inference: boxes in class colours, the slice grid. RGB uint8 HWC.

Boxes on a large image are small (tens of pixels), so lines stay thin (1-3 px by image size)
and each class has its own colour (the model's ``dataset_meta['palette']`` when it has one).
"""
from typing import Optional, Sequence

import cv2
import numpy as np

from ..core.draw import draw_boxes
from .detections import Detections

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_DEFAULT_PALETTE = ((220, 20, 60), (20, 180, 60), (30, 60, 230), (250, 170, 30), (160, 30, 200),
                    (0, 200, 200), (255, 110, 0), (120, 120, 255))
_GRID_COLOURS = ((255, 255, 0), (0, 255, 255))


def line_thickness(height: int, width: int) -> int:
    return int(np.clip(round(max(height, width) / 1500), 1, 3))


def draw_detections(image: np.ndarray, dets: Detections, class_names: Sequence[str],
                    palette: Optional[Sequence] = None, captions: bool = True,
                    thickness: Optional[int] = None) -> np.ndarray:
    """A copy of ``image`` with the boxes drawn (``class score`` captions when asked)."""
    return draw_boxes(image, dets.bboxes, dets.labels, dets.scores, class_names,
                      palette=palette or _DEFAULT_PALETTE,
                      thickness=thickness or line_thickness(*image.shape[:2]),
                      captions=captions)


def draw_windows(image: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """A copy of ``image`` with every slice window outlined and numbered (alternating colours
    so that overlapping windows stay distinguishable)."""
    out = np.array(image, dtype=np.uint8, order='C', copy=True)
    thickness = line_thickness(*out.shape[:2])
    for idx, (x1, y1, x2, y2) in enumerate(np.asarray(windows, dtype=np.int64)):
        colour = _GRID_COLOURS[idx % 2]
        cv2.rectangle(out, (int(x1), int(y1)), (int(x2) - 1, int(y2) - 1), colour, thickness)
        cv2.putText(out, str(idx), (int(x1) + 4, int(y1) + 16), _FONT, 0.5, colour, 1,
                    cv2.LINE_AA)
    return out
