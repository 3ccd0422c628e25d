# The embedded demo: YOLOv5-n on the synthetic shapes of tools/make_demo_data.py, sized for a
# 2-core CPU. Paths are relative to the repository root (the main job runs from there).
_base_ = [
    'mmyolo::yolov5/yolov5_n-v61_syncbn_fast_8xb16-300e_coco.py',
    '../_base_/featmap_vis.py',
    '../_base_/boxam_vis.py',
]
custom_imports = dict(imports=['mmyolo_vis_hooks'], allow_failed_imports=False)

data_root = 'data/shapes/'
class_name = ('circle', 'square', 'triangle')
num_classes = len(class_name)
metainfo = dict(classes=class_name, palette=[(220, 20, 60), (20, 180, 60), (30, 60, 230)])

img_scale = (320, 320)
max_epochs = 30
close_mosaic_epochs = 5  # last epochs train without mosaic, on whole letterboxed images
val_interval = 2
train_batch_size_per_gpu = 16
val_batch_size_per_gpu = 8
base_lr = 0.02
lr_factor = 0.05
loss_cls_weight = 0.2
# Shapes are 24-96 px in the 256-448 px images (about 17-120 px at 320) and 16-40 px in the
# large image slices; the boxes are square-ish (rotated squares/triangles), so are the anchors.
anchors = [
    [(10, 10), (16, 16), (24, 22)],
    [(32, 32), (46, 42), (64, 64)],
    [(90, 84), (128, 128), (180, 176)],
]
# Mosaic + affine scale 0.4-1.5: objects from about 7 px to 180 px, covering the large-image
# slices' 16-40 px shapes.
scaling_ratio_range = (0.4, 1.5)

model = dict(
    bbox_head=dict(
        head_module=dict(num_classes=num_classes),
        prior_generator=dict(base_sizes=anchors),
        # The packaged weight scales by num_classes / 80: 0.019 for 3 classes, and the class
        # loss had hardly moved from chance after 14 epochs (val mAP@50 0.58). 0.5 learnt the
        # classes but dipped for 8 epochs first (0.92 after 30 epochs); 0.2: 0.95 by epoch 16.
        loss_cls=dict(loss_weight=loss_cls_weight),
        loss_obj=dict(loss_weight=1.0 * ((img_scale[0] / 640)**2 * 3 / 3))),
    test_cfg=dict(nms_pre=1000, max_per_img=100))

pre_transform = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
]
random_affine = dict(
    type='YOLOv5RandomAffine',
    max_rotate_degree=0.0,
    max_shear_degree=0.0,
    scaling_ratio_range=scaling_ratio_range,
    border_val=(114, 114, 114))
# Colour, flip and packing end both training stages.
train_tail = [
    dict(type='YOLOv5HSVRandomAug'),
    dict(type='mmdet.RandomFlip', prob=0.5),
    dict(
        type='mmdet.PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'flip', 'flip_direction')),
]
train_pipeline = [
    *pre_transform,
    dict(type='Mosaic', img_scale=img_scale, pad_val=114.0, pre_transform=pre_transform),
    dict(**random_affine, border=(-img_scale[0] // 2, -img_scale[1] // 2)),
    *train_tail,
]
# Close mosaic: whole images, letterboxed, with a milder affine (YOLOv8 style stage 2).
train_pipeline_stage2 = [
    *pre_transform,
    dict(type='YOLOv5KeepRatioResize', scale=img_scale),
    dict(type='LetterResize', scale=img_scale, allow_scale_up=True, pad_val=dict(img=114.0)),
    dict(**random_affine, max_aspect_ratio=100),
    *train_tail,
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='YOLOv5KeepRatioResize', scale=img_scale),
    dict(type='LetterResize', scale=img_scale, allow_scale_up=False, pad_val=dict(img=114)),
    dict(type='LoadAnnotations', with_bbox=True, _scope_='mmdet'),
    dict(
        type='mmdet.PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'pad_param')),
]

train_dataloader = dict(
    batch_size=train_batch_size_per_gpu,
    num_workers=2,
    persistent_workers=True,
    pin_memory=False,
    # mmyolo:: bases inject `_scope_` into every typed dict; the collate function rejects it.
    collate_fn=dict(_delete_=True, type='yolov5_collate'),
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=False, min_size=8),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=val_batch_size_per_gpu,
    num_workers=1,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline,
        batch_shapes_cfg=dict(batch_size=val_batch_size_per_gpu, img_size=img_scale[0])))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=base_lr, batch_size_per_gpu=train_batch_size_per_gpu))
default_hooks = dict(
    # The packaged warm-up lasts max(3 epochs, 1000 iterations): 40 demo epochs. Keep it short.
    param_scheduler=dict(
        max_epochs=max_epochs, lr_factor=lr_factor, warmup_epochs=1, warmup_mim_iter=50),
    checkpoint=dict(interval=5, max_keep_ckpts=2, save_best='coco/bbox_mAP_50', rule='greater'),
    logger=dict(interval=10))
custom_hooks = [
    # gamma 2000 (packaged) keeps the EMA a near copy of the weights for the ~1000 demo iterations
    dict(
        type='EMAHook',
        ema_type='ExpMomentumEMA',
        momentum=0.0001,
        gamma=200,
        update_buffers=True,
        strict_load=False,
        priority=49),
    dict(
        type='mmdet.PipelineSwitchHook',
        switch_epoch=max_epochs - close_mosaic_epochs,
        switch_pipeline=train_pipeline_stage2),
    # feature maps of 4 fixed val images on every validation epoch (configs/_base_/featmap_vis.py)
    _base_.featmap_vis_hook,
    # one Grad-CAM per box (3 best boxes) on the same images (configs/_base_/boxam_vis.py)
    _base_.boxam_vis_hook,
]
train_cfg = dict(max_epochs=max_epochs, val_interval=val_interval)

# Local + ActivationStatsVisBackend (a TensorboardVisBackend that adds per-layer statistics)
visualizer = dict(vis_backends=_base_.vis_backends_with_stats)
env_cfg = dict(cudnn_benchmark=False)
