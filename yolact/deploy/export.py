"""Write the TFLite / ONNX / OpenVINO files of a model into an export folder (export_saved_model.py ``-tflite`` /
``-onnx`` / ``-openvino``).

File names: ``yolact_float32.tflite``, ``yolact_float16.tflite``, ``yolact_int8.tflite``, ``yolact.onnx``,
``yolact_openvino.xml`` (+ ``.bin``, the ONNX model as an OpenVINO IR: yolact/deploy/openvino.py); the
contract is yolact/deploy/graph.py's, config.json and label_map.json beside them describe the model.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, List, Optional, Sequence

import numpy as np

ONNX_FILENAME = "yolact.onnx"


def tflite_filename(precision: str) -> str:
    return f"yolact_{precision}.tflite"


def write_deployables(model, cfg, label_map, folder: str, tflite_precisions: Sequence[str] = (),
                      representative: Optional[Callable[[], Iterable[np.ndarray]]] = None,
                      onnx: bool = False, openvino: bool = False) -> List[str]:
    """Convert ``model`` to each requested TFLite precision and/or ONNX, written into ``folder``.

    Args:
      model, cfg, label_map: the built model with weights, its config and label map.
      folder: existing output folder.
      tflite_precisions: subset of :data:`yolact.deploy.tflite.PRECISIONS`.
      representative: calibration images for int8, float32 [1, H, W, 3] (see :func:`yolact.deploy.tflite.convert`).
      onnx: also write :data:`ONNX_FILENAME`.
      openvino: also write :data:`yolact.deploy.openvino.OPENVINO_FILENAME` + ``.bin``, converted from the ONNX
        file (written first; removed again without ``onnx``). Needs the ``openvino`` package.

    Returns:
      the written paths.

    Raises:
      ValueError: unknown precision or int8 without ``representative``; converter errors (an op without a TFLite
        builtin) propagate.
    """
    from yolact.deploy import graph, tflite

    fn = graph.deployable_function(model, cfg, label_map.index_to_id_array())
    written = []
    if tflite_precisions:
        concrete = graph.freeze(fn)
        for precision in tflite_precisions:
            content = tflite.convert(concrete, precision, representative,
                                     graph.contract_metadata(cfg, label_map, precision))
            path = os.path.join(folder, tflite_filename(precision))
            with open(path, "wb") as f:
                f.write(content)
            written.append(path)
    if onnx or openvino:
        from yolact.deploy import onnx as onnx_lib

        path = os.path.join(folder, ONNX_FILENAME)
        onnx_lib.convert(fn, path, graph.contract_metadata(cfg, label_map, "float32"))
        written.append(path)
        if openvino:
            from yolact.deploy import openvino as openvino_lib

            xml = os.path.join(folder, openvino_lib.OPENVINO_FILENAME)
            written.append(openvino_lib.convert(path, xml))
            if not onnx:
                os.remove(path)
                written.remove(path)
    return written


__all__ = ["ONNX_FILENAME", "tflite_filename", "write_deployables"]
