"""End-to-end time per image at batch 1 of every deployment form (prints numbers; asserts nothing).

Variants (each runs the whole pipeline of inference.py: uint8 RGB photo in, boxes / classes / scores / masks at the
photo's own size out; JPEG decoding not timed):

  inproc_float32   the Predictor (-checkpoint), frozen network graph, XLA Fast NMS: the reference for speed-ups;
  inproc_bfloat16  the same under Keras' mixed_bfloat16 policy (inference.py -precision bfloat16);
  saved_model      the SavedModel's serving_default (inference.py -model EXPORT_DIR);
  tflite_float32, tflite_float16, tflite_int8
                   EXPORT_DIR/yolact_<precision>.tflite on LiteRT (XNNPACK), -num_threads threads;
  onnx             EXPORT_DIR/yolact.onnx on onnxruntime's CPU provider, -num_threads intra-op threads.

Variants run interleaved image by image, so that load from other processes hits each about equally; one warm-up
pass first. Printed per variant: ms per image (mean over rounds × images), speed-up over inproc_float32, and the
slowest stage (preprocess / network / masks as yolact/runtimes.py times them for every form: 'preprocess' the resize
in float, 'network' the whole graph, NMS and prototype-resolution masks included, 'masks' the host step: upsampling
to the photo). The 1-minute load average before and after is printed: the machine may be shared.

    python export_saved_model.py -config yolact_resnet50 -checkpoint /tmp/r50.weights.h5 -export_dir /tmp/r50_export \\
        -tflite float32,float16,int8 -representative_data 'data/coco/val-*' -onnx
    python benchmarks/deploy.py -checkpoint /tmp/r50.weights.h5 -config yolact_resnet50 -export_dir /tmp/r50_export
"""

from __future__ import annotations

import glob
import os
import pathlib
import sys
import time

from absl import flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils.cli import UserError, run  # noqa: E402
from utils.flags_util import define_model_flags  # noqa: E402

FLAGS = flags.FLAGS
define_model_flags()
flags.DEFINE_string("export_dir", None, "export of export_saved_model.py with -tflite float32,float16,int8 -onnx")
flags.DEFINE_string("images", str(ROOT.parent / "shared" / "data" / "media" / "*.jpg"), "glob of photos")
flags.DEFINE_list("variants", ["inproc_float32", "inproc_bfloat16", "saved_model", "tflite_float32", "tflite_float16",
                               "tflite_int8", "onnx"], "variants to time")
flags.DEFINE_integer("rounds", 3, "timed rounds over all photos (after one warm-up pass)")
flags.DEFINE_integer("num_threads", 2, "LiteRT / onnxruntime threads")



def build(variant: str):
    """The Predictor-like runner of ``variant`` (see the module docstring)."""
    from yolact.checkpoint import resolve_run
    from yolact.predictor import Predictor
    from yolact.runtimes import open_model

    if variant.startswith("inproc_"):
        return Predictor.from_checkpoint(FLAGS.checkpoint, FLAGS.config, FLAGS.img_size, FLAGS.label_map,
                                         precision=variant.split("_", 1)[1], freeze=True)
    path = {"saved_model": FLAGS.export_dir, "onnx": os.path.join(FLAGS.export_dir, "yolact.onnx")}.get(
        variant, os.path.join(FLAGS.export_dir, f"yolact_{variant.split('_', 1)[-1]}.tflite"))
    cfg, label_map, _ = resolve_run(path)
    return open_model(path, cfg, label_map, FLAGS.num_threads)


def main(argv):
    del argv
    if not FLAGS.checkpoint or not FLAGS.export_dir:
        raise UserError("-checkpoint (in-process variants) and -export_dir (exports) are required")
    from yolact.ops.image_io import read_image

    paths = sorted(glob.glob(FLAGS.images))
    if not paths:
        raise UserError(f"no photo matches {FLAGS.images}")
    photos = [read_image(p) for p in paths]
    runners = {v: build(v) for v in FLAGS.variants}
    load_before = os.getloadavg()[0]
    totals = {v: {} for v in runners}
    detections = {v: 0 for v in runners}
    for r in range(FLAGS.rounds + 1):
        for image in photos:
            for v, runner in runners.items():
                timings = {}
                result = runner.predict(image, timings)
                if r > 0:
                    for k, dt in timings.items():
                        totals[v][k] = totals[v].get(k, 0.0) + dt
                    detections[v] += int((result["scores"] > 0.3).sum())
    load_after = os.getloadavg()[0]
    n = FLAGS.rounds * len(photos)
    cfg = next(iter(runners.values())).cfg
    print(f"{cfg.name} at {cfg.img_size_text}, {len(photos)} photos x {FLAGS.rounds} rounds, batch 1, "
          f"{FLAGS.num_threads} LiteRT/onnxruntime threads, {os.cpu_count()} CPUs; load average {load_before:.2f} "
          f"before, {load_after:.2f} after")
    reference = sum(totals.get("inproc_float32", {}).values()) / n if "inproc_float32" in totals else None
    print(f"{'variant':16s} {'ms/image':>9s} {'speed-up':>9s}  slowest stage        detections>0.3/image")
    for v, stages in totals.items():
        ms = 1000 * sum(stages.values()) / n
        slowest = max(stages, key=stages.get)
        speedup = f"{1000 * reference / ms:8.2f}x" if reference else "      n/a"
        print(f"{v:16s} {ms:9.1f} {speedup}  {slowest:8s} {1000 * stages[slowest] / n:7.1f} ms   "
              f"{detections[v] / n:6.1f}")


if __name__ == "__main__":
    run(main)
