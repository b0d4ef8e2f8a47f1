"""Faults and bad input, round 2: inference.py, export_saved_model.py and utils.convert_weights on real data.

Each test also checks what is left on disk: inputs unchanged (bytes and mtimes), no partial output, no temporary,
a previous output / export intact. Model: the session's converted fixture ResNet-50 weights (conftest
``r50_weights``) copied into a run folder whose config.json says img_size 128; images: coco2017_mini val2017 and
../shared/data/media. Faults that need a broken writer (a full disk, a killed conversion) run the tool through
runpy in a subprocess whose prelude patches the writer: no test hook in library code.
"""

import errno  # noqa: F401  (used in the subprocess preludes' text)
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}


def _cli(script, *args, prelude="", timeout=600, env=None):
    """``python script args`` (``-m module`` when ``script`` has no .py), or with ``prelude`` run first in the same
    process (then the tool runs through runpy as ``__main__``)."""
    args = [str(a) for a in args]
    if prelude:
        run = (f"runpy.run_path({script!r}, run_name='__main__')" if script.endswith(".py") else
               f"runpy.run_module({script!r}, run_name='__main__', alter_sys=True)")
        code = f"import runpy, sys\n{prelude}\nsys.argv = [{script!r}] + sys.argv[1:]\n{run}\n"
        cmd = [sys.executable, "-c", code, *args]
    else:
        cmd = [sys.executable, script, *args] if script.endswith(".py") else [sys.executable, "-m", script, *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**ENV, **(env or {})})


def _error_lines(r):
    return [line for line in r.stderr.splitlines() if ": error: " in line]


def _one_error(r, code, *needles):
    """Exit ``code``, one error line containing every needle, no traceback; returns the line."""
    errors = _error_lines(r)
    assert r.returncode == code and len(errors) == 1, (r.returncode, r.stdout[-1500:], r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    for needle in needles:
        assert str(needle) in errors[0], errors[0]
    return errors[0]


def _state(*roots):
    """{path: (bytes, mtime_ns)} of every file under / at ``roots``: what must not change."""
    out = {}
    for root in map(str, roots):
        paths = [root] if os.path.isfile(root) else [os.path.join(d, n) for d, _, ns in os.walk(root) for n in ns]
        for p in paths:
            with open(p, "rb") as f:
                out[p] = (f.read(), os.stat(p).st_mtime_ns)
    return out


def _temporaries(folder):
    return [os.path.join(d, n) for d, ds, ns in os.walk(folder) for n in ns + ds if ".tmp-" in n]


@pytest.fixture(scope="module")
def run128(tmp_path_factory, r50_weights):
    """A run folder: the session's converted r50.weights.h5, config.json (yolact_resnet50 at 128), label_map.json."""
    from config import get_config
    from yolact.checkpoint import write_run_files
    from yolact.ops.label_map import coco_label_map

    folder = tmp_path_factory.mktemp("run128")
    shutil.copy(r50_weights, folder / "r50.weights.h5")
    write_run_files(folder, get_config("yolact_resnet50", img_size=128), coco_label_map())
    return folder


@pytest.fixture(scope="module")
def photos(media_dir):
    return sorted(media_dir.glob("*.jpg"))[:2]


@pytest.fixture(scope="module")
def records(tmp_path_factory, coco_mini):
    """TFRecords of data/coco_tfrecord_creator.py from coco2017_mini: 3 annotated val images and 2 train images, in
    one folder (val-* and train-* shards) with the two subset jsons."""
    from data.coco_json import SplitSpec
    from data.coco_tfrecord_creator import create_tfrecords

    base = tmp_path_factory.mktemp("records")
    subsets = {}
    for split, n in (("val", 3), ("train", 2)):
        gt = json.loads((coco_mini / "annotations" / f"instances_{split}2017.json").read_text())
        ids = sorted({a["image_id"] for a in gt["annotations"]})[:n]
        gt["images"] = [im for im in gt["images"] if im["id"] in ids]
        gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in ids]
        subsets[split] = base / f"{split}_subset.json"
        subsets[split].write_text(json.dumps(gt))
    out = base / "coco"
    create_tfrecords([SplitSpec(s, str(coco_mini / f"{s}2017"), str(subsets[s])) for s in ("train", "val")],
                     str(out), num_shards=1, num_workers=0, progress=False)
    return {"dir": out, "val_json": subsets["val"], "train_json": subsets["train"]}


# ---------------------------------------------------------------------------------------------------------------
# Nonsense flags: refused at flag-parsing time, before anything is loaded


def test_nonsense_numbers_are_refused_before_anything_is_loaded(run128, photos, tmp_path, coco_mini):
    out = tmp_path / "out"
    photo = photos[0]
    cases = [
        ("inference.py", ["-checkpoint", run128, "-eval", "-annotations_file", tmp_path / "a.json", "-image_dir",
                          coco_mini / "val2017", "-max_images", -1, "-output_dir", out], "max_images"),
        ("inference.py", ["-checkpoint", run128, "-image", f"{photo}:{out / 'o.png'}", "-top_k", -1], "top_k"),
        ("inference.py", ["-checkpoint", run128, "-image", f"{photo}:{out / 'o.png'}", "-score_threshold", 2],
         "score_threshold"),
        ("inference.py", ["-model", tmp_path / "m.onnx", "-num_threads", -5, "-image", photo], "num_threads"),
        ("inference.py", ["-checkpoint", run128, "-video", f"{photo}:{out / 'v.mp4'}", "-max_frames", 0],
         "max_frames"),
        ("export_saved_model.py", ["-checkpoint", run128, "-export_dir", out, "-tflite", "int8",
                                   "-representative_data", tmp_path / "*.tfrecord", "-representative_images", 0],
         "representative_images"),
    ]
    for script, args, flag in cases:
        r = _cli(script, *args)
        _one_error(r, 2, flag)
        assert "tensorflow" not in r.stderr.lower(), r.stderr  # parsed before TensorFlow was imported
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------------
# An output is never an input


def test_outputs_that_are_inputs_are_refused_and_nothing_changes(run128, photos, tmp_path, fixture_weights_path):
    data = tmp_path / "data"
    images = data / "images"
    images.mkdir(parents=True)
    for p in photos:
        shutil.copy(p, images / p.name)
    video = data / "clip.avi"
    shutil.copy(photos[0], video)  # never opened: the check comes first
    npz = data / "w.npz"
    shutil.copy(fixture_weights_path, npz)
    os.symlink(npz, data / "w.weights.h5")  # -out spelled differently, the same file as -src
    run = tmp_path / "run"
    shutil.copytree(run128, run)
    before = _state(data, run)
    photo = images / photos[0].name
    cases = [
        ("inference.py", ["-checkpoint", run, "-image", f"{photo}:{photo}"], "-image output", "is the input -image"),
        ("inference.py", ["-checkpoint", run, "-images", f"{images}:{images}"], "is the input -images"),
        ("inference.py", ["-checkpoint", run, "-images", f"{images}:{images / 'out'}"], "lies inside the input"),
        ("inference.py", ["-checkpoint", run, "-images", f"{images}:{data}"], "contains the input -images"),
        ("inference.py", ["-checkpoint", run, "-video", f"{video}:{video}"], "is the input -video"),
        ("inference.py", ["-checkpoint", run, "-eval", "-annotations_file", data / "a.json", "-image_dir", images,
                          "-output_dir", images], "-output_dir", "is the input -image_dir"),
        ("export_saved_model.py", ["-checkpoint", run, "-export_dir", run, "-overwrite"], "-export_dir",
         "is the input -checkpoint"),
        ("export_saved_model.py", ["-checkpoint", run / "r50.weights.h5", "-export_dir", run, "-overwrite"],
         "contains the input -checkpoint"),
        ("export_saved_model.py", ["-checkpoint", run, "-export_dir", tmp_path, "-overwrite"],
         "contains the input -checkpoint"),
        ("export_saved_model.py", ["-checkpoint", run, "-export_dir", data, "-overwrite", "-tflite", "int8",
                                   "-representative_data", images / "*.jpg"], "contains the input -representative_data"),
        ("utils.convert_weights", ["-src", npz, "-config", "yolact_resnet50", "-out", data / "w.weights.h5"],
         "-out", "is the input -src"),
    ]
    for script, args, *needles in cases:
        _one_error(_cli(script, *args), 2, *needles)
        assert _state(data, run) == before, (script, args)
    assert sorted(os.listdir(tmp_path)) == ["data", "run"]


def test_folder_outputs_keep_names_apart_and_extension_checked_first(run128, photos, tmp_path):
    """a.jpg and a.png of one folder become a.jpg.png and a.png.png (README); an -image output with an unknown
    extension is refused before the model is loaded; outputs are complete PNGs; inputs unchanged."""
    import cv2

    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(photos[0], src / "a.jpg")
    cv2.imwrite(str(src / "a.png"), cv2.imread(str(photos[1])))
    shutil.copy(photos[1], src / "b.jpg")
    before = _state(src)
    r = _cli("inference.py", "-checkpoint", run128, "-images", f"{src}:{dst}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "processed 3 images" in r.stdout
    assert sorted(os.listdir(dst)) == ["a.jpg.png", "a.png.png", "b.png"]
    for name in os.listdir(dst):
        assert cv2.imread(str(dst / name)) is not None
    assert _state(src) == before

    r = _cli("inference.py", "-checkpoint", run128, "-image", f"{src / 'a.jpg'}:{tmp_path / 'o.xyz'}")
    _one_error(r, 2, "o.xyz", "unknown extension")
    assert not (tmp_path / "o.xyz").exists() and "Loading" not in r.stdout and "detections" not in r.stdout
    assert _state(src) == before and not _temporaries(tmp_path)
