"""The default inference path (yolact/predictor.Predictor: frozen network, XLA Fast NMS, masks) against the
original's detections in the fixture, from the raw uint8 images (preprocess included)."""

import numpy as np
import pytest

from config import get_config
from yolact.ops.label_map import LabelMap  # noqa: F401  (the predictor's label map type)
from yolact.model import build_model
from yolact.ops.label_map import coco_label_map
from yolact.predictor import Predictor
from yolact.torch_weights import convert_state_dict, load_state_dict_file


@pytest.fixture(scope="module")
def model(fixture_weights_path):
    cfg = get_config("yolact_resnet50")
    m = build_model(cfg, freeze_bn=True)
    convert_state_dict(load_state_dict_file(str(fixture_weights_path)), m, cfg)
    return cfg, m


@pytest.mark.parametrize("freeze", [True, False])
def test_predictor_reproduces_original_detections(model, fixture_inputs, fixture_outputs, freeze):
    cfg, m = model
    predictor = Predictor(cfg, m, coco_label_map(), freeze=freeze)
    for k in (0, 1):
        image = fixture_inputs[f"image{k}"]
        res = predictor.predict(image)
        ref_cls, ref_box = fixture_outputs[f"det{k}_class"], fixture_outputs[f"det{k}_box"]
        ref_masks = fixture_outputs[f"det{k}_masks"].astype(bool)
        assert len(res["classes"]) == len(ref_cls) == 100
        np.testing.assert_array_equal(res["classes"], ref_cls)
        np.testing.assert_array_equal(res["category_ids"], np.asarray(coco_label_map().ids)[ref_cls])
        np.testing.assert_allclose(res["scores"], fixture_outputs[f"det{k}_score"], atol=1e-4, rtol=0)
        # Boxes are truncated to integer pixels; float rounding of our forward may cross one boundary.
        assert np.abs(res["boxes"].astype(np.int64) - ref_box).max() <= 1
        masks = res["masks"].astype(bool)
        assert masks.shape == ref_masks.shape
        inter = (masks & ref_masks).sum(axis=(1, 2))
        union = (masks | ref_masks).sum(axis=(1, 2))
        iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        assert iou.min() >= 0.99, iou.min()
        assert (masks != ref_masks).mean() <= 1e-4


def test_model_detect_reproduces_original_detections(model, fixture_inputs, fixture_outputs):
    """``Yolact.detect`` (network + the model's DetectionGenerator, masks upsampled in the layer) on the one
    preprocessing gives the original's detections of image1."""
    from yolact.ops.preprocess import eval_preprocess

    cfg, m = model
    image = fixture_inputs["image1"]
    h, w = image.shape[:2]
    dets = m.detect(eval_preprocess(image, cfg)[None], output_size=(h, w))
    assert int(dets["num_detections"][0]) == 100
    np.testing.assert_array_equal(dets["classes"][0].numpy(), fixture_outputs["det1_class"])
    np.testing.assert_allclose(dets["scores"][0].numpy(), fixture_outputs["det1_score"], atol=1e-4, rtol=0)
    masks = dets["masks"][0].numpy() > 0.5
    assert masks.shape == fixture_outputs["det1_masks"].shape
    assert (masks != fixture_outputs["det1_masks"].astype(bool)).mean() <= 1e-4
