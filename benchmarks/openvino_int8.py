"""An int8 OpenVINO IR of an ONNX export by NNCF post-training quantization, for benchmarks/cpu_runtimes.py.

NNCF (with scikit-learn, scipy, networkx ...) is not a project dependency: it lives in its own venv, which has no
TensorFlow, so the calibration images are written first by the project's venv (the same images and resize as
``export_saved_model.py -tflite int8 -representative_data``), then quantized in the NNCF venv::

    .venv/bin/python benchmarks/openvino_int8.py calibration -export_dir EXPORT \\
        -representative_data 'data/coco_mini/val-*' -out /tmp/cal.npy
    /tmp/ovenv/bin/python benchmarks/openvino_int8.py quantize -export_dir EXPORT -calibration /tmp/cal.npy \\
        -out OUT_DIR      # writes OUT_DIR/yolact_openvino_int8.xml + .bin, config.json, label_map.json

(the NNCF venv: ``.venv/bin/python -m venv /tmp/ovenv && /tmp/ovenv/bin/pip install openvino nncf
onnx numpy``.) As the int8 TFLite model, the detection stage stays float: every node named under
``detection_generator`` and the mask assembly's MatMul (the network has no MatMul) are NNCF's ignored scope.

Known problem (docs/benchmarks.md "CPU runtimes and int8"): the IR this writes keeps no detection above 0.3 on the
media photos where the float and TFLite int8 models keep 11-14: its timings show what AMX int8 can reach, its
detections are not usable.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time


def calibration(args):
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from data.parser import eval_images
    from yolact.checkpoint import resolve_run
    from yolact.ops.preprocess import resize_image

    cfg, _, _ = resolve_run(os.path.join(args.export_dir, "yolact.onnx"))
    images = [resize_image(image.numpy(), cfg) for image, _ in eval_images(args.representative_data).take(args.images)]
    np.save(args.out, np.concatenate(images))
    print(f"{len(images)} calibration images {cfg.img_size_text} -> {args.out}")


def quantize(args):
    import nncf
    import numpy as np
    import openvino as ov

    images = np.load(args.calibration)
    model = ov.convert_model(os.path.join(args.export_dir, "yolact.onnx"))
    t0 = time.time()
    dataset = nncf.Dataset([images[i:i + 1] for i in range(len(images))], lambda x: {"images": x})
    quantized = nncf.quantize(model, dataset, subset_size=len(images),
                              ignored_scope=nncf.IgnoredScope(patterns=[".*detection_generator.*"], types=["MatMul"],
                                                              validate=False))
    os.makedirs(args.out, exist_ok=True)
    ov.save_model(quantized, os.path.join(args.out, "yolact_openvino_int8.xml"), compress_to_fp16=False)
    for name in ("config.json", "label_map.json"):
        shutil.copy(os.path.join(args.export_dir, name), args.out)
    print(f"quantized on {len(images)} images in {time.time() - t0:.0f} s -> {args.out}/yolact_openvino_int8.xml")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    c = sub.add_parser("calibration")
    c.add_argument("-export_dir", required=True)
    c.add_argument("-representative_data", required=True)
    c.add_argument("-images", type=int, default=100)
    c.add_argument("-out", required=True)
    q = sub.add_parser("quantize")
    q.add_argument("-export_dir", required=True)
    q.add_argument("-calibration", required=True)
    q.add_argument("-out", required=True)
    args = parser.parse_args()
    (calibration if args.step == "calibration" else quantize)(args)


if __name__ == "__main__":
    main()
