"""LabelMe and YOLO-seg input of the TFRecord creator (data/dataset_formats.py, labelme_reader.py, yolo_reader.py,
plan_builder.py) and a CVAT-style COCO json, on real COCO 2017 images (../shared/data/coco2017_mini).

The LabelMe and YOLO-seg copies are written here from the official COCO annotations of three val images (polygons
-> LabelMe shapes, several polygons of one instance sharing a ``group_id``; -> normalised YOLO lines); the records
read back with data/tfrecord_schema.py must hold COCO's masks (pycocotools ``annToMask``).
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from data import dataset_formats
from data import tfrecord_schema as schema
from data.split_plan import CreatorError

ROOT = pathlib.Path(__file__).resolve().parents[1]
IMAGE_IDS = (22892, 51712, 158227)  # file-name order; 5 + 2 + 2 instances, 4 of them multi-part polygons


def _records(out, split="val"):
    files = sorted(tf.io.gfile.glob(str(out / f"{split}-*.tfrecord")))
    recs = []
    for raw in tf.data.TFRecordDataset(files):
        p = {k: v.numpy() for k, v in schema.parse_example(raw).items()}
        p["texts"] = tf.io.parse_single_example(raw, {schema.CLASS_TEXT: schema.FEATURE_SPEC[schema.CLASS_TEXT]})[
            schema.CLASS_TEXT].values.numpy().tolist()
        p["masks"] = [cv2.imdecode(np.frombuffer(m, np.uint8), cv2.IMREAD_UNCHANGED) for m in p["masks_png"]]
        recs.append(p)
    return recs


def _iou(a, b):
    a, b = a.astype(bool), b.astype(bool)
    return (a & b).sum() / max((a | b).sum(), 1)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "data.coco_tfrecord_creator", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


@pytest.fixture(scope="module")
def gt(coco_mini):
    coco = COCO(str(coco_mini / "annotations" / "instances_val2017.json"))
    images = [coco.imgs[i] for i in IMAGE_IDS]
    anns = {i: [a for a in coco.imgToAnns[i] if not a["iscrowd"]] for i in IMAGE_IDS}
    return coco, images, anns


def _labelme_copy(folder, coco, images, anns, coco_mini):
    """One LabelMe json per image beside a copy of it; a multi-part instance's polygons share a group_id."""
    folder.mkdir(parents=True, exist_ok=True)
    for img in images:
        shutil.copy(coco_mini / "val2017" / img["file_name"], folder / img["file_name"])
        shapes = []
        for k, a in enumerate(anns[img["id"]]):
            for poly in a["segmentation"]:
                shapes.append({"label": coco.cats[a["category_id"]]["name"],
                               "points": np.reshape(poly, (-1, 2)).tolist(), "shape_type": "polygon",
                               "group_id": k if len(a["segmentation"]) > 1 else None, "flags": {}})
        doc = {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": img["file_name"], "imageData": None,
               "imageHeight": img["height"], "imageWidth": img["width"]}
        (folder / (pathlib.Path(img["file_name"]).stem + ".json")).write_text(json.dumps(doc))


def _yolo_copy(root, coco, images, anns, coco_mini, names):
    """root/images/val + root/labels/val + data.yaml; one line per single-polygon instance (6 decimals)."""
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    kept = {}
    for img in images:
        shutil.copy(coco_mini / "val2017" / img["file_name"], root / "images" / "val" / img["file_name"])
        kept[img["id"]] = [a for a in anns[img["id"]] if len(a["segmentation"]) == 1]
        lines = []
        for a in kept[img["id"]]:
            xy = np.reshape(a["segmentation"][0], (-1, 2)) / [img["width"], img["height"]]
            cls = names.index(coco.cats[a["category_id"]]["name"])
            lines.append(f"{cls} " + " ".join(f"{v:.6f}" for v in xy.ravel()))
        (root / "labels" / "val" / (pathlib.Path(img["file_name"]).stem + ".txt")).write_text("\n".join(lines))
    (root / "data.yaml").write_text(f"path: .\nval: images/val\nnames: {json.dumps(names)}\n")
    return kept


def _assert_coco_masks(recs, coco, images, anns):
    """Each record holds its image's instances in order, with COCO's masks (IoU >= 0.97) and names; returns the
    IoUs."""
    assert len(recs) == len(images)
    ious = []
    for rec, img in zip(recs, images):
        assert rec["filename"].decode().endswith(img["file_name"])
        assert (int(rec["height"]), int(rec["width"])) == (img["height"], img["width"])
        assert len(rec["masks"]) == len(anns[img["id"]])
        for a, mask, text in zip(anns[img["id"]], rec["masks"], rec["texts"]):
            assert text.decode() == coco.cats[a["category_id"]]["name"]
            ious.append(_iou(mask, coco.annToMask(a)))
    assert min(ious) >= 0.97, ious
    return ious


def test_labelme_copy_gives_coco_masks(gt, coco_mini, tmp_path):
    coco, images, anns = gt
    _labelme_copy(tmp_path / "lm", coco, images, anns, coco_mini)
    out = tmp_path / "out"
    r = _cli("-format", "labelme", "-val_image_dir", tmp_path / "lm", "-output_dir", out, "-num_workers", 1)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "annotations/val.json" in r.stdout
    ious = _assert_coco_masks(_records(out), coco, images, anns)
    assert sum(len(a["segmentation"]) > 1 for v in anns.values() for a in v) == 4  # multi-part ones included
    print(f"LabelMe copy: {len(ious)} instances, min IoU {min(ious):.4f}")
    names = sorted({coco.cats[a["category_id"]]["name"] for v in anns.values() for a in v})
    label_map = json.loads((out / "label_map.json").read_text())
    assert [c["name"] for c in label_map["categories"]] == names  # no -labels: the sorted labels found
    # the split's COCO json: loadable, the same masks (what -eval and -val_annotations read)
    split = COCO(str(out / "annotations" / "val.json"))
    assert sorted(im["file_name"] for im in split.imgs.values()) == sorted(im["file_name"] for im in images)
    for img in images:
        mine = next(i for i, im in split.imgs.items() if im["file_name"] == img["file_name"])
        for a, b in zip(split.imgToAnns[mine], anns[img["id"]]):
            assert _iou(split.annToMask(a), coco.annToMask(b)) >= 0.97
            np.testing.assert_allclose(a["bbox"], b["bbox"], atol=0.5)


def test_yolo_copy_gives_coco_masks(gt, coco_mini, tmp_path):
    coco, images, anns = gt
    names = sorted({coco.cats[a["category_id"]]["name"] for v in anns.values() for a in v})
    kept = _yolo_copy(tmp_path / "ds", coco, images, anns, coco_mini, names)
    out = tmp_path / "out"
    r = _cli("-format", "yolo", "-data_yaml", tmp_path / "ds" / "data.yaml", "-output_dir", out, "-num_workers", 1)
    assert r.returncode == 0, r.stderr[-2000:]
    ious = _assert_coco_masks(_records(out), coco, images, kept)
    print(f"YOLO copy: {len(ious)} instances, min IoU {min(ious):.4f}")
    label_map = json.loads((out / "label_map.json").read_text())
    assert [(c["id"], c["name"]) for c in label_map["categories"]] == [(k + 1, n) for k, n in enumerate(names)]
    assert len(COCO(str(out / "annotations" / "val.json")).anns) == sum(map(len, kept.values()))


def _report(out):
    return json.loads((out / "creation_report.json").read_text())["splits"]


def _reasons(split):
    return ({(d["file_name"], d["reason"]) for d in split["skipped_images"]},
            {(d["image"], d["id"], d["reason"]) for d in split["skipped_annotations"]})


def test_labelme_bad_input_is_reported(gt, coco_mini, tmp_path):
    coco, images, anns = gt
    folder = tmp_path / "lm"
    _labelme_copy(folder, coco, images[:2], anns, coco_mini)
    first, second = (pathlib.Path(im["file_name"]).stem for im in images[:2])
    doc = json.loads((folder / f"{first}.json").read_text())
    doc["shapes"] += [
        {"label": "person", "points": [[1, 1], [30, 2]], "shape_type": "polygon", "group_id": None},
        {"label": "unicorn", "points": [[1, 1], [30, 2], [20, 20]], "shape_type": "polygon", "group_id": None},
        {"label": "person", "points": [[50, 50], [10, 0]], "shape_type": "circle", "group_id": None},
        {"label": "person", "points": [[-20, -10], [40, 30]], "shape_type": "rectangle", "group_id": None},
        {"label": "__ignore__", "points": [[1, 1], [30, 2], [20, 20]], "shape_type": "polygon"},
    ]
    (folder / f"{first}.json").write_text(json.dumps(doc))
    doc = json.loads((folder / f"{second}.json").read_text())
    doc["imageHeight"] += 10  # the file disagrees with its json
    (folder / f"{second}.json").write_text(json.dumps(doc))
    (folder / "missing.json").write_text(json.dumps(doc | {"imagePath": "nowhere.jpg"}))
    (folder / "broken.json").write_text("{not json")
    (folder / "results.json").write_text("[]")  # no LabelMe file: left out with a warning
    labels = tmp_path / "labels.txt"
    labels.write_text("__ignore__\n_background_\nperson\n" + "\n".join(
        sorted({coco.cats[a["category_id"]]["name"] for im in images[:2] for a in anns[im["id"]]} - {"person"})) + "\n")
    out = tmp_path / "out"
    report = dataset_formats.create_from_format("labelme", str(out), {"val": str(folder)}, str(labels),
                                                num_workers=1, progress=False)["splits"]["val"]
    assert report == _report(out)["val"]
    images_skipped, anns_skipped = _reasons(report)
    w, h = images[1]["width"], images[1]["height"]
    assert images_skipped == {("broken.json", "cannot read LabelMe json (Expecting property name enclosed in "
                                              "double quotes: line 1 column 2 (char 1))"),
                              ("missing.json", "image file not found ('nowhere.jpg')"),
                              (images[1]["file_name"], f"image is {w}x{h} but the json says {w}x{h + 10}")}
    shapes = sum(len(a["segmentation"]) for a in anns[images[0]["id"]])
    assert anns_skipped == {(images[0]["file_name"], f"shape {shapes}", "polygon with fewer than 3 points"),
                            (images[0]["file_name"], f"shape {shapes + 1}", "unknown label 'unicorn'"),
                            (images[0]["file_name"], f"shape {shapes + 2}",
                             "shape type 'circle' is not an instance mask")}
    assert report["images_in_json"] == 4 and report["images_written"] == 1
    assert report["instances_written"] == len(anns[images[0]["id"]]) + 1  # + the clipped rectangle
    assert report["boxes_clipped"] >= 1
    assert any("results.json" in w for w in report["warnings"])
    assert any("1 shape(s) labelled __ignore__" in w for w in report["warnings"])
    rect = _records(out)[0]["masks"][-1]
    assert rect[:30, :40].all() and rect.sum() == 30 * 40  # rectangle (-20,-10)-(40,30) clipped to (0,0)-(40,30)
    # -strict: an error, nothing written
    strict_out = tmp_path / "strict"
    with pytest.raises(CreatorError, match="strict: 5 item"):
        dataset_formats.create_from_format("labelme", str(strict_out), {"val": str(folder)}, str(labels),
                                           num_workers=1, progress=False, strict=True)
    assert not strict_out.exists() and not any(p.name.startswith(".strict") for p in tmp_path.iterdir())


def test_yolo_bad_input_is_reported(gt, coco_mini, tmp_path):
    coco, images, anns = gt
    names = sorted({coco.cats[a["category_id"]]["name"] for v in anns.values() for a in v})
    root = tmp_path / "ds"
    _yolo_copy(root, coco, images[:1], anns, coco_mini, names)
    label = root / "labels" / "val" / (pathlib.Path(images[0]["file_name"]).stem + ".txt")
    good = label.read_text().splitlines()
    bad = ["0 0.5 0.5 0.2 0.2", "99 0.1 0.1 0.2 0.1 0.2 0.2", "0 0.1 0.1", "0 0.1 0.1 0.2",
           "0 x 0.1 0.2 0.1 0.2 0.2", "0 -0.5 -0.5 0.5 -0.5 0.5 0.5 -0.5 0.5"]
    label.write_text("\n".join(good + bad) + "\n")
    (root / "images" / "val" / "corrupt.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    report = dataset_formats.create_from_format("yolo", str(out), data_yaml=str(root / "data.yaml"), num_workers=1,
                                                progress=False)["splits"]["val"]
    assert report == _report(out)["val"]
    images_skipped, anns_skipped = _reasons(report)
    assert {(n, r.split(" (")[0]) for n, r in images_skipped} == {("images/val/corrupt.jpg", "cannot decode image")}
    name = os.path.join("images", "val", images[0]["file_name"])
    k = len(good)
    assert anns_skipped == {(name, f"line {k + 1}", "box-only line (no mask)"),
                            (name, f"line {k + 2}", "unknown class 99"),
                            (name, f"line {k + 3}", "polygon with fewer than 3 points"),
                            (name, f"line {k + 4}", "odd number of coordinates"),
                            (name, f"line {k + 5}", "malformed line (not numbers)")}
    assert report["instances_written"] == k + 1 and report["boxes_clipped"] == 1
    mask = _records(out)[0]["masks"][-1]  # the clipped square: (0, 0)-(W/2, H/2)
    H, W = images[0]["height"], images[0]["width"]
    assert _iou(mask, np.pad(np.ones((H // 2, W // 2)), ((0, H - H // 2), (0, W - W // 2)))) > 0.99
    with pytest.raises(CreatorError, match="strict: 6 item"):
        dataset_formats.create_from_format("yolo", str(tmp_path / "strict"), data_yaml=str(root / "data.yaml"),
                                           num_workers=1, progress=False, strict=True)
    assert not (tmp_path / "strict").exists()


def test_cvat_style_coco_json(gt, coco_mini, tmp_path):
    """CVAT's "COCO 1.0" export: extra keys (info, licenses, attributes), a brush mask as iscrowd uncompressed RLE,
    a box-only shape with an empty segmentation (no mask: skipped and listed)."""
    coco, images, anns = gt
    img = images[0]
    a = anns[img["id"]][0]
    mask = coco.annToMask(a)
    flat = np.asfortranarray(mask).ravel(order="F")
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], change])).tolist()  # uncompressed RLE, starting with a run of 0s
    assert mask_utils.decode(mask_utils.frPyObjects({"counts": counts, "size": [img["height"], img["width"]]},
                                                    img["height"], img["width"])).sum() == mask.sum()
    cat = {"id": 1, "name": coco.cats[a["category_id"]]["name"], "supercategory": ""}
    doc = {"licenses": [{"name": "", "id": 0, "url": ""}], "info": {"contributor": "", "version": ""},
           "categories": [cat],
           "images": [{"id": 1, "width": img["width"], "height": img["height"], "file_name": img["file_name"],
                       "license": 0, "flickr_url": "", "coco_url": "", "date_captured": 0}],
           "annotations": [
               {"id": 1, "image_id": 1, "category_id": 1, "segmentation": {"counts": counts,
                                                                           "size": [img["height"], img["width"]]},
                "area": float(mask.sum()), "bbox": a["bbox"], "iscrowd": 1, "attributes": {"occluded": False}},
               {"id": 2, "image_id": 1, "category_id": 1, "segmentation": [], "area": 100.0,
                "bbox": [10, 10, 10, 10], "iscrowd": 0, "attributes": {"occluded": False}}]}
    ann_file = tmp_path / "instances_default.json"
    ann_file.write_text(json.dumps(doc))
    out = tmp_path / "out"
    r = _cli("-val_image_dir", coco_mini / "val2017", "-val_annotations_file", ann_file, "-output_dir", out,
             "-num_workers", 1)
    assert r.returncode == 0, r.stderr[-2000:]
    rec = _records(out)[0]
    assert len(rec["masks"]) == 1 and rec["is_crowd"].tolist() == [True]
    np.testing.assert_array_equal(rec["masks"][0], mask)
    assert _reasons(_report(out)["val"])[1] == {(img["file_name"], 2, "empty segmentation")}


def test_flags_of_another_format_are_errors(tmp_path):
    r = _cli("-format", "labelme", "-val_image_dir", tmp_path, "-val_annotations_file", tmp_path / "a.json",
             "-output_dir", tmp_path / "out")
    assert r.returncode == 2 and "-val_annotations_file belongs to -format coco" in r.stderr
    r = _cli("-format", "yolo", "-output_dir", tmp_path / "out")
    assert r.returncode == 2 and "-format yolo needs -data_yaml" in r.stderr
    assert not (tmp_path / "out").exists()
