"""Export a YOLACT model as a self-contained SavedModel (resize, normalization, network, Fast NMS, masks in-graph).

Usage::

    python export_saved_model.py -config yolact_resnet50 -checkpoint r50.weights.h5 -export_dir exported/r50
    python export_saved_model.py -config yolact_resnet50 -checkpoint train_dir -label_map tfrecords/label_map.json \
        -export_dir exported/mine

Signatures (TF Object Detection API conventions, D = ``cfg.detection.max_num_detection``):

* ``serving_default``: ``images`` uint8 [B, H, W, 3] RGB, any H, W (one size per batch);
* ``serving_bytes``: ``image_bytes`` string [] (one encoded JPEG / PNG / BMP / GIF image), batch of 1.

Both return ``num_detections`` int32 [B]; ``detection_boxes`` float32 [B, D, 4] normalized ``[ymin, xmin, ymax,
xmax]`` clipped to [0, 1]; ``detection_classes`` int32 [B, D] dataset category ids; ``detection_scores`` float32
[B, D]; ``detection_masks`` float32 [B, D, H, W] probabilities at input resolution, cropped to the box (the
original's crop at prototype resolution, then bilinear upsampling), ``> 0.5`` is the binary mask. Rows past
``num_detections`` are zero. Serving needs only TensorFlow (no project code). ``label_map.json`` is written next to
the SavedModel files.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "yolact_base", "config preset name (config.py)")
flags.DEFINE_string("checkpoint", None, "a .weights.h5, a training checkpoint directory, or a checkpoint prefix")
flags.DEFINE_string("export_dir", None, "output folder of the SavedModel")
flags.DEFINE_string("label_map", None, "label_map.json of training (default: COCO's 80 classes for 81-class models)")
flags.DEFINE_integer("img_size", None, "override the config's input size (anchor scales rescaled)")
flags.DEFINE_boolean("xla_nms", True, "compile Fast NMS with XLA inside the SavedModel")


def build_serving_module(model, cfg, label_map, jit: bool = True):
    """A ``tf.Module`` with ``serve`` (uint8 images) and ``serve_bytes`` (encoded image) tf.functions.

    Args:
      model: built Yolact with weights; cfg: its YolactConfig; label_map: LabelMap for category ids;
      jit: XLA-compile the Fast NMS.
    """
    import tensorflow as tf

    from yolact.ops.preprocess import normalize
    from yolact.ops.image_io import decode_image_rgb
    from yolact import detection, masks

    size = cfg.model.img_size
    detect = detection.detect_fn(cfg, "fast", jit)
    module = tf.Module()
    module.model = model
    category_ids = tf.constant(label_map.index_to_id_array(), tf.int32)  # [C], index 0 (background) -> 0
    anchors = model.anchors

    def run(images):
        # The signature does not check shapes at call time: EnsureShape does (rank 4, 3 channels).
        images = tf.ensure_shape(images, [None, None, None, 3], name="images_must_be_uint8_BxHxWx3")
        shape = tf.shape(images)
        with tf.control_dependencies([
            tf.debugging.assert_positive(shape[1] * shape[2], message="images must be at least 1x1 pixels"),
        ]):
            x = tf.image.resize(tf.cast(images, tf.float32), [size, size], method="bilinear", antialias=False)
        out = model(normalize(x, cfg), training=False)
        dets = detect(out["loc"], out["conf"], out["mask"], anchors)
        num = dets["num_detections"]
        valid = tf.sequence_mask(num, cfg.detection.max_num_detection)
        probs = masks.assemble_masks(out["proto"], dets["coefs"], dets["boxes"], shape[1], shape[2])
        probs = probs * tf.cast(valid, tf.float32)[:, :, None, None]
        b = dets["boxes"]
        x1, x2 = masks.sanitize_coordinates(b[..., 0], b[..., 2], 1)
        y1, y2 = masks.sanitize_coordinates(b[..., 1], b[..., 3], 1)
        boxes = tf.stack([y1, x1, y2, x2], axis=-1) * tf.cast(valid, tf.float32)[..., None]
        classes = tf.where(valid, tf.gather(category_ids, dets["classes"] + 1), 0)
        return {"num_detections": num, "detection_boxes": boxes, "detection_classes": classes,
                "detection_scores": dets["scores"], "detection_masks": probs}

    module.serve = tf.function(run, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])

    def run_bytes(image_bytes):
        image = decode_image_rgb(image_bytes)
        return run(image[None])

    module.serve_bytes = tf.function(run_bytes, input_signature=[tf.TensorSpec([], tf.string, name="image_bytes")])
    return module


def export(cfg, checkpoint, export_dir, label_map_path=None, jit=True) -> str:
    """Load weights, build the serving module and write the SavedModel + label_map.json; returns ``export_dir``.

    Raises:
      yolact.predictor.InputError: unusable checkpoint or label map.
    """
    import tensorflow as tf

    from yolact.ops.label_map import write_label_map
    from yolact.predictor import load_model, resolve_label_map

    label_map = resolve_label_map(label_map_path, cfg)
    model = load_model(cfg, checkpoint)
    module = build_serving_module(model, cfg, label_map, jit)
    signatures = {"serving_default": module.serve.get_concrete_function(),
                  "serving_bytes": module.serve_bytes.get_concrete_function()}
    tf.saved_model.save(module, export_dir, signatures=signatures)
    write_label_map(os.path.join(export_dir, "label_map.json"), label_map)
    return export_dir


def main(argv):
    if len(argv) > 1:
        print(f"export_saved_model: error: unexpected arguments {argv[1:]}", file=sys.stderr)
        raise SystemExit(1)
    for name in ("checkpoint", "export_dir"):
        if not getattr(FLAGS, name):
            print(f"export_saved_model: error: -{name} is required", file=sys.stderr)
            raise SystemExit(1)
    from yolact.predictor import inference_config

    try:
        cfg = inference_config(FLAGS.config, FLAGS.label_map, FLAGS.img_size)
        export(cfg, FLAGS.checkpoint, FLAGS.export_dir, FLAGS.label_map, FLAGS.xla_nms)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"export_saved_model: error: {str(e).splitlines()[0]}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"exported {cfg.name} ({cfg.img_size}x{cfg.img_size}) to {FLAGS.export_dir}: signatures serving_default "
          "(images uint8 [B,H,W,3]) and serving_bytes (image_bytes string)")


if __name__ == "__main__":
    app.run(main)
