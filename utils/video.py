"""Pipelined video / webcam inference: decoding, inference, the host step + drawing, and encoding overlap in threads.

original: eval.py evalvideo (a thread pool and a frame buffer: frames are read, transformed, run, post-processed
and shown by overlapping tasks). Here each frame goes through four stages, each its own thread(s), connected by
BOUNDED queues (at most ``queue_size`` frames wait between two stages, so memory stays bounded whatever the video's
length)::

    reader: cv2.VideoCapture.read, BGR -> RGB, Runner.prepare (the resize to S x S)
      -> inference: Runner.run (the form's graph) alone in its thread, so that the slowest stage is the graph
         itself; the runner's own threads (LiteRT / onnxruntime num_threads, TF's pools) do its parallel work
      -> post, ``post_workers`` threads: Runner.finish (rows selected, only the shown masks upsampled) + drawing
         (the ``render`` callable) + RGB -> BGR; their futures are queued in frame order
      -> writer: cv2.VideoWriter.write IN ORDER, then ``on_frame`` (e.g. the -save files), the tqdm bar (frames/s).

OpenCV, LiteRT, onnxruntime and TensorFlow release the GIL in their C++ work, so the stages run in parallel on
several cores. The main thread only waits: Ctrl-C (KeyboardInterrupt, delivered to the main thread) stops the
reader; frames read but not yet inferred are dropped, frames already inferred are drawn and written; the file is
then closed. The video is written to a temporary file beside the destination (utils/atomic.py
``temporary_path``) and renamed into place when closed, also after Ctrl-C, so the destination never holds a
half-written file; after an error in any stage the temporary is removed and the error re-raised.

Deliberate differences from the original's evalvideo (which, writing to a file, also encodes every frame as fast
as it can; only its window display is paced to the video's frame rate): its stages advance in lock step, each loop
iteration waiting for all of them, whereas here each stage runs as soon as its input queue has a frame; and it
upsamples the masks of all detections to the frame's size before keeping the ``top_k`` it draws, whereas here only
the shown rows are upsampled (benchmarks/original_cpu.py ``-video`` runs the original's loop on this CPU).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import queue
import threading
import time
from typing import Callable, Dict, List, Optional

import cv2
import numpy as np

from utils import atomic

_END = object()  # end of a stage's stream
DEFAULT_QUEUE_SIZE = 4  # frames waiting between two stages (each 1280x720 frame is 2.7 MB, plus its masks)
DEFAULT_POST_WORKERS = 2  # host step + drawing threads: the mask upsampling and blending of frame i+1 overlap i's
# The reader, post and writer threads run this much nicer than the rest of the process (Linux per-thread nice), so
# that the graph's threads (the inference thread and the runtime's own pool: LiteRT / onnxruntime / TF workers,
# created at normal priority) get the cores whenever they can use them and the other stages fill the gaps: the
# graph is the stage that sets the pace. 0: every thread at the same priority. 19 (the lowest priority) measured
# best (docs/benchmarks.md "Video end to end"); on a machine busy with other programs these stages then wait for
# them too.
DEFAULT_STAGE_NICE = 19


def _lower_priority(nice: int) -> None:
    """Make the calling thread ``nice`` steps nicer (Linux: ``setpriority`` on the thread id; a no-op where threads
    have no priority of their own or the call is refused)."""
    if nice <= 0 or not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + int(nice)))
    except OSError:
        pass


def graph_threads() -> int:
    """Default CPU threads of a .tflite graph on the video path: every core this process may use; LiteRT's own
    default is 1. The inference stage is the pipeline's slowest, so it gets the cores the other stages leave idle;
    on 2 cores, int8 lite0 at 256 px ran faster end to end with 2 LiteRT threads than with 1 in 6 of 8 rounds
    (docs/benchmarks.md).
    onnxruntime keeps its default thread count but without spin-waiting (yolact/runtimes.py ``OnnxRunner``
    ``spinning``); TensorFlow (-checkpoint, SavedModel) keeps its own pools."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


class VideoError(OSError):
    """A video that cannot be opened or written (one line)."""


def count_frames(path) -> int:
    """Frames a video file decodes to, counted by reading (0 if it cannot be opened)."""
    cap = cv2.VideoCapture(os.fspath(path))
    n = 0
    while cap.isOpened():
        ok, _ = cap.read()
        if not ok:
            break
        n += 1
    cap.release()
    return n


class AtomicVideoWriter:
    """A ``cv2.VideoWriter`` writing to a temporary file beside ``path`` (utils/atomic.py), renamed onto the final
    path by :meth:`commit`; :meth:`discard` removes it.

    Codec: mp4v for any extension but ``.avi`` (MJPG); if OpenCV cannot open that, MJPG with the extension replaced
    by ``.avi`` (``self.path`` is then that name).

    Args:
      path: destination file; fps: frames per second of the file; size: (width, height) in pixels.

    Raises:
      VideoError: no writer could be opened.
    """

    def __init__(self, path: str, fps: float, size):
        path = os.fspath(path)
        candidates = [(path, "MJPG" if path.lower().endswith(".avi") else "mp4v")]
        if not path.lower().endswith(".avi"):
            candidates.append((os.path.splitext(path)[0] + ".avi", "MJPG"))
        self._writer = None
        for target, fourcc in candidates:
            tmp = atomic.temporary_path(target, os.path.splitext(target)[1])  # OpenCV picks the container by it
            writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*fourcc), float(fps), tuple(int(v) for v in size))
            if writer.isOpened():
                self._writer, self._tmp, self.path = writer, tmp, target
                break
            writer.release()
            atomic.discard_temporary(tmp)
        if self._writer is None:
            raise VideoError(f"cannot open a video writer for {path}")
        self.frames = 0

    def write(self, bgr: np.ndarray) -> None:
        """Append one uint8 BGR frame [height, width, 3] of the size given."""
        self._writer.write(bgr)
        self.frames += 1

    def commit(self) -> str:
        """Close the file and rename it onto :attr:`path`; returns the path. DiskFullError when the disk filled."""
        self._writer.release()
        try:
            atomic.commit_temporary(self._tmp, self.path)
        except BaseException as e:
            atomic.discard_temporary(self._tmp)
            if atomic.is_disk_full(e):
                raise atomic.DiskFullError(self.path) from e
            raise
        return self.path

    def discard(self) -> None:
        """Close and remove the temporary file; the destination is untouched."""
        self._writer.release()
        atomic.discard_temporary(self._tmp)


@dataclasses.dataclass
class VideoResult:
    """What :func:`process_video` did.

    path: the file written (None when no frame was read); frames_read; frames_written (all of them in order, the
    file's frame count); detections: number of detections of each written frame (the rows ``Runner.finish``
    returned); interrupted: stopped by Ctrl-C; seconds: wall time from the first read to the file's close;
    busy: seconds each stage spent working ('read': decode + prepare, 'infer': Runner.run, 'post': finish + drawing
    summed over its threads, 'write': encoding).
    """

    path: Optional[str]
    frames_read: int
    frames_written: int
    detections: List[int]
    interrupted: bool
    seconds: float
    busy: Dict[str, float]


class _Stop(Exception):
    """Raised inside a stage when another stage failed: leave at once."""


def process_video(runner, capture, path: str, fps: float, render: Callable, max_frames: Optional[int] = None,
                  total: Optional[int] = None, select: Optional[Dict] = None, on_frame: Optional[Callable] = None,
                  post_workers: int = DEFAULT_POST_WORKERS, queue_size: int = DEFAULT_QUEUE_SIZE,
                  desc: str = "video", progress: bool = True, stage_nice: int = DEFAULT_STAGE_NICE) -> VideoResult:
    """Run ``runner`` on every frame of ``capture`` and write the drawn frames to ``path``, the stages pipelined
    (module docstring).

    Args:
      runner: a yolact/runtimes.py Runner (Predictor or an export's runner): ``prepare`` runs in the reader
        thread, ``run`` in the inference thread, ``finish`` in ``post_workers`` threads.
      capture: an opened ``cv2.VideoCapture`` (file or camera); released at the end.
      path: the output file (see :class:`AtomicVideoWriter`; opened at the first frame, at its size).
      fps: frames per second of the output file.
      render: ``render(rgb, result) -> rgb``: the overlay of one frame, uint8 RGB [H, W, 3] and ``Runner.finish``'s
        dict (e.g. utils/visualize.py ``draw_detections`` with the display flags).
      max_frames: stop after reading this many frames (None: until the video ends).
      total: frames expected (the progress bar's length; None: unknown, e.g. a webcam).
      select: keyword arguments of ``Runner.finish`` (``score_threshold``, ``max_detections``,
        ``by_display_score``): which rows get full-size masks.
      on_frame: ``on_frame(index, rgb, result)`` called for each frame in order after it is written (writer
        thread; e.g. utils/result_formats.py ``ResultSaver.add_frame``).
      post_workers: threads of the host step + drawing; queue_size: frames at most between two stages (>= 1).
      desc: the progress bar's label; progress: show it (tqdm, frames/s).
      stage_nice: how much nicer the reader, post and writer threads run than the inference thread
        (:data:`DEFAULT_STAGE_NICE`; 0: the same priority).

    Returns:
      :class:`VideoResult`.

    Raises:
      VideoError: the output cannot be opened. DiskFullError (utils/atomic.py): the disk filled up. Any error of
      the runner, ``render`` or ``on_frame``, after the temporary file is removed (the destination untouched).
    """
    from tqdm import tqdm

    select = dict(select or {})
    frames_q: queue.Queue = queue.Queue(max(int(queue_size), 1))
    done_q: queue.Queue = queue.Queue(max(int(queue_size), 1))
    stop, failed = threading.Event(), threading.Event()  # stop: Ctrl-C (graceful); failed: a stage raised
    errors: List[BaseException] = []
    busy = {"read": 0.0, "infer": 0.0, "post": 0.0, "write": 0.0}
    busy_lock = threading.Lock()
    state = {"read": 0, "writer": None, "detections": []}

    def add_busy(stage, seconds):
        with busy_lock:
            busy[stage] += seconds

    def put(q, item):
        while True:
            if failed.is_set():
                raise _Stop
            try:
                q.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def get(q):
        while True:
            if failed.is_set():
                raise _Stop
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                continue

    def stage(body, downstream, nice=0):
        def target():
            _lower_priority(nice)
            try:
                body()
            except _Stop:
                return
            except BaseException as e:  # noqa: BLE001 -- handed to the main thread, re-raised there
                errors.append(e)
                failed.set()
                return
            if downstream is not None:
                try:
                    put(downstream, _END)
                except _Stop:
                    pass
        return threading.Thread(target=target, daemon=True)

    def read():
        while not stop.is_set() and (max_frames is None or state["read"] < max_frames):
            t0 = time.perf_counter()
            ok, bgr = capture.read()
            if not ok:
                break
            state["read"] += 1
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            inputs = runner.prepare(rgb)
            add_busy("read", time.perf_counter() - t0)
            put(frames_q, (rgb, inputs))

    def post(rgb, outputs):
        t0 = time.perf_counter()
        result = runner.finish(outputs, rgb.shape[0], rgb.shape[1], **select)
        bgr = cv2.cvtColor(render(rgb, result), cv2.COLOR_RGB2BGR)
        add_busy("post", time.perf_counter() - t0)
        return rgb, result, bgr

    pool = concurrent.futures.ThreadPoolExecutor(max(int(post_workers), 1), thread_name_prefix="video-post",
                                                 initializer=_lower_priority, initargs=(stage_nice,))

    def infer():
        while True:
            item = get(frames_q)
            if item is _END:
                return
            if stop.is_set():
                continue  # Ctrl-C: frames read but not yet run are dropped
            rgb, inputs = item
            t0 = time.perf_counter()
            outputs = runner.run(inputs, rgb.shape[0], rgb.shape[1])
            add_busy("infer", time.perf_counter() - t0)
            put(done_q, pool.submit(post, rgb, outputs))

    bar = tqdm(total=total, desc=desc, unit="frame", disable=not progress)

    def write():
        while True:
            future = get(done_q)
            if future is _END:
                return
            rgb, result, bgr = future.result()
            t0 = time.perf_counter()
            if state["writer"] is None:
                state["writer"] = AtomicVideoWriter(path, fps, (bgr.shape[1], bgr.shape[0]))
            writer = state["writer"]
            writer.write(bgr)
            add_busy("write", time.perf_counter() - t0)
            state["detections"].append(len(result["scores"]))
            if on_frame is not None:
                on_frame(writer.frames - 1, rgb, result)
            bar.update(1)

    threads = [stage(read, frames_q, stage_nice), stage(infer, done_q), stage(write, None, stage_nice)]
    t_start = time.perf_counter()
    interrupted = False
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                try:
                    t.join(0.1)
                except KeyboardInterrupt:
                    if not interrupted:
                        bar.write("interrupted: finishing the frames in flight and closing the video file")
                    interrupted = True
                    stop.set()
    finally:
        if any(t.is_alive() for t in threads):  # an exception in this thread itself: make the stages leave
            failed.set()
            for t in threads:
                t.join()
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        capture.release()
        writer = state["writer"]
        if writer is not None and (errors or failed.is_set()):
            writer.discard()
    if errors:
        raise errors[0]
    written = 0
    out_path = None
    if writer is not None:
        written = writer.frames
        out_path = writer.commit()
    return VideoResult(out_path, state["read"], written, state["detections"], interrupted,
                       time.perf_counter() - t_start, busy)


__all__ = ["DEFAULT_QUEUE_SIZE", "DEFAULT_POST_WORKERS", "DEFAULT_STAGE_NICE", "graph_threads", "VideoError", "count_frames", "AtomicVideoWriter",
           "VideoResult", "process_video"]
