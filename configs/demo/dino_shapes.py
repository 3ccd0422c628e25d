# A small DINO (MMDetection's DETR family) on the embedded shapes data: the DETR test detector
# of tests/assets/README.md. Its backbone is the demo detector's (MMYOLO's YOLOv5 CSPDarknet, n
# size), started from the trained demo weights (`load_from`, backbone keys only); 256 px, 2
# encoder and 3 decoder layers, 512-wide feed-forward layers, 100 queries. The width stays 256: DINO's
# decoder encodes reference boxes with a fixed 128 features per coordinate.
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
custom_imports = dict(imports=['mmyolo.models', 'mmyolo_vis_hooks'], allow_failed_imports=False)

data_root = 'data/shapes/'
class_name = ('circle', 'square', 'triangle')
num_classes = len(class_name)
metainfo = dict(classes=class_name, palette=[(220, 20, 60), (20, 180, 60), (30, 60, 230)])
img_scale = (256, 256)
max_epochs = 12
embed_dims = 256

model = dict(
    num_queries=100,
    # the YOLOv5 demo detector's input convention (RGB in [0, 1])
    data_preprocessor=dict(mean=[0., 0., 0.], std=[255., 255., 255.], bgr_to_rgb=True),
    backbone=dict(
        _delete_=True,
        type='mmyolo.YOLOv5CSPDarknet',
        deepen_factor=0.33,
        widen_factor=0.25,
        out_indices=(3, 4),
        norm_cfg=dict(type='BN', momentum=0.03, eps=0.001),
        act_cfg=dict(type='SiLU', inplace=True)),
    # 3 levels (strides 16, 32, 64): a quarter of the 4-level encoder's tokens, 2.3x faster
    # training here
    num_feature_levels=3,
    neck=dict(in_channels=[128, 256], out_channels=embed_dims, num_outs=3,
              norm_cfg=dict(type='GN', num_groups=32)),
    encoder=dict(
        num_layers=2,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=embed_dims, num_levels=3),
            ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=512))),
    decoder=dict(
        num_layers=3,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=embed_dims),
            cross_attn_cfg=dict(embed_dims=embed_dims, num_levels=3),
            ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=512))),
    bbox_head=dict(num_classes=num_classes, embed_dims=embed_dims),
    dn_cfg=dict(group_cfg=dict(num_dn_queries=30)),
    test_cfg=dict(max_per_img=50))

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
    batch_size=4,
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
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[10],
         gamma=0.1),
]
optim_wrapper = dict(optimizer=dict(lr=2e-4))
auto_scale_lr = dict(enable=False)
default_hooks = dict(
    checkpoint=dict(interval=3, max_keep_ckpts=1, save_best='coco/bbox_mAP_50', rule='greater'),
    logger=dict(interval=20))
load_from = 'tests/assets/yolov5_n_shapes.pth'
env_cfg = dict(cudnn_benchmark=False)
