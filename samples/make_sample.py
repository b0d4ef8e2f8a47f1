"""Cut the bundled quick-start sample ``samples/coco_mini/`` from ``../shared/data/coco2017_mini``.

Deterministic: same input, same output. Run from anywhere::

    python samples/make_sample.py            # reads ../shared (or $YOLACT_SHARED), rewrites samples/coco_mini/

Selection (so that a short CPU training can fit the train images):

* train: 24 images with 1..6 instances, no crowd annotation, every instance at least 32x32 px in area (COCO's
  "not small"), the ones with the fewest instances first, ties by image id;
* val: 12 images with 1..6 instances whose categories all occur in the chosen train images, every instance at
  least 32x32 px in area; crowd annotations are allowed and images holding one would be taken first (in
  coco2017_mini none qualifies: crowds come with many instances), then by fewest instances and image id.

Images are copied byte for byte; the jsons keep the official ``info``, ``licenses``, full ``categories``, and the
chosen images with all of their annotations (same ids, nothing edited).
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("YOLACT_SHARED", ROOT.parent / "shared")).resolve()
SOURCE = SHARED / "data" / "coco2017_mini"
TARGET = ROOT / "samples" / "coco_mini"
NUM_TRAIN, NUM_VAL = 24, 12
MAX_INSTANCES = 6
MIN_AREA = 32 * 32


def _load(split: str):
    data = json.loads((SOURCE / "annotations" / f"instances_{split}2017.json").read_text())
    anns = collections.defaultdict(list)
    for a in data["annotations"]:
        anns[a["image_id"]].append(a)
    return data, anns


def _eligible(anns, allow_crowd: bool) -> bool:
    non_crowd = [a for a in anns if not a["iscrowd"]]
    return (
        1 <= len(non_crowd) <= MAX_INSTANCES
        and (allow_crowd or len(non_crowd) == len(anns))
        and all(a["area"] >= MIN_AREA for a in non_crowd)
    )


def select_train(data, anns):
    """The train images of the sample (see the module docstring), in json order."""
    cands = [im for im in data["images"] if _eligible(anns[im["id"]], allow_crowd=False)]
    chosen = sorted(cands, key=lambda im: (len(anns[im["id"]]), im["id"]))[:NUM_TRAIN]
    ids = {im["id"] for im in chosen}
    return [im for im in data["images"] if im["id"] in ids]


def select_val(data, anns, train_categories):
    """The val images of the sample (see the module docstring), in json order."""
    cands = [
        im for im in data["images"]
        if _eligible(anns[im["id"]], allow_crowd=True)
        and {a["category_id"] for a in anns[im["id"]]} <= train_categories
    ]
    key = lambda im: (not any(a["iscrowd"] for a in anns[im["id"]]), len(anns[im["id"]]), im["id"])  # noqa: E731
    chosen = sorted(cands, key=key)[:NUM_VAL]
    ids = {im["id"] for im in chosen}
    return [im for im in data["images"] if im["id"] in ids]


def _write(split: str, data, anns, images) -> None:
    img_dir = TARGET / f"{split}2017"
    img_dir.mkdir(parents=True)
    for im in images:
        shutil.copyfile(SOURCE / f"{split}2017" / im["file_name"], img_dir / im["file_name"])
    ids = {im["id"] for im in images}
    cut = {
        "info": data.get("info", {}),
        "licenses": data.get("licenses", []),
        "images": images,
        "annotations": [a for a in data["annotations"] if a["image_id"] in ids],
        "categories": data["categories"],
    }
    (TARGET / "annotations").mkdir(parents=True, exist_ok=True)
    (TARGET / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(cut, separators=(",", ":")))
    n_ann = len(cut["annotations"])
    n_crowd = sum(a["iscrowd"] for a in cut["annotations"])
    print(f"{split}: {len(images)} images, {n_ann} annotations ({n_crowd} crowd)")


def main() -> int:
    if not SOURCE.is_dir():
        print(f"make_sample: error: {SOURCE} not found (set YOLACT_SHARED to the shared/ folder)", file=sys.stderr)
        return 1
    train, train_anns = _load("train")
    val, val_anns = _load("val")
    train_images = select_train(train, train_anns)
    categories = {a["category_id"] for im in train_images for a in train_anns[im["id"]]}
    val_images = select_val(val, val_anns, categories)
    if len(train_images) != NUM_TRAIN or len(val_images) != NUM_VAL:
        print(f"make_sample: error: only {len(train_images)} train / {len(val_images)} val images qualify",
              file=sys.stderr)
        return 1
    if TARGET.exists():
        shutil.rmtree(TARGET)
    _write("train", train, train_anns, train_images)
    _write("val", val, val_anns, val_images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
