"""Run one image through an exported YOLACT SavedModel with TensorFlow, NumPy and OpenCV only (no project code).

Proves that serving needs nothing of this repository: it loads the SavedModel written by export_saved_model.py,
calls its ``serving_default`` signature, prints the detections and writes an overlay.

    python scripts/saved_model_predict.py --saved_model quickstart_out/saved_model \
        --image photo.jpg --output photo_sm.png [--score_threshold 0.3] [--top_k 10]

Signature used (see export_saved_model.py): ``images`` uint8 [1, H, W, 3] RGB in; out ``num_detections`` int32
[1], ``detection_boxes`` float32 [1, D, 4] normalized ``[ymin, xmin, ymax, xmax]``, ``detection_classes`` int32
[1, D] dataset category ids, ``detection_scores`` float32 [1, D], ``detection_masks`` float32 [1, D, H, W]
probabilities at input resolution (> 0.5 is the mask). Category names come from ``label_map.json`` next to the
SavedModel when present.

Errors (missing SavedModel / image, unreadable image, missing signature) are one line on stderr, exit 2 (the
project's user-error status; this script does not import utils/cli.py so that it runs without the project).
"""

import json
import os
import sys

import cv2
import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("saved_model", None, "folder written by export_saved_model.py", required=True)
flags.DEFINE_string("image", None, "input image (anything OpenCV reads)", required=True)
flags.DEFINE_string("output", None, "overlay output path (.png / .jpg)", required=True)
flags.DEFINE_float("score_threshold", 0.3, "print/draw detections above this score")
flags.DEFINE_integer("top_k", 10, "print/draw at most this many detections")


def fail(msg):
    print(f"saved_model_predict.py: error: {msg}", file=sys.stderr)
    sys.exit(2)


def load_names(saved_model_dir):
    """category id -> name from label_map.json next to the SavedModel ({} when absent or unreadable)."""
    path = os.path.join(saved_model_dir, "label_map.json")
    try:
        with open(path) as f:
            return {int(c["id"]): str(c["name"]) for c in json.load(f)["categories"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def color_for(i):
    """A fixed BGR colour per detection rank."""
    palette = [(244, 67, 54), (33, 150, 243), (76, 175, 80), (255, 152, 0), (156, 39, 176), (0, 188, 212),
               (255, 235, 59), (121, 85, 72), (233, 30, 99), (63, 81, 181)]
    r, g, b = palette[i % len(palette)]
    return (b, g, r)


def draw(image_bgr, boxes, classes, scores, masks, names, alpha=0.45):
    """Overlay masks (probability > 0.5), boxes and labels on a copy of ``image_bgr`` (uint8 [H, W, 3])."""
    out = image_bgr.astype(np.float32)
    h, w = image_bgr.shape[:2]
    for i in range(len(scores)):
        m = masks[i] > 0.5
        out[m] = out[m] * (1 - alpha) + np.array(color_for(i), np.float32) * alpha
    out = out.clip(0, 255).astype(np.uint8)
    for i in range(len(scores)):
        y1, x1, y2, x2 = boxes[i]
        p1 = (int(round(x1 * w)), int(round(y1 * h)))
        p2 = (int(round(x2 * w)), int(round(y2 * h)))
        cv2.rectangle(out, p1, p2, color_for(i), 2)
        text = f"{names.get(int(classes[i]), str(int(classes[i])))} {scores[i]:.2f}"
        cv2.putText(out, text, (p1[0], max(p1[1] - 4, 10)), cv2.FONT_HERSHEY_DUPLEX, 0.5, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return out


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}")
    args = FLAGS

    if not os.path.isfile(os.path.join(args.saved_model, "saved_model.pb")):
        fail(f"no SavedModel at {args.saved_model} (saved_model.pb missing)")
    if not os.path.isfile(args.image):
        fail(f"image not found: {args.image}")
    image_bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if image_bgr is None:
        fail(f"cannot decode image: {args.image}")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # 2 still shows "failed call to cuInit" on CPU machines
    import tensorflow as tf

    loaded = tf.saved_model.load(args.saved_model)
    if "serving_default" not in loaded.signatures:
        fail(f"{args.saved_model} has no serving_default signature")
    serve = loaded.signatures["serving_default"]
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    out = serve(images=tf.constant(rgb[None], tf.uint8))

    n = int(out["num_detections"][0])
    scores = out["detection_scores"][0, :n].numpy()
    keep = np.flatnonzero(scores > args.score_threshold)[: args.top_k]  # rows are sorted by score
    boxes = out["detection_boxes"][0].numpy()[keep]
    classes = out["detection_classes"][0].numpy()[keep]
    masks = out["detection_masks"][0].numpy()[keep]
    scores = scores[keep]
    names = load_names(args.saved_model)

    h, w = image_bgr.shape[:2]
    print(f"{args.image}: {n} detections, {len(keep)} with score > {args.score_threshold} "
          f"(boxes in pixels [x1, y1, x2, y2]):")
    for i in range(len(keep)):
        y1, x1, y2, x2 = boxes[i] * np.array([h, w, h, w])
        name = names.get(int(classes[i]), "?")
        print(f"  class_id={int(classes[i]):3d} ({name}) score={scores[i]:.3f} "
              f"box=[{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}] mask_px={int((masks[i] > 0.5).sum())}")

    overlay = draw(image_bgr, boxes, classes, scores, masks, names)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    if not cv2.imwrite(args.output, overlay):
        fail(f"cannot write {args.output}")
    print(f"overlay: {args.output}")


if __name__ == "__main__":
    app.run(main)
