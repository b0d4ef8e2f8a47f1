"""Rectangular network inputs (``-img_size HxW``): level sizes and anchors against hand-computed grids, square
configs exactly as before (anchors bit for bit, config.json text, config hash), config.json round trip, the
one-line errors, and one small end-to-end run: yolact_efficientnet_lite0 at 192x320 trains a few steps on real
coco2017_mini images, evaluates, exports TFLite float32 with input [1, 192, 320, 3], and the TFLite runner and the
in-process Predictor give the same detections of a real photo.
"""

import hashlib
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

SQRT2, SQRT_HALF = math.sqrt(2.0), math.sqrt(0.5)


# ------------------------------------------------------------------------------------------ sizes and anchors
def test_resnet_at_384x672_levels_and_anchors_by_hand():
    """ResNet at 384x672 (H x W). Height: 7x7/2 pad 3 -> 192, maxpool 3x3/2 pad 1 -> 96, C3..C5 48, 24, 12, P6 6,
    P7 3. Width: 336, 168, then 84, 42, 21, 11, 6. Anchor scales: int(s / 550 * sqrt(384 * 672)), sqrt = 507.98:
    24 -> 22, 48 -> 44, 96 -> 88, 192 -> 177, 384 -> 354. Square anchors (yolact_resnet50): square in pixels."""
    from config import get_config
    from yolact.ops.anchors import make_anchors

    cfg = get_config("yolact_resnet50", img_size="384x672")
    assert cfg.model.img_size == (384, 672) and cfg.input_size == (384, 672)
    assert cfg.feature_map_shapes() == ((48, 84), (24, 42), (12, 21), (6, 11), (3, 6))
    assert cfg.model.proto_output_shape == (96, 168)
    assert cfg.anchors.pred_scales == (22, 44, 88, 177, 354)
    a = make_anchors(cfg).astype(np.float64)
    assert a.shape == (3 * (48 * 84 + 24 * 42 + 12 * 21 + 6 * 11 + 3 * 6), 4) == (16128, 4)
    # P3, row 0, column 0: ar 1 then 1/2 (square anchors: h in pixels = w in pixels)
    np.testing.assert_allclose(a[0], [0.5 / 84, 0.5 / 48, 22 / 672, 22 / 384], rtol=1e-6)
    np.testing.assert_allclose(a[1], [0.5 / 84, 0.5 / 48, 22 * SQRT_HALF / 672, 22 * SQRT_HALF / 384], rtol=1e-6)
    # first anchor of P4: index 3 * 48 * 84 = 12096
    np.testing.assert_allclose(a[12096], [0.5 / 42, 0.5 / 24, 44 / 672, 44 / 384], rtol=1e-6)
    # P5 (12 x 21) row 5, column 20, ar 2: 3 * (4032 + 1008) + 3 * (5 * 21 + 20) + 2 = 15497
    np.testing.assert_allclose(a[15497], [20.5 / 21, 5.5 / 12, 88 * SQRT2 / 672, 88 * SQRT2 / 384], rtol=1e-6)
    # last anchor: P7 (3 x 6) row 2, column 5, ar 2
    np.testing.assert_allclose(a[-1], [5.5 / 6, 2.5 / 3, 354 * SQRT2 / 672, 354 * SQRT2 / 384], rtol=1e-6)
    # in pixels every square anchor is square
    np.testing.assert_allclose(a[:, 2] * 672, a[:, 3] * 384, rtol=1e-6)


def test_non_square_anchors_keep_their_pixel_shape():
    """yolact_resnet50_pascal (use_square_anchors False, scales 32..512 at 550): at 384x672 P3's scale is
    int(32 / 550 * 507.98) = 29; ar 1/2 is w = 29 * sqrt(1/2) / 672, h = 29 / sqrt(1/2) / 384 (1:2 in pixels)."""
    from config import get_config
    from yolact.ops.anchors import make_anchors

    cfg = get_config("yolact_resnet50_pascal", img_size=(384, 672))
    assert cfg.anchors.pred_scales == (29, 59, 118, 236, 472)
    a = make_anchors(cfg).astype(np.float64)
    np.testing.assert_allclose(a[1], [0.5 / 84, 0.5 / 48, 29 * SQRT_HALF / 672, 29 / SQRT_HALF / 384], rtol=1e-6)
    np.testing.assert_allclose(a[2], [0.5 / 84, 0.5 / 48, 29 * SQRT2 / 672, 29 / SQRT2 / 384], rtol=1e-6)
    np.testing.assert_allclose((a[2, 3] * 384) / (a[2, 2] * 672), 0.5, rtol=1e-6)


def test_efficientnet_lite0_at_256x448_and_odd_sizes_by_hand():
    """EfficientNet-Lite0 (static pads, floor arithmetic) at 256x448: 32x56 .. 2x4; scales from the preset's
    (22, 44, 89, 178, 357) at 512 by int(s / 512 * sqrt(256 * 448)), sqrt = 338.66. At 250x330 (not divisible by
    32) the axes follow each backbone's own arithmetic: Lite0 height 125, 62, then 31, 15, 7, 4, 2 and width 165,
    82, then 41, 20, 10, 5, 3; ResNet (symmetric pads) height 32, 16, 8, 4, 2 and width 42, 21, 11, 6, 3."""
    from config import get_config
    from yolact.ops.anchors import make_anchors

    cfg = get_config("yolact_efficientnet_lite0", img_size="256x448")
    assert cfg.feature_map_shapes() == ((32, 56), (16, 28), (8, 14), (4, 7), (2, 4))
    assert cfg.anchors.pred_scales == (14, 29, 58, 117, 236)
    a = make_anchors(cfg).astype(np.float64)
    assert a.shape == (3 * (32 * 56 + 16 * 28 + 8 * 14 + 4 * 7 + 2 * 4), 4) == (7164, 4)
    # P3 row 31, column 55 (the last P3 location), ar 1: 3 * (31 * 56 + 55)
    np.testing.assert_allclose(a[3 * (31 * 56 + 55)], [55.5 / 56, 31.5 / 32, 14 / 448, 14 / 256], rtol=1e-6)
    assert get_config("yolact_efficientnet_lite0", img_size="250x330").feature_map_shapes() == (
        (31, 41), (15, 20), (7, 10), (4, 5), (2, 3))
    assert get_config("yolact_resnet50", img_size="250x330").feature_map_shapes() == (
        (32, 42), (16, 21), (8, 11), (4, 6), (2, 3))


def test_the_network_has_the_computed_level_sizes_at_an_odd_rectangle():
    """The built EfficientNet-Lite0 at 250x330 gives those level sizes, prototypes 62x82 and one prediction row per
    anchor (the model's own size check would raise otherwise)."""
    from config import get_config
    from yolact.model import build_model

    cfg = get_config("yolact_efficientnet_lite0", num_classes=3, img_size="250x330")
    model = build_model(cfg)
    out = model(np.zeros((1, 250, 330, 3), np.float32), return_features=True)
    assert [tuple(out[k].shape[1:3]) for k in ("P3", "P4", "P5", "P6", "P7")] == list(cfg.feature_map_shapes())
    assert tuple(out["proto"].shape) == (1, 62, 82, 32) and tuple(out["segm"].shape) == (1, 31, 41, 2)
    assert out["loc"].shape[1] == len(model.anchors) == 3 * (31 * 41 + 15 * 20 + 7 * 10 + 4 * 5 + 2 * 3)
    with pytest.raises(ValueError, match=r"input images are 330x250 but config .* expects 250x330"):
        model(np.zeros((1, 330, 250, 3), np.float32))


# ------------------------------------------------------------------------------------ square: as before
# Measured on the code before rectangular inputs (commit b26f2af): sha256 of make_anchors(cfg).tobytes(), of
# config_hash and of the config.json text written by write_run_files.
SQUARE_BEFORE = {
    ("yolact_resnet50", None): ((19248, 4), "8eeea5c83336a87461d1b7b81c08f53dfc7bd3bb55e9c819096b766d5ebf16f9",
                                "738b56136fa7b19c373c6affa0ae9061d8ba248eceb0ed43f5f30a5f86b03eb7",
                                "c70cac4cd754ff03eeb2413f26010cc5e7ccca2d45b78252352522d06fd7021d"),
    ("yolact_plus_resnet50", None): ((57744, 4), "ce4d055829d6d392e7fd914427df1d4ee1ee85c880ae6f48df495d45d37623af",
                                     "672066cdf7e454e4777e33827bc8e8ef181f29debf9ba708beca7332bd2e2f23",
                                     "f14f13447292085d560efe980ee04c817bd4b9b32b889eaa845deef749c167a1"),
    ("yolact_efficientnet_lite0", 256): ((4092, 4),
                                         "ebb0062963e653a7a50612e8cbe9131bbd53b494be9ebf16937f746d7743ad9f",
                                         "cf47330b636485e4a2ae9cb9e1a666c76a709b46fb739efe3f15a5a9ed7eda88",
                                         "f0547099e0ccd6377c1e12840e6b64ecbfa906d91cc7792945e51016fd383fa5"),
}


@pytest.mark.parametrize("name, size", list(SQUARE_BEFORE))
def test_square_configs_are_exactly_as_before(name, size, tmp_path):
    """Anchors bit for bit, config hash and config.json text as before, whether the size is given as S, "SxS" or
    (S, S): existing run folders, exports and the parity tests stay valid."""
    from config import get_config
    from yolact.checkpoint import config_hash, write_run_files
    from yolact.ops.anchors import make_anchors
    from yolact.ops.label_map import coco_label_map

    shape, anchors_sha, cfg_hash, json_sha = SQUARE_BEFORE[(name, size)]
    side = size or 550
    for given in (size, f"{side}x{side}", (side, side)):
        cfg = get_config(name, num_classes=81, img_size=given)
        assert cfg.model.img_size == side and isinstance(cfg.model.img_size, int)
        a = make_anchors(cfg)
        assert a.shape == shape and hashlib.sha256(a.tobytes()).hexdigest() == anchors_sha
        assert config_hash(cfg) == cfg_hash
        write_run_files(tmp_path, cfg, coco_label_map())
        assert hashlib.sha256((tmp_path / "config.json").read_bytes()).hexdigest() == json_sha
    first = make_anchors(get_config(name))[0].astype(np.float64)
    if name == "yolact_resnet50":
        np.testing.assert_allclose(first, [0.5 / 69, 0.5 / 69, 24 / 550, 24 / 550], rtol=1e-6)


def test_rectangular_config_json_round_trip(tmp_path):
    """config.json records [H, W]; read back it is the same config (and hash); a pair with H == W is the int."""
    from config import ConfigError, from_dict, get_config, to_dict
    from yolact.checkpoint import config_hash, read_config, write_run_files
    from yolact.ops.label_map import coco_label_map

    cfg = get_config("yolact_efficientnet_lite0", img_size="192x320")
    write_run_files(tmp_path, cfg, coco_label_map())
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model"]["img_size"] == [192, 320]
    back = read_config(tmp_path)
    assert back == cfg and config_hash(back) == config_hash(cfg) != config_hash(get_config(
        "yolact_efficientnet_lite0", img_size=192))
    saved["model"]["img_size"] = [256, 256]
    assert from_dict(saved).model.img_size == 256
    saved["model"]["img_size"] = [256, 256, 3]
    with pytest.raises(ConfigError, match=r"^model.img_size must be a list of 2 values, got \[256, 256, 3\]"):
        from_dict(saved)
    assert to_dict(from_dict(to_dict(cfg))) == to_dict(cfg)


@pytest.mark.parametrize("value, message", [
    ("32x640", "img_size sides must be >= 64, got 32x640"),
    ("384x", "img_size must be S or HxW in pixels (e.g. 550 or 384x672), got '384x'"),
    ("0x300", "img_size must be S or HxW in pixels (e.g. 550 or 384x672), got '0x300'"),
    (17, "img_size must be >= 64, got 17"),
])
def test_bad_sizes_are_one_line_errors(value, message):
    from config import get_config
    from yolact.training.options import OptionError, TrainOptions, validate_options

    with pytest.raises(ValueError) as e:
        get_config("yolact_resnet50", img_size=value)
    assert str(e.value) == message
    with pytest.raises(OptionError) as e:
        validate_options(TrainOptions(img_size=value))
    assert str(e.value) == "-" + message


def test_img_size_flag_takes_s_or_hxw():
    """The model tools' -img_size (utils/flags_util.py): S -> int, HxW -> (H, W), HxH -> H; a malformed value or a
    side below 64 is absl's one-line flag error."""
    from absl import flags

    from utils.flags_util import define_model_flags

    fv = flags.FlagValues()
    define_model_flags(fv)
    for arg, value in (("550", 550), ("384x672", (384, 672)), ("512x512", 512)):
        fv.unparse_flags()
        fv(["prog", "-img_size", arg])
        assert fv.img_size == value
    assert fv["img_size"].serialize() == "--img_size=512"
    for arg, message in (("32x640", "-img_size sides must be >= 64, got 32x640"),
                         ("384x672x3", "img_size must be S or HxW in pixels (e.g. 550 or 384x672), got '384x672x3'")):
        fv.unparse_flags()
        with pytest.raises(flags.IllegalFlagValueError, match=rf"^flag --img_size={arg}: {re.escape(message)}$"):
            fv(["prog", "-img_size", arg])


def test_backbone_and_mask_iou_limits():
    """YOLACT++'s mask-IoU net needs prototypes >= 63 px along both axes: 192x320 (48x80) is refused in one line,
    256x448 (64x112) is fine; a rectangle that leaves a level empty along one axis is refused."""
    import dataclasses

    from config import get_config
    from yolact.training.options import OptionError, check_img_size

    with pytest.raises(OptionError, match=r"^-img_size 192x320 is too small for the mask-IoU net of "
                                          r"yolact_plus_resnet50: prototypes 48x80, it needs at least 63x63"):
        check_img_size(get_config("yolact_plus_resnet50", img_size="192x320"))
    check_img_size(get_config("yolact_plus_resnet50", img_size="256x448"))
    cfg = get_config("yolact_efficientnet_lite0")
    thin = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, img_size=(17, 512)))
    with pytest.raises(OptionError, match=r"^-img_size 17x512 is too small for efficientnet_lite0: feature maps "
                                          r"P3..P7 would be \['2x64', '1x32', '0x16', '0x8', '0x4'\]"):
        check_img_size(thin)


def test_contradicting_rectangular_img_size_is_one_line(tmp_path):
    from config import get_config
    from yolact.checkpoint import RunFilesError, resolve_run, write_run_files
    from yolact.ops.label_map import coco_label_map

    write_run_files(tmp_path, get_config("yolact_resnet50", img_size="384x672"), coco_label_map())
    assert resolve_run(str(tmp_path), img_size="384x672").cfg.input_size == (384, 672)
    with pytest.raises(RunFilesError, match=rf"^-img_size 672x384 contradicts {tmp_path}/config.json "
                                            r"\(img_size 384x672\)$"):
        resolve_run(str(tmp_path), img_size=(672, 384))


# ------------------------------------------------------------------------------------------------ end to end
IMG = "192x320"


def _cli(*args):
    r = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1"))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return r.stdout


@pytest.fixture(scope="module")
def rect_run(coco_mini, tmp_path_factory):
    """4 coco2017_mini train images (their categories only) as TFRecords; yolact_efficientnet_lite0 at 192x320
    trained 3 steps from the ImageNet backbone (no augmentation), then exported with -tflite float32."""
    from tests.test_learning_sanity import imagenet_weights

    work = tmp_path_factory.mktemp("rect")
    data = json.loads((coco_mini / "annotations" / "instances_train2017.json").read_text())
    images = data["images"][:4]
    ids = {im["id"] for im in images}
    ann = work / "four.json"
    anns = [a for a in data["annotations"] if a["image_id"] in ids]
    used = {a["category_id"] for a in anns}
    ann.write_text(json.dumps(dict(data, images=images, annotations=anns,
                                   categories=[c for c in data["categories"] if c["id"] in used])))
    _cli("-m", "data.coco_tfrecord_creator", "-train_image_dir", coco_mini / "train2017", "-train_annotations_file",
         ann, "-output_dir", work / "records" / "four", "-num_workers", 1)
    _cli("train.py", "-name", "four", "-tfrecord_dir", work / "records", "-weights", work / "weights", "-config",
         "yolact_efficientnet_lite0", "-init", imagenet_weights(), "-img_size", IMG, "-batch_size", 2,
         "-train_iter", 3, "-seed", 0, "-noaugment", "-print_interval", 1)
    run_dir = work / "weights" / "four"
    export_dir = work / "export"
    out = _cli("export_saved_model.py", "-checkpoint", run_dir, "-export_dir", export_dir, "-tflite", "float32")
    return {"dir": run_dir, "export": export_dir, "export_out": out, "ann": ann, "work": work,
            "images": coco_mini / "train2017"}


@pytest.mark.slow
def test_rectangular_run_trains_evaluates_and_exports(rect_run, tmp_path):
    saved = json.loads((rect_run["dir"] / "config.json").read_text())
    assert saved["model"]["img_size"] == [192, 320]
    assert "yolact_float32.tflite: " in rect_run["export_out"] and "input images float32 [1,192,320,3]" in \
        rect_run["export_out"]
    _cli("inference.py", "-checkpoint", rect_run["dir"], "-eval", "-annotations_file", rect_run["ann"],
         "-image_dir", rect_run["images"], "-output_dir", tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["images_evaluated"] == metrics["images_in_annotations"] == 4


@pytest.mark.slow
def test_rectangular_tflite_and_predictor_give_the_same_detections(rect_run, media_dir, tmp_path):
    import shutil

    from config import get_config
    from yolact.checkpoint import resolve_run, write_run_files
    from yolact.ops.image_io import read_image
    from yolact.predictor import Predictor
    from yolact.runtimes import ModelFileError, open_model

    tflite = rect_run["export"] / "yolact_float32.tflite"
    run = resolve_run(str(tflite))
    assert run.cfg.input_size == (192, 320)
    runner = open_model(str(tflite), run.cfg, run.label_map, num_threads=2)
    assert list(runner._interpreter.get_input_details()[0]["shape"]) == [1, 192, 320, 3]
    image = read_image(str(media_dir / "000000020247.jpg"))
    ours = Predictor.from_checkpoint(str(rect_run["dir"]), freeze=False).predict(image)
    theirs = runner.predict(image)
    n = len(ours["scores"])
    assert n > 0 and len(theirs["scores"]) == n
    np.testing.assert_allclose(theirs["scores"], ours["scores"], atol=1e-4)
    np.testing.assert_array_equal(theirs["category_ids"], ours["category_ids"])
    np.testing.assert_allclose(theirs["boxes"], ours["boxes"], atol=0.5)
    # the same .tflite beside a config of another size: one line
    other = tmp_path / "other"
    write_run_files(other, get_config("yolact_efficientnet_lite0", num_classes=run.cfg.num_classes, img_size=192),
                    run.label_map)
    shutil.copy(tflite, other / tflite.name)
    with pytest.raises(ModelFileError, match=r"takes 192x320 images but its config says img_size 192$"):
        open_model(str(other / tflite.name), resolve_run(str(other / tflite.name)).cfg, run.label_map)
