"""data/parser.py on TFRecords written from real COCO val2017 images (../shared/data/coco2017_mini).

The records are made once per module by the TFRecord creator from a cut of the official val json: 18 real images
with their annotations (the one with 45 objects, the crowd images, others), plus one image whose annotations were
removed and one crowd image reduced to its crowds, in 2 shards.
"""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from config import get_config
from data import coco_tfrecord_creator as creator
from data import parser
from data.coco_json import SplitSpec
from data import tfrecord_schema as schema

CFG = get_config("yolact_resnet50")
NO_AUG = dataclasses.replace(CFG, parser=dataclasses.replace(
    CFG.parser, augment_photometric_distort=False, augment_expand=False, augment_random_sample_crop=False,
    augment_random_mirror=False))
N_ANCHORS = 19248


@pytest.fixture(scope="module")
def records(coco_mini, tmp_path_factory):
    src = json.loads((coco_mini / "annotations" / "instances_val2017.json").read_text())
    anns_by_img = {}
    for a in src["annotations"]:
        anns_by_img.setdefault(a["image_id"], []).append(a)
    ids = sorted(anns_by_img)
    crowd_ids = [i for i in ids if any(a["iscrowd"] for a in anns_by_img[i])]
    busiest = max(ids, key=lambda i: len(anns_by_img[i]))
    chosen = set(crowd_ids[:5] + [busiest])
    chosen = sorted(chosen | set([i for i in ids if i not in chosen][: 20 - len(chosen)]))
    empty_id, crowd_only_id = [i for i in chosen if i not in crowd_ids and i != busiest][0], crowd_ids[0]
    anns = []
    for i in chosen:
        if i == empty_id:
            continue
        anns += [a for a in anns_by_img[i] if i != crowd_only_id or a["iscrowd"]]
    cut = dict(src, images=[im for im in src["images"] if im["id"] in chosen], annotations=anns)
    root = tmp_path_factory.mktemp("parser")
    (root / "val.json").write_text(json.dumps(cut))
    out = root / "records"
    creator.create_tfrecords([SplitSpec("val", str(coco_mini / "val2017"), str(root / "val.json"))],
                             str(out), num_shards=2, num_workers=1, progress=False)
    return str(out / "val-*.tfrecord"), cut


def _counts(cut):
    per = {im["id"]: [] for im in cut["images"]}
    for a in cut["annotations"]:
        per[a["image_id"]].append(a)
    return per


def test_train_batch_shapes_and_dtypes(records):
    pattern, _ = records
    images, t = next(iter(parser.train_dataset(pattern, CFG, 2, seed=1)))
    assert images.shape == (2, 550, 550, 3) and images.dtype == tf.float32
    expected = {
        "cls_t": ([2, N_ANCHORS], tf.int32), "loc_t": ([2, N_ANCHORS, 4], tf.float32),
        "idx_t": ([2, N_ANCHORS], tf.int32), "gt_boxes": ([2, 100, 4], tf.float32),
        "gt_classes": ([2, 100], tf.int32), "gt_masks": ([2, 100, 138, 138], tf.float32),
        "segm_t": ([2, 69, 69, 80], tf.float32), "num_obj": ([2], tf.int32),
    }
    assert set(t) == set(expected)
    for k, (shape, dtype) in expected.items():
        assert t[k].shape == shape and t[k].dtype == dtype, k


def test_train_targets_are_consistent(records):
    pattern, _ = records
    for images, t in parser.train_dataset(pattern, CFG, 4, seed=2).take(3):
        t = {k: v.numpy() for k, v in t.items()}
        for b in range(4):
            n = t["num_obj"][b]
            assert n >= 1
            assert (t["gt_classes"][b, :n] >= 1).all() and (t["gt_classes"][b, n:] == 0).all()
            assert not t["gt_masks"][b, n:].any() and not t["gt_boxes"][b, n:].any()
            assert set(np.unique(t["gt_masks"][b])) <= {0.0, 1.0}
            assert set(np.unique(t["segm_t"][b])) <= {0.0, 1.0}
            present = set(t["gt_classes"][b, :n] - 1)
            assert {c for c in range(80) if t["segm_t"][b, :, :, c].any()} <= present
            cls, idx = t["cls_t"][b], t["idx_t"][b]
            pos = cls > 0
            assert cls.min() >= -1 and cls.max() <= 80
            assert set(idx[pos]) == set(range(n))  # forcing: every GT owns a positive anchor
            np.testing.assert_array_equal(cls[pos], t["gt_classes"][b][idx[pos]])
            assert np.isfinite(t["loc_t"][b][pos]).all()


def test_images_without_objects_are_dropped_and_counts_equal_json(records):
    pattern, cut = records
    per = _counts(cut)
    ds = parser.train_dataset(pattern, NO_AUG, 1, shuffle=False, repeat=False, seed=0)
    got = sorted(int(t["num_obj"][0]) for _, t in ds)
    expected = sorted(min(sum(not a["iscrowd"] for a in anns), 100) for anns in per.values()
                      if any(not a["iscrowd"] for a in anns))
    assert len(per) == 20 and len(expected) == 18  # the empty and the crowd-only image are dropped
    assert got == expected


def test_num_max_pad_keeps_the_largest_objects(records):
    pattern, cut = records
    cfg = dataclasses.replace(NO_AUG, parser=dataclasses.replace(NO_AUG.parser, num_max_pad=5))
    sizes = {im["id"]: (im["width"], im["height"]) for im in cut["images"]}
    expected = []
    for img_id, anns in _counts(cut).items():
        if not any(not a["iscrowd"] for a in anns):
            continue
        top = sorted(sorted(range(len(anns)), key=lambda k: -anns[k]["area"])[:5])
        w, h = sizes[img_id]
        boxes = [[a["bbox"][0] / w, a["bbox"][1] / h, (a["bbox"][0] + a["bbox"][2]) / w,
                  (a["bbox"][1] + a["bbox"][3]) / h] for a in (anns[k] for k in top) if not a["iscrowd"]]
        expected.append(np.clip(np.array(boxes, np.float32).reshape(-1, 4), 0, 1))
    ds = parser.train_dataset(pattern, cfg, 1, shuffle=False, repeat=False, seed=0)
    got = [t["gt_boxes"][0, : t["num_obj"][0]].numpy() for _, t in ds]
    assert max(len(g) for g in got) == 5 and len(got) == len(expected)
    for g in got:
        assert any(e.shape == g.shape and np.allclose(e, g, atol=1e-5) for e in expected)


def test_same_seed_same_batches(records):
    pattern, _ = records
    a = next(iter(parser.train_dataset(pattern, CFG, 2, seed=5)))
    b = next(iter(parser.train_dataset(pattern, CFG, 2, seed=5)))
    c = next(iter(parser.train_dataset(pattern, CFG, 2, seed=6)))
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    np.testing.assert_array_equal(a[1]["loc_t"].numpy(), b[1]["loc_t"].numpy())
    assert not np.array_equal(a[0].numpy(), c[0].numpy())


def test_eval_keeps_every_image_id_and_size(records):
    pattern, cut = records
    seen = []
    for images, info in parser.eval_dataset(pattern, CFG, 3):
        assert images.shape[1:] == (550, 550, 3)
        assert info["image_id"].dtype == tf.int64 and info["height"].dtype == tf.int32
        seen += zip(info["image_id"].numpy().tolist(), info["height"].numpy().tolist(),
                    info["width"].numpy().tolist())
    assert sorted(seen) == sorted((im["id"], im["height"], im["width"]) for im in cut["images"])


def test_eval_sharding_with_input_context(records):
    pattern, cut = records
    parts = []
    for pid in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid, num_replicas_in_sync=2)
        parts.append({int(i) for _, info in parser.eval_dataset(pattern, CFG, 4, input_context=ctx)
                      for i in info["image_id"].numpy()})
    assert parts[0] and parts[1] and not parts[0] & parts[1]
    assert parts[0] | parts[1] == {im["id"] for im in cut["images"]}


def test_eval_input_equals_fixture(fixture_inputs, tmp_path):
    """PNG records of the fixture images → exactly the original's FastBaseTransform input (relative error)."""
    path = tmp_path / "fx-00000-of-00001.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        for k in range(2):
            img = fixture_inputs[f"image{k}"]
            ex = schema.make_example(
                encoded=tf.io.encode_png(img).numpy(), image_format="png",
                source_id=int(fixture_inputs["image_ids"][k]),
                filename=f"{k}.png", height=img.shape[0], width=img.shape[1], xmin=[], ymin=[], xmax=[], ymax=[],
                labels=[], texts=[], is_crowd=[], areas=[], masks_png=[])
            w.write(ex.SerializeToString())
    images, info = next(iter(parser.eval_dataset(str(path), CFG, 2)))
    np.testing.assert_array_equal(info["image_id"].numpy(), fixture_inputs["image_ids"])
    np.testing.assert_array_equal(info["height"].numpy(), [480, 640])
    ref = fixture_inputs["input"]
    assert np.linalg.norm(images.numpy() - ref) / np.linalg.norm(ref) < 1e-6


def test_errors(records, tmp_path):
    pattern, _ = records
    with pytest.raises(ValueError, match="no TFRecord files match"):
        parser.train_dataset(str(tmp_path / "none-*.tfrecord"), CFG, 2)
    with pytest.raises(ValueError, match="label map has 81 classes"):
        parser.train_dataset(pattern, CFG.with_num_classes(21), 2)
    with pytest.raises(ValueError, match="no TFRecord files match"):
        parser.eval_dataset(str(tmp_path / "none-*.tfrecord"), CFG)


def test_input_context_needs_enough_shards(records):
    pattern, _ = records
    ctx = tf.distribute.InputContext(num_input_pipelines=3, input_pipeline_id=0, num_replicas_in_sync=3)
    with pytest.raises(ValueError, match="cannot be sharded between 3 input pipelines"):
        parser.train_dataset(pattern, CFG, 6, input_context=ctx)


def test_targets_cap_and_empty_images():
    """build_targets directly: > num_max_pad objects keep the largest; zero / crowd-only images are all background."""
    from data import targets
    from yolact.ops import box_ops
    from yolact.ops.anchors import make_anchors

    anchors = make_anchors(CFG)
    fn = tf.function(lambda b, c, m, cr: targets.build_targets(b, c, m, cr, anchors, CFG))
    rng = np.random.default_rng(0)
    n = 104
    xy = rng.uniform(0.0, 0.5, (n, 2))
    wh = rng.permutation(np.linspace(0.05, 0.45, n))[:, None].repeat(2, 1)
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    masks = np.zeros((550, 550, n), np.float32)
    for k, (x1, y1, x2, y2) in enumerate((boxes * 550).astype(int)):
        masks[y1:y2, x1:x2, k] = 1
    classes = rng.integers(1, 81, n).astype(np.int32)
    t = fn(boxes, classes, masks, np.zeros(n, bool))
    keep = np.sort(np.argsort(-wh[:, 0])[:100])
    assert int(t["num_obj"]) == 100
    np.testing.assert_allclose(t["gt_boxes"].numpy(), boxes[keep])
    np.testing.assert_array_equal(t["gt_classes"].numpy(), classes[keep])

    empty = fn(np.zeros((0, 4), np.float32), np.zeros(0, np.int32), np.zeros((550, 550, 0), np.float32),
               np.zeros(0, bool))
    assert int(empty["num_obj"]) == 0 and not empty["cls_t"].numpy().any()
    assert not empty["gt_masks"].numpy().any() and not empty["segm_t"].numpy().any()
    crowd = np.array([[0.0, 0.0, 0.5, 0.5]], np.float32)
    only_crowd = fn(crowd, np.ones(1, np.int32), np.ones((550, 550, 1), np.float32), np.ones(1, bool))
    covered = box_ops.jaccard(box_ops.point_form(anchors), crowd, iscrowd=True).numpy()[:, 0] > 0.7
    np.testing.assert_array_equal(only_crowd["cls_t"].numpy(), np.where(covered, -1, 0))
    assert int(only_crowd["num_obj"]) == 0 and not only_crowd["segm_t"].numpy().any()
