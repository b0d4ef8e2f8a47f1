"""YOLACT inference: images, folders, video / webcam, COCO evaluation and benchmark (original: eval.py).

Examples (``-checkpoint`` is a run folder with config.json + label_map.json, or a checkpoint prefix / .weights.h5
inside one; ``-config`` / ``-img_size`` / ``-label_map`` are only needed for weights without config.json, e.g.
converted original weights, and must agree with config.json when it exists)::

    python inference.py -checkpoint weights/my_run -image photo.jpg:photo_out.png
    python inference.py -checkpoint weights/my_run -images in_dir:out_dir -score_threshold 0.3 -top_k 15
    python inference.py -checkpoint weights/my_run -video in.avi:out.mp4
    python inference.py -checkpoint weights/my_run -images in_dir:out_dir -save coco,labelme,png
    python inference.py -checkpoint weights/my_run -eval \
        -annotations_file annotations/instances_val2017.json -image_dir val2017 -output_dir results/
    python inference.py -config yolact_resnet50 -checkpoint r50.weights.h5 -benchmark -image_dir val2017 \
        -max_images 100
    python inference.py -checkpoint weights/my_run -precision bfloat16 -image photo.jpg
    python inference.py -model exported/mine/yolact_int8.tflite -num_threads 2 -eval \
        -annotations_file annotations/instances_val2017.json -image_dir val2017

``-model`` runs an export instead of the weights (yolact/runtimes.py): a SavedModel folder, a ``.tflite``
(LiteRT, XNNPACK), a ``.onnx`` (onnxruntime CPU) or an OpenVINO IR ``.xml`` (OpenVINO CPU; ``-openvino`` of
export_saved_model.py), with config.json / label_map.json of its folder. Every form
runs the same steps (resize in float, the graph, the host step to the photo's size), so one photo gives the same
detections through ``-checkpoint`` and every export. The exported models always use per-class Fast NMS
(-fast_nms / -cross_class_nms do not apply); a .tflite / .onnx whose input size differs from config.json is a
one-line error (exit 2).

Errors are one line ``inference.py: error: ...`` (utils/cli.py): exit 2 for unusable flags or inputs (a
contradicting -img_size, a missing image, -eval with none of the annotated images found: then no metrics.json is
written), 1 for a fault at run time (a written video that does not decode to the frames written, a full disk).
Checked before anything is loaded: numbers (-top_k, -max_images, -max_frames, -num_threads >= 1, -score_threshold
in [0, 1]); outputs that are, contain or lie inside an input (utils/paths.py; a new file inside the -checkpoint /
-model folder is fine); an -image output extension OpenCV cannot write. ``-images`` writes ``<stem>.png``, or
``<name>.png`` for files whose stem another file shares (``a.jpg`` and ``a.png`` -> ``a.jpg.png``, ``a.png.png``).
Images and json files are written atomically (utils/atomic.py); a ``-tfrecord_pattern`` folder means its
``val-*`` shards (a folder of train shards only is refused).

Display modes draw the best ``-top_k`` detections with score > ``-score_threshold`` (the original's defaults 5 and
0); ``-eval`` uses every detection, as the original's COCO evaluation. The displayed score (drawn, printed by
``-image``, thresholded, sorted for ``-top_k``) is, as the original's prep_display, the box (class) score for YOLACT
and box score x predicted mask IoU for YOLACT++ (utils/visualize.py ``display_order``); only the detections shown
(at most ``-top_k``, for YOLACT++ the best by that score) get masks at the image's size. ``-eval``
scores box AP with the box scores and mask AP with the mask scores (utils/coco_eval.py). ``-save`` writes the
detections shown as files (utils/result_formats.py).

``-video`` (a file or a webcam index) runs utils/video.py's pipeline: decoding, the graph, masks + drawing and
encoding overlap in threads, frames are written in order to a temporary beside the output, renamed when closed;
Ctrl-C closes the file with the frames written so far (exit 0, the summary says "interrupted"). On ``-video`` a
``.tflite`` runs with every core unless ``-num_threads`` says otherwise, a ``.onnx`` without spin-waiting.
"""

from __future__ import annotations

import os
import time

from utils import cli

cli.quiet_startup(__name__)  # before anything imports TensorFlow (acts only when run as a program)

from absl import flags

from utils.cli import FaultError, UserError, run
from utils.flags_util import define_model_flags

FLAGS = flags.FLAGS
define_model_flags()
flags.DEFINE_string("image", None, "in.jpg[:out.png]: one image (default output: <output_dir>/<name>.png)")
flags.DEFINE_string("images", None, "in_dir:out_dir: every image of a folder")
flags.DEFINE_string("video", None, "in.avi[:out.mp4], or a webcam index (default output: <output_dir>/<name>.mp4)")
flags.DEFINE_integer("max_frames", None, "stop a video after this many frames", lower_bound=1)
flags.DEFINE_float("score_threshold", 0.0, "display: draw detections with score above this", lower_bound=0.0,
                   upper_bound=1.0)
flags.DEFINE_integer("top_k", 5, "display: draw at most this many detections (the best ones)", lower_bound=1)
flags.DEFINE_boolean("fast_nms", True, "Fast NMS (false: traditional NMS via tf.image.non_max_suppression)")
flags.DEFINE_boolean("cross_class_nms", False, "cross-class Fast NMS instead of per-class")
flags.DEFINE_boolean("display_masks", True, "draw masks")
flags.DEFINE_boolean("display_bboxes", True, "draw boxes")
flags.DEFINE_boolean("display_text", True, "draw class names")
flags.DEFINE_boolean("display_scores", True, "draw scores next to class names")
flags.DEFINE_boolean("eval", False, "COCO evaluation (needs -annotations_file and -image_dir or -tfrecord_pattern)")
flags.DEFINE_string("annotations_file", None, "COCO json of the evaluation images")
flags.DEFINE_string("image_dir", None, "folder of the evaluation / benchmark images")
flags.DEFINE_string("tfrecord_pattern", None, "val TFRecords (glob, or a directory: its *.tfrecord* files)")
flags.DEFINE_string("output_dir", "results", "where outputs, detections.json and metrics.json go")
flags.DEFINE_integer("max_images", None, "evaluate / benchmark at most this many images", lower_bound=1)
flags.DEFINE_string("model", None, "instead of -checkpoint: an export of export_saved_model.py, a SavedModel folder, "
                    "a .tflite (LiteRT), a .onnx (onnxruntime) or an OpenVINO .xml; config.json / label_map.json "
                    "beside it")
flags.DEFINE_integer("num_threads", None, "-model .tflite / .onnx / .xml: CPU threads (default: the runtime's; "
                     "-video .tflite: every core)", lower_bound=1)
flags.DEFINE_enum("precision", "float32", ["float32", "bfloat16"], "-checkpoint or -model .xml (OpenVINO): "
                  "compute dtype (bfloat16 in-process: Keras mixed_bfloat16 policy, float32 weights, outputs and NMS; "
                  "OpenVINO: its bf16 inference precision)")
flags.DEFINE_string("save", None, "-image / -images / -video: also save the detections shown, comma-separated "
                    "coco,labelme,png (utils/result_formats.py); -annotations_file: COCO results use its image ids")
flags.DEFINE_boolean("benchmark", False, "print per-stage ms and FPS (data loading excluded, first 2 frames skipped)")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def _split(value: str):
    src, _, dst = value.partition(":")
    return src, (dst or None)


def _draw(predictor, image, result):
    from utils.visualize import draw_detections

    return draw_detections(image, result, predictor.label_map.names, FLAGS.score_threshold, FLAGS.top_k,
                           FLAGS.display_masks, FLAGS.display_bboxes, FLAGS.display_text, FLAGS.display_scores)


def _display_limits(predictor):
    """Restrictions applied before masks are assembled, so that at most -top_k masks are upsampled: the box score
    threshold (the original's postprocess(score_threshold) before re-scoring) and the -top_k shown, for YOLACT++
    the best by the displayed score (box score x mask IoU: Runner.finish ``by_display_score``)."""
    return {"score_threshold": FLAGS.score_threshold, "max_detections": FLAGS.top_k,
            "by_display_score": bool(predictor.cfg.model.use_maskiou)}


def _saver(predictor, coco_path):
    """The -save writer of this run (utils/result_formats.py), None without -save."""
    if not FLAGS.save:
        return None
    from utils.result_formats import ResultSaver, parse_formats

    return ResultSaver(parse_formats(FLAGS.save), predictor.label_map.names, FLAGS.score_threshold, FLAGS.top_k,
                       coco_path, FLAGS.annotations_file)


def _write_image(path, rgb):
    """Encode by ``path``'s extension (checked by :func:`_check_outputs`) and write atomically (utils/atomic.py)."""
    import cv2

    from utils.atomic import atomic_file

    ok, encoded = cv2.imencode(os.path.splitext(path)[1], rgb[..., ::-1])
    if not ok:
        raise OSError(f"cannot encode {path}")
    with atomic_file(path, "wb") as f:
        f.write(encoded.tobytes())


def _image_output(spec):
    src, dst = _split(spec)
    return dst or os.path.join(FLAGS.output_dir, os.path.splitext(os.path.basename(src))[0] + ".png")


def _folder_outputs(src):
    """[(input name, output name)] of ``-images``: ``<stem>.png``, or ``<name>.png`` (the extension kept) for names
    whose stem another file of the folder shares (``a.jpg`` and ``a.png`` -> ``a.jpg.png`` and ``a.png.png``).

    Raises:
      UserError: two inputs would still map to one output name (names them).
    """
    names = sorted(n for n in os.listdir(src) if not n.startswith(".") and os.path.isfile(os.path.join(src, n)))
    stems = {}
    for name in names:
        stems.setdefault(os.path.splitext(name)[0], []).append(name)
    pairs = [(n, (os.path.splitext(n)[0] if len(stems[os.path.splitext(n)[0]]) == 1 else n) + ".png") for n in names]
    seen = {}
    for name, out in pairs:
        if out in seen:
            raise UserError(f"-images: {seen[out]} and {name} of {src} would both be written as {out}: rename one")
        seen[out] = name
    return pairs


def _check_outputs(mode):
    """Output paths checked before anything is loaded: never an input (utils/paths.py), an image extension OpenCV
    can write, no two inputs of -images on one output name.

    Raises:
      UserError: one line naming the paths.
    """
    import functools
    import glob

    import cv2

    from utils import paths

    model = [("-checkpoint", FLAGS.checkpoint), ("-model", FLAGS.model)]
    # a new file inside a run / export folder harms nothing; the folder itself or one above it is refused
    check_output_not_input = functools.partial(paths.check_output_not_input, inside_ok=("-checkpoint", "-model"))
    if mode == "image":
        src, dst = _split(FLAGS.image)
        dst = _image_output(FLAGS.image)
        if not cv2.haveImageWriter(dst):
            raise UserError(f"cannot write an image named {dst}: unknown extension (use .png, .jpg, .bmp, ...)")
        check_output_not_input(dst, [("-image", src)] + model, "-image output" if ":" in FLAGS.image else "output")
    elif mode == "images":
        src, dst = _split(FLAGS.images)
        if not dst:
            raise UserError("-images needs in_dir:out_dir")
        if not os.path.isdir(src):
            raise UserError(f"input folder not found: {src}")
        check_output_not_input(dst, [("-images", src)] + model, "-images output folder")
        _folder_outputs(src)
    elif mode == "video":
        src, dst = _split(FLAGS.video)
        if not src.isdigit():
            check_output_not_input(dst or os.path.join(FLAGS.output_dir, os.path.splitext(os.path.basename(src))[0]
                                                       + ".mp4"), [("-video", src)] + model,
                                   "-video output" if dst else "output")
    elif mode == "eval":
        records = glob.glob(_tfrecord_pattern(FLAGS.tfrecord_pattern)) if FLAGS.tfrecord_pattern else []
        check_output_not_input(FLAGS.output_dir, [("-annotations_file", FLAGS.annotations_file),
                                                  ("-image_dir", FLAGS.image_dir)]
                               + [("-tfrecord_pattern", r) for r in records] + model, "-output_dir")


def run_image(predictor, spec):
    from yolact.ops.image_io import read_image

    src, _ = _split(spec)
    image = read_image(src)
    result = predictor.predict(image, **_display_limits(predictor))
    dst = _image_output(spec)
    _write_image(dst, _draw(predictor, image, result))
    saver = _saver(predictor, os.path.splitext(dst)[0] + ".results.json")
    if saver:
        saver.add_image(result, os.path.splitext(dst)[0], src, 1)
        saver.close()
    from utils.visualize import display_order

    names = predictor.label_map.names
    rows, scores = display_order(result, FLAGS.score_threshold, FLAGS.top_k)
    shown = ", ".join(f"{names[result['classes'][i]]} {s:.2f}" for i, s in zip(rows, scores))
    print(f"{src}: {len(rows)} detections" + (f": {shown}" if shown else "") + f" -> {dst}")


def run_folder(predictor, spec):
    from tqdm import tqdm

    from yolact.ops.image_io import ImageError, read_image

    src, dst = _split(spec)
    outputs = dict(_folder_outputs(src))  # flags and names checked by _check_outputs
    done, skipped = 0, []
    saver = _saver(predictor, os.path.join(dst, "results.json"))
    with tqdm(sorted(outputs), desc="images", unit="img") as bar:
        for name in bar:
            try:
                image = read_image(os.path.join(src, name))
            except ImageError as e:
                skipped.append((name, e))
                continue
            result = predictor.predict(image, **_display_limits(predictor))
            _write_image(os.path.join(dst, outputs[name]), _draw(predictor, image, result))
            if saver:  # per-image files named as the overlay, without its .png
                saver.add_image(result, os.path.join(dst, outputs[name][:-len(".png")]), os.path.join(src, name),
                                done + len(skipped) + 1)
            done += 1
    if saver:
        saver.close()
    for name, e in skipped:  # after the bar has closed: no interleaving with it
        print(f"skipped {name}: {e}")
    print(f"processed {done} images into {dst}; skipped {len(skipped)}"
          + (f": {', '.join(n for n, _ in skipped)}" if skipped else ""))
    if done == 0:
        raise UserError(f"no readable image in {src}")


def count_frames(path) -> int:
    """Frames a video decodes to, counted by reading (0 if it cannot be opened): utils/video.py."""
    from utils.video import count_frames as count

    return count(path)


def run_video(predictor, spec):
    """-video: the pipelined loop of utils/video.py (decode, inference, masks + drawing, encode in threads), the
    file written to a temporary beside the destination and renamed when closed, also after Ctrl-C."""
    import cv2

    from utils.video import process_video

    src, dst = _split(spec)
    webcam = src.isdigit()
    if not webcam and not os.path.isfile(src):
        raise UserError(f"video not found: {src}")
    with cli.native_noise_filtered():  # OpenCV's "[ WARN:0@0.1] ... can't open camera by index" lines
        cap = cv2.VideoCapture(int(src) if webcam else src)
        opened = cap.isOpened()
    if not opened:
        raise UserError(f"cannot open {'camera' if webcam else 'video'} {src}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    if FLAGS.max_frames:
        total = min(total, FLAGS.max_frames) if total else FLAGS.max_frames
    name = f"webcam{src}" if webcam else os.path.splitext(os.path.basename(src))[0]
    dst = dst or os.path.join(FLAGS.output_dir, name + ".mp4")
    saver = _saver(predictor, os.path.splitext(dst)[0] + ".results.json")
    stem = os.path.splitext(dst)[0]  # the .avi fallback keeps the stem
    on_frame = (lambda index, rgb, result: saver.add_frame(result, stem, index, rgb)) if saver else None
    video = process_video(predictor, cap, dst, fps, lambda rgb, result: _draw(predictor, rgb, result),
                          max_frames=FLAGS.max_frames, total=total, select=_display_limits(predictor),
                          on_frame=on_frame)
    if saver:
        saver.close()
    if video.frames_written == 0:
        raise UserError(f"no frame could be read from {src}")
    readable = count_frames(video.path)
    detections = video.detections
    print(f"wrote {video.path}: {video.frames_written} frames at {fps:.2f} fps"
          + (" (interrupted)" if video.interrupted else "") + f"; the file decodes to {readable} frames; "
          f"detections per frame: mean {sum(detections) / len(detections):.1f}, min {min(detections)}, "
          f"max {max(detections)}; {video.frames_written / video.seconds:.1f} frames/s")
    if readable != video.frames_written:
        raise FaultError(f"{video.path} decodes to {readable} frames, {video.frames_written} were written")


def _tfrecord_pattern(value):
    """A glob as given; a folder: its ``val-*`` shards (data/coco_tfrecord_creator.py), else its ``*.tfrecord*``
    files when none of them is a ``train-*`` shard.

    Raises:
      UserError: a folder with train shards but no val shard (evaluating training images is never what is meant).
    """
    if not (value and os.path.isdir(value)):
        return value
    import glob

    if glob.glob(os.path.join(value, "val-*.tfrecord*")):
        return os.path.join(value, "val-*.tfrecord*")
    if glob.glob(os.path.join(value, "train-*.tfrecord*")):
        raise UserError(f"-tfrecord_pattern {value} holds train shards but no val-*.tfrecord shard: give a glob of "
                        "the evaluation records")
    return os.path.join(value, "*.tfrecord*")


def _check_eval_flags():
    if not FLAGS.annotations_file:
        raise UserError("-eval needs -annotations_file")
    if bool(FLAGS.image_dir) == bool(FLAGS.tfrecord_pattern):
        raise UserError("-eval needs exactly one of -image_dir or -tfrecord_pattern")


def run_eval(predictor):
    from utils.coco_eval import evaluate_dataset

    _check_eval_flags()
    metrics = evaluate_dataset(predictor, FLAGS.annotations_file, image_dir=FLAGS.image_dir,
                               tfrecord_pattern=_tfrecord_pattern(FLAGS.tfrecord_pattern), output_dir=FLAGS.output_dir,
                               max_images=FLAGS.max_images)
    print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    print(f"wrote detections.json and metrics.json to {FLAGS.output_dir} ({metrics['images_evaluated']} of "
          f"{metrics['images_in_annotations']} images evaluated)")


def run_benchmark(predictor):
    """Per-stage means over the images after the first 2 (original eval.py --benchmark)."""
    from yolact.ops.image_io import ImageError, read_image

    folder = FLAGS.image_dir or (FLAGS.images and _split(FLAGS.images)[0])
    if not folder or not os.path.isdir(folder):
        raise UserError("-benchmark needs -image_dir (a folder of images)")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    n_images = FLAGS.max_images or 100
    totals, count = {}, 0
    for i, name in enumerate(names[: n_images + 2]):
        try:
            image = read_image(os.path.join(folder, name))  # data loading: not timed
        except ImageError as e:
            print(f"skipped {name}: {e}")
            continue
        timings = {}
        predictor.predict(image, timings)
        if i >= 2:
            for k, v in timings.items():
                totals[k] = totals.get(k, 0.0) + v
            count += 1
    if count == 0:
        raise UserError(f"need more than 2 readable images in {folder}")
    stages = [k for k in ("preprocess", "network", "masks") if k in totals]
    ms = {k: 1000 * totals[k] / count for k in stages}
    total = sum(ms.values())
    print(f"benchmark over {count} images ({predictor.cfg.name} at {predictor.cfg.img_size_text}): "
          + ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items()) + f"; total {total:.1f} ms = {1000 / total:.2f} FPS")


def main(argv):
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}")
    modes = [m for m in ("image", "images", "video") if getattr(FLAGS, m)] + \
        [m for m in ("eval", "benchmark") if getattr(FLAGS, m)]
    if len(modes) != 1:
        raise UserError("choose exactly one of -image, -images, -video, -eval, -benchmark")
    if FLAGS.save:  # checked before the model loads
        from utils.result_formats import parse_formats

        if modes[0] not in ("image", "images", "video"):
            raise UserError("-save applies to -image, -images and -video")
        try:
            parse_formats(FLAGS.save)
        except ValueError as e:
            raise UserError(str(e)) from None
    if bool(FLAGS.checkpoint) == bool(FLAGS.model):
        raise UserError("give exactly one of -checkpoint (weights) or -model (an exported model)")
    if FLAGS.model and FLAGS.precision != "float32" and not FLAGS.model.lower().endswith(".xml"):
        raise UserError("-precision applies to -checkpoint and an OpenVINO -model .xml; this exported model has its "
                        "own precision")
    if modes[0] == "eval":
        _check_eval_flags()
    from utils.atomic import DiskFullError

    try:
        if FLAGS.model:
            from yolact.runtimes import model_kind

            model_kind(FLAGS.model)  # missing / unknown type: one line before anything is loaded
        _check_outputs(modes[0])
        from yolact.predictor import Predictor

        if FLAGS.model:
            from yolact.checkpoint import resolve_run
            from yolact.runtimes import open_model

            cfg, label_map, _ = resolve_run(FLAGS.model, FLAGS.config, FLAGS.img_size, FLAGS.label_map)
            threads, spinning = FLAGS.num_threads, True
            if modes[0] == "video":  # the graph shares the cores with the pipeline's other stages (utils/video.py)
                from utils.video import graph_threads

                spinning = False
                if threads is None and model_kind(FLAGS.model) == "tflite":
                    threads = graph_threads()
            with cli.native_noise_filtered():  # LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate"
                predictor = open_model(FLAGS.model, cfg, label_map, threads, spinning, FLAGS.precision)
        else:
            nms_type = ("cross_class" if FLAGS.cross_class_nms else "fast") if FLAGS.fast_nms else "traditional"
            predictor = Predictor.from_checkpoint(FLAGS.checkpoint, FLAGS.config, FLAGS.img_size, FLAGS.label_map,
                                                  nms_type=nms_type, precision=FLAGS.precision)
        t0 = time.perf_counter()
        {"image": lambda: run_image(predictor, FLAGS.image), "images": lambda: run_folder(predictor, FLAGS.images),
         "video": lambda: run_video(predictor, FLAGS.video), "eval": lambda: run_eval(predictor),
         "benchmark": lambda: run_benchmark(predictor)}[modes[0]]()
        print(f"done in {time.perf_counter() - t0:.1f} s")
    except DiskFullError as e:  # the file being written keeps its previous content (utils/atomic.py)
        raise FaultError(str(e)) from None
    except (ValueError, OSError) as e:  # RunFilesError, CheckpointError, ImageError, NoImagesEvaluated, missing files
        raise UserError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None


if __name__ == "__main__":
    run(main)
