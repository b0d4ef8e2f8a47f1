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

# Tests run in parallel (pytest-xdist, scripts/test.sh: ``-n 2 --dist loadgroup``). Each test module is one group,
# so its module-scoped fixtures are built once; modules that share an expensive session fixture form one group so
# that one worker builds it once (session fixtures are per worker). The "exports" group also keeps the two big
# 550 px exports (ResNet-50 and YOLACT++ to SavedModel + TFLite (+ ONNX), ~8 GB each while converting) from running
# at the same time on the 24 GB machine.
XDIST_GROUPS = {
    "test_deploy": "exports", "test_export": "exports", "test_faults_inference_2": "exports",
    "test_formats_out": "exports", "test_plus_export": "exports", "test_video": "exports",
    "test_rectangular": "test_rectangular",  # its own small lite0 run + TFLite export (192x320), ~1 min
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if not any(m.name == "xdist_group" for m in item.iter_markers()):
            module = item.module.__name__.rsplit(".", 1)[-1]
            item.add_marker(pytest.mark.xdist_group(XDIST_GROUPS.get(module, module)))


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
def r50_weights(tmp_path_factory, fixture_weights_path):
    """The fixture's original ResNet-50 weights converted once per session (yolact/torch_weights.py
    ``convert_file``): ``.../r50.weights.h5`` in a run folder with config.json (yolact_resnet50, 550) and COCO's
    label_map.json, so ``-checkpoint`` needs no other flag. Read-only for the tests."""
    from yolact.torch_weights import convert_file

    weights = tmp_path_factory.mktemp("r50_run") / "r50.weights.h5"
    convert_file(str(fixture_weights_path), "yolact_resnet50", str(weights))
    return weights


@pytest.fixture(scope="session")
def r50_export(tmp_path_factory, r50_weights):
    """``export_saved_model.py -checkpoint R50 -tflite float32 -onnx -openvino`` once per session: the SavedModel,
    yolact_float32.tflite, yolact.onnx and yolact_openvino.xml of :func:`r50_weights` in one folder. Read-only for
    the tests."""
    import subprocess

    export_dir = tmp_path_factory.mktemp("r50_export") / "export"
    r = subprocess.run([sys.executable, "export_saved_model.py", "-checkpoint", str(r50_weights), "-export_dir",
                        str(export_dir), "-tflite", "float32", "-onnx", "-openvino"], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=1200)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert all(name in r.stdout for name in ("yolact_float32.tflite", "yolact.onnx", "yolact_openvino.xml")), r.stdout
    return export_dir


@pytest.fixture(scope="session")
def run128(tmp_path_factory, r50_weights):
    """A run folder with :func:`r50_weights`' file, config.json of yolact_resnet50 at 128 px (the weights do not
    depend on img_size; small inputs keep each CLI call cheap) and COCO's label_map.json. Read-only for the tests."""
    import shutil

    from config import get_config
    from yolact.checkpoint import write_run_files
    from yolact.ops.label_map import coco_label_map

    folder = tmp_path_factory.mktemp("run128")
    shutil.copy(r50_weights, folder / "r50.weights.h5")
    write_run_files(folder, get_config("yolact_resnet50", img_size=128), coco_label_map())
    return folder


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


# ---- the detection path of the inference forms, step by step on given network outputs (test_detection.py,
# test_plus_parity.py)

def detect(outputs, anchors, cfg, nms_type=None, jit=None):
    """Decode + NMS of the detection layer (no masks) on explicit anchors."""
    from yolact.detection import DetectionGenerator

    return DetectionGenerator(cfg, nms_type, jit).nms(outputs, anchors)


def postprocess(dets, proto, height, width, category_ids=None, max_detections=None):
    """The inference forms' path after NMS for one image: prototype-resolution masks of ``dets``' rows (the
    layer's assembly), the output convention, then the host step at (height, width)."""
    import tensorflow as tf

    from yolact import masks as masks_lib
    from yolact.detection import to_output_convention, to_results
    from yolact.ops.label_map import coco_label_map

    lm = coco_label_map()
    probs = masks_lib.assemble_masks(tf.constant(proto, tf.float32), dets["coefs"], dets["boxes"])
    conv = to_output_convention({**dets, "masks": probs}, lm.index_to_id_array() if category_ids is None
                                else category_ids)
    return to_results({k: np.asarray(v) for k, v in conv.items()}, height, width, lm.id_to_index_array(),
                      max_detections=max_detections)


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
