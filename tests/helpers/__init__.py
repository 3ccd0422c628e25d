"""Helpers shared by the tests (``tests/conftest.py`` holds only fixtures and pytest hooks).

``tests/`` is on ``sys.path`` while pytest runs (it holds the root conftest), so tests import
``from helpers import DEMO_CONFIG`` and ``from helpers.runner import tiny_train_cfg``. This
module: where the repository, the demo detector and the packaged configs are. Its modules:

- ``runner``: small real Runner configs, TensorBoard read-back, bit-for-bit state comparison;
- ``tools``: the tools as modules, their one-line errors, commands under a time limit;
- ``mmyolo_models``: random-init models of every MMYOLO family;
- ``mmdet_models``: random-init MMDetection models of every kind, the checks they share, and
  small kinds in a Runner on images that prove alignment;
- ``slicing``: comparing detections and counting forwards (sliced inference).
"""
import os.path as osp

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO_CONFIG = osp.join(REPO_ROOT, 'configs', 'demo', 'yolov5_n_shapes.py')
# The trained demo detector (weights only, fp16; tests/assets/README.md): the ``demo_detector``
# and ``demo_checkpoint`` fixtures.
DEMO_CHECKPOINT = osp.join(REPO_ROOT, 'tests', 'assets', 'yolov5_n_shapes.pth')


def packaged_config(relpath: str) -> str:
    """Path of a config shipped inside the mmyolo package, e.g. 'yolov8/yolov8_n_...py'."""
    import mmyolo
    return osp.join(osp.dirname(mmyolo.__file__), '.mim', 'configs', relpath)


def mmdet_config(relpath: str) -> str:
    """Path of a config shipped inside the mmdet package, e.g. 'retinanet/retinanet_...py'."""
    import mmdet
    return osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', relpath)
