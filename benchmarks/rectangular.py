"""Per-photo latency of exports of one model at several input sizes, interleaved (prints numbers; asserts nothing).

Each ``-models`` entry is an exported ``.tflite`` / ``.onnx`` (or a SavedModel folder) with its config.json beside
it (export_saved_model.py writes one); every variant runs the whole pipeline of inference.py on each photo (uint8
RGB in, resize in float, network, NMS, masks upsampled to the photo; JPEG decoding not timed), as
benchmarks/deploy.py does. The variants run interleaved image by image so that load from other processes hits each
about equally, after one warm-up pass. Printed per variant: the input size, ms per photo (mean over rounds x photos),
the time relative to the first variant, network pixels and detections > 0.3 per photo; the 1-minute load average
before and after.

    python benchmarks/rectangular.py -models 'OUT/export_550/yolact_int8.tflite,OUT/export_384x672/yolact_int8.tflite'

benchmarks/rectangular.sh runs it on yolact_resnet50 int8 exports at 550x550, 512x512 and 384x672.
"""

from __future__ import annotations

import glob
import os
import pathlib
import sys

from absl import flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils.cli import UserError, run  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("models", None, "exported models (.tflite, .onnx or a SavedModel folder), config.json beside each")
flags.DEFINE_string("images", str(ROOT.parent / "shared" / "data" / "media" / "*.jpg"), "glob of photos")
flags.DEFINE_integer("rounds", 3, "timed rounds over all photos (after one warm-up pass)")
flags.DEFINE_integer("num_threads", 2, "LiteRT / onnxruntime threads")


def main(argv):
    del argv
    if not FLAGS.models:
        raise UserError("-models is required (comma-separated exported models)")
    from yolact.checkpoint import resolve_run
    from yolact.ops.image_io import read_image
    from yolact.runtimes import open_model

    paths = sorted(glob.glob(FLAGS.images))
    if not paths:
        raise UserError(f"no photo matches {FLAGS.images}")
    photos = [read_image(p) for p in paths]
    runners = {}
    for path in FLAGS.models:
        if not os.path.exists(path):
            raise UserError(f"no model at {path}")
        cfg, label_map, _ = resolve_run(path)
        runners[path] = open_model(path, cfg, label_map, FLAGS.num_threads)
    load_before = os.getloadavg()[0]
    totals = {p: 0.0 for p in runners}
    detections = {p: 0 for p in runners}
    for r in range(FLAGS.rounds + 1):
        for image in photos:
            for p, runner in runners.items():
                timings = {}
                result = runner.predict(image, timings)
                if r > 0:
                    totals[p] += sum(timings.values())
                    detections[p] += int((result["scores"] > 0.3).sum())
    load_after = os.getloadavg()[0]
    n = FLAGS.rounds * len(photos)
    print(f"{len(photos)} photos x {FLAGS.rounds} rounds, batch 1, {FLAGS.num_threads} threads, {os.cpu_count()} "
          f"CPUs; load average {load_before:.2f} before, {load_after:.2f} after")
    print(f"{'model':58s} {'input HxW':>10s} {'pixels':>8s} {'ms/photo':>9s} {'rel.':>6s}  detections>0.3/photo")
    first = None
    for p, runner in runners.items():
        ms = 1000 * totals[p] / n
        first = first or ms
        h, w = runner.cfg.input_size
        name = p if len(p) <= 58 else "..." + p[-55:]
        print(f"{name:58s} {f'{h}x{w}':>10s} {h * w:8d} {ms:9.1f} {ms / first:6.2f}  {detections[p] / n:6.1f}")


if __name__ == "__main__":
    run(main)
