"""End-to-end video frames/s per model form: the pipelined path (utils/video.py) next to the graph-only rate and the
previous sequential loop, all in one process, interleaved.

For each form (``checkpoint``: the in-process Predictor of a run folder; ``saved_model``, ``float32``, ``int8``
(.tflite), ``onnx``, ``openvino`` / ``openvino_bfloat16`` (.xml) of an export folder) and each thread count of
``-num_threads`` (LiteRT / onnxruntime; the other forms use TensorFlow's or OpenVINO's own pools), three rates on
the first ``-frames`` frames of ``-video`` (decode -> inference -> masks -> overlay -> encode to .mp4):

* ``graph``: ``Runner.run`` alone on one preprocessed frame, repeated (the form's network + NMS + masks graph);
* ``sequential``: the loop inference.py ran before the pipeline (read, predict, draw, write one frame after the
  other), kept here as the reference: same selection (-top_k masks) and drawing as the pipeline;
* ``pipelined``: utils/video.py ``process_video`` (what ``inference.py -video`` runs).

The variants are interleaved (graph, sequential, pipelined, then again for ``-repeats`` rounds) and the best round of
each is reported, with the 1-minute load average before and after. The numbers are noisy on a shared machine; the
ratio ``pipelined / graph`` is the one to watch.

Example (one command each; the lead's quiet runs)::

    python benchmarks/video.py -run quickstart_out/weights/sample -export exports/quickstart
    python benchmarks/video.py -run weights/r50 -export exports/r50 -forms int8,float32 \
        -frames 60
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils import cli  # noqa: E402

cli.quiet_startup(__name__)

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("run", None, "run folder (config.json, label_map.json, weights) for the 'checkpoint' form")
flags.DEFINE_string("export", None, "export folder (SavedModel, yolact_float32/int8.tflite, yolact.onnx)")
flags.DEFINE_list("forms", ["checkpoint", "saved_model", "float32", "int8", "onnx"], "forms to measure (also "
                  "openvino, openvino_bfloat16: the export's yolact_openvino.xml)")
flags.DEFINE_list("num_threads", ["default", "1", "2"], "LiteRT / onnxruntime threads to try ('default': the "
                  "runtime's own choice)")
flags.DEFINE_list("spinning", ["off"], "onnxruntime thread spin-waiting to try: on (its default), off (the video "
                  "path's)")
flags.DEFINE_string("video", None, "input video (default: ../shared/data/media/vtest.avi)")
flags.DEFINE_integer("frames", 150, "frames per end-to-end run")
flags.DEFINE_integer("graph_runs", 30, "Runner.run calls per graph-only measurement")
flags.DEFINE_integer("repeats", 2, "interleaved rounds; the best of each variant is reported")
flags.DEFINE_integer("top_k", 5, "detections drawn (and masks upsampled) per frame")
flags.DEFINE_integer("post_workers", None, "utils/video.py post threads (default: its DEFAULT_POST_WORKERS)")
flags.DEFINE_list("stage_nice", ["default"], "utils/video.py stage_nice values to try ('default': its "
                  "DEFAULT_STAGE_NICE; 0: every thread at the same priority)")


def sequential(runner, src, dst, frames, select, draw):
    """The previous inference.py run_video loop (reference, not in the library): one frame after the other."""
    import cv2

    cap = cv2.VideoCapture(src)
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    writer, n = None, 0
    t0 = time.perf_counter()
    while n < frames:
        ok, frame = cap.read()
        if not ok:
            break
        rgb = frame[..., ::-1].copy()
        if writer is None:
            writer = cv2.VideoWriter(dst, cv2.VideoWriter_fourcc(*"mp4v"), fps, (rgb.shape[1], rgb.shape[0]))
        result = runner.predict(rgb, **select)
        writer.write(draw(rgb, result)[..., ::-1].copy())
        n += 1
    writer.release()
    cap.release()
    return n / (time.perf_counter() - t0)


def pipelined(runner, src, dst, frames, select, draw, nice=None):
    import cv2

    from utils.video import DEFAULT_POST_WORKERS, DEFAULT_STAGE_NICE, process_video

    cap = cv2.VideoCapture(src)
    result = process_video(runner, cap, dst, cap.get(cv2.CAP_PROP_FPS) or 30.0, draw, max_frames=frames,
                           select=select, post_workers=FLAGS.post_workers or DEFAULT_POST_WORKERS, progress=False,
                           stage_nice=DEFAULT_STAGE_NICE if nice is None else nice)
    busy = ", ".join(f"{k} {1000 * v / max(result.frames_written, 1):.0f}" for k, v in result.busy.items())
    return result.frames_written / result.seconds, busy


def graph_only(runner, src, runs):
    import cv2

    from yolact.ops.preprocess import resize_image

    cap = cv2.VideoCapture(src)
    ok, frame = cap.read()
    cap.release()
    rgb = frame[..., ::-1].copy()
    inputs = rgb[None] if runner.resizes_in_graph else resize_image(rgb, runner.cfg)
    h, w = rgb.shape[:2]
    for _ in range(20 if runner.kind == "in_process" else 3):  # the Predictor freezes its graph after 16 images
        runner.run(inputs, h, w)
    t0 = time.perf_counter()
    for _ in range(runs):
        runner.run(inputs, h, w)
    return runs / (time.perf_counter() - t0)


def load(form, threads, spinning=True):
    from yolact.checkpoint import resolve_run
    from yolact.predictor import Predictor
    from yolact.runtimes import open_model

    if form == "checkpoint":
        return Predictor.from_checkpoint(FLAGS.run)
    path = {"saved_model": FLAGS.export, "float32": os.path.join(FLAGS.export, "yolact_float32.tflite"),
            "int8": os.path.join(FLAGS.export, "yolact_int8.tflite"),
            "onnx": os.path.join(FLAGS.export, "yolact.onnx"),
            "openvino": os.path.join(FLAGS.export, "yolact_openvino.xml"),
            "openvino_bfloat16": os.path.join(FLAGS.export, "yolact_openvino.xml")}[form]
    run = resolve_run(path, None, None, None)
    with cli.native_noise_filtered():
        if form.startswith("openvino"):  # inference.py -model yolact_openvino.xml [-precision bfloat16]
            return open_model(path, run.cfg, run.label_map, threads,
                              precision="bfloat16" if form == "openvino_bfloat16" else "float32")
        return open_model(path, run.cfg, run.label_map, threads, spinning)


def main(argv):
    from utils.visualize import draw_detections

    src = FLAGS.video or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                                      "data", "media", "vtest.avi")
    variants = []
    for form in FLAGS.forms:
        if form == "checkpoint" and not FLAGS.run or form != "checkpoint" and not FLAGS.export:
            continue
        settings = [(t, "") for t in FLAGS.num_threads] if form in ("float32", "int8") else [("default", "")]
        if form == "onnx":
            settings = [(t, s) for t in FLAGS.num_threads for s in FLAGS.spinning]
        for t, spin in settings:
            threads = None if t == "default" else int(t)
            runner = load(form, threads, spin != "off")
            names = runner.label_map.names
            select = {"score_threshold": 0.0, "max_detections": FLAGS.top_k,
                      "by_display_score": bool(runner.cfg.model.use_maskiou)}

            def draw(rgb, result, names=names):
                return draw_detections(rgb, result, names, 0.0, FLAGS.top_k)

            for nice in FLAGS.stage_nice:
                variants.append((f"{form} threads={t}" + (f" spin={spin}" if spin else "")
                                 + ("" if nice == "default" else f" nice={nice}"), runner, select, draw,
                                 None if nice == "default" else int(nice)))
    if not variants:
        raise app.UsageError("nothing to measure: give -run and / or -export")
    load_before = os.getloadavg()[0]
    best = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(FLAGS.repeats):
            for name, runner, select, draw, nice in variants:
                g = graph_only(runner, src, FLAGS.graph_runs)
                s = sequential(runner, src, os.path.join(tmp, "s.mp4"), FLAGS.frames, select, draw)
                p, busy = pipelined(runner, src, os.path.join(tmp, "p.mp4"), FLAGS.frames, select, draw, nice)
                print(f"round {round_ + 1} {name}: graph {g:.1f}/s, sequential {s:.1f}/s, pipelined {p:.1f}/s "
                      f"(stage ms/frame: {busy}); load {os.getloadavg()[0]:.2f}", flush=True)
                b = best.setdefault(name, [0.0, 0.0, 0.0])
                best[name] = [max(b[0], g), max(b[1], s), max(b[2], p)]
    cfg = variants[0][1].cfg
    print(f"\n{cfg.name} at {cfg.img_size_text} px, {FLAGS.frames} frames of {os.path.basename(src)}, top_k {FLAGS.top_k}, "
          f"{os.cpu_count()} CPUs, load average (1 min) {load_before:.2f} before, {os.getloadavg()[0]:.2f} after; "
          f"best of {FLAGS.repeats} interleaved rounds, frames/s:")
    print(f"{'form':30s} {'graph only':>10s} {'sequential':>10s} {'pipelined':>10s} {'pipe/graph':>10s}")
    for name, (g, s, p) in best.items():
        print(f"{name:30s} {g:10.1f} {s:10.1f} {p:10.1f} {p / g:10.2f}")


if __name__ == "__main__":
    app.run(main)
