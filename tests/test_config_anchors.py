"""Config presets and anchors against the original's facts and the reference fixture."""

import numpy as np
import pytest

from config import config_names, get_config
from yolact.ops.anchors import make_anchors


def test_presets_exist():
    assert set(config_names()) >= {
        "yolact_base", "yolact_resnet50", "yolact_im400", "yolact_im700",
        "yolact_resnet50_pascal", "yolact_efficientnet_lite0",
    }


@pytest.mark.parametrize(
    "name,count,proto,sizes",
    [
        ("yolact_base", 19248, 138, (69, 35, 18, 9, 5)),
        ("yolact_resnet50", 19248, 138, (69, 35, 18, 9, 5)),
        ("yolact_im400", 10077, 100, (50, 25, 13, 7, 4)),
        ("yolact_im700", 30963, 176, (88, 44, 22, 11, 6)),
        ("yolact_resnet50_pascal", 19248, 138, (69, 35, 18, 9, 5)),
    ],
)
def test_anchor_counts_match_original(name, count, proto, sizes):
    cfg = get_config(name)
    assert cfg.feature_map_sizes() == sizes
    assert cfg.model.proto_output_size == proto
    assert make_anchors(cfg).shape == (count, 4)


def test_original_parameters():
    base = get_config("yolact_base")
    assert base.model.backbone == "resnet101" and base.model.img_size == 550
    assert (base.parser.threshold_pos, base.parser.threshold_neg) == (0.5, 0.4)
    assert (base.loss.loss_weight_box, base.loss.loss_weight_mask, base.loss.neg_pos_ratio) == (1.5, 6.125, 3)
    assert (base.detection.conf_threshold, base.detection.top_k) == (0.05, 200)
    assert (base.detection.nms_threshold, base.detection.max_num_detection) == (0.5, 100)
    assert get_config("yolact_im400").anchors.pred_scales == (17, 34, 69, 139, 279)
    assert get_config("yolact_im700").anchors.pred_scales == (30, 61, 122, 244, 488)
    assert get_config("yolact_im700").loss.masks_to_train == 300
    pascal = get_config("yolact_resnet50_pascal")
    assert pascal.num_classes == 21 and not pascal.anchors.use_square_anchors
    assert pascal.train.lr_steps == (60000, 100000)


def test_configs_are_immutable():
    cfg = get_config("yolact_base")
    with pytest.raises(Exception):
        cfg.model.img_size = 10  # frozen dataclass


def test_unknown_config_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown config"):
        get_config("yolact_nope")


def test_anchors_equal_fixture_priors(fixture_outputs):
    anchors = make_anchors(get_config("yolact_resnet50"))
    np.testing.assert_allclose(anchors, fixture_outputs["priors"], atol=1e-6, rtol=0)
    cfg = get_config("yolact_resnet50")
    per_level = [cfg.anchors.num_anchors_per_location * s * s for s in cfg.feature_map_sizes()]
    assert list(np.cumsum([0] + per_level[:-1])) == [0, 14283, 17958, 18930, 19173]  # first anchor of each level


def test_pascal_anchors_are_not_square():
    a = make_anchors(get_config("yolact_resnet50_pascal"))[:3] * 550
    np.testing.assert_allclose(a[:, 2:], [[32, 32], [22.627417, 45.254834], [45.254834, 22.627417]], rtol=1e-5)
