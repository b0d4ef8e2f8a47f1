"""Milliseconds per call: DeformableConv2D (yolact/dcn.py) vs a plain Keras Conv2D 3x3 of the same shape, on CPU.

    python benchmarks/dcn_speed.py                                   # C3/C4/C5 stride-1 shapes, 20 runs each
    python benchmarks/dcn_speed.py -runs 10 -strided -grad           # + the stride-2 first blocks, + fwd+bwd
    python benchmarks/dcn_speed.py -threads 1                        # one intra-op thread (busy machines)

Shapes are those of YOLACT++ ResNet-50 at 550x550, batch 1 (original: backbone.py Bottleneck, where the DCN
replaces conv2, the 3x3, of every block of layers 2-4): C3 69x69x128, C4 35x35x256, C5 18x18x512, stride 1;
``-strided`` adds the stride-2 first block of each stage (138x138x128 -> 69x69, 69x69x256 -> 35x35,
35x35x512 -> 18x18). The DCN gets random offset/mask conv weights with the fixture's scales (offsets ~1 px, some
samples outside the image), so the sampling does real work. Both layers run inside ``tf.function`` (graph) and
``tf.function(jit_compile=True)`` (XLA); the first call (tracing/compilation) is excluded, then the layers are
timed interleaved and the median (and min) of ``-runs`` calls is printed with the DCN / Conv2D ratio.
``-grad`` times forward + backward (gradients w.r.t. input and all weights) instead. Asserts nothing.
"""

import pathlib
import sys
import time

from absl import flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils import cli  # noqa: E402  (after the sys.path line)

flags.DEFINE_integer("runs", 20, "Timed calls per layer and mode (median reported).")
flags.DEFINE_bool("strided", False, "Also time the stride-2 first block of each stage.")
flags.DEFINE_bool("grad", False, "Time forward + backward instead of forward only.")
flags.DEFINE_list("modes", ["graph", "xla"], "graph (tf.function) and/or xla (jit_compile=True).")
flags.DEFINE_integer("threads", 0, "TF intra-op threads (0 = TF default); 1 gives steadier numbers on a busy machine.")
FLAGS = flags.FLAGS

# (name, input side, channels, stride)
SHAPES = [("C3", 69, 128, 1), ("C4", 35, 256, 1), ("C5", 18, 512, 1)]
STRIDED = [("C3/s2", 138, 128, 2), ("C4/s2", 69, 256, 2), ("C5/s2", 35, 512, 2)]


def _layers(side, channels, stride, seed):
    import keras
    import numpy as np

    from yolact.dcn import DeformableConv2D

    rng = np.random.default_rng(seed)
    dcn = DeformableConv2D(channels, 3, strides=stride, padding=1)
    dcn.build((1, side, side, channels))
    fan_in = 9 * channels
    dcn.conv_offset_mask.kernel.assign(rng.normal(0, 1 / np.sqrt(fan_in), dcn.conv_offset_mask.kernel.shape))
    dcn.conv_offset_mask.bias.assign(np.concatenate([rng.normal(0, 0.7, 18), rng.normal(2.5, 0.5, 9)]))
    conv = keras.Sequential(
        [keras.layers.ZeroPadding2D(1), keras.layers.Conv2D(channels, 3, strides=stride, use_bias=True)]
    )
    conv.build((1, side, side, channels))
    x = np.maximum(rng.standard_normal((1, side, side, channels)), 0).astype(np.float32)
    return dcn, conv, x


def _callable(layer, jit, grad):
    import tensorflow as tf

    if not grad:
        return tf.function(lambda x: layer(x), jit_compile=jit)

    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(x)))
        return tape.gradient(loss, [x] + layer.trainable_variables)

    return tf.function(step, jit_compile=jit)


def _sync(result):
    import tensorflow as tf

    for t in tf.nest.flatten(result):
        t.numpy()


def bench(shapes, modes, runs, grad):
    import numpy as np
    import tensorflow as tf

    rows = []
    for name, side, channels, stride in shapes:
        dcn, conv, x = _layers(side, channels, stride, seed=side + channels)
        x = tf.constant(x)
        row = {"name": name, "shape": f"{side}x{side}x{channels} s{stride}"}
        fns = {}
        for mode in modes:
            fns[("dcn", mode)] = _callable(dcn, mode == "xla", grad)
            fns[("conv", mode)] = _callable(conv, mode == "xla", grad)
        times = {key: [] for key in fns}
        for fn in fns.values():
            _sync(fn(x))  # trace / compile
        for _ in range(runs):
            for key, fn in fns.items():
                start = time.perf_counter()
                _sync(fn(x))
                times[key].append(time.perf_counter() - start)
        for key, ts in times.items():
            row[key] = (1e3 * float(np.median(ts)), 1e3 * float(np.min(ts)))
        rows.append(row)
    return rows


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    import tensorflow as tf

    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    modes = [m for m in FLAGS.modes if m in ("graph", "xla")]
    if not modes or len(modes) != len(FLAGS.modes):
        raise app.UsageError(f"-modes must be graph and/or xla, got {FLAGS.modes}")
    shapes = SHAPES + (STRIDED if FLAGS.strided else [])
    rows = bench(shapes, modes, FLAGS.runs, FLAGS.grad)
    what = "forward+backward" if FLAGS.grad else "forward"
    print(f"DeformableConv2D vs Conv2D 3x3, batch 1, {what}, float32, median (min) of {FLAGS.runs} runs in ms; "
          f"TF {tf.__version__}, intra-op threads {tf.config.threading.get_intra_op_parallelism_threads() or 'auto'}")
    header = f"{'layer':6s} {'input':16s}"
    for mode in modes:
        header += f" | {mode + ' DCN':>17s} {mode + ' Conv2D':>17s} {'ratio':>6s}"
    print(header)
    print("-" * len(header))
    for row in rows:
        line = f"{row['name']:6s} {row['shape']:16s}"
        for mode in modes:
            d_med, d_min = row[("dcn", mode)]
            c_med, c_min = row[("conv", mode)]
            line += f" | {d_med:8.2f} ({d_min:6.2f}) {c_med:8.2f} ({c_min:6.2f}) {d_med / c_med:6.2f}"
        print(line)


if __name__ == "__main__":
    cli.quiet_startup(__name__)
    cli.run(main)
