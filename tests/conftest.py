"""Fixtures and pytest hooks only (helpers to import: ``tests/helpers``). Every test runs in its
own tmp dir so nothing lands in the work tree, and the MMEngine singletons (Visualizer,
DefaultScope, MessageHub, MMLogger) are cleared between tests.
"""
import os
import os.path as osp

import pytest
import torch

from helpers import DEMO_CHECKPOINT, DEMO_CONFIG
from mmyolo_vis_hooks.testing import clear_mmengine_singletons


def pytest_configure(config):
    # MMYOLO_VIS_TEST_THREADS runs the suite with another torch thread count (another kernel
    # path): numeric tests must pass with 1 and 2.
    torch.set_num_threads(int(os.environ.get('MMYOLO_VIS_TEST_THREADS', 0))
                          or max(1, min(2, os.cpu_count() or 1)))


def pytest_runtest_setup(item):
    if item.get_closest_marker('cuda') is not None and not torch.cuda.is_available():
        pytest.skip('needs a CUDA device (scripts/gpu_check.sh runs these on cuda:0)')


@pytest.fixture(params=['cpu', pytest.param('cuda', marks=pytest.mark.cuda)])
def device(request) -> str:
    """The device a test runs on: ``'cpu'`` in the normal suite, ``'cuda'`` (``cuda:0``, marked
    ``cuda``: skipped without a CUDA device) on a GPU machine (``scripts/gpu_check.sh``)."""
    return request.param


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    clear_mmengine_singletons()
    # A Runner with ``randomness=dict(deterministic=True)`` switches torch's deterministic
    # algorithms on for the whole process; later tests must not inherit that.
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
    clear_mmengine_singletons()


@pytest.fixture(scope='session')
def shapes_data(tmp_path_factory):
    """A small generated shapes dataset: ``data_root`` with train (16) and val (8) splits."""
    from mmyolo_vis_hooks.data.synthetic_shapes import SplitSpec, generate_split
    root = str(tmp_path_factory.mktemp('shapes'))
    generate_split(root, 'train', SplitSpec(16), seed=0)
    generate_split(root, 'val', SplitSpec(8), seed=0)
    return root + '/'


@pytest.fixture(scope='session')
def demo_config():
    """Path of the embedded demo config (YOLOv5-n, 3 shape classes, 320 px)."""
    return DEMO_CONFIG


@pytest.fixture(scope='session')
def demo_checkpoint():
    """Path of the trained demo detector (weights only, fp16; see tests/assets/README.md)."""
    if not osp.isfile(DEMO_CHECKPOINT):
        raise FileNotFoundError(f'{DEMO_CHECKPOINT} is missing; tests/assets/README.md says '
                                'how to produce it')
    return DEMO_CHECKPOINT


@pytest.fixture(scope='session')
def demo_detector(demo_checkpoint):
    """The trained demo detector, built once per session (eval mode; every test leaves it as
    it found it). Its scores are far apart, where a random-init model's tie within float
    rounding (which boxes make the top-k then depends on the kernels)."""
    from mmyolo_vis_hooks.runtime.models import build_detector
    return build_detector(DEMO_CONFIG, demo_checkpoint)


@pytest.fixture(scope='session')
def demo_image_loader(demo_detector):
    """``(img_path, img_id) -> batch of one`` through the demo config's test pipeline."""
    from mmengine.registry import init_default_scope
    from mmyolo_vis_hooks.runtime.models import build_image_loader
    init_default_scope(demo_detector.cfg.default_scope)  # the pipeline's transforms' registry
    return build_image_loader(demo_detector.cfg)


@pytest.fixture(scope='session')
def random_checkpoint(tmp_path_factory):
    """A random-init demo detector saved as a real weights-only checkpoint (sliced inference,
    the large-image tool and the sahi adapter)."""
    from mmyolo_vis_hooks.runtime.models import build_detector
    torch.manual_seed(0)
    model = build_detector(DEMO_CONFIG)
    path = str(tmp_path_factory.mktemp('ckpt') / 'random.pth')
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(model.dataset_meta))), path)
    return path


@pytest.fixture(scope='session')
def random_demo_detector(random_checkpoint):
    """The demo detector built from ``random_checkpoint`` (eval mode; tests leave it so)."""
    from mmyolo_vis_hooks.runtime.models import build_detector
    return build_detector(DEMO_CONFIG, random_checkpoint)


@pytest.fixture(scope='session')
def small_large_image(tmp_path_factory):
    """A 1000x700 large-style image (16-40 px shapes): its path and its COCO ground truth."""
    from mmyolo_vis_hooks.data.synthetic_shapes import generate_large_image
    root = str(tmp_path_factory.mktemp('small_large'))
    ann = generate_large_image(root, seed=3, width=1000, height=700, num_objects=30)
    return osp.join(root, 'large_00000.png'), ann


@pytest.fixture
def fast_config_dump(monkeypatch):
    """Skips yapf's pretty-printing of the config text (4 x ~2 s per Runner on a loaded 2-core
    machine): the Runner logs and dumps the unformatted, equally valid, config instead."""
    import mmengine.config.config as config_module
    monkeypatch.setattr(config_module, 'FormatCode', lambda text, **kwargs: (text, False))


@pytest.fixture
def reset_singletons():
    """A callable that clears the MMEngine singletons, for tests that build several Runners
    (a second Runner would otherwise reuse the first one's Visualizer and its log dir)."""
    return clear_mmengine_singletons
