"""A training run folder describes itself: after a short real training with a non-default ``-img_size`` and a custom
label map, ``inference.py`` (image and -eval) and ``export_saved_model.py`` need only ``-checkpoint RUN_DIR`` and give
the trained model's detections with the dataset's own category ids and names; a contradicting flag is one line.

Everything runs as the user runs it (subprocesses of the CLIs) on real coco2017_mini images.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

IMG_SIZE = 192  # not the config's 512: a wrong size at inference would silently use other anchors before


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")


def _cli(*args, timeout=900):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          env=_env(), timeout=timeout)


@pytest.fixture(scope="module")
def run(coco_mini, tmp_path_factory):
    """Train yolact_efficientnet_lite0 at 192 px for 2 iterations on 8 coco2017_mini images whose 3 most frequent
    categories are renamed (``my_<name>``), keeping COCO's ids; returns the paths."""
    work = tmp_path_factory.mktemp("run_folder")
    data = json.loads((coco_mini / "annotations" / "instances_train2017.json").read_text())
    images = data["images"][:8]
    ids = {im["id"] for im in images}
    anns = [a for a in data["annotations"] if a["image_id"] in ids]
    counts = {}
    for a in anns:
        counts[a["category_id"]] = counts.get(a["category_id"], 0) + 1
    keep = sorted(sorted(counts, key=lambda c: -counts[c])[:3])
    cats = [dict(c, name="my_" + c["name"]) for c in data["categories"] if c["id"] in keep]
    custom = dict(data, images=images, annotations=[a for a in anns if a["category_id"] in keep], categories=cats)
    ann = work / "custom.json"
    ann.write_text(json.dumps(custom))
    r = _cli("-m", "data.coco_tfrecord_creator", "-train_image_dir", coco_mini / "train2017",
             "-train_annotations_file", ann, "-output_dir", work / "records" / "custom")
    assert r.returncode == 0, r.stderr[-2000:]
    r = _cli("train.py", "-name", "custom", "-tfrecord_dir", work / "records", "-weights", work / "weights",
             "-config", "yolact_efficientnet_lite0", "-img_size", IMG_SIZE, "-batch_size", 2, "-train_iter", 2,
             "-seed", 0, "-noaugment", "-print_interval", 1)
    assert r.returncode == 0, r.stderr[-2000:]
    annotated = len({a["image_id"] for a in custom["annotations"]})  # the original evaluates annotated images only
    return {"ann": ann, "annotated": annotated, "cats": cats, "dir": work / "weights" / "custom", "images": coco_mini / "train2017",
            "first": coco_mini / "train2017" / images[0]["file_name"], "work": work}


def test_run_folder_holds_the_resolved_config_and_label_map(run):
    cfg = json.loads((run["dir"] / "config.json").read_text())
    assert cfg["name"] == "yolact_efficientnet_lite0"
    assert cfg["model"]["img_size"] == IMG_SIZE and cfg["model"]["num_classes"] == 4
    # the original's im400/im700 rule int(s / size * new_size), applied to the lite0 preset's scales (550 -> 512)
    lite0 = [int(s / 550 * 512) for s in (24, 48, 96, 192, 384)]
    assert cfg["anchors"]["pred_scales"] == [int(s / 512 * IMG_SIZE) for s in lite0] == [8, 16, 33, 66, 133]
    lm = json.loads((run["dir"] / "label_map.json").read_text())
    assert [(c["id"], c["name"]) for c in lm["categories"]] == [(c["id"], c["name"]) for c in run["cats"]]


def test_inference_image_needs_only_the_checkpoint(run, tmp_path):
    out = tmp_path / "overlay.png"
    r = _cli("inference.py", "-checkpoint", run["dir"], "-image", f"{run['first']}:{out}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.is_file() and out.stat().st_size > 1000
    names = {c["name"] for c in run["cats"]}
    line = [ln for ln in r.stdout.splitlines() if str(run["first"]) in ln][0]
    shown = [w.split(" ")[0] for w in line.split(": ", 2)[-1].split(", ")] if "my_" in line else []
    assert shown and set(shown) <= names, line  # the dataset's own class names, not COCO's


def test_eval_needs_only_the_checkpoint(run, tmp_path):
    r = _cli("inference.py", "-checkpoint", run["dir"], "-eval", "-annotations_file", run["ann"],
             "-image_dir", run["images"], "-output_dir", tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["images_evaluated"] == metrics["images_in_annotations"] == run["annotated"] == 5
    dets = json.loads((tmp_path / "detections.json").read_text()) if (tmp_path / "detections.json").is_file() \
        else json.loads((tmp_path / "bbox_detections.json").read_text())
    assert dets and {d["category_id"] for d in dets} <= {c["id"] for c in run["cats"]}


def test_export_needs_only_the_checkpoint_and_serves_the_trained_model(run, tmp_path):
    import tensorflow as tf

    from yolact.checkpoint import load_model, resolve_run
    from yolact.ops.image_io import read_image
    from yolact.predictor import Predictor

    export_dir = tmp_path / "saved_model"
    r = _cli("export_saved_model.py", "-checkpoint", run["dir"], "-export_dir", export_dir)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((export_dir / "config.json").read_text())["model"]["img_size"] == IMG_SIZE
    lm = json.loads((export_dir / "label_map.json").read_text())
    assert [c["name"] for c in lm["categories"]] == [c["name"] for c in run["cats"]]

    image = read_image(str(run["first"]))
    served = tf.saved_model.load(str(export_dir)).signatures["serving_default"](images=tf.constant(image[None]))
    n = int(served["num_detections"][0])
    resolved = resolve_run(str(run["dir"]))
    predictor = Predictor(resolved.cfg, load_model(resolved.cfg, str(run["dir"])), resolved.label_map)
    ours = predictor.predict(image)
    assert n > 0 and n == len(ours["scores"])
    np.testing.assert_array_equal(served["detection_classes"][0, :n].numpy().astype(int), ours["category_ids"])
    assert set(ours["category_ids"].tolist()) <= {c["id"] for c in run["cats"]}
    np.testing.assert_allclose(served["detection_scores"][0, :n].numpy(), ours["scores"], atol=1e-4)


def test_contradicting_img_size_is_one_line(run, tmp_path):
    r = _cli("inference.py", "-checkpoint", run["dir"], "-img_size", 256, "-image", f"{run['first']}:{tmp_path}/x.png")
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "-img_size 256 contradicts" in lines[0], r.stderr[-2000:]
    assert not (tmp_path / "x.png").exists()
    r = _cli("export_saved_model.py", "-checkpoint", run["dir"], "-img_size", 256, "-export_dir", tmp_path / "e")
    assert r.returncode == 2 and "contradicts" in r.stderr and not (tmp_path / "e").exists()
