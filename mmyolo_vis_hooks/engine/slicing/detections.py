"""A plain container for box detections (numpy), and its COCO-style export."""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np


@dataclass
class Detections:
    """Boxes of one image.

    Args:
        bboxes (np.ndarray): (N, 4) float32 [x1, y1, x2, y2] in pixels.
        scores (np.ndarray): (N,) float32.
        labels (np.ndarray): (N,) int64 class indices (0-based).
    """
    bboxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        self.bboxes = np.asarray(self.bboxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if not len(self.bboxes) == len(self.scores) == len(self.labels):
            raise ValueError(f'bboxes, scores and labels differ in length: {len(self.bboxes)}, '
                             f'{len(self.scores)}, {len(self.labels)}')

    @classmethod
    def empty(cls) -> 'Detections':
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0))

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
        offset = np.array([dx, dy, dx, dy], dtype=np.float32)
        return Detections(self.bboxes + offset, self.scores, self.labels)

    def as_array(self) -> np.ndarray:
        """(N, 6) float32 [x1, y1, x2, y2, score, label], sahi's postprocess layout."""
        return np.concatenate(
            [self.bboxes, self.scores[:, None], self.labels[:, None].astype(np.float32)], axis=1)


def coco_categories(class_names: Sequence[str]) -> List[Dict]:
    """COCO categories for 0-based labels: category id = label + 1."""
    return [dict(id=i + 1, name=str(name)) for i, name in enumerate(class_names)]


def to_coco_annotations(dets: Detections, image_id: int,
                        first_id: int = 1) -> List[Dict]:
    """COCO-style result entries ([x, y, w, h], category id = label + 1, with score)."""
    anns = []
    for k, (box, score, label) in enumerate(zip(dets.bboxes, dets.scores, dets.labels)):
        x1, y1, x2, y2 = (float(v) for v in box)
        anns.append(dict(id=first_id + k, image_id=int(image_id), category_id=int(label) + 1,
                         bbox=[round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                         area=round((x2 - x1) * (y2 - y1), 2), score=round(float(score), 5),
                         iscrowd=0))
    return anns


def coco_document(images: List[Dict], annotations: List[Dict],
                  class_names: Optional[Sequence[str]]) -> Dict:
    """A COCO-style dict (``images``, ``annotations`` with scores, ``categories``)."""
    return dict(images=images, annotations=annotations,
                categories=coco_categories(class_names or []))
