"""Images per second of the training input pipeline (decode, augment, match, targets, batch 8).

Usage::

    python -m benchmarks.input_pipeline                       # builds records from ../shared coco2017_mini train2017
    python -m benchmarks.input_pipeline --records DIR          # existing TFRecord dir (train-*.tfrecord + label_map)
    python -m benchmarks.input_pipeline --batches 30 --config yolact_resnet50

Runs the pipeline twice: with a private tf.data threadpool of 1 thread (and intra-op parallelism 1), and with all
cores, printing images/s for both after a warm-up. Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from config import get_config  # noqa: E402
from data import coco_tfrecord_creator as creator  # noqa: E402
from data import parser  # noqa: E402
from yolact.ops.label_map import read_label_map  # noqa: E402

COCO_MINI = ROOT.parent / "shared" / "data" / "coco2017_mini"


def _measure(pattern, cfg, batch_size, batches, threads):
    ds = parser.train_dataset(pattern, cfg, batch_size, seed=0, num_parallel_calls=threads or tf.data.AUTOTUNE)
    if threads:
        opts = tf.data.Options()
        opts.threading.private_threadpool_size = threads
        opts.threading.max_intra_op_parallelism = 1
        ds = ds.with_options(opts)
    it = iter(ds)
    for _ in range(3):  # warm-up: tracing, file open, shuffle buffer fill
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - start)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", help="TFRecord directory with train-*.tfrecord and label_map.json")
    ap.add_argument("--config", default="yolact_resnet50")
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--batches", type=int, default=20)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        records = args.records
        if records is None:
            if not COCO_MINI.exists():
                print(f"error: {COCO_MINI} not found; pass --records", file=sys.stderr)
                return 2
            records = os.path.join(tmp, "records")
            creator.create_tfrecords(
                [creator.SplitSpec("train", str(COCO_MINI / "train2017"),
                                   str(COCO_MINI / "annotations" / "instances_train2017.json"))],
                records, num_workers=0, progress=False)
        pattern = os.path.join(records, "train-*.tfrecord")
        if not tf.io.gfile.glob(pattern):
            print(f"error: no train-*.tfrecord in {records}", file=sys.stderr)
            return 2
        try:
            cfg = get_config(args.config, num_classes=read_label_map(records).num_classes)
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        cores = os.cpu_count()
        print(f"config {cfg.name}, batch {args.batch_size}, {args.batches} timed batches, {cores} cores")
        one = _measure(pattern, cfg, args.batch_size, args.batches, threads=1)
        print(f"1 thread:          {one:7.1f} images/s")
        allc = _measure(pattern, cfg, args.batch_size, args.batches, threads=None)
        print(f"all cores ({cores}):     {allc:7.1f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
