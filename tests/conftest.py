"""Shared test fixtures: paths to ../shared and the reference fixture arrays."""

import os
import pathlib
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED = pathlib.Path(os.environ.get("YOLACT_SHARED", ROOT.parent / "shared")).resolve()
FIXTURE = SHARED / "fixtures" / "reference_r50"
COCO_MINI = SHARED / "data" / "coco2017_mini"
MEDIA = SHARED / "data" / "media"


def _require(path: pathlib.Path) -> pathlib.Path:
    if not path.exists():
        pytest.fail(f"required shared data missing: {path} (set YOLACT_SHARED to the shared/ folder)")
    return path


@pytest.fixture(scope="session")
def shared_dir():
    return _require(SHARED)


@pytest.fixture(scope="session")
def coco_mini():
    return _require(COCO_MINI)


@pytest.fixture(scope="session")
def media_dir():
    return _require(MEDIA)


@pytest.fixture(scope="session")
def fixture_inputs():
    return dict(np.load(_require(FIXTURE / "inputs.npz")))


@pytest.fixture(scope="session")
def fixture_outputs():
    return dict(np.load(_require(FIXTURE / "outputs.npz")))


@pytest.fixture(scope="session")
def fixture_weights_path():
    return _require(FIXTURE / "weights.npz")


@pytest.fixture(scope="session")
def fixture_targets(fixture_inputs):
    """Training targets of the fixture's two images built by data/targets.build_targets (crowds are the last
    ``num_crowds`` rows; labels become class channels label + 1), batched: dict of tf tensors [2, ...]."""
    import tensorflow as tf

    from config import get_config
    from data.targets import build_targets
    from yolact.ops.anchors import make_anchors

    cfg = get_config("yolact_resnet50")
    anchors = tf.constant(make_anchors(cfg))
    per_image = []
    for i in range(2):
        labels = fixture_inputs[f"gt_labels{i}"].astype(np.int32)
        n = len(labels)
        crowd = np.arange(n) >= n - int(fixture_inputs[f"num_crowds{i}"])
        masks = np.transpose(fixture_inputs[f"gt_masks{i}"], (1, 2, 0)).astype(np.float32)
        per_image.append(build_targets(fixture_inputs[f"gt_boxes{i}"], np.where(crowd, 0, labels + 1), masks,
                                       crowd, anchors, cfg))
    return {k: tf.stack([t[k] for t in per_image]) for k in per_image[0]}


PLUS_FIXTURE = SHARED / "fixtures" / "reference_plus_r50"


@pytest.fixture(scope="session")
def plus_outputs():
    """reference_plus_r50/outputs.npz (YOLACT++ R50 original run on image0 of reference_r50/inputs.npz)."""
    return dict(np.load(_require(PLUS_FIXTURE / "outputs.npz")))


@pytest.fixture(scope="session")
def plus_state_dict():
    """The YOLACT++ R50 fixture weights as its README builds them: reference_r50/weights.npz, replaced / completed
    by reference_plus_r50/weights_delta.npz (405 original state_dict keys, float32 numpy)."""
    from yolact.torch_weights import load_state_dict_file

    sd = load_state_dict_file(_require(FIXTURE / "weights.npz"))
    sd.update(load_state_dict_file(_require(PLUS_FIXTURE / "weights_delta.npz")))
    return sd
