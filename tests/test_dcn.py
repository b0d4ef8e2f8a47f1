"""yolact/dcn.py: DCNv2 (modulated deformable conv) against the original's semantics.

References: the YOLACT++ fixture's standalone DCN case (shared/fixtures/reference_plus_r50/outputs.npz ``dcnunit_*``,
produced by the original external/DCNv2/dcn_v2.py on a plain-torch im2col), the fixture generator's float64 numpy
loop and (marker ``torch``) torch autograd through the generator's plain-torch forward (tests/dcn_reference.py).
"""

import numpy as np
import pytest
import tensorflow as tf
import keras

from tests.conftest import SHARED, _require
from tests.dcn_reference import dcn_numpy_loop
from yolact.dcn import DeformableConv2D, deformable_conv2d

PLUS_FIXTURE = SHARED / "fixtures" / "reference_plus_r50"


@pytest.fixture(scope="module")
def unit():
    out = np.load(_require(PLUS_FIXTURE / "outputs.npz"))
    return {k: out[k] for k in out.files if k.startswith("dcnunit_")}


def _hwio(oihw):
    return np.transpose(oihw, (2, 3, 1, 0))


def _nhwc(nchw):
    return np.ascontiguousarray(np.transpose(nchw, (0, 2, 3, 1)))


def _nchw(nhwc):
    return np.ascontiguousarray(np.transpose(nhwc, (0, 3, 1, 2)))


def _fixture_layer(unit, **kwargs):
    """The fixture's module case: DCN(8, 6, 3, stride=2, padding=1) with the stored weights."""
    layer = DeformableConv2D(6, 3, strides=2, padding=1, **kwargs)
    layer.build((1, 13, 17, 8))
    src = {
        "p.weight": unit["dcnunit_weight"],
        "p.bias": unit["dcnunit_bias"],
        "p.conv_offset_mask.weight": unit["dcnunit_offset_conv_weight"],
        "p.conv_offset_mask.bias": unit["dcnunit_offset_conv_bias"],
    }
    targets = layer.torch_weight_targets("p")
    assert sorted(targets) == sorted(src)
    for key, (var, layout) in targets.items():
        var.assign(_hwio(src[key]) if layout == "conv" else src[key])
    return layer


# --------------------------------------------------------------------------------------------- fixture parity


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_op_matches_fixture_unit_case(unit, jit):
    fn = tf.function(
        lambda x, o, m, k, b: deformable_conv2d(x, o, m, k, b, strides=2, padding=1, dilation_rate=1),
        jit_compile=jit,
    )
    y = fn(unit["dcnunit_input"], unit["dcnunit_offset"], unit["dcnunit_mask"], _hwio(unit["dcnunit_weight"]),
           unit["dcnunit_bias"]).numpy()
    assert y.shape == (1, 7, 9, 6)
    err = np.abs(y - unit["dcnunit_output"]).max()
    assert err <= 1e-5, err
    eager = deformable_conv2d(unit["dcnunit_input"], unit["dcnunit_offset"], unit["dcnunit_mask"],
                              _hwio(unit["dcnunit_weight"]), unit["dcnunit_bias"], strides=2, padding=1)
    assert np.abs(eager.numpy() - unit["dcnunit_output"]).max() <= 1e-5


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_layer_matches_fixture_module_case(unit, jit):
    layer = _fixture_layer(unit)
    x = tf.constant(unit["dcnunit_input"])
    raw = layer.conv_offset_mask(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]))
    assert np.abs(raw.numpy() - unit["dcnunit_module_offset_mask_raw"]).max() <= 1e-5
    y = tf.function(layer, jit_compile=jit)(x).numpy()
    err = np.abs(y - unit["dcnunit_module_output"]).max()
    assert err <= 1e-5, err


def test_fixture_layout_errors_are_detected(unit):
    """The fixture discriminates the usual port mistakes: swapped dy/dx and [dy..., dx...] layouts are far off."""
    args = (unit["dcnunit_input"],)
    k, b = _hwio(unit["dcnunit_weight"]), unit["dcnunit_bias"]
    off = unit["dcnunit_offset"].reshape(1, 7, 9, 9, 2)
    swapped = off[..., ::-1].reshape(1, 7, 9, 18)
    planar = np.concatenate([off[..., 0], off[..., 1]], -1)
    for bad in (swapped, planar):
        y = deformable_conv2d(*args, bad, unit["dcnunit_mask"], k, b, strides=2, padding=1).numpy()
        assert np.abs(y - unit["dcnunit_output"]).max() > 0.05


# ---------------------------------------------------------------------------------- general configurations


@pytest.mark.parametrize(
    "cfg",
    [
        dict(c=4, h=7, w=9, f=3, k=3, s=1, p=1, d=1, g=1),
        dict(c=4, h=8, w=7, f=3, k=3, s=2, p=1, d=1, g=2),
        dict(c=6, h=9, w=8, f=5, k=3, s=1, p=2, d=2, g=3),
        dict(c=4, h=6, w=7, f=2, k=2, s=2, p=0, d=1, g=1),
    ],
    ids=["s1", "s2-g2", "dil2-g3", "k2-p0"],
)
def test_op_matches_numpy_loop(cfg):
    """Strides, padding, dilation, kernel size and deformable groups vs the generator's float64 numpy loop."""
    rng = np.random.default_rng(7)
    c, h, w, f, k, s, p, d, g = (cfg[n] for n in "chwfkspdg")
    ho = (h + 2 * p - (d * (k - 1) + 1)) // s + 1
    wo = (w + 2 * p - (d * (k - 1) + 1)) // s + 1
    x = rng.standard_normal((2, c, h, w))
    off = rng.normal(0, 1.8, (2, g * 2 * k * k, ho, wo))
    msk = rng.uniform(0, 1, (2, g * k * k, ho, wo))
    wt = rng.standard_normal((f, c, k, k)) / np.sqrt(c * k * k)
    bs = rng.normal(0, 0.1, f)
    ref = dcn_numpy_loop(x, off, msk, wt, bs, s, p, d, dg=g)
    y = deformable_conv2d(_nhwc(x), _nhwc(off), _nhwc(msk), _hwio(wt), bs, strides=s, padding=p,
                          dilation_rate=d, deformable_groups=g)
    assert y.dtype == tf.float64
    np.testing.assert_allclose(_nchw(y.numpy()), ref, rtol=0, atol=1e-12)
    y32 = tf.function(deformable_conv2d, jit_compile=True)(
        _nhwc(x).astype(np.float32), _nhwc(off).astype(np.float32), _nhwc(msk).astype(np.float32),
        _hwio(wt).astype(np.float32), bs.astype(np.float32), strides=s, padding=p, dilation_rate=d,
        deformable_groups=g)
    np.testing.assert_allclose(_nchw(y32.numpy()), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("s,p,d,k", [(1, 1, 1, 3), (2, 1, 1, 3), (1, 2, 2, 3), (2, 0, 1, 1), (1, 0, 1, (3, 2))])
def test_zero_init_layer_is_half_a_plain_conv(s, p, d, k):
    """Freshly built (offset conv zero as the original's init_offset): offsets 0, masks sigmoid(0) = 0.5."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 9, 10, 5)).astype(np.float32)
    layer = DeformableConv2D(4, k, strides=s, padding=p, dilation_rate=d)
    y = layer(x).numpy()
    kh, kw = (k, k) if isinstance(k, int) else k
    xp = np.pad(x, [(0, 0), (p, p), (p, p), (0, 0)])
    conv = tf.nn.conv2d(xp, layer.kernel, strides=s, padding="VALID", dilations=d).numpy()
    assert layer.kernel.shape == (kh, kw, 5, 4)
    assert y.shape == conv.shape == tuple(layer.compute_output_shape((2, 9, 10, 5)))
    np.testing.assert_allclose(y, 0.5 * conv + layer.bias.numpy(), rtol=0, atol=1e-5)
    # original DCNv2.reset_parameters: weight ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert np.abs(layer.kernel.numpy()).max() <= 1 / np.sqrt(5 * kh * kw)


# ------------------------------------------------------------------------------------------ gradient check


def _random_layer(c, f, dg, stride, rng, dtype="float64", h=6, w=7):
    layer = DeformableConv2D(f, 3, strides=stride, padding=1, deformable_groups=dg, dtype=dtype)
    layer.build((1, h, w, c))
    nk = 9 * dg
    ocw = rng.standard_normal((3, 3, c, 3 * nk)) * 0.4
    ocb = np.concatenate([rng.normal(0, 1.6, 2 * nk), rng.normal(0.5, 1.0, nk)])
    layer.conv_offset_mask.kernel.assign(ocw)
    layer.conv_offset_mask.bias.assign(ocb)
    layer.kernel.assign(rng.standard_normal(layer.kernel.shape) / np.sqrt(9 * c))
    layer.bias.assign(rng.normal(0, 0.1, f))
    return layer


def _sample_stats(offset, h, w, stride):
    """(fully outside, partially outside, inside, min distance of a position to an integer / the border)."""
    _, ho, wo, ch = offset.shape
    off = offset.reshape(offset.shape[0], ho, wo, ch // 18, 9, 2)
    i, j = np.divmod(np.arange(9), 3)
    ph = (np.arange(ho) * stride - 1)[None, :, None, None, None] + i + off[..., 0]
    pw = (np.arange(wo) * stride - 1)[None, None, :, None, None] + j + off[..., 1]
    inside = (ph > -1) & (pw > -1) & (ph < h) & (pw < w)
    full = (ph >= 0) & (pw >= 0) & (ph <= h - 1) & (pw <= w - 1)
    kink = min(np.abs(ph - np.round(ph)).min(), np.abs(pw - np.round(pw)).min())
    return int((~inside).sum()), int((inside & ~full).sum()), int(full.sum()), kink


@pytest.mark.parametrize(
    "dg,stride,jit", [(1, 1, False), (2, 2, False), (2, 2, True)], ids=["g1-s1", "g2-s2", "g2-s2-xla"]
)
def test_gradients_match_central_differences(dg, stride, jit):
    """float64: tape gradients w.r.t. input, conv_offset_mask kernel/bias, kernel and bias vs central differences."""
    rng = np.random.default_rng(11 + dg)
    c, f, h, w = 4, 3, 6, 7
    layer = _random_layer(c, f, dg, stride, rng, h=h, w=w)
    x = tf.Variable(rng.standard_normal((1, h, w, c)))
    probe = tf.constant(rng.standard_normal(layer.compute_output_shape((1, h, w, c))))
    raw = layer.conv_offset_mask(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])).numpy()
    outside, partial, inside, kink = _sample_stats(raw[..., : 18 * dg], h, w, stride)
    assert outside > 5 and partial > 5 and inside > 5, (outside, partial, inside)  # straddles the border
    assert kink > 1e-4, kink  # no position within eps of a bilinear kink: central differences are valid

    loss = tf.function(lambda: tf.reduce_sum(layer(x) * probe), jit_compile=jit)
    variables = [x, layer.conv_offset_mask.kernel, layer.conv_offset_mask.bias, layer.kernel, layer.bias]
    with tf.GradientTape() as tape:
        value = loss()
    grads = tape.gradient(value, variables)
    eps = 1e-6
    for var, grad in zip(variables, grads):
        grad = tf.convert_to_tensor(grad).numpy().ravel()
        base = var.numpy()
        flat = base.ravel()
        idx = np.arange(flat.size) if flat.size <= 200 else rng.choice(flat.size, 200, replace=False)
        num = np.empty(idx.size)
        for n, i in enumerate(idx):
            values = []
            for sign in (1, -1):
                pert = flat.copy()
                pert[i] += sign * eps
                var.assign(pert.reshape(base.shape))
                values.append(loss().numpy())
            num[n] = (values[0] - values[1]) / (2 * eps)
        var.assign(base)
        err = np.abs(num - grad[idx]).max()
        scale = np.abs(grad[idx]).max()
        assert scale > 1e-3, var.name  # a real, non-zero gradient
        assert err <= 1e-6 * max(1.0, scale), (var.name, err, scale)


def test_offset_gradient_is_zero_outside_and_flows_inside():
    """Samples outside -1 < h < H get no gradient (they are 0); inside samples do."""
    x = tf.constant(np.random.default_rng(3).standard_normal((1, 4, 4, 2)))
    kernel = tf.ones((1, 1, 2, 1), tf.float64)
    # 1x1 kernel, stride 2: output (0, 0) samples (0, 0) + (-3.5, 0.3) (outside), output (0, 1) samples
    # (0, 2) + (0.25, 0.4) (inside).
    off = tf.Variable(np.array([-3.5, 0.3, 0.25, 0.4]).reshape(1, 1, 2, 2))
    mask = tf.ones((1, 1, 2, 1), tf.float64)
    with tf.GradientTape() as tape:
        y = deformable_conv2d(x, off, mask, kernel, strides=2, padding=0)
        total = tf.reduce_sum(y)
    g = tape.gradient(total, off).numpy().reshape(2, 2)
    assert y.numpy()[0, 0, 0, 0] == 0.0 and y.numpy()[0, 0, 1, 0] != 0.0
    assert np.all(g[0] == 0.0) and np.all(g[1] != 0.0)


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_huge_and_non_finite_offsets_sample_zero(unit, jit):
    """Positions that are huge, inf or NaN fail -1 < h < H like in the original kernel: they contribute 0 (no
    out-of-range gather index), i.e. the same output as masking those samples out."""
    off = unit["dcnunit_offset"].copy()
    msk = unit["dcnunit_mask"].copy()
    bad = [(0, 0, 0), (2, 3, 4), (4, 5, 10), (6, 8, 17)]
    for (y, x, ch), value in zip(bad, (np.nan, np.inf, -3e9, 1e30)):
        off[0, y, x, ch] = value
        msk[0, y, x, ch // 2] = 0.0
    args = (_hwio(unit["dcnunit_weight"]), unit["dcnunit_bias"])
    fn = tf.function(lambda o, m: deformable_conv2d(unit["dcnunit_input"], o, m, *args, strides=2, padding=1),
                     jit_compile=jit)
    masked = off.copy()
    masked[~np.isfinite(masked) | (np.abs(masked) > 1e6)] = 0.0
    y = fn(off, unit["dcnunit_mask"]).numpy()
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, fn(masked, msk).numpy(), rtol=0, atol=1e-6)


# ------------------------------------------------------------------------- torch autograd (marker: torch)


@pytest.mark.torch
@pytest.mark.parametrize(
    "cfg", [dict(s=1, p=1, d=1, g=1), dict(s=2, p=1, d=1, g=1), dict(s=1, p=2, d=2, g=2)], ids=["s1", "s2", "d2g2"]
)
def test_matches_torch_autograd_of_reference_forward(cfg):
    """Outputs and gradients (input, offset, mask, weight, bias) vs torch autograd through the generator's
    plain-torch dcn_v2_forward (tests/dcn_reference.py), float32."""
    import torch

    from tests.dcn_reference import dcn_v2_forward

    s, p, d, g = cfg["s"], cfg["p"], cfg["d"], cfg["g"]
    rng = np.random.default_rng(5)
    b, c, h, w, f = 2, 6, 11, 13, 5
    ho = (h + 2 * p - (d * 2 + 1)) // s + 1
    wo = (w + 2 * p - (d * 2 + 1)) // s + 1
    arrays = dict(
        x=rng.standard_normal((b, c, h, w)),
        off=rng.normal(0, 2.0, (b, g * 18, ho, wo)),
        mask=rng.uniform(0, 1, (b, g * 9, ho, wo)),
        weight=rng.standard_normal((f, c, 3, 3)) / np.sqrt(9 * c),
        bias=rng.normal(0, 0.1, f),
    )
    arrays = {k: v.astype(np.float32) for k, v in arrays.items()}
    probe = rng.standard_normal((b, f, ho, wo)).astype(np.float32)

    tt = {k: torch.tensor(v, requires_grad=True) for k, v in arrays.items()}
    y_t = dcn_v2_forward(tt["x"], tt["weight"], tt["bias"], tt["off"], tt["mask"], 3, 3, s, s, p, p, d, d, g)
    (y_t * torch.from_numpy(probe)).sum().backward()

    tv = [tf.Variable(_nhwc(arrays[k]) if k in ("x", "off", "mask") else arrays[k]) for k in
          ("x", "off", "mask", "weight", "bias")]

    def fwd():
        return deformable_conv2d(tv[0], tv[1], tv[2], tf.transpose(tv[3], (2, 3, 1, 0)), tv[4], strides=s, padding=p,
                                 dilation_rate=d, deformable_groups=g)

    for jit in (False, True):  # both gather layouts (graph: four corner gathers, XLA: one quad gather)
        with tf.GradientTape() as tape:
            y = tf.function(fwd, jit_compile=jit)()
            loss = tf.reduce_sum(y * _nhwc(probe))
        grads = tape.gradient(loss, tv)
        np.testing.assert_allclose(_nchw(y.numpy()), y_t.detach().numpy(), rtol=0, atol=1e-5)
        for name, grad in zip(("x", "off", "mask", "weight", "bias"), grads):
            ref = tt[name].grad.numpy()
            got = tf.convert_to_tensor(grad).numpy()
            got = _nchw(got) if name in ("x", "off", "mask") else got
            assert np.abs(ref).max() > 1e-2, name
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * max(1.0, np.abs(ref).max()),
                                       err_msg=f"{name} jit={jit}")


# ------------------------------------------------------------------- precision, serialisation, distribution


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_close_to_float32(unit, policy):
    ref = _fixture_layer(unit)
    low = _fixture_layer(unit, dtype=policy)
    assert low.kernel.dtype == "float32"
    x = unit["dcnunit_input"]
    y32 = ref(x).numpy()
    y = tf.function(low, jit_compile=True)(tf.cast(x, low.compute_dtype))
    assert y.dtype == low.compute_dtype
    y = tf.cast(y, tf.float32).numpy()
    assert np.all(np.isfinite(y))
    err = np.abs(y - y32).max()
    tol = 0.04 if policy == "mixed_bfloat16" else 0.01  # measured: 1.3% and 0.27% of max|y|
    assert err <= tol * np.abs(y32).max(), (err, np.abs(y32).max())
    assert np.corrcoef(y.ravel(), y32.ravel())[0, 1] > (0.999 if policy == "mixed_bfloat16" else 0.9999)


def _tiny_model(unit):
    inp = keras.Input((13, 17, 8))
    layer = _fixture_layer(unit, name="dcn")
    out = keras.layers.ReLU()(layer(inp))
    return keras.Model(inp, out)


def test_int8_tflite_samples_at_float_positions(unit):
    """An int8 TFLite export computes the sampling positions in float32 (yolact/dcn.py SAMPLING_POSITIONS_SCOPE,
    kept float by yolact/deploy/tflite.py): quantized to int8, a position spanning a 69-pixel map moves in steps of
    ~0.28 px. The fixture's module weights on a 69 x 69 x 8 input (C3's size in YOLACT++ at 550), 8 calibration
    inputs with the fixture input's mean / std: relative L2 error of the int8 output to the float one 0.070
    (measured; 0.265 with int8 positions), bound 0.12. FLOOR takes float positions, not dequantized int8 ones."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    from yolact.deploy.tflite import convert

    layer = _fixture_layer(unit)
    inp = keras.Input((69, 69, 8), batch_size=1)
    model = keras.Model(inp, layer(inp))
    x0 = unit["dcnunit_input"]
    rng = np.random.default_rng(0)
    xs = [(rng.standard_normal((1, 69, 69, 8)) * x0.std() + x0.mean()).astype(np.float32) for _ in range(8)]
    concrete = tf.function(model).get_concrete_function(tf.TensorSpec((1, 69, 69, 8), tf.float32))
    flat = convert(concrete, "int8", lambda: iter(xs))

    interpreter = Interpreter(model_content=flat)
    interpreter.allocate_tensors()
    errors = []
    for x in xs[:4]:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        ref = model(x).numpy()
        errors.append(np.linalg.norm(y - ref) / np.linalg.norm(ref))
    assert max(errors) <= 0.12, errors

    parsed = schema.ModelT.InitFromPackedBuf(bytearray(flat), 0)
    graph = parsed.subgraphs[0]
    code = {v: k for k, v in schema.BuiltinOperator.__dict__.items() if not k.startswith("_")}
    producer = {t: code[parsed.operatorCodes[op.opcodeIndex].builtinCode] for op in graph.operators for t in op.outputs}
    floors = [op for op in graph.operators if code[parsed.operatorCodes[op.opcodeIndex].builtinCode] == "FLOOR"]
    assert len(floors) == 2  # h and w
    for op in floors:
        assert graph.tensors[op.inputs[0]].type == schema.TensorType.FLOAT32
        assert producer[op.inputs[0]] != "DEQUANTIZE"  # computed in float, not int8 positions dequantized


def test_saved_model_round_trip(unit, tmp_path):
    model = _tiny_model(unit)
    x = tf.constant(unit["dcnunit_input"])
    expected = model(x).numpy()
    np.testing.assert_allclose(expected, np.maximum(unit["dcnunit_module_output"], 0), atol=1e-5)
    module = tf.Module()
    module.model = model
    module.serve = tf.function(lambda t: model(t), input_signature=[tf.TensorSpec([None, 13, 17, 8], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.serve})
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    np.testing.assert_array_equal(loaded.serve(x).numpy(), expected)
    out = loaded.signatures["serving_default"](t=x)
    np.testing.assert_array_equal(next(iter(out.values())).numpy(), expected)
    # the keras.Model itself (Keras 3 supplies the default serving signature)
    tf.saved_model.save(model, str(tmp_path / "sm_model"))
    direct = tf.saved_model.load(str(tmp_path / "sm_model")).signatures["serving_default"]
    np.testing.assert_array_equal(next(iter(direct(x).values())).numpy(), expected)


def test_keras_config_and_file_round_trip(unit, tmp_path):
    layer = DeformableConv2D(4, (3, 2), strides=(2, 1), padding=(1, 0), dilation_rate=1, deformable_groups=2,
                             use_bias=False, name="d")
    clone = DeformableConv2D.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone.build((1, 9, 8, 6))
    assert [v.name for v in clone.weights] == ["kernel", "kernel", "bias"]  # no DCN bias; conv_offset_mask has one
    assert clone.conv_offset_mask.kernel.shape == (3, 2, 6, 36) and clone.kernel.shape == (3, 2, 6, 4)
    assert clone(np.zeros((1, 9, 8, 6), np.float32)).shape == (1, 5, 7, 4)
    model = _tiny_model(unit)
    path = tmp_path / "m.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    x = unit["dcnunit_input"]
    np.testing.assert_array_equal(reloaded(x).numpy(), model(x).numpy())


def test_train_step_under_distribution_strategy(unit):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        layer = _fixture_layer(unit)
        opt = keras.optimizers.SGD(0.01)
    x = tf.constant(np.repeat(unit["dcnunit_input"], 2, axis=0))
    before = [v.numpy().copy() for v in layer.trainable_variables]

    @tf.function(jit_compile=False)
    def step(inputs):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(layer(inputs)))
        grads = tape.gradient(loss, layer.trainable_variables)
        opt.apply_gradients(zip(grads, layer.trainable_variables))
        return loss

    loss = strategy.run(step, args=(x,))
    loss = strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None)
    assert np.isfinite(loss.numpy())
    assert len(layer.trainable_variables) == 4
    for old, var in zip(before, layer.trainable_variables):
        assert np.abs(var.numpy() - old).max() > 0, var.name
