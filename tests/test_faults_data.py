"""Data-side faults of ``python -m data.coco_tfrecord_creator`` on real coco2017_mini images and annotations.

One case per fault: RLE segmentations whose run lengths do not add up to height x width (string and counts-list RLE,
crowd and not) are skipped and reported, and ``-strict`` makes them an error (exit 2, one line, nothing written);
a json without ``annotations`` gives a warning; the creator keeps files it did not write; a failed or killed run
leaves the previous complete output; TensorFlow's C++ start-up lines are hidden unless ``-verbose``.

Round 2 (each case checks what is left on disk): a disk filling up anywhere (shards, label map, report, the commit;
injected ENOSPC, and a real 2 MiB tmpfs where this machine may mount one), a json nested 200,000 deep, a category
id of 10**12, inputs checked before work starts; on the training side, a truncated shard counts its records before
the corruption, and a label map missing categories of the records is a one-line ``train.py: error`` (exit 2).
"""

import copy
import errno
import json
import os
import pathlib
import re
import shutil
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
from data.parser import TrainRecords
from tests.test_train import records  # noqa: F401  (session fixture: 8 real train records in 2 shards)
from utils import atomic
from yolact.ops import label_map as label_map_lib

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


# ------------------------------------------------------------------------------------------------ round 2


def _previous_output(val_coco, coco_mini, tmp_path):
    """A complete earlier output (2 real val images in 2 shards, plus a file of the user's) and the spec of a
    different run (3 images, 1 shard) that would replace all of the creator's files in it."""
    first, _ = _small_spec(val_coco, coco_mini, tmp_path / "src1", n=2)
    out = tmp_path / "out"
    creator.create_tfrecords([first], str(out), num_shards=2, num_workers=1, progress=False)
    (out / "notes.txt").write_text("mine")
    second, _ = _small_spec(val_coco, coco_mini, tmp_path / "src2", n=3)
    return out, second, _snapshot(out)


def _no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FullFile:
    """A file object whose writes fail with ENOSPC (the disk filled up)."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        _no_space()

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _inject_disk_full(monkeypatch, where, out):
    """Make the creator's next write at ``where`` fail with OSError(ENOSPC), in this process."""
    if where == "shard":  # the third record of the shard
        calls = []

        def write(self, record, _write=tf.io.TFRecordWriter.write):
            calls.append(1)
            if len(calls) == 3:
                _no_space()
            return _write(self, record)

        monkeypatch.setattr(tf.io.TFRecordWriter, "write", write)
    elif where in ("label_map.json", "creation_report.json"):  # both go through utils.atomic
        def fake_open(path, *args, _open=open, **kwargs):
            f = _open(path, *args, **kwargs)
            return _FullFile(f) if f"{where}.tmp-" in os.fspath(path) else f

        monkeypatch.setattr(atomic, "open", fake_open, raising=False)
    else:  # "commit": the third rename into or out of the output folder (two old files are moved aside by then)
        renames = []

        def rename(src, dst, _rename=os.rename):
            if os.path.dirname(os.path.abspath(src)) == str(out):
                renames.append(dst)
                if len(renames) == 3:
                    _no_space()
            return _rename(src, dst)

        monkeypatch.setattr(os, "rename", rename)


@pytest.mark.parametrize("where", ["shard", "label_map.json", "creation_report.json", "commit"])
def test_disk_full_anywhere_leaves_the_previous_output(val_coco, coco_mini, tmp_path, monkeypatch, where):
    """ENOSPC while writing a shard, the label map, the report, or while moving the new files in: DiskFullError (an
    OSError: the CLI's one line, exit 1) naming the output folder; the previous output is unchanged byte for byte and
    no temporary file or folder is left."""
    out, spec, before = _previous_output(val_coco, coco_mini, tmp_path)
    _inject_disk_full(monkeypatch, where, out)
    with pytest.raises(atomic.DiskFullError) as info:
        creator.create_tfrecords([spec], str(out), num_shards=1, num_workers=1, progress=False)
    monkeypatch.undo()
    assert str(info.value) == f"[Errno 28] no space left on the device while writing {out} (nothing was replaced)"
    assert _snapshot(out) == before
    assert sorted(os.listdir(out)) == OWN + ["notes.txt", "val-00000-of-00002.tfrecord", "val-00001-of-00002.tfrecord"]
    assert _hidden(tmp_path) == [] and _hidden(out) == []


@pytest.fixture
def tmpfs(tmp_path):
    """A 2 MiB tmpfs (a disk that fills up for real); skipped where this machine may not mount one."""
    disk = tmp_path / "disk"
    disk.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.decode().strip()[:100]}): the injected ENOSPC cases "
                    "cover it")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_disk_full_for_real_is_one_line_and_keeps_the_previous_output(val_coco, coco_mini, tmp_path, tmpfs):
    """The CLI on a 2 MiB tmpfs: 2 images fit, 40 do not (TensorFlow's writer fails): one line, exit 1, the
    previous output unchanged, no temporary left on the disk."""
    small, _ = _small_spec(val_coco, coco_mini, tmp_path / "src1", n=2)
    out = tmpfs / "out"
    creator.create_tfrecords([small], str(out), num_workers=1, progress=False)
    before = _snapshot(out)
    _, args = _small_spec(val_coco, coco_mini, tmp_path / "src2", n=40)
    res = _cli(*args, "-output_dir", out, "-num_workers", 1, timeout=180)
    assert res.returncode == 1, res.stderr[-2000:]
    assert _error_lines(res) == [f"{PROG}: error: cannot write {out}: no space left on the device; nothing written, "
                                 "the previous output, if any, is unchanged"]
    assert _snapshot(out) == before and _hidden(tmpfs) == [] and sorted(os.listdir(tmpfs)) == ["out"]


def test_json_nested_too_deeply_is_one_line(val_coco, coco_mini, tmp_path):
    """A json nested 200,000 deep (json.load's RecursionError): one line naming the file, exit 2, nothing written;
    the same for a label_map.json."""
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    res = _cli("-val_image_dir", coco_mini / "val2017", "-val_annotations_file", deep, "-output_dir",
               tmp_path / "out", timeout=120)
    assert res.returncode == 2
    assert _error_lines(res) == [f"{PROG}: error: cannot read annotation file {deep}: nested too deeply"]
    assert sorted(os.listdir(tmp_path)) == ["deep.json"]
    with pytest.raises(label_map_lib.LabelMapError, match=f"^cannot read label map {deep}: nested too deeply$"):
        label_map_lib.read_label_map(deep)


def test_category_id_too_large_is_refused(val_coco, coco_mini, tmp_path):
    """A category id of 10**12 (real val annotations relabelled): one line naming the id and the file, exit 2, the
    previous output unchanged; a label_map.json holding it is refused, and no label map can make
    id_to_index_array allocate more than 4 MiB."""
    out, _, before = _previous_output(val_coco, coco_mini, tmp_path)
    ids = _images(val_coco, crowd=False)[:2]
    anns = [dict(a, category_id=10**12) if a["category_id"] == 1 else a for i in ids for a in val_coco.imgToAnns[i]]
    args = _dataset(val_coco, coco_mini, tmp_path / "big", ids, anns)
    data = json.loads(args[3].read_text())
    data["categories"] = [dict(c, id=10**12) if c["id"] == 1 else c for c in data["categories"]]
    args[3].write_text(json.dumps(data))
    res = _cli(*args, "-output_dir", out, timeout=120)
    assert res.returncode == 2
    assert _error_lines(res) == [f"{PROG}: error: {args[3]}: category id {10**12} outside 0..1048575 (renumber the "
                                 "categories)"]
    assert _snapshot(out) == before and _hidden(tmp_path) == []
    lm = label_map_lib.read_label_map(out).to_json_dict()
    lm["categories"][0]["id"] = 10**12
    (tmp_path / "lm.json").write_text(json.dumps(lm))
    with pytest.raises(label_map_lib.LabelMapError, match="category id 1000000000000 outside 0..1048575"):
        label_map_lib.read_label_map(tmp_path / "lm.json")
    with pytest.raises(label_map_lib.LabelMapError, match="category id -1 outside"):
        label_map_lib.from_categories([{"id": -1, "name": "a"}])
    top = label_map_lib.from_categories([{"id": label_map_lib.MAX_CATEGORY_ID, "name": "a"}])
    assert top.id_to_index_array().nbytes == 4 * 2**20


@pytest.mark.parametrize("case", ["output_below_a_file", "second_split_dir_missing", "wrong_image_dir"])
def test_inputs_checked_before_work_starts(val_coco, coco_mini, tmp_path, case):
    """Bad inputs found before any record is written: one line, exit 2, nothing written (the earlier output of a
    folder, when there is one, unchanged)."""
    _, args = _small_spec(val_coco, coco_mini, tmp_path / "src", n=2)
    out = tmp_path / "out"
    if case == "output_below_a_file":
        out = args[3] / "out"
        want = f"cannot create {out}: {args[3]} is not a writable directory"
    elif case == "second_split_dir_missing":  # the val split is fine: its json is not even read
        args += ["-train_image_dir", tmp_path / "nope", "-train_annotations_file", args[3]]
        want = f"train image directory not found: {tmp_path / 'nope'}"
    else:  # the val json with the train images
        args[1] = coco_mini / "train2017"
        want = f"{args[3]}: none of its 2 image files is in {args[1]} (wrong image directory?)"
    res = _cli(*args, "-output_dir", out, timeout=120)
    assert res.returncode == 2
    assert _error_lines(res) == [f"{PROG}: error: {want}"]
    assert sorted(os.listdir(tmp_path)) == ["src"] and sorted(os.listdir(tmp_path / "src")) == ["ann.json"]


def _record_ends(shard):
    """Byte offset after each record of a TFRecord file (8-byte length, 4-byte CRC, data, 4-byte CRC)."""
    ends, pos = [], 0
    for r in tf.data.TFRecordDataset(str(shard)):
        pos += len(r.numpy()) + 16
        ends.append(pos)
    return ends


def test_truncated_shard_counts_the_records_before_the_corruption(records, tmp_path):
    """A one-shard dataset whose shard is a truncated copy of a real one (cut inside its third record): the two
    records before the cut are counted (not 0: training uses them) and the shard is listed as unreadable (the
    trainer names it as corrupt); counting writes nothing."""
    good = sorted((records / "mini").glob("train-*.tfrecord"))[0]
    ends = _record_ends(good)
    assert len(ends) == 4
    data = tmp_path / "one"
    data.mkdir()
    shutil.copy(records / "mini" / "label_map.json", data / "label_map.json")
    shard = data / "train-00000-of-00001.tfrecord"
    shard.write_bytes(good.read_bytes()[: ends[1] + (ends[2] - ends[1]) // 2])
    before = _snapshot(data)
    examples = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(good)).take(2)]
    trainable = sum(0 in ex.features.feature[schema.IS_CROWD].int64_list.value for ex in examples)
    assert trainable > 0
    assert TrainRecords(data).count() == (2, trainable, (str(shard),))
    assert _snapshot(data) == before and _hidden(data) == []


def test_label_map_without_categories_of_the_records_is_a_user_error(records, tmp_path):
    """label_map.json without two categories the real records use: TrainRecords.count() names the missing ids and
    the file; train.py stops before building anything with that one line, exit 2 (not 100 lines of 'Error in
    user-defined function passed' and exit 1); no run folder is written and the data folder is unchanged."""
    data = tmp_path / "records" / "mini"
    shutil.copytree(records / "mini", data)
    used = sorted({int(v) for f in sorted(data.glob("train-*.tfrecord")) for r in tf.data.TFRecordDataset(str(f))
                   for v in tf.train.Example.FromString(r.numpy()).features.feature[schema.CLASS_LABEL]
                   .int64_list.value})
    lm = label_map_lib.read_label_map(data)
    dropped = used[:2]
    kept = [{"id": c.id, "name": c.name} for c in lm.categories if c.id not in dropped]
    label_map_lib.write_label_map(data, label_map_lib.from_categories(kept))
    before = _snapshot(data)
    want = (f"{data / 'label_map.json'} lacks category id(s) {dropped[0]}, {dropped[1]} used by "
            f"{data / 'train-*.tfrecord'}: write the records and the label map together "
            "(python -m data.coco_tfrecord_creator)")
    with pytest.raises(label_map_lib.LabelMapError) as info:
        TrainRecords(data).count()
    assert str(info.value) == want
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    res = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-name", "mini", "-tfrecord_dir", str(tmp_path / "records"),
         "-weights", str(tmp_path / "w"), "-config", "yolact_efficientnet_lite0", "-img_size", "128",
         "-batch_size", "2", "-train_iter", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    assert [ln for ln in res.stderr.splitlines() if ln.strip()] == [f"train.py: error: {want}"], res.stderr[-2000:]
    assert not (tmp_path / "w").exists() and _snapshot(data) == before
