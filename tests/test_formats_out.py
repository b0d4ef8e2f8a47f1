"""``inference.py -save coco,labelme,png`` (utils/result_formats.py) on real photos, and the round trips: LabelMe
output read back by ``data.coco_tfrecord_creator -format labelme`` gives the predicted masks; the COCO results
score exactly as ``-eval``.

Model: the reference fixture's random-weight ResNet-50 (its detections on real photos are meaningless, its masks
real) in a run folder whose config.json says 128 px, so each inference subprocess stays cheap on CPU.
"""

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf
from pycocotools import mask as mask_utils

from data import dataset_formats
from data import tfrecord_schema as schema
from tests.conftest import ROOT
from utils import coco_eval
from utils.result_formats import ResultSaver, mask_to_polygons

ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}


def _inference(*args):
    r = subprocess.run([sys.executable, "inference.py", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _iou(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return (a & b).sum() / max((a | b).sum(), 1)


def _record_masks(out):
    """[(file name, [(class text, mask uint8 [H, W])])] of the val records in ``out``."""
    recs = []
    for raw in tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(str(out / "val-*.tfrecord")))):
        p = schema.parse_example(raw)
        texts = tf.io.parse_single_example(raw, {schema.CLASS_TEXT: schema.FEATURE_SPEC[schema.CLASS_TEXT]})[
            schema.CLASS_TEXT].values.numpy()
        masks = [cv2.imdecode(np.frombuffer(m, np.uint8), cv2.IMREAD_UNCHANGED) for m in p["masks_png"].numpy()]
        recs.append((p["filename"].numpy().decode(), list(zip((t.decode() for t in texts), masks))))
    return recs


def test_mask_with_hole_and_parts_round_trips(media_dir, tmp_path):
    """Without a model: a detection with two parts and a hole, another overlapping it; LabelMe -> -format labelme
    gives the masks back, the PNG holds the better detection where they overlap."""
    photo = sorted(media_dir.glob("*.jpg"))[0]
    H, W = cv2.imread(str(photo)).shape[:2]
    a = np.zeros((H, W), np.uint8)
    cv2.circle(a, (W // 3, H // 2), H // 4, 1, -1)
    cv2.circle(a, (W // 3, H // 2), H // 10, 0, -1)  # a hole
    cv2.rectangle(a, (W - 60, 10), (W - 20, 50), 1, -1)  # a second part
    b = np.zeros((H, W), np.uint8)
    cv2.rectangle(b, (W // 3, H // 3), (W // 2, H // 2), 1, -1)
    result = {"boxes": np.array([[0, 0, W, H], [W // 3, H // 3, W // 2, H // 2]], np.int32),
              "classes": np.array([0, 2], np.int32), "category_ids": np.array([1, 3], np.int32),
              "scores": np.array([0.9, 0.6], np.float32), "masks": np.stack([a, b])}
    assert len(mask_to_polygons(a)) == 2
    out = tmp_path / "out"
    saver = ResultSaver(["labelme", "png"], ["person", "bicycle", "car"], 0.0, 5)
    saver.add_image(result, str(out / photo.stem), str(photo), 1)
    doc = json.loads((out / f"{photo.stem}.json").read_text())
    assert [(s["label"], s["group_id"]) for s in doc["shapes"]] == [("person", 1), ("person", 1), ("car", None)]
    assert doc["imageHeight"] == H and os.path.normpath(out / doc["imagePath"]) == str(photo)
    dataset_formats.create_from_format("labelme", str(tmp_path / "records"), {"val": str(out)}, num_workers=1,
                                       progress=False)
    (_, got), = _record_masks(tmp_path / "records")
    assert [t for t, _ in got] == ["person", "car"]
    assert _iou(got[0][1], a) >= 0.97 and _iou(got[1][1], b) >= 0.97
    assert got[0][1][H // 2, W // 3] == 0  # the hole stays a hole
    ids = cv2.imread(str(out / f"{photo.stem}.instances.png"), cv2.IMREAD_UNCHANGED)
    assert ids.dtype == np.uint16 and set(np.unique(ids)) == {0, 1, 2}
    np.testing.assert_array_equal(ids == 1, a.astype(bool))  # the first (better) detection wins the overlap
    np.testing.assert_array_equal(ids == 2, b.astype(bool) & ~a.astype(bool))
    info = json.loads((out / f"{photo.stem}.instances.json").read_text())
    assert [(i["id"], i["class"], i["category_id"]) for i in info["instances"]] == [(1, "person", 1), (2, "car", 3)]


def test_labelme_predictions_read_back(run128, media_dir, tmp_path):
    """-save labelme,png,coco on real photos; the LabelMe jsons through -format labelme give the predicted masks
    (the COCO results' RLE masks) again."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("000000128051.jpg", "000000194875.jpg"):  # at 128 px the model finds something in these
        shutil.copy(media_dir / name, photos / name)
    out = tmp_path / "out"
    _inference("-checkpoint", run128, "-images", f"{photos}:{out}", "-save", "labelme,png,coco",
               "-score_threshold", 0.1, "-top_k", 3)
    entries = json.loads((out / "results.json").read_text())
    names = {c["id"]: c["name"] for c in json.loads((run128 / "label_map.json").read_text())["categories"]}
    predicted = {}
    for e in entries:
        predicted.setdefault(e["file_name"], []).append((names[e["category_id"]], mask_utils.decode(e["segmentation"])))
    assert sorted(predicted) == sorted(p.name for p in photos.iterdir())
    assert len(entries) == 6 and all(m.sum() > 0 for v in predicted.values() for _, m in v)
    r = subprocess.run([sys.executable, "-m", "data.coco_tfrecord_creator", "-format", "labelme", "-val_image_dir",
                        str(out), "-output_dir", str(tmp_path / "records"), "-num_workers", "1"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    ious = []
    for file_name, got in _record_masks(tmp_path / "records"):
        want = predicted[os.path.basename(file_name)]
        assert [t for t, _ in got] == [t for t, _ in want]
        ious += [_iou(g, w) for (_, g), (_, w) in zip(got, want)]
    print(f"LabelMe round trip: {len(ious)} masks, IoU min {min(ious):.4f} mean {np.mean(ious):.4f}")
    assert min(ious) >= 0.9, ious
    for photo in photos.iterdir():  # the instance PNG: ids 1..n of the detections shown, each inside its mask
        ids = cv2.imread(str(out / f"{photo.stem}.instances.png"), cv2.IMREAD_UNCHANGED)
        info = json.loads((out / f"{photo.stem}.instances.json").read_text())
        assert ids.dtype == np.uint16 and len(info["instances"]) == len(predicted[photo.name])
        for k, (_, mask) in enumerate(predicted[photo.name], 1):
            assert (ids == k).sum() > 0 and not ((ids == k) & (mask == 0)).any()


def test_coco_results_score_as_eval(run128, coco_mini, tmp_path):
    """-save coco over the first 3 annotated val images (all detections: -top_k 100) = -eval's detections.json,
    and COCOeval on it gives -eval's metrics."""
    ann = coco_mini / "annotations" / "instances_val2017.json"
    gt = json.loads(ann.read_text())
    ids = sorted({a["image_id"] for a in gt["annotations"]})[:3]
    images = tmp_path / "val3"
    images.mkdir()
    for im in gt["images"]:
        if im["id"] in ids:
            shutil.copy(coco_mini / "val2017" / im["file_name"], images / im["file_name"])
    _inference("-checkpoint", run128, "-images", f"{images}:{tmp_path / 'out'}", "-save", "coco", "-annotations_file",
               ann, "-top_k", 100, "-display_masks=false")
    _inference("-checkpoint", run128, "-eval", "-annotations_file", ann, "-image_dir", images, "-max_images", 3,
               "-output_dir", tmp_path / "eval")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    evaluated = json.loads((tmp_path / "eval" / "detections.json").read_text())
    key = lambda e: (e["image_id"], -e["score"], e["category_id"])  # noqa: E731
    assert len(saved) == len(evaluated) > 0
    for s, e in zip(sorted(saved, key=key), sorted(evaluated, key=key)):
        assert {k: v for k, v in s.items() if k != "file_name"} == e
    metrics = coco_eval.evaluate_results(str(ann), saved, image_ids=ids, verbose=False)
    expected = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics == {k: v for k, v in expected.items() if k.startswith(("box/", "mask/"))}
    print(f"-save coco vs -eval: {len(saved)} detections, box AP {metrics['box/AP']:.4f}, "
          f"mask AP {metrics['mask/AP']:.4f}")


def test_video_frames(run128, media_dir, tmp_path):
    """-video: one COCO results file with image_id = frame index; LabelMe per frame with the frame beside it."""
    out = tmp_path / "v.mp4"
    _inference("-checkpoint", run128, "-video", f"{media_dir / 'vtest.avi'}:{out}", "-max_frames", 2, "-save",
               "coco,labelme", "-top_k", 2)
    entries = json.loads((tmp_path / "v.results.json").read_text())
    assert {e["image_id"] for e in entries} == {0, 1} and len(entries) == 4
    for frame in (0, 1):
        doc = json.loads((tmp_path / f"v_{frame:06d}.json").read_text())
        assert doc["imagePath"] == f"v_{frame:06d}.jpg" and (tmp_path / doc["imagePath"]).is_file()
        frame = cv2.imread(str(tmp_path / doc["imagePath"]))
        assert (doc["imageHeight"], doc["imageWidth"]) == frame.shape[:2] == (720, 1280)
        assert doc["shapes"]


@pytest.mark.parametrize("args, message", [
    (["-images", "IN:OUT", "-save", "coco,geojson"],
     "-save takes a comma-separated list of coco, labelme, png, got 'coco,geojson'"),
    (["-eval", "-save", "coco", "-output_dir", "OUT"], "-save applies to -image, -images and -video"),
])
def test_save_flag_errors(args, message, media_dir, tmp_path):
    """Checked before the model loads: exit 2, one line, nothing written."""
    args = [a.replace("IN", str(media_dir)).replace("OUT", str(tmp_path / "out")) for a in args]
    r = subprocess.run([sys.executable, "inference.py", "-checkpoint", str(tmp_path), *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == f"inference.py: error: {message}"
    assert not (tmp_path / "out").exists()
