"""The non-COCO inputs of the TFRecord creator (``-format labelme`` / ``-format yolo``): their readers' plans written
as COCO's are, plus a COCO json of each split.

:func:`create_from_format` reads the splits (data/labelme_reader.py, data/yolo_reader.py), writes them with
:func:`data.shards.write_tfrecords` (the same shards, ``label_map.json`` and ``creation_report.json`` as COCO input,
with the same handling of bad input, ``strict`` and the all-at-once commit), then writes
``OUTPUT_DIR/annotations/{split}.json``: the written images and instances as a COCO instances json (image ids as in
the records' ``image/source_id``), so that ``inference.py -eval`` and ``train.py -val_annotations`` take any format.
The jsons are written after the records are committed, each atomically (utils/atomic.py); the previous one stays
when a write fails.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence

from data import labelme_reader, shards, yolo_reader
from data.plan_builder import plan_to_coco
from data.split_plan import SPLITS, CreatorError, SplitPlan, check_split_names
from utils import atomic
from yolact.ops import label_map as label_map_lib

FORMATS = ("coco", "labelme", "yolo")
ANNOTATIONS_DIR = "annotations"


def labelme_plans(image_dirs: Dict[str, str], labels_file: Optional[str] = None) -> List[SplitPlan]:
    """Plans of LabelMe folders ``{split: folder}``; classes from ``labels_file`` or the labels found.

    Raises:
      CreatorError: a missing folder, an unreadable labels file, no label found.
    """
    names = (labelme_reader.read_labels_file(labels_file) if labels_file
             else labelme_reader.collect_labels(list(image_dirs.values())))
    label_map = label_map_lib.from_names(names)
    return [labelme_reader.plan_labelme_split(split, folder, label_map) for split, folder in image_dirs.items()]


def yolo_plans(data_yaml: str) -> List[SplitPlan]:
    """Plans of the splits a YOLO ``data.yaml`` names (train and/or val).

    Raises:
      CreatorError: see :func:`data.yolo_reader.read_data_yaml`.
    """
    dataset = yolo_reader.read_data_yaml(data_yaml)
    return [yolo_reader.plan_yolo_split(split, dataset) for split in SPLITS if split in dataset.splits]


def write_coco_jsons(plans: Sequence[SplitPlan], output_dir: str) -> Dict[str, str]:
    """Write ``output_dir/annotations/{split}.json`` (:func:`data.plan_builder.plan_to_coco`) atomically for each
    written plan; return ``{split: path}``. Raises OSError when writing fails."""
    paths = {}
    for plan in plans:
        paths[plan.name] = os.path.join(output_dir, ANNOTATIONS_DIR, f"{plan.name}.json")
        atomic.write_text(paths[plan.name], json.dumps(plan_to_coco(plan)))
    return paths


def create_from_format(fmt: str, output_dir: str, image_dirs: Optional[Dict[str, str]] = None,
                       labels_file: Optional[str] = None, data_yaml: Optional[str] = None, num_shards: int = 0,
                       num_workers: int = 0, strict: bool = False, progress: bool = True) -> Dict:
    """LabelMe folders or a YOLO-seg dataset -> TFRecords, ``label_map.json``, ``creation_report.json`` and
    ``annotations/{split}.json`` in ``output_dir``.

    Args:
      fmt: 'labelme' (needs ``image_dirs`` {'train' / 'val': folder}, optional ``labels_file``) or 'yolo' (needs
        ``data_yaml``);
      output_dir, num_shards, num_workers, strict, progress: as :func:`data.shards.write_tfrecords`.

    Returns:
      The writer's report (also in ``creation_report.json``) plus ``"coco_json": {split: path}``.

    Raises:
      CreatorError: bad flags or input (nothing written), or a skip under ``strict``.
      utils.cli.Interrupted, OSError: as :func:`data.shards.write_tfrecords` (the previous output stays).
    """
    if fmt == "labelme":
        if not image_dirs or data_yaml:
            raise CreatorError("-format labelme needs -train_image_dir and/or -val_image_dir (LabelMe folders) "
                               "and no -data_yaml")
        check_split_names(list(image_dirs))
        shards.check_output_dir(os.path.abspath(output_dir))
        plans = labelme_plans(image_dirs, labels_file)
    elif fmt == "yolo":
        if not data_yaml or image_dirs or labels_file:
            raise CreatorError("-format yolo needs -data_yaml (its splits and names) and no -*_image_dir / -labels")
        shards.check_output_dir(os.path.abspath(output_dir))
        plans = yolo_plans(data_yaml)
    else:
        raise CreatorError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    report = shards.write_tfrecords(plans, output_dir, num_shards, num_workers, strict, progress)
    report["coco_json"] = write_coco_jsons(plans, output_dir)
    return report


def main(flag_values) -> str:
    """The creator CLI's ``-format labelme`` / ``-format yolo`` path (data/coco_tfrecord_creator.py ``main``):
    checks the flags, runs :func:`create_from_format` and returns the summary to print.

    Raises:
      CreatorError: flags that do not fit the format (e.g. ``-train_annotations_file``), bad input.
      OSError: writing failed (the previous output stays; the CLI turns it into its one line, exit 1).
    """
    FLAGS = flag_values
    given = [f"-{s}_annotations_file" for s in SPLITS if FLAGS[f"{s}_annotations_file"].value]
    if given:
        raise CreatorError(f"{', '.join(given)} belongs to -format coco; -format {FLAGS.format} reads its own "
                           "annotations")
    image_dirs = {s: FLAGS[f"{s}_image_dir"].value for s in SPLITS if FLAGS[f"{s}_image_dir"].value}
    report = create_from_format(FLAGS.format, FLAGS.output_dir, image_dirs, FLAGS.labels, FLAGS.data_yaml,
                                FLAGS.num_shards, FLAGS.num_workers, FLAGS.strict)
    jsons = ", ".join(report["coco_json"].values())
    return shards.format_summary(report) + f"\nCOCO json of each split: {jsons}"
