"""utils/coco_eval.py on the real coco2017_mini val annotations: ground truth as detections scores AP 1.0, and the
written metrics equal COCOeval run directly on the written results files."""

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from utils import coco_eval


@pytest.fixture(scope="module")
def gt(coco_mini):
    return coco_eval.load_coco(coco_mini / "annotations" / "instances_val2017.json")


def _gt_as_results(gt, jitter=0.0, drop_every=0, seed=0):
    rng = np.random.default_rng(seed)
    results = []
    for n, ann in enumerate(a for a in gt.dataset["annotations"] if not a["iscrowd"]):
        if drop_every and n % drop_every == 0:
            continue
        rle = mask_utils.encode(np.asfortranarray(gt.annToMask(ann)))
        rle["counts"] = rle["counts"].decode("ascii")
        x, y, w, h = ann["bbox"]
        if jitter:
            x, y = x + jitter * w * rng.normal(), y + jitter * h * rng.normal()
        results.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": [x, y, w, h],
                        "segmentation": rle, "score": float(rng.uniform(0.1, 1.0)) if jitter else 1.0})
    return results


def test_ground_truth_as_detections_gives_ap_1(gt, tmp_path):
    results = _gt_as_results(gt)
    assert len(results) == 1408  # 1424 annotations, 16 crowd
    metrics = coco_eval.evaluate_results(gt, results, output_dir=tmp_path, verbose=False)
    assert sorted(metrics) == sorted(f"{p}/{m}" for p in ("box", "mask") for m in coco_eval.METRIC_NAMES)
    for key, value in metrics.items():
        assert value == pytest.approx(1.0, abs=1e-12), key
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics


def _direct(gt, path, iou_type):
    ev = COCOeval(gt, gt.loadRes(str(path)), iou_type)
    ev.evaluate(), ev.accumulate(), ev.summarize()
    return ev.stats


def test_metrics_equal_cocoeval_on_written_files(gt, tmp_path):
    results = _gt_as_results(gt, jitter=0.08, drop_every=5)
    metrics = coco_eval.evaluate_results(gt, results, output_dir=tmp_path, verbose=True)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == metrics
    box = _direct(gt, tmp_path / "detections.json", "bbox")  # combined file: bbox part as in the original
    mask = _direct(gt, tmp_path / "mask_detections.json", "segm")
    assert 0.2 < metrics["box/AP"] < 0.9 and 0.2 < metrics["mask/AP"] < 0.9  # imperfect on purpose
    for i, name in enumerate(coco_eval.METRIC_NAMES):
        assert written[f"box/{name}"] == pytest.approx(box[i], abs=1e-12)
        assert written[f"mask/{name}"] == pytest.approx(mask[i], abs=1e-12)
    assert len(json.loads((tmp_path / "detections.json").read_text())) == len(results)


def test_detections_to_coco_entries(gt):
    ann = next(a for a in gt.dataset["annotations"] if not a["iscrowd"] and a["category_id"] == 18)
    mask = gt.annToMask(ann)
    ys, xs = np.nonzero(mask)
    box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    ids = sorted(gt.getCatIds())
    result = {"boxes": np.array([box, [5, 5, 5, 9]]), "classes": np.array([ids.index(18), 0]),
              "category_ids": np.array([18, ids[0]]), "scores": np.array([0.75, 0.5], np.float32),
              "masks": np.stack([mask, mask])}
    entries = coco_eval.detections_to_coco(ann["image_id"], result)
    assert len(entries) == 1  # the zero-width box is not written (eval.py prep_metrics)
    e = entries[0]
    assert e["category_id"] == 18 and e["image_id"] == ann["image_id"] and e["score"] == 0.75
    assert e["bbox"] == [box[0], box[1], box[2] - box[0], box[3] - box[1]]
    assert isinstance(e["segmentation"]["counts"], str)
    np.testing.assert_array_equal(mask_utils.decode(e["segmentation"]), mask)
    json.dumps(entries)


def test_no_detections_and_missing_annotations(gt, tmp_path):
    metrics = coco_eval.evaluate_results(gt, [], verbose=False)
    assert all(v == 0 for v in metrics.values())
    with pytest.raises(FileNotFoundError, match="annotations file not found"):
        coco_eval.load_coco(tmp_path / "nope.json")
