"""Build tests/data/reference_plus_r50_f64.npz: the ORIGINAL YOLACT++ R50 forward of the reference_plus_r50 fixture,
computed in float64.

Why: ../shared/fixtures/reference_plus_r50 is float32, and on it float32 itself is not precise to the 1e-4 its
README hopes for (tests/test_plus_parity.py module docstring: a 1e-6 relative perturbation of C2 grows to 2.9e-4 at
C5 through the 13 deformable convolutions, the reference sits as far from float64 as we do). In float64 the
rounding noise is ~1e-9 smaller, so the two implementations can be compared at a tolerance that separates port
errors from rounding: tests/test_plus_parity.py runs our model under Keras' float64 policy against this file.

Same model, weights and input as the fixture: ``make_reference_plus_r50.py``'s own functions build the original
``yolact_plus_resnet50`` (its plain-torch DCNv2 shim, checked bit-identical there against the original CUDA im2col
code) from reference_r50/weights.npz + reference_plus_r50/weights_delta.npz, then ``net.double()``; image0 of
reference_r50/inputs.npz (``input``, NHWC float32 -> NCHW float64); train mode with frozen BatchNorm, as the fixture.
Stored per output (C5, P3..P7, proto, loc, conf, mask, segm, NHWC as ours): every ``stride``-th value of the
flattened tensor (``make_reference_darknet53.subsample``'s rule) in float64, the stride, and the full tensor's L2
norm. Usage (see tests/data/README.md)::

    /tmp/torchenv/bin/python tests/data/make_reference_plus_f64.py -yolact /tmp/yolact_orig
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
OUTPUT_KEYS = ("C5", "P3", "P4", "P5", "P6", "P7", "proto", "loc", "conf", "mask", "segm")
SAMPLES = 6000


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-yolact", required=True, help="checkout of github.com/dbolya/yolact (patched in place)")
    ap.add_argument("-shared", default=str(HERE.parents[2] / "shared"), help="the shared/ folder")
    ap.add_argument("-out", default=str(HERE / "reference_plus_r50_f64.npz"))
    ap.add_argument("-threads", type=int, default=2)
    args = ap.parse_args()
    fixtures = pathlib.Path(args.shared) / "fixtures"
    sys.path.insert(0, str(fixtures))
    plus = _load("make_reference_plus_r50", fixtures / "make_reference_plus_r50.py")
    darknet = _load("make_reference_darknet53", HERE / "make_reference_darknet53.py")
    y = plus.import_yolact_plus(args.yolact, args.threads)
    torch = y["torch"]
    r50 = plus.load_r50_weights(str(fixtures / "reference_r50"))
    delta = np.load(fixtures / "reference_plus_r50" / "weights_delta.npz")
    net = plus.plus_net_from_weights(r50, delta).double()
    x = np.load(fixtures / "reference_r50" / "inputs.npz")["input"][:1]
    store = {}
    net.backbone.register_forward_hook(lambda m, i, o: store.__setitem__("backbone", [t.clone() for t in o]))
    for li, layer in enumerate(net.prediction_layers):
        layer.register_forward_pre_hook(
            lambda m, i, li=li: store.setdefault("fpn", {}).__setitem__(li, i[0].clone()))
    with torch.no_grad():
        net.train()
        net.freeze_bn()
        preds = net(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float64)))

    def nhwc(t):
        return t.permute(0, 2, 3, 1).contiguous().numpy()

    tensors = {"C5": nhwc(store["backbone"][3]), "proto": preds["proto"].numpy(), "loc": preds["loc"].numpy(),
               "conf": preds["conf"].numpy(), "mask": preds["mask"].numpy(), "segm": nhwc(preds["segm"])}
    for i, name in enumerate(("P3", "P4", "P5", "P6", "P7")):
        tensors[name] = nhwc(store["fpn"][i])
    out = {}
    for key in OUTPUT_KEYS:
        t = np.asarray(tensors[key], np.float64)
        assert t.dtype == np.float64 and np.all(np.isfinite(t)), key
        _, stride = darknet.subsample(t, SAMPLES)
        out[key] = t.reshape(-1)[::stride]
        out[key + "_stride"] = np.int64(stride)
        out[key + "_norm"] = np.float64(np.linalg.norm(t))
        out[key + "_shape"] = np.asarray(t.shape, np.int64)
    np.savez_compressed(args.out, **out)
    shapes = ", ".join(f"{k} {tuple(out[k + '_shape'])}" for k in OUTPUT_KEYS)
    print(f"wrote {args.out}: {shapes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
