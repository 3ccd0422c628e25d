# The main job (tools/run_demo.py): the demo detector's config (yolov5_n_shapes.py, which trained
# tests/assets at 320 px for 30 epochs) made cheap enough for every CPU of this machine kind:
# 256 px, 20 epochs, the last 12 without mosaic (on these shapes the val mAP rises in the
# no-mosaic epochs: 20 epochs with 5 of them gave mAP@50 0.82, with 12 gave 0.94; docs/demo.md, the
# main job). Everything else is inherited; the pipelines are the base's at the new size.
_base_ = './yolov5_n_shapes.py'
from mmyolo_vis_hooks.demo import with_input_size  # noqa: E402

img_scale = (256, 256)
max_epochs = 20
close_mosaic_epochs = 12
val_interval = 4

train_pipeline = with_input_size(_base_.train_pipeline, img_scale)
train_pipeline_stage2 = with_input_size(_base_.train_pipeline_stage2, img_scale)
test_pipeline = with_input_size(_base_.test_pipeline, img_scale)

model = dict(bbox_head=dict(loss_obj=dict(loss_weight=(img_scale[0] / 640)**2)))
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(pipeline=test_pipeline, batch_shapes_cfg=dict(img_size=img_scale[0])))
test_dataloader = val_dataloader
default_hooks = dict(param_scheduler=dict(max_epochs=max_epochs))
custom_hooks = [
    dict(hook, switch_epoch=max_epochs - close_mosaic_epochs,
         switch_pipeline=train_pipeline_stage2)
    if hook['type'] == 'mmdet.PipelineSwitchHook' else hook for hook in _base_.custom_hooks
]
train_cfg = dict(max_epochs=max_epochs, val_interval=val_interval)
