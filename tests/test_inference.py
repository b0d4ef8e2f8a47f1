"""inference.py end to end (subprocesses) on the shared media and coco2017_mini: video, folder with a corrupt file,
missing input, COCO evaluation. The fixture's converted weights in a run folder whose config.json says img_size 128
(the weights do not depend on the input size) keep CPU time low; ``-checkpoint RUN_DIR`` is the only model flag."""

import json
import re
import shutil
import subprocess
import sys

import cv2
import pytest

from tests.conftest import ROOT

IMG_SIZE = "128"


@pytest.fixture(scope="module")
def weights(tmp_path_factory, fixture_weights_path):
    """A run folder: r50.weights.h5 (the fixture's converted weights), config.json (yolact_resnet50 at 128) and
    label_map.json (COCO)."""
    from config import get_config
    from yolact.checkpoint import write_run_files
    from yolact.ops.label_map import coco_label_map
    from yolact.torch_weights import convert_file

    out = tmp_path_factory.mktemp("w") / "r50.weights.h5"
    convert_file(str(fixture_weights_path), "yolact_resnet50", str(out))
    write_run_files(out.parent, get_config("yolact_resnet50", img_size=int(IMG_SIZE)), coco_label_map())
    return out.parent


def _run(*args, timeout=600):
    cmd = [sys.executable, "inference.py", *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})


def _frames(path):
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.mark.slow
def test_video_keeps_every_frame_and_fps(weights, media_dir, tmp_path):
    src = media_dir / "vtest.avi"
    out = tmp_path / "vtest_out.mp4"
    r = _run("-checkpoint", weights, "-video", f"{src}:{out}")
    assert r.returncode == 0, r.stderr[-2000:]
    source_frames = _frames(src)
    assert source_frames == 341
    assert _frames(out) == source_frames
    summary = re.search(r"wrote .*: 341 frames at [\d.]+ fps; the file decodes to 341 frames; "
                        r"detections per frame: mean ([\d.]+), min (\d+), max (\d+)", r.stdout)
    assert summary, r.stdout[-2000:]
    mean, lo, hi = float(summary[1]), int(summary[2]), int(summary[3])
    assert lo <= mean <= hi
    a, b = cv2.VideoCapture(str(src)), cv2.VideoCapture(str(out))
    assert b.get(cv2.CAP_PROP_FPS) == pytest.approx(a.get(cv2.CAP_PROP_FPS), rel=1e-3)
    assert int(b.get(cv2.CAP_PROP_FRAME_WIDTH)) == int(a.get(cv2.CAP_PROP_FRAME_WIDTH))
    assert int(b.get(cv2.CAP_PROP_FRAME_HEIGHT)) == int(a.get(cv2.CAP_PROP_FRAME_HEIGHT))


def test_folder_skips_corrupt_file(weights, media_dir, tmp_path):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    photos = sorted(media_dir.glob("*.jpg"))[:2]
    for p in photos:
        shutil.copy(p, src / p.name)
    (src / "broken.jpg").write_bytes(photos[0].read_bytes()[:0] + b"\x00not a jpeg" * 50)
    r = _run("-checkpoint", weights, "-images", f"{src}:{dst}", "-top_k", "3")
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in dst.iterdir()) == sorted(p.stem + ".png" for p in photos)
    assert "skipped broken.jpg" in r.stdout + r.stderr
    assert "processed 2 images" in r.stdout
    for p in photos:
        assert cv2.imread(str(dst / (p.stem + ".png"))).shape == cv2.imread(str(p)).shape


def test_missing_inputs_give_one_line_errors(weights, tmp_path):
    r = _run("-checkpoint", weights, "-image", tmp_path / "nope.jpg")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("inference.py: error: image not found")
    assert "Traceback" not in r.stderr
    r = _run("-config", "yolact_resnet50", "-checkpoint", tmp_path / "nope.weights.h5", "-image", tmp_path / "x.jpg")
    assert r.returncode == 2 and "checkpoint not found: " in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "bare.weights.h5").write_bytes(b"")  # exists, but its folder has no config.json and no -config
    r = _run("-checkpoint", tmp_path / "bare.weights.h5", "-image", tmp_path / "x.jpg")
    assert r.returncode == 2 and "config.json not found: pass -config" in r.stderr


def test_eval_writes_results_and_metrics(weights, coco_mini, tmp_path):
    r = _run("-checkpoint", weights, "-eval", "-annotations_file", coco_mini / "annotations/instances_val2017.json",
             "-image_dir", coco_mini / "val2017", "-max_images", 3, "-output_dir", tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "evaluated 3 of 3 images" in r.stdout and "Average Precision" in r.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics.pop("images_evaluated") == 3 and metrics.pop("images_in_annotations") == 3
    assert len(metrics) == 12 and all(-1 <= v <= 1 for v in metrics.values())
    dets = json.loads((tmp_path / "detections.json").read_text())
    gt = json.loads((coco_mini / "annotations/instances_val2017.json").read_text())
    first3 = sorted({a["image_id"] for a in gt["annotations"]})[:3]  # images with annotations, in id order
    assert {d["image_id"] for d in dets} <= set(first3) and 0 < len(dets) <= 300
    assert all(isinstance(d["segmentation"]["counts"], str) and len(d["bbox"]) == 4 for d in dets)
