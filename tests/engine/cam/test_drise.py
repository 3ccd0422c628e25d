"""D-RISE (engine/cam/drise.py, methods.DRISE) on the trained demo detector: agreement with
xaitk-saliency's DRISEScoring on identical masks and detections, box-local maps, the masks'
generation, option checks, model/RNG state, and a run through tools/boxam_vis.py.
"""
import os.path as osp
import random

import numpy as np
import pytest
import torch

from helpers import DEMO_CONFIG
from mmyolo_vis_hooks.cli import boxam_vis
from mmyolo_vis_hooks.engine.cam import BoxCAM
from mmyolo_vis_hooks.engine.cam.compose import box_masks
from mmyolo_vis_hooks.engine.cam.drise import (RiseMasks, balanced_grids, drise_maps,
                                                drise_weights)
from mmyolo_vis_hooks.engine.detectors.base import ExplainedBoxes, FlatPredictions
from mmyolo_vis_hooks.engine.cam.methods import DRISE
from mmyolo_vis_hooks.hooks import BoxAMVisHook
from mmyolo_vis_hooks.testing.cam_reference import demo_input

# Small enough for the test budget; grid 8 suits the demo's 50-100 px shapes at 320 px.
NUM_MASKS, GRID, KEEP, BATCH, SEED = 200, 8, 0.5, 25, 0


def rng_states():
    return (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())


def assert_same_rng(before):
    after = rng_states()
    assert torch.equal(before[0], after[0])
    assert np.array_equal(before[1], after[1])
    assert before[2] == after[2]


# ---------------------------------------------------------------- fast: masks and options
def test_masks_are_the_papers_smooth_shifted_grids_and_leave_the_global_rng_alone():
    before = rng_states()
    masks = RiseMasks(20, 4, 0.5, (48, 40), seed=7)
    batched = torch.cat(list(masks.batches(6)))  # memory per batch; same masks in any batching
    assert_same_rng(before)
    assert batched.shape == (20, 48, 40)
    assert torch.equal(batched, masks.masks(0, 20))
    assert torch.equal(batched, RiseMasks(20, 4, 0.5, (48, 40), seed=7).masks(0, 20))
    assert not torch.equal(batched, RiseMasks(20, 4, 0.5, (48, 40), seed=8).masks(0, 20))
    assert float(batched.min()) >= 0 and float(batched.max()) <= 1
    # Bilinear upsampling: values between 0 and 1 (not a hard grid), neighbours close.
    assert ((batched > 0.05) & (batched < 0.95)).float().mean() > 0.2
    assert float((batched[:, 1:] - batched[:, :-1]).abs().max()) <= 1 / 12 + 1e-6  # cell 12
    # Mask i is grid i upsampled to (s + 1) * cell and cropped at its shift.
    cell = (12, 10)
    up = torch.nn.functional.interpolate(masks.grids[:1, None].float(), size=(60, 50),
                                         mode='bilinear', align_corners=False)[0, 0]
    dy, dx = masks.shifts[0].tolist()
    assert 0 <= dy < cell[0] and 0 <= dx < cell[1]
    assert torch.equal(batched[0], up[dy:dy + 48, dx:dx + 40])
    # Keep probability: the share of kept cells.
    grids = RiseMasks(400, 8, 0.3, (16, 16), seed=0).grids
    assert abs(float(grids.float().mean()) - 0.3) < 0.02


def test_unseeded_masks_differ_and_leave_the_global_rng_alone():
    before = rng_states()
    first, second = (RiseMasks(4, 4, 0.5, (16, 16), seed=None).grids for _ in range(2))
    assert_same_rng(before)
    assert not torch.equal(first, second)


def test_weights_are_iou_times_cosine_times_objectness_maximised_over_predictions():
    target = torch.tensor([[0., 0., 10., 10.]])
    vectors = torch.tensor([[[1., 0.], [0.6, 0.8], [1., 0.]]])
    boxes = torch.tensor([[[0., 0., 10., 10.], [0., 0., 10., 10.], [0., 0., 10., 5.]]])
    objectness = torch.tensor([[0.25, 1.0, 1.0]])
    weights = drise_weights(target, torch.tensor([[2., 0.]]), boxes, vectors, objectness)
    # candidates: 1 * 1 * 0.25, 1 * 0.6 * 1, 0.5 * 1 * 1
    assert torch.allclose(weights, torch.tensor([[0.6]]))


def test_balanced_blocks_are_an_orthogonal_array_of_strength_3_and_balanced_shifts():
    """A whole block (2^9 masks for 16 x 16 cells): every cell, pair and triple of cells takes
    each of its values equally often; shifts take each value equally often per 20 masks."""
    masks = RiseMasks(512, 16, 0.5, (320, 320), seed=3, sampling='balanced')
    centred = masks.grids.flatten(1).double() * 2 - 1  # +-1
    assert torch.equal(centred.sum(dim=0), torch.zeros(256, dtype=torch.float64))
    assert torch.equal(centred.T @ centred, 512 * torch.eye(256, dtype=torch.float64))
    triples = torch.einsum('na,nb,nc->abc', centred[:, :24], centred[:, :24], centred[:, :24])
    assert float(triples.abs().max()) == 0
    # Plain random masks have none of it.
    plain = RiseMasks(512, 16, 0.5, (320, 320), seed=3).grids.flatten(1).double() * 2 - 1
    assert float((plain.T @ plain - 512 * torch.eye(256)).abs().max()) > 50
    for side in range(2):
        assert torch.equal(torch.bincount(masks.shifts[:20, side], minlength=20),
                           torch.ones(20, dtype=torch.long))
    # Other keep probabilities: each cell kept exactly p x block times per block.
    grids = balanced_grids(30, 4, 0.3, torch.Generator().manual_seed(0)).flatten(1)
    assert torch.equal(grids[:10].sum(dim=0), torch.full((16, ), 3))
    assert torch.equal(grids[10:20].sum(dim=0), torch.full((16, ), 3))


@pytest.mark.parametrize('keep_prob', [0.5, 0.3])
def test_each_balanced_mask_alone_is_drawn_as_a_random_one(keep_prob):
    """Over 600 seeds, mask 5 of a balanced set: cells kept with probability p, independent
    of each other (pair frequencies p^2), shifts uniform: the paper's distribution."""
    grids = torch.stack([RiseMasks(8, 4, keep_prob, (32, 32), seed=seed, sampling='balanced')
                         .grids[5].flatten() for seed in range(600)]).double()
    tolerance = 4 * (keep_prob * (1 - keep_prob) / 600) ** 0.5
    assert float((grids.mean(dim=0) - keep_prob).abs().max()) < tolerance
    pairs = (grids.T @ grids / 600)[~torch.eye(16, dtype=torch.bool)]
    assert float((pairs - keep_prob ** 2).abs().max()) < 4 * (keep_prob ** 2 / 600) ** 0.5 + 0.01
    shifts = torch.stack([RiseMasks(8, 4, keep_prob, (32, 32), seed=seed, sampling='balanced')
                          .shifts[5] for seed in range(600)])
    counts = torch.bincount(shifts[:, 0], minlength=8).double()
    assert float((counts / 600 - 1 / 8).abs().max()) < 4 * (1 / 8 * 7 / 8 / 600) ** 0.5


class _TinyDetector:
    """One candidate per masked image, on the explained box: its objectness is a nonlinear
    function of the visible share of two regions (an object and its context), as a
    detector's is; every map D-RISE gives for it is known in expectation only."""

    def __init__(self):
        self.box = torch.tensor([[8., 8., 20., 20.]])

    def __call__(self, batch: torch.Tensor) -> FlatPredictions:
        seen = batch[:, 0]
        obj = seen[:, 8:20, 8:20].mean(dim=(1, 2))
        context = seen[:, 20:28, 4:16].mean(dim=(1, 2))
        objectness = (obj ** 3 * (0.5 + 0.5 * context)).clamp(0, 1)[:, None]
        n = len(batch)
        scores = torch.ones((n, 1, 1))
        return FlatPredictions(scores=scores, log_scores=scores.log(), logits=scores,
                               boxes=self.box.expand(n, 1, 4), levels=torch.zeros(1),
                               objectness=objectness)


def _tiny_maps(sampling: str, seed: int, num: int = 64, normalize: str = 'expected'):
    detector = _TinyDetector()
    image = torch.ones((3, 32, 32))
    dets = ExplainedBoxes(detector.box, torch.ones(1), torch.zeros(1, dtype=torch.long),
                          torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    masks = RiseMasks(num, 4, 0.5, (32, 32), seed, sampling=sampling)
    return drise_maps(image, dets, detector(image[None]), detector, masks, 256, normalize)[0]


def test_balanced_masks_give_the_same_map_in_expectation_with_less_variance():
    """The tiny detector, 64 masks, 120 seeds per sampling: the mean maps agree within their
    standard errors (the paper's normalisation is a mean of per-mask terms, each with the
    same distribution under both samplings), and the balanced maps vary less."""
    random = torch.stack([_tiny_maps('random', seed) for seed in range(120)]).double()
    balanced = torch.stack([_tiny_maps('balanced', seed) for seed in range(120)]).double()
    error = ((random.var(dim=0) + balanced.var(dim=0)) / 120).sqrt()
    z = (random.mean(dim=0) - balanced.mean(dim=0)) / error
    assert float(z.abs().mean()) < 1.2 and float(z.abs().max()) < 5  # ~N(0, 1): mean |z| 0.8
    ratio = float(balanced.var(dim=0).mean() / random.var(dim=0).mean())
    assert ratio < 0.5, ratio
    # xaitk's normalisation (by coverage): same map in the limit, again less noise.
    random = torch.stack([_tiny_maps('random', seed, 64, 'coverage') for seed in range(50)])
    balanced = torch.stack([_tiny_maps('balanced', seed, 64, 'coverage') for seed in range(50)])
    limit = _tiny_maps('random', 1000, 4096, 'coverage')
    assert float((random.mean(dim=0) - limit).abs().max()) < 0.02  # maps 0.13-0.33
    assert float((balanced.mean(dim=0) - limit).abs().max()) < 0.02
    assert float(balanced.var(dim=0).mean() / random.var(dim=0).mean()) < 0.5


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(num_masks=0), ValueError, 'num_masks must be a positive int, got 0'),
    (dict(num_masks=10.0), TypeError, 'num_masks must be a positive int'),
    (dict(grid_size=0), ValueError, 'grid_size must be a positive int'),
    (dict(keep_prob=1.0), ValueError, r'keep_prob must be a number in \(0, 1\), got 1.0'),
    (dict(keep_prob='0.5'), TypeError, r'keep_prob must be a number in \(0, 1\)'),
    (dict(batch_size=0), ValueError, 'batch_size must be a positive int'),
    (dict(seed=-1), ValueError, 'mask_seed must be an int >= 0 or None'),
    (dict(normalize='max'), ValueError, "normalize must be one of 'coverage', 'expected'"),
    (dict(missing_objectness=1), TypeError, "missing_objectness must be one of"),
    (dict(sampling='sobol'), ValueError, "sampling must be one of 'random', 'balanced'"),
])
def test_bad_options_are_refused_at_construction(kwargs, error, message):
    with pytest.raises(error, match=message):
        DRISE(**kwargs)


def test_engine_hook_and_tool_refuse_bad_drise_options_before_any_model(capsys):
    with pytest.raises(ValueError, match=r'^BoxCAM: keep_prob must be a number in \(0, 1\)'):
        BoxCAM.check_options('drise', keep_prob=0.0)
    with pytest.raises(TypeError, match='^BoxAMVisHook: grid_size must be a positive int'):
        BoxAMVisHook(method='drise', grid_size=2.5)
    with pytest.raises(ValueError, match='^BoxAMVisHook: num_masks must be a positive int'):
        BoxAMVisHook(method=['gradcam', 'drise'], num_masks=-3)
    with pytest.raises(ValueError, match="^BoxAMVisHook: sampling must be one of 'random'"):
        BoxAMVisHook(method='drise', mask_sampling='sobol')
    with pytest.raises(SystemExit) as exit_info:
        boxam_vis.main(['unused.png', DEMO_CONFIG, '--method', 'drise', '--keep-prob', '1.5'],
                       prog='boxam_vis.py')
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert 'boxam_vis.py: error: ' in err and 'keep_prob must be a number in (0, 1)' in err
    assert 'Traceback' not in err


# ---------------------------------------------------------------- slow: the demo detector
@pytest.fixture(scope='module', params=['random', 'balanced'])
def drise_run(demo_detector, request):
    """ONE D-RISE run per mask sampling on a generated 320-px shapes image, recording what
    every forward of the engine predicted (the unmasked image first, then each mask batch: the
    detections the xaitk reference gets), with the model and RNG states checked."""
    model = demo_detector
    inputs = demo_input(model, 320, seed=5)
    model.train()  # a mode the engine must restore
    params = [p.detach().clone() for p in model.parameters()]
    buffers = [b.detach().clone() for b in model.buffers()]
    modes = [m.training for m in model.modules()]
    before = rng_states()
    method = DRISE(NUM_MASKS, GRID, KEEP, BATCH, SEED, sampling=request.param)
    cam = BoxCAM(model, method, topk=6)
    recorded = []
    predict = cam._predict

    def recording_predict(batch, metas=None):
        preds = predict(batch, metas)
        recorded.append(preds)
        return preds
    cam._predict = recording_predict
    try:
        (result, ) = cam(inputs)
        state = dict(
            rng_kept=_same_rng(before, rng_states()),
            modes_kept=[m.training for m in model.modules()] == modes,
            params_kept=all(torch.equal(a, b) for a, b in zip(params, model.parameters())),
            buffers_kept=all(torch.equal(a, b) for a, b in zip(buffers, model.buffers())),
            no_grads=all(p.grad is None for p in model.parameters()))
    finally:
        model.eval()
    return dict(inputs=inputs, result=result, state=state, base=recorded[0],
                recorded=recorded[1:], masks=method.masks(tuple(inputs.shape[-2:])))


def _same_rng(before, after) -> bool:
    return (torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1])
            and before[2] == after[2])


@pytest.mark.slow
def test_drise_keeps_model_and_rng_state_and_fills_a_result(drise_run):
    assert drise_run['state'] == dict(rng_kept=True, modes_kept=True, params_kept=True,
                                      buffers_kept=True, no_grads=True)
    result = drise_run['result']
    assert result.method == 'drise' and result.layer_keys == ['input']
    assert len(result) >= 2 and result.reasons == [''] * len(result)
    # One forward of the image, then one per mask batch, serving every box.
    assert [p.scores.shape[0] for p in drise_run['recorded']] == \
        [BATCH] * (NUM_MASKS // BATCH) + [NUM_MASKS % BATCH] * bool(NUM_MASKS % BATCH)
    maps = result.box_maps()
    assert maps.shape == (len(result), 320, 320) and torch.isfinite(maps).all()


@pytest.mark.slow
def test_maps_agree_with_xaitk_drise_scoring_on_identical_masks_and_detections(drise_run):
    from xaitk_saliency.impls.gen_detector_prop_sal.drise_scoring import DRISEScoring
    dets, base, recorded = (drise_run['result'].detections, drise_run['base'],
                            drise_run['recorded'])

    def det_matrix(boxes, objectness, scores):  # xaitk's (4 + 1 + classes) rows
        return torch.cat([boxes, objectness[..., None], scores], dim=-1).double().numpy()

    # Every prior of every masked image is a proposal, as in the engine.
    perturbed = np.concatenate([det_matrix(p.boxes, p.objectness, p.scores)
                                for p in recorded])
    reference_dets = det_matrix(dets.boxes, base.objectness[0, dets.priors],
                                base.scores[0, dets.priors])
    masks = drise_run['masks'].masks(0, NUM_MASKS).double().numpy()
    reference = DRISEScoring().generate(reference_dets, perturbed, masks)
    ours = drise_run['result'].layer_maps[0].double().numpy()
    assert reference.shape == ours.shape
    for k in range(len(dets)):
        corr = np.corrcoef(ours[k].ravel(), reference[k].ravel())[0, 1]
        assert corr >= 0.99, (k, corr)


@pytest.mark.slow
def test_maps_of_two_distant_boxes_peak_inside_their_own_boxes(drise_run):
    result = drise_run['result']
    boxes = result.detections.boxes
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    distance = torch.cdist(centres, centres)
    first, second = divmod(int(distance.argmax()), len(boxes))
    inside = box_masks(boxes, (320, 320))
    assert not (inside[first] & inside[second]).any()  # distant: disjoint boxes
    maps = result.box_maps()
    for own in (first, second):
        peak = int(maps[own].flatten().argmax())
        assert inside[own].flatten()[peak], own
        assert float(maps[own][inside[own]].mean()) > 2 * float(maps[own][~inside[own]].mean())


@pytest.mark.slow
def test_tool_draws_drise_maps(tmp_path, shapes_data, demo_checkpoint, capsys):
    image = shapes_data + 'val/val_00001.png'
    boxam_vis.main([image, DEMO_CONFIG, demo_checkpoint, '--method', 'drise', '--topk', '2',
                    '--num-masks', '48', '--batch-size', '24', '--grid-size', '8',
                    '--out-dir', str(tmp_path / 'out')])
    assert 'wrote 1 image(s)' in capsys.readouterr().out
    assert osp.isfile(tmp_path / 'out' / 'val_00001.png')


@pytest.mark.slow
@pytest.mark.parametrize('family', ['yolov5', 'yolov6', 'yolox', 'rtmdet', 'yolov7', 'yolov8',
                                    'ppyoloe'])
def test_every_family(family):
    """Every MMYOLO family: objectness where the head has it (YOLOv5, YOLOv7, YOLOX), finite
    maps of the input's size, no target layer needed (random-init models: only the plumbing
    is checked)."""
    from helpers.mmyolo_models import INPUT, random_model
    model = random_model(family)
    inputs = torch.rand(INPUT, generator=torch.Generator().manual_seed(1))[:1] * 2 - 1
    cam = BoxCAM(model, 'drise', target_layers=['no.such.layer'], score_thr=0.0, topk=2,
                 num_masks=8, grid_size=4, batch_size=8)
    assert cam.target_layers == [] and cam.probe_target_layers() == {}
    (result, ) = cam(inputs)
    objectness = cam._predict(inputs).objectness
    assert (objectness is not None) == (family in ('yolov5', 'yolov7', 'yolox'))
    assert len(result) == 2 and result.layer_maps[0].shape == (2, *INPUT[2:])
    assert torch.isfinite(result.layer_maps[0]).all()
    assert float(result.layer_maps[0].min()) >= 0
