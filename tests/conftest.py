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
