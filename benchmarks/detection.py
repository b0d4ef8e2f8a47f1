"""Detection-stage timings for yolact_resnet50 at 550, batch 1 and 8 (prints numbers; asserts nothing).

Stages: network forward (live model, and the frozen graph with BatchNorm folded); per-class Fast NMS with XLA and without; tf.image.combined_non_max_suppression on the same
scores and boxes (baseline, same run); mask assembly (sigmoid(proto @ coefsᵀ), crop, upsample to 480x640);
end-to-end FPS in-process (Predictor, per image) and through the exported SavedModel (uint8 batch).

NMS inputs are the reference fixture's head outputs (realistic candidate counts), tiled to batch 8; the network uses
the fixture's converted weights if -weights is given, else random initialisation (same cost).

    python benchmarks/detection.py [-weights r50.weights.h5] [-reps 5] [-batches 1,8]
"""

from __future__ import annotations

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
flags.DEFINE_string("weights", None, ".weights.h5 for yolact_resnet50 (default: random init)")
flags.DEFINE_integer("reps", 5, "timed repetitions per measurement (after one warm-up)")
flags.DEFINE_string("batches", "1,8", "batch sizes")
flags.DEFINE_string("shared", str(ROOT.parent / "shared"), "shared/ folder (reference fixture, media)")
flags.DEFINE_boolean("saved_model", True, "also export and time the SavedModel")


def _time(fn, reps):
    fn()  # warm-up / compile
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return 1000 * float(np.median(t))


def main(argv):
    del argv
    import tensorflow as tf

    from config import get_config
    from yolact import detection, masks
    from yolact.deploy.graph import freeze
    from yolact.model import build_model
    from yolact.ops.box_ops import decode
    from yolact.ops.label_map import coco_label_map
    from yolact.predictor import Predictor

    cfg = get_config("yolact_resnet50")
    fixture = pathlib.Path(FLAGS.shared) / "fixtures" / "reference_r50"
    if not (fixture / "outputs.npz").is_file():
        raise SystemExit(f"benchmark: reference fixture not found under {fixture} (set -shared)")
    o = np.load(fixture / "outputs.npz")
    inputs = np.load(fixture / "inputs.npz")
    gpu = tf.config.list_physical_devices("GPU")
    print(f"device: {'GPU ' + gpu[0].name if gpu else 'CPU'} ({os.cpu_count()} cores visible), TF {tf.__version__}")
    model = build_model(cfg, freeze_bn=True, weights=FLAGS.weights)
    s = cfg.model.img_size
    net = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec([None, s, s, 3])])
    frozen_net = freeze(net)  # BN folded (the Predictor's long-run setting)
    anchors = model.anchors
    fast = {jit: detection.nms_fn(cfg, "fast", jit) for jit in (True, False)}

    @tf.function
    def combined(loc, conf):
        boxes = decode(loc, anchors)
        scores = tf.nn.softmax(conf, -1)[..., 1:]
        return tf.image.combined_non_max_suppression(
            boxes[:, :, None, :], scores, cfg.detection.top_k, cfg.detection.max_num_detection,
            iou_threshold=cfg.detection.nms_threshold, score_threshold=cfg.detection.conf_threshold, clip_boxes=False)

    assemble = tf.function(lambda p, c, b: masks.assemble_masks(p, c, b, 480, 640))
    image = inputs["image0"]
    for b in [int(x) for x in FLAGS.batches.split(",")]:
        rep = lambda a: tf.constant(np.concatenate([a] * ((b + 1) // 2))[:b])  # noqa: E731
        loc, conf, mask, proto = rep(o["loc"]), rep(o["conf"]), rep(o["mask"]), rep(o["proto"])
        x = rep(inputs["input"])
        dets = fast[False](loc, conf, mask, anchors)
        r = {
            "network": _time(lambda: net(x)["proto"].numpy(), FLAGS.reps),
            "network_frozen": _time(lambda: frozen_net(x)["proto"].numpy(), FLAGS.reps),
            "fast_nms_xla": _time(lambda: fast[True](loc, conf, mask, anchors)["scores"].numpy(), FLAGS.reps),
            "fast_nms_plain": _time(lambda: fast[False](loc, conf, mask, anchors)["scores"].numpy(), FLAGS.reps),
            "combined_nms": _time(lambda: combined(loc, conf).nmsed_scores.numpy(), FLAGS.reps),
            "mask_assembly_480x640": _time(lambda: assemble(proto, dets["coefs"], dets["boxes"]).numpy(), FLAGS.reps),
        }
        print(f"batch {b}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in r.items()))
    predictor = Predictor(cfg, model, coco_label_map(), freeze=True)
    ms = _time(lambda: predictor.predict(image), FLAGS.reps)
    print(f"end-to-end in-process (Predictor, 1 image 480x640, all 100 masks): {ms:.1f} ms = {1000 / ms:.2f} FPS")
    if FLAGS.saved_model:
        from yolact.deploy.saved_model import build_serving_module

        with tempfile.TemporaryDirectory() as d:
            module = build_serving_module(model, cfg, coco_label_map(), jit=bool(gpu))
            tf.saved_model.save(module, d, signatures={"serving_default": module.serve.get_concrete_function()})
            serve = tf.saved_model.load(d).signatures["serving_default"]
            for b in [int(x) for x in FLAGS.batches.split(",")]:
                imgs = tf.constant(np.stack([image] * b))
                ms = _time(lambda: serve(images=imgs)["detection_masks"].numpy(), FLAGS.reps)
                print(f"end-to-end SavedModel batch {b} (uint8 480x640 in, masks out): {ms:.1f} ms per batch = "
                      f"{1000 * b / ms:.2f} FPS")


if __name__ == "__main__":
    cli.quiet_startup(__name__)
    cli.run(main)
