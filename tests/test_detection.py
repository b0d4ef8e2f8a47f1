"""Fast NMS, cross-class / traditional NMS and mask assembly against the original's outputs (reference fixture).

The fixture's det{k}_* keys are the original Detect + postprocess run on the fixture's own loc/conf/mask/proto.
Cross-class and traditional NMS (not in the fixture) are checked against numpy transcriptions of the original's
cc_fast_nms and utils/cython_nms.pyx written here, independent of yolact/detection/. The host step
(yolact/detection/results.py: masks upsampled to the image, boxes to pixels) is checked on the original's final
detections.
"""

import numpy as np
import pytest
import tensorflow as tf

from config import get_config
from tests.conftest import detect, postprocess
from yolact.detection import DetectionGenerator, to_output_convention, to_results
from yolact.ops.label_map import coco_label_map

CFG = get_config("yolact_resnet50")


def _raw(fixture_outputs, idx=slice(None)):
    return {k: fixture_outputs[k][idx] for k in ("loc", "conf", "mask")}


@pytest.fixture(scope="module")
def dets(fixture_outputs):
    return {jit: detect(_raw(fixture_outputs), fixture_outputs["priors"], CFG, jit=jit) for jit in (False, True)}


@pytest.mark.parametrize("jit", [False, True], ids=["plain", "xla"])
@pytest.mark.parametrize("k", [0, 1])
def test_fast_nms_matches_original(dets, fixture_outputs, jit, k):
    d = dets[jit]
    assert int(d["num_detections"][k]) == 100
    np.testing.assert_array_equal(d["classes"][k].numpy(), fixture_outputs[f"det{k}_raw_class"])
    np.testing.assert_allclose(d["scores"][k].numpy(), fixture_outputs[f"det{k}_raw_score"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(d["boxes"][k].numpy(), fixture_outputs[f"det{k}_raw_box"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(d["coefs"][k].numpy(), fixture_outputs[f"det{k}_raw_coef"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("jit", [False, True], ids=["plain", "xla"])
@pytest.mark.parametrize("k", [0, 1])
def test_masks_and_pixel_boxes_match_original(dets, fixture_outputs, jit, k):
    ref_masks = fixture_outputs[f"det{k}_masks"]
    h, w = ref_masks.shape[1:]
    one = {key: v[k:k + 1] for key, v in dets[jit].items()}
    out = postprocess(one, fixture_outputs["proto"][k:k + 1], h, w)
    assert out["masks"].shape == ref_masks.shape and out["masks"].dtype == np.uint8
    np.testing.assert_array_equal(out["classes"], fixture_outputs[f"det{k}_class"])
    assert np.abs(out["boxes"] - fixture_outputs[f"det{k}_box"]).max() <= 1
    differing = int((out["masks"] != ref_masks).sum())
    print(f"image {k} jit={jit}: {differing} of {ref_masks.size} mask pixels differ; "
          f"box max abs diff {np.abs(out['boxes'] - fixture_outputs[f'det{k}_box']).max()} px")
    assert differing <= 1e-4 * ref_masks.size
    inter = (out["masks"] & ref_masks).sum(axis=(1, 2))
    union = (out["masks"] | ref_masks).sum(axis=(1, 2))
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)  # both empty: identical
    assert iou.min() >= 0.99


@pytest.mark.parametrize("jit", [False, True], ids=["plain", "xla"])
@pytest.mark.parametrize("k", [0, 1])
def test_detection_generator_layer_matches_original(fixture_outputs, jit, k):
    """The model's detection layer on the fixture's raw outputs, its own anchors, masks upsampled in the layer and the
    output convention (normalised [ymin, xmin, ymax, xmax], COCO category ids) against the original's detections."""
    o = fixture_outputs
    gen = DetectionGenerator(CFG, "fast", jit)
    np.testing.assert_allclose(gen.anchors.numpy(), o["priors"], rtol=0, atol=1e-6)
    ref_masks = o[f"det{k}_masks"]
    h, w = ref_masks.shape[1:]
    raw = {key: o[key][k:k + 1] for key in ("loc", "conf", "mask", "proto")}
    out = to_output_convention(gen(raw, output_size=(h, w)), coco_label_map().index_to_id_array())
    assert out["num_detections"].numpy().tolist() == [100]
    ids = np.asarray(coco_label_map().ids)
    np.testing.assert_array_equal(out["detection_classes"][0].numpy(), ids[o[f"det{k}_class"]])
    np.testing.assert_allclose(out["detection_scores"][0].numpy(), o[f"det{k}_score"], atol=1e-5, rtol=0)
    b = out["detection_boxes"][0].numpy()
    assert b.min() >= 0 and b.max() <= 1
    px = np.stack([b[:, 1] * w, b[:, 0] * h, b[:, 3] * w, b[:, 2] * h], axis=1)
    assert np.abs(px - o[f"det{k}_box"]).max() <= 1.0
    masks = out["detection_masks"][0].numpy() > 0.5
    assert masks.shape == ref_masks.shape
    assert int((masks != ref_masks.astype(bool)).sum()) <= 1e-4 * ref_masks.size


def _np_pixel_boxes(boxes, height, width):
    """The original postprocess's pixel boxes, in numpy float32: layers/box_utils.py sanitize_coordinates
    (cast=False, padding 0: scaled, ordered, min clamped at 0, max at the side) then ``.long()`` (truncation)."""
    boxes = np.asarray(boxes, np.float32)

    def side(a, b, size):
        a, b = a * np.float32(size), b * np.float32(size)
        return np.maximum(np.minimum(a, b), 0), np.minimum(np.maximum(a, b), np.float32(size))

    x1, x2 = side(boxes[..., 0], boxes[..., 2], width)
    y1, y2 = side(boxes[..., 1], boxes[..., 3], height)
    return np.stack([x1, y1, x2, y2], axis=-1).astype(np.int32)


def test_host_step_category_ids_and_pixel_boxes(dets, fixture_outputs):
    """The host step's pixel boxes (via to_output_convention) equal the original's sanitize_coordinates + .long() of
    the raw boxes exactly, and its category ids are the label map's ids of the classes."""
    lm = coco_label_map()
    one = {key: v[1:2] for key, v in dets[False].items()}
    out = postprocess(one, fixture_outputs["proto"][1:2], 640, 480, category_ids=lm.index_to_id_array(),
                      max_detections=10)
    np.testing.assert_array_equal(out["boxes"], _np_pixel_boxes(one["boxes"][0, :10], 640, 480))
    np.testing.assert_array_equal(out["category_ids"], np.asarray(lm.ids)[out["classes"]])
    assert out["masks"].shape == (10, 640, 480)


def test_host_step_sanitizes_and_truncates_boxes():
    """Hand-computed: x scaled by 640, y by 480, each pair ordered and clamped, then truncated."""
    boxes = np.asarray([[0.5, 0.25, 0.1, 1.2], [-0.3, 0.999, 0.0015, 0.5]], np.float32)
    conv = to_output_convention({"boxes": boxes[None], "classes": np.zeros([1, 2], np.int32),
                                 "scores": np.asarray([[0.9, 0.8]], np.float32), "num_detections": [2],
                                 "masks": np.zeros([1, 2, 4, 4], np.float32)}, coco_label_map().index_to_id_array())
    out = to_results({k: np.asarray(v) for k, v in conv.items()}, 480, 640, coco_label_map().id_to_index_array())
    np.testing.assert_array_equal(out["boxes"], [[64, 120, 320, 480], [0, 240, 0, 479]])
    assert out["masks"].shape == (2, 480, 640) and out["masks"].max() == 0


def test_single_candidate_gives_one_detection_per_class_then_padding(fixture_outputs):
    """With exactly one anchor above conf_threshold the original keeps it once per class (80 rows, no second
    threshold); the remaining 20 rows are padding with score 0."""
    conf = fixture_outputs["conf"][1:2].copy()
    fg = np.exp(conf - conf.max(-1, keepdims=True))
    fg = (fg / fg.sum(-1, keepdims=True))[..., 1:].max(-1)[0]
    best = int(np.argmax(fg))
    conf[0, :, 0] = 20.0  # background dominates every other anchor: foreground scores ~1e-8
    conf[0, best] = fixture_outputs["conf"][1, best]
    d = detect({"loc": fixture_outputs["loc"][1:2], "conf": conf, "mask": fixture_outputs["mask"][1:2]},
               fixture_outputs["priors"], CFG, jit=False)
    assert int(d["num_detections"][0]) == 80
    assert sorted(d["classes"][0, :80].numpy().tolist()) == list(range(80))
    assert np.all(d["scores"][0, 80:].numpy() == 0) and np.all(d["classes"][0, 80:].numpy() == 0)
    assert np.all(d["boxes"][0, 80:].numpy() == 0)
    assert np.all(d["scores"][0, :80].numpy() > 0)
    conf[0, best, 0] = 20.0  # no candidate at all
    d = detect({"loc": fixture_outputs["loc"][1:2], "conf": conf, "mask": fixture_outputs["mask"][1:2]},
               fixture_outputs["priors"], CFG, jit=False)
    assert int(d["num_detections"][0]) == 0 and np.all(d["scores"].numpy() == 0)


# ---- numpy transcriptions of the original (layers/box_utils.py, layers/functions/detection.py, cython_nms.pyx) ----

def _np_decode(loc, priors):
    c = priors[:, :2] + loc[:, :2] * np.float32(0.1) * priors[:, 2:]
    s = priors[:, 2:] * np.exp(loc[:, 2:] * np.float32(0.2))
    xy1 = c - s / 2
    return np.concatenate([xy1, s + xy1], 1).astype(np.float32)


def _np_jaccard(a, b):
    mx = np.minimum(a[:, None, 2:], b[None, :, 2:])
    mn = np.maximum(a[:, None, :2], b[None, :, :2])
    inter = np.clip(mx - mn, 0, None).prod(-1)
    area_a = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None]
    area_b = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :]
    return inter / (area_a + area_b - inter)


def _np_scores(conf):
    e = np.exp(conf - conf.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True))[:, 1:].astype(np.float32)


def _np_cc_fast_nms(loc, conf, priors, conf_thresh=0.05, top_k=200, nms_thresh=0.5):
    boxes, scores = _np_decode(loc, priors), _np_scores(conf)
    cand = np.nonzero(scores.max(1) > conf_thresh)[0]
    best, cls = scores[cand].max(1), scores[cand].argmax(1)
    order = np.argsort(-best, kind="stable")[:top_k]
    iou = np.triu(_np_jaccard(boxes[cand][order], boxes[cand][order]), k=1)
    keep = order[iou.max(0) <= nms_thresh]
    return boxes[cand][keep], cls[keep], best[keep]


def _np_cython_nms(dets, thresh):
    x1, y1, x2, y2, sc = dets.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = sc.argsort(kind="stable")[::-1]
    suppressed = np.zeros(len(dets), bool)
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        rest = order[pos + 1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        suppressed[rest[inter / (areas[i] + areas[rest] - inter) >= thresh]] = True
    return np.nonzero(~suppressed)[0]


def _np_traditional_nms(loc, conf, priors, conf_thresh=0.05, nms_thresh=0.5, max_det=100, max_size=550):
    boxes, scores = _np_decode(loc, priors), _np_scores(conf)
    cand = np.nonzero(scores.max(1) > conf_thresh)[0]
    boxes, scores = boxes[cand] * max_size, scores[cand].T
    idx, cls, scr = [], [], []
    for c in range(scores.shape[0]):
        sel = np.nonzero(scores[c] > conf_thresh)[0]
        if len(sel) == 0:
            continue
        keep = _np_cython_nms(np.concatenate([boxes[sel], scores[c, sel, None]], 1).astype(np.float32), nms_thresh)
        idx.append(sel[keep]), cls.append(np.full(len(keep), c)), scr.append(scores[c, sel[keep]])
    idx, cls, scr = np.concatenate(idx), np.concatenate(cls), np.concatenate(scr)
    top = np.argsort(-scr, kind="stable")[:max_det]
    return boxes[idx[top]] / max_size, cls[top], scr[top]


@pytest.mark.parametrize("jit", [False, True], ids=["plain", "xla"])
@pytest.mark.parametrize("k", [0, 1])
def test_cross_class_fast_nms_matches_transcription(fixture_outputs, jit, k):
    o = fixture_outputs
    ref_boxes, ref_cls, ref_scores = _np_cc_fast_nms(o["loc"][k], o["conf"][k], o["priors"])
    d = detect(_raw(o, slice(k, k + 1)), o["priors"], CFG, nms_type="cross_class", jit=jit)
    n = min(len(ref_scores), CFG.detection.max_num_detection)  # ours caps at max_num_detection
    assert int(d["num_detections"][0]) == n and n > 10
    np.testing.assert_array_equal(d["classes"][0, :n].numpy(), ref_cls[:n])
    np.testing.assert_allclose(d["scores"][0, :n].numpy(), ref_scores[:n], atol=1e-6, rtol=0)
    np.testing.assert_allclose(d["boxes"][0, :n].numpy(), ref_boxes[:n], atol=1e-6, rtol=0)


@pytest.mark.parametrize("k", [0, 1])
def test_traditional_nms_matches_cython_transcription(fixture_outputs, k):
    o = fixture_outputs
    ref_boxes, ref_cls, ref_scores = _np_traditional_nms(o["loc"][k], o["conf"][k], o["priors"])
    d = detect(_raw(o, slice(k, k + 1)), o["priors"], CFG, nms_type="traditional", jit=False)
    n = len(ref_scores)
    assert int(d["num_detections"][0]) == n
    np.testing.assert_array_equal(d["classes"][0, :n].numpy(), ref_cls)
    np.testing.assert_allclose(d["scores"][0, :n].numpy(), ref_scores, atol=1e-6, rtol=0)
    np.testing.assert_allclose(d["boxes"][0, :n].numpy(), ref_boxes, atol=1e-5, rtol=0)


def test_bad_arguments_raise(fixture_outputs):
    with pytest.raises(ValueError, match="unknown nms_type"):
        detect(_raw(fixture_outputs), fixture_outputs["priors"], CFG, nms_type="soft")
    with pytest.raises(ValueError, match="XLA"):
        detect(_raw(fixture_outputs), fixture_outputs["priors"], CFG, nms_type="traditional", jit=True)
    with pytest.raises(ValueError, match="anchors"):
        detect(_raw(fixture_outputs), fixture_outputs["priors"][:100], CFG)


def test_postprocess_of_no_detection_is_empty(fixture_outputs):
    conf = fixture_outputs["conf"][1:2].copy()
    conf[..., 0] = 30.0
    d = detect({"loc": fixture_outputs["loc"][1:2], "conf": conf, "mask": fixture_outputs["mask"][1:2]},
               fixture_outputs["priors"], CFG, jit=False)
    out = postprocess(d, fixture_outputs["proto"][1:2], 640, 480)
    assert out["masks"].shape == (0, 640, 480) and out["boxes"].shape == (0, 4) and len(out["scores"]) == 0
