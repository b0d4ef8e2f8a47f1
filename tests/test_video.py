"""The pipelined video path (utils/video.py) on the shared vtest.avi (1280x720) with the fixture's ResNet-50 weights at
128 px (:func:`tests.conftest.run128`): frames complete and in order (equal to the sequential loop's), max_frames,
Ctrl-C leaving a playable file at the destination, errors leaving nothing, the writer's .avi fallback, and the
YOLACT++ display-score row selection before the masks are upsampled."""

import os
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from tests.conftest import ROOT

FRAMES = 6


def _decode(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def _temporaries(folder):
    return [n for n in os.listdir(folder) if ".tmp-" in n]


@pytest.fixture(scope="module")
def predictor(run128):
    from yolact.predictor import Predictor

    return Predictor.from_checkpoint(str(run128))


def _render(predictor):
    from utils.visualize import draw_detections

    return lambda rgb, result: draw_detections(rgb, result, predictor.label_map.names, 0.0, 5)


def test_pipelined_frames_equal_the_sequential_loop(predictor, media_dir, tmp_path):
    """MJPG (.avi) codes each frame on its own, so equal inputs give equal decoded frames: every frame of the
    pipelined file equals the one-frame-after-the-other loop's (exactly), in order, max_frames of them."""
    from utils.video import process_video

    src = str(media_dir / "vtest.avi")
    select = {"score_threshold": 0.0, "max_detections": 5}
    render = _render(predictor)
    cap = cv2.VideoCapture(src)
    writer, detections = None, []
    for _ in range(FRAMES):  # the reference: read, predict, draw, write
        ok, frame = cap.read()
        rgb = frame[..., ::-1].copy()
        writer = writer or cv2.VideoWriter(str(tmp_path / "seq.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0,
                                           (rgb.shape[1], rgb.shape[0]))
        result = predictor.predict(rgb, **select)
        detections.append(len(result["scores"]))
        writer.write(np.ascontiguousarray(render(rgb, result)[..., ::-1]))
    writer.release()
    cap.release()

    seen = []
    video = process_video(predictor, cv2.VideoCapture(src), str(tmp_path / "pipe.avi"), 10.0, render,
                          max_frames=FRAMES, select=select, on_frame=lambda i, rgb, result: seen.append(i),
                          queue_size=2, progress=False)
    assert (video.frames_read, video.frames_written, video.interrupted) == (FRAMES, FRAMES, False)
    assert video.path == str(tmp_path / "pipe.avi") and seen == list(range(FRAMES))
    assert video.detections == detections and sum(detections) > 0  # the frames have something drawn
    seq, pipe = _decode(tmp_path / "seq.avi"), _decode(tmp_path / "pipe.avi")
    assert len(seq) == len(pipe) == FRAMES
    for a, b in zip(seq, pipe):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(pipe[0], pipe[-1])  # not one frame repeated
    assert sorted(os.listdir(tmp_path)) == ["pipe.avi", "seq.avi"]  # no temporary left


def test_an_error_in_a_stage_leaves_no_file(predictor, media_dir, tmp_path):
    """render raising at the 3rd frame: the error reaches the caller, the threads end, the destination and its
    temporary are gone (utils/atomic.py)."""
    from utils.video import process_video

    calls = []

    def render(rgb, result):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("drawing failed")
        return rgb

    with pytest.raises(RuntimeError, match="drawing failed"):
        process_video(predictor, cv2.VideoCapture(str(media_dir / "vtest.avi")), str(tmp_path / "v.mp4"), 10.0,
                      render, max_frames=50, select={"max_detections": 1}, queue_size=1, post_workers=1,
                      progress=False)
    assert os.listdir(tmp_path) == []


def test_writer_falls_back_to_avi_and_renames_when_closed(tmp_path):
    from utils.video import AtomicVideoWriter, count_frames

    writer = AtomicVideoWriter(str(tmp_path / "v.unknownext"), 5.0, (64, 48))
    assert writer.path == str(tmp_path / "v.avi")
    for i in range(3):
        writer.write(np.full([48, 64, 3], 40 * i, np.uint8))
    assert os.listdir(tmp_path) != ["v.avi"] and len(_temporaries(tmp_path)) == 1  # nothing at the destination yet
    assert writer.commit() == str(tmp_path / "v.avi")
    assert os.listdir(tmp_path) == ["v.avi"] and count_frames(tmp_path / "v.avi") == 3


def test_plus_rows_selected_by_display_score_are_the_ones_drawn():
    """YOLACT++: the rows that get full-size masks (select_rows with the display scores) are exactly the rows
    utils/visualize.py display_order shows of all rows above the box score threshold (what got masks before), for
    thresholds and top_k that cut anywhere."""
    from utils.visualize import display_order
    from yolact.detection.results import select_rows

    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(0, 30))
        scores = np.sort(rng.random(n).astype(np.float32))[::-1]
        mask_scores = (scores * rng.random(n)).astype(np.float32)
        mask_scores[rng.random(n) < 0.2] = 0.25  # ties: the stable order decides
        threshold, top_k = float(rng.choice([0.0, 0.1, 0.3])), int(rng.integers(1, 8))
        rows = select_rows(scores, threshold, top_k, mask_scores)
        base = select_rows(scores, threshold)  # before: every row above the box score threshold got its mask
        shown, _ = display_order({"scores": scores[base], "mask_scores": mask_scores[base]}, threshold, top_k)
        assert len(rows) <= top_k and list(rows) == sorted(base[shown])
        # drawing the selected rows shows the same detections in the same order as drawing all of them
        again, _ = display_order({"scores": scores[rows], "mask_scores": mask_scores[rows]}, threshold, top_k)
        assert list(rows[again]) == list(base[shown])


def test_ctrl_c_leaves_a_playable_file_with_the_frames_reported(run128, media_dir, tmp_path):
    """SIGINT to ``inference.py -video`` after a few frames: exit 0, the summary line's frame count equals what the
    file at the destination decodes to, fewer than the -max_frames 120 asked, no temporary left."""
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen([sys.executable, "inference.py", "-checkpoint", str(run128), "-video",
                             f"{media_dir / 'vtest.avi'}:{out}", "-max_frames", "120"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    progress, deadline = b"", time.monotonic() + 300
    try:
        while time.monotonic() < deadline:  # the tqdm bar on stderr: wait for 4 frames written
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                break
            progress += chunk
            done = re.findall(rb"\| *(\d+)/\d+ \[", progress)
            if done and int(done[-1]) >= 4:
                break
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    stderr = (progress + stderr).decode(errors="replace")
    assert proc.returncode == 0, stderr[-3000:]
    summary = re.search(r"wrote (.*): (\d+) frames at [\d.]+ fps \(interrupted\); the file decodes to (\d+) frames",
                        stdout.decode())
    assert summary, (stdout.decode()[-2000:], stderr[-2000:])
    written = int(summary[2])
    assert summary[1] == str(out) and 4 <= written < 120 and int(summary[3]) == written
    assert len(_decode(out)) == written
    assert os.listdir(tmp_path) == ["out.mp4"]
    assert "Traceback" not in stderr


def test_unreadable_video_is_one_line(run128, tmp_path):
    bad = tmp_path / "clip.avi"
    bad.write_bytes(b"not a video" * 100)
    r = subprocess.run([sys.executable, "inference.py", "-checkpoint", str(run128), "-video",
                        f"{bad}:{tmp_path / 'o.mp4'}"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    errors = [line for line in r.stderr.splitlines() if "error" in line.lower()]
    assert r.returncode == 2 and len(errors) == 1, r.stderr[-2000:]
    assert re.fullmatch(rf"inference\.py: error: (cannot open video|no frame could be read from) {re.escape(str(bad))}",
                        errors[0]), errors[0]
    assert "Traceback" not in r.stderr and sorted(os.listdir(tmp_path)) == ["clip.avi"]
