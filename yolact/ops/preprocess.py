"""Eval-time preprocessing: the one resize + normalisation used by the eval dataset, the Predictor and every export.

original: utils/augmentations.py BaseTransform / FastBaseTransform / BackboneTransform.
"""

from __future__ import annotations

import tensorflow as tf


def normalize(image: tf.Tensor, cfg) -> tf.Tensor:
    """``(x − mean_rgb) / std_rgb``: float32 [..., 3] RGB 0..255 → normalized. original: BackboneTransform."""
    mean = tf.constant(cfg.model.mean_rgb, tf.float32)
    std = tf.constant(cfg.model.std_rgb, tf.float32)
    return (tf.cast(image, tf.float32) - mean) / std


def eval_preprocess(image: tf.Tensor, cfg) -> tf.Tensor:
    """Eval-time input: uint8/float [H, W, 3] RGB → float32 [S, S, 3] normalized.

    Resize first (half-pixel bilinear, no antialias, aspect not kept), normalize second, as the original's
    BaseTransform / FastBaseTransform.
    """
    s = cfg.model.img_size
    resized = tf.image.resize(tf.cast(image, tf.float32), [s, s], method="bilinear", antialias=False)
    return normalize(resized, cfg)
