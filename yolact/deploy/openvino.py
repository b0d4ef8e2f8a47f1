"""OpenVINO IR of the ONNX export (export_saved_model.py ``-openvino``): the same graph and contract as
``yolact.onnx`` (yolact/deploy/graph.py), read by OpenVINO's CPU plugin (``yolact.runtimes.OpenVinoRunner``).

The IR is converted from the ONNX file that the export writes first (``ov.convert_model``: OpenVINO's own ONNX
frontend, no TensorFlow in between), saved as ``yolact_openvino.xml`` + ``.bin`` with float32 weights
(``compress_to_fp16=False``: OpenVINO's default halves the weights to float16, which moves scores by ~1e-3).
"""

from __future__ import annotations

OPENVINO_FILENAME = "yolact_openvino.xml"
# OpenVINO picks bfloat16 arithmetic by itself on CPUs that have it (AVX-512 BF16 / AMX): float32 is asked for
# explicitly so that the IR gives the ONNX model's results (docs/benchmarks.md "CPU runtimes and int8").
COMPILE_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}


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


__all__ = ["OPENVINO_FILENAME", "COMPILE_CONFIG", "convert"]
