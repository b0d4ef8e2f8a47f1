"""export_saved_model.py: the fixture's weights converted and exported, served in a fresh process that cannot import
the project, reproduce the original's detections on the fixture's two images (inputs.npz image0/image1)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import FIXTURE, ROOT

pytestmark = pytest.mark.slow

SERVE = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    try:
        import yolact  # noqa: F401
        sys.exit("the project is importable from the serving process")
    except ImportError:
        pass
    export_dir, inputs, out = sys.argv[1:4]
    model = tf.saved_model.load(export_dir)
    serve = model.signatures["serving_default"]
    images = np.load(inputs)
    res = {}
    for k in range(2):
        for key, v in serve(images=tf.constant(images[f"image{k}"][None])).items():
            res[f"{key}{k}"] = v.numpy()
    png = tf.io.encode_png(images["image1"])
    for key, v in model.signatures["serving_bytes"](image_bytes=png).items():
        res[f"bytes_{key}"] = v.numpy()
    for name, bad in (("dtype", tf.zeros([1, 8, 8, 3], tf.float32)), ("rank", tf.zeros([8, 8, 3], tf.uint8))):
        try:
            serve(images=bad)
            print(f"{name}: NO ERROR")
        except Exception as e:  # noqa: BLE001
            print(f"{name}: {type(e).__name__}: {e}".replace("\\n", " "))
    np.savez(out, **res)
""")


def _env():
    return {"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, fixture_weights_path):
    from yolact.torch_weights import convert_file

    work = tmp_path_factory.mktemp("export")
    weights = work / "r50.weights.h5"
    convert_file(str(fixture_weights_path), "yolact_resnet50", str(weights))
    export_dir = work / "saved_model"
    r = subprocess.run([sys.executable, "export_saved_model.py", "-config", "yolact_resnet50", "-checkpoint",
                        str(weights), "-export_dir", str(export_dir)], cwd=ROOT, capture_output=True, text=True,
                       env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return export_dir


@pytest.fixture(scope="module")
def served(exported, tmp_path_factory):
    work = tmp_path_factory.mktemp("serve")
    script = work / "serve.py"
    script.write_text(SERVE)
    out = work / "res.npz"
    inputs = str(FIXTURE / "inputs.npz")
    r = subprocess.run([sys.executable, "-I", str(script), str(exported), inputs, str(out)], cwd=work,
                       capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return dict(np.load(out)), r.stdout


def test_saved_model_cli_lists_both_signatures(exported):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    r = subprocess.run([cli, "show", "--dir", str(exported), "--all"], capture_output=True, text=True, env=_env(),
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for text in ("signature_def['serving_default']", "signature_def['serving_bytes']", "inputs['images']",
                 "inputs['image_bytes']", "DT_UINT8", "DT_STRING", "outputs['detection_masks']",
                 "outputs['detection_boxes']", "outputs['detection_classes']", "outputs['num_detections']",
                 "outputs['detection_scores']"):
        assert text in r.stdout, text
    assert (exported / "label_map.json").is_file() and (exported / "config.json").is_file()
    from yolact.checkpoint import read_config

    assert read_config(str(exported)).name == "yolact_resnet50"


@pytest.mark.parametrize("k", [0, 1])
def test_served_detections_match_original(served, fixture_outputs, k):
    res, _ = served
    ref_masks = fixture_outputs[f"det{k}_masks"]
    h, w = ref_masks.shape[1:]
    from yolact.ops.label_map import coco_label_map

    ids = np.asarray(coco_label_map().ids)
    assert res[f"num_detections{k}"].tolist() == [100]
    np.testing.assert_array_equal(res[f"detection_classes{k}"][0], ids[fixture_outputs[f"det{k}_class"]])
    np.testing.assert_allclose(res[f"detection_scores{k}"][0], fixture_outputs[f"det{k}_score"], atol=1e-4, rtol=0)
    b = res[f"detection_boxes{k}"][0]  # normalized [ymin, xmin, ymax, xmax]
    px = np.stack([b[:, 1] * w, b[:, 0] * h, b[:, 3] * w, b[:, 2] * h], axis=1)
    assert np.abs(px - fixture_outputs[f"det{k}_box"]).max() <= 1.0
    probs = res[f"detection_masks{k}"][0]
    assert probs.shape == (100, h, w) and probs.min() >= 0 and probs.max() <= 1
    masks = probs > 0.5
    inter = (masks & (ref_masks > 0)).sum(axis=(1, 2))
    union = (masks | (ref_masks > 0)).sum(axis=(1, 2))
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    print(f"image {k}: {int((masks != ref_masks.astype(bool)).sum())} mask pixels differ, min IoU {iou.min():.5f}")
    assert iou.min() >= 0.99


def test_bytes_signature_and_input_errors(served):
    res, stdout = served
    np.testing.assert_allclose(res["bytes_detection_scores"], res["detection_scores1"], atol=1e-6)
    np.testing.assert_array_equal(res["bytes_detection_classes"], res["detection_classes1"])
    dtype_line = next(line for line in stdout.splitlines() if line.startswith("dtype:"))
    rank_line = next(line for line in stdout.splitlines() if line.startswith("rank:"))
    assert "expected to be a uint8 tensor" in dtype_line
    assert "images_must_be_uint8_BxHxWx3" in rank_line and "not compatible with expected shape" in rank_line
