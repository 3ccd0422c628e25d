# BoxAMVisHook for any MMYOLO config. MMEngine forbids one key in two bases, and MMYOLO's
# configs already define custom_hooks (EMAHook), so this snippet (and featmap_vis.py, which can
# be inherited alongside) only provides values; your config adds the hook:
#
#   # pip install: the snippets are the package mmyolo_vis_hooks.configs
#   _base_ = 'mmyolo::yolov5/yolov5_s-v61_syncbn_fast_8xb16-300e_coco.py'  # keep _base_ first
#   from mmyolo_vis_hooks.configs._base_.boxam_vis import boxam_vis_hook
#   custom_imports = dict(imports=['mmyolo_vis_hooks'], allow_failed_imports=False)
#   custom_hooks = [*_base_.custom_hooks, boxam_vis_hook]
#
#   # in a clone, as a base file:
#   _base_ = ['mmyolo::yolov5/yolov5_s-v61_syncbn_fast_8xb16-300e_coco.py',
#             '<path-to>/configs/_base_/boxam_vis.py']
#   custom_imports = dict(imports=['mmyolo_vis_hooks'], allow_failed_imports=False)
#   custom_hooks = [*_base_.custom_hooks, _base_.boxam_vis_hook]
#
# One GradCAM map per detected box (the 3 best boxes above 0.3) on 4 fixed validation images
# at every validation epoch, aligned with the images through the letterbox, plus the scalar
# boxam/energy_in_gt/gradcam (share of the CAM inside the ground-truth boxes). Images and the
# scalar go to every configured VisBackend (TensorBoard: add dict(type='TensorboardVisBackend')
# to visualizer.vis_backends).
boxam_vis_hook = dict(
    type='BoxAMVisHook',
    interval=1,
    num_images=4,
    method='gradcam',  # why: docs/cams.md, "Which method to trust"; the others: docs/hooks.md
    target_layers=None,  # every neck.out_layers[i]: each box on its own pyramid level
    topk=3,
    score_thr=0.3,
    norm_in_bbox=False,
    merge=False,
    align='letterbox',
    alpha=0.5)
