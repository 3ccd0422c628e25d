"""Deterministic synthetic shape detection data in COCO format.

Every image is drawn from its own random stream derived from ``(seed, split, index)``, so a
dataset is reproducible byte for byte and any single image can be regenerated alone.
Images vary in size and aspect ratio so that MMYOLO's letterbox really pads them.
"""
import json
import os
import os.path as osp
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

CLASSES: Tuple[str, ...] = ('circle', 'square', 'triangle')

# Saturated colours that stay distinct from the muted backgrounds.
PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (230, 40, 40), (40, 200, 60), (40, 80, 230), (240, 200, 30),
    (200, 50, 220), (30, 210, 220), (250, 140, 20), (245, 245, 245))
# Vertices of a circle's polygon outline.
CIRCLE_VERTICES = 32


@dataclass(frozen=True)
class SplitSpec:
    """What one split looks like.

    Args:
        num_images (int): Number of images.
        size_range (tuple[int, int]): Range of the longer image side in pixels.
        aspect_range (tuple[float, float]): Range of width / height.
        objects_range (tuple[int, int]): Range of objects per image (inclusive).
        object_size_range (tuple[int, int]): Range of object sizes in pixels.
    """
    num_images: int
    size_range: Tuple[int, int] = (256, 448)
    aspect_range: Tuple[float, float] = (0.5, 2.0)
    objects_range: Tuple[int, int] = (1, 6)
    object_size_range: Tuple[int, int] = (24, 96)


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def _image_size(rng: np.random.Generator, size_range: Tuple[int, int],
                aspect_range: Tuple[float, float]) -> Tuple[int, int]:
    """``(width, height)`` of a generated image: the longer side drawn from ``size_range``,
    width / height log-uniform in ``aspect_range``, the shorter side at least 32 px."""
    long_side = int(rng.integers(size_range[0], size_range[1] + 1))
    aspect = float(np.exp(rng.uniform(*np.log(aspect_range))))
    if aspect >= 1:
        return long_side, max(32, int(round(long_side / aspect)))
    return max(32, int(round(long_side * aspect))), long_side


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A muted, noisy, textured background (gradient + stripes + pixel noise)."""
    base = rng.integers(60, 170, size=3).astype(np.float32)
    tilt = rng.uniform(-40, 40, size=3).astype(np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (xs / max(width, 1) * np.cos(rng.uniform(0, np.pi)) +
            ys / max(height, 1) * np.sin(rng.uniform(0, np.pi)))
    img = base[None, None, :] + ramp[..., None] * tilt[None, None, :]
    period = rng.uniform(8, 40)
    angle = rng.uniform(0, np.pi)
    stripes = np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / period)
    img += stripes[..., None] * rng.uniform(4, 16)
    img += rng.normal(0, rng.uniform(4, 14), size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_shape(img: np.ndarray, rng: np.random.Generator, label: int, cx: float, cy: float,
                size: float) -> Tuple[Tuple[float, float, float, float], np.ndarray]:
    """Draws one filled shape (RGB). Returns its tight box as (x1, y1, x2, y2) and its outline
    as an ``(N, 2)`` polygon of the drawn pixels (a circle's as ``CIRCLE_VERTICES`` points on
    the drawn radius)."""
    color = tuple(int(c) for c in PALETTE[int(rng.integers(len(PALETTE)))])
    half = size / 2
    if CLASSES[label] == 'circle':
        center, radius = (int(round(cx)), int(round(cy))), int(round(half))
        cv2.circle(img, center, radius, color, -1, cv2.LINE_AA)
        angles = np.arange(CIRCLE_VERTICES) * 2 * np.pi / CIRCLE_VERTICES
        pts = np.stack([center[0] + radius * np.cos(angles),
                        center[1] + radius * np.sin(angles)], axis=1)
        x1, y1, x2, y2 = cx - half, cy - half, cx + half, cy + half
    else:
        if CLASSES[label] == 'square':
            corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * half
        else:
            corners = np.array([[0, -1], [0.866, 0.5], [-0.866, 0.5]], np.float64) * half
        theta = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        pts = corners @ rot.T + np.array([cx, cy])
        drawn = np.round(pts)
        cv2.fillPoly(img, [drawn.astype(np.int32)], color, cv2.LINE_AA)
        x1, y1 = pts.min(axis=0)
        x2, y2 = pts.max(axis=0)
        pts = drawn
    h, w = img.shape[:2]
    polygon = np.clip(pts, 0, [w, h])
    return (max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)), polygon


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def render_image(rng: np.random.Generator, height: int, width: int, num_objects: int,
                 object_size_range: Tuple[int, int]) -> Tuple[np.ndarray, List[dict]]:
    """Renders one RGB image with up to ``num_objects`` barely-overlapping shapes."""
    img = _background(rng, height, width)
    objects: List[dict] = []
    for _ in range(num_objects * 20):  # rejection sampling for placement
        if len(objects) == num_objects:
            break
        size = rng.uniform(*object_size_range)
        size = min(size, 0.9 * min(height, width))
        cx = rng.uniform(size / 2, width - size / 2)
        cy = rng.uniform(size / 2, height - size / 2)
        candidate = (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)
        if any(_iou(candidate, o['extent']) > 0.0 for o in objects):
            continue
        label = int(rng.integers(len(CLASSES)))
        box, polygon = _draw_shape(img, rng, label, cx, cy, size)
        objects.append(dict(label=label, bbox=box, extent=candidate, polygon=polygon))
    return img, objects


def _coco(images: List[dict], annotations: List[dict]) -> dict:
    return dict(
        images=images,
        annotations=annotations,
        categories=[dict(id=i + 1, name=n) for i, n in enumerate(CLASSES)])


def _write_png(path: str, rgb: np.ndarray) -> None:
    ok = cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f'could not write {path}')


def _annotations(objects: List[dict], image_id: int, first_ann_id: int,
                 segmentation: bool = False, rotated: bool = False) -> List[dict]:
    anns = []
    for k, obj in enumerate(objects):
        x1, y1, x2, y2 = obj['bbox']
        w, h = x2 - x1, y2 - y1
        ann = dict(id=first_ann_id + k, image_id=image_id, category_id=obj['label'] + 1,
                   bbox=[round(x1, 2), round(y1, 2), round(w, 2), round(h, 2)],
                   area=round(w * h, 2), iscrowd=0)
        if segmentation:  # one COCO polygon: [x1, y1, x2, y2, ...]
            ann['segmentation'] = [[round(float(v), 2) for v in obj['polygon'].ravel()]]
        if rotated:  # [cx, cy, w, h, angle] of its rotated box, as mmrotate's qbox2rbox gives
            corners = rotated_box_corners(obj['label'], obj['polygon']).astype(np.float32)
            (cx, cy), (w, h), degrees = cv2.minAreaRect(corners)
            ann['rbox'] = [round(float(v), 2) for v in (cx, cy, w, h)] + \
                [round(float(np.deg2rad(degrees)), 6)]
        anns.append(ann)
    return anns


def generate_split(out_dir: str, split: str, spec: SplitSpec, seed: int,
                   segmentation: bool = False) -> str:
    """Writes ``<out_dir>/<split>/*.png`` and ``<out_dir>/annotations/<split>.json``.

    Args:
        out_dir (str): Output folder.
        split (str): Split name (also a key of the images' random streams).
        spec (SplitSpec): What the split looks like.
        seed (int): Random seed.
        segmentation (bool): Also write each object's outline as a COCO polygon
            ``segmentation`` (instance masks); the images are the same either way.
            Defaults to False.

    Returns:
        str: Path of the annotation file.
    """
    split_key = sum(ord(c) for c in split)
    os.makedirs(osp.join(out_dir, split), exist_ok=True)
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    images, annotations = [], []
    for idx in range(spec.num_images):
        rng = _rng(seed, split_key, idx)
        width, height = _image_size(rng, spec.size_range, spec.aspect_range)
        n = int(rng.integers(spec.objects_range[0], spec.objects_range[1] + 1))
        img, objects = render_image(rng, height, width, n, spec.object_size_range)
        file_name = f'{split}_{idx:05d}.png'
        _write_png(osp.join(out_dir, split, file_name), img)
        images.append(dict(id=idx + 1, file_name=file_name, width=width, height=height))
        annotations += _annotations(objects, idx + 1, len(annotations) + 1, segmentation)
    ann_file = osp.join(out_dir, 'annotations', f'{split}.json')
    with open(ann_file, 'w', encoding='utf-8') as f:
        json.dump(_coco(images, annotations), f)
    return ann_file


def generate_large_image(out_dir: str, seed: int, width: int = 3000, height: int = 2000,
                         num_objects: int = 150,
                         object_size_range: Tuple[int, int] = (16, 40)) -> str:
    """Writes one large image with many small shapes and its COCO ground truth.

    Returns:
        str: Path of the annotation file (``large.json``).
    """
    os.makedirs(out_dir, exist_ok=True)
    rng = _rng(seed, 7919)
    img, objects = render_image(rng, height, width, num_objects, object_size_range)
    file_name = 'large_00000.png'
    _write_png(osp.join(out_dir, file_name), img)
    ann_file = osp.join(out_dir, 'large.json')
    with open(ann_file, 'w', encoding='utf-8') as f:
        json.dump(_coco([dict(id=1, file_name=file_name, width=width, height=height)],
                        _annotations(objects, 1, 1)), f)
    return ann_file


# The sliced-evaluation set: (width, height, number of shapes) of each image.
LARGE_EVAL_IMAGES: Tuple[Tuple[int, int, int], ...] = (
    (1280, 960, 60), (1024, 1024, 50), (1440, 800, 60))


def generate_large_eval_set(out_dir: str, seed: int,
                            images: Sequence[Tuple[int, int, int]] = LARGE_EVAL_IMAGES,
                            object_size_range: Tuple[int, int] = (12, 32),
                            rotated: bool = False) -> str:
    """Writes a few large images with many small shapes and one COCO ground truth for them
    (sliced vs full-image evaluation: letterboxed whole, the shapes shrink to 3-10 px).

    Each image comes from its own random stream ``(seed, 7927, index)``.

    Args:
        out_dir (str): Output folder (``large_eval_<index>.png`` and ``large_eval.json``).
        seed (int): Random seed.
        images (sequence[tuple[int, int, int]]): (width, height, number of shapes) per image.
            Defaults to ``LARGE_EVAL_IMAGES``.
        object_size_range (tuple[int, int]): Range of shape sizes in pixels.
            Defaults to (12, 32).
        rotated (bool): Also give each annotation its outline (``segmentation``) and its
            rotated box (``rbox`` [cx, cy, w, h, angle], :func:`rotated_box_corners`), the
            ground truth of rotated detectors; the images are the same. Defaults to False.

    Returns:
        str: Path of the annotation file (``large_eval.json``).
    """
    os.makedirs(out_dir, exist_ok=True)
    coco_images, annotations = [], []
    for idx, (width, height, num_objects) in enumerate(images):
        img, objects = render_image(_rng(seed, 7927, idx), height, width, num_objects,
                                    object_size_range)
        file_name = f'large_eval_{idx:05d}.png'
        _write_png(osp.join(out_dir, file_name), img)
        coco_images.append(dict(id=idx + 1, file_name=file_name, width=width, height=height))
        annotations += _annotations(objects, idx + 1, len(annotations) + 1,
                                    segmentation=rotated, rotated=rotated)
    ann_file = osp.join(out_dir, 'large_eval.json')
    with open(ann_file, 'w', encoding='utf-8') as f:
        json.dump(_coco(coco_images, annotations), f)
    return ann_file


def generate_demo_data(out_dir: str, seed: int = 0, num_train: int = 400, num_val: int = 80,
                       large: bool = True) -> Dict[str, str]:
    """Generates the whole embedded demo: shapes train/val splits, the large image and the
    sliced-evaluation set.

    Returns:
        dict: Paths of the written annotation files keyed by ``train``, ``val``, ``large``,
        ``large_eval``.
    """
    paths = dict(
        train=generate_split(osp.join(out_dir, 'shapes'), 'train', SplitSpec(num_train), seed),
        val=generate_split(osp.join(out_dir, 'shapes'), 'val', SplitSpec(num_val), seed))
    if large:
        paths['large'] = generate_large_image(osp.join(out_dir, 'large'), seed)
        paths['large_eval'] = generate_large_eval_set(osp.join(out_dir, 'large_eval'), seed)
    return paths


def _triangle_box(polygon: np.ndarray) -> np.ndarray:
    """Corners ``(4, 2)`` of the rectangle flush with the triangle's side nearest horizontal.

    An equilateral triangle has three minimum-area rectangles (one per side) of equal area, so
    ``cv2.minAreaRect`` would choose among them by pixel rounding: a random target. The side
    nearest horizontal is a function of the image (it jumps only at ±30° of the side's slope).
    """
    best = None
    for k in range(3):
        p, q = polygon[k], polygon[(k + 1) % 3]
        u = (q - p) / max(float(np.linalg.norm(q - p)), 1e-6)
        slope = abs(np.arctan2(u[1], u[0]))
        slope = min(slope, np.pi - slope)  # a side's orientation, mod 180°, against horizontal
        if best is None or slope < best[0]:
            best = (slope, u)
    u = best[1]
    n = np.array([-u[1], u[0]])
    along, across = polygon @ u, polygon @ n
    a0, a1, c0, c1 = along.min(), along.max(), across.min(), across.max()
    return np.array([a0 * u + c0 * n, a1 * u + c0 * n, a1 * u + c1 * n, a0 * u + c1 * n])


def rotated_box_corners(label: int, polygon: np.ndarray) -> np.ndarray:
    """The rotated box of one shape, as its 4 corners ``(4, 2)`` (a DOTA quadrilateral).

    A square's is its minimum-area rectangle (``cv2.minAreaRect`` -> ``cv2.boxPoints``), i.e.
    its drawn corners; a triangle's is the minimum-area rectangle flush with its side nearest
    horizontal (see :func:`_triangle_box`); a circle has no orientation, so its box is the
    axis-aligned square around it (a fixed angle keeps the target unambiguous).

    Args:
        label (int): Class index into :data:`CLASSES`.
        polygon (np.ndarray): The shape's outline ``(N, 2)``, as :func:`render_image` gives it.

    Returns:
        np.ndarray: Corners in order around the box, float64.
    """
    polygon = np.asarray(polygon, np.float64)
    name = CLASSES[label]
    if name == 'circle':
        (x1, y1), (x2, y2) = polygon.min(axis=0), polygon.max(axis=0)
        return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
    if name == 'triangle':
        return _triangle_box(polygon)
    return cv2.boxPoints(cv2.minAreaRect(polygon.astype(np.float32))).astype(np.float64)


def write_dota_annotations(ann_file: str, out_dir: str) -> int:
    """Writes DOTA-style txt annotations, one file per image of a COCO file with polygon
    ``segmentation`` (as :func:`generate_split` writes it with ``segmentation=True``).

    Each line is ``x1 y1 x2 y2 x3 y3 x4 y4 class difficulty`` (difficulty 0), the corners of
    :func:`rotated_box_corners`; MMRotate's ``DOTADataset`` reads the folder.

    Args:
        ann_file (str): The COCO annotation file.
        out_dir (str): Folder of the txt files (``<image stem>.txt``).

    Returns:
        int: Number of files written.
    """
    with open(ann_file, encoding='utf-8') as f:
        coco = json.load(f)
    names = {c['id']: c['name'] for c in coco['categories']}
    lines: Dict[int, List[str]] = {img['id']: [] for img in coco['images']}
    for ann in coco['annotations']:
        label = CLASSES.index(names[ann['category_id']])
        polygon = np.asarray(ann['segmentation'][0], np.float64).reshape(-1, 2)
        corners = rotated_box_corners(label, polygon)
        lines[ann['image_id']].append(
            ' '.join(f'{v:.2f}' for v in corners.ravel()) + f' {CLASSES[label]} 0')
    os.makedirs(out_dir, exist_ok=True)
    for img in coco['images']:
        stem = osp.splitext(img['file_name'])[0]
        with open(osp.join(out_dir, stem + '.txt'), 'w', encoding='utf-8') as f:
            f.write(''.join(line + '\n' for line in lines[img['id']]))
    return len(coco['images'])


def generate_rotated_demo_data(out_dir: str, seed: int = 0, num_train: int = 400,
                               num_val: int = 80, large: bool = True) -> Dict[str, str]:
    """Generates the rotated-box demo (RTMDet-R): the shapes train/val splits of
    :func:`generate_demo_data` (the same images for the same seed), with polygons, and their
    rotated boxes as DOTA txt folders.

    Layout: ``<out_dir>/<split>/*.png``, ``<out_dir>/annotations/<split>.json`` (COCO, with
    ``segmentation``) and ``<out_dir>/annfiles/<split>/*.txt`` (DOTA).

    Args:
        out_dir (str): Output folder, e.g. ``data/shapes_rotated``.
        seed (int): Random seed. Defaults to 0.
        num_train (int): Train images. Defaults to 400.
        num_val (int): Val images. Defaults to 80.
        large (bool): Also write the sliced evaluation set. Defaults to True.

    Returns:
        dict: The DOTA annotation folders keyed by ``train`` and ``val``, and the sliced
        evaluation set with rotated ground truth (:func:`generate_large_eval_set`'s images,
        ``<out_dir>/large_eval/large_eval.json``) keyed by ``large_eval`` (with ``large``).
    """
    paths = {}
    for split, num in (('train', num_train), ('val', num_val)):
        ann_file = generate_split(out_dir, split, SplitSpec(num), seed, segmentation=True)
        paths[split] = osp.join(out_dir, 'annfiles', split)
        write_dota_annotations(ann_file, paths[split])
    if large:
        paths['large_eval'] = generate_large_eval_set(osp.join(out_dir, 'large_eval'), seed,
                                                      rotated=True)
    return paths


# ------------------------------------------------------------------ pose: stick figures
# COCO's 17 person keypoints, in COCO order (mmpose's coco metainfo).
POSE_KEYPOINTS: Tuple[str, ...] = (
    'nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder',
    'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist', 'left_hip',
    'right_hip', 'left_knee', 'right_knee', 'left_ankle', 'right_ankle')
# COCO's skeleton (0-based keypoint pairs), the limbs drawn.
POSE_SKELETON: Tuple[Tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))


def _stick_figure_keypoints(rng: np.random.Generator, height: float) -> np.ndarray:
    """The 17 keypoints ``(17, 2)`` of a frontal stick figure ``height`` px tall (top of the
    head to the ankles), pelvis at the origin, y down: the person's left is the image's right
    (a figure facing the viewer), arm and leg angles and a body tilt drawn from ``rng``."""
    h = height / 0.95  # the head's top at -0.5 h, the ankles at 0.45 h
    head = np.array([0.0, -0.42 * h])
    pts = np.zeros((17, 2))
    pts[0] = head + [0.0, 0.025 * h]                     # nose
    pts[1], pts[2] = head + [0.03 * h, -0.015 * h], head + [-0.03 * h, -0.015 * h]  # eyes
    pts[3], pts[4] = head + [0.07 * h, 0.0], head + [-0.07 * h, 0.0]               # ears
    pts[5], pts[6] = [0.11 * h, -0.3 * h], [-0.11 * h, -0.3 * h]                   # shoulders
    pts[11], pts[12] = [0.07 * h, 0.0], [-0.07 * h, 0.0]                           # hips
    for side, (sh, el, wr, hip, kn, an) in ((1.0, (5, 7, 9, 11, 13, 15)),
                                            (-1.0, (6, 8, 10, 12, 14, 16))):
        # angles from straight down, outward positive; an arm may reach above the shoulder
        upper = np.deg2rad(rng.uniform(10, 150))
        lower = upper + np.deg2rad(rng.uniform(-60, 60))
        pts[el] = pts[sh] + 0.15 * h * np.array([side * np.sin(upper), np.cos(upper)])
        pts[wr] = pts[el] + 0.14 * h * np.array([side * np.sin(lower), np.cos(lower)])
        thigh = np.deg2rad(rng.uniform(0, 35))
        shin = thigh + np.deg2rad(rng.uniform(-25, 15))
        pts[kn] = pts[hip] + 0.22 * h * np.array([side * np.sin(thigh), np.cos(thigh)])
        pts[an] = pts[kn] + 0.22 * h * np.array([side * np.sin(shin), np.cos(shin)])
    tilt = np.deg2rad(rng.uniform(-15, 15))
    rot = np.array([[np.cos(tilt), -np.sin(tilt)], [np.sin(tilt), np.cos(tilt)]])
    return pts @ rot.T


def _draw_stick_figure(img: np.ndarray, rng: np.random.Generator, keypoints: np.ndarray,
                       height: float) -> Tuple[float, float, float, float]:
    """Draws one stick figure (RGB) whose keypoints are ``keypoints`` (image coordinates): the
    COCO skeleton's limbs as lines, a filled head around the face keypoints, dark eyes and nose.
    Returns its tight box (x1, y1, x2, y2) around everything drawn."""
    color = tuple(int(c) for c in PALETTE[int(rng.integers(len(PALETTE)))])
    thick = max(2, int(round(height * 0.035)))
    head_c = (keypoints[3] + keypoints[4]) / 2
    head_r = 0.085 * height / 0.95
    limbs = [(a, b) for a, b in POSE_SKELETON if min(a, b) >= 5]
    for a, b in limbs:
        cv2.line(img, tuple(int(round(v)) for v in keypoints[a]),
                 tuple(int(round(v)) for v in keypoints[b]), color, thick, cv2.LINE_AA)
    # the neck: shoulders' midpoint to the head
    neck = (keypoints[5] + keypoints[6]) / 2
    cv2.line(img, tuple(int(round(v)) for v in neck), tuple(int(round(v)) for v in head_c),
             color, thick, cv2.LINE_AA)
    cv2.circle(img, tuple(int(round(v)) for v in head_c), int(round(head_r)), color, -1,
               cv2.LINE_AA)
    dark = tuple(int(c * 0.25) for c in color)
    dot = max(1, int(round(height * 0.012)))
    for k in (0, 1, 2):
        cv2.circle(img, tuple(int(round(v)) for v in keypoints[k]), dot, dark, -1, cv2.LINE_AA)
    pad = thick / 2
    x1 = min(keypoints[:, 0].min() - pad, head_c[0] - head_r)
    y1 = min(keypoints[:, 1].min() - pad, head_c[1] - head_r)
    x2 = max(keypoints[:, 0].max() + pad, head_c[0] + head_r)
    y2 = max(keypoints[:, 1].max() + pad, head_c[1] + head_r)
    return float(x1), float(y1), float(x2), float(y2)


def render_pose_image(rng: np.random.Generator, height: int, width: int, num_figures: int,
                      figure_size_range: Tuple[int, int] = (40, 120)
                      ) -> Tuple[np.ndarray, List[dict]]:
    """Renders one RGB image with up to ``num_figures`` stick figures wholly inside it, their
    boxes not overlapping. Each object has ``keypoints`` ``(17, 2)`` and ``bbox``."""
    img = _background(rng, height, width)
    objects: List[dict] = []
    for _ in range(num_figures * 20):  # rejection sampling for placement
        if len(objects) == num_figures:
            break
        size = min(rng.uniform(*figure_size_range), 0.9 * min(height, width))
        kpts = _stick_figure_keypoints(rng, size)
        lo, hi = kpts.min(axis=0) - 0.1 * size, kpts.max(axis=0) + 0.1 * size
        if np.any(hi - lo > [width, height]):
            continue
        offset = np.array([rng.uniform(-lo[0], width - hi[0]),
                           rng.uniform(-lo[1], height - hi[1])])
        extent = (*(lo + offset), *(hi + offset))
        if any(_iou(extent, o['extent']) > 0.0 for o in objects):
            continue
        kpts = kpts + offset
        box = _draw_stick_figure(img, rng, kpts, size)
        box = (max(0.0, box[0]), max(0.0, box[1]), min(float(width), box[2]),
               min(float(height), box[3]))
        objects.append(dict(keypoints=kpts, bbox=box, extent=extent))
    return img, objects


def generate_pose_split(out_dir: str, split: str, num_images: int, seed: int,
                        size_range: Tuple[int, int] = (256, 384),
                        figures_range: Tuple[int, int] = (1, 3),
                        figure_size_range: Tuple[int, int] = (40, 120)) -> str:
    """Writes ``<out_dir>/<split>/*.png`` and a COCO keypoints file
    ``<out_dir>/annotations/<split>.json`` (category ``person`` with COCO's keypoint names and
    skeleton; each annotation's ``keypoints`` [x, y, v] * 17, all visible, v = 2).

    Each image comes from its own random stream ``(seed, split key, 31, index)``.

    Returns:
        str: Path of the annotation file.
    """
    split_key = sum(ord(c) for c in split)
    os.makedirs(osp.join(out_dir, split), exist_ok=True)
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    images, annotations = [], []
    for idx in range(num_images):
        rng = _rng(seed, split_key, 31, idx)
        width, height = _image_size(rng, size_range, (0.75, 1.33))
        n = int(rng.integers(figures_range[0], figures_range[1] + 1))
        img, objects = render_pose_image(rng, height, width, n, figure_size_range)
        file_name = f'{split}_{idx:05d}.png'
        _write_png(osp.join(out_dir, split, file_name), img)
        images.append(dict(id=idx + 1, file_name=file_name, width=width, height=height))
        for obj in objects:
            x1, y1, x2, y2 = obj['bbox']
            w, h = x2 - x1, y2 - y1
            kpts = np.concatenate([np.round(obj['keypoints'], 2), np.full((17, 1), 2.0)], 1)
            annotations.append(dict(
                id=len(annotations) + 1, image_id=idx + 1, category_id=1,
                bbox=[round(x1, 2), round(y1, 2), round(w, 2), round(h, 2)],
                area=round(w * h, 2), iscrowd=0, num_keypoints=17,
                keypoints=[float(v) for v in kpts.ravel()]))
    categories = [dict(id=1, name='person', supercategory='person',
                       keypoints=list(POSE_KEYPOINTS),
                       skeleton=[[a + 1, b + 1] for a, b in POSE_SKELETON])]
    ann_file = osp.join(out_dir, 'annotations', f'{split}.json')
    with open(ann_file, 'w', encoding='utf-8') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    return ann_file


def generate_pose_demo_data(out_dir: str, seed: int = 0, num_train: int = 400,
                            num_val: int = 80) -> Dict[str, str]:
    """Generates the pose demo (YOLOX-pose): stick figures with COCO's 17 keypoints, 1-3 per
    image, 40-120 px tall, on the demo's backgrounds, as COCO keypoints files.

    Layout: ``<out_dir>/<split>/*.png`` and ``<out_dir>/annotations/<split>.json``.

    Returns:
        dict: Paths of the annotation files keyed by ``train`` and ``val``.
    """
    return {split: generate_pose_split(out_dir, split, num, seed)
            for split, num in (('train', num_train), ('val', num_val))}
