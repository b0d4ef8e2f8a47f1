"""data/augment.py on real COCO images: OpenCV HSV parity, each step alone, box/mask consistency, eval resize.

Boxes in the consistency tests are the bounding boxes of the pycocotools masks (in original pixels), so after any
augmentation the mask's bounding box must agree with the transformed box up to resampling (about a pixel).
"""

import dataclasses
import json

import cv2
import numpy as np
import pytest
import tensorflow as tf
from pycocotools.coco import COCO

from config import get_config
from data import augment
from yolact.ops import preprocess

CFG = get_config("yolact_resnet50")
S = CFG.model.img_size
FLAGS = ("augment_photometric_distort", "augment_expand", "augment_random_sample_crop", "augment_random_mirror")


def _cfg(**on):
    flags = {f: bool(on.get(f.replace("augment_", ""), False)) for f in FLAGS}
    return dataclasses.replace(CFG, parser=dataclasses.replace(CFG.parser, **flags))


def _val_coco(coco_mini, _cache={}):
    if "coco" not in _cache:
        _cache["coco"] = COCO(str(coco_mini / "annotations" / "instances_val2017.json"))
    return _cache["coco"]


@pytest.fixture(scope="module")
def sample(coco_mini):
    """A val image with a crowd and many objects, its masks (annToMask) and the masks' bounding boxes."""
    coco = _val_coco(coco_mini)
    img_id = next(i for i in sorted(coco.getImgIds())
                  if any(a["iscrowd"] for a in coco.loadAnns(coco.getAnnIds(imgIds=i)))
                  and len(coco.getAnnIds(imgIds=i)) >= 6)
    info = coco.loadImgs(img_id)[0]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
    image = cv2.imread(str(coco_mini / "val2017" / info["file_name"]))[:, :, ::-1].copy()
    h, w = image.shape[:2]
    masks = np.stack([coco.annToMask(a) for a in anns]).astype(np.uint8)
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h])
    crowd = np.array([a["iscrowd"] == 1 for a in anns])
    return image, np.array(boxes, np.float32), masks, crowd


def _run(sample, cfg, seed):
    image, boxes, masks, crowd = sample
    if cfg not in _run.cache:
        _run.cache[cfg] = tf.function(lambda s: augment.augment(image, boxes, masks, crowd, cfg, s))
    fn = _run.cache[cfg]
    return {k: v.numpy() for k, v in fn(tf.constant(seed, tf.int64)).items()}


_run.cache = {}


def _check_consistent(out, tight=True):
    """Every kept object's mask bbox lies within its box (1.5 px) and, with ``tight`` (no crop: a crop clips a box
    to the crop although the mask inside the crop may not reach that far, as in the original), for boxes >= 16 px
    it equals the box within 2 px."""
    boxes = out["boxes"] * S
    assert out["masks"].shape == (S, S, len(boxes))
    assert set(np.unique(out["masks"])) <= {0.0, 1.0}
    for k, b in enumerate(boxes):
        ys, xs = np.nonzero(out["masks"][:, :, k])
        if len(xs) == 0:
            assert min(b[2] - b[0], b[3] - b[1]) < 8, "a sizeable box lost its whole mask"
            continue
        mb = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        assert (mb[:2] >= b[:2] - 1.5).all() and (mb[2:] <= b[2:] + 1.5).all(), (mb, b)
        if tight and min(b[2] - b[0], b[3] - b[1]) >= 16:
            np.testing.assert_allclose(mb, b, atol=2.0)


def test_hsv_matches_opencv_float_conversion():
    rng = np.random.default_rng(0)
    x = rng.uniform(-40.0, 300.0, (48, 48, 3)).astype(np.float32)  # unclipped, as after brightness/contrast
    x[0, 0], x[0, 1], x[0, 2] = [-5, -10, -3], [10, 10, 10], [0, 0, 0]
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
    np.testing.assert_allclose(augment.rgb_to_hsv_cv2(x).numpy(), hsv, atol=1e-3, rtol=1e-5)
    hsv[..., 1] *= 1.45
    hsv[..., 0] = (hsv[..., 0] + 17.0) % 360.0
    np.testing.assert_allclose(augment.hsv_to_rgb_cv2(hsv).numpy(), cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB),
                               atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize("sat,hue", [(1.45, 17.0), (0.55, -18.0), (1.0, 0.0)])
def test_fused_hsv_jitter_equals_opencv_round_trip(sat, hue):
    """Saturation/hue jitter as the original does it with cv2 on floats, negative pixels included."""
    rng = np.random.default_rng(1)
    x = rng.uniform(-40.0, 300.0, (64, 64, 3)).astype(np.float32)
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
    hsv[..., 1] *= sat
    hsv[..., 0] += hue
    hsv[..., 0][hsv[..., 0] > 360.0] -= 360.0
    hsv[..., 0][hsv[..., 0] < 0.0] += 360.0
    ref = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    ours = augment.hsv_jitter(x, sat, hue).numpy()
    np.testing.assert_allclose(ours, ref, atol=2e-3, rtol=1e-5)
    if sat == 1.0:  # not the identity where the max channel is negative, exactly as OpenCV
        neg = x.max(-1) < 0
        assert neg.any() and not np.allclose(ours[neg], x[neg], atol=1e-2)


def test_no_augmentation_is_resize_and_normalize(sample):
    image, boxes, masks, crowd = sample
    out = _run(sample, _cfg(), [0, 0])
    ref = preprocess.normalize(tf.image.resize(image.astype(np.float32), [S, S], antialias=False), CFG).numpy()
    np.testing.assert_allclose(out["image"], ref, atol=1e-5)
    np.testing.assert_allclose(out["boxes"], boxes, atol=1e-6)
    np.testing.assert_array_equal(out["indices"], np.arange(len(boxes)))
    ref_masks = tf.image.resize(masks.transpose(1, 2, 0).astype(np.float32), [S, S]).numpy() >= 0.5
    np.testing.assert_array_equal(out["masks"], ref_masks)
    _check_consistent(out)


def test_photometric_only_changes_pixels_and_is_seeded(sample):
    plain = _run(sample, _cfg(), [0, 0])
    outs = [_run(sample, _cfg(photometric_distort=True), [s, 1]) for s in range(8)]
    changed = [not np.allclose(o["image"], plain["image"], atol=1e-3) for o in outs]
    assert 4 <= sum(changed) <= 8  # brightness, contrast, saturation or hue fire with p 15/16 per image
    for o in outs:
        np.testing.assert_array_equal(o["boxes"], plain["boxes"])
        np.testing.assert_array_equal(o["masks"], plain["masks"])
    again = _run(sample, _cfg(photometric_distort=True), [3, 1])
    np.testing.assert_array_equal(again["image"], outs[3]["image"])


def test_expand_only(sample):
    plain = _run(sample, _cfg(), [0, 0])
    expanded = 0
    for s in range(12):
        out = _run(sample, _cfg(expand=True), [s, 2])
        _check_consistent(out)
        np.testing.assert_array_equal(out["indices"], plain["indices"])
        w_ratio = (plain["boxes"][:, 2] - plain["boxes"][:, 0]) / (out["boxes"][:, 2] - out["boxes"][:, 0])
        assert np.allclose(w_ratio, w_ratio[0], rtol=1e-3) and 1 - 1e-4 <= w_ratio[0] <= 4.0 + 1e-3
        if w_ratio[0] > 1.01:
            expanded += 1
            # The mean-filled border normalizes to exactly 0 somewhere on the canvas.
            assert (np.abs(out["image"]).sum(-1) == 0).mean() > 0.01
    assert 2 <= expanded <= 10


def test_crop_only(sample):
    image, boxes, masks, crowd = sample
    cropped = 0
    for s in range(16):
        out = _run(sample, _cfg(random_sample_crop=True), [s, 4])
        _check_consistent(out, tight=False)
        assert (~crowd[out["indices"]]).any(), "a crop must keep a non-crowd object"
        assert (out["boxes"] >= 0).all() and (out["boxes"] <= 1).all()
        np.testing.assert_array_equal(out["is_crowd"], crowd[out["indices"]])
        if len(out["indices"]) < len(boxes) or not np.allclose(out["boxes"], boxes, atol=1e-5):
            cropped += 1
    assert 8 <= cropped <= 16  # None is drawn with p 1/6


def test_mirror_only(sample):
    plain = _run(sample, _cfg(), [0, 0])
    flips = 0
    for s in range(8):
        out = _run(sample, _cfg(random_mirror=True), [s, 5])
        if np.array_equal(out["image"], plain["image"]):
            np.testing.assert_array_equal(out["boxes"], plain["boxes"])
            continue
        flips += 1
        np.testing.assert_array_equal(out["image"], plain["image"][:, ::-1])
        np.testing.assert_array_equal(out["masks"], plain["masks"][:, ::-1])
        b = plain["boxes"]
        np.testing.assert_allclose(out["boxes"], np.stack([1 - b[:, 2], b[:, 1], 1 - b[:, 0], b[:, 3]], 1),
                                   atol=1e-6)
    assert 1 <= flips <= 7


def test_full_augmentation_boxes_follow_masks_over_many_seeds(sample):
    for s in range(30):
        out = _run(sample, CFG, [s, 6])
        assert out["image"].shape == (S, S, 3) and out["image"].dtype == np.float32
        assert len(out["boxes"]) >= 1 and (~out["is_crowd"]).any()
        _check_consistent(out, tight=False)
    a, b = _run(sample, CFG, [7, 6]), _run(sample, CFG, [8, 6])
    assert not np.array_equal(a["image"], b["image"])


def test_zero_objects():
    image = np.full((40, 60, 3), 128, np.uint8)
    out = augment.augment(image, np.zeros((0, 4), np.float32), np.zeros((0, 40, 60), np.uint8),
                          np.zeros(0, bool), CFG, tf.constant([1, 2], tf.int64))
    assert out["image"].shape == (S, S, 3)
    assert out["boxes"].shape == (0, 4) and out["masks"].shape == (S, S, 0)


@pytest.mark.parametrize("k", [0, 1])
def test_eval_preprocess_equals_fixture_input(fixture_inputs, k):
    """The original's FastBaseTransform output (fixture `input`) from the raw image: relative L2 error."""
    ours = preprocess.eval_preprocess(fixture_inputs[f"image{k}"], CFG).numpy()
    ref = fixture_inputs["input"][k]
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) < 1e-6
    assert np.abs(ours - ref).max() < 1e-4


@pytest.mark.parametrize("k", [0, 1])
def test_no_augmentation_reproduces_fixture_gt(fixture_inputs, fixture_outputs, coco_mini, k):
    """With every augment flag off, the original's training GT (fixture gt_boxes/gt_masks, cv2 resize of the uint8
    annToMask masks) and the matching targets come out of augment + build_targets from the raw COCO data."""
    from data import targets
    from yolact.ops.anchors import make_anchors

    coco = _val_coco(coco_mini)
    img_id = int(fixture_inputs["image_ids"][k])
    anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
    anns = [a for a in anns if not a["iscrowd"]] + [a for a in anns if a["iscrowd"]]  # the original's order
    image = fixture_inputs[f"image{k}"]
    h, w = image.shape[:2]
    boxes = np.array([[a["bbox"][0] / w, a["bbox"][1] / h, (a["bbox"][0] + a["bbox"][2]) / w,
                       (a["bbox"][1] + a["bbox"][3]) / h] for a in anns], np.float32)
    masks = np.stack([coco.annToMask(a) for a in anns])
    crowd = np.array([a["iscrowd"] == 1 for a in anns])
    out = augment.augment(image, boxes, masks, crowd, _cfg(), tf.constant([0, 0], tf.int64))
    np.testing.assert_allclose(out["boxes"].numpy(), fixture_inputs[f"gt_boxes{k}"], atol=1e-6)
    ref_masks = fixture_inputs[f"gt_masks{k}"].transpose(1, 2, 0)
    # cv2 resizes uint8 masks with 11-bit fixed-point weights, so pixels whose bilinear value is within ~1e-3 of
    # 0.5 can round the other way: about 1e-4 of the pixels.
    assert (out["masks"].numpy() != ref_masks).mean() < 5e-4
    img = out["image"].numpy()
    assert np.linalg.norm(img - fixture_inputs["input"][k]) / np.linalg.norm(fixture_inputs["input"][k]) < 1e-6
    classes = np.array([coco.getCatIds().index(a["category_id"]) + 1 for a in anns])
    t = targets.build_targets(out["boxes"], classes, out["masks"], out["is_crowd"], make_anchors(CFG), CFG)
    np.testing.assert_array_equal(t["cls_t"].numpy(), fixture_outputs["match_conf_t"][k])
    np.testing.assert_array_equal(t["idx_t"].numpy(), fixture_outputs["match_idx_t"][k])
    # Boxes from the raw json equal the fixture's to ~1e-7 (another float path; the 1e-5 parity from the fixture's
    # own GT is tested in test_box_ops), which the encoding amplifies up to ~2e-5.
    np.testing.assert_allclose(t["loc_t"].numpy(), fixture_outputs["match_loc_t"][k], atol=5e-5, rtol=1e-5)
    labels = fixture_inputs[f"gt_labels{k}"]
    n = int((labels >= 0).sum())
    assert int(t["num_obj"]) == n
    np.testing.assert_array_equal(t["gt_classes"].numpy()[:n], labels[:n] + 1)
