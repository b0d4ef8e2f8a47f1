"""Anchors (priors) exactly as the original makes them.

original: yolact.py PredictionModule.make_priors (shared/docs/yolact_reference.md §5).
"""

from __future__ import annotations

import math

import numpy as np


def make_anchors(cfg) -> np.ndarray:
    """All anchors of a config, relative ``[cx, cy, w, h]``, float32 [N, 4].

    Order: level P3..P7 (slowest), then row y, column x, then anchor a (fastest) with a following
    ``cfg.anchors.aspect_ratios``. ``cx = (x + 0.5) / W_l``, ``cy = (y + 0.5) / H_l`` use each level's actual
    feature-map size; ``w = scale * sqrt(ar) / img_size``, ``h = scale / sqrt(ar) / img_size`` and, with
    ``use_square_anchors``, ``h = w``. No clamping. Computed in float64 and cast to float32 as the original.
    N = A * sum(H_l * W_l): 19,248 at 550 for the ResNet configs.
    """
    return anchors_for_sizes(
        cfg.feature_map_sizes(),
        cfg.anchors.pred_scales,
        cfg.anchors.aspect_ratios,
        cfg.model.img_size,
        cfg.anchors.use_square_anchors,
    )


def anchors_for_sizes(sizes, scales, aspect_ratios, img_size, use_square_anchors) -> np.ndarray:
    """Anchors for explicit square level sizes (see :func:`make_anchors`); float32 [N, 4] cx,cy,w,h relative."""
    if len(sizes) != len(scales):
        raise ValueError(f"{len(sizes)} feature levels but {len(scales)} anchor scales")
    out = []
    for size, scale in zip(sizes, scales):
        for j in range(size):
            for i in range(size):
                x = (i + 0.5) / size
                y = (j + 0.5) / size
                for ar in aspect_ratios:
                    r = math.sqrt(ar)
                    w = scale * r / img_size
                    h = scale / r / img_size
                    if use_square_anchors:
                        h = w
                    out.append((x, y, w, h))
    return np.asarray(out, dtype=np.float64).astype(np.float32)


def level_offsets(cfg) -> list:
    """Index of the first anchor of each level in the anchor axis (P3 0, P4 14,283, ... at 550)."""
    a = cfg.anchors.num_anchors_per_location
    offsets, total = [], 0
    for s in cfg.feature_map_sizes():
        offsets.append(total)
        total += a * s * s
    return offsets
