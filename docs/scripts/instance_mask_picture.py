# Run from the repository root: python docs/scripts/instance_mask_picture.py docs/images/boxam_instance_mask.png
"""The docs picture: a YOLOv5-ins built with the demo detector's trained weights (backbone,
neck, and the box/objectness/class rows of the head) and a random-init mask branch."""
import sys; sys.path[:0] = ['tests', '.']
import tempfile
import numpy as np, torch, cv2
from helpers import packaged_config
from helpers.mmyolo_models import INSTANCE, yolov5_ins_with_demo_weights
from mmengine.config import Config
from mmyolo_vis_hooks.runtime.models import build_detector
from mmyolo_vis_hooks.engine.cam import BoxCAM
from mmyolo_vis_hooks.engine.cam.draw import draw_box_cams
from mmyolo_vis_hooks.data.synthetic_shapes import render_image, CLASSES
from mmdet.structures import DetDataSample

cfg = Config.fromfile(packaged_config(INSTANCE['yolov5_ins']))
cfg.model.bbox_head.head_module.num_classes = 3
with tempfile.TemporaryDirectory() as tmp:
    ins = build_detector(cfg, yolov5_ins_with_demo_weights(cfg, tmp + '/ins.pth'))
ins.dataset_meta = dict(classes=CLASSES)
ins.eval()
size = 320
rgb, _ = render_image(np.random.default_rng(7), size, size, 4, (48, 110))
bgr = torch.from_numpy(np.ascontiguousarray(rgb[..., ::-1])).permute(2, 0, 1)
meta = dict(ori_shape=(size, size), img_shape=(size, size), scale_factor=(1.0, 1.0),
            pad_param=np.zeros(4, np.float32), batch_input_shape=(size, size))
data = ins.data_preprocessor(dict(inputs=[bgr], data_samples=[DetDataSample(metainfo=meta)]), False)
cam = BoxCAM(ins, 'gradcam', score_thr=0.3, topk=4)
(result, ) = cam(data['inputs'], [meta])
print(len(result), result.detections.scores, result.detections.labels, result.reasons,
      [int(m.sum()) for m in result.detections.masks])
out = draw_box_cams(rgb, result, meta, CLASSES, ncols=2)
cv2.imwrite(sys.argv[1], cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
