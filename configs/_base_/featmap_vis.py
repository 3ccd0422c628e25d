# FeatMapVisHook for any MMYOLO config. MMEngine forbids one key in two bases, and MMYOLO's
# configs already define custom_hooks (EMAHook) and visualizer, so this snippet (and
# boxam_vis.py, which can be inherited alongside) only provides values; your config adds them:
#
#   # pip install: the snippets are the package mmyolo_vis_hooks.configs
#   _base_ = 'mmyolo::yolov5/yolov5_s-v61_syncbn_fast_8xb16-300e_coco.py'  # keep _base_ first
#   from mmyolo_vis_hooks.configs._base_.featmap_vis import (featmap_vis_hook,
#                                                            vis_backends_with_stats)
#   custom_imports = dict(imports=['mmyolo_vis_hooks'], allow_failed_imports=False)
#   custom_hooks = [*_base_.custom_hooks, featmap_vis_hook]
#
#   # in a clone, as a base file:
#   _base_ = ['mmyolo::yolov5/yolov5_s-v61_syncbn_fast_8xb16-300e_coco.py',
#             '<path-to>/configs/_base_/featmap_vis.py']
#   custom_imports = dict(imports=['mmyolo_vis_hooks'], allow_failed_imports=False)
#   custom_hooks = [*_base_.custom_hooks, _base_.featmap_vis_hook]
#
# Feature maps of the backbone and neck outputs on 4 fixed validation images at every
# validation epoch; per-layer activation statistics (histogram, mean/std/dead share) on
# TensorBoard through ActivationStatsVisBackend.
featmap_vis_hook = dict(
    type='FeatMapVisHook',
    interval=1,
    num_images=4,
    target_layers=['backbone', 'neck'],
    channel_reduction='squeeze_mean',
    align='letterbox',
    alpha=0.5,
    score_thr=0.3)

vis_backends_with_stats = [dict(type='LocalVisBackend'), dict(type='ActivationStatsVisBackend')]
