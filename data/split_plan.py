"""The split plan: what a dataset reader hands to the TFRecord writer.

A reader reads one split of a dataset (data/coco_json.py: a COCO-style json and its image folder), validates it and
returns a :class:`SplitPlan`; the writer (data/shards.py) encodes the plan's images (data/encoding.py) and writes the
shards without knowing the input format. Every reader gives the images and annotations in COCO form, so that the
writer takes any of them:

* ``SplitPlan.tasks``: one dict per image file to encode, in the dataset's order, with ``image_id`` (int, the
  dataset's image id, stored as ``image/source_id``), ``file_name`` (str, stored as ``image/filename`` and named in
  the report), ``path`` (str, an existing file), ``height`` and ``width`` (int > 0, the size the annotations refer
  to; an image file of another size is skipped while encoding) and ``anns`` (list of dicts, below);
* each ``anns`` entry: ``id`` (the dataset's annotation id, named in the report), ``category_id`` (int, known to
  ``label_map``), ``name`` (str, its category name), ``iscrowd`` (0 or 1), ``area`` (float, original pixels),
  ``box`` (normalized ``(x1, y1, x2, y2)``, clipped to the image, non-empty) and ``segmentation`` in COCO form:
  polygons (a non-empty list of ``[x0, y0, x1, y1, ...]`` lists of 3 or more points) or RLE (``{"size": [height,
  width], "counts": str | list of int}`` whose run lengths add up to height x width), as pycocotools reads them.

The reader has already dropped what cannot be written (listed in ``skipped_images`` / ``skipped_annotations`` with
the reason); the writer adds what it finds while decoding (undecodable images, a size that differs from the plan's).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence, Tuple

from utils import cli
from yolact.ops import label_map as label_map_lib

SPLITS = ("train", "val")  # the split names, and the prefixes of the shard files


class CreatorError(cli.UserError):
    """A fatal input problem, or a skip under ``strict``; the message is one line (the CLI's error, exit 2)."""


@dataclasses.dataclass
class SplitPlan:
    """One split after reading and validating it (main process, before anything is written).

    Attributes:
      name: the split, one of :data:`SPLITS`.
      source: what the reader read (e.g. the annotation file), named in error messages and warnings.
      label_map: the split's categories; every split written together must have the same.
      tasks: the images to encode (module docstring).
      skipped_images: ``(file_name, reason)``; the writer appends the images it cannot decode.
      skipped_annotations: ``(annotation id, file_name or image id, reason)``; the writer appends the segmentations
        it cannot decode.
      num_images: images in the dataset's split, written or not.
      boxes_clipped: annotations whose box was clipped to the image.
      warnings: one-line notes for the summary and the report (e.g. a json without ``annotations``).
    """

    name: str
    source: str
    label_map: label_map_lib.LabelMap
    tasks: List[Dict]
    skipped_images: List[Tuple[str, str]]
    skipped_annotations: List[Tuple[object, str, str]]
    num_images: int
    boxes_clipped: int = 0
    warnings: List[str] = dataclasses.field(default_factory=list)


def check_split_names(names: Sequence[str]) -> None:
    """Check the names of the splits written together.

    Args:
      names: one name per split.

    Raises:
      CreatorError: a name given twice, or a name not among :data:`SPLITS`.
    """
    if len(set(names)) != len(names):
        raise CreatorError("split names must be unique")
    if any(name not in SPLITS for name in names):
        raise CreatorError(f"split names must be among {SPLITS}")
