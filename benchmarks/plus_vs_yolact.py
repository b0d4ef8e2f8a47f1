"""YOLACT++ ResNet-50 vs YOLACT ResNet-50 end to end at batch 1 on this machine, in one run (prints numbers; asserts
nothing).

Both models go through the Predictor (frozen inference graph from the first image, XLA Fast NMS; YOLACT++ adds the
mask-IoU net's re-scoring to the 'network' stage, the whole graph) on the same photos, interleaved image by image so that load from other
processes hits both equally; one warm-up round (tracing, freezing, XLA), then ``-rounds`` timed rounds; medians of
the per-round mean ms per image. Every detection's mask is assembled (score threshold 0, as eval.py --benchmark).
JPEG decoding is not timed. The original paper reports YOLACT++ R50 at 33.5 fps vs YOLACT R50 at 42.5 fps on a Titan
Xp (1.27x); the goal here is <= 1.3x on CPU.

Weights: by default the shared reference fixtures (reference_r50/weights.npz; the YOLACT++ state_dict =
reference_r50/weights.npz completed by reference_plus_r50/weights_delta.npz), converted into a temporary folder;
speed does not depend on the values except through the number of detections (printed).

    python benchmarks/plus_vs_yolact.py [-rounds 3] [-images '../shared/data/media/*.jpg'] \\
        [-yolact_weights R50_RUN_DIR] [-plus_weights PLUS_RUN_DIR] [-intra_op 0]
"""

from __future__ import annotations

import glob
import os
import pathlib
import sys
import tempfile
import time

import numpy as np
from absl import flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils import cli  # noqa: E402  (after the sys.path line)

FLAGS = flags.FLAGS
flags.DEFINE_string("yolact_weights", None, "yolact_resnet50 run folder / .weights.h5 (default: the fixture's)")
flags.DEFINE_string("plus_weights", None, "yolact_plus_resnet50 run folder / .weights.h5 (default: the fixture's)")
flags.DEFINE_string("images", str(ROOT.parent / "shared" / "data" / "media" / "*.jpg"), "glob of photos")
flags.DEFINE_string("shared", str(ROOT.parent / "shared"), "shared/ folder (reference fixtures)")
flags.DEFINE_integer("rounds", 3, "timed rounds over all images (after one warm-up round)")
flags.DEFINE_integer("intra_op", 0, "TF intra-op threads (0: TF default, one per core)")

STAGES = ("preprocess", "network", "masks")


def _fixture_weights(shared: pathlib.Path, work: pathlib.Path):
    """(yolact_resnet50 .weights.h5, yolact_plus_resnet50 .weights.h5) converted from the reference fixtures."""
    from yolact.torch_weights import convert_file, load_state_dict_file

    r50 = shared / "fixtures" / "reference_r50" / "weights.npz"
    sd = load_state_dict_file(r50)
    sd.update(load_state_dict_file(shared / "fixtures" / "reference_plus_r50" / "weights_delta.npz"))
    np.savez(work / "plus.npz", **sd)
    out = (work / "r50" / "yolact_resnet50.weights.h5", work / "plus" / "yolact_plus_resnet50.weights.h5")
    convert_file(str(r50), "yolact_resnet50", str(out[0]))
    convert_file(str(work / "plus.npz"), "yolact_plus_resnet50", str(out[1]))
    return out


def main(argv):
    del argv
    import tensorflow as tf

    if FLAGS.intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op)
    from yolact.ops.image_io import read_image
    from yolact.predictor import Predictor

    paths = sorted(glob.glob(FLAGS.images))
    if not paths:
        raise SystemExit(f"plus_vs_yolact: no image matches {FLAGS.images}")
    images = [read_image(p) for p in paths]
    with tempfile.TemporaryDirectory() as tmp:
        weights = (FLAGS.yolact_weights, FLAGS.plus_weights)
        if not all(weights):
            fixture = _fixture_weights(pathlib.Path(FLAGS.shared), pathlib.Path(tmp))
            weights = tuple(w or str(f) for w, f in zip(weights, fixture))
        predictors = {name: Predictor.from_checkpoint(w, freeze=True) for name, w in zip(("YOLACT", "YOLACT++"),
                                                                                        weights)}
    load = os.getloadavg()
    print(f"{len(images)} photos {sorted({im.shape[:2] for im in images})}, batch 1, "
          f"{', '.join(f'{n}: {p.cfg.name} at {p.cfg.img_size}' for n, p in predictors.items())}; "
          f"{os.cpu_count()} cores, TF {tf.__version__}; load average before {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f}", flush=True)

    def one_round():
        acc = {n: {s: 0.0 for s in STAGES + ("total",)} for n in predictors}
        dets = {n: [] for n in predictors}
        for image in images:
            for n, p in predictors.items():
                t = {}
                t0 = time.perf_counter()
                r = p.predict(image, timings=t)
                acc[n]["total"] += time.perf_counter() - t0
                for s in STAGES:
                    acc[n][s] += t[s]
                dets[n].append(len(r["scores"]))
        return {n: {s: 1000 * x / len(images) for s, x in a.items()} for n, a in acc.items()}, dets

    one_round()  # warm-up
    rounds = [one_round() for _ in range(FLAGS.rounds)]
    med = {n: {s: float(np.median([r[0][n][s] for r in rounds])) for s in STAGES + ("total",)} for n in predictors}
    for n in predictors:
        print(f"{n:8s} median of {FLAGS.rounds} rounds, ms per image: "
              + ", ".join(f"{s} {med[n][s]:.1f}" for s in STAGES)
              + f"; total {med[n]['total']:.1f} ms (detections per image {rounds[-1][1][n]})")
    ratios = [r[0]["YOLACT++"]["total"] / r[0]["YOLACT"]["total"] for r in rounds]
    print(f"YOLACT++ / YOLACT: {med['YOLACT++']['total'] / med['YOLACT']['total']:.2f}x (per round "
          + ", ".join(f"{x:.2f}" for x in ratios) + "; goal <= 1.3x)")
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    cli.quiet_startup(__name__)
    cli.run(main)
