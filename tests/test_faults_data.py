"""Data-side faults of ``python -m data.coco_tfrecord_creator`` on real coco2017_mini images and annotations.

One case per fault: RLE segmentations whose run lengths do not add up to height x width (string and counts-list RLE,
crowd and not) are skipped and reported, and ``-strict`` makes them an error (exit 2, one line, nothing written);
a json without ``annotations`` gives a warning; the creator keeps files it did not write; a failed or killed run
leaves the previous complete output; TensorFlow's C++ start-up lines are hidden unless ``-verbose``.
"""

import copy
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from data import coco_tfrecord_creator as creator
from data.coco_json import SplitSpec, rle_string_total
from data import tfrecord_schema as schema

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROG = "data.coco_tfrecord_creator"
OWN = ["creation_report.json", "label_map.json"]
# TensorFlow's C++ start-up lines (TF 2.21): glog-style records and absl's pre-initialization notice
NOISE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|oneDNN|cuInit|cuda", re.M)


def _cli(*args, env=None, timeout=300):
    full = {k: v for k, v in os.environ.items() if k != "YOLACT_VERBOSE"}
    full.update(TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.run([sys.executable, "-m", PROG, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=full)


def _error_lines(res):
    """stderr lines other than tqdm's progress bar (which ends in carriage returns, not newlines)."""
    return [ln for ln in res.stderr.replace("\r", "\n").splitlines() if ln.strip() and not re.match(r"^val:", ln)]


def _records(out):
    files = sorted(tf.io.gfile.glob(str(out / "val-*.tfrecord")))
    return [{k: v.numpy() for k, v in schema.parse_example(r).items()} for r in tf.data.TFRecordDataset(files)]


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in pathlib.Path(folder).iterdir() if p.is_file()}


def _hidden(parent):
    return sorted(p.name for p in pathlib.Path(parent).iterdir() if p.name.startswith("."))


def _encode(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return rle["counts"].decode()


@pytest.fixture(scope="module")
def val_coco(coco_mini):
    return COCO(str(coco_mini / "annotations" / "instances_val2017.json"))


def _images(coco, crowd):
    """Ids of val images with an RLE crowd among their annotations (crowd=True; fewest annotations first) or with
    1..6 annotations and no crowd (crowd=False; json order)."""
    if crowd:
        ids = [im["id"] for im in coco.dataset["images"] if any(a["iscrowd"] for a in coco.imgToAnns[im["id"]])]
        return sorted(ids, key=lambda i: len(coco.imgToAnns[i]))
    return [im["id"] for im in coco.dataset["images"] if 1 <= len(coco.imgToAnns[im["id"]]) <= 6
            and not any(a["iscrowd"] for a in coco.imgToAnns[im["id"]])]


def _dataset(coco, coco_mini, root, image_ids, annotations, drop_annotations_key=False):
    """A COCO json of the given real val images (read from coco2017_mini/val2017) and annotations."""
    data = {k: v for k, v in coco.dataset.items() if k not in ("images", "annotations")}
    data["images"] = [coco.imgs[i] for i in image_ids]
    if not drop_annotations_key:
        data["annotations"] = annotations
    root.mkdir(parents=True, exist_ok=True)
    ann_file = root / "ann.json"
    ann_file.write_text(json.dumps(data))
    return ["-val_image_dir", coco_mini / "val2017", "-val_annotations_file", ann_file]


@pytest.fixture(scope="module")
def bad_rle(val_coco, coco_mini, tmp_path_factory):
    """Two real val images (one with a crowd RLE) and five crafted RLE annotations, one of them valid."""
    coco = val_coco
    plain_id, crowd_id = _images(coco, crowd=False)[0], _images(coco, crowd=True)[0]
    anns = [copy.deepcopy(a) for i in (plain_id, crowd_id) for a in coco.imgToAnns[i]]
    base = coco.imgToAnns[plain_id][0]
    crowd = next(a for a in coco.imgToAnns[crowd_id] if a["iscrowd"])
    assert isinstance(crowd["segmentation"]["counts"], list)  # the official uncompressed crowd RLE
    H, W = coco.imgs[plain_id]["height"], coco.imgs[plain_id]["width"]
    Hc, Wc = coco.imgs[crowd_id]["height"], coco.imgs[crowd_id]["width"]
    mask = coco.annToMask(base)
    crafted = {
        "string_ok": (plain_id, 0, {"size": [H, W], "counts": _encode(mask)}),
        "string_short": (plain_id, 0, {"size": [H, W], "counts": _encode(mask[:, : W - 1])}),
        "string_long_crowd": (plain_id, 1, {"size": [H, W], "counts": _encode(np.zeros((H + 1, W)))}),
        "list_long_crowd": (crowd_id, 1, dict(crowd["segmentation"],
                                              counts=crowd["segmentation"]["counts"][:-1]
                                              + [crowd["segmentation"]["counts"][-1] + 7])),
        "list_short": (crowd_id, 0, dict(crowd["segmentation"], counts=crowd["segmentation"]["counts"][:-1])),
    }
    ids = {}
    for n, (name, (image_id, iscrowd, segm)) in enumerate(crafted.items()):
        src = base if image_id == plain_id else crowd
        ids[name] = 10**9 + n
        anns.append(dict(copy.deepcopy(src), id=ids[name], iscrowd=iscrowd, segmentation=segm))
    root = tmp_path_factory.mktemp("bad_rle")
    args = _dataset(coco, coco_mini, root, [plain_id, crowd_id], anns)
    last = crowd["segmentation"]["counts"][-1]
    want = {
        ids["string_short"]: f"RLE counts total {H * (W - 1)} differs from height x width {H * W}",
        ids["string_long_crowd"]: f"RLE counts total {(H + 1) * W} differs from height x width {H * W}",
        ids["list_long_crowd"]: f"RLE counts total {Hc * Wc + 7} differs from height x width {Hc * Wc}",
        ids["list_short"]: f"RLE counts total {Hc * Wc - last} differs from height x width {Hc * Wc}",
    }
    return {"args": args, "root": root, "ids": ids, "want": want, "plain_id": plain_id, "crowd_id": crowd_id,
            "mask": mask}


def test_rle_total_of_pycocotools_strings(val_coco):
    """The counts-string reader agrees with pycocotools: every real annotation's compressed RLE sums to H x W."""
    n = 0
    for image_id in _images(val_coco, crowd=True)[:5] + _images(val_coco, crowd=False)[:5]:
        img = val_coco.imgs[image_id]
        for ann in val_coco.imgToAnns[image_id]:
            counts = val_coco.annToRLE(ann)["counts"].decode()
            assert rle_string_total(counts) == img["height"] * img["width"], ann["id"]
            n += 1
    assert n > 10
    assert rle_string_total("0") == 0 and rle_string_total("\x7f") is None
    assert rle_string_total("a") is None  # 'a' - '0' = 49: continuation bit set, string ends


def test_bad_rle_total_skipped_and_reported(bad_rle, val_coco, tmp_path):
    out = tmp_path / "out"
    res = _cli(*bad_rle["args"], "-output_dir", out, "-num_workers", 1)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads((out / "creation_report.json").read_text())
    skipped = {d["id"]: d["reason"] for d in report["splits"]["val"]["skipped_annotations"]}
    assert skipped == bad_rle["want"]
    assert report["splits"]["val"]["skipped_images"] == []
    real_plain = len(val_coco.imgToAnns[bad_rle["plain_id"]])
    real_crowd = len(val_coco.imgToAnns[bad_rle["crowd_id"]])
    assert f"val: 2/2 images written in 1 shard(s), {real_plain + real_crowd + 1} instances" in res.stdout
    assert "  skipped annotations: 4" in res.stdout
    for reason in bad_rle["want"].values():
        assert reason in res.stdout
    records = {int(r["source_id"]): r for r in _records(out)}
    plain = records[bad_rle["plain_id"]]
    assert len(plain["labels"]) == real_plain + 1  # + the valid string RLE, decoded like annToMask
    last = tf.io.decode_png(plain["masks_png"][-1]).numpy()[..., 0]
    np.testing.assert_array_equal(last, bad_rle["mask"])
    assert len(records[bad_rle["crowd_id"]]["labels"]) == real_crowd
    assert not NOISE.search(res.stderr), res.stderr  # a quiet start, also with TF_CPP_MIN_LOG_LEVEL=2


def test_bad_rle_strict_is_an_error_and_writes_nothing(bad_rle, val_coco, tmp_path):
    out = tmp_path / "out"
    res = _cli(*bad_rle["args"], "-output_dir", out, "-strict", "-num_workers", 1, timeout=120)
    assert res.returncode == 2
    ids = bad_rle["ids"]
    listed = [(ids["string_short"], bad_rle["plain_id"]), (ids["string_long_crowd"], bad_rle["plain_id"]),
              (ids["list_long_crowd"], bad_rle["crowd_id"])]
    items = "; ".join(f"val annotation {a} ({val_coco.imgs[i]['file_name']}): {bad_rle['want'][a]}" for a, i in listed)
    assert _error_lines(res) == [f"{PROG}: error: strict: 4 item(s) would be skipped: {items} (and 1 more)"]
    assert os.listdir(tmp_path) == []


def test_json_without_annotations_key_warns(val_coco, coco_mini, tmp_path):
    ids = _images(val_coco, crowd=False)[:2]
    args = _dataset(val_coco, coco_mini, tmp_path / "src", ids, None, drop_annotations_key=True)
    out = tmp_path / "out"
    res = _cli(*args, "-output_dir", out, "-num_workers", 1, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    want = (f"warning: {tmp_path / 'src' / 'ann.json'} has no 'annotations' key: the 2 records hold no objects "
            "(evaluation or inference only; training refuses them)")
    assert f"  {want}" in res.stdout.splitlines()
    assert "val: 2/2 images written in 1 shard(s), 0 instances (0 crowd), 2 images without instances" in res.stdout
    report = json.loads((out / "creation_report.json").read_text())
    assert report["splits"]["val"]["warnings"] == [want[len("warning: "):]]
    records = _records(out)
    assert [int(r["source_id"]) for r in records] == ids and all(len(r["labels"]) == 0 for r in records)


def _small_spec(val_coco, coco_mini, root, n=2):
    ids = _images(val_coco, crowd=False)[:n]
    anns = [a for i in ids for a in val_coco.imgToAnns[i]]
    args = _dataset(val_coco, coco_mini, root, ids, anns)
    return SplitSpec("val", str(args[1]), str(args[3])), args


def test_rerun_keeps_unrelated_files(val_coco, coco_mini, tmp_path):
    spec, _ = _small_spec(val_coco, coco_mini, tmp_path / "src")
    out = tmp_path / "out"
    creator.create_tfrecords([spec], str(out), num_shards=2, num_workers=1, progress=False)
    assert sorted(os.listdir(out)) == OWN + ["val-00000-of-00002.tfrecord", "val-00001-of-00002.tfrecord"]
    (out / "notes.txt").write_text("mine")
    (out / "extra.tfrecord").write_bytes(b"not a shard name of the creator")
    (out / "sub").mkdir()
    (out / "sub" / "keep.json").write_text("{}")
    creator.create_tfrecords([spec], str(out), num_shards=1, num_workers=1, progress=False)
    # its own files replaced (the 2-shard set removed), everything else kept as it was
    assert sorted(os.listdir(out)) == ["creation_report.json", "extra.tfrecord", "label_map.json", "notes.txt",
                                       "sub", "val-00000-of-00001.tfrecord"]
    assert (out / "notes.txt").read_text() == "mine" and (out / "sub" / "keep.json").read_text() == "{}"
    assert (out / "extra.tfrecord").read_bytes() == b"not a shard name of the creator"
    assert len(_records(out)) == 2
    assert _hidden(tmp_path) == []


def test_failed_strict_run_leaves_previous_output(bad_rle, val_coco, coco_mini, tmp_path):
    spec, _ = _small_spec(val_coco, coco_mini, tmp_path / "src")
    out = tmp_path / "out"
    creator.create_tfrecords([spec], str(out), num_workers=1, progress=False)
    (out / "notes.txt").write_text("mine")
    before = _snapshot(out)
    res = _cli(*bad_rle["args"], "-output_dir", out, "-strict", "-num_workers", 1, timeout=120)
    assert res.returncode == 2 and len(_error_lines(res)) == 1
    assert _snapshot(out) == before
    assert _hidden(tmp_path) == []


def test_killed_run_leaves_previous_output(val_coco, coco_mini, tmp_path):
    """SIGKILL while the 158 val images are being written: the earlier complete output is untouched."""
    spec, _ = _small_spec(val_coco, coco_mini, tmp_path / "src")
    out = tmp_path / "out"
    creator.create_tfrecords([spec], str(out), num_workers=1, progress=False)
    (out / "notes.txt").write_text("mine")
    before = _snapshot(out)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(
        [sys.executable, "-m", PROG, "-val_image_dir", str(coco_mini / "val2017"),
         "-val_annotations_file", str(coco_mini / "annotations" / "instances_val2017.json"),
         "-output_dir", str(out), "-num_workers", "1"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # records are being written into the hidden temp directory
            shards = list(tmp_path.glob(".out.tmp-*/val-*.tfrecord"))
            if shards and shards[0].stat().st_size > 1_000_000:
                break
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.05)
        else:
            pytest.fail("the creator did not start writing within 120 s")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert _snapshot(out) == before
    assert sorted(os.listdir(out)) == OWN + ["notes.txt", "val-00000-of-00001.tfrecord"]
    assert all(n.startswith(".out.tmp-") for n in _hidden(tmp_path))  # only the killed run's temp directory


def test_quiet_start_and_verbose(val_coco, coco_mini, tmp_path):
    """Without -verbose no C++ start-up line reaches stderr (TF_CPP_MIN_LOG_LEVEL=2 alone shows them); -verbose and
    YOLACT_VERBOSE=1 bring them back (oneDNN stays on: TensorFlow says so)."""
    _, args = _small_spec(val_coco, coco_mini, tmp_path / "src", n=1)
    res = _cli("--helpshort", timeout=60)
    assert "-verbose" in res.stdout and not NOISE.search(res.stderr)
    quiet = _cli(*args, "-output_dir", tmp_path / "quiet", "-num_workers", 1, timeout=120)
    assert quiet.returncode == 0 and not NOISE.search(quiet.stderr), quiet.stderr
    for name, extra, env in (("flag", ["-verbose"], None), ("env", [], {"YOLACT_VERBOSE": "1"})):
        res = _cli(*args, "-output_dir", tmp_path / name, "-num_workers", 1, *extra, env=env, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        assert "oneDNN custom operations are on" in res.stderr, (name, res.stderr[-2000:])
        assert "absl::InitializeLog" in res.stderr
        assert res.stdout.splitlines()[1:-1] == quiet.stdout.splitlines()[1:-1]  # same summary, other folder
