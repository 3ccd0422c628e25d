# A small RTMDet-R (MMYOLO's rotated RTMDet, mmrotate 1.x) on the rotated shapes data
# (`generate_rotated_demo_data`: the demo images, DOTA txt boxes): the rotated test detector
# of tests/assets/README.md. Its backbone is the demo detector's (MMYOLO's YOLOv5 CSPDarknet,
# n size), started from the trained demo weights (`load_from`, backbone keys only); the
# neck and head are RTMDet-R's at a quarter of the l width.
_base_ = 'mmyolo::rtmdet/rotated/rtmdet-r_tiny_fast_1xb8-36e_dota.py'
# rotated_iou_loss: RTMDet-R's rotated IoU loss with its CUDA-only vertex sort done in torch
custom_imports = dict(imports=['mmyolo_vis_hooks', 'mmyolo_vis_hooks.runtime.rotated_iou_loss'],
                      allow_failed_imports=False)

# tools/run_demo.py generates this dataset when missing and points data_root at it
demo_dataset = 'shapes_rotated'
data_root = 'data/shapes_rotated/'
class_name = ('circle', 'square', 'triangle')
num_classes = len(class_name)
metainfo = dict(classes=class_name, palette=[(220, 20, 60), (20, 180, 60), (30, 60, 230)])
img_scale = (320, 320)
max_epochs = 20
val_interval = 4
train_batch_size_per_gpu = 8
val_batch_size_per_gpu = 8
# AdamW as packaged; its 0.00025 (for 1x8 images, 36 epochs on DOTA) is too slow for a few
# epochs on a randomly initialised neck and head
base_lr = 0.002
# a quarter of RTMDet-R-l's widths: the YOLOv5-n backbone's (64, 128, 256) channels
widen_factor = 0.25
deepen_factor = 0.167
angle_version = 'le90'

model = dict(
    # the YOLOv5 demo detector's input convention (RGB in [0, 1])
    data_preprocessor=dict(mean=[0., 0., 0.], std=[255., 255., 255.], bgr_to_rgb=True),
    backbone=dict(
        _delete_=True,
        type='YOLOv5CSPDarknet',
        deepen_factor=0.33,
        widen_factor=0.25,
        out_indices=(2, 3, 4),
        norm_cfg=dict(type='BN', momentum=0.03, eps=0.001),
        act_cfg=dict(type='SiLU', inplace=True)),
    neck=dict(deepen_factor=deepen_factor, widen_factor=widen_factor),
    bbox_head=dict(
        head_module=dict(num_classes=num_classes, widen_factor=widen_factor),
        # mmrotate's RotatedIoULoss (linear, weight 2), trainable on the CPU
        loss_bbox=dict(type='TorchRotatedIoULoss')),
    train_cfg=dict(assigner=dict(num_classes=num_classes)),
    # shapes barely overlap; a few hundred candidates keep rotated NMS cheap on the CPU
    test_cfg=dict(nms_pre=2000, score_thr=0.05, max_per_img=100))

# Flips only: mmrotate's RandomRotate would turn a circle's fixed-angle box into an arbitrary
# one, and the shapes are drawn at every angle already. Diagonal flips keep it axis-aligned.
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, box_type='qbox'),
    dict(type='mmrotate.ConvertBoxType', box_type_mapping=dict(gt_bboxes='rbox')),
    dict(type='mmdet.Resize', scale=img_scale, keep_ratio=True),
    dict(type='mmdet.RandomFlip', prob=0.75, direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='mmdet.Pad', size=img_scale, pad_val=dict(img=(114, 114, 114))),
    dict(type='RegularizeRotatedBox', angle_version=angle_version),
    dict(type='mmdet.PackDetInputs'),
]
val_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='mmdet.Resize', scale=img_scale, keep_ratio=True),
    dict(type='mmdet.Pad', size=img_scale, pad_val=dict(img=(114, 114, 114))),
    dict(type='LoadAnnotations', with_bbox=True, box_type='qbox', _scope_='mmdet'),
    dict(type='mmrotate.ConvertBoxType', box_type_mapping=dict(gt_bboxes='rbox')),
    dict(type='mmdet.PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
test_pipeline = val_pipeline

train_dataloader = dict(
    batch_size=train_batch_size_per_gpu,
    num_workers=1,
    persistent_workers=True,
    pin_memory=False,
    # mmyolo:: bases inject `_scope_` into every typed dict; the collate function rejects it.
    collate_fn=dict(_delete_=True, type='yolov5_collate'),
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annfiles/train/',
        data_prefix=dict(img_path='train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=val_batch_size_per_gpu,
    num_workers=1,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annfiles/val/',
        data_prefix=dict(img_path='val/'),
        pipeline=val_pipeline))
test_dataloader = val_dataloader
# rotated IoU 0.5 (dota/AP50); each threshold costs about 20 s here (mmrotate's evaluation
# spawns a pool of 4 processes), so no 0.5:0.95 sweep
val_evaluator = dict(type='mmrotate.DOTAMetric', metric='mAP', iou_thrs=0.5)
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=base_lr))
param_scheduler = [
    # the packaged warm-up lasts 1000 iterations: 20 epochs here
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(
        type='CosineAnnealingLR',
        eta_min=base_lr * 0.05,
        begin=max_epochs // 2,
        end=max_epochs,
        T_max=max_epochs // 2,
        by_epoch=True,
        convert_to_iter_based=True),
]
default_hooks = dict(
    checkpoint=dict(interval=val_interval, max_keep_ckpts=1, save_best='dota/AP50',
                    rule='greater'),
    logger=dict(interval=10))
custom_hooks = [
    # gamma 2000 (the EMAHook default) keeps the EMA a near copy of the weights for a few
    # hundred iterations; 200 lets it average the end of training
    dict(
        type='EMAHook',
        ema_type='ExpMomentumEMA',
        momentum=0.0002,
        gamma=200,
        update_buffers=True,
        strict_load=False,
        priority=49)
]
train_cfg = dict(max_epochs=max_epochs, val_interval=val_interval)
load_from = 'tests/assets/yolov5_n_shapes.pth'
env_cfg = dict(cudnn_benchmark=False)
