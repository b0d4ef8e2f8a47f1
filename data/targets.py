"""Per-image training targets (docs/architecture.md "Parser → training"), computed in the graph.

original: layers/modules/multibox_loss.py MultiBoxLoss.forward (crowd split, match), lincomb_mask_loss (GT masks
to prototype size), semantic_segmentation_loss (segmentation target); layers/box_utils.py match.

Object cap (not in the original, which has no cap and crashes or runs out of memory with many objects): at most
``cfg.parser.num_max_pad`` objects per image, crowds included; with more, the ``num_max_pad`` largest by area are
kept (:func:`keep_largest`), in their original order. Crowds only mark anchors neutral; ``gt_*`` hold the
non-crowd objects only, in input order (the original's GT index order).
"""

from __future__ import annotations

from typing import Dict

import tensorflow as tf

from yolact.ops import box_ops


def keep_largest(areas: tf.Tensor, k: int) -> tf.Tensor:
    """Indices of the ``k`` largest entries of ``areas`` (all when there are at most ``k``), ascending order.

    Args:
      areas: float32 [n]; k: Python int.
    Returns:
      int32 [min(n, k)], sorted ascending so the input order is kept. Ties: the earlier object wins.
    """
    n = tf.shape(areas)[0]
    kk = tf.minimum(n, k)
    _, idx = tf.math.top_k(areas, k=kk, sorted=True)
    return tf.sort(idx)


def build_targets(boxes, classes, masks, is_crowd, anchors, cfg) -> Dict[str, tf.Tensor]:
    """Training targets of one image.

    Args:
      boxes: float32 [n, 4] relative ``[x1, y1, x2, y2]`` of the network input (after augmentation).
      classes: int32 [n] class channel 1..C-1 (ignored for crowds).
      masks: uint8 or float32 [H, W, n] 0/1 masks at network size (objects as channels), (H, W) =
        ``cfg.input_size``.
      is_crowd: bool [n].
      anchors: float32 [N, 4] relative ``[cx, cy, w, h]`` (``yolact.ops.anchors.make_anchors(cfg)``).
      cfg: YolactConfig.
    Returns:
      dict (M = ``cfg.parser.num_max_pad``, (Hp, Wp) = prototype size, (H3, W3) = P3 size, C =
      ``cfg.num_classes``):
      ``cls_t`` int32 [N] (−1 neutral, 0 background, class channel), ``loc_t`` float32 [N, 4] encoded,
      ``idx_t`` int32 [N], ``gt_boxes`` float32 [M, 4], ``gt_classes`` int32 [M], ``gt_masks`` float32 [M, Hp, Wp]
      (bilinear half-pixel resize, then ``> 0.5``), ``segm_t`` float32 [H3, W3, C−1] (bilinear resize to P3 size,
      ``> 0.5``, max over the objects of each class channel), ``num_obj`` int32 [] (non-crowd objects).
      An image without non-crowd objects gets all-background targets (crowd-covered anchors neutral), zero ``gt_*``
      and ``num_obj`` 0 (the original crashes there).
    """
    m = cfg.parser.num_max_pad
    hp, wp = cfg.model.proto_output_shape
    h3, w3 = cfg.feature_map_shapes()[0]
    num_fg = cfg.num_classes - 1

    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    classes = tf.cast(classes, tf.int32)
    is_crowd = tf.cast(is_crowd, tf.bool)
    masks = tf.convert_to_tensor(masks)

    keep = keep_largest(box_ops.box_area(boxes), m)
    capped = tf.shape(keep)[0] < tf.shape(boxes)[0]
    boxes, classes, is_crowd = tf.gather(boxes, keep), tf.gather(classes, keep), tf.gather(is_crowd, keep)
    # A gather on the last axis of [S, S, n] is slow: only done when the cap bites.
    masks = tf.cond(capped, lambda: tf.gather(masks, keep, axis=2), lambda: masks)

    fg = tf.cast(tf.where(~is_crowd)[:, 0], tf.int32)
    crowd = tf.cast(tf.where(is_crowd)[:, 0], tf.int32)
    gt_boxes = tf.gather(boxes, fg)
    gt_classes = tf.gather(classes, fg)
    num_obj = tf.shape(fg)[0]

    cls_t, loc_t, idx_t = box_ops.match(
        gt_boxes,
        gt_classes,
        anchors,
        num_gt=num_obj,
        crowd_boxes=tf.gather(boxes, crowd),
        threshold_pos=cfg.parser.threshold_pos,
        threshold_neg=cfg.parser.threshold_neg,
        crowd_iou_threshold=cfg.parser.crowd_iou_threshold,
    )

    # Resize every mask (plus one dummy channel, so that zero objects work), then keep the non-crowd ones.
    padded = tf.concat([masks, tf.zeros(tf.concat([tf.shape(masks)[:2], [1]], 0), masks.dtype)], axis=2)

    def down(side_h, side_w):
        small = tf.image.resize(padded, [side_h, side_w], "bilinear", antialias=False) > 0.5
        return tf.gather(tf.transpose(tf.cast(small, tf.float32), [2, 0, 1]), fg)  # [n_fg, side_h, side_w]

    proto_masks = down(hp, wp)
    p3_masks = tf.reshape(down(h3, w3), [num_obj, h3 * w3])
    segm = tf.math.unsorted_segment_max(p3_masks, gt_classes - 1, num_fg)  # empty classes: lowest float
    segm_t = tf.reshape(tf.transpose(tf.maximum(segm, 0.0)), [h3, w3, num_fg])

    pad = m - num_obj
    return {
        "cls_t": cls_t,
        "loc_t": loc_t,
        "idx_t": idx_t,
        "gt_boxes": tf.ensure_shape(tf.pad(gt_boxes, [[0, pad], [0, 0]]), [m, 4]),
        "gt_classes": tf.ensure_shape(tf.pad(gt_classes, [[0, pad]]), [m]),
        "gt_masks": tf.ensure_shape(tf.pad(proto_masks, [[0, pad], [0, 0], [0, 0]]), [m, hp, wp]),
        "segm_t": tf.ensure_shape(segm_t, [h3, w3, num_fg]),
        "num_obj": num_obj,
    }
