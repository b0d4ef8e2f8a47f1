"""Faults of evaluation, export and the self-describing checkpoint on real data (issue 13), through the CLIs.

Model: the reference fixture's converted ResNet-50 weights in run folders whose config.json says a small input size
(the weights do not depend on it), so each subprocess stays cheap on CPU. Images: coco2017_mini val2017.
"""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}


def _cli(script, *args, timeout=600):
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def _error_lines(r):
    return [line for line in r.stderr.splitlines() if ": error: " in line]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fixture_weights_path):
    """{128: run folder, 160: run folder, 'bare': folder with only the .weights.h5}: the fixture's weights."""
    from config import get_config
    from yolact.checkpoint import write_run_files
    from yolact.ops.label_map import coco_label_map
    from yolact.torch_weights import convert_file

    base = tmp_path_factory.mktemp("runs")
    bare = base / "bare"
    bare.mkdir()
    convert_file(str(fixture_weights_path), "yolact_resnet50", str(bare / "r50.weights.h5"))
    for extra in ("config.json", "label_map.json"):  # whatever the converter writes: this folder has weights only
        (bare / extra).unlink(missing_ok=True)
    out = {"bare": bare}
    for size in (128, 160):
        folder = base / f"run{size}"
        folder.mkdir()
        shutil.copy(bare / "r50.weights.h5", folder / "r50.weights.h5")
        write_run_files(folder, get_config("yolact_resnet50", img_size=size), coco_label_map())
        out[size] = folder
    return out


@pytest.fixture(scope="module")
def val(coco_mini):
    ann = coco_mini / "annotations" / "instances_val2017.json"
    gt = json.loads(ann.read_text())
    annotated = sorted({a["image_id"] for a in gt["annotations"]})
    names = {im["id"]: im["file_name"] for im in gt["images"]}
    return ann, [names[i] for i in annotated[:3]]


def test_eval_with_no_image_found_fails_without_metrics(runs, val, tmp_path):
    ann, _ = val
    empty, out = tmp_path / "empty", tmp_path / "out"
    empty.mkdir()
    r = _cli("inference.py", "-checkpoint", runs[128], "-eval", "-annotations_file", ann, "-image_dir", empty,
             "-max_images", 3, "-output_dir", out)
    assert r.returncode == 2, r.stderr[-2000:]
    errors = _error_lines(r)
    assert len(errors) == 1 and "evaluated 0 of 3 images" in errors[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "skipped" not in r.stdout
    assert not (out / "metrics.json").exists() and not (out / "detections.json").exists()


def test_eval_with_missing_images_records_counts(runs, val, coco_mini, tmp_path):
    ann, first3 = val
    some, out = tmp_path / "some", tmp_path / "out"
    some.mkdir()
    for name in first3[:2]:
        shutil.copy(coco_mini / "val2017" / name, some / name)
    r = _cli("inference.py", "-checkpoint", runs[128], "-eval", "-annotations_file", ann, "-image_dir", some,
             "-max_images", 3, "-output_dir", out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "evaluated 2 of 3 images" in r.stdout
    assert f"skipped: image not found: {some / first3[2]}" in r.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images_evaluated"] == 2 and metrics["images_in_annotations"] == 3
    assert -1 <= metrics["box/AP"] <= 1 and -1 <= metrics["mask/AP"] <= 1


def test_contradicting_flags_are_one_line_errors(runs, media_dir, tmp_path):
    photo = sorted(media_dir.glob("*.jpg"))[0]
    r = _cli("inference.py", "-checkpoint", runs[128], "-img_size", 256, "-image", f"{photo}:{tmp_path / 'o.png'}")
    assert r.returncode == 2 and not (tmp_path / "o.png").exists()
    assert _error_lines(r) == [f"inference.py: error: -img_size 256 contradicts {runs[128]}/config.json "
                               "(img_size 128)"], r.stderr[-2000:]
    r = _cli("export_saved_model.py", "-checkpoint", runs[128], "-config", "yolact_base", "-export_dir",
             tmp_path / "sm")
    assert r.returncode == 2 and len(_error_lines(r)) == 1 and "contradicts" in r.stderr
    assert not (tmp_path / "sm").exists()


def test_weights_without_config_json_work_with_explicit_config(runs, media_dir, tmp_path):
    photo = sorted(media_dir.glob("*.jpg"))[0]
    out = tmp_path / "o.png"
    r = _cli("inference.py", "-checkpoint", runs["bare"] / "r50.weights.h5", "-config", "yolact_resnet50",
             "-img_size", 128, "-image", f"{photo}:{out}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.is_file() and f"{photo}: " in r.stdout


def _serve_small(export_dir):
    """Load the export in a fresh process and run serving_default on a 64x48 image: (num_detections, img_size)."""
    code = ("import sys, json, numpy as np, tensorflow as tf; m = tf.saved_model.load(sys.argv[1]); "
            "o = m.signatures['serving_default'](images=tf.zeros([1, 64, 48, 3], tf.uint8)); "
            "cfg = json.load(open(sys.argv[1] + '/config.json')); "
            "print(o['detection_masks'].shape, cfg['model']['img_size'])")
    r = subprocess.run([sys.executable, "-c", code, str(export_dir)], capture_output=True, text=True, env=ENV,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip()


def test_export_refuses_non_empty_dir_and_overwrites_atomically(runs, tmp_path):
    target = tmp_path / "exports" / "model"
    r = _cli("export_saved_model.py", "-checkpoint", runs[128], "-export_dir", target, "-xla_nms=false")
    assert r.returncode == 0, r.stderr[-2000:]
    assert {"saved_model.pb", "config.json", "label_map.json", "variables"} <= {p.name for p in target.iterdir()}
    assert _serve_small(target) == "(1, 100, 64, 48) 128"
    before = sorted(p.name for p in target.rglob("*"))

    r = _cli("export_saved_model.py", "-checkpoint", runs[160], "-export_dir", target, "-xla_nms=false")
    assert r.returncode == 2
    assert _error_lines(r) == [f"export_saved_model.py: error: {target} exists and is not empty: pass -overwrite "
                               "to replace it"], r.stderr[-2000:]
    assert sorted(p.name for p in target.rglob("*")) == before
    assert _serve_small(target) == "(1, 100, 64, 48) 128"

    r = _cli("export_saved_model.py", "-checkpoint", runs[160], "-export_dir", target, "-xla_nms=false",
             "-overwrite")
    assert r.returncode == 0, r.stderr[-2000:]
    assert _serve_small(target) == "(1, 100, 64, 48) 160"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]  # no temporary or old folder left
    assert json.loads((target / "label_map.json").read_text())["num_classes"] == 81
    np.testing.assert_equal(json.loads((target / "config.json").read_text())["model"]["img_size"], 160)
