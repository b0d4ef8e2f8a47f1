"""Loss parity with the original MultiBoxLoss on the reference fixture, plus edge cases."""

import numpy as np
import pytest
import tensorflow as tf

from config import get_config
from yolact.losses import loss_sums, normalize_losses, yolact_loss
from yolact.masks import crop

PAD = 20  # padded GT rows (>= 17 non-crowd objects of image0)


def _resize_binarize(masks_u8, size):
    """[n, 550, 550] uint8 -> [n, size, size] float32: bilinear half-pixel (no antialias), > 0.5."""
    m = tf.convert_to_tensor(masks_u8.astype(np.float32))[..., None]
    r = tf.image.resize(m, [size, size], method="bilinear", antialias=False)[..., 0]
    return tf.cast(r > 0.5, tf.float32).numpy()


def _fixture_targets(fin, fout, num_classes=81):
    """Targets in the parser's contract built from the fixture: matching from outputs.npz, GT from inputs.npz."""
    b = fout["match_conf_t"].shape[0]
    gt_boxes = np.zeros([b, PAD, 4], np.float32)
    gt_classes = np.zeros([b, PAD], np.int32)
    gt_masks = np.zeros([b, PAD, 138, 138], np.float32)
    segm_t = np.zeros([b, 69, 69, num_classes - 1], np.float32)
    num_obj = np.zeros([b], np.int32)
    for i in range(b):
        n = len(fin[f"gt_labels{i}"]) - int(fin[f"num_crowds{i}"])
        labels = fin[f"gt_labels{i}"][:n].astype(np.int32)
        gt_boxes[i, :n] = fin[f"gt_boxes{i}"][:n]
        gt_classes[i, :n] = labels + 1
        gt_masks[i, :n] = _resize_binarize(fin[f"gt_masks{i}"][:n], 138)
        small = _resize_binarize(fin[f"gt_masks{i}"][:n], 69)
        for j in range(n):
            segm_t[i, :, :, labels[j]] = np.maximum(segm_t[i, :, :, labels[j]], small[j])
        num_obj[i] = n
    return {
        "cls_t": fout["match_conf_t"].astype(np.int32),
        "loc_t": fout["match_loc_t"],
        "idx_t": fout["match_idx_t"].astype(np.int32),
        "gt_boxes": gt_boxes,
        "gt_classes": gt_classes,
        "gt_masks": gt_masks,
        "segm_t": segm_t,
        "num_obj": num_obj,
    }


@pytest.fixture(scope="module")
def fixture_case(fixture_inputs, fixture_outputs):
    outputs = {k: fixture_outputs[k] for k in ("loc", "conf", "mask", "proto", "segm")}
    return outputs, _fixture_targets(fixture_inputs, fixture_outputs)


def _rel(a, b):
    return abs(float(a) - float(b)) / abs(float(b))


def test_losses_match_original_on_fixture(fixture_case, fixture_outputs):
    outputs, targets = fixture_case
    cfg = get_config("yolact_resnet50")
    losses = yolact_loss(outputs, targets, cfg)
    for key in ("B", "C", "M", "S"):
        ref = fixture_outputs[f"loss_{key}"]
        assert _rel(losses[key], ref) <= 1e-5, (key, float(losses[key]), float(ref))
    ref_total = sum(float(fixture_outputs[f"loss_{k}"]) for k in "BCMS")
    assert _rel(losses["total"], ref_total) <= 1e-5


def test_losses_match_original_in_xla(fixture_case, fixture_outputs):
    outputs, targets = fixture_case
    cfg = get_config("yolact_resnet50")
    fn = tf.function(lambda o, t: yolact_loss(o, t, cfg), jit_compile=True)
    losses = fn(outputs, targets)
    for key in ("B", "C", "M", "S"):
        assert _rel(losses[key], fixture_outputs[f"loss_{key}"]) <= 1e-5, key


def test_per_replica_sums_add_up_to_batch_loss(fixture_case, fixture_outputs):
    """Splitting the batch in two 'replicas' and normalizing by the global counts gives the batch losses."""
    outputs, targets = fixture_case
    cfg = get_config("yolact_resnet50")
    parts = []
    for i in range(2):
        o = {k: v[i : i + 1] for k, v in outputs.items()}
        t = {k: v[i : i + 1] for k, v in targets.items()}
        parts.append(loss_sums(o, t, cfg))
    total_pos = parts[0]["num_pos"] + parts[1]["num_pos"]
    assert int(total_pos) == int(fixture_outputs["num_pos"].sum()) == 76
    per = [normalize_losses(p, total_pos, 2) for p in parts]
    for key in ("B", "C", "M", "S"):
        assert _rel(per[0][key] + per[1][key], fixture_outputs[f"loss_{key}"]) <= 1e-5, key


def test_masks_to_train_sampling_reweights(fixture_case, fixture_outputs):
    """With masks_to_train >= positives nothing changes; with fewer, a sampled subset is re-weighted old/kept."""
    import dataclasses

    outputs, targets = fixture_case
    cfg = get_config("yolact_resnet50")
    small = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, masks_to_train=34))
    full = yolact_loss(outputs, targets, cfg)
    # image1 has exactly 34 positives: sampling all 34 in any order equals the full loss for that image.
    o1 = {k: v[1:2] for k, v in outputs.items()}
    t1 = {k: v[1:2] for k, v in targets.items()}
    a = yolact_loss(o1, t1, cfg, seed=tf.constant([1, 2]))
    b = yolact_loss(o1, t1, small, seed=tf.constant([3, 4]))
    assert _rel(a["M"], b["M"]) <= 1e-6
    # image0 has 42 positives: keep 34 -> the loss changes, but stays a re-weighted estimate of the same order.
    s1 = yolact_loss(outputs, targets, small, seed=tf.constant([5, 6]))
    s2 = yolact_loss(outputs, targets, small, seed=tf.constant([5, 6]))
    s3 = yolact_loss(outputs, targets, small, seed=tf.constant([7, 8]))
    assert float(s1["M"]) == float(s2["M"])  # stateless seed -> repeatable
    assert float(s1["M"]) != float(s3["M"])
    assert 0.5 < float(s1["M"]) / float(full["M"]) < 2.0
    # B, C, S do not depend on the mask sampling.
    for key in ("B", "C", "S"):
        assert float(s1[key]) == pytest.approx(float(full[key]), rel=1e-6)


def test_zero_positives_give_finite_losses_and_gradients(fixture_case):
    outputs, targets = fixture_case
    cfg = get_config("yolact_resnet50")
    t = dict(targets)
    t["cls_t"] = np.where(targets["cls_t"] > 0, 0, targets["cls_t"]).astype(np.int32)
    conf = tf.Variable(outputs["conf"])
    proto = tf.Variable(outputs["proto"])
    with tf.GradientTape() as tape:
        losses = yolact_loss({**outputs, "conf": conf, "proto": proto}, t, cfg)
    g_conf, g_proto = tape.gradient(losses["total"], [conf, proto])
    for key in ("B", "C", "M"):
        assert float(losses[key]) == 0.0
    assert np.isfinite(float(losses["S"])) and float(losses["S"]) > 0
    # no positives -> no OHEM negatives -> no class gradient; mask gradient is zero, not NaN
    assert np.all(np.isfinite(g_conf.numpy())) and float(tf.reduce_max(tf.abs(g_conf))) == 0.0
    assert g_proto is None or np.all(np.isfinite(g_proto.numpy()))


def test_mask_gradient_finite_with_cropped_saturated_pixels(fixture_case):
    """Cropped-out pixels (pred 0, GT 1) cost exactly 100 each and give finite gradients (BCE clamp)."""
    outputs, targets = fixture_case
    cfg = get_config("yolact_resnet50")
    coef = tf.Variable(outputs["mask"] * 50.0)  # saturate sigmoid to exactly 0/1 in float32
    with tf.GradientTape() as tape:
        losses = yolact_loss({**outputs, "mask": coef}, targets, cfg)
    g = tape.gradient(losses["M"], coef)
    assert np.isfinite(float(losses["M"]))
    assert np.all(np.isfinite(g.numpy()))


def test_crop_matches_original_rule():
    """The one crop (yolact/masks.py, used by the loss and by detection) on [..., P, H, W] masks."""
    masks = tf.ones([1, 10, 10])
    # box x 0.23..0.51, y 0.0..0.35 of a 10 px side -> x1 = 2.3-1 = 1.3, x2 = 5.1+1 = 6.1, y1 = 0, y2 = 4.5
    out = crop(masks, tf.constant([[0.51, 0.0, 0.23, 0.35]]), padding=1).numpy()[0]
    cols = np.where(out.max(axis=0) > 0)[0]
    rows = np.where(out.max(axis=1) > 0)[0]
    assert cols.tolist() == [2, 3, 4, 5, 6]  # 1.3 <= c < 6.1
    assert rows.tolist() == [0, 1, 2, 3, 4]  # 0 <= r < 4.5
    assert int(out.sum()) == 25


def test_losses_with_targets_from_data_targets(fixture_targets, fixture_outputs):
    """End to end with data/targets.py: fixture GT (incl. crowds) -> build_targets -> loss == original's loss."""
    cfg = get_config("yolact_resnet50")
    targets = fixture_targets
    np.testing.assert_array_equal(targets["cls_t"].numpy(), fixture_outputs["match_conf_t"])
    outputs = {k: fixture_outputs[k] for k in ("loc", "conf", "mask", "proto", "segm")}
    losses = yolact_loss(outputs, targets, cfg)
    for key in ("B", "C", "M", "S"):
        assert _rel(losses[key], fixture_outputs[f"loss_{key}"]) <= 1e-5, key
