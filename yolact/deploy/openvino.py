"""OpenVINO IR of the ONNX export (export_saved_model.py ``-openvino``): the same graph and contract as
``yolact.onnx`` (yolact/deploy/graph.py), read by OpenVINO's CPU plugin (``yolact.runtimes.OpenVinoRunner``).

The IR is converted from the ONNX file that the export writes first (``ov.convert_model``: OpenVINO's own ONNX
frontend, no TensorFlow in between), saved as ``yolact_openvino.xml`` + ``.bin`` with float32 weights
(``compress_to_fp16=False``: OpenVINO's default halves the weights to float16, which moves scores by ~1e-3).
"""

from __future__ import annotations

OPENVINO_FILENAME = "yolact_openvino.xml"
# OpenVINO picks bfloat16 arithmetic by itself on CPUs that have it (AVX-512 BF16 / AMX): the precision is always
# asked for explicitly, float32 by default so that the IR gives the ONNX model's results; bfloat16 on request
# (inference.py -precision bfloat16; docs/benchmarks.md "CPU runtimes and int8").
PRECISION_HINTS = {"float32": "f32", "bfloat16": "bf16"}
COMPILE_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": PRECISION_HINTS["float32"]}


def compile_config(precision: str = "float32", num_threads=None) -> dict:
    """The CPU plugin's compile options: latency hint, ``precision`` ('float32' or 'bfloat16': the arithmetic of the
    float32 IR) and, when given, ``INFERENCE_NUM_THREADS``.

    Raises:
      ValueError: an unknown precision.
    """
    if precision not in PRECISION_HINTS:
        raise ValueError(f"unknown OpenVINO precision {precision!r}: expected one of {', '.join(PRECISION_HINTS)}")
    config = dict(COMPILE_CONFIG, INFERENCE_PRECISION_HINT=PRECISION_HINTS[precision])
    if num_threads:
        config["INFERENCE_NUM_THREADS"] = int(num_threads)
    return config


def convert(onnx_path: str, xml_path: str) -> str:
    """Convert the ONNX export at ``onnx_path`` to an OpenVINO IR at ``xml_path`` (+ the ``.bin`` beside it, float32
    weights); the ONNX ``metadata_props`` (the contract, label map) are kept as the IR's ``rt_info``
    ``yolact_contract/<key>``. Returns ``xml_path``.

    Raises:
      any OpenVINO error reading the ONNX file (an op its ONNX frontend lacks).
    """
    import openvino as ov

    from yolact.deploy.onnx import read_metadata

    model = ov.convert_model(onnx_path)
    for key, value in read_metadata(onnx_path).items():
        model.set_rt_info(value, ["yolact_contract", key])
    ov.save_model(model, xml_path, compress_to_fp16=False)
    return xml_path


__all__ = ["OPENVINO_FILENAME", "PRECISION_HINTS", "COMPILE_CONFIG", "compile_config", "convert"]
