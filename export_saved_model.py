"""Export a YOLACT model as a self-contained SavedModel (resize, normalization, network, Fast NMS, masks in-graph).

Usage::

    python export_saved_model.py -checkpoint weights/my_run -export_dir exported/mine [-overwrite]
    python export_saved_model.py -config yolact_resnet50 -checkpoint r50.weights.h5 -export_dir exported/r50

``-checkpoint`` is a run folder with config.json + label_map.json (or a checkpoint prefix / .weights.h5 inside one);
``-config`` / ``-img_size`` / ``-label_map`` are only needed for weights without config.json (converted original
weights, older runs) and must agree with config.json when it exists.

The SavedModel, its signatures and outputs: yolact/deploy/saved_model.py; the TFLite / ONNX contract:
yolact/deploy/graph.py. ``config.json`` and ``label_map.json`` are written next to the model files.

Deployment beyond TensorFlow (input ``images`` float32 [1, S, S, 3], the photo resized to S × S in float; the
same outputs except ``detection_masks`` [1, D, Hp, Wp] at prototype resolution; TFLite builtin ops only)::

    python export_saved_model.py -checkpoint weights/my_run -export_dir exported/mine \
        -tflite float32,float16,int8 -representative_data 'tfrecords/val*.tfrecord*' -onnx

writes ``yolact_float32.tflite``, ``yolact_float16.tflite``, ``yolact_int8.tflite`` (full-integer post-training
quantization calibrated on the first ``-representative_images`` (100) images of ``-representative_data``, with
the eval preprocessing) and ``yolact.onnx`` (tf2onnx, opset 17, checked with onnx.checker) beside the SavedModel.
``-openvino`` adds ``yolact_openvino.xml`` + ``.bin``: the ONNX model as an OpenVINO IR (float32; the fastest
float32 form on Intel CPUs, docs/benchmarks.md). ``inference.py -model EXPORT_DIR/yolact_int8.tflite ...`` runs any
of them. An unknown precision, int8 without
``-representative_data`` or a glob that matches nothing: one line, exit 2, before anything is loaded.

The export is written into a temporary folder beside ``-export_dir`` and renamed into place when complete. An
existing non-empty ``-export_dir`` is refused (exit 2) unless ``-overwrite`` is given; then the old export is
renamed aside, the new one renamed in, and the old one deleted, so an interrupted export never leaves a
half-written model where a good one was; a full disk is one line and exit 1 (the previous export intact).
``-export_dir`` is never the run folder, a folder above it or one holding ``-representative_data`` (exit 2);
``-representative_images`` must be >= 1 and every ``-representative_data`` file a TFRecord (checked first).
"""

from __future__ import annotations

import os

from utils import cli

cli.quiet_startup(__name__)  # before anything imports TensorFlow (acts only when run as a program)

from absl import flags

from utils.cli import FaultError, UserError, run
from utils.flags_util import define_model_flags

FLAGS = flags.FLAGS
define_model_flags()
flags.DEFINE_string("export_dir", None, "output folder of the SavedModel (refused if non-empty, see -overwrite)")
flags.DEFINE_boolean("overwrite", False, "replace an existing non-empty -export_dir (atomically)")
flags.DEFINE_boolean("xla_nms", True, "compile Fast NMS with XLA inside the SavedModel")
flags.DEFINE_string("tflite", None, "also write TFLite models: comma-separated float32, float16, int8 "
                    "(EXPORT_DIR/yolact_<precision>.tflite; contract in yolact/deploy/graph.py)")
flags.DEFINE_string("representative_data", None, "int8 calibration: glob of TFRecords (data/coco_tfrecord_creator.py)")
flags.DEFINE_integer("representative_images", 100, "int8 calibration: number of images read from -representative_data",
                     lower_bound=1)
flags.DEFINE_boolean("onnx", False, "also write EXPORT_DIR/yolact.onnx (tf2onnx, opset 17)")
flags.DEFINE_boolean("openvino", False, "also write EXPORT_DIR/yolact_openvino.xml + .bin (the ONNX model as an "
                     "OpenVINO IR, float32; needs the openvino package)")


def main(argv):
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}")
    for name in ("checkpoint", "export_dir"):
        if not getattr(FLAGS, name):
            raise UserError(f"-{name} is required")
    from utils.atomic import DiskFullError
    from utils.paths import check_output_not_input
    from yolact.checkpoint import resolve_run, run_dir_of

    # -export_dir is never the run folder or a folder above it: -overwrite would delete the checkpoints
    check_output_not_input(FLAGS.export_dir, [("-checkpoint", FLAGS.checkpoint),
                                              ("-checkpoint's run folder", run_dir_of(FLAGS.checkpoint))],
                           "-export_dir", inside_ok=("-checkpoint's run folder",))
    try:
        from yolact.deploy.saved_model import export, is_nonempty_dir

        if is_nonempty_dir(FLAGS.export_dir) and not FLAGS.overwrite:  # refuse before loading anything
            raise FileExistsError(f"{FLAGS.export_dir} exists and is not empty: pass -overwrite to replace it")
        _check_deploy_flags()
        cfg, label_map, _ = resolve_run(FLAGS.checkpoint, FLAGS.config, FLAGS.img_size, FLAGS.label_map)
        deployables, calibration = _deployables(cfg)
        from yolact.checkpoint import load_model

        model = load_model(cfg, FLAGS.checkpoint)
        with cli.native_noise_filtered():  # the TFLite quantizer's "fully_quantize: 0, ..." line
            export(model, cfg, label_map, FLAGS.export_dir, FLAGS.xla_nms, FLAGS.overwrite, deployables)
    except DiskFullError as e:  # atomic_dir removed the temporary folder: the previous export is intact
        raise FaultError(str(e)) from None
    except (ValueError, OSError) as e:  # RunFilesError, CheckpointError, FileExistsError, unwritable folder
        raise UserError(str(e).splitlines()[0]) from None
    in_h, in_w = cfg.input_size
    print(f"exported {cfg.name} ({in_h}x{in_w}) to {FLAGS.export_dir}: signatures serving_default "
          "(images uint8 [B,H,W,3]) and serving_bytes (image_bytes string); config.json and label_map.json beside")
    for name in sorted(os.listdir(FLAGS.export_dir)):
        if name.endswith((".tflite", ".onnx", ".xml")):
            size_mb = os.path.getsize(os.path.join(FLAGS.export_dir, name)) / 2**20
            print(f"  {name}: {size_mb:.1f} MB, input images float32 [1,{in_h},{in_w},3]"
                  + (f", int8 calibrated on {calibration['images']} images of {FLAGS.representative_data}"
                     if name.endswith("int8.tflite") else ""))


def _check_deploy_flags() -> None:
    """-tflite / -representative_data checked before the checkpoint is even looked at.

    Raises:
      ValueError: unknown precision; int8 without -representative_data, with a glob that matches nothing, or files
        that are not TFRecords (the first record of each is read) or lie inside -export_dir.
    """
    from utils.paths import check_output_not_input
    from yolact.deploy.tflite import parse_precisions

    if "int8" in (parse_precisions(FLAGS.tflite) if FLAGS.tflite else []):
        if not FLAGS.representative_data:
            raise ValueError("-tflite int8 needs -representative_data 'GLOB' (TFRecords of calibration images)")
        import tensorflow as tf

        files = tf.io.gfile.glob(FLAGS.representative_data)
        if not files:
            raise ValueError(f"no TFRecord files match {FLAGS.representative_data!r} (-representative_data)")
        check_output_not_input(FLAGS.export_dir, [("-representative_data", f) for f in files], "-export_dir")
        for path in files:
            try:
                for _ in tf.data.TFRecordDataset(path).take(1):
                    pass
            except tf.errors.OpError as e:
                raise ValueError(f"-representative_data: {path} is not a TFRecord file ({' '.join(e.message.split())[:120]})"
                                 ) from None


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
        from data.parser import eval_images
        from yolact.ops.preprocess import resize_image

        dataset = eval_images(FLAGS.representative_data).take(FLAGS.representative_images)

        def representative():  # the photos resized as every form resizes them (the model's float input)
            calibration["images"] = 0
            for image, _ in dataset:
                calibration["images"] += 1
                yield resize_image(image.numpy(), cfg)

    return ({"tflite_precisions": precisions, "representative": representative, "onnx": FLAGS.onnx,
             "openvino": FLAGS.openvino}, calibration)


if __name__ == "__main__":
    run(main)
