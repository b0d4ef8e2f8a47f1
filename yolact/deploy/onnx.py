"""ONNX conversion of the deployable function (yolact/deploy/graph.py) with tf2onnx, checked with onnx.checker.

The model has the contract of yolact/deploy/graph.py (input ``images`` float32 [1, S, S, 3], the five named outputs,
six for YOLACT++, masks at prototype resolution); its ``metadata_props`` hold
:func:`yolact.deploy.graph.contract_metadata`.
"""

from __future__ import annotations

from typing import Dict, Optional

OPSET = 17


def convert(fn, path: str, metadata: Optional[Dict[str, str]] = None, opset: int = OPSET) -> str:
    """Convert ``fn`` (a tf.function with a fixed input signature) to an ONNX file at ``path``; returns ``path``.

    Args:
      fn: :func:`yolact.deploy.graph.deployable_function`'s result.
      path: output file (written whole, then checked with ``onnx.checker.check_model``).
      metadata: strings stored as ``metadata_props``.
      opset: ONNX opset (at least 17: the ops used need >= 13, 17 is what onnxruntime and most runtimes support).

    Raises:
      onnx.checker.ValidationError: the written model is not valid ONNX.
    """
    import onnx
    import tf2onnx

    model, _ = tf2onnx.convert.from_function(fn, input_signature=fn.input_signature, opset=opset,
                                             custom_op_handlers={"ResizeBilinear": (_resize_bilinear_to_sizes, [])})
    if metadata:
        onnx.helper.set_model_props(model, dict(metadata))
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _resize_bilinear_to_sizes(ctx, node, name, args):
    """tf2onnx handler: TF ``ResizeBilinear`` (half-pixel, static shapes) → ONNX ``Resize`` with explicit ``sizes``.

    tf2onnx 1.17 passes float ``scales`` instead, and ONNX takes ``floor(in · scale)`` as the output side: the FPN's
    18 → 35 upsampling at 550 becomes ``floor(18 · float32(35/18)) = 34`` and onnxruntime refuses the model.
    """
    import numpy as np
    from tf2onnx import utils

    n, h, w, c = ctx.get_shape(node.input[0])
    nh, nw = node.inputs[1].get_tensor_value()
    half_pixel = "half_pixel_centers" in node.attr and node.attr["half_pixel_centers"].i
    roi = ctx.make_const(utils.make_name("roi"), np.array([], np.float32))
    no_scales = ctx.make_const(utils.make_name("scales"), np.array([], np.float32))
    sizes = ctx.make_const(utils.make_name("sizes"), np.array([n, c, nh, nw], np.int64))
    nchw = ctx.make_node("Transpose", [node.input[0]], {"perm": [0, 3, 1, 2]})
    resize = ctx.make_node("Resize", [nchw.output[0], roi.output[0], no_scales.output[0], sizes.output[0]],
                           attr={"mode": "linear",
                                 "coordinate_transformation_mode": "half_pixel" if half_pixel else "asymmetric"})
    shapes, dtypes = node.output_shapes, node.output_dtypes
    ctx.remove_node(name)
    ctx.make_node("Transpose", resize.output, {"perm": [0, 2, 3, 1]}, name=name, outputs=node.output, shapes=shapes,
                  dtypes=dtypes)


def read_metadata(path: str) -> Dict[str, str]:
    """The ``metadata_props`` of the ONNX file at ``path`` (without loading the weights)."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


__all__ = ["OPSET", "convert", "read_metadata"]
