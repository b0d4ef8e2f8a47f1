"""The ORIGINAL PyTorch YOLACT (github.com/dbolya/yolact) on this CPU, as a baseline: per image at batch 1 (for
benchmarks/cpu_runtimes.py and benchmarks/end_to_end_cpu.py), or, with ``-video``, its own ``eval.py evalvideo`` end to
end (for benchmarks/video.py). Prints one JSON line; asserts nothing about speed.

Runs in a separate environment with torch (CPU), numpy and opencv-python-headless, never in the project's (no torch
there). The original checkout is patched for a CPU-only torch and its model built exactly as
``../shared/fixtures/make_reference_r50.py`` does (``import_yolact``, ``net_from_npz``: ``yolact_resnet50_config``
(550 px) with the fixture's weights, eval.py's defaults: Fast NMS, no cross-class NMS).

Photos (default). Per image, as the original's eval.py evalimage / --benchmark: ``cv2.imread`` (not timed),
preprocess (``FastBaseTransform`` on the float BGR frame), network + Fast NMS (``net(batch)`` in eval mode, under
``torch.no_grad``), masks (``postprocess(..., crop_masks=True, score_threshold=0)``: every detection's mask at the
image's own size, then ``.cpu().numpy()``). One warm-up pass, then ``-rounds`` rounds over the photos; medians of
the per-round means.

Video (``-video PATH``). The original's own loop: eval.py is imported and ``evaluate(net, None)`` called, as its
``__main__`` does, with the command line ``--video=PATH:OUT.mp4 --video_multiframe=M`` (everything else eval.py's
defaults: top_k 5, score_threshold 0, Fast NMS, crop, masks + boxes + class/score text drawn, no FPS text, no
``--emulate_playback``), so evalvideo runs its ThreadPool (transform_frame -> eval_network -> prep_display, each
frame a task, the main thread advancing every frame one step per iteration), and its play_video task writes
``frame_buffer`` to ``cv2.VideoWriter(OUT, 'mp4v', round(fps), (W, H))``; OUT lies in a temporary folder
(removed at the end). Before the timed call, two untimed warm-up passes (``net`` + ``prep_display`` on the first
frame: TorchScript's profiling runs of the FPN happen there, not in the timed loop; benchmarks/video.py warms its
runners up too). Timed: from evalvideo's first ``read()`` of the video to its ``exit()`` after ``out.release()``
(the file is closed), the same span as utils/video.py ``process_video``'s ``seconds``; frames/s = frames written /
that span. ``call_s`` is the whole call (also opening the video and the writer). Then the output file is checked
with cv2: it must decode to exactly ``-frames`` frames, and each must differ from the input frame at the same index
(max channel difference > 40 on at least 0.05 % of its pixels: the overlay, not mp4v noise; the smallest such
fraction is printed), else the script fails. evalvideo's own stdout (its progress lines) is captured, only its
tail kept; a watchdog ends the run after ``-timeout`` seconds (one line, exit status 3). Missing video, checkout or
weights: one line, exit status 2.

Patches for the video mode, applied in this process only (eval.py on disk is not changed; the checkout's other
files carry make_reference_r50.py's PATCHES, applied in place by ``import_yolact``):

* eval.py's source, one text replacement before it is executed as module ``eval``: in prep_display,
  ``get_color(j, on_gpu=img_gpu.device.index)`` -> ``on_gpu=img_gpu.device``. On the CPU ``device.index`` is
  None, so get_color returns the colour as a Python tuple and ``.view(1, 1, 1, 3)`` raises AttributeError; keyed
  by the device, it returns the same colour as a float tensor / 255 on the CPU (same values, cached per device as
  on the GPU). The original was written for the GPU only (dbolya/yolact issue 47).
* ``PIL`` and ``matplotlib.pyplot``: eval.py imports them at the top; where they are not installed (this
  environment), empty stand-in modules are registered. Only evalimage / the dataset display use them (``plt``);
  ``Image`` is never used.
* ``torch.Tensor.cuda`` and ``torch.nn.Module.cuda`` return ``self`` during the call (restored after): evalvideo
  calls ``CustomDataParallel(net).cuda()``, ``torch.nn.DataParallel(FastBaseTransform()).cuda()`` and
  ``torch.from_numpy(frame).cuda().float()``, which raise on a CPU-only torch; the tensors and modules stay on the
  CPU. ``CustomDataParallel`` / ``DataParallel`` themselves are left as they are: without a CUDA device torch's
  ``DataParallel.forward`` calls the wrapped module directly (no scatter / gather).
* eval.py's ``cv2`` name (its module global only) is a stand-in that forwards everything to cv2 except two names:
  ``VideoCapture`` opens the real capture but ends after ``-frames`` frames and reports ``-frames`` as
  ``CAP_PROP_FRAME_COUNT`` (the bound; the frames are decoded from the unchanged file, no re-encoded copy, so the
  decoding cost is the one benchmarks/video.py pays), and ``destroyAllWindows`` is a no-op (headless OpenCV has no
  HighGUI and raises; evalvideo calls it after ``out.release()``).
* Not patched: ``torch.cuda.synchronize`` (evalvideo does not call it), ``torch.set_default_tensor_type`` (only in
  eval.py's ``__main__``, not run here; CPU float is torch's default), ``cudnn.benchmark = True`` (no effect on the
  CPU); ``exit()`` in evalvideo's cleanup is caught (SystemExit) after the file is closed.

Fairness of the video comparison (read before quoting the figure):

* Frames are not dropped when writing to a file: play_video writes every frame the loop puts in ``frame_buffer``,
  in order; its ``frame_time_stabilizer`` only paces the window display (and ``--emulate_playback``); in file mode
  it sleeps 1 ms per poll. The file holds every frame (checked).
* evalvideo stops when ``frames_displayed`` reaches ``CAP_PROP_FRAME_COUNT``. vtest.avi's header says 682 frames
  but it decodes 341: unbounded, the original never ends on it (after the last frame its main loop spins, printing
  its progress line without pause, ~40 MB/s, until killed: checked with a capture that reports one frame more than
  it delivers); here the count is the bound (-frames <= 341).
* The original's postprocess upsamples EVERY detection's mask (Fast NMS keeps ``max_num_detections`` = 100 per
  frame at score_threshold 0, with trained weights too: see reference_r50/README.md) to the full 1280x720 frame,
  crops and thresholds them, and only then keeps the top_k 5 for drawing; the project upsamples only the shown
  masks. That is the original's design, part of its cost, not a patch.
* Preprocessing is torch's (``FastBaseTransform``: float frame, bilinear resize to 550, normalise, BGR->RGB) in a
  pool thread; drawing blends the 5 masks in float torch on the 1280x720 frame, then boxes and text with cv2 at the
  frame's own size, as the project draws. Frames move through the stages in lock-step (each main-loop iteration
  waits for every stage), with ``video_multiframe`` frames batched through the network.
* The weights are the parity fixture's seeded random ones (no trained R50 here): the network's cost is the same,
  and the detection count (100 per frame) and drawn count (5) are what trained weights give.

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy opencv-python-headless
    git -C YOLACT_GIT archive 902073d414728280b496c5f0a59a8e8285b3c13c | tar -x -C /tmp/yolact_orig
    /tmp/torchenv/bin/python benchmarks/original_cpu.py -yolact /tmp/yolact_orig [-threads 2] [-rounds 3]
    /tmp/torchenv/bin/python benchmarks/original_cpu.py -yolact /tmp/yolact_orig \
        -video ../shared/data/media/vtest.avi [-frames 150] [-video_multiframe 1] [-threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import json
import os
import pathlib
import re
import shutil
import sys
import tempfile
import threading
import time
import types

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROG = "original_cpu.py"

# (exact text in eval.py, replacement, why): applied to the source before it is executed, each must match once
EVAL_PATCHES = [
    ("colors = torch.cat([get_color(j, on_gpu=img_gpu.device.index).view(1, 1, 1, 3)",
     "colors = torch.cat([get_color(j, on_gpu=img_gpu.device).view(1, 1, 1, 3)",
     "on the CPU device.index is None and get_color returns a tuple (no .view); keyed by the device it returns the "
     "colour tensor"),
]
DIFF_LEVEL = 40  # a pixel is "drawn on" when a channel differs from the input by more than this (mp4v noise is less)
MIN_CHANGED = 0.0005  # fraction of a frame's pixels that must be drawn on


class Tail(io.TextIOBase):
    """evalvideo's stdout (its progress lines), keeping only the last ``keep`` characters: once its frame count is
    reached it stops, but if that never happens (see the docstring) its main loop prints without pause."""

    def __init__(self, keep=4096):
        super().__init__()
        self.keep, self.text, self.progress = keep, "", ""

    def writable(self):
        return True

    def write(self, s):
        self.text = (self.text + s)[-self.keep:]
        if "Processing Frames" in s:  # play_video's line after each frame written (its write rate)
            self.progress = s
        return len(s)


class UserError(Exception):
    """A one-line error for the command line (missing file, bad flag)."""


def photos(args, ref):
    import cv2

    paths = sorted(glob.glob(args.images or os.path.join(args.shared, "data", "media", "*.jpg")))
    if not paths:
        raise UserError("no photos match")
    y = ref.import_yolact(args.yolact, args.threads)
    torch, postprocess = y["torch"], y["ou"].postprocess
    net = ref.net_from_npz(np.load(args.weights))
    transform = y["aug"].FastBaseTransform()
    frames = [cv2.imread(p) for p in paths]

    def one(frame):
        h, w = frame.shape[:2]
        t0 = time.perf_counter()
        with torch.no_grad():
            batch = transform(torch.from_numpy(frame).float().unsqueeze(0))
            t1 = time.perf_counter()
            dets = net(batch)
            t2 = time.perf_counter()
            classes, scores, boxes, masks = postprocess(dets, w, h, crop_masks=True, score_threshold=0)
            masks = masks.cpu().numpy()
            t3 = time.perf_counter()
        return {"preprocess": t1 - t0, "network_nms": t2 - t1, "masks": t3 - t2, "total": t3 - t0,
                "detections": int(len(scores))}

    load_before = os.getloadavg()
    for frame in frames:
        one(frame)
    rounds = []
    for _ in range(args.rounds):
        per = [one(frame) for frame in frames]
        rounds.append({k: float(np.mean([p[k] for p in per])) for k in ("preprocess", "network_nms", "masks", "total")})
    med = {k: 1000 * float(np.median([r[k] for r in rounds])) for k in rounds[0]}
    return {"implementation": "original", "torch": torch.__version__, "threads": args.threads,
            "images": len(frames), "rounds": args.rounds,
            "ms_per_image": {k: round(v, 1) for k, v in med.items()},
            "per_round_total_ms": [round(1000 * r["total"], 1) for r in rounds],
            "load_before": [round(v, 2) for v in load_before],
            "load_after": [round(v, 2) for v in os.getloadavg()]}


def import_eval(root):
    """eval.py of the checkout, executed as module ``eval`` with EVAL_PATCHES applied to its source in memory."""
    for name, sub in (("PIL", "Image"), ("matplotlib", "pyplot")):
        try:
            __import__(f"{name}.{sub}")
        except ImportError:  # eval.py imports them at the top; evalvideo does not use them
            parent = sys.modules[name] = types.ModuleType(name)
            child = sys.modules[f"{name}.{sub}"] = types.ModuleType(f"{name}.{sub}")
            setattr(parent, sub, child)
    path = os.path.join(os.path.abspath(root), "eval.py")
    with open(path) as f:
        src = f.read()
    for old, new, _ in EVAL_PATCHES:
        if src.count(old) != 1:
            raise UserError(f"eval.py: patch does not match exactly once: {old!r}")
        src = src.replace(old, new)
    module = types.ModuleType("eval")
    module.__file__ = path
    sys.modules["eval"] = module
    exec(compile(src, path, "exec"), module.__dict__)
    return module


def count_frames(cv2, path, limit):
    cap = cv2.VideoCapture(path)
    n = 0
    while n < limit and cap.read()[0]:
        n += 1
    cap.release()
    return n


def cv2_standin(cv2, frames, first_read):
    """What evalvideo sees as ``cv2``: cv2 itself, but captures end after ``frames`` frames and say so, and
    destroyAllWindows does nothing. ``first_read`` (a list) receives the perf_counter time of the first read."""

    class FirstFrames:
        def __init__(self, source):
            self._cap = cv2.VideoCapture(source)
            self._left = frames

        def isOpened(self):
            return self._cap.isOpened()

        def get(self, prop):
            return float(frames) if prop == cv2.CAP_PROP_FRAME_COUNT else self._cap.get(prop)

        def read(self):
            if not first_read:
                first_read.append(time.perf_counter())
            if self._left <= 0:
                return False, None
            self._left -= 1
            return self._cap.read()

        def release(self):
            self._cap.release()

    class StandIn(types.ModuleType):
        def __getattr__(self, name):
            return getattr(cv2, name)

    mod = StandIn("cv2")
    mod.VideoCapture = FirstFrames
    mod.destroyAllWindows = lambda: None
    return mod


def check_output(cv2, src, out):
    """Frames in ``out`` and, per frame, the fraction of pixels that differ from ``src``'s by > DIFF_LEVEL."""
    a, b = cv2.VideoCapture(src), cv2.VideoCapture(out)
    n, changed = 0, []
    while True:
        ok_b, fb = b.read()
        if not ok_b:
            break
        n += 1
        ok_a, fa = a.read()
        if ok_a and fa.shape == fb.shape:
            diff = np.abs(fa.astype(np.int16) - fb.astype(np.int16)).max(axis=2)
            changed.append(float((diff > DIFF_LEVEL).mean()))
        else:
            changed.append(0.0)
    a.release()
    b.release()
    return n, changed


def video(args, ref):
    import cv2

    if args.frames < 1 or args.video_multiframe < 1:
        raise UserError("-frames and -video_multiframe must be >= 1")
    cap = cv2.VideoCapture(args.video)
    if not cap.isOpened():
        raise UserError(f"cannot open the video {args.video}")
    ok, first = cap.read()
    size = (round(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), round(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    available = count_frames(cv2, args.video, args.frames)
    if not ok or available < args.frames:
        raise UserError(f"{args.video} decodes only {available} frames, fewer than -frames {args.frames}")

    y = ref.import_yolact(args.yolact, args.threads)
    torch = y["torch"]
    net = ref.net_from_npz(np.load(args.weights))
    ev = import_eval(args.yolact)
    with tempfile.TemporaryDirectory(prefix="original_evalvideo_") as tmp:
        out = os.path.join(tmp, "out.mp4")
        if ":" in args.video or ":" in out:
            raise UserError("evalvideo splits --video at ':': the paths must not contain one")
        ev.parse_args([f"--video={args.video}:{out}", f"--video_multiframe={args.video_multiframe}"])
        with torch.no_grad():  # warm-up (untimed): the network and the drawing on the first frame
            frame_t = torch.from_numpy(first).float()
            net.detect.use_fast_nms, net.detect.use_cross_class_nms = ev.args.fast_nms, ev.args.cross_class_nms
            for _ in range(2):
                dets = net(ev.FastBaseTransform()(frame_t.unsqueeze(0)))
                ev.prep_display(dets, frame_t, None, None, undo_transform=False, class_color=True)

        first_read = []
        ev.cv2 = cv2_standin(cv2, args.frames, first_read)
        saved = torch.Tensor.cuda, torch.nn.Module.cuda
        torch.Tensor.cuda = lambda self, *a, **k: self
        torch.nn.Module.cuda = lambda self, *a, **k: self
        log = Tail()

        def give_up():  # evalvideo ends only once CAP_PROP_FRAME_COUNT frames are written; else it spins forever
            print(f"{PROG}: error: evalvideo still running after {args.timeout:g} s", file=sys.stderr, flush=True)
            shutil.rmtree(tmp, ignore_errors=True)
            os._exit(3)

        watchdog = threading.Timer(args.timeout, give_up)
        watchdog.daemon = True
        load_before = os.getloadavg()
        exit_code = "returned"
        try:
            with contextlib.redirect_stdout(log):
                watchdog.start()
                t0 = time.perf_counter()
                try:
                    with torch.no_grad():  # as eval.py's __main__
                        ev.evaluate(net, None)
                except SystemExit as e:  # evalvideo ends with exit() after closing the file
                    exit_code = e.code
                t1 = time.perf_counter()
        finally:
            watchdog.cancel()
            torch.Tensor.cuda, torch.nn.Module.cuda = saved
        load_after = os.getloadavg()
        log_text = log.text
        if exit_code is not None:
            raise UserError(f"evalvideo ended with {exit_code!r}: {log_text.strip()[-300:]}")
        written, changed = check_output(cv2, args.video, out)
        if written != args.frames:
            raise UserError(f"the output holds {written} frames, expected {args.frames}")
        bare = [i for i, c in enumerate(changed) if c < MIN_CHANGED]
        if bare:
            raise UserError(f"{len(bare)} output frames are (nearly) the input, nothing drawn: {bare[:10]}")
        reported = re.findall(r"\(\s*[\d.]+%\)\s+([\d.]+) fps", log.progress)
        seconds = t1 - first_read[0]
        return {"implementation": "original evalvideo", "torch": torch.__version__, "threads": args.threads,
                "torch_num_threads": torch.get_num_threads(), "video": os.path.basename(args.video),
                "size": f"{size[0]}x{size[1]}", "source_fps": fps, "frames_written": written,
                "video_multiframe": args.video_multiframe, "top_k": ev.args.top_k,
                "score_threshold": ev.args.score_threshold,
                "timed": "first read -> exit after out.release()", "seconds": round(seconds, 2),
                "frames_per_s": round(written / seconds, 2), "call_s": round(t1 - t0, 2),
                "evalvideo_reported_write_fps": float(reported[-1]) if reported else None,
                "min_changed_fraction": round(min(changed), 4),
                "load_before": [round(v, 2) for v in load_before],
                "load_after": [round(v, 2) for v in load_after]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-yolact", required=True, help="checkout of github.com/dbolya/yolact (patched in place)")
    ap.add_argument("-shared", default=str(ROOT.parent / "shared"), help="the shared/ folder (fixtures, media)")
    ap.add_argument("-images", default=None, help="glob of photos (default: shared/data/media/*.jpg)")
    ap.add_argument("-threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("-rounds", type=int, default=3, help="photos: timed rounds after one warm-up")
    ap.add_argument("-video", default=None, help="run the original's eval.py evalvideo on this video instead")
    ap.add_argument("-frames", type=int, default=150, help="video: frames processed (the first ones)")
    ap.add_argument("-video_multiframe", type=int, default=1, help="video: eval.py --video_multiframe")
    ap.add_argument("-timeout", type=float, default=1800, help="video: seconds before evalvideo is given up")
    args = ap.parse_args()
    args.weights = os.path.join(args.shared, "fixtures", "reference_r50", "weights.npz")
    try:
        for rel in ("eval.py", "yolact.py", os.path.join("data", "config.py")):
            if not os.path.isfile(os.path.join(args.yolact, rel)):
                raise UserError(f"{args.yolact} is not a checkout of dbolya/yolact (no {rel})")
        if not os.path.isfile(args.weights):
            raise UserError(f"no fixture weights at {args.weights}")
        if args.video is not None and not os.path.isfile(args.video):
            raise UserError(f"no video at {args.video}")
        sys.path.insert(0, os.path.join(args.shared, "fixtures"))
        import make_reference_r50 as ref  # the fixture generator: CPU patches, model construction

        result = video(args, ref) if args.video is not None else photos(args, ref)
    except UserError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
