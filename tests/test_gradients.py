"""Gradient parity of the training step with the ORIGINAL PyTorch YOLACT on the reference_r50 fixture.

Reference: tests/data/reference_r50_grads.npz, gradients of the original's MultiBoxLoss terms B, C, M, S and of
their sum w.r.t. every trainable parameter, computed with the original code (net.train(); net.freeze_bn()) from
the fixture's weights, input and GT (see tests/data/README.md for exactly how).

Tolerances come from measurements (tests/data/README.md): the prediction head, protonet and semantic conv agree
to <= 1e-4 relative per tensor. The backbone and the FPN levels fed by C4/C5 only agree to ~1e-2, but so does the
original with itself: the same PyTorch code run with channels_last convolutions (a different float32 summation
order) differs from its NCHW run by up to 1.5e-2 in the backbone, and a 1e-5 relative perturbation of the input
(the size of our forward error) changes them by a similar amount. The FPN P4 layer is further off (2.6e-2 in M)
because 6 of its 627,200 pre-activations are within 1.1e-4 of 0 and fall on the other side of the ReLU than in
the original, next to positive anchors; with the original's ReLU pattern our weight gradient matches to 1e-5
(tests/data/README.md). Such sign flips are inherent to float32, hence 5e-2 there. The head's first conv has the same
kind of flip on an Intel Xeon with AVX-512 (oneDNN's convolution kernels sum in another order than on the AMD EPYC
where the tolerances were measured): one of its 3.28 M pre-activations (image 1, P4 y=20 x=8, channel 73: ours
+2.0e-5, the original's -2.7e-5) sits under a positive anchor's box regression and moves the B gradient of
`upfeature.0.bias` by 1.4e-3 relative; with the original's ReLU pattern it matches to 3.2e-6, hence 2e-3 for that one
tensor (FULL_TOL_KEY). A real error (missing term, wrong scale, wrong layout, BN not frozen, a wrong custom gradient)
gives O(1) differences in these checks.
"""

import pathlib

import numpy as np
import pytest
import tensorflow as tf

from config import get_config
from yolact.losses import yolact_loss
from yolact.model import build_model
from yolact.torch_weights import _keras_targets, convert_state_dict, load_state_dict_file

REF = pathlib.Path(__file__).parent / "data" / "reference_r50_grads.npz"
TERMS = ("B", "C", "M", "S", "total")
GROUPS = ("backbone", "fpn", "proto_net", "prediction_layers", "semantic_seg_conv")
# Per-tensor relative error ||ours - ref|| / ||ref|| of full gradient tensors (measured maxima in the README).
FULL_TOL = {"backbone": 5e-2, "fpn": 5e-2, "proto_net": 1e-3, "prediction_layers": 1e-3, "semantic_seg_conv": 1e-3}
# Per-tensor exceptions to FULL_TOL (full tensors and per-channel norm vectors). upfeature.0.bias in B: 1.39e-3
# measured on an Intel Xeon (AVX-512, oneDNN); C 3.0e-5, M 3.4e-4, total 5.5e-4 there; <= 1.5e-5 on the AMD EPYC
# of the README table. Cause: a single float32 ReLU sign flip of its pre-activation (|x| ~2e-5) next to a
# positive anchor, where the box-loss gradient is 2.7e-4 per element; with the original's ReLU pattern (the sign of
# a float64 conv of the original's P3..P7 from outputs.npz) the gradient matches to 3.2e-6, and with
# TF_ENABLE_ONEDNN_OPTS=0 (Eigen kernels, no flip there) to 2.4e-6 (tests/data/README.md).
FULL_TOL_KEY = {"prediction_layers.0.upfeature.0.bias": 2e-3}
# Per-tensor | ||ours|| / ||ref|| - 1 | for all 89 trainable tensors (measured: 3.8e-3, 1.5e-3, 8e-6, 3e-6, 3e-7).
NORM_TOL = {"backbone": 1e-2, "fpn": 5e-3, "proto_net": 1e-4, "prediction_layers": 1e-4, "semantic_seg_conv": 1e-4}
# Parameters each term reaches in the original (the others get no gradient).
EXPECTED_REACH = {"B": 73, "C": 73, "M": 83, "S": 63, "total": 89}


def _group(key):
    return next(g for g in GROUPS if key.startswith(g))


def _full_tol(key):
    return FULL_TOL_KEY.get(key, FULL_TOL[_group(key)])


def _to_torch_layout(array):
    """Keras conv kernel HWIO -> PyTorch OIHW; vectors unchanged."""
    return np.transpose(array, (3, 2, 0, 1)) if array.ndim == 4 else array


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(np.asarray(b, np.float64)))


@pytest.fixture(scope="module")
def ref():
    assert REF.exists(), f"missing {REF}"
    return dict(np.load(REF))


@pytest.fixture(scope="module")
def ours(fixture_weights_path, fixture_inputs, fixture_targets):
    """(losses, {term: {original key: gradient in the original's layout}}) of our model on the fixture batch."""
    cfg = get_config("yolact_resnet50")
    model = build_model(cfg, freeze_bn=True)
    convert_state_dict(load_state_dict_file(fixture_weights_path), model)
    targets = fixture_targets
    names = {id(var): key for key, (var, _) in _keras_targets(model).items()}
    variables = model.trainable_variables
    keys = [names[id(v)] for v in variables]
    with tf.GradientTape(persistent=True) as tape:
        out = model(fixture_inputs["input"], training=True)
        losses = yolact_loss(out, targets, cfg)
    grads = {}
    for term in TERMS:
        g = tape.gradient(losses[term], variables)
        grads[term] = {k: _to_torch_layout(gi.numpy()) for k, gi in zip(keys, g) if gi is not None}
    del tape
    return {k: float(v) for k, v in losses.items()}, grads, keys


def test_same_setting_as_reference(ours, ref):
    """The gradients are taken at the original's loss values (same weights, input, targets, frozen BN)."""
    losses, _, _ = ours
    for term in TERMS:
        assert _rel(losses[term], ref[f"loss/{term}"]) <= 1e-4, term


def test_trainable_parameters_are_the_originals(ours, ref):
    """With BN frozen, exactly the original's requires_grad parameters are trained (89 conv weights/biases)."""
    _, _, keys = ours
    assert len(keys) == 89
    assert sorted(keys) == sorted(ref["norm_keys"].tolist())
    assert not [k for k in keys if ".bn" in k or "downsample.1" in k]


@pytest.mark.parametrize("term", TERMS)
def test_each_term_reaches_the_same_parameters(ours, ref, term):
    _, grads, _ = ours
    keys = ref["norm_keys"].tolist()
    reached_ref = {k for k, n in zip(keys, ref[f"norms/{term}"]) if n > 0}
    reached_ours = {k for k, g in grads[term].items() if np.any(g != 0)}
    assert len(reached_ref) == EXPECTED_REACH[term]
    assert reached_ours == reached_ref


@pytest.mark.parametrize("term", TERMS)
def test_gradient_norms_match_original(ours, ref, term):
    """Every trainable tensor: ||ours|| / ||ref|| - 1 within the group's tolerance."""
    _, grads, _ = ours
    bad = []
    for key, n_ref in zip(ref["norm_keys"].tolist(), ref[f"norms/{term}"]):
        if n_ref == 0:
            continue
        n = float(np.linalg.norm(grads[term][key].astype(np.float64)))
        if abs(n / n_ref - 1) > NORM_TOL[_group(key)]:
            bad.append((key, n, float(n_ref)))
    assert not bad, bad


@pytest.mark.parametrize("term", TERMS)
def test_per_channel_gradient_norms_match_original(ours, ref, term):
    """Every trainable tensor: the vector of per-output-channel gradient norms, relative error per group tolerance."""
    _, grads, _ = ours
    keys = ref["norm_keys"].tolist()
    chn = ref[f"chnorms/{term}"]
    sizes = ref["norm_channels"]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    bad = []
    for i, key in enumerate(keys):
        r = chn[offsets[i] : offsets[i + 1]]
        if not np.any(r):
            continue
        g = grads[term][key].astype(np.float64)
        o = np.sqrt((g.reshape(g.shape[0], -1) ** 2).sum(1))
        e = _rel(o, r)
        if e > _full_tol(key):
            bad.append((key, e))
    assert not bad, bad


@pytest.mark.parametrize("term", TERMS)
def test_full_gradients_match_original(ours, ref, term):
    """Stored full reference tensors (head, semantic conv, protonet, FPN biases, backbone stem and first block)."""
    _, grads, _ = ours
    stored = [k.split("/", 1)[1] for k in ref if k.startswith(term + "/")]
    assert len(stored) >= 5
    errors = {key: _rel(grads[term][key], ref[f"{term}/{key}"]) for key in stored}
    bad = {k: e for k, e in errors.items() if e > _full_tol(k)}
    assert not bad, bad


def test_total_is_sum_of_terms(ours):
    """Our total gradient equals the sum of the per-term gradients (no term dropped by the tape)."""
    _, grads, _ = ours
    for key, g in grads["total"].items():
        s = sum(grads[t][key] for t in "BCMS" if key in grads[t])
        assert _rel(s, g) <= 1e-5, key
