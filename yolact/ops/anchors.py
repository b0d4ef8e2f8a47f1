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
    use each level's actual feature-map size; ``w = scale * sqrt(ar) / img_size``, ``h = scale / sqrt(ar) /
    img_size`` and, with ``use_square_anchors``, ``h = w``. No clamping. Computed in float64 and cast to float32 as
    the original. N = A * sum(H_l * W_l): 19,248 at 550 for the YOLACT ResNet configs (A = 3), 57,744 for YOLACT++
    (A = 9).
    """
    return anchors_for_sizes(
        cfg.feature_map_sizes(),
        cfg.anchors.pred_scales,
        cfg.anchors.aspect_ratios,
        cfg.model.img_size,
        cfg.anchors.use_square_anchors,
        cfg.anchors.scale_factors,
    )


def anchors_for_sizes(sizes, scales, aspect_ratios, img_size, use_square_anchors, scale_factors=(1.0,)) -> np.ndarray:
    """Anchors for explicit square level sizes (see :func:`make_anchors`); float32 [N, 4] cx,cy,w,h relative.

    Raises:
      ValueError: ``sizes`` and ``scales`` differ in length.
    """
    if len(sizes) != len(scales):
        raise ValueError(f"{len(sizes)} feature levels but {len(scales)} anchor scales")
    out = []
    for size, base in zip(sizes, scales):
        level_scales = [base * f for f in scale_factors]  # original: i * 2 ** (j / 3.0) (f = 1.0 leaves it exact)
        for j in range(size):
            for i in range(size):
                x = (i + 0.5) / size
                y = (j + 0.5) / size
                for scale in level_scales:
                    for ar in aspect_ratios:
                        r = math.sqrt(ar)
                        w = scale * r / img_size
                        h = scale / r / img_size
                        if use_square_anchors:
                            h = w
                        out.append((x, y, w, h))
    return np.asarray(out, dtype=np.float64).astype(np.float32)
