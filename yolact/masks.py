"""Mask assembly: prototypes × coefficients, the one crop to the box, upsampling; pixel boxes.

original: layers/output_utils.py postprocess (lincomb, crop_masks True) and layers/box_utils.py crop /
sanitize_coordinates; shared/docs/yolact_reference.md §8 step 6.

Steps: ``sigmoid(proto @ coefsᵀ)`` at prototype resolution → zero everything outside the predicted box padded by one
prototype pixel (:func:`crop`, the same function the training loss uses, yolact/losses.py) → bilinear (half-pixel,
no antialias) resize straight to the original ``(h, w)`` → ``> 0.5``.
Boxes: relative ``[x1, y1, x2, y2]`` × (w, h), ordered, clamped to [0, w] / [0, h], truncated to int.
The per-image selection of detections (score threshold, top k, numpy output) is
:meth:`yolact.detection.DetectionGenerator.postprocess`.
"""

from __future__ import annotations

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
    x1 = tf.cast(x1, tf.float32) * size
    x2 = tf.cast(x2, tf.float32) * size
    lo = tf.maximum(tf.minimum(x1, x2) - padding, 0.0)
    hi = tf.minimum(tf.maximum(x1, x2) + padding, size)
    return lo, hi


def crop(masks: tf.Tensor, boxes: tf.Tensor, padding: float = 1.0) -> tf.Tensor:
    """Zero every mask pixel outside its box padded by ``padding`` pixels of the mask grid.

    The one crop of the project: detection's mask assembly (:func:`assemble_masks`) and the training mask loss
    (yolact/losses.py) both use it with ``padding=1``, as the original uses ``crop`` in both places.

    original: layers/box_utils.py crop / sanitize_coordinates(cast=False): pixel (row r, col c) survives iff
    ``x1 <= c < x2`` and ``y1 <= r < y2`` with ``x1 = max(min(bx1, bx2)·W − padding, 0)``,
    ``x2 = min(max(bx1, bx2)·W + padding, W)`` (floats, no rounding), the same for y with H.

    Args:
      masks: float [..., P, H, W] (one mask per box; any leading batch dimensions).
      boxes: float [..., P, 4] relative ``[x1, y1, x2, y2]``.
      padding: pixels added on each side.

    Returns:
      ``masks`` with the pixels outside the padded boxes set to 0, same shape and dtype.
    """
    h, w = tf.shape(masks)[-2], tf.shape(masks)[-1]
    x1, x2 = sanitize_coordinates(boxes[..., 0], boxes[..., 2], w, padding)
    y1, y2 = sanitize_coordinates(boxes[..., 1], boxes[..., 3], h, padding)
    cols = tf.cast(tf.range(w), tf.float32)
    rows = tf.cast(tf.range(h), tf.float32)
    keep_x = (cols >= x1[..., None]) & (cols < x2[..., None])  # [..., P, W]
    keep_y = (rows >= y1[..., None]) & (rows < y2[..., None])  # [..., P, H]
    keep = keep_y[..., :, None] & keep_x[..., None, :]
    return masks * tf.cast(keep, masks.dtype)


def assemble_masks(proto: tf.Tensor, coefs: tf.Tensor, boxes: tf.Tensor, height=None, width=None,
                   crop_to_box: bool = True) -> tf.Tensor:
    """Mask probabilities, cropped at prototype resolution, optionally upsampled to ``(height, width)``.

    original: layers/output_utils.py postprocess, lincomb branch (before ``gt_(0.5)``).

    Args:
      proto: float32 [B, Hp, Wp, K] prototypes.
      coefs: float32 [B, D, K] mask coefficients of the detections.
      boxes: float32 [B, D, 4] relative ``[x1, y1, x2, y2]`` (the detections' predicted boxes).
      height, width: output size in pixels (the original image), int or scalar int tensor; both None: stay at the
        prototype resolution (Hp, Wp).
      crop_to_box: zero outside the box padded by 1 prototype pixel, before upsampling (the original's default).

    Returns:
      float32 [B, D, height, width] (or [B, D, Hp, Wp]) probabilities in [0, 1]; ``> 0.5`` is the binary mask.
    """
    masks = tf.sigmoid(tf.einsum("bhwk,bdk->bdhw", proto, coefs))
    if crop_to_box:
        masks = crop(masks, boxes, padding=1.0)
    if height is None and width is None:
        return masks
    masks = tf.image.resize(tf.transpose(masks, [0, 2, 3, 1]), tf.stack([height, width]), method="bilinear",
                            antialias=False)
    return tf.transpose(masks, [0, 3, 1, 2])


__all__ = ["sanitize_coordinates", "crop", "assemble_masks"]
