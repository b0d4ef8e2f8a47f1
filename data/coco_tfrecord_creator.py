r"""COCO-style json + image folder -> sharded TFRecords and ``label_map.json``.

Usage (single-dash flags; either split may be given alone)::

    python -m data.coco_tfrecord_creator \
        -train_image_dir ../shared/data/coco2017_mini/train2017 \
        -train_annotations_file ../shared/data/coco2017_mini/annotations/instances_train2017.json \
        -val_image_dir ../shared/data/coco2017_mini/val2017 \
        -val_annotations_file ../shared/data/coco2017_mini/annotations/instances_val2017.json \
        -output_dir data/coco [-num_shards 0] [-num_workers 0] [-strict] [-verbose]

Writes ``OUTPUT_DIR/{train,val}-00000-of-000NN.tfrecord`` (one ``tf.train.Example`` per image of the json, in json
order, keys in data/tfrecord_schema.py), ``OUTPUT_DIR/label_map.json`` (yolact/ops/label_map.py) and
``OUTPUT_DIR/creation_report.json`` (every skipped item with its reason, and the warnings). The same command serves
COCO 2017, Pascal SBD's COCO-style json and custom COCO-style datasets; ``-format labelme`` / ``-format yolo`` read
LabelMe folders and YOLO-seg datasets instead (data/dataset_formats.py; they also write ``annotations/{split}.json``).

What is written, and what happens to bad input:

* every image in the json gets a record, also images without annotations (evaluation needs them);
* one PNG mask (uint8 0/1, image size) per instance, decoded with pycocotools exactly as ``COCO.annToMask``
  (polygons, compressed RLE, crowd uncompressed RLE);
* a 3-channel RGB JPEG is stored byte for byte; grayscale / CMYK / other JPEGs are converted to RGB and re-encoded
  as JPEG (quality 95); PNG and other formats are stored as lossless RGB PNG (alpha dropped);
* skipped and reported: image file missing or undecodable (by name), image size differing from the json;
  annotations with an unknown image or category id, a missing or zero-area box, a box entirely outside the image,
  a polygon with fewer than 3 points, an RLE whose size differs from the image or whose run lengths do not add up to
  height x width (string or counts-list RLE, crowd or not: pycocotools would read or write past the mask), a
  missing or undecodable segmentation;
* boxes past the image border are clipped (counted in the summary);
* a json with images but no ``annotations`` key (e.g. test-dev image lists): a warning in the summary and the report
  (every record holds no objects: usable for evaluation/inference, training refuses such records), exit 0;
* unreadable / invalid json (also one nested too deeply), missing or unreadable image directory, a json none of
  whose images is in the image directory, a category id outside 0..1048575 (``MAX_CATEGORY_ID``,
  yolact/ops/label_map.py), inconsistent category lists between splits, an output path that is a file or below a
  file or an unwritable folder, or an output folder holding shards (``train-*-of-*.tfrecord``) but no
  ``label_map.json``: one-line error on stderr, exit 2, nothing written (the folders and files, and the output path,
  are checked before any json is read);
* ``-strict`` turns every skip into an error: one line, exit 2, nothing written (the previous output stays);
* the creator owns only the files it names: ``{train,val}-NNNNN-of-NNNNN.tfrecord``, ``label_map.json`` and
  ``creation_report.json``. Other files in OUTPUT_DIR are never touched. Everything is first written to a hidden
  temp directory next to OUTPUT_DIR (``.NAME.tmp-*``); only when complete are the new files renamed into OUTPUT_DIR
  (the folder itself when it did not exist), replacing the earlier run's files of those names and removing its
  shards that the new run does not have (another shard count, or a split not given this time). SIGINT/SIGTERM are
  held during those renames; ``creation_report.json`` is removed first and written last, so an output without it
  is incomplete (only a SIGKILL or power loss within the renames can leave that). A failed or interrupted run
  leaves the previous complete output, or nothing; SIGINT / SIGTERM exit 130 / 143 and remove the temp directory;
  a write error (e.g. disk full, while writing the shards, the label map, the report or moving them in) is one
  line, exit 1, with the temp directory removed and the previous output unchanged.

Exit statuses (utils/cli.py): 0 written, 1 write fault, 2 user error (flags, input, ``-strict``), 130 / 143
interrupted.

Images are decoded with Pillow (strict: truncated files are rejected, as TensorFlow's decoder would) in parallel
worker processes (spawned, TensorFlow-free); the main process serializes and writes the records.

This module is the command and :func:`create_tfrecords`, its library call; the work is done by data/coco_json.py
(json + image folder -> split plan, data/split_plan.py), data/encoding.py (images and masks, in the workers) and
data/shards.py (shards, report, the commit into OUTPUT_DIR).
"""

from __future__ import annotations

import os
import signal
from typing import Dict, Sequence

from utils import atomic, cli

cli.quiet_startup(__name__)  # before anything imports TensorFlow (acts only when run as a program)

from data import coco_json, shards  # noqa: E402
from data.split_plan import SPLITS, CreatorError, check_split_names  # noqa: E402


def create_tfrecords(splits: Sequence[coco_json.SplitSpec], output_dir: str, num_shards: int = 0,
                     num_workers: int = 0, strict: bool = False, progress: bool = True) -> Dict:
    """Convert COCO-style splits to ``OUTPUT_DIR/{split}-SSSSS-of-NNNNN.tfrecord`` plus ``label_map.json`` and
    ``creation_report.json``: :func:`data.coco_json.plan_split` for each split, then
    :func:`data.shards.write_tfrecords`.

    Args:
      splits: one or two :class:`data.coco_json.SplitSpec` (names unique, 'train' / 'val').
      output_dir: created, or its own files (``data.shards.is_own_file``) replaced on success; other files in it are
        kept. A folder with shards but no ``label_map.json`` is refused (before any json is read).
      num_shards: shards per split; 0 = ``ceil(images / 1000)``.
      num_workers: encoding processes; 0 = ``os.cpu_count()``; 1 = in this process.
      strict: any skipped image or annotation raises instead.
      progress: show a tqdm bar on stderr.

    Returns:
      The report (:func:`data.shards.write_tfrecords`): ``{"output_dir", "num_classes", "splits": {name: {...counts,
      shards, skipped items, warnings}}}``, also written to ``OUTPUT_DIR/creation_report.json``.

    Raises:
      CreatorError: invalid input (every split's folders and files, and the output path, are checked before any
        json is read; everything else before anything is written) or, with ``strict``, a skip found while encoding
        (the partial output is removed).
      utils.cli.Interrupted: :func:`data.shards.request_stop` was called (the CLI's SIGINT / SIGTERM handler); the
        partial output is removed, as on KeyboardInterrupt.
      OSError: writing failed, e.g. ``utils.atomic.DiskFullError`` (the partial output is removed, the previous
        output stays).
    """
    if not splits:
        raise CreatorError("no split given: pass -train_image_dir/-train_annotations_file and/or the val pair")
    check_split_names([s.name for s in splits])
    for spec in splits:  # every input before any json is read
        coco_json.check_inputs(spec)
    shards.check_output_dir(os.path.abspath(output_dir))
    plans = [coco_json.plan_split(s) for s in splits]
    return shards.write_tfrecords(plans, output_dir, num_shards, num_workers, strict, progress)


# ---------------------------------------------------------------------------------------------------------------
# CLI


def define_flags() -> None:
    """The CLI's flags (called under ``__main__`` only, the project's convention: see utils/cli.py)."""
    from absl import flags

    for split in SPLITS:
        flags.DEFINE_string(f"{split}_image_dir", None, f"Folder of the {split} images.")
        flags.DEFINE_string(f"{split}_annotations_file", None, f"COCO-style json of the {split} split.")
    flags.DEFINE_string("output_dir", None, "Output folder: created, or this tool's files in it replaced on success "
                        "(other files are kept).")
    flags.DEFINE_integer("num_shards", 0, "TFRecord shards per split; 0 = one per 1000 images.", lower_bound=0)
    flags.DEFINE_integer("num_workers", 0, "Encoding processes; 0 = all CPU cores, 1 = no subprocess.",
                         lower_bound=0)
    flags.DEFINE_enum("format", "coco", ["coco", "labelme", "yolo"], "Input: COCO-style json (default), LabelMe "
                      "folders (-train/-val_image_dir, -labels) or a YOLO-seg data.yaml (-data_yaml); "
                      "data/dataset_formats.py.")
    flags.DEFINE_string("labels", None, "-format labelme: class names, one per line (LabelMe's labels.txt); "
                        "default: the sorted labels found.")
    flags.DEFINE_string("data_yaml", None, "-format yolo: the Ultralytics data.yaml (path, train, val, names).")
    flags.DEFINE_bool("strict", False, "Treat every skipped image or annotation as an error (exit 2, nothing "
                      "written).")


def _on_signal(signum, _frame):
    """CLI handler for SIGINT / SIGTERM: :func:`data.shards.request_stop` (the write stops at the next image and
    removes its partial output; a second signal stops at once)."""
    shards.request_stop(signum)


def main(argv: Sequence[str]) -> None:
    """CLI entry (through ``utils.cli.run``): exit 0 written, 2 user error or ``-strict`` skip, 1 write fault, each
    error as one line on stderr; 128 + signal number on SIGINT (130) or SIGTERM (143), after removing the partial
    output (``utils.cli.Interrupted`` from :func:`data.shards.interrupted`)."""
    from absl import flags

    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # keep it ignored where the caller chose so (nohup)
            signal.signal(signum, _on_signal)

    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise CreatorError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.output_dir:
        raise CreatorError("-output_dir is required")
    try:
        print(_create(FLAGS))
    except OSError as e:  # every format: the same writer, the same one line
        reason = "no space left on the device" if atomic.is_disk_full(e) else " ".join(str(e).split())
        raise cli.FaultError(f"cannot write {FLAGS.output_dir}: {reason}; nothing written, the previous output, if "
                             "any, is unchanged") from None


def _create(FLAGS) -> str:
    """The run of ``-format``: COCO here, LabelMe / YOLO-seg through data/dataset_formats.py; returns the summary.

    Raises:
      CreatorError: flags that do not fit the format, bad input; OSError: writing failed.
    """
    if FLAGS.format != "coco":  # LabelMe / YOLO-seg: their readers, the same writer
        from data import dataset_formats

        return dataset_formats.main(FLAGS)
    if FLAGS.labels or FLAGS.data_yaml:
        raise CreatorError("-labels and -data_yaml need -format labelme / -format yolo")
    specs = []
    for split in SPLITS:
        image_dir, ann = FLAGS[f"{split}_image_dir"].value, FLAGS[f"{split}_annotations_file"].value
        if bool(image_dir) != bool(ann):
            raise CreatorError(f"-{split}_image_dir and -{split}_annotations_file must be given together")
        if image_dir:
            specs.append(coco_json.SplitSpec(split, image_dir, ann))
    report = create_tfrecords(specs, FLAGS.output_dir, FLAGS.num_shards, FLAGS.num_workers, FLAGS.strict)
    return shards.format_summary(report)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
