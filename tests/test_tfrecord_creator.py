"""The TFRecord creator (data/coco_tfrecord_creator.py and data/coco_json.py, encoding.py, shards.py) and
yolact/ops/label_map.py on real COCO 2017 images (../shared/data/coco2017_mini).

The two real splits are encoded once per module through the CLI (single-dash flags, 2 worker processes). The
bad-input cases use a small dataset built in tmp_path from real val images and their official annotations.
"""

import copy
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from data import coco_tfrecord_creator as creator
from data import shards
from data.coco_json import SplitSpec
from data.split_plan import CreatorError, SplitPlan
from yolact.ops import label_map as label_map_lib
from data import tfrecord_schema as schema

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPLIT_SIZES = {"train": 160, "val": 158}


def _read_records(pattern):
    files = sorted(tf.io.gfile.glob(str(pattern)))
    out = []
    for raw in tf.data.TFRecordDataset(files):
        p = schema.parse_example(raw)
        out.append({k: v.numpy() for k, v in p.items()} | {"format": _format(raw)})
    return out


def _format(raw):
    return tf.io.parse_single_example(raw, {schema.IMAGE_FORMAT: schema.FEATURE_SPEC[schema.IMAGE_FORMAT]})[
        schema.IMAGE_FORMAT
    ].numpy()


def _decode_mask(png):
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)


def _cli(*args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-m", "data.coco_tfrecord_creator", *map(str, args)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env,
    )


def _leftovers(parent):
    return sorted(p.name for p in pathlib.Path(parent).iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------------------------ real data


@pytest.fixture(scope="module")
def real_out(coco_mini, tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "records"
    args = []
    for split in ("train", "val"):
        args += [f"-{split}_image_dir", coco_mini / f"{split}2017",
                 f"-{split}_annotations_file", coco_mini / "annotations" / f"instances_{split}2017.json"]
    res = _cli(*args, "-output_dir", out, "-num_workers", 2)
    assert res.returncode == 0, res.stderr[-2000:]
    return out, res.stdout


@pytest.fixture(scope="module")
def cocos(coco_mini):
    return {s: COCO(str(coco_mini / "annotations" / f"instances_{s}2017.json")) for s in SPLIT_SIZES}


def test_record_counts_equal_json_image_counts(real_out, cocos):
    out, stdout = real_out
    assert sorted(os.listdir(out)) == [
        "creation_report.json", "label_map.json", "train-00000-of-00001.tfrecord", "val-00000-of-00001.tfrecord"
    ]
    for split, n in SPLIT_SIZES.items():
        assert len(cocos[split].dataset["images"]) == n
        assert len(_read_records(out / f"{split}-*.tfrecord")) == n
    assert "train: 160/160 images written in 1 shard(s), 1444 instances (14 crowd)" in stdout
    assert "val: 158/158 images written in 1 shard(s), 1424 instances (16 crowd)" in stdout
    report = json.loads((out / "creation_report.json").read_text())
    assert report["splits"]["val"]["skipped_images"] == [] and report["splits"]["val"]["skipped_annotations"] == []


@pytest.mark.parametrize("split", ["train", "val"])
def test_objects_and_images_equal_json(real_out, cocos, coco_mini, split):
    out, _ = real_out
    coco = cocos[split]
    records = _read_records(out / f"{split}-*.tfrecord")
    assert [int(r["source_id"]) for r in records] == [im["id"] for im in coco.dataset["images"]]
    for r in records:
        img = coco.imgs[int(r["source_id"])]
        anns = coco.imgToAnns[img["id"]]  # json order
        assert r["filename"].decode() == img["file_name"]
        assert (r["height"], r["width"]) == (img["height"], img["width"])
        # every image of coco2017_mini is a 3-channel RGB JPEG: its bytes are kept as they are
        assert r["format"] == b"jpeg"
        assert r["encoded"] == (coco_mini / f"{split}2017" / img["file_name"]).read_bytes()
        assert len(r["labels"]) == len(anns)
        assert r["labels"].tolist() == [a["category_id"] for a in anns]
        assert r["is_crowd"].tolist() == [bool(a["iscrowd"]) for a in anns]
        np.testing.assert_allclose(r["area"], [a["area"] for a in anns], rtol=1e-6)
        W, H = img["width"], img["height"]
        want = np.array([[y / H, x / W, (y + h) / H, (x + w) / W] for x, y, w, h in (a["bbox"] for a in anns)])
        np.testing.assert_allclose(r["boxes_yxyx"], want.reshape(-1, 4), atol=1e-6)


@pytest.mark.parametrize("split", ["train", "val"])
def test_every_mask_equals_ann_to_mask(real_out, cocos, split):
    out, _ = real_out
    coco = cocos[split]
    n_masks = 0
    n_crowd_rle = 0
    for r in _read_records(out / f"{split}-*.tfrecord"):
        anns = coco.imgToAnns[int(r["source_id"])]
        assert len(r["masks_png"]) == len(anns)
        for png, ann in zip(r["masks_png"], anns):
            mask = _decode_mask(png)
            assert mask.dtype == np.uint8 and mask.shape == (r["height"], r["width"])
            np.testing.assert_array_equal(mask, coco.annToMask(ann))
            n_masks += 1
            n_crowd_rle += ann["iscrowd"] and isinstance(ann["segmentation"]["counts"], list)
    assert n_masks == {"train": 1444, "val": 1424}[split]
    assert n_crowd_rle == {"train": 14, "val": 16}[split]  # crowd uncompressed RLE is covered


def test_label_map_contents(real_out, cocos):
    out, _ = real_out
    lm = label_map_lib.read_label_map(out)
    raw = json.loads((out / "label_map.json").read_text())
    assert raw["num_classes"] == 81 and len(raw["categories"]) == 80
    assert [c["index"] for c in raw["categories"]] == list(range(1, 81))
    cats = sorted(cocos["val"].dataset["categories"], key=lambda c: c["id"])
    assert [(c["id"], c["name"]) for c in raw["categories"]] == [(c["id"], c["name"]) for c in cats]
    assert lm.num_classes == 81
    # the original's COCO label map (data/config.py): id -> 1-based index
    assert (lm.id_to_index(1), lm.index_to_name(1)) == (1, "person")
    assert (lm.id_to_index(13), lm.id_to_name(13)) == (12, "stop sign")
    assert (lm.id_to_index(90), lm.index_to_id(80), lm.index_to_name(80)) == (80, 90, "toothbrush")
    arr = lm.id_to_index_array()
    assert arr.shape == (91,) and arr[12] == -1 and arr[0] == -1 and arr[91 - 1] == 80
    assert lm.index_to_id_array().tolist() == [0] + [c["id"] for c in cats]
    assert not lm.has_id(12)
    with pytest.raises(KeyError):
        lm.id_to_index(12)
    with pytest.raises(KeyError):
        lm.index_to_id(0)
    assert lm == label_map_lib.from_categories(cocos["train"].dataset["categories"])


def test_label_map_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        label_map_lib.read_label_map(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(label_map_lib.LabelMapError, match="cannot read label map"):
        label_map_lib.read_label_map(bad)
    bad.write_text(json.dumps({"num_classes": 3, "categories": [{"id": 5, "name": "a", "index": 2}]}))
    with pytest.raises(label_map_lib.LabelMapError, match="indices must be 1..n"):
        label_map_lib.read_label_map(bad)
    bad.write_text(json.dumps({"num_classes": 5, "categories": [{"id": 5, "name": "a", "index": 1}]}))
    with pytest.raises(label_map_lib.LabelMapError, match="num_classes 5"):
        label_map_lib.read_label_map(bad)
    with pytest.raises(label_map_lib.LabelMapError, match="duplicate category ids"):
        label_map_lib.from_categories([{"id": 1, "name": "a"}, {"id": 1, "name": "b"}])
    pascal = label_map_lib.from_names(["aeroplane", "bicycle"])
    assert (pascal.num_classes, pascal.id_to_index(2), pascal.index_to_name(2)) == (3, 2, "bicycle")


# ------------------------------------------------------------------------------------------------ bad input


def _val_json(coco_mini):
    return json.loads((coco_mini / "annotations" / "instances_val2017.json").read_text())


def _pick_images(data, n):
    """The first n val images with 1..4 annotations, none crowd (small, simple cases)."""
    anns = {}
    for a in data["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    chosen = [im for im in data["images"] if 1 <= len(anns.get(im["id"], [])) <= 4
              and not any(a["iscrowd"] for a in anns[im["id"]])][:n]
    assert len(chosen) == n
    return chosen, anns


def _build_bad_dataset(coco_mini, root):
    """Real val images in every problematic form, plus crafted annotations. Returns (json path, image dir, info)."""
    data = _val_json(coco_mini)
    images, anns = _pick_images(data, 10)
    src = coco_mini / "val2017"
    img_dir = root / "images"
    img_dir.mkdir(parents=True)
    names = ["ok.jpg", "gray.jpg", "rgba.png", "cmyk.jpg", "rgb.png", "empty.jpg", "truncated.jpg",
             "garbage.jpg", "missing.jpg", "palette.png"]
    out_images, out_anns = [], []
    for im, name in zip(images, names):
        pil = Image.open(src / im["file_name"])
        path = img_dir / name
        if name in ("ok.jpg", "empty.jpg"):
            shutil.copy(src / im["file_name"], path)
        elif name == "gray.jpg":
            pil.convert("L").save(path, quality=95)
        elif name == "rgba.png":
            rgba = pil.convert("RGBA")
            rgba.putalpha(128)
            rgba.save(path)
        elif name == "cmyk.jpg":
            pil.convert("CMYK").save(path, quality=95)
        elif name == "rgb.png":
            pil.save(path)
        elif name == "palette.png":
            pil.convert("P").save(path)
        elif name == "truncated.jpg":
            raw = (src / im["file_name"]).read_bytes()
            path.write_bytes(raw[: len(raw) // 2])
        elif name == "garbage.jpg":
            path.write_bytes(b"this is not an image\n" * 100)
        out_images.append(dict(im, file_name=name))
        if name != "empty.jpg":
            out_anns += [copy.deepcopy(a) for a in anns[im["id"]]]
    ok = images[0]
    base = anns[ok["id"]][0]
    next_id = 10**9

    def crafted(**kw):
        nonlocal next_id
        next_id += 1
        a = copy.deepcopy(base)
        a.update(kw, id=next_id)
        out_anns.append(a)
        return next_id

    W, H = ok["width"], ok["height"]
    x, y, w, h = base["bbox"]
    ids = {
        "unknown_image": crafted(image_id=123456789),
        "unknown_category": crafted(category_id=999),
        "zero_area": crafted(bbox=[x, y, 0.0, h]),
        "two_point_polygon": crafted(segmentation=[[x, y, x + w, y + h]]),
        "outside": crafted(bbox=[W + 5.0, y, 10.0, h]),
        "past_border": crafted(bbox=[-10.0, y, W + 20.0, h]),
    }
    data = dict(data, images=out_images, annotations=out_anns)
    ann_file = root / "ann.json"
    ann_file.write_text(json.dumps(data))
    return ann_file, img_dir, {"images": {n: im for n, im in zip(names, images)}, "ids": ids, "anns": anns}


@pytest.fixture(scope="module")
def bad_run(coco_mini, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    ann_file, img_dir, info = _build_bad_dataset(coco_mini, root)
    out = root / "out"
    report = creator.create_tfrecords([SplitSpec("val", str(img_dir), str(ann_file))], str(out),
                                      num_workers=2, progress=False)
    records = {r["filename"].decode(): r for r in _read_records(out / "val-*.tfrecord")}
    return report, records, info, out, root, img_dir, ann_file


def test_bad_images_are_skipped_by_name(bad_run):
    report, records, _, out, root, _, _ = bad_run
    s = report["splits"]["val"]
    skipped = {d["file_name"]: d["reason"] for d in s["skipped_images"]}
    assert sorted(skipped) == ["garbage.jpg", "missing.jpg", "truncated.jpg"]
    assert skipped["missing.jpg"] == "file not found"
    assert skipped["truncated.jpg"].startswith("cannot decode image")
    assert skipped["garbage.jpg"].startswith("cannot decode image")
    assert sorted(records) == ["cmyk.jpg", "empty.jpg", "gray.jpg", "ok.jpg", "palette.png", "rgb.png", "rgba.png"]
    assert (s["images_in_json"], s["images_written"], s["images_without_instances"]) == (10, 7, 1)
    assert sorted(os.listdir(out)) == ["creation_report.json", "label_map.json", "val-00000-of-00001.tfrecord"]
    assert _leftovers(root) == []
    summary = shards.format_summary(report)
    assert "val: 7/10 images written" in summary and "file not found (1): missing.jpg" in summary


def _decoded(record):
    return tf.io.decode_image(record["encoded"], channels=0, expand_animations=False).numpy()


def test_images_converted_to_rgb(bad_run, coco_mini):
    _, records, info, _, _, img_dir, _ = bad_run
    s_conv = bad_run[0]["splits"]["val"]["images_converted"]
    assert s_conv == {"JPEG L": 1, "JPEG CMYK": 1, "PNG RGBA": 1, "PNG P": 1}
    for name, r in records.items():
        assert _decoded(r).shape == (r["height"], r["width"], 3), name
    # kept byte for byte: RGB JPEG and RGB PNG
    assert records["ok.jpg"]["encoded"] == (img_dir / "ok.jpg").read_bytes()
    assert records["rgb.png"]["encoded"] == (img_dir / "rgb.png").read_bytes()
    assert records["rgb.png"]["format"] == b"png" and records["ok.jpg"]["format"] == b"jpeg"
    # grayscale -> 3 equal channels close to the gray source
    g = _decoded(records["gray.jpg"]).astype(int)
    gray_src = np.asarray(Image.open(img_dir / "gray.jpg")).astype(int)
    assert records["gray.jpg"]["format"] == b"jpeg"
    assert np.abs(g - gray_src[..., None]).mean() < 2.0
    # RGBA PNG -> lossless RGB PNG with the original pixels (alpha dropped)
    rgba_src = np.asarray(Image.open(img_dir / "rgba.png"))
    assert records["rgba.png"]["format"] == b"png"
    np.testing.assert_array_equal(_decoded(records["rgba.png"]), rgba_src[..., :3])
    pal_src = np.asarray(Image.open(img_dir / "palette.png").convert("RGB"))
    np.testing.assert_array_equal(_decoded(records["palette.png"]), pal_src)
    # CMYK JPEG -> RGB JPEG close to the source's RGB rendering
    cmyk_rgb = np.asarray(Image.open(img_dir / "cmyk.jpg").convert("RGB")).astype(int)
    assert records["cmyk.jpg"]["format"] == b"jpeg"
    assert np.abs(_decoded(records["cmyk.jpg"]).astype(int) - cmyk_rgb).mean() < 2.0


def test_bad_annotations_are_skipped_and_boxes_clipped(bad_run):
    report, records, info, _, _, _, ann_file = bad_run
    ids = info["ids"]
    skipped = {d["id"]: d["reason"] for d in report["splits"]["val"]["skipped_annotations"]}
    assert skipped == {
        ids["unknown_image"]: "unknown image id 123456789",
        ids["unknown_category"]: "unknown category id 999",
        ids["zero_area"]: "zero-area box",
        ids["two_point_polygon"]: "polygon with fewer than 3 points",
        ids["outside"]: "box outside the image",
    }
    assert report["splits"]["val"]["boxes_clipped"] == 1
    ok_img = info["images"]["ok.jpg"]
    real = info["anns"][ok_img["id"]]
    r = records["ok.jpg"]
    assert len(r["labels"]) == len(real) + 1  # its real annotations + the clipped one
    W, H = ok_img["width"], ok_img["height"]
    x, y, w, h = real[0]["bbox"]
    np.testing.assert_allclose(r["boxes_yxyx"][-1], [y / H, 0.0, (y + h) / H, 1.0], atol=1e-6)
    coco = COCO(str(ann_file))
    clipped_ann = [a for a in coco.imgToAnns[ok_img["id"]] if a["id"] == ids["past_border"]][0]
    np.testing.assert_array_equal(_decode_mask(r["masks_png"][-1]), coco.annToMask(clipped_ann))
    assert len(records["empty.jpg"]["labels"]) == 0 and records["empty.jpg"]["masks_png"].shape == (0,)
    for name in ("gray.jpg", "cmyk.jpg", "rgba.png"):  # converted images keep all their annotations
        assert len(records[name]["labels"]) == len(info["anns"][info["images"][name]["id"]])


def test_strict_mode_writes_nothing(bad_run, tmp_path):
    _, _, _, _, _, img_dir, ann_file = bad_run
    out = tmp_path / "out"
    expected = r"^strict: 6 item\(s\) would be skipped: val image missing.jpg: file not found"
    with pytest.raises(CreatorError, match=expected):
        creator.create_tfrecords([SplitSpec("val", str(img_dir), str(ann_file))], str(out), strict=True,
                                 num_workers=1, progress=False)
    assert os.listdir(tmp_path) == []


def _two_image_dataset(coco_mini, root, second="truncated"):
    data = _val_json(coco_mini)
    images, anns = _pick_images(data, 2)
    img_dir = root / "images"
    img_dir.mkdir()
    shutil.copy(coco_mini / "val2017" / images[0]["file_name"], img_dir / images[0]["file_name"])
    raw = (coco_mini / "val2017" / images[1]["file_name"]).read_bytes()
    (img_dir / images[1]["file_name"]).write_bytes(raw[: len(raw) // 2] if second == "truncated" else raw)
    data = dict(data, images=images, annotations=anns[images[0]["id"]] + anns[images[1]["id"]])
    ann_file = root / "ann.json"
    ann_file.write_text(json.dumps(data))
    return SplitSpec("val", str(img_dir), str(ann_file))


def test_existing_output_replaced_only_on_success(coco_mini, tmp_path):
    (tmp_path / "src").mkdir()
    spec = _two_image_dataset(coco_mini, tmp_path / "src", second="truncated")
    out = tmp_path / "dst" / "records"
    r1 = creator.create_tfrecords([spec], str(out), num_workers=1, progress=False)
    assert r1["splits"]["val"]["images_written"] == 1
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # strict fails while encoding (the truncated image is found by a worker): the old output stays as it was
    with pytest.raises(CreatorError, match="^strict: image .*cannot decode image"):
        creator.create_tfrecords([spec], str(out), num_workers=2, strict=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _leftovers(out.parent) == []
    # success replaces it
    creator.create_tfrecords([spec], str(out), num_shards=2, num_workers=1, progress=False)
    assert sorted(os.listdir(out)) == ["creation_report.json", "label_map.json", "val-00000-of-00002.tfrecord",
                                       "val-00001-of-00002.tfrecord"]
    assert len(_read_records(out / "val-*.tfrecord")) == 1
    assert _leftovers(out.parent) == []


def test_refuses_to_replace_foreign_shards(coco_mini, tmp_path):
    """A folder with shards of this tool's names but no label_map.json holds someone else's records."""
    (tmp_path / "src").mkdir()
    spec = _two_image_dataset(coco_mini, tmp_path / "src", second="ok")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "val-00000-of-00001.tfrecord").write_bytes(b"not mine")
    with pytest.raises(CreatorError, match="holds shards .* but no label_map.json.*refusing to replace"):
        creator.create_tfrecords([spec], str(out), num_workers=1, progress=False)
    assert os.listdir(out) == ["val-00000-of-00001.tfrecord"]
    assert (out / "val-00000-of-00001.tfrecord").read_bytes() == b"not mine"
    assert _leftovers(tmp_path) == []


def test_category_lists_must_agree(coco_mini, tmp_path):
    (tmp_path / "src").mkdir()
    spec = _two_image_dataset(coco_mini, tmp_path / "src", second="ok")
    data = json.loads(pathlib.Path(spec.annotations_file).read_text())
    data["categories"] = data["categories"][:-1]
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    with pytest.raises(CreatorError, match="category lists differ"):
        creator.create_tfrecords([spec, SplitSpec("train", spec.image_dir, str(other))],
                                 str(tmp_path / "out"), num_workers=1, progress=False)
    assert not (tmp_path / "out").exists()


def test_writer_takes_a_plan_of_any_reader(coco_mini, tmp_path):
    """data/shards.py writes a SplitPlan built without data/coco_json.py, as another dataset reader would give it."""
    img = _val_json(coco_mini)["images"][0]
    W, H = img["width"], img["height"]
    polygon = [[0.1 * W, 0.2 * H, 0.5 * W, 0.2 * H, 0.5 * W, 0.6 * H]]
    path = coco_mini / "val2017" / img["file_name"]
    task = {"image_id": img["id"], "file_name": img["file_name"], "path": str(path), "height": H, "width": W,
            "anns": [{"id": 7, "category_id": 3, "name": "car", "iscrowd": 0, "area": 12.5,
                      "box": (0.1, 0.2, 0.5, 0.6), "segmentation": polygon}]}
    label_map = label_map_lib.from_categories([{"id": 3, "name": "car"}])
    plan = SplitPlan(name="train", source="hand-made", label_map=label_map, tasks=[task], skipped_images=[],
                     skipped_annotations=[], num_images=1)
    report = shards.write_tfrecords([plan], str(tmp_path / "out"), num_workers=1, progress=False)
    assert report["num_classes"] == 2 and report["splits"]["train"]["instances_written"] == 1
    assert sorted(os.listdir(tmp_path / "out")) == ["creation_report.json", "label_map.json",
                                                    "train-00000-of-00001.tfrecord"]
    (record,) = _read_records(tmp_path / "out" / "train-*.tfrecord")
    assert int(record["source_id"]) == img["id"] and record["labels"].tolist() == [3]
    np.testing.assert_allclose(record["boxes_yxyx"][0], [0.2, 0.1, 0.6, 0.5], atol=1e-6)
    want = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygon, H, W)))
    np.testing.assert_array_equal(_decode_mask(record["masks_png"][0]), want)
    assert record["encoded"] == path.read_bytes()


@pytest.mark.parametrize("case", ["invalid_json", "not_coco", "missing_json", "missing_dir", "half_split"])
def test_fatal_input_one_line_error_nothing_written(coco_mini, tmp_path, case):
    ann = tmp_path / "ann.json"
    img_dir = coco_mini / "val2017"
    ann.write_text({"invalid_json": "{\"images\": [", "not_coco": "[1, 2, 3]"}.get(case, "{}"))
    args = ["-val_image_dir", img_dir, "-val_annotations_file", ann]
    if case == "missing_json":
        args[3] = tmp_path / "nope.json"
    if case == "missing_dir":
        args[1] = tmp_path / "no_such_dir"
        ann.write_text((coco_mini / "annotations" / "instances_val2017.json").read_text())
    if case == "half_split":
        args += ["-train_image_dir", img_dir]
    out = tmp_path / "out"
    res = _cli(*args, "-output_dir", out, timeout=120)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("data.coco_tfrecord_creator: error: "), res.stderr
    expected = {"invalid_json": "cannot read annotation file", "not_coco": "not a COCO-style json",
                "missing_json": "annotation file not found", "missing_dir": "val image directory not found",
                "half_split": "-train_image_dir and -train_annotations_file must be given together"}[case]
    assert expected in lines[0]
    assert sorted(os.listdir(tmp_path)) == ["ann.json"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_interrupted_run_leaves_no_output(coco_mini, tmp_path, sig):
    out = tmp_path / "out"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(
        [sys.executable, "-m", "data.coco_tfrecord_creator", "-val_image_dir", str(coco_mini / "val2017"),
         "-val_annotations_file", str(coco_mini / "annotations" / "instances_val2017.json"),
         "-output_dir", str(out), "-num_workers", "1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # a shell's background job inherits SIGINT ignored; restore the default as in an interactive run
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # wait until records are being written into the temp directory
            shards = list(tmp_path.glob(".out.tmp-*/val-*.tfrecord"))
            if shards and shards[0].stat().st_size > 1_000_000:
                break
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.05)
        else:
            pytest.fail("the creator did not start writing within 120 s")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not out.exists(), (proc.returncode, err[-3000:])
    if sig != signal.SIGKILL:
        assert proc.returncode == 128 + sig and "interrupted; nothing written" in err
        assert os.listdir(tmp_path) == []  # the temp directory is removed too
    else:
        assert proc.returncode == -signal.SIGKILL
        assert all(p.name.startswith(".out.tmp-") for p in tmp_path.iterdir())  # only a hidden temp dir remains


# ------------------------------------------------------------------------------------------------ bundled sample


def test_bundled_sample_is_cut_from_the_official_jsons(coco_mini):
    sample = ROOT / "samples" / "coco_mini"
    total = sum(p.stat().st_size for p in sample.rglob("*") if p.is_file())
    assert total <= 8 * 1024 * 1024
    for split, n_images in (("train", 24), ("val", 12)):
        cut = json.loads((sample / "annotations" / f"instances_{split}2017.json").read_text())
        full = json.loads((coco_mini / "annotations" / f"instances_{split}2017.json").read_text())
        assert cut["categories"] == full["categories"] and len(cut["categories"]) == 80
        full_images = {im["id"]: im for im in full["images"]}
        assert len(cut["images"]) == n_images
        assert all(full_images[im["id"]] == im for im in cut["images"])
        ids = {im["id"] for im in cut["images"]}
        assert cut["annotations"] == [a for a in full["annotations"] if a["image_id"] in ids]
        assert sorted(os.listdir(sample / f"{split}2017")) == sorted(im["file_name"] for im in cut["images"])
        for im in cut["images"]:
            src = coco_mini / f"{split}2017" / im["file_name"]
            assert (sample / f"{split}2017" / im["file_name"]).read_bytes() == src.read_bytes()
        if split == "train":
            per_image = {i: [a for a in cut["annotations"] if a["image_id"] == i] for i in ids}
            assert all(1 <= len(v) <= 6 and not any(a["iscrowd"] for a in v) for v in per_image.values())
