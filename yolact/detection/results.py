"""The host step of every inference form: the output-convention detections of one image (numpy) → final results at
the image's own size.

original: layers/output_utils.py postprocess (the part after the prototype-resolution crop: bilinear upsampling of
the mask probabilities to the image, ``gt_(0.5)``, boxes by sanitize_coordinates + ``.long()``) and eval.py's
selection of the shown detections (score threshold, top k).

The Predictor (in-process), the SavedModel, TFLite and ONNX runners (yolact/runtimes.py) all call
:func:`to_results` on what their graph returns (yolact/deploy/graph.py's contract), so that one photo gives the
same results in every form.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

MASK_THRESHOLD = 0.5  # original: masks.gt_(0.5)


def select_rows(scores: np.ndarray, score_threshold: float = 0.0, max_detections: Optional[int] = None,
                display_scores: Optional[np.ndarray] = None) -> np.ndarray:
    """Indices of the rows to keep, in order: score > ``score_threshold`` when that is > 0 (0 keeps every row, as
    the original's eval), then the first ``max_detections``.

    With ``display_scores`` (YOLACT++: box score x predicted mask IoU, what the display sorts by: utils/visualize.py
    ``display_order``) the ``max_detections`` kept are instead the best by display score (descending, stable) among
    those with display score > ``score_threshold``, returned in row order: the rows ``display_order`` would show,
    so that only they get full-size masks.

    Args:
      scores: float32 [n] descending scores of the real rows.
      display_scores: optional float32 [n] scores the display ranks by.

    Returns:
      int64 [m] row indices (ascending), m <= n.
    """
    keep = np.nonzero(scores > score_threshold)[0] if score_threshold > 0 else np.arange(len(scores))
    if max_detections is None:
        return keep
    if display_scores is None:
        return keep[:max(int(max_detections), 0)]
    shown = np.asarray(display_scores, np.float32)[keep]
    order = np.argsort(-shown, kind="stable")
    order = order[shown[order] > score_threshold][:max(int(max_detections), 0)]
    return keep[np.sort(order)]


def masks_at_size(probs: np.ndarray, height: int, width: int) -> np.ndarray:
    """Mask probabilities → binary masks of the image: bilinear (half-pixel, no antialias, ``cv2.INTER_LINEAR``,
    as the original's ``F.interpolate(..., align_corners=False)``) to (height, width), then ``> 0.5``.

    Args:
      probs: float32 [m, h, w] probabilities (any h, w; at (height, width) they are only thresholded), or uint8
        [m, height, width] masks that are already binary (0 / 1), returned as they are.
      height, width: the image's size in pixels.

    Returns:
      uint8 [m, height, width] 0 / 1.
    """
    import cv2

    if probs.dtype == np.uint8:
        return probs
    probs = np.asarray(probs, np.float32)
    binary = np.empty([len(probs), int(height), int(width)], np.uint8)
    for i, m in enumerate(probs):  # into one preallocated array: no np.stack, no float copy at the image size
        if m.shape != (height, width):
            m = cv2.resize(m, (int(width), int(height)), interpolation=cv2.INTER_LINEAR)
        cv2.compare(m, MASK_THRESHOLD, cv2.CMP_GT, dst=binary[i])  # 255 where > 0.5
    return np.bitwise_and(binary, 1, out=binary)


def to_results(outputs: Dict[str, np.ndarray], height: int, width: int, id_to_class: np.ndarray,
               score_threshold: float = 0.0, max_detections: Optional[int] = None,
               by_display_score: bool = False) -> Dict[str, np.ndarray]:
    """One image's detections in the output convention → results at (height, width).

    Args:
      outputs: batch of one, numpy: ``num_detections`` int32 [1]; ``detection_boxes`` float32 [1,D,4] normalised
        ``[ymin, xmin, ymax, xmax]`` clipped to [0, 1]; ``detection_classes`` int32 [1,D] dataset category ids;
        ``detection_scores`` float32 [1,D] descending; ``detection_masks`` float32 [1,D,h,w] probabilities (any
        resolution) or uint8 [1,D,height,width] binary; YOLACT++ ``detection_mask_scores`` float32 [1,D].
      height, width: the image's size in pixels.
      id_to_class: int32 [max_id + 1] dataset id → class channel (``label_map.id_to_index_array()``).
      score_threshold, max_detections: row selection (:func:`select_rows`) before the masks are upsampled.
      by_display_score: YOLACT++ (outputs with ``detection_mask_scores``): ``max_detections`` counts the best rows
        by the displayed score (box score x mask IoU, :func:`select_rows` ``display_scores``) instead of the first
        rows; no effect for YOLACT.

    Returns:
      dict ``boxes`` int32 [n,4] pixel ``[x1, y1, x2, y2]`` (scaled and truncated, as the original's
      ``.long()``), ``classes`` int32 [n] 0-based foreground class, ``category_ids`` int32 [n] dataset ids,
      ``scores`` float32 [n], ``masks`` uint8 [n, height, width] 0/1, and for YOLACT++ ``mask_scores`` float32 [n];
      sorted by descending score.
    """
    n = int(np.asarray(outputs["num_detections"]).reshape(-1)[0])
    scores = np.asarray(outputs["detection_scores"][0, :n], np.float32)
    rank = None
    if by_display_score and "detection_mask_scores" in outputs:
        rank = np.asarray(outputs["detection_mask_scores"][0, :n], np.float32)
    keep = select_rows(scores, score_threshold, max_detections, rank)
    scale = np.asarray([height, width, height, width], np.float32)
    boxes = (np.asarray(outputs["detection_boxes"][0, keep], np.float32) * scale)[:, [1, 0, 3, 2]].astype(np.int32)
    ids = np.asarray(outputs["detection_classes"][0, keep], np.int32)
    result = {"boxes": boxes, "classes": (np.asarray(id_to_class)[ids] - 1).astype(np.int32), "category_ids": ids,
              "scores": scores[keep], "masks": masks_at_size(np.asarray(outputs["detection_masks"][0, keep]),
                                                             height, width)}
    if "detection_mask_scores" in outputs:  # YOLACT++: mask AP and the display use box score x mask IoU
        result["mask_scores"] = np.asarray(outputs["detection_mask_scores"][0, keep], np.float32)
    return result


__all__ = ["MASK_THRESHOLD", "select_rows", "masks_at_size", "to_results"]
