"""Helpers of the sliced-inference tests (engine, tool, sahi adapter): comparing detections and
counting forwards."""
import numpy as np

from mmyolo_vis_hooks.engine.slicing import Detections

LOW_THR = 0.02  # random-init boxes score low; this keeps plenty of them


def same_detections(a: Detections, b: Detections, atol=1e-3):
    """The same boxes, scores and labels, in any order."""
    if len(a) != len(b):
        return False
    ka = np.lexsort(np.c_[a.bboxes.round(2), a.scores, a.labels].T)
    kb = np.lexsort(np.c_[b.bboxes.round(2), b.scores, b.labels].T)
    return (np.allclose(a.bboxes[ka], b.bboxes[kb], atol=atol)
            and np.allclose(a.scores[ka], b.scores[kb], atol=1e-4)
            and np.array_equal(a.labels[ka], b.labels[kb]))


class ForwardCounter:
    """Records the batch size of every backbone call."""

    def __init__(self, model):
        self.batches = []
        self._handle = model.backbone.register_forward_hook(
            lambda mod, args, out: self.batches.append(args[0].shape[0]))

    def close(self):
        self._handle.remove()
