"""Writing split plans (data/split_plan.py) into an output folder: sharded TFRecords, ``label_map.json`` and
``creation_report.json``, committed all at once.

:func:`write_tfrecords` checks the plans and the output folder, encodes each plan's images (data/encoding.py,
worker processes) and writes one ``tf.train.Example`` per image (keys in data/tfrecord_schema.py) into
``{split}-SSSSS-of-NNNNN.tfrecord`` shards (:func:`shard_paths`; consecutive images share a shard), then the label
map and the report (every skipped item with its reason, the warnings and the counts; :func:`format_summary` prints
it).

The output folder: this module owns only the files :func:`is_own_file` names and never touches others. Everything is
first written to a hidden temporary folder next to OUTPUT_DIR (``.NAME.tmp-*``); only when complete are the new
files renamed into OUTPUT_DIR (the folder itself when it did not exist), replacing the earlier run's files of those
names and removing its shards that the new run does not have (they are moved aside, ``creation_report.json``
first, and deleted once the new files are in; a failed rename, e.g. disk full, undoes the renames made). SIGINT /
SIGTERM are held during those renames; ``creation_report.json`` is moved in last, so an output without it is
incomplete. A failed or interrupted write (disk full anywhere: :class:`utils.atomic.DiskFullError`) removes the
temporary folders and leaves the previous output as it was.

Stopping: :func:`request_stop` (a CLI's signal handler) makes a running write raise :func:`interrupted` before its
next image. TensorFlow is imported when a write starts, not with this module, so that the encoding workers, which
import the calling tool's main module, stay TensorFlow-free.
"""

from __future__ import annotations

import collections
import errno
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

from tqdm import tqdm

from data import encoding
from data.split_plan import SPLITS, CreatorError, SplitPlan, check_split_names
from utils import atomic, cli
from yolact.ops import label_map as label_map_lib

IMAGES_PER_SHARD = 1000  # automatic shard count: ceil(images / IMAGES_PER_SHARD)
REPORT_FILENAME = "creation_report.json"
_MAX_LISTED = 20  # skipped items listed per reason in the printed summary (all are in the report file)
# The files this module writes, and the only ones it ever replaces or removes in OUTPUT_DIR.
_SHARD_NAME = re.compile(rf"^(?:{'|'.join(SPLITS)})-\d{{5}}-of-\d{{5}}\.tfrecord$")
OWN_FILES = (label_map_lib.LABEL_MAP_FILENAME, REPORT_FILENAME)

_STOP_SIGNAL: List[Optional[int]] = [None]  # set by request_stop


def interrupted(signum: int) -> cli.Interrupted:
    """The error of a write stopped by signal ``signum``: a ``utils.cli.Interrupted`` whose exit status is
    128 + ``signum`` (130 SIGINT, 143 SIGTERM: nothing was written, so there is nothing to resume, unlike the 75 of
    a saved checkpoint), message ``"interrupted; nothing written"``."""
    error = cli.Interrupted("interrupted; nothing written")
    error.exit_code = 128 + signum
    return error


def request_stop(signum: int) -> None:
    """Ask a running :func:`write_tfrecords` to stop: it raises ``interrupted(signum)`` before its next image, after
    removing its temporary folder.

    Meant to be called from a SIGINT / SIGTERM handler: the first request only sets a flag (an exception raised from
    a handler could land in a ``__del__`` and be lost); a second one raises ``interrupted(signum)`` at once.
    """
    if _STOP_SIGNAL[0] is not None:
        raise interrupted(signum)
    _STOP_SIGNAL[0] = signum


def _check_stop() -> None:
    if _STOP_SIGNAL[0] is not None:
        raise interrupted(_STOP_SIGNAL[0])


def shard_paths(directory: str, split: str, num_shards: int) -> List[str]:
    """The shard files of a split: ``directory/{split}-{i:05d}-of-{num_shards:05d}.tfrecord`` for i in
    0..num_shards-1 (a list of num_shards paths; nothing is checked or created)."""
    return [os.path.join(directory, f"{split}-{i:05d}-of-{num_shards:05d}.tfrecord") for i in range(num_shards)]


def _write_split(plan: SplitPlan, directory: str, num_shards: int, num_workers: int, strict: bool,
                 progress: bool) -> Dict:
    """Encode and write one plan's shards into ``directory``; return the split's part of the report. Appends the
    items skipped while encoding to the plan (CreatorError on the first one under ``strict``)."""
    import tensorflow as tf  # imported here, not with the module: spawned workers stay TensorFlow-free

    from data import tfrecord_schema as schema

    tasks = plan.tasks
    n_shards = num_shards if num_shards > 0 else max(1, math.ceil(len(tasks) / IMAGES_PER_SHARD))
    paths = shard_paths(directory, plan.name, n_shards)
    shard_of = [i * n_shards // max(len(tasks), 1) for i in range(len(tasks))]
    stats = collections.Counter()
    converted = collections.Counter()
    writer, current = None, -1
    bar = tqdm(total=len(tasks), desc=plan.name, unit="img", disable=not progress, file=sys.stderr)
    try:
        for i, res in enumerate(encoding.encode_images(tasks, num_workers)):
            _check_stop()
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
        if writer is not None:
            writer.close()
        for path in paths[current + 1:]:  # shards that got no record (skipped images) still exist, empty
            tf.io.TFRecordWriter(path).close()
    except tf.errors.OpError as e:  # TensorFlow's writer reports write errors (e.g. ENOSPC) as text only
        raise OSError(errno.EIO, f"cannot write {paths[max(current, 0)]}: {e.message}") from e
    finally:
        bar.close()
        if writer is not None:  # closing twice is harmless; when already failing, the folder is removed anyway
            try:
                writer.close()
            except tf.errors.OpError:
                pass
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
    """True for the file names this module writes into OUTPUT_DIR (``{train,val}-NNNNN-of-NNNNN.tfrecord``,
    ``label_map.json``, ``creation_report.json``): the only files it replaces or removes there."""
    return name in OWN_FILES or bool(_SHARD_NAME.match(name))


def check_output_dir(output_dir: str) -> None:
    """Check that ``output_dir`` may receive this module's files: it does not exist, or is a folder that holds no
    shards of this module's names, or holds them together with a ``label_map.json`` (an earlier output).

    Raises:
      CreatorError: the path is a file, the folder holds shards but no ``label_map.json`` (someone else's records,
        which are not replaced), or the nearest existing folder above it is not a folder or not writable.
    """
    ancestor = os.path.dirname(output_dir)
    while not os.path.exists(ancestor) and os.path.dirname(ancestor) != ancestor:
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor) or not os.access(ancestor, os.W_OK | os.X_OK):
        raise CreatorError(f"cannot create {output_dir}: {ancestor} is not a writable directory")
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
    """Move the complete output from ``tmp`` into ``output_dir`` (the module docstring); SIGINT / SIGTERM are held
    meanwhile. Files of ``output_dir`` that :func:`is_own_file` does not claim are never touched. The earlier
    run's own files are first moved aside (report first) into a hidden folder beside ``output_dir``, deleted once
    the new files are in; when a rename fails (e.g. disk full) every rename made is undone, in reverse order, so
    that ``output_dir`` is as before, and the error is raised (the new files are back in ``tmp``)."""
    umask = os.umask(0)
    os.umask(umask)
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        if not os.path.exists(output_dir):
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700
            os.rename(tmp, output_dir)
            return
        parent, base = os.path.split(output_dir)
        aside = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
        done = []  # (source, destination) of the renames made
        try:
            old = sorted((n for n in os.listdir(output_dir) if is_own_file(n)), key=lambda n: n != REPORT_FILENAME)
            moves = [(os.path.join(output_dir, n), os.path.join(aside, n)) for n in old]
            new = sorted(os.listdir(tmp), key=lambda n: n == REPORT_FILENAME)  # the "complete" marker last
            moves += [(os.path.join(tmp, n), os.path.join(output_dir, n)) for n in new]
            for src, dst in moves:
                os.rename(src, dst)
                done.append((src, dst))
        except BaseException:
            for src, dst in reversed(done):
                os.rename(dst, src)
            os.rmdir(aside)
            raise
        shutil.rmtree(aside, ignore_errors=True)
        os.rmdir(tmp)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _strict_error(plans: Sequence[SplitPlan]) -> Optional[str]:
    """The one-line error for the items the plans skip (None when they skip nothing)."""
    items = [f"{p.name} image {n}: {r}" for p in plans for n, r in p.skipped_images]
    items += [f"{p.name} annotation {a} ({n}): {r}" for p in plans for a, n, r in p.skipped_annotations]
    if not items:
        return None
    more = f" (and {len(items) - 3} more)" if len(items) > 3 else ""
    return f"strict: {len(items)} item(s) would be skipped: " + "; ".join(items[:3]) + more



def write_tfrecords(plans: Sequence[SplitPlan], output_dir: str, num_shards: int = 0, num_workers: int = 0,
                    strict: bool = False, progress: bool = True) -> Dict:
    """Write split plans to ``OUTPUT_DIR/{split}-SSSSS-of-NNNNN.tfrecord`` plus ``label_map.json`` and
    ``creation_report.json``, committed all at once (module docstring).

    Args:
      plans: one or two plans of any reader (names unique, among ``SPLITS``, the same label map); the items skipped
        while encoding are appended to them.
      output_dir: created, or its own files (:func:`is_own_file`) replaced on success; other files in it are kept.
        A folder with shards but no ``label_map.json`` is refused.
      num_shards: shards per split; 0 = ``ceil(images / IMAGES_PER_SHARD)``, at least 1.
      num_workers: encoding processes; 0 = ``os.cpu_count()``; 1 = in this process.
      strict: any skipped image or annotation raises instead.
      progress: show a tqdm bar per split on stderr.

    Returns:
      The report: ``{"output_dir": absolute path, "num_classes": int, "splits": {name: {"images_in_json",
      "images_written", "images_without_instances", "instances_written", "crowd_instances", "boxes_clipped"
      (ints), "images_converted" ({"JPEG CMYK": n, ...}), "shards" (file names), "skipped_images" ([{"file_name",
      "reason"}]), "skipped_annotations" ([{"id", "image", "reason"}]), "warnings" ([str])}}}``, also written to
      ``OUTPUT_DIR/creation_report.json``.

    Raises:
      CreatorError: no plan, bad split names, an output path that is refused (:func:`check_output_dir`), plans
        with different label maps (nothing written), or, with ``strict``, a skipped item (before writing, or while
        encoding: the partial output is removed).
      utils.cli.Interrupted: :func:`request_stop` was called (exit status 128 + signal number; the partial output
        is removed). A KeyboardInterrupt also removes it.
      utils.atomic.DiskFullError: the disk filled up (while writing the shards, the label map, the report or
        committing them; the partial output is removed, the previous output stays).
      OSError: writing failed otherwise (the same; TensorFlow's write errors are turned into OSError).
    """
    if not plans:
        raise CreatorError("no split to write")
    check_split_names([p.name for p in plans])
    output_dir = os.path.abspath(output_dir)
    check_output_dir(output_dir)
    label_map = plans[0].label_map
    for p in plans[1:]:
        if p.label_map != label_map:
            raise CreatorError(f"category lists differ between {plans[0].source} and {p.source}")
    if strict and _strict_error(plans):
        raise CreatorError(_strict_error(plans))
    num_workers = num_workers if num_workers > 0 else (os.cpu_count() or 1)

    parent, base = os.path.split(output_dir)
    tmp = None
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
        label_map_lib.write_label_map(os.path.join(tmp, label_map_lib.LABEL_MAP_FILENAME), label_map)
        report = {"output_dir": output_dir, "num_classes": label_map.num_classes, "splits": {}}
        for plan in plans:
            report["splits"][plan.name] = _write_split(plan, tmp, num_shards, num_workers, strict, progress)
        atomic.write_text(os.path.join(tmp, REPORT_FILENAME), json.dumps(report, indent=1))
        _check_stop()
        _commit(tmp, output_dir)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if atomic.is_disk_full(e):
            raise atomic.DiskFullError(output_dir) from e
        raise
    return report


def format_summary(report: Dict) -> str:
    """Human-readable summary of :func:`write_tfrecords`' report: a line per split (images, instances, crowds, empty
    images, clipped boxes, conversions), its skipped items grouped by reason (at most 20 listed per reason), its
    warnings, and where the full report is. Returns the lines joined by newlines (no trailing newline)."""
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


