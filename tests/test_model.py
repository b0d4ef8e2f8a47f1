"""The Keras YOLACT model: parity with the original (reference_r50 fixture), EfficientNet-Lite0 with its ImageNet
weights, BatchNorm freezing, weights round trip, mixed precision."""

import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from config import get_config
from yolact.model import Yolact, build_model, should_freeze_bn
from yolact.torch_weights import convert_state_dict, load_state_dict_file

PARITY_KEYS = ("C5", "P3", "P4", "P5", "P6", "P7", "proto", "loc", "conf", "mask", "segm")
LITE0_NPZ = "weights/efficientnet-lite0-57934424.npz"


def rel_err(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def r50_fixture_run(fixture_weights_path, fixture_inputs):
    """yolact_resnet50 with the fixture weights (through the converter), BN frozen, one forward of both images."""
    model = build_model(get_config("yolact_resnet50"), freeze_bn=True)
    summary = convert_state_dict(load_state_dict_file(fixture_weights_path), model)
    out = model(fixture_inputs["input"], training=False, return_features=True)
    return model, summary, {k: v.numpy() for k, v in out.items()}


def test_fixture_weights_all_loaded(r50_fixture_run):
    _, summary, _ = r50_fixture_run
    # 354 state_dict tensors minus the 53 num_batches_tracked buffers.
    assert summary == {"kind": "yolact", "loaded": 301, "ignored": []}


@pytest.mark.parametrize("key", PARITY_KEYS)
def test_forward_matches_original(r50_fixture_run, fixture_outputs, key):
    _, _, out = r50_fixture_run
    ref = fixture_outputs[key]
    assert out[key].shape == ref.shape
    assert out[key].dtype == np.float32
    assert rel_err(out[key], ref) <= 1e-4


def test_anchors_match_original_priors(r50_fixture_run, fixture_outputs):
    model, _, _ = r50_fixture_run
    anchors = model.anchors.numpy()
    assert anchors.shape == (19248, 4) and anchors.dtype == np.float32
    np.testing.assert_allclose(anchors, fixture_outputs["priors"], rtol=0, atol=1e-6)


def test_frozen_bn_training_mode_equals_inference(r50_fixture_run, fixture_inputs, fixture_outputs):
    # The fixture was recorded in train mode with frozen BN; frozen BN must ignore training=True.
    model, _, _ = r50_fixture_run
    out = model(fixture_inputs["input"][:1], training=True)
    assert rel_err(out["conf"].numpy(), fixture_outputs["conf"][:1]) <= 1e-4
    assert not [w for w in model.backbone.trainable_weights if "gamma" in w.path or "beta" in w.path]


def test_wrong_input_size_is_rejected(r50_fixture_run):
    model, _, _ = r50_fixture_run
    with pytest.raises(ValueError, match="expects 550x550"):
        model(np.zeros((1, 512, 512, 3), np.float32))


# ----------------------------------------------------------------------------------------- EfficientNet-Lite0


@pytest.fixture(scope="module")
def lite0_model(shared_dir):
    model = build_model(get_config("yolact_efficientnet_lite0"), freeze_bn=True)
    summary = convert_state_dict(load_state_dict_file(shared_dir / LITE0_NPZ), model)
    return model, summary


def _photos(media_dir, size):
    """The six media photos, squashed to size x size, RGB (x - 127) / 128, float32 [6, size, size, 3]."""
    files = sorted(pathlib.Path(media_dir).glob("*.jpg"))
    assert len(files) == 6
    images = []
    for f in files:
        image = tf.io.decode_jpeg(tf.io.read_file(str(f)), channels=3)
        image = tf.image.resize(tf.cast(image, tf.float32), (size, size), antialias=False)
        images.append((image.numpy() - 127.0) / 128.0)
    return [f.name for f in files], np.stack(images)


def test_from_config_rebuilds_the_same_model(r50_fixture_run, fixture_inputs):
    """``Yolact.from_config(model.get_config())``: the same config, layers and variable shapes; with the weights
    copied, the same outputs."""
    model, _, _ = r50_fixture_run
    config = model.get_config()
    clone = Yolact.from_config(config)
    assert clone.cfg == model.cfg and clone.bn_frozen and clone.get_config()["cfg"] == config["cfg"]
    x = fixture_inputs["input"][:1]
    clone(x, training=False)
    assert [v.shape for v in clone.weights] == [v.shape for v in model.weights]
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(clone(x, training=False)["conf"].numpy(), model(x, training=False)["conf"].numpy())
    for layer in (model.fpn, model.proto_net, model.head, model.detection_generator):
        again = type(layer).from_config(layer.get_config())
        assert again.get_config() == layer.get_config(), type(layer).__name__


def test_predict_returns_detections(r50_fixture_run, fixture_inputs, fixture_outputs):
    """``model.predict(images)`` runs the detection stage (as keras-hub's detectors): the original's detections."""
    model, _, _ = r50_fixture_run
    dets = model.predict(fixture_inputs["input"], batch_size=2, verbose=0)
    assert dets["masks"].shape == (2, 100, 138, 138) and dets["num_detections"].tolist() == [100, 100]
    for k in (0, 1):
        np.testing.assert_array_equal(dets["classes"][k], fixture_outputs[f"det{k}_raw_class"])
        np.testing.assert_allclose(dets["scores"][k], fixture_outputs[f"det{k}_raw_score"], atol=1e-4, rtol=0)


def test_lite0_backbone_only_load(lite0_model):
    _, summary = lite0_model
    # 296 tensors - 49 num_batches_tracked - head (_conv_head 1, _bn1 4, _fc 2) = 240.
    assert summary == {"kind": "efficientnet_lite", "loaded": 240, "ignored": []}


def test_lite0_anchor_count_matches_feature_sizes(lite0_model):
    model, _ = lite0_model
    cfg = model.cfg
    feats = model(np.zeros((1, 512, 512, 3), np.float32), return_features=True)
    sides = tuple(feats[k].shape[1] for k in ("P3", "P4", "P5", "P6", "P7"))
    assert sides == cfg.feature_map_sizes() == (64, 32, 16, 8, 4)
    assert [feats[k].shape[-1] for k in ("C3", "C4", "C5")] == [40, 112, 320]
    assert model.anchors.shape[0] == 3 * sum(s * s for s in sides) == 16368


def test_lite0_at_550_uses_the_package_static_pads():
    # The package's pads computed for 224 give floor arithmetic at 550: 275 -> 137 -> 68 -> 34 -> 17.
    cfg = get_config("yolact_efficientnet_lite0", img_size=550)
    model = Yolact(cfg)
    feats = model(np.zeros((1, 550, 550, 3), np.float32), return_features=True)
    assert tuple(feats[k].shape[1] for k in ("P3", "P4", "P5", "P6", "P7")) == (68, 34, 17, 9, 5)
    assert model.anchors.shape[0] == 3 * (68**2 + 34**2 + 17**2 + 9**2 + 5**2)
    assert feats["P3"].shape[1] * 2 == model(np.zeros((1, 550, 550, 3), np.float32))["proto"].shape[1]


def test_lite0_imagenet_predictions(lite0_model, shared_dir, media_dir):
    """Backbone C5 + the package's classifier head (1x1 conv 1280, BN, ReLU6, mean, FC) in numpy on real photos."""
    model, _ = lite0_model
    sd = load_state_dict_file(shared_dir / LITE0_NPZ)
    names, x = _photos(media_dir, 224)
    c5 = model.backbone(x, training=False)[2].numpy()
    h = np.einsum("bhwc,oc->bhwo", c5, sd["_conv_head.weight"][:, :, 0, 0])
    h = (h - sd["_bn1.running_mean"]) / np.sqrt(sd["_bn1.running_var"] + 1e-3) * sd["_bn1.weight"] + sd["_bn1.bias"]
    logits = np.clip(h, 0, 6).mean(axis=(1, 2)) @ sd["_fc.weight"].T + sd["_fc.bias"]
    top1 = dict(zip(names, logits.argmax(1).tolist()))
    assert top1["000000020247.jpg"] in (294, 295, 296, 297)  # a bear photo -> brown/black/ice/sloth bear
    assert top1["000000113354.jpg"] == 340  # zebras -> zebra
    assert top1["000000057597.jpg"] == 805  # football players -> soccer ball
    assert top1["000000189775.jpg"] == 752  # a tennis match -> racket
    assert top1["000000194875.jpg"] in (665, 670)  # motorcycles -> moped / motor scooter


def test_lite0_stem_statistics_match_running_stats(lite0_model, media_dir):
    """Reference doc §13.3: with RGB (x - 127) / 128 the stem conv's batch variance matches the BN running var."""
    model, _ = lite0_model
    _, x = _photos(media_dir, 224)
    stem = model.backbone.stem_conv_output(x).numpy().reshape(-1, 32)
    bn = model.backbone.bn0
    running_var = bn.moving_variance.numpy()
    alive = running_var > 1e-4
    ratio = np.median(stem.var(0)[alive] / running_var[alive])
    assert 0.8 < ratio < 1.25
    z = np.abs(stem.mean(0) - bn.moving_mean.numpy())[alive] / np.sqrt(running_var[alive])
    assert np.median(z) < 0.3


# ------------------------------------------------------------------------------------------- BN and saving


def _small_cfg():
    return get_config("yolact_efficientnet_lite0", img_size=128, num_classes=5)


def test_should_freeze_bn_policy():
    cfg = get_config("yolact_resnet50")
    assert cfg.model.freeze_bn == "auto"
    assert should_freeze_bn(cfg, 5) is True
    assert should_freeze_bn(cfg, 6) is False
    forced = cfg.__class__(**{**cfg.__dict__, "model": cfg.model.__class__(**{**cfg.model.__dict__, "freeze_bn": True})})
    assert should_freeze_bn(forced, 16) is True
    bad = cfg.__class__(**{**cfg.__dict__, "model": cfg.model.__class__(**{**cfg.model.__dict__, "freeze_bn": "x"})})
    with pytest.raises(ValueError, match="freeze_bn"):
        should_freeze_bn(bad, 4)


def test_unfrozen_bn_trains_and_frozen_bn_does_not():
    cfg = _small_cfg()
    x = np.random.default_rng(0).normal(size=(2, 128, 128, 3)).astype(np.float32)
    free = build_model(cfg, freeze_bn=False)
    frozen = build_model(cfg, freeze_bn=True)
    frozen.set_weights(free.get_weights())
    n_bn = len(free.backbone.batch_norm_layers())
    assert len(free.trainable_weights) - len(frozen.trainable_weights) == 2 * n_bn  # gamma and beta
    before = free.backbone.bn0.moving_mean.numpy().copy()
    a = free(x, training=True)["conf"].numpy()
    b = free(x, training=False)["conf"].numpy()
    assert not np.allclose(a, b)  # batch statistics in training
    assert not np.allclose(before, free.backbone.bn0.moving_mean.numpy())
    # Frozen: BN uses its moving statistics even with training=True (the whole network still differs between
    # modes through EfficientNet's drop-connect, so compare the BN layer itself) and never updates them.
    before = frozen.backbone.bn0.moving_mean.numpy().copy()
    frozen(x, training=True)
    np.testing.assert_array_equal(before, frozen.backbone.bn0.moving_mean.numpy())
    stem = frozen.backbone.stem_conv_output(x)
    np.testing.assert_array_equal(
        frozen.backbone.bn0(stem, training=True).numpy(), frozen.backbone.bn0(stem, training=False).numpy()
    )


def test_weights_h5_round_trip(tmp_path):
    cfg = _small_cfg()
    x = np.random.default_rng(1).normal(size=(1, 128, 128, 3)).astype(np.float32)
    model = build_model(cfg)
    path = tmp_path / "m.weights.h5"
    model.save_weights(str(path))
    other = build_model(cfg, weights=path)
    for key, value in model(x, training=False).items():
        np.testing.assert_array_equal(value.numpy(), other(x, training=False)[key].numpy())
    with pytest.raises(FileNotFoundError, match="not found"):
        build_model(cfg, weights=tmp_path / "nope.weights.h5")


def test_output_contract_under_mixed_precision():
    cfg = _small_cfg()
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        model = Yolact(cfg)
        out = model(np.zeros((2, 128, 128, 3), np.float32), training=False)
        assert model.backbone.conv_stem.compute_dtype == "bfloat16"
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    n = 3 * sum(s * s for s in cfg.feature_map_sizes())
    expected = {"loc": (2, n, 4), "conf": (2, n, 5), "mask": (2, n, 32), "proto": (2, 32, 32, 32), "segm": (2, 16, 16, 4)}
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert all(v.dtype == "float32" for v in out.values())
    assert float(tf.reduce_min(out["proto"])) >= 0.0 and float(tf.reduce_max(tf.abs(out["mask"]))) <= 1.0


def test_upsampling_gradient_compiles_under_xla_in_bfloat16():
    """XLA (training with jit_compile, e.g. on a GPU) rejects the gradient of a resize whose input is bfloat16
    ("Seen floating point types of different precisions"); the FPN / protonet upsampling resizes in float32."""
    from yolact.fpn import resize_bilinear

    conv = keras.layers.Conv2D(4, 3, padding="same", dtype="mixed_bfloat16")
    x = tf.random.stateless_normal([2, 8, 8, 4], seed=[0, 1])

    @tf.function(jit_compile=True)
    def grads(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = keras.ops.relu(resize_bilinear(keras.ops.relu(conv(x)), [16, 16]))
            assert y.dtype == tf.bfloat16 and tuple(y.shape) == (2, 16, 16, 4)
            loss = tf.reduce_sum(tf.cast(y, tf.float32))
        return tape.gradient(loss, [x] + conv.trainable_variables)

    gx, gk, gb = grads(x)
    assert gx.shape == (2, 8, 8, 4) and gk.shape == (3, 3, 4, 4) and gb.shape == (4,)
    assert np.isfinite(gx.numpy()).all() and float(tf.reduce_sum(tf.abs(gk))) > 0.0
