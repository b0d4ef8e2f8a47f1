"""YOLO-seg dataset (the Ultralytics segment layout) -> :class:`~data.split_plan.SplitPlan`
(``python -m data.coco_tfrecord_creator -format yolo -data_yaml data.yaml``).

``data.yaml`` (read with PyYAML): ``path`` (the dataset root; relative: to the yaml's folder; absent: the yaml's
folder), ``train`` / ``val`` (each an image folder, searched recursively, or a ``.txt`` list of image paths, one
per line, relative to the list's folder; or a list of those; relative to the root) and ``names`` (a list, or a dict
``{class index: name}``). Category ids are class index + 1 (0 is no COCO category id).

Labels: for ``.../images/.../NAME.jpg`` the file ``.../labels/.../NAME.txt`` (the last ``images`` folder of the
path replaced by ``labels``, as Ultralytics does); a missing label file is an image without objects. One instance
per line, ``class x1 y1 x2 y2 ...`` with coordinates normalised to [0, 1] by the image's width and height (read
from the image file's header with Pillow).

* skipped and listed: an image Pillow cannot open; a line that is malformed, names an unknown class, holds only a
  box (5 values: no mask), an odd number of coordinates or fewer than 3 points, or gives a zero-area box;
  coordinates outside [0, 1] are clipped (counted);
* fatal (:class:`~data.split_plan.CreatorError`): an unreadable yaml, no ``names``, a split that names no existing
  folder or list, a list file that cannot be read.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

from data.plan_builder import IMAGE_EXTENSIONS, PlanBuilder
from data.split_plan import SPLITS, CreatorError, SplitPlan
from yolact.ops import label_map as label_map_lib


@dataclasses.dataclass(frozen=True)
class YoloDataset:
    """A read ``data.yaml``: ``root`` (absolute folder), ``splits`` ({'train' / 'val': [absolute folder or .txt
    path]}, only the splits the yaml names), ``names`` ({class index: name}), ``source`` (the yaml's path)."""

    root: str
    splits: Dict[str, List[str]]
    names: Dict[int, str]
    source: str

    def label_map(self) -> label_map_lib.LabelMap:
        """Category id = class index + 1, named from ``names``."""
        return label_map_lib.from_categories([{"id": k + 1, "name": n} for k, n in sorted(self.names.items())])


def read_data_yaml(path: str) -> YoloDataset:
    """Read and check an Ultralytics ``data.yaml`` (module docstring).

    Raises:
      CreatorError: missing or unreadable file, not a mapping, ``names`` missing or malformed, neither ``train``
        nor ``val``, a split path that does not exist.
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise CreatorError(f"data yaml not found: {path}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CreatorError(f"cannot read {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise CreatorError(f"{path}: not a YOLO data yaml (expected a mapping)")
    names = data.get("names")
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names or not all(
            isinstance(k, int) and k >= 0 and isinstance(v, str) and v for k, v in names.items()):
        raise CreatorError(f"{path}: 'names' must be a non-empty list of names or a {{index: name}} mapping")
    root = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(path)), str(data.get("path") or ".")))
    splits = {}
    for split in SPLITS:
        entries = data.get(split)
        if entries is None:
            continue
        entries = entries if isinstance(entries, list) else [entries]
        if not entries or not all(isinstance(e, str) and e for e in entries):
            raise CreatorError(f"{path}: '{split}' must be a folder or list file, or a list of them")
        resolved = [os.path.normpath(os.path.join(root, e)) for e in entries]
        for entry in resolved:
            if not (os.path.isdir(entry) or os.path.isfile(entry)):
                raise CreatorError(f"{path}: {split} path not found: {entry}")
        splits[split] = resolved
    if not splits:
        raise CreatorError(f"{path}: names neither 'train' nor 'val'")
    return YoloDataset(root=root, splits=splits, names=names, source=path)


def image_paths(entries: List[str]) -> List[str]:
    """The images of a split: each folder's image files (recursive, sorted), each ``.txt`` list's lines in order
    (relative to the list's folder; blank lines ignored).

    Raises:
      CreatorError: a list file that cannot be read.
    """
    out = []
    for entry in entries:
        if os.path.isdir(entry):
            found = [os.path.join(d, n) for d, _, files in os.walk(entry) for n in files
                     if n.lower().endswith(IMAGE_EXTENSIONS)]
            out += sorted(found)
            continue
        try:
            with open(entry, encoding="utf-8") as f:
                lines = [line.strip() for line in f]
        except (OSError, UnicodeDecodeError) as e:
            raise CreatorError(f"cannot read image list {entry}: {e}") from None
        out += [os.path.normpath(os.path.join(os.path.dirname(entry), line)) for line in lines if line]
    return out


def label_path(image_path: str) -> str:
    """Ultralytics' label file of an image: the last ``/images/`` of the path replaced by ``/labels/``, the
    extension by ``.txt``."""
    images, labels = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return os.path.splitext(labels.join(image_path.rsplit(images, 1)))[0] + ".txt"


def _parse_line(line: str, names: Dict[int, str]) -> Tuple[int, np.ndarray]:
    """``(class index, points float [k, 2] normalised)`` of a label line; ValueError(reason) when unusable."""
    try:
        values = [float(v) for v in line.split()]
    except ValueError:
        raise ValueError("malformed line (not numbers)") from None
    cls = values[0]
    if not np.isfinite(values).all() or cls != int(cls) or int(cls) not in names:
        raise ValueError(f"unknown class {line.split()[0]}")
    coords = values[1:]
    if len(coords) == 4:
        raise ValueError("box-only line (no mask)")
    if len(coords) % 2:
        raise ValueError("odd number of coordinates")
    if len(coords) < 6:
        raise ValueError("polygon with fewer than 3 points")
    return int(cls), np.asarray(coords, np.float64).reshape(-1, 2)


def plan_yolo_split(name: str, dataset: YoloDataset) -> SplitPlan:
    """Read one split of a YOLO-seg dataset (module docstring) into a plan.

    Args:
      name: 'train' or 'val', a split of ``dataset``; dataset: :func:`read_data_yaml`'s result.

    Returns:
      The split's plan: one task per image, in :func:`image_paths` order (image ids 1..n, file names relative to
      the dataset root), instance ``id`` ``"line N"`` (1-based line of the label file).

    Raises:
      CreatorError: the split is not in the yaml, or a list file cannot be read.
    """
    if name not in dataset.splits:
        raise CreatorError(f"{dataset.source} has no '{name}' split")
    label_map = dataset.label_map()
    builder = PlanBuilder(name, dataset.source, label_map)
    for path in image_paths(dataset.splits[name]):
        file_name = os.path.relpath(path, dataset.root)
        if not os.path.isfile(path):
            builder.skip_image(file_name, "file not found")
            continue
        try:
            with Image.open(path) as im:
                W, H = im.size
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            builder.skip_image(file_name, f"cannot decode image ({str(e).splitlines()[0][:80]})")
            continue
        task = builder.add_image(file_name, path, H, W)
        labels = label_path(path)
        if not os.path.isfile(labels):
            continue
        try:
            with open(labels, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            builder.skip_annotation("all lines", file_name, f"cannot read label file ({e})")
            continue
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                cls, points = _parse_line(line, dataset.names)
            except ValueError as e:
                builder.skip_annotation(f"line {n}", file_name, str(e))
                continue
            builder.add_instance(task, f"line {n}", cls + 1, [points * [W, H]])
    return builder.build()
