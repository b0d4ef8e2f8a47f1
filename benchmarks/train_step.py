"""Seconds per training step (forward + loss + backward + TorchSGD update) at batch 8, synthetic targets.

The step is the library's (yolact/training/task.py ``YolactTask.train_step``: global-batch loss normalisation,
finite check, TorchSGD), run under the default strategy as train.py runs it on one device.

    python benchmarks/train_step.py                      # both configs, float32 and bfloat16, 3 timed steps
    python benchmarks/train_step.py -configs yolact_efficientnet_lite0 -precisions float32 -steps 2 -warmup 1
    python benchmarks/train_step.py -xla false,true -precisions float32,bfloat16,float16   # XLA next to TF's kernels

The batch is a real photo (shared/data/media) repeated, with targets made by data/targets.py from one box/mask
(a fixed synthetic object), so the loss does the same work as in training. The first ``-warmup`` steps (tracing)
are excluded. Prints a table; asserts nothing.
"""

import pathlib
import sys
import time

from absl import flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils import cli  # noqa: E402  (after the sys.path line)

flags.DEFINE_list("configs", ["yolact_resnet50", "yolact_efficientnet_lite0"], "Config presets.")
flags.DEFINE_list("precisions", ["float32", "bfloat16"], "float32 / bfloat16 / float16.")
flags.DEFINE_integer("batch_size", 8, "Batch size.")
flags.DEFINE_integer("steps", 3, "Timed steps.")
flags.DEFINE_integer("warmup", 1, "Untimed first steps.")
flags.DEFINE_list("xla", ["false"], "XLA for the whole step (tf.function jit_compile): false, true or both.")
flags.DEFINE_integer("img_size", None, "Input side (default: each preset's).")
FLAGS = flags.FLAGS


def bench(config, precision, batch, steps, warmup, xla=False, img_size=None):
    import keras
    import numpy as np
    import tensorflow as tf

    from config import get_config
    from data.targets import build_targets
    from yolact.ops.anchors import make_anchors
    from yolact.ops.label_map import from_names
    from yolact.training import TrainOptions, YolactTask

    keras.mixed_precision.set_global_policy("float32" if precision == "float32" else f"mixed_{precision}")
    cfg = get_config(config, img_size=img_size)
    s = cfg.model.img_size
    photo = sorted((ROOT.parent / "shared" / "data" / "media").glob("*.jpg"))[0]
    img = tf.image.resize(tf.io.decode_jpeg(tf.io.read_file(str(photo)), channels=3), [s, s])
    img = (img - cfg.model.mean_rgb) / cfg.model.std_rgb
    images = tf.repeat(img[None], batch, axis=0)
    mask = np.zeros([s, s, 1], np.float32)
    mask[s // 4: s // 2, s // 4: s // 2] = 1
    t = build_targets(tf.constant([[0.25, 0.25, 0.5, 0.5]]), tf.constant([1]), mask, tf.constant([False]),
                      tf.constant(make_anchors(cfg)), cfg)
    targets = {k: tf.repeat(v[None], batch, axis=0) for k, v in t.items()}
    task = YolactTask(cfg, from_names([f"c{i}" for i in range(1, cfg.num_classes)]), TrainOptions(),
                      input_fn=None, log=lambda *a: None)
    model = task.build_model(per_replica_batch=batch)
    opt, _ = task.create_optimizer("float16" if precision == "float16" else "none")
    strategy, step_var, seed0 = tf.distribute.get_strategy(), tf.Variable(0, dtype=tf.int64), tf.constant(0, tf.int64)

    @tf.function(jit_compile=xla)
    def step():
        logs, _ = strategy.run(task.train_step, args=((images, targets), model, opt, step_var, seed0))
        step_var.assign_add(1)
        return logs["total"]

    for _ in range(warmup):
        step().numpy()
    t0 = time.perf_counter()
    for _ in range(steps):
        step().numpy()
    return (time.perf_counter() - t0) / steps


def main(_):
    import tensorflow as tf

    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    rows = []
    for config in FLAGS.configs:
        for precision in FLAGS.precisions:
            for xla in [v.lower() in ("true", "1") for v in FLAGS.xla]:
                try:
                    sec = f"{bench(config, precision, FLAGS.batch_size, FLAGS.steps, FLAGS.warmup, xla, FLAGS.img_size):.3f}"
                except Exception as e:  # noqa: BLE001 - a variant that does not compile is reported, the rest still run
                    sec = f"failed: {type(e).__name__}: {' '.join(str(e).split())[:150]}"
                rows.append((config, precision, xla, sec))
                print(f"{config:28s} {precision:9s} xla={xla!s:5s} {sec} s/step", flush=True)
    print(f"\n| config | precision | XLA | device | batch | s/step |\n|---|---|---|---|---|---|")
    for config, precision, xla, sec in rows:
        print(f"| {config} | {precision} | {'on' if xla else 'off'} | {device} | {FLAGS.batch_size} | {sec} |")


if __name__ == "__main__":
    cli.quiet_startup(__name__)
    cli.run(main)
