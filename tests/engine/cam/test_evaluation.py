"""The faithfulness evaluation as a library (engine/cam/evaluation.py): options refused before
any model work, the best method chosen from the numbers, and evaluate_methods on the trained
demo detector called directly (paths and collated batches alike)."""
import numpy as np
import pytest

from mmyolo_vis_hooks.engine.cam.evaluation import (METRICS, REFERENCES, EvaluationOptions,
                                                    EvaluationReport, GroundTruth,
                                                    coco_ground_truth, evaluate_methods)


class _Untouchable:
    """A stand-in model that fails the test on any use: the checks come first."""

    def __getattribute__(self, name):
        raise AssertionError(f'model.{name} used before the options were checked')

    def __call__(self, *args, **kwargs):
        raise AssertionError('model called before the options were checked')


@pytest.mark.parametrize('call, error, message', [
    (dict(steps=1), ValueError, r'^evaluate_methods: steps must be an int >= 2'),
    (dict(methods=['gradcam', 'scorecam']), ValueError, r"method must be one of .*'gradcam'"),
    (dict(topk='3'), TypeError, r'topk must be an int \(<= 0 for all boxes\), got'),
    (dict(score_thr=1.5), ValueError, r'score_thr must be a number in \[0, 1\], got 1.5'),
    (dict(max_images=0), ValueError, r'max_images must be a positive int, got 0'),
    (dict(methods=['drise'], cam_options=dict(keep_prob=1.5)), ValueError,
     r'keep_prob must be a number in \(0, 1\)'),
    (dict(cam_options=dict(num_mask=10)), ValueError,
     r'unknown BoxCAM option\(s\) num_mask; accepted: target_layers, .*num_masks'),
    (dict(stepz=4), TypeError, r'unknown option\(s\) stepz; accepted: score_thr, .*steps'),
    (dict(images=[]), ValueError, r'images is empty'),
    (dict(images=['a.png']), ValueError, r'pass load_image'),
    (dict(images=[{}, {}], ground_truth=[None]), ValueError,
     r'one entry \(or None\) per image: 2 image\(s\), got 1 entries'),
    (dict(images=[{}], ground_truth=[(np.zeros((2, 4)), [0])]), ValueError,
     r'ground_truth\[0\]: 2 boxes but 1 labels'),
])
def test_bad_options_are_refused_before_any_model_work(call, error, message):
    call = {'images': [{}], 'methods': ['gradcam'], **call}
    with pytest.raises(error, match=message):
        evaluate_methods(_Untouchable(), **call)


def test_tools_check_the_options_under_their_own_name():
    options = EvaluationOptions(steps=1)
    with pytest.raises(ValueError, match=r'^boxam_eval: steps must be an int >= 2'):
        options.check(['gradcam'], owner='boxam_eval')
    assert EvaluationOptions().check(['LayerCAM', 'gradcam', 'layercam']) == ['layercam',
                                                                              'gradcam']


def _record(deletion, insertion, pointing=None, seconds=None):
    return dict(image='a.png', box=0, label=0, score=0.9, unreliable=False,
                deletion_auc=deletion, insertion_auc=insertion, pointing_game=pointing,
                energy_in_gt=None, seconds_per_box=seconds,
                deletion_curve=np.array([0.9, deletion, 0.1], np.float32),
                insertion_curve=np.array([0.1, insertion, 0.9], np.float32))


def test_best_methods_follow_the_numbers_and_skip_the_calibration_rows():
    report = EvaluationReport({
        'gradcam': [_record(0.2, 0.7, 1.0, 0.5), _record(0.4, 0.9, 0.0, 0.5)],  # 0.3, 0.8
        'layercam': [_record(0.1, 0.4, 1.0, 0.1), _record(0.3, 0.4, None, 0.3)],  # 0.2, 0.4
        '(box)': [_record(0.0, 1.0, 1.0), _record(0.0, 1.0, 1.0)],  # better, never best
    }, fractions=[0.0, 0.5, 1.0])
    layercam = report.summary['layercam']
    assert layercam['boxes'] == 2 and layercam['gt_matched'] == 1
    assert layercam['deletion_auc_mean'] == pytest.approx(0.2)
    assert layercam['deletion_auc_std'] == pytest.approx(np.std([0.1, 0.3], ddof=1))
    assert layercam['pointing_game_std'] == 0.0  # one value
    assert layercam['energy_in_gt_mean'] is None and layercam['energy_in_gt_std'] is None
    assert layercam['deletion_curve'] == pytest.approx([0.9, 0.2, 0.1])
    assert report.best_methods() == dict(deletion_auc='layercam', insertion_auc='gradcam',
                                         pointing_game='layercam', seconds_per_box='layercam')
    table = report.table().splitlines()
    assert len(table) == 2 + 3 and table[3].startswith('| layercam | 2 | 0.200 ± 0.141 |')
    assert table[4].endswith('| - | - |')  # (box): no energy, no time


# ---------------------------------------------------------------------- the demo detector
@pytest.mark.slow
def test_evaluate_methods_on_the_demo_detector(demo_detector, demo_image_loader, shapes_data):
    paths, truth = coco_ground_truth(shapes_data + 'annotations/val.json',
                                     class_names=demo_detector.dataset_meta['classes'])
    assert len(paths) == len(truth) == 8 and isinstance(truth[0], GroundTruth)
    # A collated batch is used as is; a path goes through load_image.
    images = [demo_image_loader(paths[0], 0)] + paths[1:]
    report = evaluate_methods(demo_detector, images, ['layercam', 'GradCAM'],
                              load_image=demo_image_loader, ground_truth=truth,
                              max_images=2, topk=2, steps=3, eval_batch_size=8)
    assert list(report.summary) == ['layercam', 'gradcam']
    assert report.fractions == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    assert report.settings['images'] == 2 and report.settings['steps'] == 3
    assert report.settings['target'] == 'logit' and report.settings['num_masks'] == 1000
    for method, entry in report.summary.items():
        rows = report.records[method]
        assert entry['boxes'] == len(rows) == 4  # 2 images x top 2
        assert {r['image'] for r in rows} == {'val_00000.png', 'val_00001.png'}
        assert entry['gt_matched'] == 4 and entry['unreliable'] == 0
        for key, _, _ in METRICS:
            assert entry[f'{key}_mean'] == pytest.approx(np.mean([r[key] for r in rows]))
        assert 0 <= entry['deletion_auc_mean'] <= 1 and 0 <= entry['insertion_auc_mean'] <= 1
        assert len(entry['deletion_curve']) == len(entry['insertion_curve']) == 4
        assert entry['deletion_curve'][0] > entry['deletion_curve'][-1]
    # The best method per metric has the best mean (ties: either).
    best = report.best_methods()
    assert set(best) == {key for key, _, _ in METRICS}  # ground truth given: all measured
    for key, _, better in METRICS:
        means = [entry[f'{key}_mean'] for entry in report.summary.values()]
        assert report.summary[best[key]][f'{key}_mean'] == (
            min(means) if better == 'lower' else max(means)), key
    assert not set(REFERENCES) & set(report.summary)  # reference=False: no calibration rows
