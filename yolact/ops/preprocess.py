"""Eval-time preprocessing, the one of every inference form: resize in float, then normalise.

original: utils/augmentations.py BaseTransform / FastBaseTransform (resize, then BackboneTransform: normalise).

* :func:`resize` — uint8/float [..., h, w, 3] RGB → float32 [..., H, W, 3] pixel values, (H, W) =
  ``cfg.input_size`` (half-pixel bilinear, no antialias, aspect not kept). Exported TFLite / ONNX graphs take exactly this (yolact/deploy/graph.py);
  :func:`resize_image` is the same op for one numpy image, as every runner calls it (yolact/runtimes.py).
* :func:`normalize` — ``(x − mean_rgb) / std_rgb``, inside the model's inference graph.
* :func:`eval_preprocess` — both, for in-graph evaluation input.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def normalize(image: tf.Tensor, cfg) -> tf.Tensor:
    """``(x − mean_rgb) / std_rgb``: float32 [..., 3] RGB 0..255 → normalized. original: BackboneTransform."""
    mean = tf.constant(cfg.model.mean_rgb, tf.float32)
    std = tf.constant(cfg.model.std_rgb, tf.float32)
    return (tf.cast(image, tf.float32) - mean) / std


def denormalize(images, cfg) -> np.ndarray:
    """Inverse of :func:`normalize` for display: float [..., 3] normalized → uint8 RGB (rounded, clipped)."""
    x = np.asarray(images, np.float32) * np.asarray(cfg.model.std_rgb, np.float32)
    return np.clip(np.rint(x + np.asarray(cfg.model.mean_rgb, np.float32)), 0, 255).astype(np.uint8)


def resize(image: tf.Tensor, cfg) -> tf.Tensor:
    """uint8/float [h, w, 3] or [B, h, w, 3] RGB → float32 [(B,) H, W, 3] pixel values 0..255, (H, W) =
    ``cfg.input_size`` (S x S for a square ``cfg.model.img_size``): half-pixel bilinear, no antialias, aspect not
    kept (original: FastBaseTransform's ``F.interpolate(..., mode='bilinear', align_corners=False)`` on the float
    image, to the rectangle for a rectangular config)."""
    return tf.image.resize(tf.cast(image, tf.float32), list(cfg.input_size), method="bilinear", antialias=False)


def eval_preprocess(image: tf.Tensor, cfg) -> tf.Tensor:
    """Eval-time input: uint8/float [(B,) h, w, 3] RGB → float32 [(B,) H, W, 3] normalized (:func:`resize`, then
    :func:`normalize`)."""
    return normalize(resize(image, cfg), cfg)


_RESIZE_FNS = {}


def resize_image(image: np.ndarray, cfg) -> np.ndarray:
    """:func:`resize` of one uint8 RGB image [h, w, 3] as numpy float32 [1, H, W, 3] (a cached graph per input
    size (H, W)):
    the input of every exported graph and of the in-process inference graph.

    Raises:
      ValueError: not a [H, W, 3] image.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got {image.shape}")
    s = cfg.input_size
    if s not in _RESIZE_FNS:
        _RESIZE_FNS[s] = tf.function(lambda x: resize(x[None], cfg), reduce_retracing=True)  # uses only (H, W)
    return _RESIZE_FNS[s](tf.convert_to_tensor(image)).numpy()
