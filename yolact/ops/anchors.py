"""Anchors (priors) exactly as the original makes them.

original: yolact.py PredictionModule.make_priors (shared/docs/yolact_reference.md §5).
"""

from __future__ import annotations

import math

import numpy as np


def make_anchors(cfg) -> np.ndarray:
    """All anchors of a config, relative ``[cx, cy, w, h]``, float32 [N, 4].

    Order: level P3..P7 (slowest), then row y, column x, then the A anchors of the location: scale-major
    (``pred_scales[l] * f`` for f in ``cfg.anchors.scale_factors``), then ``cfg.anchors.aspect_ratios`` (fastest),
    the original's ``for scale in scales: for ar in ars`` loop. ``cx = (x + 0.5) / W_l``, ``cy = (y + 0.5) / H_l``
    use each level's actual feature-map size (``cfg.feature_map_shapes()``, per axis); ``w = scale * sqrt(ar) / W``,
    ``h = scale / sqrt(ar) / H`` with (H, W) the input size (``cfg.input_size``; H = W = img_size for a square
    config, as the original) and, with ``use_square_anchors``, ``h = scale * sqrt(ar) / H`` (the original's
    ``h = w``: square in pixels, also on a rectangular input). No clamping. Computed in float64 and cast to float32
    as the original. N = A * sum(H_l * W_l): 19,248 at 550 for the YOLACT ResNet configs (A = 3), 57,744 for
    YOLACT++ (A = 9).
    """
    return anchors_for_sizes(
        cfg.feature_map_shapes(),
        cfg.anchors.pred_scales,
        cfg.anchors.aspect_ratios,
        cfg.input_size,
        cfg.anchors.use_square_anchors,
        cfg.anchors.scale_factors,
    )


def anchors_for_sizes(sizes, scales, aspect_ratios, img_size, use_square_anchors, scale_factors=(1.0,)) -> np.ndarray:
    """Anchors for explicit level sizes (see :func:`make_anchors`); float32 [N, 4] cx,cy,w,h relative.

    Args:
      sizes: per level an int side (square level) or ``(H_l, W_l)``.
      scales: per level the base scale in pixels.
      img_size: the input side S (int) or ``(H, W)`` in pixels.
    Raises:
      ValueError: ``sizes`` and ``scales`` differ in length.
    """
    if len(sizes) != len(scales):
        raise ValueError(f"{len(sizes)} feature levels but {len(scales)} anchor scales")
    in_h, in_w = (img_size, img_size) if np.isscalar(img_size) else img_size
    out = []
    for size, base in zip(sizes, scales):
        conv_h, conv_w = (size, size) if np.isscalar(size) else size
        level_scales = [base * f for f in scale_factors]  # original: i * 2 ** (j / 3.0) (f = 1.0 leaves it exact)
        for j in range(conv_h):
            for i in range(conv_w):
                x = (i + 0.5) / conv_w
                y = (j + 0.5) / conv_h
                for scale in level_scales:
                    for ar in aspect_ratios:
                        r = math.sqrt(ar)
                        w = scale * r / in_w
                        h = scale / r / in_h
                        if use_square_anchors:
                            h = scale * r / in_h  # the original's h = w, square in pixels (== w when in_h == in_w)
                        out.append((x, y, w, h))
    return np.asarray(out, dtype=np.float64).astype(np.float32)
