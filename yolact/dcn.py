"""Modulated deformable convolution (DCNv2) in pure TensorFlow ops, as used by YOLACT++'s ResNet backbone.

original: external/DCNv2/dcn_v2.py (``DCN``, ``DCNv2``, ``_DCNv2``) and
external/DCNv2/src/cuda/dcn_v2_im2col_cuda.cu (``modulated_deformable_im2col_gpu_kernel``,
``dmcn_im2col_bilinear``); used by backbone.py ``Bottleneck`` (``conv2`` of the DCN blocks).

Semantics, for output pixel (y, x), input channel c of deformable group g, tap k = i * kw + j
(i = kernel row, j = kernel column):

    h = y * stride_h - pad_h + i * dilation_h + offset[..., g*2*K + 2k]      (dy, input pixels)
    w = x * stride_w - pad_w + j * dilation_w + offset[..., g*2*K + 2k + 1]  (dx, input pixels)
    v = 0                                  unless -1 < h < H and -1 < w < W
    v = bilinear(input[..., c], h, w)      otherwise; every corner outside [0, H-1] x [0, W-1] counts as 0
                                           (zero padding, NOT clamped to the border)
    col[k, c] = v * mask[..., g*K + k]
    out[o] = bias[o] + sum_{k, c} kernel[i, j, c, o] * col[k, c]

Implementation (CPU-friendly, pure TF ops, no custom kernels): the sampling positions and the four bilinear corner
weights of all (output pixel, group, tap) samples are computed at once in float32 and multiplied by the modulation
mask. Positions are clamped to [-1, H] x [-1, W] and the input is zero-padded by one pixel before and two after, so
every corner is a valid row: a sample outside -1 < h < H or -1 < w < W reads only padding (or corners of weight 0)
and contributes exactly 0, as in the original (no inside flag, no per-corner validity masks, no clamping to the
border). The corners are fetched by row gathers from the flattened padded input - four [R, C] gathers summed by
a chain of adds in graph/eager mode (int8 end to end in a quantized TFLite model), or ONE gather of 2x2-neighbourhood
rows [R, 4, C] from a "quad" tensor summed by a batched [1, 4] x [4, C] matmul under XLA (each the faster layout in
its mode on CPU; identical up to float rounding) - and the columns [B*Ho*Wo, K*C] meet the kernel reshaped to
[K*C, filters] in one matmul. R = B*Ho*Wo*G*K.
In an int8 TFLite export the sampling positions, fractions and corner weights stay float32 (the name scope
``SAMPLING_POSITIONS_SCOPE``, see yolact/deploy/tflite.py); the gathers, the corner sum and the matmul are int8.
On CPU (2 cores, float32, batch 1) the layer, offset conv included, costs about 1.2-3x a plain 3x3 Conv2D of the
same shape (more for few channels, where the gather dominates); see benchmarks/dcn_speed.py.
"""

from __future__ import annotations

import keras
import tensorflow as tf

# Name scope of the float32 sampling-position arithmetic inside :func:`deformable_conv2d`; an int8 TFLite export
# leaves the tensors under it unquantized (yolact/deploy/tflite.py).
SAMPLING_POSITIONS_SCOPE = "dcn_sampling_positions"


def _pair(value, name):
    """An int or a pair of ints -> a tuple of two Python ints.

    Raises:
      ValueError: not an int or a length-2 sequence of ints.
    """
    if isinstance(value, int):
        return (value, value)
    try:
        pair = tuple(int(v) for v in value)
    except TypeError as err:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from err
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair


def deformable_conv2d_output_size(size, kernel_size, stride, padding, dilation):
    """Output side of a (deformable) convolution: ``(size + 2*padding - (dilation*(kernel - 1) + 1)) // stride + 1``.

    Args:
      size: input side (pixels), int.
      kernel_size, stride, padding, dilation: ints along that axis.

    Returns:
      int, the output side (pixels); the same arithmetic as torch.nn.Conv2d and dcn_v2_cuda.cu.
    """
    return (size + 2 * padding - (dilation * (kernel_size - 1) + 1)) // stride + 1


def deformable_conv2d(
    inputs,
    offset,
    mask,
    kernel,
    bias=None,
    strides=(1, 1),
    padding=(1, 1),
    dilation_rate=(1, 1),
    deformable_groups=1,
):
    """Modulated deformable 2-D convolution (DCNv2 ``dcn_v2_conv``) with given offsets and masks, NHWC.

    original: external/DCNv2/src/cuda/dcn_v2_cuda.cu ``dcn_v2_cuda_forward`` + dcn_v2_im2col_cuda.cu
    ``modulated_deformable_im2col_gpu_kernel`` / ``dmcn_im2col_bilinear`` (see the module docstring for the exact
    formula). Differentiable with respect to every tensor argument (the gradient of the sampling position is the
    derivative of the bilinear interpolation inside a cell, 0 for samples outside ``-1 < h < H, -1 < w < W``).

    Args:
      inputs: float tensor [B, H, W, Cin] (float16/bfloat16/float32/float64; the computation runs in this dtype).
      offset: float tensor [B, Ho, Wo, G * 2 * kh * kw], input pixels; channel ``g*2*K + 2k`` = dy, ``+1`` = dx
        for tap ``k = i * kw + j`` (the original's NCHW channel order, moved last). Any float dtype; the sampling
        positions are computed in float32 (float64 if ``inputs`` is float64).
      mask: float tensor [B, Ho, Wo, G * kh * kw], the modulation (already after the sigmoid), channel ``g*K + k``.
      kernel: [kh, kw, Cin, filters] (HWIO; the original's OIHW ``weight`` transposed (2, 3, 1, 0)).
      bias: None or [filters].
      strides, padding, dilation_rate: pairs of ints (padding = symmetric zero padding in pixels, as torch).
      deformable_groups: G, number of channel groups sharing one set of offsets/masks; must divide Cin.

    Returns:
      Tensor [B, Ho, Wo, filters] in the dtype of ``inputs``, Ho/Wo as
      :func:`deformable_conv2d_output_size`.

    Raises:
      ValueError: statically known shapes that do not fit (channels of offset/mask, Cin % G, kernel Cin).
    """
    strides = _pair(strides, "strides")
    padding = _pair(padding, "padding")
    dilation_rate = _pair(dilation_rate, "dilation_rate")
    inputs = tf.convert_to_tensor(inputs)
    dtype = inputs.dtype
    coord_dtype = tf.float64 if dtype == tf.float64 else tf.float32
    kernel = tf.cast(kernel, dtype)
    kh, kw, cin, filters = kernel.shape
    num_taps = kh * kw
    groups = int(deformable_groups)
    static_c = inputs.shape[-1]
    if static_c is not None and static_c != cin:
        raise ValueError(f"kernel expects {cin} input channels, inputs have {static_c}")
    if cin % groups:
        raise ValueError(f"deformable_groups={groups} does not divide the {cin} input channels")
    if offset.shape[-1] is not None and offset.shape[-1] != 2 * groups * num_taps:
        raise ValueError(f"offset needs {2 * groups * num_taps} channels, got {offset.shape[-1]}")
    if mask.shape[-1] is not None and mask.shape[-1] != groups * num_taps:
        raise ValueError(f"mask needs {groups * num_taps} channels, got {mask.shape[-1]}")
    cpg = cin // groups

    in_shape = tf.shape(inputs)
    batch, height, width = in_shape[0], in_shape[1], in_shape[2]
    off_shape = tf.shape(offset)
    out_h, out_w = off_shape[1], off_shape[2]

    # The sampling positions, bilinear fractions and corner weights are computed in float32 under
    # SAMPLING_POSITIONS_SCOPE: an int8 TFLite export keeps that scope float (yolact/deploy/tflite.py), as
    # quantized positions would move every sample in steps of ~0.3 px (measured: 0.28 px at C3 on random offsets).
    with tf.name_scope(SAMPLING_POSITIONS_SCOPE):
        # [B, Ho, Wo, G*K] per axis, index g * K + k (offset channel g*2*K + 2k = dy, + 1 = dx). A NaN offset fails
        # the original kernel's inside test (every comparison is False): it is sent far outside here.
        off = tf.cast(offset, coord_dtype)
        off = tf.where(tf.equal(off, off), off, tf.constant(-1e30, coord_dtype))
        tap_i = tf.constant([i * dilation_rate[0] for _ in range(groups) for i in range(kh) for _ in range(kw)],
                            coord_dtype)
        tap_j = tf.constant([j * dilation_rate[1] for _ in range(groups) for _ in range(kh) for j in range(kw)],
                            coord_dtype)
        base_h = tf.cast(tf.range(out_h) * strides[0] - padding[0], coord_dtype)
        base_w = tf.cast(tf.range(out_w) * strides[1] - padding[1], coord_dtype)
        # Positions clamped to [-1, H] x [-1, W]: a sample outside -1 < h < H (or w) lands on the zero padding (its
        # corners are padding rows, or carry weight 0), so it contributes exactly 0 as in the original kernel, with
        # no inside flag; the clamp also makes the position's gradient 0 there, as the original's.
        pos_h = tf.clip_by_value(base_h[None, :, None, None] + tap_i + off[..., 0::2], -1.0,
                                 tf.cast(height, coord_dtype))
        pos_w = tf.clip_by_value(base_w[None, None, :, None] + tap_j + off[..., 1::2], -1.0,
                                 tf.cast(width, coord_dtype))
        h_low = tf.stop_gradient(tf.floor(pos_h))
        w_low = tf.stop_gradient(tf.floor(pos_w))
        lh = pos_h - h_low
        lw = pos_w - w_low
        modulation = tf.cast(tf.reshape(mask, [batch, out_h, out_w, groups * num_taps]), coord_dtype)
        upper = (1.0 - lh) * modulation
        lower = lh * modulation
        # Corner order: (h0, w0), (h0, w0+1), (h0+1, w0), (h0+1, w0+1).
        corner_w = [tf.cast(w, dtype) for w in (upper * (1.0 - lw), upper * lw, lower * (1.0 - lw), lower * lw)]
        # Top-left corner (h0, w0) in the input zero-padded by one pixel before and two after: (h0 + 1, w0 + 1) in
        # [0, H + 1] x [0, W + 1], so all four corners are valid rows (out-of-image ones read the zero padding).
        top = tf.cast(h_low, tf.int32) + 1
        left = tf.cast(w_low, tf.int32) + 1
    # Each [R, 1], R = B*Ho*Wo*G*K samples; reshaped outside the float scope, so that an int8 export quantizes the
    # weights (steps of 1/255, as the modulation mask) and multiplies them with the int8 corners in int8.
    corner_w = [tf.reshape(w, [-1, 1]) for w in corner_w]
    batch_idx = tf.range(batch)[:, None, None, None]
    group_idx = tf.repeat(tf.range(groups), num_taps)[None, None, None, :]
    padded = tf.pad(inputs, [[0, 0], [1, 2], [1, 2], [0, 0]])
    if _in_xla_context():
        cols = _sample_quad(padded, batch_idx, top, left, group_idx, corner_w, groups, cpg)
    else:
        cols = _sample_corners(padded, batch_idx, top, left, group_idx, corner_w, groups, cpg)
    if groups > 1:  # [B*Ho*Wo, G, K, C/G] -> [B*Ho*Wo, K, G, C/G]
        cols = tf.transpose(tf.reshape(cols, [-1, groups, num_taps, cpg]), [0, 2, 1, 3])
    cols = tf.reshape(cols, [-1, num_taps * cin])  # column index k * Cin + c
    out = tf.matmul(cols, tf.reshape(kernel, [num_taps * cin, filters]))
    if bias is not None:
        out = out + tf.cast(bias, dtype)
    return tf.reshape(out, [batch, out_h, out_w, filters])


def _in_xla_context():
    """True while tracing for XLA (``tf.function(jit_compile=True)``, Keras ``jit_compile=True``).

    Only selects between two numerically equivalent gather layouts (each is the faster one in its mode on CPU); a
    wrong answer costs speed, never correctness. Uses TF's internal ``control_flow_util`` (what TF's own ops use
    for the same purpose); False if that module is unavailable.
    """
    try:
        from tensorflow.python.ops import control_flow_util  # pylint: disable=g-import-not-at-top
    except ImportError:  # pragma: no cover - internal module moved
        return False
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def _sample_corners(padded, batch_idx, pad_h, pad_w, group_idx, corner_w, groups, cpg):
    """Graph mode: four row gathers [R, C/G] from the padded input, weighted and summed (a chain of adds).

    Args:
      padded: [B, H+3, W+3, C] input zero-padded by one pixel before and two after.
      batch_idx, group_idx: int32 index tensors broadcastable to [B, Ho, Wo, G*K].
      pad_h, pad_w: int32 [B, Ho, Wo, G*K], top-left corner in padded coordinates.
      corner_w: four [R, 1] corner weights (bilinear x mask) in the compute dtype, corner order (h0, w0),
        (h0, w0+1), (h0+1, w0), (h0+1, w0+1).

    Returns:
      [R, C/G] sampled, modulated values (R = B*Ho*Wo*G*K in that order).
    """
    shape = tf.shape(padded)
    hp, wp = shape[1], shape[2]
    rows = tf.reshape(((batch_idx * hp + pad_h) * wp + pad_w) * groups + group_idx, [-1])
    table = tf.reshape(padded, [-1, cpg])  # row = pixel * G + group
    steps = (0, groups, wp * groups, (wp + 1) * groups)  # (h0, w0), (h0, w0+1), (h0+1, w0), (h0+1, w0+1)
    # A chain of ADDs, not add_n: TFLite's int8 quantizer has no int8 ADD_N, so add_n dequantized the four gathered
    # int8 corners and summed them in float, outside XNNPACK (a 35x35x64 DCN layer: 14.6 -> 2.8 ms int8). In float
    # the sum is the same to rounding (tests/test_dcn.py).
    total = None
    for q, step in enumerate(steps):
        term = tf.gather(table, rows + step) * corner_w[q]
        total = term if total is None else total + term
    return total


def _sample_quad(padded, batch_idx, pad_h, pad_w, group_idx, corner_w, groups, cpg):
    """XLA: one gather of 2x2 neighbourhood rows [R, 4, C/G] from a "quad" tensor, corner sum as a batched matmul.

    Same arguments and result as :func:`_sample_corners`; the quad tensor is [B*(H+2)*(W+2)*G, 4, C/G].
    """
    shape = tf.shape(padded)
    hq, wq = shape[1] - 1, shape[2] - 1
    quad = tf.stack([padded[:, :-1, :-1], padded[:, :-1, 1:], padded[:, 1:, :-1], padded[:, 1:, 1:]], axis=3)
    if groups > 1:  # [B, H+2, W+2, 4, C] -> [B, H+2, W+2, G, 4, C/G]
        quad = tf.reshape(quad, [shape[0], hq, wq, 4, groups, cpg])
        quad = tf.transpose(quad, [0, 1, 2, 4, 3, 5])
    quad = tf.reshape(quad, [-1, 4, cpg])
    rows = tf.reshape(((batch_idx * hq + pad_h) * wq + pad_w) * groups + group_idx, [-1])
    # The corner sum as a batched [1, 4] x [4, C/G] matmul: XLA materialises the [R, 4] weights for it, whereas a
    # multiply + reduce_sum lets XLA fuse (and re-derive per channel) the weight computation when it is not trivial.
    weights = tf.concat(corner_w, axis=1)[:, None, :]  # [R, 1, 4]
    return tf.matmul(weights, tf.gather(quad, rows))[:, 0]


@keras.saving.register_keras_serializable(package="yolact")
class DeformableConv2D(keras.layers.Layer):
    """DCNv2 layer: an offset/mask conv followed by a modulated deformable conv (the original's ``DCN`` module).

    original: external/DCNv2/dcn_v2.py ``DCN`` (``conv_offset_mask`` -> ``torch.chunk(out, 3)`` -> offset =
    ``cat(o1, o2)``, mask = ``sigmoid(chunk 3)`` -> ``dcn_v2_conv``); kernel semantics of
    external/DCNv2/src/cuda/dcn_v2_im2col_cuda.cu (see the module docstring and :func:`deformable_conv2d`).

    Call: ``inputs`` float [B, H, W, Cin] NHWC in the layer's compute dtype -> [B, Ho, Wo, filters] with
    ``Ho = (H + 2 * pad_h - (dil_h * (kh - 1) + 1)) // stride_h + 1`` (same for Wo). Under a Keras mixed-precision
    policy (``mixed_float16`` / ``mixed_bfloat16``) the variables stay float32, the offset/mask conv, the bilinear
    gather and the matmul run in the compute dtype; the sampling positions and bilinear weights are computed in
    float32 (float64 for a float64 layer).

    Sublayer and variables:
      * ``conv_offset_mask``: ``keras.layers.Conv2D`` (3 * G * kh * kw outputs, kernel [kh, kw, Cin, 3*G*K],
        bias, same stride/padding/dilation as the main conv; zero padding applied explicitly so stride 2 matches
        torch), initialised to zero like the original's ``init_offset`` (offset 0, mask sigmoid(0) = 0.5).
        Its output channels: [0, 2*G*K) offsets (interleaved per tap, dy first: channel ``g*2*K + 2k`` = dy,
        ``g*2*K + 2k + 1`` = dx, k = i * kw + j), [2*G*K, 3*G*K) mask logits (channel ``2*G*K + g*K + k``). This
        is exactly the original's ``o1, o2, mask = chunk(out, 3); offset = cat(o1, o2)``: the first two chunks are
        re-joined unchanged.
      * ``kernel`` [kh, kw, Cin, filters] (HWIO) and ``bias`` [filters] (if ``use_bias``).

    Weight mapping from an original state_dict with key prefix ``P`` (e.g. ``backbone.layers.1.0.conv2``),
    torch layouts (see :meth:`torch_weight_targets`):
      * ``P.weight`` [filters, Cin, kh, kw] -> ``kernel`` = transpose (2, 3, 1, 0)
      * ``P.bias`` [filters] -> ``bias``
      * ``P.conv_offset_mask.weight`` [3*G*K, Cin, kh, kw] -> ``conv_offset_mask.kernel`` = transpose (2, 3, 1, 0)
      * ``P.conv_offset_mask.bias`` [3*G*K] -> ``conv_offset_mask.bias``

    Note: the original passes no ``dilation`` to ``conv_offset_mask``; it is only consistent for dilation 1 (the
    only value YOLACT++ uses: otherwise the offset map and the output differ in size). This layer gives the offset
    conv the main conv's dilation, which is identical for dilation 1 and keeps the shapes consistent otherwise.

    Args:
      filters: output channels.
      kernel_size, strides, padding, dilation_rate: int or pair of ints; ``padding`` is the symmetric zero
        padding in pixels (torch ``padding``), not a Keras padding string.
      use_bias: add ``bias`` (the original DCN always has one).
      deformable_groups: G, groups of input channels sharing offsets/masks; must divide Cin.
      kernel_initializer: for ``kernel``; default uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) as the original's
        ``DCNv2.reset_parameters`` (``bias`` starts at 0).
      name: layer name.
      **kwargs: other ``keras.layers.Layer`` arguments (``dtype`` policy, ``trainable``, ...).

    Raises:
      ValueError: bad int/pair arguments, ``deformable_groups`` < 1 (at construction); Cin not divisible by
        ``deformable_groups`` or an input that is not rank 4 (at build).
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        strides=1,
        padding=1,
        dilation_rate=1,
        use_bias=True,
        deformable_groups=1,
        kernel_initializer=None,
        name=None,
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.padding = _pair(padding, "padding")
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        self.use_bias = bool(use_bias)
        self.deformable_groups = int(deformable_groups)
        if self.deformable_groups < 1:
            raise ValueError(f"deformable_groups must be >= 1, got {deformable_groups}")
        if kernel_initializer is None:
            kernel_initializer = keras.initializers.VarianceScaling(
                scale=1.0 / 3.0, mode="fan_in", distribution="uniform"
            )
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        num_taps = self.kernel_size[0] * self.kernel_size[1]
        self.conv_offset_mask = keras.layers.Conv2D(
            3 * self.deformable_groups * num_taps,
            self.kernel_size,
            strides=self.strides,
            padding="valid",
            dilation_rate=self.dilation_rate,
            use_bias=True,
            kernel_initializer="zeros",
            bias_initializer="zeros",
            dtype=self.dtype_policy,
            name="conv_offset_mask",
        )

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"DeformableConv2D expects NHWC input [B, H, W, C], got shape {input_shape}")
        cin = int(input_shape[-1])
        if cin % self.deformable_groups:
            raise ValueError(f"deformable_groups={self.deformable_groups} does not divide the {cin} input channels")
        ph, pw = self.padding
        padded = list(input_shape)
        padded[1] = None if input_shape[1] is None else input_shape[1] + 2 * ph
        padded[2] = None if input_shape[2] is None else input_shape[2] + 2 * pw
        self.conv_offset_mask.build(tuple(padded))
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, cin, self.filters),
            initializer=self.kernel_initializer,
        )
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") if self.use_bias else None

    def call(self, inputs):
        ph, pw = self.padding
        padded = tf.pad(inputs, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
        raw = self.conv_offset_mask(padded)  # [B, Ho, Wo, 3*G*K]
        num_offset = 2 * self.deformable_groups * self.kernel_size[0] * self.kernel_size[1]
        offset = raw[..., :num_offset]
        mask = tf.sigmoid(raw[..., num_offset:])
        return deformable_conv2d(
            inputs,
            offset,
            mask,
            tf.cast(self.kernel, self.compute_dtype),
            None if self.bias is None else tf.cast(self.bias, self.compute_dtype),
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            deformable_groups=self.deformable_groups,
        )

    def compute_output_shape(self, input_shape):
        size = [
            None if s is None else deformable_conv2d_output_size(s, k, st, p, d)
            for s, k, st, p, d in zip(
                input_shape[1:3], self.kernel_size, self.strides, self.padding, self.dilation_rate
            )
        ]
        return (input_shape[0], *size, self.filters)

    def torch_weight_targets(self, prefix):
        """{original state_dict key: (keras variable, layout)} for this layer (layer must be built).

        ``layout`` is ``"conv"`` (torch OIHW -> Keras HWIO: ``np.transpose(w, (2, 3, 1, 0))``) or ``"vector"``
        (copied as is) - the same convention as utils/convert_weights.py ``_keras_targets``.

        Args:
          prefix: the module's key in the original state_dict, e.g. ``"backbone.layers.1.0.conv2"``.
        """
        targets = {
            f"{prefix}.weight": (self.kernel, "conv"),
            f"{prefix}.conv_offset_mask.weight": (self.conv_offset_mask.kernel, "conv"),
            f"{prefix}.conv_offset_mask.bias": (self.conv_offset_mask.bias, "vector"),
        }
        if self.use_bias:
            targets[f"{prefix}.bias"] = (self.bias, "vector")
        return targets

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            use_bias=self.use_bias,
            deformable_groups=self.deformable_groups,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
