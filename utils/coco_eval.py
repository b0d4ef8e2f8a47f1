"""COCO evaluation with pycocotools: results json, COCOeval bbox + segm, metrics.json.

original: eval.py Detections (add_bbox / add_mask / dump) and run_coco_eval.py; shared/docs/yolact_reference.md §10.
No AP is computed here by hand: COCOeval does all the scoring.

Files written into ``output_dir``:

* ``detections.json``: the COCO results json, one entry per detection with ``image_id``, ``category_id`` (the
  dataset's own id), ``bbox`` ``[x, y, w, h]`` in pixels of the original image, ``segmentation`` (RLE, ``counts`` as
  str) and ``score``.
* ``bbox_detections.json`` / ``mask_detections.json``: the same detections split as the original writes them. The
  split matters for segm: ``COCO.loadRes`` takes a detection's ``area`` from its ``bbox`` when one is present, but
  from the mask when only ``segmentation`` is, and that area decides the small/medium/large buckets. The segm
  metrics are computed from ``mask_detections.json`` (mask areas, as the original), the bbox ones from
  ``bbox_detections.json`` (identical to loading ``detections.json``).
* ``metrics.json``: ``box/AP``, ``box/AP50``, ``box/AP75``, ``box/APs``, ``box/APm``, ``box/APl`` and the same for
  ``mask/``, as fractions (COCOeval ``stats[0:6]``; -1 where the ground truth has no object of that size); from
  :func:`evaluate_dataset` also ``images_evaluated`` and ``images_in_annotations`` (ints).

Dataset iteration for evaluation (:func:`iter_dataset`) lives here, not in yolact/, because it reads TFRecords with
``data.parser`` (yolact/ never imports data/).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
DETECTIONS_FILE = "detections.json"
BBOX_FILE = "bbox_detections.json"
MASK_FILE = "mask_detections.json"
METRICS_FILE = "metrics.json"
MAX_SKIPPED_SHOWN = 10  # skipped files listed by evaluate_dataset, the rest counted


class NoImagesEvaluated(ValueError):
    """Not one image of the annotations file could be evaluated (nothing is written)."""


def detections_to_coco(image_id: int, result: Dict[str, np.ndarray]) -> List[Dict]:
    """COCO results entries of one image.

    original: eval.py prep_metrics + Detections.add_bbox / add_mask: a detection is written only if its integer box
    has area > 0; the bbox is ``[x1, y1, x2 - x1, y2 - y1]`` rounded to 0.1 px; the mask is the full-image binary mask
    RLE-encoded by pycocotools (Fortran order) with ``counts`` decoded to ASCII.

    Args:
      image_id: the dataset's image id.
      result: a runner's ``predict`` output (:func:`yolact.detection.results.to_results`): ``boxes`` int [n,4]
        pixel ``[x1, y1, x2, y2]``, ``category_ids`` int [n] dataset ids, ``scores`` float [n],
        ``masks`` uint8 [n, H, W] 0/1; YOLACT++ also
        ``mask_scores`` float [n] (written as ``mask_score``, the score of the segm results, see :func:`split_results`).

    Returns:
      list of dicts with ``image_id``, ``category_id``, ``bbox``, ``segmentation``, ``score``.
    """
    out = []
    boxes = np.asarray(result["boxes"])
    for i in range(len(result["scores"])):
        x1, y1, x2, y2 = (int(v) for v in boxes[i])
        if (x2 - x1) * (y2 - y1) <= 0:
            continue
        rle = mask_utils.encode(np.asfortranarray(np.asarray(result["masks"][i], np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        out.append({
            "image_id": int(image_id),
            "category_id": int(result["category_ids"][i]),
            "bbox": [round(float(v) * 10) / 10 for v in (x1, y1, x2 - x1, y2 - y1)],
            "segmentation": rle,
            "score": float(result["scores"][i]),
            **({"mask_score": float(result["mask_scores"][i])} if "mask_scores" in result else {}),
        })
    return out


def split_results(results: Iterable[Dict]):
    """(bbox entries without ``segmentation``, segm entries without ``bbox``), as the original's two files.

    YOLACT++ entries with a ``mask_score`` keep ``score`` (box score) in the bbox file and take ``mask_score`` as
    the ``score`` of the segm file (original eval.py: bbox results use the box score, mask results the mask score).
    """
    results = list(results)
    bbox = [{k: v for k, v in r.items() if k not in ("segmentation", "mask_score")} for r in results]
    segm = [{**{k: v for k, v in r.items() if k not in ("bbox", "mask_score")},
             "score": r.get("mask_score", r["score"])} for r in results if "segmentation" in r]
    return bbox, segm


def write_results(results: Sequence[Dict], output_dir) -> Dict[str, str]:
    """Write detections.json, bbox_detections.json and mask_detections.json, each atomically (utils/atomic.py: a
    complete file or the previous one); returns their paths by name.

    Raises:
      utils.atomic.DiskFullError: no space left (the file being written keeps its previous content).
    """
    from utils.atomic import atomic_file

    os.makedirs(output_dir, exist_ok=True)
    bbox, segm = split_results(results)
    paths = {}
    for name, data in ((DETECTIONS_FILE, list(results)), (BBOX_FILE, bbox), (MASK_FILE, segm)):
        paths[name] = os.path.join(output_dir, name)
        with atomic_file(paths[name], "w") as f:
            json.dump(data, f)
    return paths


REQUIRED_KEYS = ("images", "annotations", "categories")


def load_coco(annotations) -> COCO:
    """A pycocotools COCO from a path (quietly) or an existing COCO.

    Raises:
      FileNotFoundError: the annotations file does not exist.
      ValueError: not json, or not a COCO object (a dict with ``images``, ``annotations`` and ``categories``
        lists whose entries have ids): one line naming the file.
    """
    if isinstance(annotations, COCO):
        return annotations
    path = os.fspath(annotations)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotations file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read annotations {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in REQUIRED_KEYS):
        got = f"a json {type(data).__name__}" + (f" with keys {sorted(data)[:6]}" if isinstance(data, dict) else "")
        raise ValueError(f"annotations {path} is not a COCO json: expected an object with lists "
                         f"{', '.join(REQUIRED_KEYS)}, got {got}")
    coco = COCO()
    coco.dataset = data
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"annotations {path} is not a COCO json: an entry without {e}") from None
    return coco


def run_cocoeval(coco_gt: COCO, results, iou_type: str, image_ids: Optional[Sequence[int]] = None,
                 verbose: bool = True) -> np.ndarray:
    """COCOeval ``iou_type`` ('bbox' or 'segm') of ``results`` (list of entries or a results json path).

    Args:
      image_ids: restrict to these images (e.g. the ones actually run); default every image of ``coco_gt``.
      verbose: print COCOeval's 12-number summary table.

    Returns:
      float64 [12] COCOeval ``stats`` (all zeros when there are no detections).
    """
    if isinstance(results, (str, os.PathLike)):
        with open(results, encoding="utf-8") as f:
            results = json.load(f)
    if not results:
        if verbose:
            print(f"{iou_type}: no detections, every metric is 0")
        return np.zeros(12)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(list(results))
    ev = COCOeval(coco_gt, coco_dt, iou_type)
    if image_ids is not None:
        ev.params.imgIds = sorted(int(i) for i in image_ids)
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        if verbose:
            print(f"--- COCOeval {iou_type} ---")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, np.float64)


def stats_to_metrics(box_stats, mask_stats) -> Dict[str, float]:
    """``{'box/AP': stats[0], ..., 'mask/APl': stats[5]}`` from two COCOeval ``stats`` arrays."""
    metrics = {}
    for prefix, stats in (("box", box_stats), ("mask", mask_stats)):
        for name, value in zip(METRIC_NAMES, stats[:6]):
            metrics[f"{prefix}/{name}"] = float(value)
    return metrics


def evaluate_results(annotations, results: Sequence[Dict], output_dir=None,
                     image_ids: Optional[Sequence[int]] = None, verbose: bool = True) -> Dict[str, float]:
    """Score COCO results entries with COCOeval bbox and segm; optionally write every file into ``output_dir``.

    Args:
      annotations: the ground-truth COCO json path (or a ``COCO``).
      results: entries as :func:`detections_to_coco` makes them.
      output_dir: if given, detections.json, bbox_detections.json, mask_detections.json and metrics.json go there.
      image_ids: images evaluated (default: all of the annotations file).
      verbose: print both 12-number tables.

    Returns:
      the metrics dict (see the module docstring).

    Raises:
      FileNotFoundError: missing annotations file.
    """
    coco_gt = load_coco(annotations)
    bbox, segm = split_results(results)
    metrics = stats_to_metrics(run_cocoeval(coco_gt, bbox, "bbox", image_ids, verbose),
                               run_cocoeval(coco_gt, segm, "segm", image_ids, verbose))
    if output_dir is not None:
        write_results(results, output_dir)
        _write_metrics(metrics, output_dir)
    return metrics


def _annotated_image_ids(coco_gt: COCO, max_images: Optional[int]) -> List[int]:
    """The images with annotations, in id order (the original's COCODetection skips the others), first max_images."""
    ids = sorted(i for i in coco_gt.getImgIds() if coco_gt.imgToAnns.get(i))
    return ids[:max_images] if max_images else ids


def iter_dataset(predictor, coco_gt: COCO, image_dir=None, tfrecord_pattern=None, max_images: Optional[int] = None,
                 progress: bool = True, skipped: Optional[List[str]] = None) -> Iterator[Tuple[int, Dict]]:
    """Yield ``(image_id, result)`` over a COCO-style dataset; ``result`` is ``predictor.predict(photo)`` (any
    runner of yolact/runtimes.py: every form gets the decoded photo, whatever the source).

    With ``image_dir``: the images of ``coco_gt`` that have annotations, in id order, read from
    ``image_dir/file_name``; unreadable or missing files are skipped and their one-line reasons appended to
    ``skipped`` (printed by the caller after the progress bar, so that lines and bar never interleave). With
    ``tfrecord_pattern``: the records' photos (``data.parser.eval_images``), in file order.

    Raises:
      FileNotFoundError: ``image_dir`` is not a folder.
    """
    from tqdm import tqdm

    from yolact.ops.image_io import ImageError, read_image

    skipped = [] if skipped is None else skipped
    if image_dir is not None:
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"image directory not found: {image_dir}")
        for image_id in tqdm(_annotated_image_ids(coco_gt, max_images), disable=not progress, desc="eval",
                             unit="img"):
            path = os.path.join(image_dir, coco_gt.imgs[image_id]["file_name"])
            try:
                image = read_image(path)
            except ImageError as e:
                skipped.append(str(e))
                continue
            yield image_id, predictor.predict(image)
    else:
        import tensorflow as tf

        from data.parser import eval_images

        ds = eval_images(tfrecord_pattern)
        if max_images:
            ds = ds.take(int(max_images))
        records = iter(tqdm(ds, disable=not progress, desc="eval", unit="img"))
        while True:
            try:
                image, image_id = next(records)
            except StopIteration:
                return
            except tf.errors.OpError as e:  # DataLossError of a file that is not a TFRecord, a bad record
                raise ValueError(f"cannot read {tfrecord_pattern} as evaluation TFRecords (data/coco_tfrecord_"
                                 f"creator.py): {' '.join(e.message.split())[:200]}") from None
            yield int(image_id), predictor.predict(image.numpy())


def evaluate_dataset(predictor, annotations_file, image_dir=None, tfrecord_pattern=None, output_dir=None,
                     max_images: Optional[int] = None, verbose: bool = True, progress: bool = True) -> Dict[str, float]:
    """Run a model over a COCO-style dataset and score it (what ``inference.py -eval`` and train.py's validation use).

    Args:
      predictor: a runner (yolact/runtimes.py): the in-process :class:`yolact.predictor.Predictor` or an export's.
      annotations_file: the ground-truth COCO json (path or ``COCO``).
      image_dir: folder with the json's ``file_name`` images (images with no annotation are skipped, as the
        original's COCODetection does); or
      tfrecord_pattern: glob of val TFRecords read with ``data.parser.eval_images`` (one of the two is required).
      output_dir: where to write the json files and metrics.json (None: nothing written).
      max_images: stop after this many images.
      verbose: print the COCOeval tables and the image count; progress: a tqdm bar. Skipped files and "evaluated N
        of M images" are printed after the bar whatever ``verbose`` says when some images were missing.

    Returns:
      the metrics dict of :func:`evaluate_results` plus ``images_evaluated`` (N) and ``images_in_annotations`` (M:
      the annotated images of the file, at most ``max_images``), both also in metrics.json.

    Raises:
      ValueError: neither or both of ``image_dir`` / ``tfrecord_pattern``; an annotations file that is not COCO
        json; TFRecords that cannot be read or whose image ids are not in the annotations (one line, nothing
        written); FileNotFoundError: missing files;
      NoImagesEvaluated: not one image could be evaluated (nothing is written).
    """
    if (image_dir is None) == (tfrecord_pattern is None):
        raise ValueError("give exactly one of image_dir or tfrecord_pattern")
    coco_gt = load_coco(annotations_file)
    expected = len(_annotated_image_ids(coco_gt, max_images))
    results, done, skipped = [], [], []
    for image_id, result in iter_dataset(predictor, coco_gt, image_dir, tfrecord_pattern, max_images, progress,
                                         skipped):
        if image_id not in coco_gt.imgs:  # COCO.loadRes would fail at the end ("do not correspond")
            raise ValueError(f"image id {image_id} of {tfrecord_pattern} is not in "
                             f"{annotations_file if isinstance(annotations_file, (str, os.PathLike)) else 'the annotations'}: "
                             "the TFRecords were made from another annotations file (or split)")
        results.extend(detections_to_coco(image_id, result))
        done.append(image_id)
    source = image_dir if image_dir is not None else tfrecord_pattern
    expected = max(expected, len(done))  # TFRecords may hold images the json does not annotate
    if done:  # after the progress bar; with nothing evaluated the error below says it in one line
        for line in skipped[:MAX_SKIPPED_SHOWN]:
            print(f"skipped: {line}")
        if len(skipped) > MAX_SKIPPED_SHOWN:
            print(f"skipped: ... and {len(skipped) - MAX_SKIPPED_SHOWN} more")
    else:
        raise NoImagesEvaluated(f"evaluated 0 of {expected} images: none of the annotated images of "
                                f"{annotations_file if isinstance(annotations_file, (str, os.PathLike)) else 'the annotations'} "
                                f"was found in {source}")
    if verbose or len(done) < expected:
        print(f"evaluated {len(done)} of {expected} images, {len(results)} detections")
    metrics = evaluate_results(coco_gt, results, None, image_ids=done, verbose=verbose)
    metrics.update(images_evaluated=len(done), images_in_annotations=expected)
    if output_dir is not None:
        write_results(results, output_dir)
        _write_metrics(metrics, output_dir)
    return metrics


def _write_metrics(metrics: Dict, output_dir) -> None:
    from utils.atomic import atomic_file

    with atomic_file(os.path.join(output_dir, METRICS_FILE), "w") as f:
        json.dump(metrics, f, indent=1)
        f.write("\n")


__all__ = ["detections_to_coco", "split_results", "write_results", "load_coco", "run_cocoeval", "stats_to_metrics",
           "evaluate_results", "iter_dataset", "evaluate_dataset", "NoImagesEvaluated", "METRIC_NAMES"]
