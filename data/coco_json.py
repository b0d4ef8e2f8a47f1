"""COCO-style json + image folder -> :class:`~data.split_plan.SplitPlan` (the reader of COCO 2017, Pascal SBD's
COCO-style json and custom COCO-style datasets).

:func:`plan_split` reads one split's json (``images``, ``categories``, optional ``annotations``), checks it and
decides, before anything is written, which images and annotations go into the TFRecords:

* fatal (:class:`~data.split_plan.CreatorError`): a missing or unreadable image folder (:func:`check_inputs`), an
  unreadable json (also one nested too deeply) or one without an ``images`` list and a non-empty ``categories``
  list, an image entry without integer ``id``, ``file_name`` and positive ``height`` / ``width``, a duplicate image
  id, malformed categories or a category id outside 0..``MAX_CATEGORY_ID`` (yolact/ops/label_map.py), a json
  none of whose image files is in the image folder;
* skipped with a reason: an image file that does not exist; an annotation that is not an object, or has an unknown
  image or category id, a missing or malformed box, a zero-area box, a box entirely outside the image, or a
  segmentation pycocotools cannot turn into a mask of the image's size (:func:`segmentation_problem`);
* boxes past the image border are clipped (counted);
* a json with images but no ``annotations`` key: every image is kept without objects, with a warning.

What the encoder may still reject (an undecodable image file, a size that differs from the json) is found later,
in the worker processes (data/encoding.py). This module imports neither TensorFlow nor pycocotools.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from typing import Dict, List, Optional, Tuple

from data.split_plan import CreatorError, SplitPlan
from yolact.ops import label_map as label_map_lib


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """One split to read: ``name`` ('train' or 'val'), its image folder and COCO-style annotation json."""

    name: str
    image_dir: str
    annotations_file: str


def check_inputs(spec: SplitSpec) -> None:
    """The checks of a split's inputs that read no json (:func:`plan_split` makes them first; the creator makes them
    for every split before reading any json).

    Raises:
      CreatorError: the image folder is missing or cannot be listed, the annotation file is missing or unreadable.
    """
    if not os.path.isdir(spec.image_dir):
        raise CreatorError(f"{spec.name} image directory not found: {spec.image_dir}")
    if not os.access(spec.image_dir, os.R_OK | os.X_OK):
        raise CreatorError(f"{spec.name} image directory not readable: {spec.image_dir}")
    if not os.path.isfile(spec.annotations_file):
        raise CreatorError(f"annotation file not found: {spec.annotations_file}")
    if not os.access(spec.annotations_file, os.R_OK):
        raise CreatorError(f"annotation file not readable: {spec.annotations_file}")


def _load_json(path: str) -> Dict:
    """The json at ``path``: a dict with an ``images`` list, a non-empty ``categories`` list and, when present, an
    ``annotations`` list; CreatorError otherwise (missing, unreadable or not COCO-style)."""
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError) as e:  # ValueError: UnicodeDecodeError, JSONDecodeError, int digits
        raise CreatorError(f"cannot read annotation file {path}: {label_map_lib.json_error(e)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CreatorError(f"{path}: not a COCO-style json (needs an 'images' list)")
    if not isinstance(data.get("categories"), list) or not data["categories"]:
        raise CreatorError(f"{path}: not a COCO-style json (needs a non-empty 'categories' list)")
    if not isinstance(data.get("annotations", []), list):
        raise CreatorError(f"{path}: 'annotations' must be a list")
    return data


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def rle_string_total(counts: str) -> Optional[int]:
    """Sum of the run lengths of a compressed COCO RLE string (``counts`` of a compressed RLE, as text).

    Returns None when the string is malformed (a character outside ``'0'``..``'o'``, a string ending inside a
    number, a negative run); raises nothing.

    The decoding of pycocotools' ``rleFrString`` (common/maskApi.c: 5 bits per character from ``'0'``, bit 0x20 =
    more characters follow, bit 0x10 of the last = negative, counts after the second are deltas to the count two
    before), in Python because pycocotools offers no way to read the counts without decoding the mask, and its
    decoder writes every run into a height x width buffer unchecked.
    """
    cnts: List[int] = []
    pos = 0
    while pos < len(counts):
        x, k, more = 0, 0, True
        while more:
            if pos >= len(counts):
                return None
            c = ord(counts[pos]) - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            pos, k = pos + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(cnts) > 2:
            x += cnts[-2]
        if x < 0:
            return None
        cnts.append(x)
    return sum(cnts)


def _rle_problem(counts, height: int, width: int) -> Optional[str]:
    """Why RLE ``counts`` (a string or a list of run lengths) do not describe a height x width mask, or None."""
    if isinstance(counts, str):
        total = rle_string_total(counts)
        if total is None:
            return "malformed RLE counts string"
    else:
        if not all(_is_int(v) and v >= 0 for v in counts):
            return "malformed RLE counts list"
        total = sum(counts)
    if total != height * width:
        return f"RLE counts total {total} differs from height x width {height * width}"
    return None


def segmentation_problem(segm, height: int, width: int) -> Optional[str]:
    """Why a COCO segmentation cannot give a height x width mask, following pycocotools' input types.

    Args:
      segm: an annotation's ``segmentation``: polygons (list of coordinate lists) or RLE (dict with ``size`` and
        ``counts``, a compressed string or a list of run lengths); anything else is a problem.
      height, width: the image's size in pixels.

    Returns:
      None when pycocotools can decode it into a [height, width] mask, else the reason (one line), e.g.
      ``"polygon with fewer than 3 points"`` or ``"RLE counts total 12 differs from height x width 20"``.
    """
    if isinstance(segm, list):
        if not segm:
            return "empty segmentation"
        for poly in segm:
            if not isinstance(poly, list) or not all(_is_number(v) for v in poly):
                return "malformed polygon"
            if len(poly) < 6:
                return "polygon with fewer than 3 points"
            if len(poly) % 2:
                return "polygon with an odd number of coordinates"
        return None
    if isinstance(segm, dict):
        size, counts = segm.get("size"), segm.get("counts")
        if not (isinstance(size, list) and len(size) == 2) or not isinstance(counts, (list, str)):
            return "malformed RLE segmentation"
        if list(size) != [height, width]:
            return f"RLE size {size} differs from image size [{height}, {width}]"
        return _rle_problem(counts, height, width)
    return "no segmentation"


def plan_split(spec: SplitSpec) -> SplitPlan:
    """Read and validate one split's json and image folder; decide what is written and what is skipped.

    Args:
      spec: the split's name, image folder and COCO-style json.

    Returns:
      The split's :class:`~data.split_plan.SplitPlan` (``source`` is the json's path): the images whose file exists,
      in json order, each with its valid annotations in json order (boxes normalized and clipped), and the skipped
      items with their reasons (module docstring).

    Raises:
      CreatorError: missing image directory, unreadable or invalid json, malformed or duplicate image entries,
        malformed categories, no image file of the json in the image directory.
    """
    check_inputs(spec)
    data = _load_json(spec.annotations_file)
    src = spec.annotations_file
    try:
        label_map = label_map_lib.from_categories(data["categories"])
    except label_map_lib.LabelMapError as e:
        raise CreatorError(f"{src}: {e}") from None
    images, tasks, skipped_images = _image_tasks(data["images"], spec.image_dir, src)
    if images and not tasks:
        raise CreatorError(f"{src}: none of its {len(images)} image files is in {spec.image_dir} (wrong image "
                           "directory?)")
    warnings = []
    if "annotations" not in data and images:
        warnings.append(f"{src} has no 'annotations' key: the {len(images)} records hold no objects (evaluation or "
                        "inference only; training refuses them)")
    skipped_annotations, clipped = _add_annotations(data.get("annotations", []), images, label_map)
    return SplitPlan(name=spec.name, source=src, label_map=label_map, tasks=tasks, skipped_images=skipped_images,
                     skipped_annotations=skipped_annotations, num_images=len(images), boxes_clipped=clipped,
                     warnings=warnings)


def _image_tasks(entries: List, image_dir: str, src: str
                 ) -> Tuple[Dict[int, Dict], List[Dict], List[Tuple[str, str]]]:
    """The json's ``images`` -> ``(task by image id, tasks whose file exists, skipped (file_name, reason))``; the
    tasks' ``anns`` are empty. Raises CreatorError for a malformed or duplicate entry."""
    images: Dict[int, Dict] = {}
    tasks: List[Dict] = []
    skipped_images: List[Tuple[str, str]] = []
    for img in entries:
        if not isinstance(img, dict) or not _is_int(img.get("id")) or not isinstance(img.get("file_name"), str):
            raise CreatorError(f"{src}: image entry without integer 'id' and 'file_name': {str(img)[:100]}")
        if not all(_is_int(img.get(k)) and img[k] > 0 for k in ("height", "width")):
            raise CreatorError(f"{src}: image {img['id']} ({img['file_name']}) needs positive 'height' and 'width'")
        if img["id"] in images:
            raise CreatorError(f"{src}: duplicate image id {img['id']}")
        task = {
            "image_id": img["id"],
            "file_name": img["file_name"],
            "path": os.path.join(image_dir, img["file_name"]),
            "height": img["height"],
            "width": img["width"],
            "anns": [],
        }
        images[img["id"]] = task
        if os.path.isfile(task["path"]):
            tasks.append(task)
        else:
            skipped_images.append((img["file_name"], "file not found"))
    return images, tasks, skipped_images


def _add_annotations(annotations: List, images: Dict[int, Dict], label_map: label_map_lib.LabelMap
                     ) -> Tuple[List[Tuple[object, str, str]], int]:
    """Append each valid annotation to its image's ``anns`` (in json order, in the plan's form); return the skipped
    ``(annotation id, file_name or image id, reason)`` and the number of clipped boxes."""
    skipped_annotations: List[Tuple[object, str, str]] = []
    clipped = 0
    for ann in annotations:
        if not isinstance(ann, dict):
            skipped_annotations.append((None, "?", "annotation is not an object"))
            continue
        ann_id = ann.get("id")
        task = images.get(ann.get("image_id"))
        if task is None:
            skipped_annotations.append((ann_id, str(ann.get("image_id")), f"unknown image id {ann.get('image_id')}"))
            continue

        def skip(reason, _ann_id=ann_id, _task=task):
            skipped_annotations.append((_ann_id, _task["file_name"], reason))

        cat = ann.get("category_id")
        if not _is_int(cat) or not label_map.has_id(cat):
            skip(f"unknown category id {cat}")
            continue
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            skip("missing or malformed bbox")
            continue
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            skip("zero-area box")
            continue
        W, H = task["width"], task["height"]
        x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, W), min(y + h, H)
        if x2 <= x1 or y2 <= y1:
            skip("box outside the image")
            continue
        problem = segmentation_problem(ann.get("segmentation"), H, W)
        if problem:
            skip(problem)
            continue
        clipped += (x1, y1, x2, y2) != (x, y, x + w, y + h)
        area = ann.get("area")
        task["anns"].append(
            {
                "id": ann_id,
                "category_id": int(cat),
                "name": label_map.id_to_name(cat),
                "iscrowd": int(bool(ann.get("iscrowd", 0))),
                "area": float(area) if _is_number(area) else (x2 - x1) * (y2 - y1),
                "box": (x1 / W, y1 / H, x2 / W, y2 / H),
                "segmentation": ann["segmentation"],
            }
        )
    return skipped_annotations, clipped
