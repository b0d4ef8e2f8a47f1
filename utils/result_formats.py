"""Saving detections as files (``inference.py -save coco,labelme,png``): COCO results, LabelMe jsons, instance PNGs.

Every format takes a runner's ``predict`` result (yolact/runtimes.py: ``boxes`` int32 [n, 4] pixel
``[x1, y1, x2, y2]``, ``classes`` int32 [n], ``category_ids`` int32 [n], ``scores`` float32 [n], ``masks`` uint8
[n, H, W] 0/1, YOLACT++ ``mask_scores`` float32 [n]), so ``-checkpoint`` and ``-model`` save alike, and keeps the
detections the display shows (utils/visualize.py ``display_order``: ``-score_threshold``, ``-top_k``, best first).
Every file is written atomically (utils/atomic.py).

* ``coco``: one COCO results json per run (a list of utils/coco_eval.py ``detections_to_coco`` entries, each with
  ``file_name`` added; YOLACT++ entries carry ``mask_score``), loadable by ``COCO.loadRes``;
* ``labelme``: ``STEM.json`` per image, a LabelMe 5 file whose ``imagePath`` points at the image (relative to the
  json): each mask as polygons (:func:`mask_to_polygons`), label = class name, ``description`` = scores; the
  polygons of a detection with several parts share ``group_id`` (the detection's rank); holes are kept in the
  polygon of their part. For a video frame the frame is saved beside it as ``STEM.jpg``;
* ``png``: ``STEM.instances.png``, a 16-bit PNG of instance ids (0 background, k the k-th detection shown; where
  masks overlap, the better one), and ``STEM.instances.json``: ``{"image", "height", "width", "instances": [{"id",
  "class", "category_id", "score", ("mask_score",) "box" [x1, y1, x2, y2]}]}``.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from utils import atomic
from utils.coco_eval import detections_to_coco
from utils.visualize import display_order

FORMATS = ("coco", "labelme", "png")
LABELME_VERSION = "5.0.1"
UPSAMPLE = 4  # contours are traced on the mask upsampled 4x (nearest): polygons follow pixel edges to 1/8 px
EPSILON = 1.0  # polygon simplification (cv2.approxPolyDP), in pixels of the image


def parse_formats(value: str) -> List[str]:
    """``"coco,labelme"`` -> ``["coco", "labelme"]`` (order kept, duplicates dropped).

    Raises:
      ValueError: an empty list or a name not in :data:`FORMATS`.
    """
    names = list(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    unknown = [n for n in names if n not in FORMATS]
    if not names or unknown:
        raise ValueError(f"-save takes a comma-separated list of {', '.join(FORMATS)}, got {value!r}")
    return names


def select(result: Dict[str, np.ndarray], rows: np.ndarray) -> Dict[str, np.ndarray]:
    """The rows ``rows`` (int [m]) of every per-detection array of a result (same keys, first axis m)."""
    return {k: np.asarray(v)[rows] for k, v in result.items()}


def _splice_hole(outer: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """One ring of ``outer`` [k, 2] and ``hole`` [j, 2] joined by a zero-width cut between their closest points
    (pycocotools fills a polygon even-odd, so the cut, traced there and back, adds no pixel)."""
    d = ((outer[:, None, :] - hole[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmin(d)), d.shape)
    return np.concatenate([outer[:i + 1], hole[j:], hole[:j + 1], outer[i:]])


def mask_to_polygons(mask: np.ndarray, epsilon: float = EPSILON) -> List[np.ndarray]:
    """A binary mask's outline as polygons: one per connected part, each with its holes spliced in.

    OpenCV traces the contours (``findContours``, ``RETR_CCOMP``: parts and their holes) on the mask cropped to
    its extent and upsampled :data:`UPSAMPLE` x, so that the polygons run along pixel edges (COCO's convention:
    pixel ``i`` spans ``[i, i + 1)``) instead of through the centres of the border pixels; ``approxPolyDP``
    simplifies them within ``epsilon`` pixels (a ring that would keep fewer than 3 points stays as traced: a
    one-pixel part is its square). Rasterised by pycocotools (``frPyObjects`` + ``merge``, as
    data/encoding.py does), the polygons give the mask back up to that simplification.

    Args:
      mask: [H, W], nonzero = inside.
      epsilon: simplification tolerance in pixels.

    Returns:
      float64 arrays [k, 2] of ``(x, y)`` in pixels, k >= 3 (an empty list for an empty mask).
    """
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return []
    x0, y0 = xs.min(), ys.min()
    crop = np.ascontiguousarray(mask[y0:ys.max() + 1, x0:xs.max() + 1] != 0, np.uint8)
    up = cv2.resize(crop, None, fx=UPSAMPLE, fy=UPSAMPLE, interpolation=cv2.INTER_NEAREST)
    up = cv2.copyMakeBorder(up, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    contours, hierarchy = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    rings = []
    for c in contours:
        simple = cv2.approxPolyDP(c, epsilon * UPSAMPLE, True)
        rings.append((simple if len(simple) >= 3 else c).reshape(-1, 2).astype(np.float64))  # tiny: as traced
    polygons = []
    for k, ring in enumerate(rings):
        if hierarchy[0][k][3] != -1 or len(ring) < 3:  # a hole (spliced into its part below), or too small
            continue
        child = hierarchy[0][k][2]
        while child != -1:
            if len(rings[child]) >= 3:
                ring = _splice_hole(ring, rings[child])
            child = hierarchy[0][child][0]
        polygons.append((ring - 1 + 0.5) / UPSAMPLE + [x0, y0])
    return polygons


def labelme_shapes(result: Dict[str, np.ndarray], class_names: Sequence[str], shown_scores: np.ndarray) -> List[Dict]:
    """LabelMe shapes of the detections of ``result`` (already selected, best first): polygons of
    :func:`mask_to_polygons`, ``group_id`` = rank (1-based) when a detection has several polygons, scores in
    ``description``. A detection whose mask gives no polygon has no shape."""
    shapes = []
    for k in range(len(result["scores"])):
        polygons = mask_to_polygons(result["masks"][k])
        scores = f"score {float(result['scores'][k]):.4f}"
        if "mask_scores" in result:
            scores += f", mask score {float(result['mask_scores'][k]):.4f}"
        for poly in polygons:
            shapes.append({"label": class_names[int(result["classes"][k])],
                           "points": np.round(poly, 2).tolist(), "group_id": k + 1 if len(polygons) > 1 else None,
                           "description": f"{scores} (shown {float(shown_scores[k]):.4f})", "shape_type": "polygon",
                           "flags": {}, "mask": None})
    return shapes


def instance_png(result: Dict[str, np.ndarray], height: int, width: int) -> np.ndarray:
    """uint16 [height, width]: 0 background, k where the k-th detection (1-based) is the best one covering it."""
    ids = np.zeros((height, width), np.uint16)
    for k in reversed(range(len(result["scores"]))):
        ids[np.asarray(result["masks"][k]) != 0] = k + 1
    return ids


class ResultSaver:
    """Saves the detections of the images or frames of one ``inference.py`` run (module docstring).

    Args:
      formats: names among :data:`FORMATS` (:func:`parse_formats`);
      class_names: name of each 0-based class (``label_map.names``);
      score_threshold, top_k: the display's selection (``display_order``);
      coco_path: the COCO results json written by :meth:`close` (when ``coco`` is among the formats);
      annotations_file: a COCO json whose ``images`` give the results' ``image_id`` by file name (base name),
        so that they score against it; without it an image's id is its position in the run (1-based).

    Raises:
      ValueError: ``annotations_file`` cannot be read or has no ``images`` list.
    """

    def __init__(self, formats: Sequence[str], class_names: Sequence[str], score_threshold: float = 0.0,
                 top_k: Optional[int] = None, coco_path: Optional[str] = None, annotations_file: Optional[str] = None):
        self.formats, self.class_names = list(formats), list(class_names)
        self.score_threshold, self.top_k, self.coco_path = score_threshold, top_k, coco_path
        self.entries: List[Dict] = []
        self.written: List[str] = []
        self.image_ids: Optional[Dict[str, int]] = None
        if annotations_file:
            try:
                with open(annotations_file, encoding="utf-8") as f:
                    images = json.load(f)["images"]
                self.image_ids = {os.path.basename(im["file_name"]): int(im["id"]) for im in images}
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ValueError(f"cannot read image ids from {annotations_file}: {e}") from None

    def add_image(self, result: Dict[str, np.ndarray], out_stem: str, image_path: str, position: int) -> None:
        """Save the detections of the image file ``image_path``, the ``position``-th (1-based) of the run; its
        ``image_id`` comes from the annotations file (ValueError when the file is not in it) or is ``position``."""
        name = os.path.basename(image_path)
        if self.image_ids is not None and name not in self.image_ids:
            raise ValueError(f"{name} is not among the images of the annotations file")
        image_id = self.image_ids[name] if self.image_ids is not None else position
        self.add(result, out_stem, image_id, name, image_path=image_path)

    def add_frame(self, result: Dict[str, np.ndarray], out_stem: str, frame: int, image: np.ndarray) -> None:
        """Save the detections of video frame ``frame`` (0-based, its ``image_id``), uint8 RGB ``image``."""
        self.add(result, f"{out_stem}_{frame:06d}", frame, f"frame {frame}", image=image)

    def add(self, result: Dict[str, np.ndarray], out_stem: str, image_id: int, file_name: str,
            image_path: Optional[str] = None, image: Optional[np.ndarray] = None) -> None:
        """Save one image's detections.

        Args:
          result: the runner's ``predict`` output for the image (masks at the image's size);
          out_stem: path without extension of the per-image files (``STEM.json``, ``STEM.instances.png``, ...);
          image_id, file_name: the COCO results' ``image_id`` and ``file_name``;
          image_path: the image file (LabelMe's ``imagePath``); without it (a video frame) ``image``, uint8 RGB
            [H, W, 3], is saved as ``STEM.jpg`` for LabelMe.

        Raises:
          OSError: a file cannot be written (utils/atomic.py: the previous file stays).
        """
        rows, shown = display_order(result, self.score_threshold, self.top_k)
        chosen = select(result, rows)
        height, width = np.asarray(result["masks"]).shape[1:3]  # [n, H, W] also when n = 0
        if "coco" in self.formats:
            self.entries += [e | {"file_name": file_name} for e in detections_to_coco(image_id, chosen)]
        if "labelme" in self.formats:
            if image_path is None:
                image_path = out_stem + ".jpg"
                ok, jpg = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]))
                self._write(image_path, jpg.tobytes())
            doc = {"version": LABELME_VERSION, "flags": {}, "shapes": labelme_shapes(chosen, self.class_names, shown),
                   "imagePath": os.path.relpath(os.path.abspath(image_path),
                                                os.path.dirname(os.path.abspath(out_stem))),
                   "imageData": None, "imageHeight": int(height), "imageWidth": int(width)}
            self._write(out_stem + ".json", json.dumps(doc, indent=1))
        if "png" in self.formats:
            ok, png = cv2.imencode(".png", instance_png(chosen, height, width))
            self._write(out_stem + ".instances.png", png.tobytes())
            instances = [{"id": k + 1, "class": self.class_names[int(chosen["classes"][k])],
                          "category_id": int(chosen["category_ids"][k]), "score": float(chosen["scores"][k]),
                          **({"mask_score": float(chosen["mask_scores"][k])} if "mask_scores" in chosen else {}),
                          "box": [int(v) for v in chosen["boxes"][k]]} for k in range(len(rows))]
            self._write(out_stem + ".instances.json", json.dumps(
                {"image": file_name, "height": int(height), "width": int(width), "instances": instances}, indent=1))

    def _write(self, path: str, data) -> None:
        """Write ``data`` (bytes or str) to ``path`` atomically (utils/atomic.py); OSError when it fails."""
        with atomic.atomic_file(path, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        self.written.append(path)

    def close(self) -> Optional[str]:
        """Write the COCO results json (when ``coco`` is saved; an empty list when nothing was detected); return its
        path, or None."""
        if "coco" not in self.formats or self.coco_path is None:
            return None
        self._write(self.coco_path, json.dumps(self.entries))
        return self.coco_path

