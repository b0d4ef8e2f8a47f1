"""Deformable convolution kernels of the runtimes themselves, next to a plain 3x3 convolution of the same shape, on
this CPU (prints ms per call; asserts nothing).

What a YOLACT++ export could gain from a runtime's own DCNv2 kernel instead of the gathers our graph lowers to
(yolact/dcn.py). Single-op ONNX models, batch 1, stride 1, the YOLACT++ ResNet-50 shapes at 550 (C3 69x69x128,
C4 35x35x256, C5 18x18x512), random inputs (offsets ~1 px, modulation in [0, 1]):

  onnxruntime  ``DeformConv`` (ONNX opset 19; its CPU kernel, float32) vs ``Conv``
  OpenVINO     ``DeformableConvolution`` (ONNX domain ``org.openvinotoolkit``, ``DeformableConv2D`` with mask) vs
               ``Convolution``, with float32 and with bfloat16 inference precision (the CPU plugin has no bfloat16
               deformable kernel: it runs float32 there)

-num_threads threads, a warm-up of 3 calls, then the median of -runs calls, each model timed on its own.

    python benchmarks/dcn_native_kernels.py [-runs 15] [-num_threads 2]
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile
import time

import numpy as np
from absl import flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from utils import cli  # noqa: E402  (after the sys.path line)

FLAGS = flags.FLAGS
flags.DEFINE_integer("runs", 15, "timed calls per model (after 3 warm-up calls)")
flags.DEFINE_integer("num_threads", 2, "runtime threads")

SHAPES = {"C3": (69, 69, 128), "C4": (35, 35, 256), "C5": (18, 18, 512)}


def _model(kind: str, h: int, w: int, c: int, weights: np.ndarray) -> bytes:
    """A one-op ONNX model: kind 'conv', 'deform_conv' (opset 19) or 'openvino_deformable' (org.openvinotoolkit)."""
    from onnx import TensorProto, helper, numpy_helper

    x = ("x", [1, c, h, w])
    offsets, mask = ("offsets", [1, 18, h, w]), ("mask", [1, 9, h, w])
    if kind == "conv":
        node, inputs = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]), [x]
    elif kind == "deform_conv":
        node = helper.make_node("DeformConv", ["x", "w", "offsets", "", "mask"], ["y"], kernel_shape=[3, 3],
                                pads=[1, 1, 1, 1])
        inputs = [x, offsets, mask]
    else:
        node = helper.make_node("DeformableConv2D", ["x", "offsets", "w", "mask"], ["y"], domain="org.openvinotoolkit",
                                strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=1, deformable_groups=1)
        inputs = [x, offsets, mask]
    graph = helper.make_graph(
        [node], kind, [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, h, w])],
        initializer=[numpy_helper.from_array(weights, "w")])
    opsets = [helper.make_opsetid("", 19)] + ([helper.make_opsetid("org.openvinotoolkit", 1)]
                                             if kind == "openvino_deformable" else [])
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def _median_ms(call) -> float:
    for _ in range(3):
        call()
    times = []
    for _ in range(FLAGS.runs):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def main(argv):
    del argv
    import onnxruntime as ort
    import openvino as ov

    rng = np.random.default_rng(0)
    core = ov.Core()
    print(f"onnxruntime {ort.__version__}, OpenVINO {ov.__version__}, {FLAGS.num_threads} threads, "
          f"median of {FLAGS.runs} calls, ms")
    print(f"{'shape':6s} {'ort Conv':>9s} {'ort DeformConv':>15s} {'ov f32 conv':>12s} {'ov f32 deform':>14s} "
          f"{'ov bf16 conv':>13s} {'ov bf16 deform':>15s}")
    for name, (h, w, c) in SHAPES.items():
        weights = (rng.normal(size=(c, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
        feeds = {"x": rng.normal(size=(1, c, h, w)).astype(np.float32),
                 "offsets": rng.normal(size=(1, 18, h, w)).astype(np.float32),
                 "mask": rng.random((1, 9, h, w)).astype(np.float32)}
        row = []
        options = ort.SessionOptions()
        options.intra_op_num_threads = FLAGS.num_threads
        for kind in ("conv", "deform_conv"):
            session = ort.InferenceSession(_model(kind, h, w, c, weights), options, providers=["CPUExecutionProvider"])
            f = {k: v for k, v in feeds.items() if k in {i.name for i in session.get_inputs()}}
            row.append(_median_ms(lambda: session.run(None, f)))
        with tempfile.TemporaryDirectory() as tmp:
            for precision in ("f32", "bf16"):
                for kind in ("conv", "openvino_deformable"):
                    path = os.path.join(tmp, f"{kind}.onnx")
                    with open(path, "wb") as fh:
                        fh.write(_model(kind, h, w, c, weights))
                    compiled = core.compile_model(ov.convert_model(path), "CPU", {
                        "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": FLAGS.num_threads,
                        "PERFORMANCE_HINT": "LATENCY"})
                    request = compiled.create_infer_request()
                    f = {k: v for k, v in feeds.items() if k in {n for i in compiled.inputs for n in i.get_names()}}
                    row.append(_median_ms(lambda: request.infer(f)))
        print(f"{name:6s} " + " ".join(f"{v:{n}.2f}" for v, n in zip(row, (9, 15, 12, 14, 13, 15))))


if __name__ == "__main__":
    cli.quiet_startup(__name__)
    cli.run(main)
