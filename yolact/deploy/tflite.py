"""TFLite conversion of the deployable function (yolact/deploy/graph.py): float32, float16 and int8.

* ``float32``: the graph as is.
* ``float16``: float16 weights (``optimizations=[DEFAULT]``, ``supported_types=[float16]``), computed in float32 on
  CPUs without float16 arithmetic; about half the file size.
* ``int8``: full-integer post-training quantization of the network: int8 weights (per channel) and activations
  (per tensor), calibrated on representative images (float32 [1, H, W, 3] resized pixels, the input the model
  takes). The detection stage (box decoding, Fast NMS, mask assembly, YOLACT++ re-scoring) stays float32, as
  TFLite's own detection models keep their post-processing float: see :func:`convert`. The input (float32 pixels,
  quantized inside) and the outputs stay as in the contract (float32 / int32), so callers never (de)quantize.

Every model is converted with ``supported_ops`` restricted to TFLite builtins (plus the int8 builtins for int8):
conversion FAILS rather than produce a model that needs the Flex (select TF ops) delegate.
"""

from __future__ import annotations

import json
from typing import Callable, Dict, Iterable, Optional, Sequence

import numpy as np
import tensorflow as tf

from yolact.dcn import SAMPLING_POSITIONS_SCOPE  # DCNv2 sampling positions: kept float32 in an int8 model
from yolact.detection.generator import DETECTION_SCOPE  # the tensors an int8 model keeps float32

PRECISIONS = ("float32", "float16", "int8")
DEFAULT_REPRESENTATIVE_IMAGES = 100
METADATA_NAME = "yolact_contract"


def parse_precisions(spec: str) -> list:
    """``'float32,int8'`` → ``['float32', 'int8']`` (order kept, duplicates dropped).

    Raises:
      ValueError: an empty list or an unknown precision (one line naming it and the allowed ones).
    """
    out = []
    for p in (s.strip() for s in spec.split(",")):
        if p not in PRECISIONS:
            raise ValueError(f"unknown TFLite precision {p!r}: expected a comma-separated list of {', '.join(PRECISIONS)}")
        if p not in out:
            out.append(p)
    return out


def _keeps_float(name: str) -> bool:
    """Whether the tensor named ``name`` stays float32 in an int8 model: the detection stage (``DETECTION_SCOPE``)
    and the DCNv2 sampling positions (``yolact/dcn.py SAMPLING_POSITIONS_SCOPE``, inside any layer)."""
    return name.startswith(DETECTION_SCOPE) or f"/{SAMPLING_POSITIONS_SCOPE}/" in name


def _without_detection_statistics(calibrated: bytes) -> bytes:
    """The calibrated model (TFLite's calibrate-only output: float ops, min / max per activation tensor) with the
    statistics of the detection stage's tensors (names under ``DETECTION_SCOPE``: decoding, Fast NMS, masks,
    YOLACT++ re-scoring) removed, so that the quantizer leaves them float32.

    Why: quantized, box decoding, Fast NMS and mask assembly go wrong in ways no calibration fixes. The quantizer
    merges equal sub-expressions and requantizes the box coordinates with another tensor's range (measured: x2 = 0.96
    came out as 0.596 and crops lost most of their mask pixels); the crop
    coordinates and boxes would move in steps of 1/255 of the image; the IoU division meets zero unions
    (docs/benchmarks.md has the measured effect on mask AP).
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    obj = schema.ModelT.InitFromPackedBuf(bytearray(calibrated), 0)
    for graph in obj.subgraphs:
        for tensor in graph.tensors:
            name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
            if _keeps_float(name) and tensor.quantization is not None:
                tensor.quantization = None
    builder = flatbuffers.Builder(len(calibrated) + 4096)
    builder.Finish(obj.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def convert(concrete, precision: str, representative: Optional[Callable[[], Iterable[np.ndarray]]] = None,
            metadata: Optional[Dict[str, str]] = None) -> bytes:
    """Convert a frozen concrete function (:func:`yolact.deploy.graph.freeze`) to a TFLite flatbuffer with builtin ops only.

    Args:
      concrete: :func:`yolact.deploy.graph.freeze`'s concrete function, input float32 [1, H, W, 3].
      precision: one of :data:`PRECISIONS`. int8 is TFLite's own post-training path in two steps, calibration
        (``_experimental_calibrate_only``) then the MLIR quantizer (``mlir_quantize``, what ``convert()`` and the
        QuantizationDebugger run), with the detection stage's statistics removed in between
        (:func:`_without_detection_statistics`): the network (backbone, FPN, protonet, heads) is int8 with
        per-channel weights; the detection stage computes in float32 except the ops the quantizer keeps on int8
        network outputs (slicing, softmax: scores come in steps of 1/256).
      representative: for int8 (required there): a callable returning an iterable of float32 [1, H, W, 3] arrays,
        the calibration images resized as the input (:func:`yolact.ops.preprocess.resize_image`).
      metadata: strings stored as JSON in the model's metadata entry :data:`METADATA_NAME` (see
        :func:`read_metadata`).

    Returns:
      the .tflite file content.

    Raises:
      ValueError: unknown precision, or int8 without ``representative``.
      tensorflow.lite ConverterError: an op has no TFLite builtin (the graph must be fixed, not the flags).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown TFLite precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "int8" and representative is None:
        raise ValueError("int8 needs representative images (-representative_data)")
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    if precision != "int8":
        model = converter.convert()
    else:
        from tensorflow.lite.python import convert as tflite_convert

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.representative_dataset = lambda: ([x] for x in representative())
        converter._experimental_calibrate_only = True
        calibrated = converter.convert()
        model = tflite_convert.mlir_quantize(_without_detection_statistics(calibrated), fully_quantize=False)
    return add_metadata(model, metadata) if metadata else model


def add_metadata(model: bytes, metadata: Dict[str, str]) -> bytes:
    """``model`` with a metadata entry :data:`METADATA_NAME` holding ``json.dumps(metadata)`` (TFLite schema's
    ``Model.metadata``: a name and a buffer, as the converter's own ``CONVERSION_METADATA``)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    obj = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata).encode("utf-8"), np.uint8)
    obj.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(obj.buffers) - 1
    obj.metadata = (obj.metadata or []) + [entry]
    builder = flatbuffers.Builder(len(model) + 4096)
    builder.Finish(obj.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_metadata(model: bytes) -> Optional[Dict[str, str]]:
    """The dict stored by :func:`add_metadata`, or None."""
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAs(model, 0)
    for i in range(root.MetadataLength()):
        entry = root.Metadata(i)
        if entry.Name() and entry.Name().decode() == METADATA_NAME:
            return json.loads(root.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode("utf-8"))
    return None


def op_names(model: bytes) -> Sequence[str]:
    """Builtin op names used by ``model`` (custom / Flex ops appear as ``CUSTOM:<name>``), sorted, unique."""
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAs(model, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    out = set()
    for i in range(root.OperatorCodesLength()):
        code = root.OperatorCodes(i)
        op = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        out.add(f"CUSTOM:{code.CustomCode().decode()}" if names.get(op) == "CUSTOM" else names.get(op, str(op)))
    return sorted(out)


__all__ = ["PRECISIONS", "DEFAULT_REPRESENTATIVE_IMAGES", "METADATA_NAME", "parse_precisions", "convert",
           "add_metadata", "read_metadata", "op_names"]
