"""Faithfulness metrics (engine/cam/faithfulness.py): deletion/insertion on the trained demo
detector, the value of a box lost after masking, pointing game and energy, and BoxAMVisHook's
AUC scalars read back from TensorBoard."""
import math

import numpy as np
import pytest
import torch
from mmengine.runner import Runner

from helpers.runner import read_events, tiny_train_cfg
from mmyolo_vis_hooks.engine.cam import BoxCAM
from mmyolo_vis_hooks.engine.detectors import explainable_detector
from mmyolo_vis_hooks.engine.cam.compose import box_masks
from mmyolo_vis_hooks.engine.cam.faithfulness import (Faithfulness, baseline_image,
                                                      content_region, curve_auc,
                                                      energy_shares, ground_truth_scores,
                                                      match_ground_truth, pointing_hits,
                                                      saliency_ranks)
from mmyolo_vis_hooks.engine.core.geometry import box_iou
from mmyolo_vis_hooks.hooks import BoxAMVisHook

LETTERBOX_META = dict(ori_shape=(157, 278), scale_factor=(1.1511, 1.1465),
                      pad_param=np.array([70., 70., 0., 0.], np.float32),
                      batch_input_shape=(320, 320))


# ---------------------------------------------------------------------- no detector
def test_content_region_leaves_the_letterbox_padding_out():
    assert content_region(LETTERBOX_META, (320, 320)) == (70, 250, 0, 320)
    assert content_region(None, (64, 96)) == (0, 64, 0, 96)


def test_ranks_order_content_pixels_and_break_ties_at_random():
    maps = torch.zeros(2, 6, 8)
    maps[0, 2, 3] = 1.0  # the single most salient pixel of map 0
    maps[0, 4, 5] = 0.5
    region = (1, 5, 0, 8)  # rows 0 and 5 are "padding"
    ranks = saliency_ranks(maps, region)
    assert ranks[0, 2, 3] == 0 and ranks[0, 4, 5] == 1
    assert (ranks[:, 0] == 32).all() and (ranks[:, 5] == 32).all()  # never perturbed
    content = ranks[1, 1:5].flatten()
    assert sorted(content.tolist()) == list(range(32))
    # A flat map is not removed row by row: its first 8 pixels are spread over the rows.
    assert len(set((content < 8).view(4, 8).nonzero()[:, 0].tolist())) > 1
    assert torch.equal(ranks, saliency_ranks(maps, region))  # fixed seed: reproducible


def test_baselines_change_only_the_content():
    image = torch.rand(3, 20, 30, generator=torch.Generator().manual_seed(0))
    region = (5, 15, 0, 30)
    for kind in ('blur', 'mean'):
        base = baseline_image(image, region, kind, 0.2)
        assert torch.equal(base[:, :5], image[:, :5]) and torch.equal(base[:, 15:], image[:, 15:])
        inner = base[:, 5:15]
        assert inner.std() < image[:, 5:15].std() / 2  # smoothed (blur) or flat (mean)
    mean = baseline_image(image, region, 'mean')[:, 5:15]
    assert torch.allclose(mean, image[:, 5:15].mean(dim=(1, 2), keepdim=True).expand_as(mean))


def test_pointing_game_tolerance_and_empty_map():
    maps = torch.zeros(4, 100, 100)
    maps[0, 50, 50] = 1.0  # inside the box
    maps[1, 50, 70] = 1.0  # 10 px right of it: within Zhang et al.'s 15 px
    maps[2, 50, 90] = 1.0  # 30 px right of it: a miss
    boxes = torch.tensor([[40., 40., 60., 60.]]).repeat(4, 1)
    assert pointing_hits(maps, boxes) == [True, True, False, False]  # map 3 has no energy
    assert pointing_hits(maps, boxes, tolerance=0) == [True, False, False, False]


def test_energy_share_inside_the_box():
    maps = torch.zeros(2, 10, 10)
    maps[0, :, :5] = 1.0  # half the energy left of x = 5
    shares = energy_shares(maps, torch.tensor([[0., 0., 5., 10.]] * 2))
    assert shares[0] == pytest.approx(1.0) and shares[1] == 0.0
    maps[0, :, 5:] = 1.0
    assert energy_shares(maps[:1], torch.tensor([[0., 0., 5., 10.]]))[0] == pytest.approx(0.5)


def test_ground_truth_matching_by_class_and_iou():
    gt = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)
    dets = np.array([[1, 1, 10, 10], [21, 20, 40, 41], [0, 0, 10, 10], [50, 50, 60, 60]])
    labels = np.array([0, 1, 1, 0])
    matched = match_ground_truth(dets, labels, gt, np.array([0, 1]))
    assert matched.tolist() == [0, 1, -1, -1]  # det 2: wrong class; det 3: nothing there
    maps = torch.zeros(4, 64, 64)
    maps[:, 5, 5] = 1.0
    scores = ground_truth_scores(maps, torch.as_tensor(dets, dtype=torch.float32), labels, gt,
                                 [0, 1])
    assert scores.pointing == [1.0, 0.0, None, None]
    assert scores.energy == [1.0, 0.0, None, None]


def test_auc_of_a_constant_and_a_linear_curve():
    fractions = torch.linspace(0, 1, 5)
    curves = torch.stack([torch.full((5, ), 0.8), 1 - fractions])
    assert curve_auc(curves, fractions).tolist() == pytest.approx([0.8, 0.5])


# ---------------------------------------------------------------------- the demo detector
def _explained(model, load_image, path):
    """(inputs, meta, BoxCAMResult) of a generated val image: its 3 best boxes, LayerCAM."""
    data = load_image(path, 0)
    processed = model.data_preprocessor(data, False)
    meta = dict(processed['data_samples'][0].metainfo)
    result, = BoxCAM(model, 'layercam', topk=3, score_thr=0.3)(processed['inputs'])
    return processed['inputs'], meta, result


@pytest.mark.slow
def test_the_box_itself_beats_a_uniform_map_and_another_object(demo_detector, demo_image_loader,
                                                               shapes_data):
    """A map that is the box itself removes (reveals) the object first: its deletion AUC is
    lower and its insertion AUC higher than a uniform map's (random order) and than the map
    of another detected object, box by box, on two generated val images."""
    faith = Faithfulness(demo_detector, steps=6)
    rows = []
    for name in ('val_00000.png', 'val_00001.png'):
        inputs, meta, result = _explained(demo_detector, demo_image_loader, shapes_data + 'val/' + name)
        det = result.detections
        assert len(det) >= 2, name
        own = box_masks(det.boxes, inputs.shape[-2:]).float()
        maps = dict(own=own, uniform=torch.ones_like(own), other=own.roll(1, dims=0))
        curves = {kind: faith(inputs, det, m, meta) for kind, m in maps.items()}
        for kind, c in curves.items():
            assert torch.isfinite(c.deletion).all() and torch.isfinite(c.insertion).all()
            assert ((c.deletion >= 0) & (c.deletion <= 1)).all(), kind
        rows.append({kind: (c.deletion_auc, c.insertion_auc) for kind, c in curves.items()})
        # Both curves end on the unperturbed image's own scores (the same forward).
        start = curves['own'].deletion[:, 0]
        assert torch.equal(start, curves['own'].insertion[:, -1])
        assert torch.allclose(start, det.scores.float(), atol=0.02)
    for row in rows:
        own_del, own_ins = row['own']
        for kind in ('uniform', 'other'):
            del_auc, ins_auc = row[kind]
            assert (own_del < del_auc).all(), (kind, own_del, del_auc)
            assert (own_ins > ins_auc).all(), (kind, own_ins, ins_auc)
    mean = {kind: torch.cat([r[kind][0] for r in rows]).mean() for kind in rows[0]}
    assert mean['own'] < 0.5 * mean['uniform'], mean  # by a wide margin, not by noise


@pytest.mark.slow
def test_a_box_lost_after_masking_scores_zero_and_the_model_is_untouched(demo_detector,
                                                                         demo_image_loader,
                                                                         shapes_data):
    """With the mean baseline the fully deleted image is one flat colour. A box of which the
    detector has no candidate of its class overlapping it there (checked on its own
    predictions) gets the documented value 0 at that end of both curves (never NaN/-inf); a
    box still found gets its score. The model's state and the RNG are unchanged."""
    inputs, meta, result = _explained(demo_detector, demo_image_loader, shapes_data + 'val/val_00002.png')
    det = result.detections
    faith = Faithfulness(demo_detector, steps=4, baseline='mean')
    flat = baseline_image(inputs[0], content_region(meta, inputs.shape[-2:]), 'mean')
    with torch.no_grad():
        preds = explainable_detector(demo_detector).candidates(flat[None])
    candidate_thr = demo_detector.bbox_head.test_cfg['score_thr']
    ious = box_iou(preds.boxes[0], det.boxes)  # (N, K)
    lost = [not ((preds.scores[0, :, label] > candidate_thr) & (ious[:, k] >= 0.5)).any()
            for k, label in enumerate(det.labels.tolist())]
    assert any(lost), 'every box is still detected on the flat image'
    demo_detector.train()  # a state to restore
    state = {key: v.clone() for key, v in demo_detector.state_dict().items()}
    modes = [m.training for m in demo_detector.modules()]
    rng = torch.get_rng_state()
    try:
        curves = faith(inputs, det, result.box_maps(), meta)
        assert [m.training for m in demo_detector.modules()] == modes
    finally:
        demo_detector.eval()
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, demo_detector.state_dict()[key]) for key, v in state.items())
    for k, is_lost in enumerate(lost):
        end = float(curves.deletion[k, -1])
        assert end == float(curves.insertion[k, 0])  # the same flat image
        assert (end == 0.0) if is_lost else (end > candidate_thr), (k, end)
    assert (curves.deletion[:, 0] > 0.3).all()
    assert all(math.isfinite(v) for v in curves.deletion_auc.tolist() +
               curves.insertion_auc.tolist())


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(log_faithfulness='yes'), TypeError, 'log_faithfulness must be a bool'),
    (dict(faithfulness_steps=1), ValueError, 'faithfulness_steps must be an int >= 2'),
])
def test_hook_faithfulness_options_are_checked_at_construction(kwargs, error, message):
    with pytest.raises(error, match=f'^BoxAMVisHook: {message}'):
        BoxAMVisHook(**kwargs)


@pytest.mark.slow
def test_hook_logs_deletion_and_insertion_auc(tmp_path, shapes_data, demo_checkpoint):
    cfg = tiny_train_cfg(shapes_data, str(tmp_path / 'work'), epochs=1, custom_hooks=[
        dict(type='BoxAMVisHook', num_images=1, method=['layercam', 'gradcam'], topk=2,
             log_faithfulness=True, faithfulness_steps=4, strict=True)])
    cfg.load_from = demo_checkpoint
    runner = Runner.from_cfg(cfg)
    runner.load_or_resume()
    runner.val_loop  # noqa: B018 - builds the loop whose dataset the hook draws from
    hook = next(h for h in runner.hooks if isinstance(h, BoxAMVisHook))
    hook.before_run(runner)
    hook.after_val_epoch(runner)
    runner.visualizer.close()
    acc = read_events(str(tmp_path / 'work'))
    for method in ('layercam', 'gradcam'):
        deletion = acc.Scalars(f'boxam/deletion_auc/{method}')
        insertion = acc.Scalars(f'boxam/insertion_auc/{method}')
        assert [e.step for e in deletion] == [0] and [e.step for e in insertion] == [0]
        assert 0.0 <= deletion[0].value < insertion[0].value <= 1.0, method
