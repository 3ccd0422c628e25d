"""Configs the tools cannot run end in ONE line ``<tool>: error: <what it is and what to do>``
with exit code 2, never a traceback: real packaged configs of MMYOLO and MMDetection, refused
from what the config says before any model is built, or from what the build finds. A config
with ``with_cp=True`` (activation checkpointing) is no refusal: it is built without it.
The hooks refuse the same kinds of model in ``before_run`` of a real Runner.
"""
import importlib.util
import os.path as osp
import sys

import mmdet
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from helpers import packaged_config
from helpers.tools import assert_one_line_error, run_tool_in_process
from helpers.runner import tiny_train_cfg
from mmyolo_vis_hooks.runtime.config_check import (UnsupportedConfigError,
                                                    build_errors_explained, classify_file)
from mmyolo_vis_hooks.runtime.models import build_detector

MMDET_CONFIGS = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs')


def mmdet_config(relpath: str) -> str:
    return osp.join(MMDET_CONFIGS, relpath)


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


# (config, reason, fragments of the one-line message)
REFUSALS = [
    (packaged_config('deploy/detection_onnxruntime_static.py'), 'deployment',
     ['MMDeploy deployment config', 'holds no model', "pass the detector's model config"]),
    (packaged_config('yolox/yolox_p5_tta.py'), 'test-time augmentation',
     ['test-time-augmentation snippet', 'holds no model', '(one of yolox/*.py)']),
    (mmdet_config('_base_/datasets/coco_detection.py'), 'no model',
     ['coco_detection.py holds no model', 'train_pipeline', 'pass a model config']),
    (mmdet_config('common/ms_3x_coco.py'), 'no model', ['ms_3x_coco.py holds no model']),
    (packaged_config('rtmdet/distillation/kd_tiny_rtmdet_s_neck_300e_coco.py'), 'distillation',
     ['is a distillation config (model type FpnTeacherDistill',
      "pass the student's own config (mmyolo::rtmdet/rtmdet_tiny_syncbn_fast_8xb32-300e_coco.py)"]),
    (mmdet_config('ld/ld_r18-gflv1-r101_fpn_1x_coco.py'), 'distillation',
     ['KnowledgeDistillationSingleStageDetector', 'the student detector alone']),
    (packaged_config('rtmdet/cspnext_imagenet_pretrain/cspnext-s_8xb256-rsb-a1-600e_in1k.py'),
     'classification', ['image classification', 'ImageClassifier', 'not a detector']),
    (mmdet_config('bytetrack/bytetrack_yolox_x_8xb4-80e_crowdhuman-mot17halftrain_'
                  'test-mot17halfval.py'), 'video/tracking',
     ['is a video/tracking model (ByteTrack', 'model.detector: YOLOX']),
    (mmdet_config('masktrack_rcnn/masktrack-rcnn_mask-rcnn_r101_fpn_8xb1-12e_youtubevis2019.py'),
     'video/tracking', ['video/tracking model (MaskTrackRCNN', 'model.detector: MaskRCNN']),
    (mmdet_config('reid/reid_r50_8xb32-6e_mot17train80_test-mot17val20.py'), 're-identification',
     ['re-identification model (BaseReID', 'not a detector']),
    (mmdet_config('glip/glip_atss_swin-t_a_fpn_dyhead_pretrain_obj365.py'), 'text-grounded',
     ['text-grounded detector (GLIP)', 'transformers', 'BERT weights']),
    (mmdet_config('grounding_dino/grounding_dino_r50_scratch_8xb2_1x_coco.py'), 'text-grounded',
     ['text-grounded detector (GroundingDINO)']),
    (mmdet_config('soft_teacher/soft-teacher_faster-rcnn_r50-caffe_fpn_180k_semi-0.1-coco.py'),
     'semi-supervised', ['semi-supervised wrapper (SoftTeacher', 'FasterRCNN']),
    (mmdet_config('_base_/models/retinanet_r50_fpn.py'), 'partial model',
     ['no test pipeline', 'a full config that inherits it']),
    (mmdet_config('panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py'), 'panoptic-only',
     ['panoptic segmentation model (PanopticFPN)', 'no detected boxes']),
    (mmdet_config('maskformer/maskformer_r50_ms-16xb1-75e_coco.py'), 'panoptic-only',
     ['panoptic segmentation model (MaskFormer)']),
    (mmdet_config('fast_rcnn/fast-rcnn_r50_fpn_1x_coco.py'), 'precomputed proposals',
     ['without an RPN (FastRCNN)', 'proposals file', 'Faster R-CNN']),
    (mmdet_config('misc/d2_retinanet_r50-caffe_fpn_ms-90k_coco.py'), 'missing package',
     ['Detectron2Wrapper', 'needs detectron2, which is not on PyPI']),
]
# Refused only where the package is missing (as here): (config, package, reason, fragments)
MISSING_PACKAGES = [
    (packaged_config('rtmdet/rotated/rtmdet-r_tiny_fast_1xb8-36e_dota.py'), 'mmrotate',
     ["model.bbox_head.loss_bbox.type='mmrotate.RotatedIoULoss'",
      'needs mmrotate 1.x: pip install mmrotate-dev==1.0.1']),
    (packaged_config('yolox/pose/yolox-pose_tiny_8xb32-300e-rtmdet-hyp_coco.py'), 'mmpose',
     ["'mmpose.", 'needs mmpose 1.x: pip install mmpose==1.3.2 --no-binary xtcocotools']),
    (packaged_config('razor/subnets/yolov5_s_spos_shufflenetv2_syncbn_8xb16-300e_coco.py'),
     'mmrazor', ['its _base_ inherits mmrazor:: configs', 'mmrazor==1.0.0',
                 'MMRazor configs are not supported here']),
    (mmdet_config('convnext/mask-rcnn_convnext-t-p4-w7_fpn_amp-ms-crop-3x_coco.py'), 'mmpretrain',
     ['(custom_imports mmpretrain)', 'pip install mmpretrain==1.2.0']),
    # a classification config is said to be one even when its mmcls:: bases cannot be read
    (packaged_config('rtmdet/cspnext_imagenet_pretrain/cspnext-tiny_8xb256-rsb-a1-600e_in1k.py'),
     'mmcls', ['cspnext-tiny_8xb256-rsb-a1-600e_in1k.py is an image classification']),
]


def _val_image(data_root):
    return osp.join(data_root, 'val', 'val_00000.png')


@pytest.mark.parametrize('config, reason, fragments', REFUSALS,
                         ids=[osp.basename(c) for c, _, _ in REFUSALS])
def test_refused_in_one_line_before_building(tmp_path, shapes_data, capsys, monkeypatch,
                                             config, reason, fragments):
    built = []
    monkeypatch.setattr('mmengine.registry.MODELS.build', built.append)  # must not be reached
    result = run_tool_in_process('featmap_vis', [_val_image(shapes_data), config, '--out-dir',
                                                 str(tmp_path / 'out')], capsys)
    assert_one_line_error(result, 'featmap_vis', *fragments)
    assert built == [] and not (tmp_path / 'out').exists()
    assert classify_file(config).reason == reason


@pytest.mark.parametrize('config, package, fragments', MISSING_PACKAGES,
                         ids=[p for _, p, _ in MISSING_PACKAGES])
def test_missing_optional_package_says_what_to_install(tmp_path, shapes_data, capsys,
                                                       monkeypatch, config, package, fragments):
    if _installed(package):  # as where it is not: a None entry makes find_spec say so
        monkeypatch.setitem(sys.modules, package, None)
        assert not _installed(package)
    result = run_tool_in_process('featmap_vis', [_val_image(shapes_data), config], capsys)
    assert_one_line_error(result, 'featmap_vis', *fragments)


@pytest.mark.parametrize('tool', ['boxam_vis', 'boxam_eval', 'large_image_infer'])
def test_every_tool_refuses_the_same_way(tmp_path, shapes_data, capsys, tool):
    config = packaged_config('deploy/detection_onnxruntime_static.py')
    checkpoint = str(tmp_path / 'never_read.pth')  # the config is refused first
    result = run_tool_in_process(tool, [_val_image(shapes_data), config, checkpoint,
                                        '--out-dir', str(tmp_path / 'out')], capsys)
    assert_one_line_error(result, tool, 'MMDeploy deployment config', 'holds no model')


def _write_config(path, text):
    path.write_text(text)
    return str(path)


def test_unregistered_model_type_names_the_package_that_registers_it(tmp_path, shapes_data,
                                                                      capsys):
    """Before building: a type no registry of the scope knows, with where it is registered."""
    base = mmdet_config('retinanet/retinanet_r18_fpn_1x_coco.py')
    unknown = _write_config(tmp_path / 'unknown.py', f"_base_ = '{base}'\n"
                            "model = dict(type='NoSuchDetector')\n")
    result = run_tool_in_process('featmap_vis', [_val_image(shapes_data), unknown], capsys)
    assert_one_line_error(result, 'featmap_vis', "model.type='NoSuchDetector' is not registered "
                          "in mmdet's registries", 'custom_imports')
    pytest.importorskip('mmyolo')
    yolo_in_mmdet = _write_config(tmp_path / 'yolo.py', f"_base_ = '{base}'\n"
                                  "model = dict(type='YOLODetector')\n")
    result = run_tool_in_process('featmap_vis', [_val_image(shapes_data), yolo_in_mmdet], capsys)
    assert_one_line_error(result, 'featmap_vis', 'it is registered by mmyolo: write '
                          "mmyolo.YOLODetector or set default_scope='mmyolo'")


def test_type_missing_because_the_scopes_models_fail_to_import_says_why(
        tmp_path, shapes_data, capsys, monkeypatch):
    """A registry that is empty because its package's models raise on import (in the official
    MMYOLO stack a binary xtcocotools built for NumPy 1 did that to mmyolo.models) names that
    import error, not 'not registered'."""
    import importlib as _importlib
    real_import = _importlib.import_module

    def broken(name, *args, **kwargs):
        if name == 'mmyolo.models':
            raise ValueError('numpy.dtype size changed, may indicate binary incompatibility')
        return real_import(name, *args, **kwargs)
    pytest.importorskip('mmyolo')
    monkeypatch.setattr(_importlib, 'import_module', broken)
    base = packaged_config('yolov5/yolov5_n-v61_syncbn_fast_8xb16-300e_coco.py')
    config = _write_config(tmp_path / 'yolo.py', f"_base_ = '{base}'\n"
                           "model = dict(type='NoSuchYOLODetector')\n")
    result = run_tool_in_process('featmap_vis', [_val_image(shapes_data), config], capsys)
    assert_one_line_error(result, 'featmap_vis', "model.type='NoSuchYOLODetector' cannot be "
                          'found because importing mmyolo.models fails: ValueError: numpy.dtype '
                          'size changed', 'repair that installation')


def test_unregistered_nested_type_is_reported_by_the_build(tmp_path, shapes_data, capsys):
    """Nested types are left to the build (some are no registry names); its KeyError becomes
    one line naming the type."""
    config = mmdet_config('retinanet/retinanet_r18_fpn_1x_coco.py')
    result = run_tool_in_process('featmap_vis', [
        _val_image(shapes_data), config, '--cfg-options', 'model.neck.type=NoSuchNeck'], capsys)
    assert_one_line_error(result, 'featmap_vis', "type 'NoSuchNeck' is not registered in the "
                          'mmdet model registry')


def test_offline_download_during_build_is_one_sentence(tmp_path):
    """A build that downloads (a refused connection here) names the file and what to do."""
    import urllib.request
    url = 'http://127.0.0.1:9/weights.pth'  # the discard port: nothing listens
    cfg = Config.fromfile(_write_config(
        tmp_path / 'downloading.py', f"model = dict(type='RetinaNet', teacher_weights='{url}')\n"))
    with pytest.raises(UnsupportedConfigError) as info:
        with build_errors_explained(cfg):
            urllib.request.urlopen(url, timeout=5)
    assert info.value.reason == 'download'
    assert f'building the model of downloading.py downloads files ({url})' in str(info.value)
    assert 'download them elsewhere and point the config at local copies' in str(info.value)
    with pytest.raises(ZeroDivisionError):  # anything else keeps its traceback
        with build_errors_explained(cfg):
            1 / 0


@pytest.mark.slow
def test_with_cp_config_works_without_checkpointing(tmp_path, shapes_data):
    """RTMDet with a Swin backbone built with ``with_cp=True``: the tool draws its feature
    maps, and the built model takes gradients with ``torch.autograd.grad``, which activation
    checkpointing refuses."""
    config = mmdet_config('rtmdet/rtmdet_l_swin_b_4xb32-100e_coco.py')
    assert Config.fromfile(config).model.backbone.with_cp is True
    # A smaller Swin and neck keep the test fast; with_cp stays as the config sets it.
    options = ['model.backbone.embed_dims=32', 'model.backbone.depths=[1,1,1,1]',
               'model.backbone.num_heads=[1,2,4,8]', 'model.neck.in_channels=[64,128,256]',
               'model.neck.out_channels=64', 'model.bbox_head.in_channels=64',
               'model.bbox_head.feat_channels=64', 'test_dataloader.dataset.pipeline.1.scale='
               '(128,128)', 'test_dataloader.dataset.pipeline.2.size=(128,128)']
    out = tmp_path / 'out.png'
    from mmyolo_vis_hooks.cli import featmap_vis
    featmap_vis.main([_val_image(shapes_data), config, '--target-layers', 'backbone',
                      '--out-file', str(out), '--device', 'cpu', '--cfg-options', *options])
    assert out.is_file()

    from mmengine.config import DictAction
    cfg_options = {key: DictAction._parse_iterable(value)
                   for key, value in (item.split('=', 1) for item in options)}
    model = build_detector(config, device='cpu', cfg_options=cfg_options)
    assert model.cfg.model.backbone.with_cp is True  # the config is unchanged
    assert not [name for name, m in model.named_modules() if getattr(m, 'with_cp', False)]
    def grad_through_first_stage():
        captured = []
        handle = model.backbone.stages[0].register_forward_hook(
            lambda module, args, output: captured.append(output[0]))
        try:
            with torch.enable_grad():
                outs = model.backbone(torch.rand(1, 3, 64, 64))
                # squared: the sum of a LayerNorm output over channels is constant
                return torch.autograd.grad((outs[-1]**2).sum(), captured[0])[0]
        finally:
            handle.remove()

    assert grad_through_first_stage().abs().sum() > 0
    blocks = [m for m in model.modules() if hasattr(m, 'with_cp')]
    for block in blocks:  # what the config asked for: the gradient cannot be taken
        block.with_cp = True
    with pytest.raises(RuntimeError, match='checkpoint'):
        grad_through_first_stage()


@pytest.mark.slow
def test_syncbn_configs_build_in_one_process():
    """mmcv's MMSyncBN asks for the process group when it is built; the explanation build
    makes it BN (as revert_sync_batchnorm would afterwards), torch's SyncBN is reverted."""
    from mmcv.ops import SyncBatchNorm as MMSyncBN
    config = mmdet_config('simple_copy_paste/mask-rcnn_r50_fpn_rpn-2conv_4conv1fc_syncbn-all_'
                          '32xb2-ssj-90k_coco.py')
    cfg = Config.fromfile(config)
    assert cfg.model.roi_head.bbox_head.norm_cfg.type == 'MMSyncBN'
    assert cfg.model.backbone.norm_cfg.type == 'SyncBN'
    model = build_detector(config, device='cpu')
    assert not [m for m in model.modules()
                if isinstance(m, (MMSyncBN, torch.nn.SyncBatchNorm))]


@pytest.mark.slow
def test_hooks_refuse_a_tracking_model_before_training(tmp_path, shapes_data,
                                                       fast_config_dump):
    """A Runner that built a video model (QDTrack: Faster R-CNN + a tracking head): the hook
    says in before_run what the tools say for the config, before any iteration."""
    qdtrack = Config.fromfile(mmdet_config(
        'qdtrack/qdtrack_faster-rcnn_r50_fpn_8xb2-4e_mot17halftrain_test-mot17halfval.py'))
    cfg = tiny_train_cfg(shapes_data, str(tmp_path / 'work'), epochs=1, custom_hooks=[
        dict(type='FeatMapVisHook', interval=1, num_images=1, target_layers=['neck'])])
    cfg.model = dict(qdtrack.model, _scope_='mmdet')
    runner = Runner.from_cfg(cfg)
    with pytest.raises(UnsupportedConfigError, match=r'^FeatMapVisHook: .* is a video/tracking '
                       r'model \(QDTrack: .*model\.detector: FasterRCNN'):
        runner.train()
    assert runner.iter == 0


@pytest.mark.slow
def test_an_op_without_a_cpu_kernel_is_one_line(tmp_path, shapes_data, capsys):
    """Guided anchoring's head runs mmcv's masked convolution at test time, which mmcv
    compiles for CUDA only: on the CPU the feature-map tool says so and what to do (the
    traceback of a RuntimeError otherwise). (The box-CAM tools refuse the head before: its
    decoding has no adapter.)"""
    config = mmdet_config('guided_anchoring/ga-retinanet_r50-caffe_fpn_1x_coco.py')
    result = run_tool_in_process('featmap_vis', [_val_image(shapes_data), config, '--device',
                                                 'cpu', '--out-dir', str(tmp_path / 'out')],
                                 capsys)
    assert_one_line_error(result, 'featmap_vis', "mmcv's masked_im2col op", 'no CPU kernel',
                          '--device cuda:0')


def test_other_runtime_errors_keep_their_traceback():
    """Only mmcv's missing-kernel error is a user's situation; any other RuntimeError is a
    bug and propagates."""
    from mmyolo_vis_hooks.cli.common import ToolArgumentParser, run_tool

    def boom(args):
        raise RuntimeError('an unexpected failure')
    with pytest.raises(RuntimeError, match='an unexpected failure'):
        run_tool(ToolArgumentParser(prog='t'), boom, [])
