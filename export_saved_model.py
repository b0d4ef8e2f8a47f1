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

Deployment beyond TensorFlow (yolact/deploy/, contract in yolact/deploy/graph.py: input ``images`` uint8
[1, S, S, 3] already resized to S × S with bilinear interpolation, the same five outputs except
``detection_masks`` [1, D, Hp, Wp] at prototype resolution, to be upsampled by the caller; Fast NMS and masks
inside the models, TFLite builtin ops only)::

    python export_saved_model.py -checkpoint weights/my_run -export_dir exported/mine \
        -tflite float32,float16,int8 -representative_data 'tfrecords/val*.tfrecord*' -onnx

writes ``yolact_float32.tflite``, ``yolact_float16.tflite``, ``yolact_int8.tflite`` (full-integer post-training
quantization calibrated on the first ``-representative_images`` (100) images of ``-representative_data``, with
the eval preprocessing) and ``yolact.onnx`` (tf2onnx, opset 17, checked with onnx.checker) beside the SavedModel.
``inference.py -model EXPORT_DIR/yolact_int8.tflite ...`` runs any of them. An unknown precision, int8 without
``-representative_data`` or a glob that matches nothing: one line, exit 2, before anything is loaded.

The export is written into a temporary folder beside ``-export_dir`` and renamed into place when complete. An
existing non-empty ``-export_dir`` is refused (exit 2) unless ``-overwrite`` is given; then the old export is
renamed aside, the new one renamed in, and the old one deleted, so an interrupted export never leaves a
half-written model where a good one was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Optional

from utils import cli

cli.quiet_startup(__name__)  # before anything imports TensorFlow (acts only when run as a program)

from absl import flags

from utils.cli import UserError, run
from utils.flags_util import define_model_flags

FLAGS = flags.FLAGS
define_model_flags()
flags.DEFINE_string("export_dir", None, "output folder of the SavedModel (refused if non-empty, see -overwrite)")
flags.DEFINE_boolean("overwrite", False, "replace an existing non-empty -export_dir (atomically)")
flags.DEFINE_boolean("xla_nms", True, "compile Fast NMS with XLA inside the SavedModel")
flags.DEFINE_string("tflite", None, "also write TFLite models: comma-separated float32, float16, int8 "
                    "(EXPORT_DIR/yolact_<precision>.tflite; contract in yolact/deploy/graph.py)")
flags.DEFINE_string("representative_data", None, "int8 calibration: glob of TFRecords (data/coco_tfrecord_creator.py)")
flags.DEFINE_integer("representative_images", 100, "int8 calibration: number of images read from -representative_data")
flags.DEFINE_boolean("onnx", False, "also write EXPORT_DIR/yolact.onnx (tf2onnx, opset 17)")


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


def export(cfg, checkpoint, export_dir, label_map, jit: bool = True, overwrite: bool = False,
           deployables: Optional[dict] = None) -> str:
    """Load weights, build the serving module and write the SavedModel + config.json + label_map.json into
    ``export_dir`` atomically (temporary folder beside it, then renamed); returns ``export_dir``.

    Args:
      cfg, label_map: the model's config and label map (``yolact.checkpoint.resolve_run``).
      checkpoint: weights for :func:`yolact.checkpoint.load_model`.
      export_dir: target folder; jit: XLA Fast NMS; overwrite: replace a non-empty ``export_dir``.
      deployables: keyword arguments of :func:`yolact.deploy.export.write_deployables` (``tflite_precisions``,
        ``representative``, ``onnx``): TFLite / ONNX files written into the same folder before it is renamed.

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
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700: an export is as readable as any folder the user makes
    try:
        tf.saved_model.save(module, tmp, signatures=signatures)
        write_run_files(tmp, cfg, label_map)
        if deployables:
            from yolact.deploy.export import write_deployables

            write_deployables(model, cfg, label_map, tmp, **deployables)
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
        _check_deploy_flags()
        cfg, label_map, _ = resolve_run(FLAGS.checkpoint, FLAGS.config, FLAGS.img_size, FLAGS.label_map)
        deployables, calibration = _deployables(cfg)
        export(cfg, FLAGS.checkpoint, FLAGS.export_dir, label_map, FLAGS.xla_nms, FLAGS.overwrite, deployables)
    except (ValueError, OSError) as e:  # RunFilesError, CheckpointError, FileExistsError, unwritable folder
        raise UserError(str(e).splitlines()[0]) from None
    print(f"exported {cfg.name} ({cfg.img_size}x{cfg.img_size}) to {FLAGS.export_dir}: signatures serving_default "
          "(images uint8 [B,H,W,3]) and serving_bytes (image_bytes string); config.json and label_map.json beside")
    for name in sorted(os.listdir(FLAGS.export_dir)):
        if name.endswith((".tflite", ".onnx")):
            size_mb = os.path.getsize(os.path.join(FLAGS.export_dir, name)) / 2**20
            print(f"  {name}: {size_mb:.1f} MB, input images uint8 [1,{cfg.img_size},{cfg.img_size},3]"
                  + (f", int8 calibrated on {calibration['images']} images of {FLAGS.representative_data}"
                     if name.endswith("int8.tflite") else ""))


def _check_deploy_flags() -> None:
    """-tflite / -representative_data checked before the checkpoint is even looked at.

    Raises:
      ValueError: unknown precision; int8 without -representative_data or with a glob that matches nothing.
    """
    from yolact.deploy.tflite import parse_precisions

    if "int8" in (parse_precisions(FLAGS.tflite) if FLAGS.tflite else []):
        if not FLAGS.representative_data:
            raise ValueError("-tflite int8 needs -representative_data 'GLOB' (TFRecords of calibration images)")
        import tensorflow as tf

        if not tf.io.gfile.glob(FLAGS.representative_data):
            raise ValueError(f"no TFRecord files match {FLAGS.representative_data!r} (-representative_data)")


def _deployables(cfg):
    """(write_deployables kwargs, calibration counter) from -tflite / -representative_data / -onnx, checked before
    anything is loaded.

    Raises:
      ValueError: unknown precision; int8 without -representative_data or with a glob that matches nothing.
    """
    from yolact.deploy.tflite import parse_precisions

    precisions = parse_precisions(FLAGS.tflite) if FLAGS.tflite else []
    calibration = {"images": 0}
    representative = None
    if "int8" in precisions:  # flags already checked by _check_deploy_flags
        from data.parser import eval_dataset
        from yolact.deploy.tflite import denormalized_images

        dataset = eval_dataset(FLAGS.representative_data, cfg, batch_size=1).take(FLAGS.representative_images)

        def representative():
            calibration["images"] = 0
            for image in denormalized_images((images for images, _ in dataset), cfg):
                calibration["images"] += 1
                yield image

    return {"tflite_precisions": precisions, "representative": representative, "onnx": FLAGS.onnx}, calibration


if __name__ == "__main__":
    run(main)
