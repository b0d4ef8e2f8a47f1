"""Encoding one image of a split plan (data/split_plan.py): the image as 3-channel RGB JPEG or PNG bytes, and one
PNG mask per annotation; run in worker processes.

* a 3-channel RGB JPEG or PNG is kept byte for byte; grayscale / CMYK / other JPEGs are converted to RGB and
  re-encoded as JPEG (quality :data:`JPEG_QUALITY`); other formats and modes become lossless RGB PNG (alpha
  dropped). Pillow decodes strictly: a truncated file is rejected, as TensorFlow's decoder would;
* masks: uint8 0/1 [height, width], decoded with pycocotools exactly as ``COCO.annToMask`` (polygons, compressed
  RLE, uncompressed RLE), stored as PNG.

:func:`encode_images` runs :func:`encode_image` over a plan's images in order, in spawned worker processes. This
module imports no TensorFlow, so the workers (which import it and the calling tool's main module) stay
TensorFlow-free and start fast; the main process, which may hold TensorFlow, is never forked.
"""

from __future__ import annotations

import concurrent.futures
import io
import multiprocessing
import signal
from typing import Dict, Iterator, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

JPEG_QUALITY = 95  # for re-encoded (converted) JPEGs


def annotation_to_rle(segm, height: int, width: int) -> Dict:
    """COCO segmentation (polygons, uncompressed or compressed RLE) -> one compressed RLE.

    Same steps as ``pycocotools.coco.COCO.annToRLE`` (original: data/coco.py uses ``annToMask``), so
    ``mask_utils.decode`` of the result is ``annToMask``'s uint8 [height, width] 0/1 mask.

    Args:
      segm: polygons (list of ``[x0, y0, x1, y1, ...]`` lists) or an RLE dict (``size``, ``counts``).
      height, width: the image's size in pixels.

    Returns:
      A compressed RLE dict (``size`` [height, width], ``counts`` bytes or str).

    Raises:
      Exception: whatever pycocotools raises for input it cannot read (often a bare ``Exception``); a reader's
        checks (data/coco_json.py ``segmentation_problem``) keep such input out of the plan.
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
      task: an entry of ``SplitPlan.tasks`` (data/split_plan.py).

    Returns:
      ``{"ok": False, "file_name", "reason"}`` when the image is skipped, else ``{"ok": True, "file_name",
      "image_id", "encoded", "format", "height", "width", "converted_from", "objects": [...],
      "ann_skips": [(id, reason)]}`` where each object has ``category_id``, ``name``, ``iscrowd``, ``area``,
      ``box`` (normalized, clipped ``[x1, y1, x2, y2]``) and ``mask_png`` (PNG of a uint8 0/1 [H, W] mask).
      A skipped image (unreadable, undecodable, or of another size than the task's) and a skipped annotation
      (segmentation that cannot be decoded) carry a one-line reason; nothing is raised for bad input.
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


def encode_images(tasks: Sequence[Dict], num_workers: int) -> Iterator[Dict]:
    """:func:`encode_image` over ``tasks``, results in the tasks' order.

    Args:
      tasks: entries of ``SplitPlan.tasks``.
      num_workers: > 1: that many spawned processes (SIGINT ignored in them: the caller stops the pool by closing
        the iterator); <= 1 (or a single task): in this process.

    Yields:
      One :func:`encode_image` result per task. Closing the iterator early cancels the pending work.

    Raises:
      concurrent.futures.process.BrokenProcessPool: a worker died.
    """
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

