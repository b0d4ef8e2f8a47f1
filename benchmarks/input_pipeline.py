"""Images per second of the training input pipeline (decode, augment, match, targets, batch 8).

Usage::

    python -m benchmarks.input_pipeline                       # builds records from ../shared coco2017_mini train2017
    python -m benchmarks.input_pipeline --records DIR          # existing TFRecord dir (train-*.tfrecord + label_map)
    python -m benchmarks.input_pipeline --batches 30 --config yolact_resnet50

Runs the pipeline twice: with a private tf.data threadpool of 1 thread (and intra-op parallelism 1), and with all
cores, printing images/s for both after a warm-up. Timings are printed, never asserted. Flags are absl flags
(``-records`` and ``--records`` both work); errors are one line, exit 2 (utils/cli.py).
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils import cli  # noqa: E402

cli.quiet_startup(__name__)  # before TensorFlow is imported

import tensorflow as tf  # noqa: E402

from config import get_config  # noqa: E402
from data import coco_tfrecord_creator as creator  # noqa: E402
from data.coco_json import SplitSpec  # noqa: E402
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


def define_flags() -> None:
    """The benchmark's flags (called under ``__main__`` only, the project's convention: see utils/cli.py)."""
    from absl import flags

    flags.DEFINE_string("records", None, "TFRecord directory with train-*.tfrecord and label_map.json (default: "
                        "built from ../shared coco2017_mini train2017 in a temporary folder).")
    flags.DEFINE_string("config", "yolact_resnet50", "Config preset (config.py).")
    flags.DEFINE_integer("batch_size", 8, "Images per batch.", lower_bound=1)
    flags.DEFINE_integer("batches", 20, "Timed batches per measurement (after 3 warm-up batches).", lower_bound=1)


def main(argv) -> None:
    from absl import flags

    args = flags.FLAGS
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    with tempfile.TemporaryDirectory() as tmp:
        records = args.records
        if records is None:
            if not COCO_MINI.exists():
                raise cli.UserError(f"{COCO_MINI} not found; pass -records")
            records = os.path.join(tmp, "records")
            creator.create_tfrecords(
                [SplitSpec("train", str(COCO_MINI / "train2017"),
                           str(COCO_MINI / "annotations" / "instances_train2017.json"))],
                records, num_workers=1, progress=False)  # in this process: spawned workers would re-import TF
        pattern = os.path.join(records, "train-*.tfrecord")
        if not tf.io.gfile.glob(pattern):
            raise cli.UserError(f"no train-*.tfrecord in {records}")
        try:
            cfg = get_config(args.config, num_classes=read_label_map(records).num_classes)
        except (OSError, ValueError) as e:
            raise cli.UserError(str(e))
        cores = os.cpu_count()
        print(f"config {cfg.name}, batch {args.batch_size}, {args.batches} timed batches, {cores} cores")
        one = _measure(pattern, cfg, args.batch_size, args.batches, threads=1)
        print(f"1 thread:          {one:7.1f} images/s")
        allc = _measure(pattern, cfg, args.batch_size, args.batches, threads=None)
        print(f"all cores ({cores}):     {allc:7.1f} images/s")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
