"""Bad configuration of FeatMapVisHook and BoxAMVisHook fails before the first training
iteration (at hook construction or ``before_run``), with a message saying what was wrong and
what is accepted. Each case builds a real Runner on the generated shapes data."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.runner import Runner
from torch import nn

from helpers import packaged_config
from helpers.runner import tiny_train_cfg
from mmyolo_vis_hooks.engine.detectors import UnsupportedDetectorError

from mmyolo.models.backbones import YOLOv5CSPDarknet
from mmyolo.models.dense_heads import YOLOv5Head
from mmyolo.registry import MODELS

pytestmark = pytest.mark.slow

TRAIN_IMAGES = 8  # 2 iterations of batch 4 per epoch (as in test_training_safety)


def _train_cfg(data_root, work_dir, epochs, hooks) -> Config:
    cfg = tiny_train_cfg(data_root, work_dir, epochs=epochs, custom_hooks=list(hooks))
    cfg.train_dataloader.dataset.indices = TRAIN_IMAGES
    return cfg


def _no_val(cfg):
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None


@MODELS.register_module(force=True)
class YOLOv5CSPDarknetWithSideLayers(YOLOv5CSPDarknet):
    """The demo backbone with two layers on the stem output whose results the detector does not
    use: ``side_conv`` (a 4-D map) and ``side_tokens`` (flattened to (N, C, H*W), as a token
    sequence)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.side_conv = nn.Conv2d(self.stem.conv.out_channels, 4, 1)
        self.side_tokens = nn.Flatten(2)
        self.stem.register_forward_hook(self._side_layers)

    def _side_layers(self, stem, inputs, output):
        self.side_conv(output)
        self.side_tokens(output)


def _side_layers(cfg):
    cfg.model.backbone.type = 'YOLOv5CSPDarknetWithSideLayers'


def _yolov8(cfg):
    """MMYOLO's packaged YOLOv8-n for the 3 shape classes: its head has separate class and box
    branches."""
    yolov8 = Config.fromfile(packaged_config('yolov8/yolov8_n_syncbn_fast_8xb16-500e_coco.py'))
    model = yolov8.model
    model.bbox_head.head_module.num_classes = 3
    model.train_cfg.assigner.num_classes = 3
    cfg.model = model


# What the new layer checks must say was wrong and what is accepted ({}: the head's class).
ACCEPTED_FEATMAP_LAYERS = (r"Accepted: layers run by the network's forward whose output is a "
                           r'4-D \(N, C, H, W\) tensor, or a tuple/list of them')
SCORES_DO_NOT_DEPEND = (r'does not feed the box scores \(the scores of {} do not depend on its '
                        r'output\)')
ACCEPTED_BOXAM_LAYERS = (r'Accepted: layers with a 4-D \(N, C, H, W\) output that the scores of '
                         r"{} depend on: backbone and neck layers such as 'neck\.out_layers\[0\]'")

def _type_error(hook_args, change, message):
    """A case whose argument has the wrong type: TypeError (every other case: ValueError)."""
    return hook_args, change, message, TypeError


FEATMAP_BAD_CONFIGS = [
    # (hook arguments, config change, error message pattern: what was wrong + what is accepted
    #  [, TypeError])
    (dict(target_layers=['neck.out_layer[2]']), None,
     r"unknown layer 'neck\.out_layer\[2\]'.*nearest valid layers: .*neck\.out_layers\[2\]"),
    (dict(target_layers=['backbone.stage1[9]']), None,
     r"unknown layer 'backbone\.stage1\[9\]'.*nearest valid layers: .*backbone\.stage1\[0\]"),
    (dict(target_layers=['neck..out_layers']), None,
     r"'neck\.\.out_layers' has an empty segment; expected dotted names with optional \[index\]"),
    (dict(target_layers=['neck[a]']), None,
     r"cannot parse layer path 'neck\[a\]' at '\[a\]'; expected dotted names with optional"),
    (dict(target_layers=[]), None,
     r'target_layers must name at least one item, e\.g\. "neck\.out_layers\[2\]", got an empty '
     r'list'),
    _type_error(dict(target_layers=[3]), None,
                r'target_layers must hold strings, e\.g\. "neck\.out_layers\[2\]", got 3 \(int\)'),
    (dict(target_layers=['neck', 'backbone.side_tokens']), _side_layers,
     r"give no feature map to draw: 'backbone\.side_tokens' returned Tensor\[1, 16, 1024\], "
     r"not a 4-D \(N, C, H, W\) tensor or a tuple/list of them\. " + ACCEPTED_FEATMAP_LAYERS),
    (dict(target_layers=['bbox_head.head_module']), None,
     r"'bbox_head\.head_module' returned tuple\(list\[3\], list\[3\], list\[3\]\), not a 4-D "
     r"\(N, C, H, W\) tensor or a tuple/list of them\. " + ACCEPTED_FEATMAP_LAYERS),
    (dict(target_layers=['bbox_head.loss_obj']), None,
     r"'bbox_head\.loss_obj' did not run in the forward \(a loss or training-only module\?\)\. "
     + ACCEPTED_FEATMAP_LAYERS),
    (dict(channel_reduction='max'), None,
     r"channel_reduction must be one of \('squeeze_mean', 'select_max', None\), got 'max'"),
    (dict(channel_reduction=None, topk=5, arrangement=(2, 2)), None,
     r'arrangement \(2, 2\) has 4 cells, fewer than topk=5; use rows \* cols >= topk'),
    (dict(channel_reduction=None, topk=0), None, r'topk must be a positive int or -1'),
    _type_error(dict(channel_reduction=None, topk=4, arrangement=3), None,
     r'arrangement must be \(rows, cols\) of positive ints, got 3'),
    (dict(channel_reduction=None, topk=-1, target_layers=['neck.out_layers[0]']), None,
     r"topk=-1 draws each map as it is, which needs 1 or 3 channels; these layers have "
     r"more or fewer: \{'neck\.out_layers\[0\]': 64\}\. Use channel_reduction=\"squeeze_mean\""),
    (dict(interval=0), None, r'interval must be a positive int, got 0'),
    (dict(interval=-2), None, r'interval must be a positive int, got -2'),
    _type_error(dict(interval=1.5), None, r'interval must be a positive int, got 1\.5'),
    _type_error(dict(num_images=2.5), None, r'num_images must be a positive int, got 2\.5'),
    (dict(num_images=0), None, r'num_images must be a positive int, got 0'),
    (dict(img_indices=[1, 100]), None,
     r'img_indices \[100\] out of range: the validation dataset has 8 images '
     r'\(valid indices 0\.\.7\)'),
    (dict(img_indices=[-1]), None, r'img_indices\[0\] must be an int >= 0, got -1'),
    _type_error(dict(img_indices='0'), None, r"img_indices must be a list of ints, got '0'"),
    (dict(align='stretch'), None, r"align must be one of \('letterbox', 'resize'\), got 'stretch'"),
    (dict(alpha=1.5), None, r'alpha must be a number in \[0, 1\], got 1\.5'),
    (dict(alpha=-0.1), None, r'alpha must be a number in \[0, 1\], got -0\.1'),
    (dict(score_thr=1.5), None, r'score_thr must be None or a number in \[0, 1\], got 1\.5'),
    _type_error(dict(score_thr='high'), None,
                r"score_thr must be None or a number in \[0, 1\], got 'high'"),
    (dict(max_size=0), None, r'max_size must be None or an int >= 32, got 0'),
    _type_error(dict(max_size=320.5), None,
                r'max_size must be None or an int >= 32, got 320\.5'),
    _type_error(dict(seed='zero'), None, r"seed must be an int, got 'zero'"),
    _type_error(dict(strict='yes'), None, r"strict must be a bool \(True or False\), got 'yes'"),
    _type_error(dict(log_stats='no'), None,
                r"log_stats must be a bool \(True or False\), got 'no'"),
    (dict(), _no_val,
     r'no val_dataloader / val_cfg; add val_dataloader, val_cfg and val_evaluator'),
]


def _case_id(case):
    hook_args, change = case[:2]
    parts = [f'{k}={v}' for k, v in hook_args.items()]
    if change is not None:
        parts.append(change.__name__.strip('_'))
    return '-'.join(parts).replace(' ', '')


def _custom_head(cfg):
    cfg.model.bbox_head.type = 'CustomYOLOv5Head'


BOXAM_BAD_CONFIGS = [
    (dict(method='gradcamm'), None,
     r"method must be one of 'gradcam', 'gradcam\+\+', .*'ablationcam', 'drise', got 'gradcamm'"),
    (dict(method=[]), None,
     r'method must name at least one item, e\.g\. gradcam, gradcam\+\+, .*got an empty list'),
    (dict(), _custom_head,
     r'CustomYOLOv5Head subclasses YOLOv5Head with a decoding of its own: no box CAMs for '
     r"this kind; box CAMs support MMYOLO's dense heads \(YOLOv5Head, ",
     UnsupportedDetectorError),
    (dict(target_layers=['neck.out_layer[2]']), None,
     r"unknown layer 'neck\.out_layer\[2\]'.*nearest valid layers: .*neck\.out_layers\[2\]"),
    (dict(target_layers=[]), None,
     r'target_layers must name at least one item, e\.g\. "neck\.out_layers\[2\]", got an empty '
     r'list'),
    # Layers the box scores do not depend on: refused for every method, gradient-free too.
    *[(dict(method=method, target_layers=['neck.out_layers[0]', 'backbone.side_conv']),
       _side_layers,
       r"cannot be explained by box CAMs: 'backbone\.side_conv' "
       + SCORES_DO_NOT_DEPEND.format('YOLOv5Head') + r'\. .*'
       + ACCEPTED_BOXAM_LAYERS.format('YOLOv5Head'))
      for method in ('gradcam', 'eigencam', 'ablationcam')],
    (dict(target_layers=['bbox_head.head_module.reg_preds[0]']), _yolov8,
     r"'bbox_head\.head_module\.reg_preds\[0\]' " + SCORES_DO_NOT_DEPEND.format('YOLOv8Head')
     + r".*" + ACCEPTED_BOXAM_LAYERS.format('YOLOv8Head')
     + r".*or layers of the head's classification/objectness branch \(not its box-regression"),
    (dict(target_layers=['bbox_head.loss_cls']), None,
     r"'bbox_head\.loss_cls' did not run in the forward .*"
     + ACCEPTED_BOXAM_LAYERS.format('YOLOv5Head')),
    _type_error(dict(topk='3'), None, r"topk must be an int \(<= 0 for all boxes\), got '3'"),
    (dict(score_thr=None), None, r'score_thr must be a number in \[0, 1\]'),
    (dict(batch_size=0), None, r'batch_size must be a positive int, got 0'),
    (dict(ratio_channels_to_ablate=0), None,
     r'ratio_channels_to_ablate must be a number in \(0, 1\], got 0'),
    _type_error(dict(merge='yes'), None, r"merge must be a bool \(True or False\), got 'yes'"),
    (dict(interval=0), None, r'interval must be a positive int, got 0'),
    (dict(img_indices=[100]), None, r'img_indices \[100\] out of range'),
]

BAD_CONFIGS = [(hook_type, *case, *((ValueError, ) if len(case) == 3 else ()))
               for hook_type, cases in (('FeatMapVisHook', FEATMAP_BAD_CONFIGS),
                                        ('BoxAMVisHook', BOXAM_BAD_CONFIGS))
               for case in cases]


@MODELS.register_module(force=True)
class CustomYOLOv5Head(YOLOv5Head):
    """A user's own head that replaces the decoding (as mask, rotated and pose heads do): no
    adapter knows its outputs."""

    def predict_by_feat(self, *args, **kwargs):
        return super().predict_by_feat(*args, **kwargs)


@pytest.mark.parametrize('hook_type, hook_args, change, message, error', BAD_CONFIGS,
                         ids=[f'{t}-{_case_id(c)}' for t, *c in BAD_CONFIGS])
def test_bad_configuration_fails_before_training(tmp_path, shapes_data, fast_config_dump,
                                                 hook_type, hook_args, change, message, error):
    work = str(tmp_path / 'work')
    hook = dict(dict(type=hook_type, num_images=2), **hook_args)
    cfg = _train_cfg(shapes_data, work, 1, [hook])
    if change is not None:
        change(cfg)
    train_forwards = []
    runner = None
    with pytest.raises(error, match=message) as raised:
        runner = Runner.from_cfg(cfg)  # hook construction errors surface here
        runner.model.register_forward_pre_hook(
            lambda module, args: train_forwards.append(1) if module.training else None)
        runner.train()  # model checks and image selection: before_run
    assert type(raised.value) is error  # exactly: a TypeError is not a kind of ValueError
    assert train_forwards == []
    assert runner is None or runner.iter == 0
    assert not glob.glob(osp.join(work, '*.pth'))
