"""Where YOLACT++ R50's extra network time goes on this CPU (prints numbers; asserts nothing).

Times the network alone (backbone, FPN, protonet, prediction head; the Predictor's frozen graph, BatchNorm folded)
at batch 1 for three models with random weights (speed does not depend on the values):

  yolact_resnet50           YOLACT R50: 3 anchors per location (19,248 at 550);
  plus_resnet50_no_dcn      yolact_plus_resnet50 with ``dcn_layers=(0, 0, 0, 0)``: the 9-anchor head (57,744
                            anchors: 3x the conf / box / coefficient output channels) without deformable convs;
  yolact_plus_resnet50      YOLACT++ R50: also the 13 DCNv2 3x3 convs of C3-C5.

The differences are the cost of the 9-anchor head and of the DCNs. One warm-up call each, then the median of
``-runs`` calls; the three models are timed one after another.

    python benchmarks/plus_network_breakdown.py [-runs 5] [-img_size 550]
"""

from __future__ import annotations

import dataclasses
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
flags.DEFINE_integer("runs", 5, "timed calls per model (after one warm-up)")
flags.DEFINE_integer("img_size", 550, "input side")


def main(argv):
    del argv
    import tensorflow as tf

    import config
    from yolact.model import Yolact
    from yolact.deploy.graph import freeze

    plus = config.get_config("yolact_plus_resnet50", img_size=FLAGS.img_size)
    variants = [("yolact_resnet50", config.get_config("yolact_resnet50", img_size=FLAGS.img_size)),
                ("plus_resnet50_no_dcn", dataclasses.replace(plus, model=dataclasses.replace(plus.model,
                                                                                            dcn_layers=(0, 0, 0, 0)))),
                ("yolact_plus_resnet50", plus)]
    x = tf.constant(np.random.default_rng(0).standard_normal((1, FLAGS.img_size, FLAGS.img_size, 3)), tf.float32)
    print(f"network only, batch 1, {FLAGS.img_size} px, {os.cpu_count()} cores, TF {tf.__version__}; load average "
          f"{os.getloadavg()[0]:.2f} before")
    base = None
    for name, cfg in variants:
        model = Yolact(cfg)
        model(x, training=False)
        net = freeze(tf.function(lambda images, m=model: m(images, training=False),
                                 input_signature=[tf.TensorSpec(x.shape, tf.float32)]))
        net(x)["proto"].numpy()
        times = []
        for _ in range(FLAGS.runs):
            t0 = time.perf_counter()
            net(x)["proto"].numpy()
            times.append(time.perf_counter() - t0)
        ms = 1000 * float(np.median(times))
        base = base or ms
        print(f"{name:22s} {ms:7.1f} ms (min {1000 * min(times):.1f}), {ms / base:.2f}x YOLACT R50")
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    cli.run(main)
