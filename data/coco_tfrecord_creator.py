r"""COCO-style json + image folder -> sharded TFRecords and ``label_map.json``.

Usage (single-dash flags, as the seed; either split may be given alone)::

    python -m data.coco_tfrecord_creator \
        -train_image_dir ../shared/data/coco2017_mini/train2017 \
        -train_annotations_file ../shared/data/coco2017_mini/annotations/instances_train2017.json \
        -val_image_dir ../shared/data/coco2017_mini/val2017 \
        -val_annotations_file ../shared/data/coco2017_mini/annotations/instances_val2017.json \
        -output_dir data/coco [-num_shards 0] [-num_workers 0] [-strict] [-verbose]

Writes ``OUTPUT_DIR/{train,val}-00000-of-000NN.tfrecord`` (one ``tf.train.Example`` per image of the json, in json
order, keys in data/tfrecord_schema.py), ``OUTPUT_DIR/label_map.json`` (yolact/ops/label_map.py) and
``OUTPUT_DIR/creation_report.json`` (every skipped item with its reason, and the warnings). The same command serves
COCO 2017, Pascal SBD's COCO-style json and custom COCO-style datasets.

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
* unreadable / invalid json, missing image directory, inconsistent category lists between splits, an output path
  that is a file, or an output folder holding shards (``train-*-of-*.tfrecord``) but no ``label_map.json``: one-line
  error on stderr, exit 2, nothing written;
* ``-strict`` turns every skip into an error: one line, exit 2, nothing written (the previous output stays);
* the creator owns only the files it names: ``{train,val}-NNNNN-of-NNNNN.tfrecord``, ``label_map.json`` and
  ``creation_report.json``. Other files in OUTPUT_DIR are never touched. Everything is first written to a hidden
  temp directory next to OUTPUT_DIR (``.NAME.tmp-*``); only when complete are the new files renamed into OUTPUT_DIR
  (the folder itself when it did not exist), replacing the earlier run's files of those names and removing its
  shards that the new run does not have (another shard count, or a split not given this time). SIGINT/SIGTERM are
  held during those renames; ``creation_report.json`` is removed first and written last, so an output without it
  is incomplete (only a SIGKILL or power loss within the renames can leave that). A failed or interrupted run
  leaves the previous complete output, or nothing; SIGINT / SIGTERM exit 130 / 143 and remove the temp directory;
  a write error (e.g. disk full) exits 1.

Exit statuses (utils/cli.py): 0 written, 1 write fault, 2 user error (flags, input, ``-strict``), 130 / 143
interrupted.

Images are decoded with Pillow (strict: truncated files are rejected, as TensorFlow's decoder would) in parallel
worker processes (spawned, TensorFlow-free); the main process serializes and writes the records.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import io
import json
import math
import multiprocessing
import numbers
import os
import re
import shutil
import signal
import sys
import tempfile
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from utils import cli

cli.quiet_startup(__name__)  # before anything imports TensorFlow (acts only when run as a program)

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm import tqdm

from yolact.ops import label_map as label_map_lib

IMAGES_PER_SHARD = 1000  # automatic shard count: ceil(images / IMAGES_PER_SHARD)
JPEG_QUALITY = 95  # for re-encoded (converted) JPEGs
REPORT_FILENAME = "creation_report.json"
SPLITS = ("train", "val")
_MAX_LISTED = 20  # skipped items listed per reason in the printed summary (all are in the report file)
# The files this tool writes, and the only ones it ever replaces or removes in OUTPUT_DIR.
_SHARD_NAME = re.compile(rf"^(?:{'|'.join(SPLITS)})-\d{{5}}-of-\d{{5}}\.tfrecord$")
OWN_FILES = (label_map_lib.LABEL_MAP_FILENAME, REPORT_FILENAME)


class CreatorError(cli.UserError):
    """A fatal input problem, or a skip under ``-strict``; the message is one line (the CLI's error, exit 2)."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived while the CLI ran; ``signum`` tells which."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_PENDING_SIGNAL: List[Optional[int]] = [None]  # set by the CLI's signal handler


def _check_interrupted() -> None:
    if _PENDING_SIGNAL[0] is not None:
        raise Interrupted(_PENDING_SIGNAL[0])


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """One split to convert: ``name`` ('train' or 'val'), its image folder and COCO-style annotation json."""

    name: str
    image_dir: str
    annotations_file: str


@dataclasses.dataclass
class SplitPlan:
    """A split after reading and validating its json (main process, before anything is written).

    Attributes:
      tasks: one dict per image whose file exists, in json order (input of :func:`encode_image`).
      skipped_images: ``(file_name, reason)``.
      skipped_annotations: ``(annotation id, file_name or image id, reason)``.
      num_images: images in the json.
      boxes_clipped: annotations whose box was clipped to the image.
      warnings: one-line notes for the summary (e.g. a json without ``annotations``).
    """

    spec: SplitSpec
    label_map: label_map_lib.LabelMap
    tasks: List[Dict]
    skipped_images: List[Tuple[str, str]]
    skipped_annotations: List[Tuple[object, str, str]]
    num_images: int
    boxes_clipped: int = 0
    warnings: List[str] = dataclasses.field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------------
# Reading and validating the json (main process)


def _load_json(path: str) -> Dict:
    if not os.path.isfile(path):
        raise CreatorError(f"annotation file not found: {path}")
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CreatorError(f"cannot read annotation file {path}: {str(e).splitlines()[0]}") from None
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
    """Sum of the run lengths of a compressed COCO RLE string; None when the string is malformed.

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


def _segmentation_problem(segm, height: int, width: int) -> Optional[str]:
    """Why ``segm`` cannot give a mask (None when it can), following pycocotools' input types."""
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

    Raises:
      CreatorError: missing image directory, unreadable or invalid json, malformed or duplicate image entries,
        malformed categories.
    """
    if not os.path.isdir(spec.image_dir):
        raise CreatorError(f"{spec.name} image directory not found: {spec.image_dir}")
    data = _load_json(spec.annotations_file)
    src = spec.annotations_file
    try:
        label_map = label_map_lib.from_categories(data["categories"])
    except label_map_lib.LabelMapError as e:
        raise CreatorError(f"{src}: {e}") from None

    images: Dict[int, Dict] = {}
    tasks: List[Dict] = []
    skipped_images: List[Tuple[str, str]] = []
    for img in data["images"]:
        if not isinstance(img, dict) or not _is_int(img.get("id")) or not isinstance(img.get("file_name"), str):
            raise CreatorError(f"{src}: image entry without integer 'id' and 'file_name': {str(img)[:100]}")
        if not all(_is_int(img.get(k)) and img[k] > 0 for k in ("height", "width")):
            raise CreatorError(f"{src}: image {img['id']} ({img['file_name']}) needs positive 'height' and 'width'")
        if img["id"] in images:
            raise CreatorError(f"{src}: duplicate image id {img['id']}")
        task = {
            "image_id": img["id"],
            "file_name": img["file_name"],
            "path": os.path.join(spec.image_dir, img["file_name"]),
            "height": img["height"],
            "width": img["width"],
            "anns": [],
        }
        images[img["id"]] = task
        if os.path.isfile(task["path"]):
            tasks.append(task)
        else:
            skipped_images.append((img["file_name"], "file not found"))

    skipped_annotations: List[Tuple[object, str, str]] = []
    warnings = []
    if "annotations" not in data and images:
        warnings.append(f"{src} has no 'annotations' key: the {len(images)} records hold no objects (evaluation or "
                        "inference only; training refuses them)")
    clipped = 0
    for ann in data.get("annotations", []):
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
        problem = _segmentation_problem(ann.get("segmentation"), H, W)
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
    return SplitPlan(spec, label_map, tasks, skipped_images, skipped_annotations, len(images), clipped, warnings)


# ---------------------------------------------------------------------------------------------------------------
# Encoding one image (worker processes; no TensorFlow)


def annotation_to_rle(segm, height: int, width: int) -> Dict:
    """COCO segmentation (polygons, uncompressed or compressed RLE) -> one compressed RLE.

    Same steps as ``pycocotools.coco.COCO.annToRLE`` (original: data/coco.py uses ``annToMask``).
    """
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    if isinstance(segm["counts"], list):
        return mask_utils.frPyObjects(segm, height, width)
    return segm


def _image_to_rgb_bytes(data: bytes) -> Tuple[bytes, str, Optional[str], Tuple[int, int]]:
    """Decode strictly; return ``(encoded, format, converted_from, (width, height))``.

    ``converted_from`` is e.g. ``"JPEG CMYK"`` when the image was re-encoded, None when the bytes are kept.
    Raises OSError / ValueError / SyntaxError when the image cannot be decoded.
    """
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        fmt, mode, size = im.format, im.mode, im.size
        if fmt == "JPEG" and mode == "RGB":
            return data, "jpeg", None, size
        if fmt == "PNG" and mode == "RGB":
            return data, "png", None, size
        rgb = im.convert("RGB")
    out = io.BytesIO()
    if fmt == "JPEG":
        rgb.save(out, format="JPEG", quality=JPEG_QUALITY)
        return out.getvalue(), "jpeg", f"{fmt} {mode}", size
    rgb.save(out, format="PNG", compress_level=3)
    return out.getvalue(), "png", f"{fmt} {mode}", size


def encode_image(task: Dict) -> Dict:
    """Decode, convert and encode one image and its instance masks (runs in a worker process).

    Args:
      task: an entry of ``SplitPlan.tasks``.

    Returns:
      ``{"ok": False, "file_name", "reason"}`` when the image is skipped, else ``{"ok": True, "file_name",
      "image_id", "encoded", "format", "height", "width", "converted_from", "objects": [...],
      "ann_skips": [(id, reason)]}`` where each object has ``category_id``, ``name``, ``iscrowd``, ``area``,
      ``box`` (normalized, clipped ``[x1, y1, x2, y2]``) and ``mask_png`` (PNG of a uint8 0/1 [H, W] mask).
    """
    name = task["file_name"]
    try:
        with open(task["path"], "rb") as f:
            data = f.read()
    except OSError as e:
        return {"ok": False, "file_name": name, "reason": f"cannot read file: {e.strerror or e}"}
    try:
        encoded, fmt, converted_from, (w, h) = _image_to_rgb_bytes(data)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return {"ok": False, "file_name": name, "reason": f"cannot decode image ({str(e).splitlines()[0][:80]})"}
    H, W = task["height"], task["width"]
    if (w, h) != (W, H):
        return {"ok": False, "file_name": name, "reason": f"image is {w}x{h} but the json says {W}x{H}"}

    objects, ann_skips = [], []
    for ann in task["anns"]:
        try:
            mask = mask_utils.decode(annotation_to_rle(ann["segmentation"], H, W))
        except Exception as e:  # pycocotools raises bare Exception for unsupported input
            ann_skips.append((ann["id"], f"segmentation cannot be decoded ({str(e)[:60]})"))
            continue
        ok, png = cv2.imencode(".png", np.ascontiguousarray(mask, dtype=np.uint8))
        if not ok:
            ann_skips.append((ann["id"], "mask PNG encoding failed"))
            continue
        obj = {k: ann[k] for k in ("category_id", "name", "iscrowd", "area", "box")}
        obj["mask_png"] = png.tobytes()
        objects.append(obj)
    return {
        "ok": True,
        "file_name": name,
        "image_id": task["image_id"],
        "encoded": encoded,
        "format": fmt,
        "height": H,
        "width": W,
        "converted_from": converted_from,
        "objects": objects,
        "ann_skips": ann_skips,
    }


# ---------------------------------------------------------------------------------------------------------------
# Writing (main process)


def shard_paths(directory: str, split: str, num_shards: int) -> List[str]:
    """``DIR/{split}-{i:05d}-of-{num_shards:05d}.tfrecord`` for i in 0..num_shards-1."""
    return [os.path.join(directory, f"{split}-{i:05d}-of-{num_shards:05d}.tfrecord") for i in range(num_shards)]


def _results(tasks: Sequence[Dict], num_workers: int) -> Iterator[Dict]:
    """``encode_image`` over tasks, in order; spawned processes when ``num_workers > 1``."""
    if num_workers <= 1 or len(tasks) <= 1:
        yield from map(encode_image, tasks)
        return
    ctx = multiprocessing.get_context("spawn")  # TensorFlow is loaded in this process: never fork it
    executor = concurrent.futures.ProcessPoolExecutor(max_workers=num_workers, mp_context=ctx,
                                                      initializer=_ignore_sigint)
    try:
        chunk = max(1, min(16, len(tasks) // (4 * num_workers)))
        yield from executor.map(encode_image, tasks, chunksize=chunk)
        executor.shutdown(wait=True)
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


def _ignore_sigint() -> None:
    """Worker initializer: Ctrl-C is handled by the main process alone (it cancels the pool)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _write_split(plan: SplitPlan, directory: str, num_shards: int, num_workers: int, strict: bool,
                 progress: bool) -> Dict:
    import tensorflow as tf  # imported here so that spawned workers stay TensorFlow-free

    from data import tfrecord_schema as schema

    tasks = plan.tasks
    n_shards = num_shards if num_shards > 0 else max(1, math.ceil(len(tasks) / IMAGES_PER_SHARD))
    paths = shard_paths(directory, plan.spec.name, n_shards)
    shard_of = [i * n_shards // max(len(tasks), 1) for i in range(len(tasks))]
    stats = collections.Counter()
    converted = collections.Counter()
    writer, current = None, -1
    bar = tqdm(total=len(tasks), desc=plan.spec.name, unit="img", disable=not progress, file=sys.stderr)
    try:
        for i, res in enumerate(_results(tasks, num_workers)):
            _check_interrupted()
            bar.update(1)
            if not res["ok"]:
                plan.skipped_images.append((res["file_name"], res["reason"]))
                if strict:
                    raise CreatorError(f"strict: image {res['file_name']}: {res['reason']}")
                continue
            for ann_id, reason in res["ann_skips"]:
                plan.skipped_annotations.append((ann_id, res["file_name"], reason))
                if strict:
                    raise CreatorError(f"strict: annotation {ann_id} ({res['file_name']}): {reason}")
            while current < shard_of[i]:
                if writer is not None:
                    writer.close()
                current += 1
                writer = tf.io.TFRecordWriter(paths[current])
            objs = res["objects"]
            example = schema.make_example(
                encoded=res["encoded"],
                image_format=res["format"],
                source_id=res["image_id"],
                filename=res["file_name"],
                height=res["height"],
                width=res["width"],
                xmin=[o["box"][0] for o in objs],
                ymin=[o["box"][1] for o in objs],
                xmax=[o["box"][2] for o in objs],
                ymax=[o["box"][3] for o in objs],
                labels=[o["category_id"] for o in objs],
                texts=[o["name"] for o in objs],
                is_crowd=[o["iscrowd"] for o in objs],
                areas=[o["area"] for o in objs],
                masks_png=[o["mask_png"] for o in objs],
            )
            writer.write(example.SerializeToString())
            stats["images"] += 1
            stats["instances"] += len(objs)
            stats["crowd"] += sum(o["iscrowd"] for o in objs)
            stats["empty"] += not objs
            if res["converted_from"]:
                converted[res["converted_from"]] += 1
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    for path in paths[current + 1:]:  # shards that got no record (skipped images) still exist, empty
        tf.io.TFRecordWriter(path).close()
    return {
        "images_in_json": plan.num_images,
        "images_written": stats["images"],
        "images_without_instances": stats["empty"],
        "instances_written": stats["instances"],
        "crowd_instances": stats["crowd"],
        "boxes_clipped": plan.boxes_clipped,
        "images_converted": dict(converted),
        "shards": [os.path.basename(p) for p in paths],
        "skipped_images": [{"file_name": n, "reason": r} for n, r in plan.skipped_images],
        "skipped_annotations": [{"id": a, "image": n, "reason": r} for a, n, r in plan.skipped_annotations],
        "warnings": list(plan.warnings),
    }


def is_own_file(name: str) -> bool:
    """True for the names this tool writes into OUTPUT_DIR (shards, ``label_map.json``, ``creation_report.json``):
    the only files it replaces or removes there."""
    return name in OWN_FILES or bool(_SHARD_NAME.match(name))


def _check_output_dir(output_dir: str) -> None:
    if os.path.exists(output_dir):
        if not os.path.isdir(output_dir):
            raise CreatorError(f"output path exists and is not a directory: {output_dir}")
        names = os.listdir(output_dir)
        shards = sorted(n for n in names if _SHARD_NAME.match(n))
        if shards and label_map_lib.LABEL_MAP_FILENAME not in names:
            raise CreatorError(
                f"output directory {output_dir} holds shards ({shards[0]}) but no {label_map_lib.LABEL_MAP_FILENAME}, "
                "so they were not written by this tool: refusing to replace them"
            )


def _commit(tmp: str, output_dir: str) -> None:
    """Move the complete output from ``tmp`` into ``output_dir`` (see the module docstring); SIGINT / SIGTERM are
    held meanwhile. Files of ``output_dir`` that :func:`is_own_file` does not claim are never touched."""
    umask = os.umask(0)
    os.umask(umask)
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        if not os.path.exists(output_dir):
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700
            os.rename(tmp, output_dir)
            return
        new = os.listdir(tmp)
        report = os.path.join(output_dir, REPORT_FILENAME)
        if os.path.exists(report):
            os.remove(report)  # the "complete" marker goes first and comes back last
        for name in os.listdir(output_dir):
            if is_own_file(name) and name not in new:  # e.g. another shard count, or a split not written now
                os.remove(os.path.join(output_dir, name))
        for name in sorted(new, key=lambda n: n == REPORT_FILENAME):
            os.replace(os.path.join(tmp, name), os.path.join(output_dir, name))
        os.rmdir(tmp)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _strict_error(plans: Sequence[SplitPlan]) -> Optional[str]:
    items = [f"{p.spec.name} image {n}: {r}" for p in plans for n, r in p.skipped_images]
    items += [f"{p.spec.name} annotation {a} ({n}): {r}" for p in plans for a, n, r in p.skipped_annotations]
    if not items:
        return None
    more = f" (and {len(items) - 3} more)" if len(items) > 3 else ""
    return f"strict: {len(items)} item(s) would be skipped: " + "; ".join(items[:3]) + more


def create_tfrecords(splits: Sequence[SplitSpec], output_dir: str, num_shards: int = 0, num_workers: int = 0,
                     strict: bool = False, progress: bool = True) -> Dict:
    """Convert COCO-style splits to ``OUTPUT_DIR/{split}-SSSSS-of-NNNNN.tfrecord`` plus ``label_map.json``.

    Args:
      splits: one or two :class:`SplitSpec` (names unique).
      output_dir: created, or its own files (:func:`is_own_file`) replaced on success; other files in it are kept.
        A folder with shards but no ``label_map.json`` is refused.
      num_shards: shards per split; 0 = ``ceil(images / 1000)``.
      num_workers: encoding processes; 0 = ``os.cpu_count()``; 1 = in this process.
      strict: any skipped image or annotation raises instead.
      progress: show a tqdm bar on stderr.

    Returns:
      The report: ``{"output_dir", "num_classes", "splits": {name: {...counts, shards, skipped items...}}}``,
      also written to ``OUTPUT_DIR/creation_report.json``.

    Raises:
      CreatorError: invalid input (before anything is written) or, with ``strict``, a skip found while encoding
        (the partial output is removed). KeyboardInterrupt also removes the partial output.
      OSError: writing failed (the partial output is removed, the previous output stays).
    """
    if not splits:
        raise CreatorError("no split given: pass -train_image_dir/-train_annotations_file and/or the val pair")
    if len({s.name for s in splits}) != len(splits):
        raise CreatorError("split names must be unique")
    if any(s.name not in SPLITS for s in splits):
        raise CreatorError(f"split names must be among {SPLITS}")
    output_dir = os.path.abspath(output_dir)
    _check_output_dir(output_dir)
    plans = [plan_split(s) for s in splits]
    label_map = plans[0].label_map
    for p in plans[1:]:
        if p.label_map != label_map:
            raise CreatorError(
                f"category lists differ between {plans[0].spec.annotations_file} and {p.spec.annotations_file}"
            )
    if strict and _strict_error(plans):
        raise CreatorError(_strict_error(plans))
    num_workers = num_workers if num_workers > 0 else (os.cpu_count() or 1)

    parent, base = os.path.split(output_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
    try:
        label_map_lib.write_label_map(os.path.join(tmp, label_map_lib.LABEL_MAP_FILENAME), label_map)
        report = {"output_dir": output_dir, "num_classes": label_map.num_classes, "splits": {}}
        for plan in plans:
            report["splits"][plan.spec.name] = _write_split(plan, tmp, num_shards, num_workers, strict, progress)
        with open(os.path.join(tmp, REPORT_FILENAME), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
        _check_interrupted()
        _commit(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def format_summary(report: Dict) -> str:
    """Human-readable summary of :func:`create_tfrecords`' report (images, instances, skips by reason)."""
    lines = [f"wrote {report['output_dir']} ({report['num_classes']} classes incl. background)"]
    for name, s in report["splits"].items():
        conv = ", ".join(f"{k}: {v}" for k, v in sorted(s["images_converted"].items())) or "none"
        lines.append(
            f"{name}: {s['images_written']}/{s['images_in_json']} images written in {len(s['shards'])} shard(s), "
            f"{s['instances_written']} instances ({s['crowd_instances']} crowd), "
            f"{s['images_without_instances']} images without instances, {s['boxes_clipped']} boxes clipped, "
            f"converted to RGB: {conv}"
        )
        for kind, items, label in (
            ("images", s["skipped_images"], lambda d: d["file_name"]),
            ("annotations", s["skipped_annotations"], lambda d: f"{d['id']} ({d['image']})"),
        ):
            lines.append(f"  skipped {kind}: {len(items)}")
            by_reason = collections.defaultdict(list)
            for d in items:
                by_reason[d["reason"]].append(label(d))
            for reason, names in sorted(by_reason.items()):
                more = f" ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
                lines.append(f"    {reason} ({len(names)}): {', '.join(names[:_MAX_LISTED])}{more}")
        lines += [f"  warning: {w}" for w in s.get("warnings", [])]
    lines.append(f"all skipped items: {os.path.join(report['output_dir'], REPORT_FILENAME)}")
    return "\n".join(lines)


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
    flags.DEFINE_bool("strict", False, "Treat every skipped image or annotation as an error (exit 2, nothing "
                      "written).")


def _on_signal(signum, _frame):
    """CLI handler for SIGINT / SIGTERM: only flag it; the write loop stops at the next image (an exception raised
    from a handler could land in a ``__del__`` and be lost). A second signal stops at once."""
    if _PENDING_SIGNAL[0] is not None:
        raise Interrupted(signum)
    _PENDING_SIGNAL[0] = signum


def main(argv: Sequence[str]) -> None:
    """CLI entry (through ``utils.cli.run``): exit 0 written, 2 user error or ``-strict`` skip, 1 write fault, each
    error as one line on stderr; 128 + signal number on SIGINT (130) or SIGTERM (143), after removing the partial
    output."""
    from absl import flags

    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # keep it ignored where the caller chose so (nohup)
            signal.signal(signum, _on_signal)

    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise CreatorError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.output_dir:
        raise CreatorError("-output_dir is required")
    specs = []
    for split in SPLITS:
        image_dir, ann = FLAGS[f"{split}_image_dir"].value, FLAGS[f"{split}_annotations_file"].value
        if bool(image_dir) != bool(ann):
            raise CreatorError(f"-{split}_image_dir and -{split}_annotations_file must be given together")
        if image_dir:
            specs.append(SplitSpec(split, image_dir, ann))
    try:
        report = create_tfrecords(specs, FLAGS.output_dir, FLAGS.num_shards, FLAGS.num_workers, FLAGS.strict)
    except KeyboardInterrupt as e:
        cli.fail("interrupted; nothing written", 128 + getattr(e, "signum", signal.SIGINT))
    except OSError as e:
        raise cli.FaultError(f"cannot write {FLAGS.output_dir}: {e}; the previous output, if any, is unchanged")
    print(format_summary(report))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
