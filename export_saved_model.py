"""Export a YOLACT model as a self-contained SavedModel (resize, normalization, network, Fast NMS, masks in-graph).

Usage::

    python export_saved_model.py -checkpoint weights/my_run -export_dir exported/mine [-overwrite]
    python export_saved_model.py -config yolact_resnet50 -checkpoint r50.weights.h5 -export_dir exported/r50

``-checkpoint`` is a run folder with config.json + label_map.json (or a checkpoint prefix / .weights.h5 inside one);
``-config`` / ``-img_size`` / ``-label_map`` are only needed for weights without config.json (converted original
weights, older runs) and must agree with config.json when it exists.

The serving graph is a thin wrapper: :func:`yolact.ops.preprocess.eval_preprocess` (the one resize + normalize),
the model, its :class:`yolact.detection.DetectionGenerator` (decode, Fast NMS, masks) and
:func:`yolact.detection.to_output_convention` (the one conversion to boxes / category ids).

Signatures (TF Object Detection API conventions, D = ``cfg.detection.max_num_detection``):

* ``serving_default``: ``images`` uint8 [B, H, W, 3] RGB, any H, W (one size per batch);
* ``serving_bytes``: ``image_bytes`` string [] (one encoded JPEG / PNG / BMP / GIF image), batch of 1.

Both return ``num_detections`` int32 [B]; ``detection_boxes`` float32 [B, D, 4] normalized ``[ymin, xmin, ymax,
xmax]`` clipped to [0, 1]; ``detection_classes`` int32 [B, D] dataset category ids; ``detection_scores`` float32
[B, D] the box (class) scores, in descending order; ``detection_masks`` float32 [B, D, H, W] probabilities at input
resolution, cropped to the box (the original's crop at prototype resolution, then bilinear upsampling), ``> 0.5`` is
the binary mask. YOLACT++ models (``cfg.model.use_maskiou``) also return ``detection_mask_scores`` float32 [B, D]:
box score x the mask-IoU net's predicted IoU of the detection's mask (original postprocess ``scores[1]``,
rescore_mask; rows keep the box-score order). Use ``detection_scores`` for boxes (box AP) and
``detection_mask_scores`` to rank / threshold masks (mask AP; the original's display shows this score too).
Rows past ``num_detections`` are zero. Serving needs only TensorFlow (no project code). ``config.json`` and
``label_map.json`` (yolact/checkpoint.py write_run_files) are written next to the SavedModel files.

The export is written into a temporary folder beside ``-export_dir`` and renamed into place when complete. An
existing non-empty ``-export_dir`` is refused (exit 2) unless ``-overwrite`` is given; then the old export is
renamed aside, the new one renamed in, and the old one deleted, so an interrupted export never leaves a
half-written model where a good one was.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from absl import flags

from utils.cli import UserError, run
from utils.flags_util import define_model_flags

FLAGS = flags.FLAGS
define_model_flags()
flags.DEFINE_string("export_dir", None, "output folder of the SavedModel (refused if non-empty, see -overwrite)")
flags.DEFINE_boolean("overwrite", False, "replace an existing non-empty -export_dir (atomically)")
flags.DEFINE_boolean("xla_nms", True, "compile Fast NMS with XLA inside the SavedModel")


def build_serving_module(model, cfg, label_map, jit: bool = True):
    """A ``tf.Module`` with ``serve`` (uint8 images) and ``serve_bytes`` (encoded image) tf.functions.

    Args:
      model: built Yolact with weights; cfg: its YolactConfig; label_map: LabelMap for category ids;
      jit: XLA-compile the Fast NMS.
    """
    import tensorflow as tf

    from yolact.detection import DetectionGenerator, to_output_convention
    from yolact.ops.image_io import decode_image_rgb
    from yolact.ops.preprocess import eval_preprocess

    module = tf.Module()
    module.model = model
    model.detection_generator = DetectionGenerator(cfg, "fast", jit)
    category_ids = tf.constant(label_map.index_to_id_array(), tf.int32)  # [C], index 0 (background) -> 0

    def run_images(images):
        # The signature does not check shapes at call time: EnsureShape does (rank 4, 3 channels).
        images = tf.ensure_shape(images, [None, None, None, 3], name="images_must_be_uint8_BxHxWx3")
        shape = tf.shape(images)
        with tf.control_dependencies([
            tf.debugging.assert_positive(shape[1] * shape[2], message="images must be at least 1x1 pixels"),
        ]):
            x = eval_preprocess(images, cfg)  # batched: tf.image.resize and the normalisation broadcast over B
        dets = model.detect(x, output_size=(shape[1], shape[2]))  # the model's detection stage (+ YOLACT++ rescoring)
        dets.pop("proto")
        return to_output_convention(dets, category_ids)

    module.serve = tf.function(run_images,
                               input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])

    def run_bytes(image_bytes):
        return run_images(decode_image_rgb(image_bytes)[None])

    module.serve_bytes = tf.function(run_bytes, input_signature=[tf.TensorSpec([], tf.string, name="image_bytes")])
    return module


def _is_nonempty_dir(path: str) -> bool:
    return os.path.isdir(path) and bool(os.listdir(path))


def _move_into_place(tmp: str, export_dir: str) -> None:
    """Rename the finished ``tmp`` to ``export_dir``; an existing one is renamed aside first, deleted last."""
    old = None
    if os.path.lexists(export_dir):
        if os.path.isdir(export_dir) and not os.listdir(export_dir):
            os.rmdir(export_dir)
        else:
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.old-", dir=os.path.dirname(export_dir))
            os.rmdir(old)
            os.rename(export_dir, old)
    try:
        os.rename(tmp, export_dir)
    except OSError:
        if old is not None:
            os.rename(old, export_dir)  # put the previous export back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export(cfg, checkpoint, export_dir, label_map, jit: bool = True, overwrite: bool = False) -> str:
    """Load weights, build the serving module and write the SavedModel + config.json + label_map.json into
    ``export_dir`` atomically (temporary folder beside it, then renamed); returns ``export_dir``.

    Args:
      cfg, label_map: the model's config and label map (``yolact.checkpoint.resolve_run``).
      checkpoint: weights for :func:`yolact.checkpoint.load_model`.
      export_dir: target folder; jit: XLA Fast NMS; overwrite: replace a non-empty ``export_dir``.

    Raises:
      FileExistsError: ``export_dir`` is not empty and ``overwrite`` is False (checked before any work).
      yolact.checkpoint.CheckpointError: unusable checkpoint.
    """
    import tensorflow as tf

    from yolact.checkpoint import load_model, write_run_files

    export_dir = os.path.abspath(export_dir)
    if _is_nonempty_dir(export_dir) and not overwrite:
        raise FileExistsError(f"{export_dir} exists and is not empty: pass -overwrite to replace it")
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise FileExistsError(f"{export_dir} exists and is not a folder")
    model = load_model(cfg, checkpoint)
    module = build_serving_module(model, cfg, label_map, jit)
    signatures = {"serving_default": module.serve.get_concrete_function(),
                  "serving_bytes": module.serve_bytes.get_concrete_function()}
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.tmp-", dir=parent)
    try:
        tf.saved_model.save(module, tmp, signatures=signatures)
        write_run_files(tmp, cfg, label_map)
        _move_into_place(tmp, export_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only left if something failed before the rename
    return export_dir


def main(argv):
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}")
    for name in ("checkpoint", "export_dir"):
        if not getattr(FLAGS, name):
            raise UserError(f"-{name} is required")
    from yolact.checkpoint import resolve_run

    try:
        if _is_nonempty_dir(FLAGS.export_dir) and not FLAGS.overwrite:  # refuse before loading anything
            raise FileExistsError(f"{FLAGS.export_dir} exists and is not empty: pass -overwrite to replace it")
        cfg, label_map, _ = resolve_run(FLAGS.checkpoint, FLAGS.config, FLAGS.img_size, FLAGS.label_map)
        export(cfg, FLAGS.checkpoint, FLAGS.export_dir, label_map, FLAGS.xla_nms, FLAGS.overwrite)
    except (ValueError, OSError) as e:  # RunFilesError, CheckpointError, FileExistsError, unwritable folder
        raise UserError(str(e).splitlines()[0]) from None
    print(f"exported {cfg.name} ({cfg.img_size}x{cfg.img_size}) to {FLAGS.export_dir}: signatures serving_default "
          "(images uint8 [B,H,W,3]) and serving_bytes (image_bytes string); config.json and label_map.json beside")


if __name__ == "__main__":
    run(main)
