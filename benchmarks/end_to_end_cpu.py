"""End-to-end inference time per image at batch 1, per stage (prints numbers; asserts nothing).

Wall-clock ms per image per stage, and the process CPU time per image (all threads; less sensitive to other
processes' load than wall time).

Stages, as every runner times them (yolact/runtimes.py): preprocess (uint8 RGB → resize to S × S in float;
FastBaseTransform), network (the whole inference graph: normalisation, backbone, FPN, protonet, head, decode, Fast
NMS, prototype-resolution masks), masks (the host step: bilinear upsample to the image's own size, > 0.5, boxes to
pixels: the rest of the original's postprocess). JPEG decoding is not timed. Every
detection's mask is assembled (score threshold 0, as eval.py --benchmark).

Variants, run interleaved image by image so that load from other processes hits each equally:
  fast  the Predictor's fastest setting, its default for long runs (frozen network graph with BatchNorm folded
        into the convolutions, from the first image on here; XLA Fast NMS);
  live  the live Keras model in a tf.function and Fast NMS without XLA (the Predictor before this benchmark).

With -lockstep the script prints 'ready' after warm-up and then, per line read from stdin, 'go' runs one round over
all images and 'go I' image I only, printing one JSON line each: a driver can alternate it with another
implementation (e.g. the original PyTorch code) image by image in the same time window.

Before timing, the fixture check runs the 'fast' variant on the reference fixture's image0 (when -weights holds the
fixture's converted weights) and prints how its detections compare with the original's.

    python -m utils.convert_weights -src ../shared/fixtures/reference_r50/weights.npz -config yolact_resnet50 \\
        -out /tmp/r50.weights.h5
    python benchmarks/end_to_end_cpu.py -weights /tmp/r50.weights.h5 [-rounds 5] [-variants fast,live]
        [-intra_op 0] [-inter_op 0] [-lockstep]
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
import sys
import time

import numpy as np
from absl import flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils import cli  # noqa: E402  (after the sys.path line)

FLAGS = flags.FLAGS
flags.DEFINE_string("weights", None, ".weights.h5 of the model (e.g. the fixture's, converted)", required=True)
flags.DEFINE_string("config", "yolact_resnet50", "config preset")
flags.DEFINE_string("images", str(ROOT.parent / "shared" / "data" / "media" / "*.jpg"), "glob of photos")
flags.DEFINE_string("shared", str(ROOT.parent / "shared"), "shared/ folder (reference fixture)")
flags.DEFINE_list("variants", ["fast", "live"], "variants to time: fast (Predictor default), live")
flags.DEFINE_integer("rounds", 3, "timed rounds over all images (after one warm-up round)")
flags.DEFINE_integer("intra_op", 0, "TF intra-op threads (0: TF default, one per core)")
flags.DEFINE_integer("inter_op", 0, "TF inter-op threads (0: TF default)")
flags.DEFINE_boolean("lockstep", False, "wait for 'go' on stdin before each round; print one JSON line per round")
flags.DEFINE_boolean("check_fixture", True, "compare the fast variant's detections with the fixture's first")

STAGES = ("preprocess", "network", "masks")
VARIANTS = {"fast": {"freeze": True}, "live": {"freeze": False, "jit": False}}


def _fixture_check(predictor, fixture):
    """One line: the fast variant on fixture image0 versus the original's det0_* (classes, boxes, masks)."""
    inputs, ref = np.load(fixture / "inputs.npz"), np.load(fixture / "outputs.npz")
    r = predictor.predict(inputs["image0"])
    n = len(ref["det0_class"])
    if len(r["classes"]) != n:
        return f"fixture check: {len(r['classes'])} detections, the original has {n}"
    return (f"fixture check (image0, {n} detections): classes equal {np.array_equal(r['classes'], ref['det0_class'])}, "
            f"pixel boxes equal {np.array_equal(r['boxes'], ref['det0_box'])}, max score error "
            f"{np.abs(r['scores'] - ref['det0_score']).max():.1e}, mask pixels differing "
            f"{int((r['masks'] != ref['det0_masks']).sum())} of {r['masks'].size}")


def main(argv):
    del argv
    import tensorflow as tf

    if FLAGS.intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op)
    if FLAGS.inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op)
    from yolact.checkpoint import CheckpointError, RunFilesError, load_model, resolve_run
    from yolact.ops.image_io import ImageError, read_image
    from yolact.predictor import Predictor

    unknown = [v for v in FLAGS.variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"end_to_end_cpu: unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    paths = sorted(glob.glob(FLAGS.images))
    if not paths:
        raise SystemExit(f"end_to_end_cpu: no image matches {FLAGS.images}")
    try:
        cfg, label_map, _ = resolve_run(FLAGS.weights, FLAGS.config)
        model = load_model(cfg, FLAGS.weights)
        images = [read_image(p) for p in paths]
    except (RunFilesError, CheckpointError, ImageError) as e:
        raise SystemExit(f"end_to_end_cpu: {e}")
    predictors = {v: Predictor(cfg, model, label_map, **VARIANTS[v]) for v in FLAGS.variants}
    gpu = tf.config.list_physical_devices("GPU")
    load = os.getloadavg()
    print(f"{cfg.name} at {cfg.model.img_size}, batch 1, {len(images)} photos "
          f"{sorted({im.shape[:2] for im in images})}; device {'GPU' if gpu else 'CPU'}, {os.cpu_count()} cores, "
          f"TF {tf.__version__}, intra/inter-op threads {FLAGS.intra_op or 'default'}/{FLAGS.inter_op or 'default'}; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    fixture = pathlib.Path(FLAGS.shared) / "fixtures" / "reference_r50"
    if FLAGS.check_fixture and "fast" in predictors and cfg.name == "yolact_resnet50" and fixture.is_dir():
        print(_fixture_check(predictors["fast"], fixture), flush=True)

    def one_round(selected=None):
        """{variant: {stage: mean ms per image, 'total': ..., 'detections': [n per image]}} over ``selected``."""
        selected = images if selected is None else selected
        acc = {v: {s: 0.0 for s in STAGES + ("total", "cpu")} for v in predictors}
        dets = {v: [] for v in predictors}
        for image in selected:  # interleaved image by image
            for v, p in predictors.items():
                t = {}
                c0, t0 = time.process_time(), time.perf_counter()
                r = p.predict(image, timings=t)
                acc[v]["total"] += time.perf_counter() - t0
                acc[v]["cpu"] += time.process_time() - c0
                for s in STAGES:
                    acc[v][s] += t[s]
                dets[v].append(len(r["scores"]))
        return {v: {**{s: round(1000 * x / len(selected), 1) for s, x in a.items()}, "detections": dets[v]}
                for v, a in acc.items()}

    one_round()  # warm-up: tracing, freezing, XLA compilation
    if FLAGS.lockstep:
        print("ready", flush=True)
        for line in sys.stdin:
            words = line.split()
            if not words or words[0] != "go" or len(words) > 2 or (len(words) == 2 and not words[1].isdigit()):
                break
            selected = [images[int(words[1]) % len(images)]] if len(words) == 2 else None
            print(json.dumps(one_round(selected)), flush=True)
        return
    rounds = [one_round() for _ in range(FLAGS.rounds)]
    for v in predictors:
        med = {s: float(np.median([r[v][s] for r in rounds])) for s in STAGES + ("total", "cpu")}
        print(f"{v:5s} median of {FLAGS.rounds} rounds, ms per image: "
              + ", ".join(f"{s} {med[s]:.1f}" for s in STAGES)
              + f"; total {med['total']:.1f} ms = {med['total'] / 1000:.3f} s/image, process CPU {med['cpu']:.0f} ms "
              f"(detections per image {rounds[-1][v]['detections']})")
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    cli.quiet_startup(__name__)
    cli.run(main)
