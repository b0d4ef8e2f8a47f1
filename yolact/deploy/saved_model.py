"""The SavedModel export: a self-contained serving graph (resize, normalisation, network, Fast NMS, masks at the
input's size) written atomically, with config.json / label_map.json and optionally the TFLite / ONNX files beside.

Signatures (TF Object Detection API conventions, D = ``cfg.detection.max_num_detection``):

* ``serving_default``: ``images`` uint8 [B, H, W, 3] RGB, any H, W (one size per batch);
* ``serving_bytes``: ``image_bytes`` string [] (one encoded JPEG / PNG / BMP / GIF image), batch of 1.

Both return ``num_detections`` int32 [B]; ``detection_boxes`` float32 [B, D, 4] normalized ``[ymin, xmin, ymax,
xmax]`` clipped to [0, 1]; ``detection_classes`` int32 [B, D] dataset category ids; ``detection_scores`` float32
[B, D] the box (class) scores, in descending order; ``detection_masks`` float32 [B, D, H, W] probabilities at input
resolution, cropped to the box (the original's crop at prototype resolution, then bilinear upsampling), ``> 0.5`` is
the binary mask. YOLACT++ models also return ``detection_mask_scores`` float32 [B, D] (box score x predicted mask
IoU: rank / threshold masks by it, boxes by ``detection_scores``). Rows past ``num_detections`` are zero. Serving
needs only TensorFlow (no project code).

The graph is :func:`yolact.ops.preprocess.resize` followed by :func:`yolact.deploy.graph.inference_function`
(the composition every form runs) with the masks upsampled to (H, W) in the detection layer.
"""

from __future__ import annotations

import os
from typing import Optional

import tensorflow as tf

from utils.atomic import atomic_dir
from yolact.detection import DetectionGenerator
from yolact.deploy.graph import inference_function
from yolact.ops.image_io import decode_image_rgb
from yolact.ops.preprocess import resize


def build_serving_module(model, cfg, label_map, jit: bool = True) -> tf.Module:
    """A ``tf.Module`` with ``serve`` (uint8 images) and ``serve_bytes`` (encoded image) tf.functions.

    Args:
      model: built Yolact with weights (not changed); cfg: its YolactConfig; label_map: LabelMap for category ids;
      jit: XLA-compile the Fast NMS.
    """
    module = tf.Module()
    module.model = model
    run = inference_function(model, cfg, label_map.index_to_id_array(), DetectionGenerator(cfg, "fast", jit))

    def run_images(images):
        # The signature does not check shapes at call time: EnsureShape does (rank 4, 3 channels).
        images = tf.ensure_shape(images, [None, None, None, 3], name="images_must_be_uint8_BxHxWx3")
        shape = tf.shape(images)
        with tf.control_dependencies([
            tf.debugging.assert_positive(shape[1] * shape[2], message="images must be at least 1x1 pixels"),
        ]):
            pixels = resize(images, cfg)  # batched: one size per batch
        return run(pixels, output_size=(shape[1], shape[2]))

    module.serve = tf.function(run_images,
                               input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])

    def run_bytes(image_bytes):
        return run_images(decode_image_rgb(image_bytes)[None])

    module.serve_bytes = tf.function(run_bytes, input_signature=[tf.TensorSpec([], tf.string, name="image_bytes")])
    return module


def is_nonempty_dir(path: str) -> bool:
    """Whether ``path`` is a folder with anything in it (what :func:`export` refuses without ``overwrite``)."""
    return os.path.isdir(path) and bool(os.listdir(path))


def export(model, cfg, label_map, export_dir: str, jit: bool = True, overwrite: bool = False,
           deployables: Optional[dict] = None) -> str:
    """Write the SavedModel + config.json + label_map.json (+ TFLite / ONNX files) into ``export_dir`` atomically:
    everything goes into a temporary folder beside it, which is renamed into place when complete; returns the
    absolute ``export_dir``.

    Args:
      model: the built model with its weights (not changed); cfg, label_map: its config and label map.
      export_dir: target folder; jit: XLA Fast NMS in the SavedModel; overwrite: replace a non-empty
        ``export_dir`` (the old one is renamed aside and deleted only after the new one is in place).
      deployables: keyword arguments of :func:`yolact.deploy.export.write_deployables` (``tflite_precisions``,
        ``representative``, ``onnx``, ``openvino``).

    Raises:
      FileExistsError: ``export_dir`` is not empty and ``overwrite`` is False, or is not a folder (before any work).
      OSError (utils.atomic.DiskFullError when the disk fills up): the folder cannot be written (nothing is left
        behind, a previous export stays as it was).
    """
    from yolact.checkpoint import write_run_files

    export_dir = os.path.abspath(export_dir)
    if is_nonempty_dir(export_dir) and not overwrite:
        raise FileExistsError(f"{export_dir} exists and is not empty: pass -overwrite to replace it")
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise FileExistsError(f"{export_dir} exists and is not a folder")
    module = build_serving_module(model, cfg, label_map, jit)
    signatures = {"serving_default": module.serve.get_concrete_function(),
                  "serving_bytes": module.serve_bytes.get_concrete_function()}
    with atomic_dir(export_dir, replace=overwrite) as tmp:
        tf.saved_model.save(module, tmp, signatures=signatures)
        write_run_files(tmp, cfg, label_map)
        if deployables:
            from yolact.deploy.export import write_deployables

            write_deployables(model, cfg, label_map, tmp, **deployables)
    return export_dir


__all__ = ["build_serving_module", "is_nonempty_dir", "export"]
