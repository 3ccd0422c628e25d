"""Helpers of the sliced-inference tests (engine, tool, sahi adapter): comparing detections,
counting forwards, and the ``model``/``predictor``/``demo_detector`` fixtures the engine
tests share (import them into a test module to use them)."""
import numpy as np
import pytest

from mmyolo_vis_hooks.engine.slicing import BatchPredictor, Detections

LOW_THR = 0.02  # random-init boxes score low; this keeps plenty of them


@pytest.fixture(scope='module')
def model(random_demo_detector):
    return random_demo_detector


@pytest.fixture(scope='module')
def predictor(model):
    return BatchPredictor(model)


@pytest.fixture(scope='module')
def demo_detector(demo_config, demo_checkpoint):
    """The trained demo detector: its scores are far apart, where a random-init model's
    tie within float rounding (which boxes make the top-k then depends on the kernels)."""
    from mmyolo_vis_hooks.runtime.models import build_detector
    return build_detector(demo_config, demo_checkpoint)


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
