# A small YOLOX-pose (MMYOLO's YOLOXPoseHead, 17 COCO keypoints) on the stick-figure data
# (`generate_pose_demo_data`: 1-3 figures per image, COCO keypoints json): the pose test
# detector of tests/assets/README.md. Its backbone is the demo detector's (MMYOLO's YOLOv5
# CSPDarknet, n size), started from the trained demo weights (`load_from`, backbone keys
# only); the YOLOX PAFPN neck and the pose head are at a quarter of the l width.
_base_ = 'mmyolo::yolox/pose/yolox-pose_tiny_8xb32-300e-rtmdet-hyp_coco.py'
# pose_head: the packaged head, given the test config its predict_by_feat needs (validation)
custom_imports = dict(imports=['mmyolo_vis_hooks', 'mmyolo_vis_hooks.runtime.pose_head'],
                      allow_failed_imports=False)

# tools/run_demo.py generates this dataset when missing and points data_root at it
demo_dataset = 'stick_figures'
data_root = 'data/stick_figures/'
img_scale = (256, 256)
max_epochs = 25
val_interval = 5
train_batch_size_per_gpu = 8
val_batch_size_per_gpu = 8
# AdamW as packaged (0.004 for 8x32 images); fast enough for a few epochs on batch 8
base_lr = 0.002
widen_factor = 0.25
deepen_factor = 0.33

model = dict(
    # the YOLOv5 demo detector's input convention (RGB in [0, 1]); no random resizing
    data_preprocessor=dict(mean=[0., 0., 0.], std=[255., 255., 255.], bgr_to_rgb=True,
                           batch_augments=None),
    # no pretrained init (no download): the backbone comes from load_from
    init_cfg=None,
    backbone=dict(
        _delete_=True,
        type='YOLOv5CSPDarknet',
        deepen_factor=0.33,
        widen_factor=0.25,
        out_indices=(2, 3, 4),
        norm_cfg=dict(type='BN', momentum=0.03, eps=0.001),
        act_cfg=dict(type='SiLU', inplace=True)),
    neck=dict(deepen_factor=deepen_factor, widen_factor=widen_factor),
    bbox_head=dict(type='YOLOXPoseHeadWithTestCfg',
                   head_module=dict(widen_factor=widen_factor)),
    # the head's predict_by_feat cuts its keypoints to max_per_img before indexing them with
    # NMS's indices into all nms_pre candidates: the two must be equal
    test_cfg=dict(score_thr=0.01, nms_pre=100, max_per_img=100))

pre_transform = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_keypoints=True)
]
# No Mosaic/MixUp (slow on one CPU thread): letterbox, colour jitter, flips (left/right
# keypoints swapped by the dataset's flip indices)
train_pipeline = [
    *pre_transform,
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='mmdet.Pad', pad_to_square=True, pad_val=dict(img=(114.0, 114.0, 114.0))),
    dict(type='mmdet.YOLOXHSVRandomAug'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='FilterAnnotations', by_keypoints=True, keep_empty=False),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape'))
]
test_pipeline = [
    *pre_transform,
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='mmdet.Pad', pad_to_square=True, pad_val=dict(img=(114.0, 114.0, 114.0))),
    dict(type='PackDetInputs',
         meta_keys=('id', 'img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
                    'flip_indices'))
]

train_dataloader = dict(
    batch_size=train_batch_size_per_gpu,
    num_workers=1,
    persistent_workers=True,
    pin_memory=False,
    # mmyolo:: bases inject `_scope_` into every typed dict; the collate function rejects it.
    collate_fn=dict(_delete_=True, type='yolov5_collate'),
    dataset=dict(
        data_root=data_root,
        ann_file='annotations/train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=val_batch_size_per_gpu,
    num_workers=1,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(
        data_root=data_root,
        ann_file='annotations/val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=base_lr))
param_scheduler = [
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
    checkpoint=dict(interval=val_interval, max_keep_ckpts=1, save_best='coco/AP',
                    rule='greater'),
    logger=dict(interval=10))
custom_hooks = [
    # gamma 200: the EMA averages the end of a short run (see rtmdet_r_shapes.py)
    dict(
        type='EMAHook',
        ema_type='ExpMomentumEMA',
        momentum=0.0002,
        gamma=200,
        update_buffers=True,
        strict_load=False,
        priority=49)
]
train_cfg = dict(max_epochs=max_epochs, val_interval=val_interval, dynamic_intervals=None)
auto_scale_lr = dict(enable=False)
load_from = 'tests/assets/yolov5_n_shapes.pth'
env_cfg = dict(cudnn_benchmark=False)
