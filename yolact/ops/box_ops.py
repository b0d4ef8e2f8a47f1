"""Box conversions, IoU, SSD box coding and anchor matching, in graph TensorFlow.

original: layers/box_utils.py (point_form, center_size, intersect, jaccard, encode, decode, match);
shared/docs/yolact_reference.md §6. Every function is pure TF (no Python side effects), so it runs eagerly, inside
``tf.function`` and inside ``tf.data`` maps. Box formats are named explicitly:

* point form: relative ``[x1, y1, x2, y2]`` (divided by the network input size);
* center size: relative ``[cx, cy, w, h]`` (the anchors' format, ``yolact/ops/anchors.py``).

The arithmetic follows the original's operation order so that float32 results agree bit for bit where possible.
"""

from __future__ import annotations

from typing import Tuple

import tensorflow as tf

VARIANCES = (0.1, 0.2)


def point_form(boxes: tf.Tensor) -> tf.Tensor:
    """Center size ``[cx, cy, w, h]`` → point form ``[x1, y1, x2, y2]``.

    Args:
      boxes: float [..., 4] center-size boxes (any units).
    Returns:
      float [..., 4] ``[cx - w/2, cy - h/2, cx + w/2, cy + h/2]``. original: layers/box_utils.py point_form.
    """
    boxes = tf.convert_to_tensor(boxes)
    return tf.concat([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], axis=-1)


def center_size(boxes: tf.Tensor) -> tf.Tensor:
    """Point form ``[x1, y1, x2, y2]`` → center size ``[cx, cy, w, h]``.

    Args:
      boxes: float [..., 4] point-form boxes.
    Returns:
      float [..., 4]. original: layers/box_utils.py center_size.
    """
    boxes = tf.convert_to_tensor(boxes)
    return tf.concat([(boxes[..., 2:] + boxes[..., :2]) / 2, boxes[..., 2:] - boxes[..., :2]], axis=-1)


def box_area(boxes: tf.Tensor) -> tf.Tensor:
    """Area of point-form boxes: float [..., 4] → [...] ``(x2 - x1) * (y2 - y1)`` (not clamped)."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def intersect(box_a: tf.Tensor, box_b: tf.Tensor) -> tf.Tensor:
    """Pairwise intersection areas.

    Args:
      box_a: float [..., A, 4] point form; box_b: float [..., B, 4] point form (same leading dims or broadcastable).
    Returns:
      float [..., A, B], the intersection clamped at 0 (no +1). original: layers/box_utils.py intersect.
    """
    box_a = tf.convert_to_tensor(box_a)
    box_b = tf.convert_to_tensor(box_b, dtype=box_a.dtype)
    # Per-coordinate [..., A, 1] x [..., 1, B] broadcasting (faster than [..., A, B, 2] slices, same arithmetic).
    ax1, ay1, ax2, ay2 = tf.unstack(box_a[..., :, None, :], 4, axis=-1)
    bx1, by1, bx2, by2 = tf.unstack(box_b[..., None, :, :], 4, axis=-1)
    w = tf.maximum(tf.minimum(ax2, bx2) - tf.maximum(ax1, bx1), 0.0)
    h = tf.maximum(tf.minimum(ay2, by2) - tf.maximum(ay1, by1), 0.0)
    return w * h


def jaccard(box_a: tf.Tensor, box_b: tf.Tensor, iscrowd: bool = False) -> tf.Tensor:
    """Pairwise IoU (Jaccard overlap), or with ``iscrowd`` the intersection over the area of ``box_a``.

    The crowd variant is used with the anchors as ``box_a`` and the crowd boxes as ``box_b`` (how much of each
    anchor lies inside a crowd region).

    Args:
      box_a: float [..., A, 4] point form.
      box_b: float [..., B, 4] point form.
      iscrowd: False → ``inter / (area_a + area_b - inter)``; True → ``inter / area_a``.
    Returns:
      float [..., A, B]. Degenerate boxes give NaN/inf exactly as the original (no epsilon).
      original: layers/box_utils.py jaccard.
    """
    box_a = tf.convert_to_tensor(box_a)
    box_b = tf.convert_to_tensor(box_b, dtype=box_a.dtype)
    inter = intersect(box_a, box_b)
    area_a = box_area(box_a)[..., :, None]
    if iscrowd:
        return inter / area_a
    area_b = box_area(box_b)[..., None, :]
    union = area_a + area_b - inter
    return inter / union


def iou(box_a: tf.Tensor, box_b: tf.Tensor) -> tf.Tensor:
    """Plain pairwise IoU of point-form boxes: float [..., A, 4] × [..., B, 4] → [..., A, B] (:func:`jaccard`)."""
    return jaccard(box_a, box_b, iscrowd=False)


def crowd_iou(box_a: tf.Tensor, box_b: tf.Tensor) -> tf.Tensor:
    """Intersection over the area of ``box_a`` (the original's ``jaccard(..., iscrowd=True)``), [..., A, B]."""
    return jaccard(box_a, box_b, iscrowd=True)


def encode(matched: tf.Tensor, anchors: tf.Tensor, variances: Tuple[float, float] = VARIANCES) -> tf.Tensor:
    """SSD box encoding of matched GT boxes against anchors.

    Args:
      matched: float32 [..., N, 4] relative point form ``[x1, y1, x2, y2]`` (the GT matched to each anchor).
      anchors: float32 [N, 4] (or [..., N, 4]) relative center size ``[cx, cy, w, h]``.
      variances: (center, size) variances, (0.1, 0.2).
    Returns:
      float32 [..., N, 4] ``(dx, dy, dw, dh)``: ``dx = (gcx - pcx) / (0.1 pw)``, ``dw = log(gw / pw) / 0.2``.
      A zero-width or zero-height GT gives -inf (as the original). original: layers/box_utils.py encode.
    """
    matched = tf.convert_to_tensor(matched)
    anchors = tf.convert_to_tensor(anchors, dtype=matched.dtype)
    g_cxcy = (matched[..., :2] + matched[..., 2:]) / 2 - anchors[..., :2]
    g_cxcy = g_cxcy / (variances[0] * anchors[..., 2:])
    g_wh = (matched[..., 2:] - matched[..., :2]) / anchors[..., 2:]
    g_wh = tf.math.log(g_wh) / variances[1]
    return tf.concat([g_cxcy, g_wh], axis=-1)


def decode(loc: tf.Tensor, anchors: tf.Tensor, variances: Tuple[float, float] = VARIANCES) -> tf.Tensor:
    """Inverse of :func:`encode`: predicted offsets → boxes.

    Args:
      loc: float32 [..., N, 4] ``(dx, dy, dw, dh)``.
      anchors: float32 [N, 4] (or [..., N, 4]) relative center size ``[cx, cy, w, h]``.
    Returns:
      float32 [..., N, 4] relative point form ``[x1, y1, x2, y2]``, unclipped. Computed as the original:
      ``x1 = cx - w/2`` then ``x2 = x1 + w``. original: layers/box_utils.py decode.
    """
    loc = tf.convert_to_tensor(loc)
    anchors = tf.convert_to_tensor(anchors, dtype=loc.dtype)
    cxcy = anchors[..., :2] + loc[..., :2] * variances[0] * anchors[..., 2:]
    wh = anchors[..., 2:] * tf.exp(loc[..., 2:] * variances[1])
    xy1 = cxcy - wh / 2
    return tf.concat([xy1, wh + xy1], axis=-1)


def _force_matches(overlaps: tf.Tensor, num_gt: tf.Tensor, best_overlap: tf.Tensor, best_idx: tf.Tensor):
    """The original's greedy forcing loop (``num_gt`` passes), with incremental row maxima.

    Each pass takes the globally largest remaining entry (GT j, anchor i; first index on ties, as torch), then
    removes row j and column i (the original sets them to -1) and forces ``best_overlap[i] = 2``,
    ``best_idx[i] = j``. Rows >= ``num_gt`` (padding) start removed. Only rows whose maximum sat in the removed
    column are re-scanned, which gives the same result as re-scanning all rows.
    """
    g = tf.shape(overlaps)[0]
    row_valid = tf.range(g) < num_gt
    col_removed = tf.zeros(tf.shape(overlaps)[1:2], tf.bool)
    row_max = tf.where(row_valid, tf.reduce_max(overlaps, axis=1), -1.0)
    row_arg = tf.argmax(overlaps, axis=1, output_type=tf.int32)

    def body(k, row_max, row_arg, row_valid, col_removed, best_overlap, best_idx):
        j = tf.argmax(row_max, output_type=tf.int32)
        i = row_arg[j]
        best_overlap = tf.tensor_scatter_nd_update(best_overlap, [[i]], [tf.constant(2.0, best_overlap.dtype)])
        best_idx = tf.tensor_scatter_nd_update(best_idx, [[i]], [j])
        col_removed = tf.tensor_scatter_nd_update(col_removed, [[i]], [True])
        row_valid = tf.tensor_scatter_nd_update(row_valid, [[j]], [False])
        # Rows whose maximum was in column i (and still valid) are re-scanned with the removed columns at -1.
        stale = tf.where(row_valid & tf.equal(row_arg, i))[:, 0]
        rows = tf.where(col_removed[None, :], tf.constant(-1.0, overlaps.dtype), tf.gather(overlaps, stale))
        row_max = tf.tensor_scatter_nd_update(row_max, stale[:, None], tf.reduce_max(rows, axis=1))
        row_arg = tf.tensor_scatter_nd_update(row_arg, stale[:, None], tf.argmax(rows, axis=1, output_type=tf.int32))
        row_max = tf.tensor_scatter_nd_update(row_max, [[j]], [tf.constant(-1.0, overlaps.dtype)])
        # When every remaining overlap of a valid row is removed its max is -1, as in the original.
        return k + 1, row_max, row_arg, row_valid, col_removed, best_overlap, best_idx

    _, _, _, _, _, best_overlap, best_idx = tf.while_loop(
        lambda k, *_: k < num_gt,
        body,
        (tf.constant(0, tf.int32), row_max, row_arg, row_valid, col_removed, best_overlap, best_idx),
    )
    return best_overlap, best_idx


def match(
    gt_boxes: tf.Tensor,
    gt_classes: tf.Tensor,
    anchors: tf.Tensor,
    num_gt=None,
    crowd_boxes: tf.Tensor | None = None,
    num_crowds=None,
    threshold_pos: float = 0.5,
    threshold_neg: float = 0.4,
    crowd_iou_threshold: float = 0.7,
    variances: Tuple[float, float] = VARIANCES,
):
    """Match anchors to ground truth for one image (original: layers/box_utils.py match; reference §6.1).

    1. IoU of every (GT, anchor), anchors in point form; each anchor takes its best GT (first index on ties).
    2. Forcing loop, ``num_gt`` passes: the globally largest remaining overlap (GT j, anchor i) forces anchor i onto
       GT j with overlap 2; row j and column i leave the pool. Every GT thus owns a distinct anchor.
    3. class = ``gt_classes[best]``; overlap < ``threshold_pos`` → -1 (neutral); < ``threshold_neg`` → 0.
    4. Crowds: non-positive anchors whose intersection-over-anchor-area with any crowd box exceeds
       ``crowd_iou_threshold`` become neutral (-1) (skipped when ``crowd_iou_threshold >= 1``).
    5. ``loc_t = encode(gt_boxes[best], anchors)``.

    Padded inputs: rows ``>= num_gt`` of ``gt_boxes`` and ``>= num_crowds`` of ``crowd_boxes`` are ignored, so fixed
    shapes work inside ``tf.data`` / ``tf.function``.

    Zero valid GT (``num_gt == 0``): the original crashes (``overlaps.max(0)`` on an empty tensor). Here every anchor
    is background (``cls_t`` 0, then neutral where a crowd covers it), ``idx_t`` 0 and ``loc_t`` 0.

    Args:
      gt_boxes: float32 [G, 4] relative ``[x1, y1, x2, y2]`` non-crowd GT boxes (possibly zero-padded).
      gt_classes: int [G] class channel of each GT, 1..C-1 (the original's ``label + 1``).
      anchors: float32 [N, 4] relative ``[cx, cy, w, h]`` (``yolact/ops/anchors.py``).
      num_gt: int scalar, valid rows of ``gt_boxes`` (default: all G).
      crowd_boxes: float32 [Gc, 4] relative ``[x1, y1, x2, y2]`` crowd boxes, or None.
      num_crowds: int scalar, valid rows of ``crowd_boxes`` (default: all Gc).
      threshold_pos, threshold_neg: IoU thresholds (positive >=, background <).
      crowd_iou_threshold: crowd intersection-over-anchor-area threshold (strict >).
    Returns:
      ``(cls_t, loc_t, idx_t)``: int32 [N] in {-1, 0, 1..C-1}; float32 [N, 4] encoded ``(dx, dy, dw, dh)``;
      int32 [N] index of the matched GT row (set for every anchor).
    """
    gt_boxes = tf.convert_to_tensor(gt_boxes, tf.float32)
    gt_classes = tf.cast(gt_classes, tf.int32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    g = tf.shape(gt_boxes)[0]
    n = tf.shape(anchors)[0]
    num_gt = g if num_gt is None else tf.minimum(tf.cast(num_gt, tf.int32), g)

    decoded_anchors = point_form(anchors)
    # [num_gt, N]: only the valid rows (padding is never looked at).
    overlaps = jaccard(gt_boxes[:num_gt], decoded_anchors)
    has_gt = num_gt > 0
    best_overlap = tf.cond(
        has_gt, lambda: tf.reduce_max(overlaps, axis=0), lambda: tf.zeros([n], tf.float32)
    )
    best_idx = tf.cond(
        has_gt, lambda: tf.argmax(overlaps, axis=0, output_type=tf.int32), lambda: tf.zeros([n], tf.int32)
    )
    best_overlap, best_idx = _force_matches(overlaps, num_gt, best_overlap, best_idx)

    # One dummy row so that the gathers also work with zero GT rows (the results are then masked out).
    cls_t = tf.gather(tf.concat([gt_classes, [0]], 0), best_idx)
    cls_t = tf.where(best_overlap < threshold_pos, -1, cls_t)
    cls_t = tf.where(best_overlap < threshold_neg, 0, cls_t)
    cls_t = tf.where(has_gt, cls_t, 0)

    if crowd_boxes is not None and crowd_iou_threshold < 1:
        crowd_boxes = tf.convert_to_tensor(crowd_boxes, tf.float32)
        gc = tf.shape(crowd_boxes)[0]
        num_crowds = gc if num_crowds is None else tf.minimum(tf.cast(num_crowds, tf.int32), gc)
        crowd_overlaps = jaccard(decoded_anchors, crowd_boxes, iscrowd=True)  # [N, Gc]
        crowd_overlaps = tf.where((tf.range(gc) < num_crowds)[None, :], crowd_overlaps, 0.0)
        best_crowd = tf.reduce_max(tf.concat([crowd_overlaps, tf.zeros([n, 1])], axis=1), axis=1)
        cls_t = tf.where((cls_t <= 0) & (best_crowd > crowd_iou_threshold), -1, cls_t)

    matches = tf.gather(tf.concat([gt_boxes, [[0.0, 0.0, 1.0, 1.0]]], 0), best_idx)
    loc_t = encode(matches, anchors, variances)
    loc_t = tf.where(has_gt, loc_t, 0.0)
    return cls_t, loc_t, best_idx
