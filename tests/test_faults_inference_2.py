"""Faults and bad input, round 2: inference.py, export_saved_model.py and utils.convert_weights on real data.

Each test also checks what is left on disk: inputs unchanged (bytes and mtimes), no partial output, no temporary,
a previous output / export intact. Model: the session's converted fixture ResNet-50 weights (conftest
``r50_weights``) copied into a run folder whose config.json says img_size 128; images: coco2017_mini val2017 and
../shared/data/media. Faults that need a broken writer (a full disk, a killed conversion) run the tool through
runpy in a subprocess whose prelude patches the writer: no test hook in library code.
"""

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


# ---------------------------------------------------------------------------------------------------------------
# Every reader's failure is one line naming the file


def _truncate(path, keep=0.5):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))


def test_truncated_exports_are_one_line_errors_and_tflite_runs_quietly(r50_export, photos, tmp_path):
    """A truncated .onnx, .tflite and SavedModel variables file: exit 2, one line naming the file, no output. The
    intact .tflite runs without LiteRT's 'INFO: Created TensorFlow Lite XNNPACK delegate' line (-verbose shows it)."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "label_map.json", "yolact.onnx", "yolact_float32.tflite"):
        shutil.copy(r50_export / name, broken / name)
    _truncate(broken / "yolact.onnx")
    _truncate(broken / "yolact_float32.tflite")
    saved = tmp_path / "saved"
    shutil.copytree(r50_export, saved, ignore=shutil.ignore_patterns("*.onnx", "*.tflite", "*.xml", "*.bin"))
    data = sorted((saved / "variables").glob("variables.data-*"))[0]
    _truncate(data)
    out = tmp_path / "out"
    for model in (broken / "yolact.onnx", broken / "yolact_float32.tflite", saved):
        r = _cli("inference.py", "-model", model, "-image", f"{photos[0]}:{out / 'o.png'}")
        _one_error(r, 2, f"cannot read {model}")
    assert not out.exists()

    r = _cli("inference.py", "-model", r50_export / "yolact_float32.tflite", "-num_threads", 2, "-image",
             f"{photos[0]}:{out / 'o.png'}")
    assert r.returncode == 0 and r.stderr == "", r.stderr[-3000:]
    assert (out / "o.png").is_file() and not _temporaries(out)


@pytest.fixture(scope="module")
def truncated_ckpt(tmp_path_factory, run128):
    """A run folder with a training checkpoint (tf.train.Checkpoint of the model's variables) whose .data file is
    cut in half, config.json and label_map.json of run128."""
    import tensorflow as tf

    from config import get_config
    from yolact.model import build_model, checkpoint_variables

    folder = tmp_path_factory.mktemp("ckpt_run")
    model = build_model(get_config("yolact_resnet50", img_size=128), freeze_bn=True)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model_variables=checkpoint_variables(model)),
                                         str(folder), max_to_keep=1)
    manager.save()
    for name in ("config.json", "label_map.json"):
        shutil.copy(run128 / name, folder / name)
    _truncate(sorted(folder.glob("ckpt-*.data-*"))[0])
    return folder


def test_truncated_checkpoint_and_npz_are_one_line_errors(truncated_ckpt, fixture_weights_path, photos, tmp_path):
    before = _state(truncated_ckpt)
    out = tmp_path / "out"
    r = _cli("inference.py", "-checkpoint", truncated_ckpt, "-image", f"{photos[0]}:{out / 'o.png'}")
    _one_error(r, 2, "cannot read checkpoint", truncated_ckpt / "ckpt-1")
    r = _cli("export_saved_model.py", "-checkpoint", truncated_ckpt, "-export_dir", tmp_path / "export")
    _one_error(r, 2, "cannot read checkpoint", truncated_ckpt / "ckpt-1")
    assert _state(truncated_ckpt) == before and not out.exists() and sorted(os.listdir(tmp_path)) == []

    npz = tmp_path / "w.npz"
    shutil.copy(fixture_weights_path, npz)
    _truncate(npz, 0.7)
    r = _cli("utils.convert_weights", "-src", npz, "-config", "yolact_resnet50", "-out", tmp_path / "w.weights.h5")
    _one_error(r, 2, npz, "truncated or corrupt")
    assert sorted(os.listdir(tmp_path)) == ["w.npz"]


# ---------------------------------------------------------------------------------------------------------------
# Evaluation inputs


def test_eval_inputs_that_do_not_fit_are_one_line_errors(run128, records, coco_mini, tmp_path):
    """-tfrecord_pattern FOLDER holding train and val shards evaluates its val shards only; a folder of train
    shards only, TFRecords of other images than the annotations, files that are not TFRecords and an annotations
    json that is a list: exit 2, one line, no output written."""
    out = tmp_path / "out"
    r = _cli("inference.py", "-checkpoint", run128, "-eval", "-annotations_file", records["val_json"],
             "-tfrecord_pattern", records["dir"], "-output_dir", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "(3 of 3 images evaluated)" in r.stdout, r.stdout[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images_evaluated"] == 3 and not _temporaries(out)
    assert sorted(os.listdir(out)) == ["bbox_detections.json", "detections.json", "mask_detections.json",
                                       "metrics.json"]

    train_only = tmp_path / "train_only"
    train_only.mkdir()
    for p in records["dir"].glob("train-*"):
        shutil.copy(p, train_only / p.name)
    not_records = tmp_path / "not_records"
    not_records.mkdir()
    shutil.copy(records["val_json"], not_records / "val-00000-of-00001.tfrecord")
    as_list = tmp_path / "list.json"
    as_list.write_text(json.dumps(json.loads(records["val_json"].read_text())["annotations"]))
    before = _state(records["dir"], train_only, not_records, as_list)
    fresh = tmp_path / "fresh"
    cases = [
        ([records["val_json"], "-tfrecord_pattern", train_only], ["holds train shards but no val"]),
        ([records["val_json"], "-tfrecord_pattern", records["dir"] / "train-*.tfrecord"],
         ["is not in", str(records["val_json"]), "another annotations file"]),
        ([records["val_json"], "-tfrecord_pattern", not_records], ["cannot read", "TFRecords"]),
        ([as_list, "-image_dir", coco_mini / "val2017"], [str(as_list), "is not a COCO json", "got a json list"]),
    ]
    for args, needles in cases:
        r = _cli("inference.py", "-checkpoint", run128, "-eval", "-annotations_file", *args, "-output_dir", fresh)
        _one_error(r, 2, *needles)
        assert not fresh.exists()
    assert _state(records["dir"], train_only, not_records, as_list) == before

    r = _cli("export_saved_model.py", "-checkpoint", run128, "-export_dir", tmp_path / "export", "-tflite", "int8",
             "-representative_data", not_records / "*")
    _one_error(r, 2, "-representative_data", "is not a TFRecord file")
    assert not (tmp_path / "export").exists()


# ---------------------------------------------------------------------------------------------------------------
# Writers: a full disk or a killed process leaves complete files (or the previous ones)

# A full disk under $FAULT_DIR: every file opened there for writing takes 16 bytes, then raises ENOSPC.
FULL_DISK = r'''
import builtins, errno, os
_open, _full = builtins.open, os.path.realpath(os.environ["FAULT_DIR"])
class _Full:
    def __init__(self, f): self._f = f
    def write(self, data):
        self._f.write(data[:16]); self._f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")
    def __getattr__(self, name): return getattr(self._f, name)
    def __enter__(self): return self
    def __exit__(self, *exc): self._f.close()
def _open_full(file, mode="r", *args, **kwargs):
    f = _open(file, mode, *args, **kwargs)
    writing = any(c in mode for c in "wax+")
    if writing and isinstance(file, (str, os.PathLike)) and os.path.realpath(file).startswith(_full + os.sep):
        return _Full(f)
    return f
builtins.open = _open_full
'''


def test_full_disk_during_inference_keeps_previous_outputs(run128, photos, tmp_path):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    dst.mkdir()
    shutil.copy(photos[0], src / "a.jpg")
    (dst / "a.png").write_bytes(b"previous output")
    before = _state(src, dst)
    r = _cli("inference.py", "-checkpoint", run128, "-images", f"{src}:{dst}", prelude=FULL_DISK,
             env={"FAULT_DIR": str(dst)})
    _one_error(r, 1, "no space left", dst / "a.png")
    assert _state(src, dst) == before and not _temporaries(tmp_path)


def test_full_disk_during_export_keeps_the_previous_export(run128, tmp_path):
    """tf.saved_model.save writes part of the model, then the disk is full: exit 1, one line, the previous export
    (a folder with a marker file) is intact, no temporary folder is left beside it."""
    target = tmp_path / "exports" / "model"
    target.mkdir(parents=True)
    (target / "saved_model.pb").write_bytes(b"the previous export")
    before = _state(target)
    prelude = (
        "import errno, os, tensorflow as tf\n"
        "def _save(obj, export_dir, *a, **k):\n"
        "    open(os.path.join(export_dir, 'saved_model.pb'), 'wb').write(b'partial')\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "tf.saved_model.save = _save\n")
    r = _cli("export_saved_model.py", "-checkpoint", run128, "-export_dir", target, "-overwrite", "-xla_nms=false",
             prelude=prelude)
    _one_error(r, 1, "no space left", target)
    assert _state(target) == before and sorted(os.listdir(target.parent)) == ["model"]


def test_converter_writes_out_atomically(fixture_weights_path, tmp_path):
    """A re-conversion killed while writing (SIGKILL) or stopped by a full disk leaves the previous .weights.h5 and
    config.json as they were (a killed one may leave its hidden temporary, never a truncated -out)."""
    out = tmp_path / "run" / "r50.weights.h5"
    r = _cli("utils.convert_weights", "-src", fixture_weights_path, "-config", "yolact_resnet50", "-out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    before = _state(out.parent)
    # The weights file is written, then fsynced before its rename: cut it to half there, then die or fail.
    half_then = ("import os, signal, errno\n"
                 "def fsync(fd):\n"
                 "    os.ftruncate(fd, os.fstat(fd).st_size // 2)\n"
                 "    {}\n"
                 "os.fsync = fsync\n")
    r = _cli("utils.convert_weights", "-src", fixture_weights_path, "-config", "yolact_resnet50", "-out", out,
             prelude=half_then.format("os.kill(os.getpid(), signal.SIGKILL)"))
    assert r.returncode == -9, r.stderr[-3000:]
    assert {p: v for p, v in _state(out.parent).items() if ".tmp-" not in p} == before
    for p in _temporaries(out.parent):
        os.unlink(p)

    r = _cli("utils.convert_weights", "-src", fixture_weights_path, "-config", "yolact_resnet50", "-out", out,
             prelude=half_then.format("raise OSError(errno.ENOSPC, 'No space left on device')"))
    _one_error(r, 1, "no space left", out)
    assert _state(out.parent) == before and not _temporaries(out.parent)


def test_missing_camera_is_one_line_without_opencv_warnings(run128, tmp_path):
    r = _cli("inference.py", "-checkpoint", run128, "-video", f"7:{tmp_path / 'cam.mp4'}")
    assert r.returncode == 2 and r.stderr.splitlines() == ["inference.py: error: cannot open camera 7"], r.stderr
    assert os.listdir(tmp_path) == []
