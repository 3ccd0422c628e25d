"""Fixtures of the sliced-inference engine tests: the random-init demo detector and one
BatchPredictor on it per module (its fast-route check is cached per input shape)."""
import pytest

from mmyolo_vis_hooks.engine.slicing import BatchPredictor


@pytest.fixture(scope='module')
def model(random_demo_detector):
    return random_demo_detector


@pytest.fixture(scope='module')
def predictor(model):
    return BatchPredictor(model)
