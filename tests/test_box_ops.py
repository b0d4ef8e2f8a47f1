"""yolact/ops/box_ops.py: conversions, IoU (against pycocotools), SSD coding, and matching parity with the original.

The matching reference is the fixture's ``match_conf_t`` / ``match_idx_t`` / ``match_loc_t``, captured by wrapping
the original ``match`` inside MultiBoxLoss (../shared/fixtures/reference_r50/README.md).
"""

import numpy as np
import pytest
import tensorflow as tf
from pycocotools import mask as mask_utils

from config import get_config
from yolact.ops import box_ops
from yolact.ops.anchors import make_anchors


def _xywh(b):
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1).astype(np.float64)


def _gt(fixture_inputs, k):
    boxes = fixture_inputs[f"gt_boxes{k}"]
    labels = fixture_inputs[f"gt_labels{k}"]
    nc = int(fixture_inputs[f"num_crowds{k}"])
    g = len(boxes) - nc
    return boxes[:g], labels[:g] + 1, boxes[g:], nc  # crowds are the last rows; class channel = label + 1


def test_point_form_center_size(fixture_outputs):
    pf = box_ops.point_form(tf.constant([[0.5, 0.5, 0.2, 0.4]])).numpy()
    np.testing.assert_allclose(pf, [[0.4, 0.3, 0.6, 0.7]], atol=1e-7)
    priors = fixture_outputs["priors"]
    back = box_ops.center_size(box_ops.point_form(priors)).numpy()
    np.testing.assert_allclose(back, priors, atol=1e-7)


def test_iou_and_crowd_iou_equal_pycocotools(fixture_inputs, fixture_outputs):
    gt = fixture_inputs["gt_boxes0"]
    anchors = box_ops.point_form(fixture_outputs["priors"][::37]).numpy()
    ours = box_ops.iou(gt, anchors).numpy()
    ref = mask_utils.iou(_xywh(anchors), _xywh(gt), [0] * len(gt)).T  # pycocotools: [dt, gt]
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    # Crowd variant: intersection over the area of the first argument (pycocotools' iscrowd: over the dt area).
    ours_crowd = box_ops.jaccard(anchors, gt, iscrowd=True).numpy()
    ref_crowd = mask_utils.iou(_xywh(anchors), _xywh(gt), [1] * len(gt))
    np.testing.assert_allclose(ours_crowd, ref_crowd, atol=1e-5)
    assert ours.shape == (len(gt), len(anchors)) and ours_crowd.shape == (len(anchors), len(gt))


def test_encode_decode():
    anchors = tf.constant([[0.5, 0.5, 0.2, 0.4]])
    gt = tf.constant([[0.45, 0.35, 0.65, 0.95]])  # centre (0.55, 0.65), size (0.2, 0.6)
    loc = box_ops.encode(gt, anchors).numpy()
    np.testing.assert_allclose(loc, [[0.05 / 0.02, 0.15 / 0.04, 0.0, np.log(1.5) / 0.2]], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(box_ops.decode(loc, anchors).numpy(), gt.numpy(), atol=1e-6)
    assert np.isneginf(box_ops.encode(tf.constant([[0.3, 0.3, 0.3, 0.5]]), anchors).numpy()[0, 2])


@pytest.mark.parametrize("k", [0, 1])
def test_match_reproduces_fixture(fixture_inputs, fixture_outputs, k):
    boxes, classes, crowds, nc = _gt(fixture_inputs, k)
    cls_t, loc_t, idx_t = box_ops.match(boxes, classes, fixture_outputs["priors"], crowd_boxes=crowds)
    np.testing.assert_array_equal(cls_t.numpy(), fixture_outputs["match_conf_t"][k])
    np.testing.assert_array_equal(idx_t.numpy(), fixture_outputs["match_idx_t"][k])
    np.testing.assert_allclose(loc_t.numpy(), fixture_outputs["match_loc_t"][k], atol=1e-5, rtol=0)
    assert cls_t.dtype == tf.int32 and idx_t.dtype == tf.int32 and loc_t.dtype == tf.float32


def test_match_padded_in_graph_and_batched(fixture_inputs, fixture_outputs):
    """Zero-padded GT with valid counts, per image inside one tf.function over the batch."""
    anchors = tf.constant(make_anchors(get_config("yolact_resnet50")))
    np.testing.assert_array_equal(anchors.numpy(), fixture_outputs["priors"])
    g_max, c_max = 30, 4
    pb, pc, pcr, ng, ncr = [], [], [], [], []
    for k in range(2):
        boxes, classes, crowds, nc = _gt(fixture_inputs, k)
        b = np.zeros((g_max, 4), np.float32)
        b[: len(boxes)] = boxes
        b[len(boxes):] = [0.1, 0.1, 0.9, 0.9]  # junk in padding rows must be ignored
        c = np.zeros(g_max, np.int32)
        c[: len(boxes)] = classes
        cr = np.full((c_max, 4), [0.0, 0.0, 1.0, 1.0], np.float32)  # junk crowd padding
        cr[:nc] = crowds
        pb.append(b), pc.append(c), pcr.append(cr), ng.append(len(boxes)), ncr.append(nc)
    @tf.function
    def fn(boxes, classes, anchors, num_gt, crowds, num_crowds):
        per_image = [box_ops.match(boxes[i], classes[i], anchors, num_gt[i], crowds[i], num_crowds[i])
                     for i in range(len(pb))]
        return [tf.stack(t) for t in zip(*per_image)]

    cls_t, loc_t, idx_t = fn(np.stack(pb), np.stack(pc), anchors, np.array(ng), np.stack(pcr), np.array(ncr))
    np.testing.assert_array_equal(cls_t.numpy(), fixture_outputs["match_conf_t"])
    np.testing.assert_array_equal(idx_t.numpy(), fixture_outputs["match_idx_t"])
    np.testing.assert_allclose(loc_t.numpy(), fixture_outputs["match_loc_t"], atol=1e-5, rtol=0)


def test_forcing_gives_every_gt_a_distinct_anchor(fixture_outputs):
    """Identical GTs, and a GT far smaller than any anchor (best IoU < 0.4), still each own a positive anchor."""
    priors = fixture_outputs["priors"]
    boxes = np.array([[0.2, 0.2, 0.5, 0.6], [0.2, 0.2, 0.5, 0.6], [0.70, 0.70, 0.702, 0.703]], np.float32)
    cls_t, _, idx_t = box_ops.match(boxes, [3, 5, 7], priors)
    best = box_ops.iou(boxes, box_ops.point_form(priors)).numpy().max(1)
    assert best[2] < 0.4
    pos = cls_t.numpy() > 0
    assert set(idx_t.numpy()[pos]) == {0, 1, 2}
    assert (cls_t.numpy()[pos & (idx_t.numpy() == 2)] == 7).sum() == 1


def test_match_zero_gt_is_all_background_and_crowds_neutral(fixture_outputs):
    priors = fixture_outputs["priors"]
    crowd = np.array([[0.0, 0.0, 0.5, 0.5]], np.float32)
    cls_t, loc_t, idx_t = box_ops.match(np.zeros((0, 4), np.float32), np.zeros(0, np.int32), priors,
                                        crowd_boxes=crowd)
    covered = box_ops.jaccard(box_ops.point_form(priors), crowd, iscrowd=True).numpy()[:, 0] > 0.7
    np.testing.assert_array_equal(cls_t.numpy(), np.where(covered, -1, 0))
    assert covered.sum() > 100
    assert not loc_t.numpy().any() and not idx_t.numpy().any()
