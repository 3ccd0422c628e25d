"""YOLOX-pose's head with the test config it needs to predict (the pose demo detector).

MMYOLO 0.6's ``YOLOXPoseHead.predict_by_feat`` reads ``cfg.max_per_img`` from its ``cfg``
argument, which ``BaseDenseHead.predict`` (what ``model.predict``, hence validation, calls)
leaves None: validation fails. ``YOLOXPoseHeadWithTestCfg`` passes the head's own
``test_cfg``; nothing else changes (its ``predict_by_feat`` and ``decode_pose`` are the
packaged head's, so the CAM engine treats it as a ``YOLOXPoseHead``, and its weights are the
same keys). Importing this module registers it into MMEngine's root ``MODELS`` (every scope
finds it); configs import it with ``custom_imports``.
"""
from mmengine.registry import MODELS
from mmyolo.models.dense_heads import YOLOXPoseHead


@MODELS.register_module(force=True)
class YOLOXPoseHeadWithTestCfg(YOLOXPoseHead):
    """``YOLOXPoseHead`` whose ``predict`` gives ``predict_by_feat`` its ``test_cfg``."""

    def predict(self, x, batch_data_samples, rescale: bool = False):
        batch_img_metas = [data_samples.metainfo for data_samples in batch_data_samples]
        outs = self(x)
        return self.predict_by_feat(*outs, batch_img_metas=batch_img_metas, cfg=self.test_cfg,
                                    rescale=rescale)
