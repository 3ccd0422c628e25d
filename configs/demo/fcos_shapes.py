# A small FCOS (MMDetection) on the embedded shapes data: the dense one-stage test detector of
# tests/assets/README.md. Its backbone is the demo detector's (MMYOLO's YOLOv5 CSPDarknet, n
# size), started from the trained demo weights (`load_from`, backbone keys only).
_base_ = 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py'
custom_imports = dict(imports=['mmyolo.models', 'mmyolo_vis_hooks'], allow_failed_imports=False)

data_root = 'data/shapes/'
class_name = ('circle', 'square', 'triangle')
num_classes = len(class_name)
metainfo = dict(classes=class_name, palette=[(220, 20, 60), (20, 180, 60), (30, 60, 230)])
img_scale = (320, 320)
max_epochs = 12
neck_channels = 64

model = dict(
    # the YOLOv5 demo detector's input convention (RGB in [0, 1]); mmdet pads with 0
    data_preprocessor=dict(
        mean=[0., 0., 0.], std=[255., 255., 255.], bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='mmyolo.YOLOv5CSPDarknet',
        deepen_factor=0.33,
        widen_factor=0.25,
        out_indices=(2, 3, 4),
        norm_cfg=dict(type='BN', momentum=0.03, eps=0.001),
        act_cfg=dict(type='SiLU', inplace=True)),
    neck=dict(in_channels=[64, 128, 256], out_channels=neck_channels, start_level=0,
              num_outs=4),
    bbox_head=dict(
        num_classes=num_classes,
        in_channels=neck_channels,
        feat_channels=neck_channels,
        stacked_convs=2,
        strides=[8, 16, 32, 64],
        # shapes are 17-120 px at 320
        regress_ranges=((-1, 32), (32, 64), (64, 128), (128, 100000000.0))),
    test_cfg=dict(nms_pre=500, max_per_img=50))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=img_scale, ratio_range=(0.6, 1.2), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=False, min_size=8),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=max_epochs, val_interval=3)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[9, 11],
         gamma=0.1),
]
optim_wrapper = dict(optimizer=dict(lr=0.01), clip_grad=dict(max_norm=35, norm_type=2))
auto_scale_lr = dict(enable=False)
default_hooks = dict(
    checkpoint=dict(interval=3, max_keep_ckpts=1, save_best='coco/bbox_mAP_50', rule='greater'),
    logger=dict(interval=10))
load_from = 'tests/assets/yolov5_n_shapes.pth'
env_cfg = dict(cudnn_benchmark=False)
