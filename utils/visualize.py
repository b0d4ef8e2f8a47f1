"""Detection overlays drawn with OpenCV: translucent masks, boxes, class names and scores.

original: eval.py prep_display (mask alpha 0.45, box thickness 1, FONT_HERSHEY_DUPLEX 0.6, filled label background,
colour per class, or per instance with ``class_color`` False). The palette here is generated (evenly spread hues),
not the original's list. Masks are blended one after another (the best last, on top) in uint8 inside each mask's
bounding rectangle (cheap at video sizes); the original blends all of them in one float expression on the GPU:
a blended pixel may differ from that by one grey level per mask layer (rounding in uint8).

The displayed score (:func:`display_order`) is the one the original's prep_display shows: for YOLACT++ it
temporarily sets ``rescore_bbox = True``, so the score drawn, thresholded and sorted for ``top_k`` is box score x
predicted mask IoU (the result's ``mask_scores``); for YOLACT it is the box (class) score. COCO evaluation keeps
both (utils/coco_eval.py: box score for box AP, mask score for mask AP).
"""

from __future__ import annotations

import colorsys
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

MASK_ALPHA = 0.45


def color(index: int) -> tuple:
    """A fixed RGB colour (uint8 triple) for a class or instance index: golden-ratio hue steps, bright."""
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def display_order(result: Dict[str, np.ndarray], score_threshold: float = 0.0,
                  top_k: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Which detections a display shows, best first, and the score shown for each.

    original: eval.py prep_display: with YOLACT++'s mask-IoU net (``rescore_bbox`` set True there) the score is
    box score x mask IoU; detections are sorted by it (descending, stable), the best ``top_k`` kept and the list cut
    at the first one not above ``score_threshold``.

    Args:
      result: :func:`yolact.detection.results.to_results` dict: ``scores`` float [n] box scores (sorted descending),
        YOLACT++ also ``mask_scores`` float [n] (box score x predicted mask IoU).
      score_threshold: show detections whose displayed score is > this.
      top_k: at most this many (None: all).

    Returns:
      ``(indices, scores)``: int64 [m] rows of ``result`` in display order and float32 [m] their displayed scores.
    """
    scores = np.asarray(result.get("mask_scores", result["scores"]), np.float32)
    order = np.argsort(-scores, kind="stable")
    order = order[scores[order] > score_threshold]
    if top_k is not None:
        order = order[:top_k]
    return order.astype(np.int64), scores[order]


def _blend(out: np.ndarray, mask: np.ndarray, rgb: tuple) -> None:
    """In place: ``out = out * (1 - MASK_ALPHA) + rgb * MASK_ALPHA`` where ``mask`` (uint8 [H, W] 0/1) is set,
    computed only inside the mask's bounding rectangle (cv2.boundingRect of its nonzero pixels) in uint8
    (cv2.addWeighted rounds to nearest)."""
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0 or h == 0:
        return
    roi = out[y:y + h, x:x + w]
    tinted = cv2.addWeighted(roi, 1.0 - MASK_ALPHA, np.full_like(roi, rgb), MASK_ALPHA, 0.0)
    np.copyto(roi, tinted, where=mask[y:y + h, x:x + w, None].astype(bool))


def draw_detections(image: np.ndarray, result: Dict[str, np.ndarray], class_names: Sequence[str],
                    score_threshold: float = 0.0, top_k: Optional[int] = None, display_masks: bool = True,
                    display_bboxes: bool = True, display_text: bool = True, display_scores: bool = True,
                    class_color: bool = True) -> np.ndarray:
    """Overlay detections on an image.

    Args:
      image: uint8 RGB [H, W, 3] (not modified).
      result: :func:`yolact.detection.results.to_results` dict (``boxes`` int [n,4] pixel ``[x1, y1, x2, y2]``, ``classes``
        int [n] 0-based, ``scores`` [n] sorted descending, ``masks`` uint8 [n, H, W]; YOLACT++ ``mask_scores`` [n]).
      class_names: name of each 0-based class.
      score_threshold: draw detections with displayed score > this; top_k: at most this many (the best ones). The
        displayed score is ``mask_scores`` when present (YOLACT++, as the original), else ``scores``: see
        :func:`display_order`.
      display_*: what to draw; class_color: colour by class (True) or by detection rank (False).

    Returns:
      uint8 RGB [H, W, 3].

    Raises:
      ValueError: image not uint8 [H, W, 3], or masks of another size.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}")
    keep, shown = display_order(result, score_threshold, top_k)
    out = image.copy()
    colors = [color(int(result["classes"][i]) if class_color else j) for j, i in enumerate(keep)]
    if display_masks and len(keep):
        m = np.asarray(result["masks"])
        if m.shape[1:] != image.shape[:2]:
            raise ValueError(f"masks are {m.shape[1:]} but the image is {image.shape[:2]}")
        for j in reversed(range(len(keep))):  # best last, so it ends on top
            _blend(out, m[keep[j]], colors[j])
    for j, i in enumerate(keep):
        x1, y1, x2, y2 = (int(v) for v in result["boxes"][i])
        if display_bboxes:
            cv2.rectangle(out, (x1, y1), (x2, y2), colors[j], 1)
        if display_text:
            name = class_names[int(result["classes"][i])]
            text = f"{name}: {shown[j]:.2f}" if display_scores else name
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, 0.6, 1)
            ty = max(y1, th + 4)
            cv2.rectangle(out, (x1, ty - th - 4), (x1 + tw, ty), colors[j], -1)
            cv2.putText(out, text, (x1, ty - 3), cv2.FONT_HERSHEY_DUPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return out


__all__ = ["color", "display_order", "draw_detections", "MASK_ALPHA"]
