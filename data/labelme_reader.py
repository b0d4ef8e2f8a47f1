"""LabelMe folder -> :class:`~data.split_plan.SplitPlan` (``python -m data.coco_tfrecord_creator -format labelme``).

A split is one folder of LabelMe 4.x / 5.x json files (not recursive), each describing one image: ``imagePath``
(relative to the json's folder, as LabelMe writes it; ``\\`` separators accepted), ``imageHeight``,
``imageWidth`` and ``shapes`` (``label``, ``points`` [[x, y], ...] in pixels, ``shape_type``, ``group_id``);
``imageData`` (an embedded copy of the image) is not used: the image file must exist (when ``imagePath`` does not
name one, a file of the json's stem with an image extension beside it is taken).

* ``polygon`` (also a missing ``shape_type``, LabelMe 3) and ``rectangle`` (two corners) shapes are instances;
  shapes that share a ``group_id`` and a label are one instance, the union of their polygons (a multi-part mask,
  as COCO's polygon lists); other shape types (circle, line, point, linestrip, mask) are skipped and listed;
* shapes labelled ``__ignore__`` or ``_background_`` (LabelMe's labels.txt conventions) are not instances; they
  are counted in a warning, not listed as skipped;
* classes (:func:`read_labels_file`, :func:`collect_labels`): a ``-labels`` file, one name per line, or the sorted
  set of labels of the folders; category ids are 1..n in that order;
* skipped and listed: an unreadable json, a missing image file, a json without positive ``imageHeight`` /
  ``imageWidth``, a malformed shape, an unknown label, a polygon with fewer than 3 points, a zero-area box; the
  writer adds undecodable images and images whose size differs from their json; points outside the image are
  clipped (counted);
* a ``.json`` that is no LabelMe file (no ``shapes`` list, e.g. a COCO results file in the same folder) is left
  out, named in a warning.

Polygons are rasterised by data/encoding.py with pycocotools, exactly as COCO polygons.
"""

from __future__ import annotations

import json
import numbers
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from data.plan_builder import IMAGE_EXTENSIONS, PlanBuilder
from data.split_plan import CreatorError, SplitPlan
from yolact.ops import label_map as label_map_lib

IGNORE_LABEL, BACKGROUND_LABEL = "__ignore__", "_background_"
NOT_CLASSES = (IGNORE_LABEL, BACKGROUND_LABEL)
INSTANCE_SHAPES = ("polygon", "rectangle")


def read_labels_file(path: str) -> List[str]:
    """Class names of a LabelMe ``labels.txt``: one per line, in order, without blank lines and without the
    ``__ignore__`` / ``_background_`` lines.

    Raises:
      CreatorError: the file cannot be read, holds no class, or names a class twice.
    """
    try:
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f]
    except (OSError, UnicodeDecodeError) as e:
        raise CreatorError(f"cannot read labels file {path}: {e}") from None
    names = [n for n in names if n and n not in NOT_CLASSES]
    if not names:
        raise CreatorError(f"labels file {path} names no class")
    if len(set(names)) != len(names):
        raise CreatorError(f"labels file {path} names a class twice")
    return names


def _json_files(image_dir: str) -> List[str]:
    """The ``.json`` paths of ``image_dir`` (not recursive), sorted; CreatorError when it is not a folder."""
    if not os.path.isdir(image_dir):
        raise CreatorError(f"image directory not found: {image_dir}")
    return sorted(os.path.join(image_dir, n) for n in os.listdir(image_dir) if n.lower().endswith(".json"))


def _load(path: str) -> Tuple[Optional[Dict], Optional[str]]:
    """``(data, None)`` for a LabelMe json, ``(None, reason)`` for an unreadable one, ``(None, None)`` for a json
    that is no LabelMe file."""
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"cannot read LabelMe json ({str(e).splitlines()[0][:80]})"
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        return None, None
    return data, None


def collect_labels(image_dirs: Sequence[str]) -> List[str]:
    """The sorted set of shape labels in the LabelMe jsons of ``image_dirs`` (``__ignore__`` / ``_background_``
    left out): the classes when no labels file is given.

    Raises:
      CreatorError: a missing folder, or no label at all.
    """
    labels = set()
    for image_dir in image_dirs:
        for path in _json_files(image_dir):
            data, _ = _load(path)
            for shape in (data or {}).get("shapes", []):
                if isinstance(shape, dict) and isinstance(shape.get("label"), str):
                    labels.add(shape["label"])
    labels -= set(NOT_CLASSES)
    if not labels:
        raise CreatorError(f"no LabelMe shape label found in {', '.join(image_dirs)}")
    return sorted(labels)


def _image_path(json_path: str, data: Dict) -> Optional[str]:
    """The image a LabelMe json describes: its ``imagePath`` relative to the json's folder, else a file of the
    json's stem with an image extension beside it; None when neither exists."""
    folder = os.path.dirname(json_path)
    image_path = data.get("imagePath")
    if isinstance(image_path, str) and image_path:
        candidate = os.path.normpath(os.path.join(folder, image_path.replace("\\", "/")))
        if os.path.isfile(candidate):
            return candidate
    stem = os.path.splitext(json_path)[0]
    for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
        if os.path.isfile(stem + ext):
            return stem + ext
    return None


def _shape_polygon(shape) -> Tuple[Optional[np.ndarray], Optional[str]]:
    """``(points float [k, 2], None)`` of a polygon or rectangle shape, else ``(None, reason)``."""
    points = shape.get("points")
    if not (isinstance(points, list) and all(isinstance(p, (list, tuple)) and len(p) == 2 and
                                             all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                                 for v in p) for p in points)):
        return None, "malformed shape points"
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if not np.isfinite(pts).all():
        return None, "malformed shape points"
    shape_type = shape.get("shape_type") or "polygon"
    if shape_type == "rectangle":
        if len(pts) != 2:
            return None, "rectangle without exactly 2 points"
        (x1, y1), (x2, y2) = pts.min(0), pts.max(0)
        return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]]), None
    if len(pts) < 3:
        return None, "polygon with fewer than 3 points"
    return pts, None


def _add_shapes(builder: PlanBuilder, task: Dict, shapes: List, ids: Dict[str, int]) -> int:
    """Group ``shapes`` into instances and add them to ``task``; return the number of ``__ignore__`` /
    ``_background_`` shapes."""
    groups: Dict[tuple, List] = {}  # (label, group) -> [(shape index, points)], in order of first appearance
    not_classes = 0
    for i, shape in enumerate(shapes):
        ref = f"shape {i}"
        if not isinstance(shape, dict) or not isinstance(shape.get("label"), str):
            builder.skip_annotation(ref, task["file_name"], "malformed shape (no label)")
            continue
        label, shape_type = shape["label"], shape.get("shape_type") or "polygon"
        if label in NOT_CLASSES:
            not_classes += 1
            continue
        if label not in ids:
            builder.skip_annotation(ref, task["file_name"], f"unknown label {label!r}")
            continue
        if shape_type not in INSTANCE_SHAPES:
            builder.skip_annotation(ref, task["file_name"], f"shape type {shape_type!r} is not an instance mask")
            continue
        points, problem = _shape_polygon(shape)
        if problem:
            builder.skip_annotation(ref, task["file_name"], problem)
            continue
        group = shape.get("group_id")
        key = (label, ("group", group) if isinstance(group, int) and not isinstance(group, bool) else ("shape", i))
        groups.setdefault(key, []).append((i, points))
    for (label, _), parts in groups.items():
        indices = [str(i) for i, _ in parts]
        ref = f"shape {indices[0]}" if len(indices) == 1 else "shapes " + ",".join(indices)
        builder.add_instance(task, ref, ids[label], [p for _, p in parts])
    return not_classes


def plan_labelme_split(name: str, image_dir: str, label_map: label_map_lib.LabelMap) -> SplitPlan:
    """Read one split's LabelMe folder (module docstring) into a plan.

    Args:
      name: 'train' or 'val'; image_dir: the folder of LabelMe jsons (and, usually, their images);
      label_map: the classes (:func:`label_map_lib.from_names` of :func:`read_labels_file` or
        :func:`collect_labels`); a shape's label is looked up by name.

    Returns:
      The split's plan: one task per LabelMe json with a readable image, in file-name order (image ids 1..n, file
      names relative to ``image_dir``); instance ``id`` is ``"shape I"`` / ``"shapes I,J"`` (indices in the json's
      ``shapes``).

    Raises:
      CreatorError: ``image_dir`` is not a folder.
    """
    builder = PlanBuilder(name, image_dir, label_map)
    ids = {c.name: c.id for c in label_map.categories}
    not_labelme, not_classes = [], 0
    for json_path in _json_files(image_dir):
        json_name = os.path.basename(json_path)
        data, problem = _load(json_path)
        if data is None:
            if problem:
                builder.skip_image(json_name, problem)
            else:
                not_labelme.append(json_name)
            continue
        image_path = _image_path(json_path, data)
        if image_path is None:
            builder.skip_image(json_name, f"image file not found ({data.get('imagePath')!r})")
            continue
        file_name = os.path.relpath(image_path, image_dir)
        H, W = data.get("imageHeight"), data.get("imageWidth")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (H, W)):
            builder.skip_image(file_name, "LabelMe json without positive imageHeight / imageWidth")
            continue
        task = builder.add_image(file_name, image_path, H, W)
        not_classes += _add_shapes(builder, task, data["shapes"], ids)
    if not_labelme:
        builder.warnings.append(f"{len(not_labelme)} json file(s) in {image_dir} are no LabelMe files (no "
                                f"'shapes' list) and were left out: {', '.join(not_labelme[:5])}")
    if not_classes:
        builder.warnings.append(f"{not_classes} shape(s) labelled {IGNORE_LABEL} / {BACKGROUND_LABEL} are not "
                                "instances")
    return builder.build()
