"""Build tests/data/reference_darknet53.npz: the ORIGINAL YOLACT ``yolact_darknet53`` run on the reference_r50 images.

Runs the original PyTorch code (github.com/dbolya/yolact at ``YOLACT_COMMIT``, patched for a CPU-only torch exactly
as ``shared/fixtures/make_reference_r50.py`` does; its ``PATCHES`` are imported from there) in a separate
environment with torch + numpy + absl-py; it is not run by the tests. Usage (see tests/data/README.md)::

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy absl-py
    git -C YOLACT_GIT archive 902073d414728280b496c5f0a59a8e8285b3c13c | tar -x -C /tmp/yolact_orig
    /tmp/torchenv/bin/python tests/data/make_reference_darknet53.py -yolact /tmp/yolact_orig

Weights are NOT stored: every parameter comes from :func:`seeded_weights` (numpy only, so tests/test_darknet.py
regenerates the identical float32 tensors), only the BatchNorm running statistics, calibrated by the original
model on the two images, are stored. Outputs are stored subsampled (:func:`subsample`) with their full L2 norm.

The test imports this module for :func:`seeded_weights`, :func:`darknet_input` and :func:`subsample`; torch and
absl are imported only by :func:`main`.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import zlib

import numpy as np

YOLACT_COMMIT = "902073d414728280b496c5f0a59a8e8285b3c13c"
CONFIG_NAME = "yolact_darknet53_config"
SEED = 0
BN_GAMMA_STD = 0.1  # BN weight = 1 + U with std BN_GAMMA_STD
BN_BETA_STD = 0.1  # BN bias = U with std BN_BETA_STD
CONV_BIAS_STD = 0.05  # conv biases (FPN, protonet, head, semantic conv)
# The shared head's output convs (weight and bias) are scaled so that conf logits, box offsets and mask
# coefficients have a std of about 0.34 / 1.1 / 0.57 with 2.4 % of |tanh| > 0.99 (see tests/data/README.md):
# unscaled, tanh saturates and decoded boxes explode, which would hide errors.
HEAD_SCALES = {
    "prediction_layers.0.conf_layer": 0.1,
    "prediction_layers.0.bbox_layer": 0.25,
    "prediction_layers.0.mask_layer": 0.25,
}
SAMPLES = 6000  # about this many values kept per output
# Input normalisation of the reference_r50 fixture's `input` (ResNet MEANS / STD, RGB order).
R50_MEAN_RGB = (123.68, 116.78, 103.94)
R50_STD_RGB = (58.40, 57.12, 57.38)
OUTPUT_KEYS = ("C3", "C4", "C5", "P3", "P4", "P5", "P6", "P7", "proto", "loc", "conf", "mask", "segm")


def seeded_weights(shapes, seed=SEED):
    """Deterministic float32 parameters for an original YOLACT state_dict, from numpy only.

    Each tensor draws from its own ``np.random.default_rng(SeedSequence([seed, crc32(key)]))`` with
    ``Generator.random`` (the 53-bit uniform stream, stable across numpy versions), mapped to a zero-mean uniform
    of the wanted std: conv weights kaiming (``sqrt(2 / fan_in)``, backbone) or xavier (``sqrt(2 / (fan_in +
    fan_out))``, the rest), conv biases ``CONV_BIAS_STD``, BN weight ``1 + U(BN_GAMMA_STD)``, BN bias
    ``U(BN_BETA_STD)``; ``HEAD_SCALES`` multiply the head's output convs.

    Args:
      shapes: ordered mapping original key -> shape (PyTorch layouts, conv OIHW) of the whole state_dict.
      seed: int.

    Returns:
      dict key -> float32 array for every key except BN ``running_mean`` / ``running_var`` (calibrated, stored in
      the reference) and ``num_batches_tracked``.

    Raises:
      ValueError: a key that is neither a conv nor a BatchNorm tensor.
    """
    bn_modules = {k[: -len(".running_mean")] for k in shapes if k.endswith(".running_mean")}
    out = {}
    for key, shape in shapes.items():
        module, param = key.rsplit(".", 1)
        if param in ("running_mean", "running_var", "num_batches_tracked"):
            continue
        shape = tuple(int(s) for s in shape)
        if module in bn_modules:
            std, offset = (BN_GAMMA_STD, 1.0) if param == "weight" else (BN_BETA_STD, 0.0)
        elif param == "weight" and len(shape) == 4:
            fan_in, fan_out = int(np.prod(shape[1:])), shape[0] * shape[2] * shape[3]
            std = np.sqrt(2.0 / fan_in) if key.startswith("backbone.") else np.sqrt(2.0 / (fan_in + fan_out))
            offset = 0.0
        elif param == "bias" and len(shape) == 1:
            std, offset = CONV_BIAS_STD, 0.0
        else:
            raise ValueError(f"no weight rule for {key} {shape}")
        rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(key.encode())]))
        u = rng.random(shape) * 2.0 - 1.0  # float64 uniform [-1, 1), std 1 / sqrt(3)
        value = offset + u * (std * np.sqrt(3.0) * HEAD_SCALES.get(module, 1.0))
        out[key] = value.astype(np.float32)
    return out


def darknet_input(fixture_input):
    """The darknet network input for the reference_r50 fixture's images: RGB ``x / 255``.

    Args:
      fixture_input: float32 [B, 550, 550, 3], the fixture's ``input`` (RGB ``(x - MEANS) / STD``).

    Returns:
      float32 [B, 550, 550, 3] = ``(input * STD + MEANS) / 255`` computed in float64, i.e. the resized pixels the
      fixture was made from, scaled as the original's ``darknet_transform``.
    """
    x = np.asarray(fixture_input, np.float64) * np.array(R50_STD_RGB) + np.array(R50_MEAN_RGB)
    return (x / 255.0).astype(np.float32)


def _is_prime(n):
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


def subsample(array, samples=SAMPLES):
    """Every ``stride``-th value of the flattened array (C order), ``stride`` the smallest prime >= size / samples
    (so it is coprime with every channel count and visits all channels).

    Returns ``(values float32 [ceil(size / stride)], stride int)``.
    """
    flat = np.asarray(array).reshape(-1)
    stride = max(2, flat.size // samples)
    while not _is_prime(stride):
        stride += 1
    return flat[::stride].astype(np.float32), stride


# ----------------------------------------------------------------------------------------- original (torch) side


def _import_original(yolact_dir, shared_dir, threads):
    """Patch (as the r50 fixture generator) and import the original with ``yolact_darknet53_config``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_reference_r50", shared_dir / "fixtures/make_reference_r50.py")
    r50 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(r50)
    r50.apply_patches(str(yolact_dir))
    sys.path.insert(0, str(yolact_dir))
    import torch

    torch.set_num_threads(threads)
    from data.config import cfg, set_cfg

    set_cfg(CONFIG_NAME)
    cfg.mask_proto_debug = False
    import utils.augmentations as aug
    import yolact

    return torch, cfg, yolact, aug, r50.PATCHES


def _bn_modules(net, torch):
    return [(n, m) for n, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]


def _nhwc(t):
    return t.detach().permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)


def cfg_selected_layers(net):
    """The backbone outputs the original feeds to the FPN (``cfg.backbone.selected_layers``; Yolact overwrites its
    own ``selected_layers`` with the FPN level indices)."""
    from data.config import cfg

    return list(cfg.backbone.selected_layers)


def _run(net, x, torch):
    """Train-mode forward with frozen BN (as the r50 fixture): backbone C3..C5, FPN P3..P7, head outputs."""
    store = {}
    hooks = [net.backbone.register_forward_hook(lambda m, i, o: store.__setitem__("backbone", o))]
    for li, layer in enumerate(net.prediction_layers):
        hooks.append(layer.register_forward_pre_hook(lambda m, i, li=li: store.__setitem__(f"P{li + 3}", i[0])))
    net.train()
    net.freeze_bn()
    with torch.no_grad():
        preds = net(x)
    for h in hooks:
        h.remove()
    selected = cfg_selected_layers(net)
    out = {f"C{k + 3}": _nhwc(store["backbone"][i]) for k, i in enumerate(selected)}
    out.update({f"P{k}": _nhwc(store[f"P{k}"]) for k in range(3, 8)})
    out["proto"] = preds["proto"].numpy().astype(np.float32)  # already NHWC
    out["segm"] = _nhwc(preds["segm"])
    for k in ("loc", "conf", "mask"):
        out[k] = preds[k].numpy().astype(np.float32)
    return out


def _candidates(conf):
    e = np.exp(conf - conf.max(-1, keepdims=True))
    p = e / e.sum(-1, keepdims=True)
    return [int(n) for n in (p[..., 1:].max(-1) > 0.05).sum(-1)]


def main(argv):
    from absl import flags

    f = flags.FLAGS
    del argv
    repo = pathlib.Path(__file__).resolve().parents[2]
    shared = pathlib.Path(f.shared or repo.parent / "shared").resolve()
    torch, cfg, yolact, aug, patches = _import_original(pathlib.Path(f.yolact).resolve(), shared, f.threads)
    inputs = np.load(shared / "fixtures/reference_r50/inputs.npz")
    x = torch.from_numpy(darknet_input(inputs["input"])).permute(0, 3, 1, 2).contiguous()

    torch.manual_seed(SEED)  # only affects the parameters overwritten below
    net = yolact.Yolact()
    sd = net.state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    weights = seeded_weights(shapes)
    bns = _bn_modules(net, torch)
    with torch.no_grad():
        for k, v in weights.items():
            sd[k].copy_(torch.from_numpy(v))
        # BN calibration: running stats = average of the per-image batch statistics over the two images.
        for _, m in bns:
            m.reset_running_stats()
            m.momentum = None
        net.train()
        for i in range(x.shape[0]):
            net(x[i : i + 1])
        for _, m in bns:
            m.momentum = 0.1
    net.eval()
    sd = net.state_dict()

    listing = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sd.items()]
    arrays = {
        "state_dict": np.array(json.dumps(listing)),
        "weights_check": np.array([float(np.sum(weights[k], dtype=np.float64)) for k in weights], np.float64),
    }
    for name, _ in bns:
        for stat in ("running_mean", "running_var"):
            arrays[f"bn/{name}.{stat}"] = sd[f"{name}.{stat}"].numpy().astype(np.float32)
    out = _run(net, x, torch)
    info = {}
    for key in OUTPUT_KEYS:
        values, stride = subsample(out[key])
        arrays[f"out/{key}"] = values
        arrays[f"stride/{key}"] = np.array(stride, np.int64)
        arrays[f"shape/{key}"] = np.array(out[key].shape, np.int64)
        arrays[f"norm/{key}"] = np.array(np.linalg.norm(out[key].astype(np.float64)), np.float64)
        info[key] = (out[key].shape, float(out[key].std()), float(np.abs(out[key]).max()))
    # The original's darknet_transform (FastBaseTransform) on the raw images: BGR float in, RGB x / 255 out.
    transform = aug.FastBaseTransform()
    for i in range(2):
        bgr = torch.from_numpy(inputs[f"image{i}"][..., ::-1].astype(np.float32).copy())[None]
        values, stride = subsample(_nhwc(transform(bgr)))
        arrays[f"out/transform{i}"], arrays[f"stride/transform{i}"] = values, np.array(stride, np.int64)
    arrays["meta"] = np.array(json.dumps({
        "yolact_commit": YOLACT_COMMIT, "config": CONFIG_NAME, "seed": SEED, "torch": torch.__version__,
        "numpy": np.__version__, "threads": f.threads, "patches": len(patches),
        "selected_layers": cfg_selected_layers(net), "backbone_channels": list(net.backbone.channels),
    }))
    out_path = pathlib.Path(f.out or repo / "tests/data/reference_darknet53.npz")
    np.savez_compressed(out_path, **arrays)
    for key, (shape, std, amax) in info.items():
        print(f"{key:6s} {str(shape):22s} std {std:.4g} max|x| {amax:.4g}")
    print(f"mask coefficients with |tanh| > 0.99: {np.mean(np.abs(out['mask']) > 0.99):.4f}; "
          f"anchors with best foreground softmax > 0.05: {_candidates(out['conf'])}")
    print(f"{len(sd)} state_dict tensors, {len(weights)} seeded, {sum(1 for k in arrays if k.startswith('bn/'))} "
          f"BN statistics; wrote {out_path} ({os.path.getsize(out_path) / 1e3:.0f} kB)")


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("yolact", None, f"checkout of github.com/dbolya/yolact at {YOLACT_COMMIT}", required=True)
    flags.DEFINE_string("shared", None, "the shared/ folder (default: ../shared next to the repository)")
    flags.DEFINE_string("out", None, "output .npz (default: tests/data/reference_darknet53.npz)")
    flags.DEFINE_integer("threads", 2, "torch intra-op threads")
    app.run(main)
