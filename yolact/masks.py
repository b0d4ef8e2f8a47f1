"""Mask assembly and box post-processing at the original image size.

original: layers/output_utils.py postprocess (lincomb, crop_masks True, score_threshold 0) and layers/box_utils.py
crop / sanitize_coordinates; shared/docs/yolact_reference.md §8 step 6.

Steps: ``sigmoid(proto @ coefsᵀ)`` at prototype resolution → zero everything outside the predicted box padded by one
prototype pixel → bilinear (half-pixel, no antialias) resize straight to the original ``(h, w)`` → ``> 0.5``.
Boxes: relative ``[x1, y1, x2, y2]`` × (w, h), ordered, clamped to [0, w] / [0, h], truncated to int.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import tensorflow as tf


def sanitize_coordinates(x1: tf.Tensor, x2: tf.Tensor, size, padding: float = 0.0):
    """Relative coordinates to (unrounded) pixels, ordered and clamped.

    original: layers/box_utils.py sanitize_coordinates with ``cast=False``.

    Args:
      x1, x2: float32 [...] relative coordinates (either may be the larger).
      size: image side in pixels (int or scalar tensor).
      padding: pixels subtracted from the min / added to the max before clamping.

    Returns:
      (lo, hi) float32 [...] pixels, ``0 <= lo``, ``hi <= size``.
    """
    size = tf.cast(size, tf.float32)
    x1 = x1 * size
    x2 = x2 * size
    lo = tf.maximum(tf.minimum(x1, x2) - padding, 0.0)
    hi = tf.minimum(tf.maximum(x1, x2) + padding, size)
    return lo, hi


def crop(masks: tf.Tensor, boxes: tf.Tensor, padding: float = 1.0) -> tf.Tensor:
    """Zero mask pixels outside each box (padded by ``padding`` pixels of the mask grid).

    original: layers/box_utils.py crop: a pixel (col x, row y) survives iff x1 <= x < x2 and y1 <= y < y2.

    Args:
      masks: float32 [B, H, W, D] (detections last, as the original's [h, w, n]).
      boxes: float32 [B, D, 4] relative ``[x1, y1, x2, y2]``.

    Returns:
      float32 [B, H, W, D].
    """
    h, w = tf.shape(masks)[1], tf.shape(masks)[2]
    x1, x2 = sanitize_coordinates(boxes[..., 0], boxes[..., 2], w, padding)
    y1, y2 = sanitize_coordinates(boxes[..., 1], boxes[..., 3], h, padding)
    cols = tf.cast(tf.range(w), tf.float32)[None, None, :, None]
    rows = tf.cast(tf.range(h), tf.float32)[None, :, None, None]
    inside_x = (cols >= x1[:, None, None, :]) & (cols < x2[:, None, None, :])
    inside_y = (rows >= y1[:, None, None, :]) & (rows < y2[:, None, None, :])
    return masks * tf.cast(inside_x & inside_y, masks.dtype)


def assemble_masks(proto: tf.Tensor, coefs: tf.Tensor, boxes: tf.Tensor, height, width,
                   crop_to_box: bool = True) -> tf.Tensor:
    """Mask probabilities at the original image size.

    original: layers/output_utils.py postprocess, lincomb branch (before ``gt_(0.5)``).

    Args:
      proto: float32 [B, Hp, Wp, K] prototypes.
      coefs: float32 [B, D, K] mask coefficients of the detections.
      boxes: float32 [B, D, 4] relative ``[x1, y1, x2, y2]`` (the detections' predicted boxes).
      height, width: output size in pixels (the original image), int or scalar int tensor.
      crop_to_box: zero outside the box padded by 1 prototype pixel, before upsampling (the original's default).

    Returns:
      float32 [B, D, height, width] probabilities in [0, 1]; ``> 0.5`` is the binary mask.
    """
    masks = tf.sigmoid(tf.einsum("bhwk,bdk->bhwd", proto, coefs))
    if crop_to_box:
        masks = crop(masks, boxes, padding=1.0)
    masks = tf.image.resize(masks, tf.stack([height, width]), method="bilinear", antialias=False)
    return tf.transpose(masks, [0, 3, 1, 2])


def boxes_to_pixels(boxes: tf.Tensor, height, width) -> tf.Tensor:
    """Relative boxes to integer pixel boxes of the original image.

    original: postprocess: sanitize_coordinates(cast=False, padding 0) then ``.long()`` (truncation).

    Args:
      boxes: float32 [..., 4] relative ``[x1, y1, x2, y2]``.
      height, width: image size in pixels.

    Returns:
      int32 [..., 4] pixel ``[x1, y1, x2, y2]`` with ``0 <= x1 <= x2 <= width`` (same for y).
    """
    x1, x2 = sanitize_coordinates(boxes[..., 0], boxes[..., 2], width)
    y1, y2 = sanitize_coordinates(boxes[..., 1], boxes[..., 3], height)
    return tf.cast(tf.stack([x1, y1, x2, y2], axis=-1), tf.int32)  # values >= 0: cast truncates like .long()


def postprocess(detections: Dict[str, tf.Tensor], proto: tf.Tensor, height: int, width: int,
                score_threshold: float = 0.0, crop_to_box: bool = True,
                max_detections: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Final detections of ONE image at its original size, as numpy, real rows only.

    original: layers/output_utils.py postprocess(dets, w, h, batch_idx, crop_masks=True, score_threshold).

    Args:
      detections: :func:`yolact.detection.detect` output for a batch of one (``boxes`` [1,D,4], ``classes``,
        ``scores``, ``coefs``, ``num_detections``), or already sliced to that image's first row; with YOLACT++
        re-scoring (:func:`yolact.maskiou.rescore_detections`) also ``mask_scores`` [1,D].
      proto: float32 [1, Hp, Wp, K] prototypes of that image.
      height, width: original image size in pixels.
      score_threshold: drop detections with score <= this (0 keeps every real row, like eval.py).
      max_detections: keep only the best this many (masks are assembled for those only; display modes).

    Returns:
      dict ``boxes`` int32 [n,4] pixel ``[x1, y1, x2, y2]``, ``classes`` int32 [n] 0-based foreground class,
      ``scores`` float32 [n] (box scores), ``masks`` uint8 [n, height, width] 0/1 and, when ``detections`` has
      them (YOLACT++), ``mask_scores`` float32 [n] (the mask AP's scores); n <= D, sorted by descending (box)
      score.

    Raises:
      ValueError: a batch larger than one.
    """
    if int(tf.shape(detections["scores"])[0]) != 1 or int(tf.shape(proto)[0]) != 1:
        raise ValueError("postprocess handles one image: slice the batch (e.g. {k: v[i:i+1]}) first")
    n = int(detections["num_detections"][0])
    scores = detections["scores"][0, :n].numpy()
    keep = np.nonzero(scores > score_threshold)[0] if score_threshold > 0 else np.arange(n)
    if max_detections is not None:
        keep = keep[:max_detections]
    if len(keep) == 0:
        empty = {"boxes": np.zeros([0, 4], np.int32), "classes": np.zeros([0], np.int32),
                 "scores": np.zeros([0], np.float32), "masks": np.zeros([0, int(height), int(width)], np.uint8)}
        return {**empty, "mask_scores": empty["scores"]} if "mask_scores" in detections else empty
    boxes = tf.gather(detections["boxes"][:, :n], keep, axis=1)
    coefs = tf.gather(detections["coefs"][:, :n], keep, axis=1)
    binary = _binary_masks_fn(bool(crop_to_box))(tf.convert_to_tensor(proto, tf.float32), coefs, boxes,
                                                 tf.constant(int(height)), tf.constant(int(width)))
    out = {
        "boxes": boxes_to_pixels(boxes[0], height, width).numpy(),
        "classes": detections["classes"][0, :n].numpy()[keep],
        "scores": scores[keep],
        "masks": binary.numpy()[0].view(np.uint8),  # bool → 0/1 bytes without a copy
    }
    if "mask_scores" in detections:
        out["mask_scores"] = detections["mask_scores"][0, :n].numpy()[keep]
    return out


_FNS = {}


def _binary_masks_fn(crop_to_box: bool):
    """Cached tf.function: assemble_masks(...) > 0.5 as bool [B, D, height, width] (thresholded in the graph)."""
    if crop_to_box not in _FNS:
        def run(proto, coefs, boxes, height, width):
            return assemble_masks(proto, coefs, boxes, height, width, crop_to_box) > 0.5

        _FNS[crop_to_box] = tf.function(run, reduce_retracing=True)
    return _FNS[crop_to_box]


__all__ = ["sanitize_coordinates", "crop", "assemble_masks", "boxes_to_pixels", "postprocess"]
