"""NMS kernels with fixed shapes: per-class Fast NMS, cross-class Fast NMS and traditional (greedy) NMS, and
:func:`nms_fn`, the cached decode + softmax + NMS graph of the detection layer (yolact/detection/generator.py).

original: layers/functions/detection.py Detect (fast_nms, cc_fast_nms, traditional_nms); box decoding and IoU come
from yolact/ops/box_ops.py (the original's decode, jaccard); shared/docs/yolact_reference.md §8.

Where the original returns a variable number of detections we return ``D = cfg.detection.max_num_detection`` rows
sorted by descending score, padded with score 0, class 0, box 0 and coefficients 0; ``num_detections`` tells how
many rows are real. The two Fast NMS variants compile with XLA.

Differences to the original that we keep on purpose (documented, tested where it matters):

* Per-class Fast NMS: none. The original returns up to ``max_num_detection`` rows; so do we.
* Cross-class Fast NMS: the original returns every kept box of the top ``top_k`` (up to 200, no 100 cap); we keep
  the best ``max_num_detection`` of them (fixed shapes).
* Traditional NMS: the original's Cython NMS works on boxes scaled by ``img_size`` with the ``+1`` pixel
  width/height convention and suppresses when IoU ``>=`` threshold. We reproduce the ``+1`` by adding 1 to x2/y2 of
  the scaled boxes and the ``>=`` by passing the largest float32 below the threshold to
  ``tf.image.non_max_suppression`` (which suppresses on ``>``). The only remaining difference is float rounding of
  the IoU inside the TF kernel. It is not XLA-compiled (the TF NMS kernel has no XLA lowering).
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from yolact.ops.box_ops import decode, iou

NMS_TYPES = ("fast", "cross_class", "traditional")
# Score given to non-candidates before sorting (real scores are softmax probabilities >= 0). Validity after a top-k
# is gathered from the boolean mask, never read back from the score: in an int8 TFLite model the scores are
# quantized on [0, 1] and -1 saturates to 0.
_INVALID = -1.0


def _suppressed_by_higher(iou: tf.Tensor, nms_threshold: float) -> tf.Tensor:
    """keep[..., j] iff max_{i<j} iou[..., i, j] <= threshold (upper-triangle trick); bool [..., k]."""
    k = iou.shape[-1]
    upper = tf.constant(np.triu(np.ones((k, k), np.float32), k=1))
    iou_max = tf.reduce_max(iou * upper, axis=-2)
    return iou_max <= nms_threshold


def _gather_rows(values: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """values [B, N, X], indices int32 [B, ...] -> [B, ..., X]."""
    return tf.gather(values, indices, batch_dims=1)


def _final_top(scores: tf.Tensor, valid: tf.Tensor, max_det: int):
    """Top ``max_det`` of ``scores`` [B, M] among ``valid``; returns (values, flat indices, valid mask)."""
    masked = tf.where(valid, scores, _INVALID)
    m = masked.shape[-1]
    k = min(max_det, m)
    top_scores, top_idx = tf.math.top_k(masked, k=k, sorted=True)
    top_valid = tf.gather(valid, top_idx, batch_dims=1)  # not ``top_scores > _INVALID / 2``: see _INVALID
    if k < max_det:
        pad = [[0, 0], [0, max_det - k]]
        top_scores = tf.pad(top_scores, pad, constant_values=_INVALID)
        top_idx = tf.pad(top_idx, pad)
        top_valid = tf.pad(top_valid, pad)
    return top_scores, top_idx, top_valid


def _pack(boxes, classes, scores, coefs, valid) -> Dict[str, tf.Tensor]:
    """Zero the padding rows and count the real ones."""
    vf = tf.cast(valid, tf.float32)
    return {
        "boxes": boxes * vf[..., None],
        "classes": tf.where(valid, tf.cast(classes, tf.int32), 0),
        "scores": tf.where(valid, scores, 0.0),
        "coefs": coefs * vf[..., None],
        "num_detections": tf.reduce_sum(tf.cast(valid, tf.int32), axis=-1),
    }


def fast_nms(boxes, fg_scores, coefs, conf_threshold, top_k, nms_threshold, max_num_detection):
    """Per-class Fast NMS with fixed shapes.

    original: Detect.detect + Detect.fast_nms (second_threshold False).

    Args:
      boxes: float32 [B, N, 4] relative ``[x1, y1, x2, y2]``.
      fg_scores: float32 [B, N, C-1] softmax probabilities of the foreground classes.
      coefs: float32 [B, N, K] mask coefficients.
      conf_threshold: an anchor is a candidate iff its max foreground score is > this.
      top_k: candidates kept per class.
      nms_threshold: keep iff max IoU with any higher-scored box of the class is <= this.
      max_num_detection: D, rows returned.

    Returns:
      dict boxes [B,D,4], classes int32 [B,D] (0-based foreground), scores [B,D], coefs [B,D,K],
      num_detections int32 [B]; padding rows are zero.
    """
    num_fg = fg_scores.shape[-1]
    n = fg_scores.shape[-2]
    k = min(top_k, n)
    candidate = tf.reduce_max(fg_scores, axis=-1) > conf_threshold  # [B, N]
    masked = tf.where(candidate[..., None], fg_scores, _INVALID)
    cls_scores, cls_idx = tf.math.top_k(tf.transpose(masked, [0, 2, 1]), k=k, sorted=True)  # [B, C-1, k]
    valid = tf.gather(candidate, cls_idx, batch_dims=1)
    batch = tf.shape(boxes)[0]
    flat_idx = tf.reshape(cls_idx, [batch, num_fg * k])
    cls_boxes = tf.reshape(_gather_rows(boxes, flat_idx), [batch, num_fg, k, 4])
    keep = _suppressed_by_higher(iou(cls_boxes, cls_boxes), nms_threshold) & valid  # [B, C-1, k]
    top_scores, top_flat, top_valid = _final_top(
        tf.reshape(cls_scores, [batch, num_fg * k]), tf.reshape(keep, [batch, num_fg * k]), max_num_detection)
    anchor_idx = tf.gather(flat_idx, top_flat, batch_dims=1)
    classes = top_flat // k
    return _pack(_gather_rows(boxes, anchor_idx), classes, top_scores, _gather_rows(coefs, anchor_idx), top_valid)


def cross_class_fast_nms(boxes, fg_scores, coefs, conf_threshold, top_k, nms_threshold, max_num_detection):
    """Fast NMS across classes: each anchor takes its best class, then one IoU test over all classes.

    original: Detect.detect + Detect.cc_fast_nms. Unlike the original (no cap), at most ``max_num_detection`` rows
    are returned. Arguments and result as :func:`fast_nms`.
    """
    n = fg_scores.shape[-2]
    k = min(top_k, n)
    best = tf.reduce_max(fg_scores, axis=-1)  # [B, N]
    best_cls = tf.argmax(fg_scores, axis=-1, output_type=tf.int32)
    candidate = best > conf_threshold
    masked = tf.where(candidate, best, _INVALID)
    top_scores, top_idx = tf.math.top_k(masked, k=k, sorted=True)  # [B, k]
    valid = tf.gather(candidate, top_idx, batch_dims=1)
    cand_boxes = _gather_rows(boxes, top_idx)
    keep = _suppressed_by_higher(iou(cand_boxes, cand_boxes), nms_threshold) & valid
    scores, pos, out_valid = _final_top(top_scores, keep, max_num_detection)
    anchor_idx = tf.gather(top_idx, pos, batch_dims=1)
    classes = tf.gather(best_cls, anchor_idx, batch_dims=1)
    return _pack(_gather_rows(boxes, anchor_idx), classes, scores, _gather_rows(coefs, anchor_idx), out_valid)


def traditional_nms(boxes, fg_scores, coefs, conf_threshold, nms_threshold, max_num_detection, img_size):
    """Per-class greedy NMS with ``tf.image.non_max_suppression``, the original's Cython conventions emulated.

    original: Detect.traditional_nms + utils/cython_nms.pyx: per class, boxes with that class's score
    > ``conf_threshold`` (no top_k), scaled by ``img_size`` with +1 width/height, suppressed when IoU >= threshold;
    all classes merged and the best ``max_num_detection`` kept. Arguments and result as :func:`fast_nms`;
    ``img_size`` is the network input side S in pixels, or ``(H, W)`` for a rectangular input (x scaled by W, y by
    H: the +1 convention acts in input pixels along each axis). Not XLA-compilable.
    """
    num_fg = fg_scores.shape[-1]
    batch = tf.shape(boxes)[0]
    in_h, in_w = (img_size, img_size) if np.isscalar(img_size) else img_size
    scaled = boxes * tf.constant([in_w, in_h, in_w, in_h], boxes.dtype)
    plus_one = tf.concat([scaled[..., :2], scaled[..., 2:] + 1.0], axis=-1)
    iou_thr = float(np.nextafter(np.float32(nms_threshold), np.float32(0)))  # '>' on this == '>=' on threshold
    per_class_boxes = tf.repeat(plus_one, num_fg, axis=0)  # [B*(C-1), N, 4] row b*(C-1)+c
    per_class_scores = tf.reshape(tf.transpose(fg_scores, [0, 2, 1]), [-1, fg_scores.shape[-2]])

    def one(args):
        b, s = args
        idx = tf.image.non_max_suppression(b, s, max_num_detection, iou_threshold=iou_thr,
                                           score_threshold=conf_threshold)
        n_sel = tf.shape(idx)[0]
        return (tf.pad(idx, [[0, max_num_detection - n_sel]]),
                tf.sequence_mask(n_sel, max_num_detection))

    idx, sel_valid = tf.map_fn(one, (per_class_boxes, per_class_scores),
                               fn_output_signature=(tf.TensorSpec([max_num_detection], tf.int32),
                                                    tf.TensorSpec([max_num_detection], tf.bool)))
    sel_scores = tf.reshape(tf.gather(per_class_scores, idx, batch_dims=1), [batch, num_fg * max_num_detection])
    idx = tf.reshape(idx, [batch, num_fg * max_num_detection])
    sel_valid = tf.reshape(sel_valid, [batch, num_fg * max_num_detection])
    scores, pos, out_valid = _final_top(sel_scores, sel_valid, max_num_detection)
    anchor_idx = tf.gather(idx, pos, batch_dims=1)
    classes = pos // max_num_detection
    return _pack(_gather_rows(boxes, anchor_idx), classes, scores, _gather_rows(coefs, anchor_idx), out_valid)


def _detect_graph(loc, conf, mask, anchors, det_cfg, nms_type, img_size):
    n = anchors.shape[0]  # static shapes for top_k / reshapes even when the model's outputs lost them
    loc = tf.ensure_shape(loc, [None, n, 4])
    conf = tf.ensure_shape(conf, [None, n, None])
    mask = tf.ensure_shape(mask, [None, n, None])
    boxes = decode(loc, anchors)
    fg_scores = tf.nn.softmax(conf, axis=-1)[..., 1:]
    if nms_type == "fast":
        return fast_nms(boxes, fg_scores, mask, det_cfg.conf_threshold, det_cfg.top_k, det_cfg.nms_threshold,
                        det_cfg.max_num_detection)
    if nms_type == "cross_class":
        return cross_class_fast_nms(boxes, fg_scores, mask, det_cfg.conf_threshold, det_cfg.top_k,
                                    det_cfg.nms_threshold, det_cfg.max_num_detection)
    return traditional_nms(boxes, fg_scores, mask, det_cfg.conf_threshold, det_cfg.nms_threshold,
                           det_cfg.max_num_detection, img_size)


_COMPILED = {}


def resolve_nms(cfg, nms_type: Optional[str] = None, jit: Optional[bool] = None):
    """``(nms_type, jit)`` with the defaults filled in: ``cfg.detection.nms_type``; XLA on for the Fast NMS variants
    (CPU and GPU alike), off for 'traditional'.

    Raises:
      ValueError: unknown ``nms_type`` or ``jit=True`` with traditional NMS.
    """
    nms_type = nms_type or cfg.detection.nms_type
    if nms_type not in NMS_TYPES:
        raise ValueError(f"unknown nms_type {nms_type!r}; expected one of {NMS_TYPES}")
    if jit is None:
        jit = nms_type != "traditional"
    if jit and nms_type == "traditional":
        raise ValueError("traditional NMS uses tf.image.non_max_suppression, which XLA cannot compile; use jit=False")
    return nms_type, bool(jit)


def nms_fn(cfg, nms_type: Optional[str] = None, jit: Optional[bool] = None):
    """A cached ``tf.function`` ``(loc, conf, mask, anchors) -> detections``: decode ``loc`` against the anchors,
    softmax of ``conf``, then the NMS (original: Detect.__call__, shared/docs/yolact_reference.md §8 steps 1-5).

    The function takes ``loc`` float32 [B,N,4] (encoded), ``conf`` float32 [B,N,C] logits, ``mask`` float32 [B,N,K]
    coefficients and ``anchors`` float32 [N,4] relative ``[cx, cy, w, h]``; it returns, D =
    ``cfg.detection.max_num_detection``, rows sorted by descending score, padding rows zero: ``boxes`` float32
    [B,D,4] relative ``[x1, y1, x2, y2]`` (unclipped), ``classes`` int32 [B,D] 0-based foreground class (channel
    - 1), ``scores`` float32 [B,D], ``coefs`` float32 [B,D,K], ``num_detections`` int32 [B].

    Raises:
      ValueError: see :func:`resolve_nms`.
    """
    nms_type, jit = resolve_nms(cfg, nms_type, jit)
    key = (cfg.detection, nms_type, jit, cfg.input_size)
    if key not in _COMPILED:
        det_cfg, img_size = cfg.detection, cfg.input_size

        def run(loc, conf, mask, anchors):
            return _detect_graph(loc, conf, mask, anchors, det_cfg, nms_type, img_size)

        _COMPILED[key] = tf.function(run, jit_compile=jit, reduce_retracing=True)
    return _COMPILED[key]


__all__ = ["NMS_TYPES", "fast_nms", "cross_class_fast_nms", "traditional_nms", "resolve_nms", "nms_fn"]
