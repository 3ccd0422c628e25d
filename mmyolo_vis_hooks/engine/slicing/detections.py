"""A plain container for box detections (numpy), and its COCO-style export."""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..core.geometry import box_corners, is_rotated


@dataclass
class Detections:
    """Boxes of one image.

    Args:
        bboxes (np.ndarray): (N, 4) float32 [x1, y1, x2, y2] in pixels, or (N, 5) rotated
            [cx, cy, w, h, angle] (mmrotate's ``RotatedBoxes``, angle in radians).
        scores (np.ndarray): (N,) float32.
        labels (np.ndarray): (N,) int64 class indices (0-based).
    """
    bboxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        bboxes = np.asarray(self.bboxes, dtype=np.float32)
        self.bboxes = bboxes.reshape(-1, 5 if is_rotated(bboxes) else 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if not len(self.bboxes) == len(self.scores) == len(self.labels):
            raise ValueError(f'bboxes, scores and labels differ in length: {len(self.bboxes)}, '
                             f'{len(self.scores)}, {len(self.labels)}')

    @classmethod
    def empty(cls, box_dim: int = 4) -> 'Detections':
        return cls(np.zeros((0, box_dim)), np.zeros(0), np.zeros(0))

    @property
    def rotated(self) -> bool:
        return self.bboxes.shape[1] == 5

    @classmethod
    def concat(cls, parts: Sequence['Detections']) -> 'Detections':
        parts = list(parts)
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.bboxes for p in parts]),
                   np.concatenate([p.scores for p in parts]),
                   np.concatenate([p.labels for p in parts]))

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, index) -> 'Detections':
        """The detections at an index array or boolean mask."""
        return Detections(self.bboxes[index], self.scores[index], self.labels[index])

    def shifted(self, dx: float, dy: float) -> 'Detections':
        """The same boxes moved by (dx, dy), e.g. from slice to full-image pixels."""
        offset = np.array([dx, dy, 0, 0, 0] if self.rotated else [dx, dy, dx, dy], np.float32)
        return Detections(self.bboxes + offset, self.scores, self.labels)

    def scaled(self, factor: float) -> 'Detections':
        """The same boxes in the pixels of the image scaled by ``factor`` (a rotated box
        keeps its angle)."""
        scale = [factor] * 4 + [1] if self.rotated else [factor] * 4
        return Detections(self.bboxes * np.array(scale, np.float32), self.scores, self.labels)

    def as_array(self) -> np.ndarray:
        """(N, 6) float32 [x1, y1, x2, y2, score, label], sahi's postprocess layout
        (axis-aligned boxes)."""
        if self.rotated:
            raise ValueError('sahi\'s postprocess takes axis-aligned boxes, not rotated ones')
        return np.concatenate(
            [self.bboxes, self.scores[:, None], self.labels[:, None].astype(np.float32)], axis=1)


def coco_categories(class_names: Sequence[str]) -> List[Dict]:
    """COCO categories for 0-based labels: category id = label + 1."""
    return [dict(id=i + 1, name=str(name)) for i, name in enumerate(class_names)]


def to_coco_annotations(dets: Detections, image_id: int,
                        first_id: int = 1) -> List[Dict]:
    """COCO-style result entries ([x, y, w, h], category id = label + 1, with score). A
    rotated box also gives ``rbox`` [cx, cy, w, h, angle] (what rotated evaluation matches),
    its ``bbox`` is the axis-aligned box around its corners and its ``area`` w x h."""
    anns = []
    corners = box_corners(torch.as_tensor(dets.bboxes)).numpy() if dets.rotated else None
    for k, (box, score, label) in enumerate(zip(dets.bboxes, dets.scores, dets.labels)):
        if corners is not None:
            (x1, y1), (x2, y2) = corners[k].min(axis=0), corners[k].max(axis=0)
            area = float(box[2] * box[3])
        else:
            x1, y1, x2, y2 = (float(v) for v in box)
            area = (x2 - x1) * (y2 - y1)
        ann = dict(id=first_id + k, image_id=int(image_id), category_id=int(label) + 1,
                   bbox=[round(float(v), 2) for v in (x1, y1, x2 - x1, y2 - y1)],
                   area=round(area, 2), score=round(float(score), 5), iscrowd=0)
        if corners is not None:
            ann['rbox'] = [round(float(v), 2) for v in box[:4]] + [round(float(box[4]), 6)]
        anns.append(ann)
    return anns


def coco_document(images: List[Dict], annotations: List[Dict],
                  class_names: Optional[Sequence[str]]) -> Dict:
    """A COCO-style dict (``images``, ``annotations`` with scores, ``categories``)."""
    return dict(images=images, annotations=annotations,
                categories=coco_categories(class_names or []))
