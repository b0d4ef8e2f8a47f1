"""Darknet-53 / yolact_darknet53 against the ORIGINAL YOLACT (tests/data/reference_darknet53.npz).

The reference holds the original model's outputs on the reference_r50 fixture images with weights regenerated here
from a seed (tests/data/make_reference_darknet53.py ``seeded_weights``) plus the BatchNorm statistics the original
calibrated; see tests/data/README.md.
"""

import collections
import dataclasses
import importlib.util
import json
import pathlib

import numpy as np
import pytest

from config import get_config
from yolact.model import build_model
from yolact.ops.preprocess import eval_preprocess
from yolact.torch_weights import WeightConversionError, convert_state_dict

DATA = pathlib.Path(__file__).resolve().parent / "data"
MAP_KEYS = ("C3", "C4", "C5", "P3", "P4", "P5", "P6", "P7", "proto", "loc", "conf", "mask", "segm")
# Darknet-53: stem conv + 5 downsample convs + 2 convs in each of 1 + 2 + 8 + 8 + 4 blocks = 52 conv + BN units.
NUM_UNITS = 52


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_reference_darknet53", DATA / "make_reference_darknet53.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _load_generator()


def rel_err(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(DATA / "reference_darknet53.npz"))


@pytest.fixture(scope="module")
def original_sd(ref):
    """The original yolact_darknet53 state_dict (all 348 keys, original order): seeded tensors + calibrated BN stats."""
    listing = json.loads(str(ref["state_dict"]))
    weights = GEN.seeded_weights({key: shape for key, shape, _ in listing})
    sd = collections.OrderedDict()
    for key, shape, dtype in listing:
        if key in weights:
            sd[key] = weights[key]
        elif key.endswith((".running_mean", ".running_var")):
            sd[key] = ref["bn/" + key]
        else:
            assert key.endswith(".num_batches_tracked") and dtype == "int64"
            sd[key] = np.array(0, np.int64)
        assert list(sd[key].shape) == shape, key
    return sd, weights


@pytest.fixture(scope="module")
def model():
    return build_model(get_config("yolact_darknet53"), freeze_bn=True)


@pytest.fixture(scope="module")
def net_input(fixture_inputs):
    return GEN.darknet_input(fixture_inputs["input"])


def _assert_matches_reference(ref, key, ours):
    assert tuple(ours.shape) == tuple(ref[f"shape/{key}"]), key
    values, stride = GEN.subsample(ours)
    assert stride == int(ref[f"stride/{key}"])
    assert rel_err(values, ref[f"out/{key}"]) <= 1e-4, key
    norm = float(ref[f"norm/{key}"])
    assert abs(np.linalg.norm(np.asarray(ours, np.float64)) - norm) <= 1e-4 * norm, key


def test_seeded_weights_equal_the_generators(ref, original_sd):
    # Same numpy stream as when the reference was made (else the parity tests below would compare other weights).
    _, weights = original_sd
    assert len(weights) == 192  # 52 conv + 52 x 2 BN affine + 36 FPN/protonet/head/semantic tensors
    sums = np.array([np.sum(w, dtype=np.float64) for w in weights.values()])
    np.testing.assert_allclose(sums, ref["weights_check"], rtol=1e-12, atol=0)


def test_preset_is_the_originals_yolact_darknet53(ref):
    cfg, base = get_config("yolact_darknet53"), get_config("yolact_base")
    meta = json.loads(str(ref["meta"]))
    assert meta["selected_layers"] == [2, 3, 4] and meta["backbone_channels"] == [64, 128, 256, 512, 1024]
    assert cfg.model.backbone == "darknet53" and cfg.model.img_size == 550
    # darknet_transform: RGB, no normalisation, to_float -> x / 255.
    assert cfg.model.mean_rgb == (0.0, 0.0, 0.0) and cfg.model.std_rgb == (255.0, 255.0, 255.0)
    assert cfg.anchors == base.anchors  # yolact_base pred_scales / aspect ratios, pixel scales, square anchors
    for section in ("parser", "loss", "detection", "train"):
        assert getattr(cfg, section) == getattr(base, section), section
    assert dataclasses.replace(cfg.model, backbone=base.model.backbone, mean_rgb=base.model.mean_rgb,
                               std_rgb=base.model.std_rgb) == base.model
    assert cfg.feature_map_sizes() == (69, 35, 18, 9, 5)
    assert get_config("yolact_darknet53", img_size=512).feature_map_sizes() == (64, 32, 16, 8, 4)


def test_preprocess_matches_original_darknet_transform(ref, fixture_inputs):
    cfg = get_config("yolact_darknet53")
    for i in range(2):
        ours = eval_preprocess(fixture_inputs[f"image{i}"], cfg).numpy()[None]
        values, stride = GEN.subsample(ours)
        assert stride == int(ref[f"stride/transform{i}"])
        assert rel_err(values, ref[f"out/transform{i}"]) <= 1e-6


def test_darknet53_pth_loads_into_the_backbone(ref, original_sd, model, net_input):
    # darknet53.pth is a DarkNetBackbone state_dict: the backbone's keys without "backbone." (init_backbone loads
    # it with strict=False; keys outside the backbone layout are ignored and listed).
    sd, _ = original_sd
    pth = collections.OrderedDict((k[len("backbone."):], v) for k, v in sd.items() if k.startswith("backbone."))
    assert len(pth) == NUM_UNITS * 6  # conv weight + BN weight, bias, running_mean, running_var, num_batches_tracked
    pth["fc.weight"] = np.zeros((1000, 1024), np.float32)
    summary = convert_state_dict(pth, model)
    assert summary == {"kind": "darknet", "loaded": NUM_UNITS * 5, "ignored": ["fc.weight"]}
    feats = model.backbone(net_input, training=False)
    for key, ours in zip(("C3", "C4", "C5"), feats):
        _assert_matches_reference(ref, key, ours.numpy())


def test_darknet53_pth_missing_key_is_named(original_sd, model):
    sd, _ = original_sd
    pth = collections.OrderedDict(
        (k[len("backbone."):], v) for k, v in sd.items() if k.startswith("backbone.") and "layers.3.5.conv2.1" not in k
    )
    with pytest.raises(WeightConversionError, match=r"missing keys \(4\): backbone\.layers\.3\.5\.conv2\.1\.bias"):
        convert_state_dict(pth, model)


@pytest.fixture(scope="module")
def full_run(original_sd, model, net_input):
    """The full original state_dict (yolact_darknet53_54_800000.pth layout) converted, one forward of both images."""
    sd, _ = original_sd
    summary = convert_state_dict(sd, model)
    out = model(net_input, training=False, return_features=True)
    return summary, {k: v.numpy() for k, v in out.items()}


def test_full_state_dict_all_loaded(full_run):
    summary, _ = full_run
    assert summary == {"kind": "yolact", "loaded": 348 - NUM_UNITS, "ignored": []}  # all but num_batches_tracked


@pytest.mark.parametrize("key", MAP_KEYS)
def test_forward_matches_original(ref, full_run, key):
    _, out = full_run
    _assert_matches_reference(ref, key, out[key])
