"""Darknet-53 backbone (YOLOv3's) in the original YOLACT layout.

original: backbone.py ``darknetconvlayer``, ``DarkNetBlock``, ``DarkNetBackbone`` (layers [1, 2, 8, 8, 4]) and
data/config.py ``darknet53_backbone`` / ``yolact_darknet53_config`` (``selected_layers`` [2, 3, 4]).

* Every conv unit is ``Conv2d(bias=False)`` -> ``BatchNorm2d`` (eps 1e-5, PyTorch momentum 0.1 = Keras 0.9) ->
  ``LeakyReLU(0.1)`` (the Darknet slope).
* Stem (``_preconv``): 3x3/1 pad 1, 32 channels.
* Five stages (``layers.0`` .. ``layers.4``): a 3x3 **stride-2, symmetric pad 1** downsample conv to ``2c``
  channels (c = 32, 64, 128, 256, 512), then n residual ``DarkNetBlock`` s (n = 1, 2, 8, 8, 4):
  1x1 conv to c -> 3x3/1 pad 1 conv to 2c, plus the block input (no activation after the sum).
* Outputs C3, C4, C5 = stages 2, 3, 4: 256, 512, 1024 channels at strides 8, 16, 32; side
  ``floor((S - 1) / 2) + 1`` per stage (550 -> 275 -> 138 -> 69 -> 35 -> 18, as ResNet).
* Expected input (original ``darknet_transform``): RGB ``x / 255`` (no mean subtraction, no std division).
"""

from __future__ import annotations

import keras

from yolact.backbones.layers import batch_norm, padded_conv, symmetric_pads

DARKNET_BLOCKS = {"darknet53": (1, 2, 8, 8, 4)}
STAGE_CHANNELS = (32, 64, 128, 256, 512)  # c of each stage; the stage outputs 2c (DarkNetBlock.expansion = 2)
SELECTED_STAGES = (2, 3, 4)  # original yolact_darknet53_config backbone.selected_layers
BN_EPS = 1e-5
BN_TORCH_MOMENTUM = 0.1
LEAKY_SLOPE = 0.1


class DarkNetConv(keras.layers.Layer):
    """original ``darknetconvlayer``: conv (no bias) -> BatchNorm -> LeakyReLU(0.1).

    A stride-2 conv pads 1 pixel on every side (PyTorch ``padding=1``), a stride-1 conv is 'same'.
    Input float [B, H, W, C_in] -> [B, H', W', filters], H' = floor((H - 1) / stride) + 1.
    """

    def __init__(self, filters, kernel_size, strides=1, **kwargs):
        super().__init__(**kwargs)
        pads = symmetric_pads(kernel_size) if strides != 1 else None
        self.pad, self.conv = padded_conv(filters, kernel_size, strides=strides, pads=pads, name="conv")
        self.bn = batch_norm(BN_EPS, BN_TORCH_MOMENTUM, name="bn")

    def call(self, x, training=None):
        if self.pad is not None:
            x = self.pad(x)
        return keras.ops.leaky_relu(self.bn(self.conv(x), training=training), negative_slope=LEAKY_SLOPE)

    def torch_weight_map(self, prefix):
        """``prefix.0`` (conv) and ``prefix.1`` (BN): the original ``nn.Sequential`` indices."""
        return [(prefix + ".0", self.conv), (prefix + ".1", self.bn)]


class DarkNetBlock(keras.layers.Layer):
    """original ``DarkNetBlock``: ``conv2(conv1(x)) + x`` with a 1x1 conv to ``channels`` and a 3x3 conv back to
    ``2 * channels``. Input/output float [B, H, W, 2 * channels]."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = DarkNetConv(channels, 1, name="conv1")
        self.conv2 = DarkNetConv(2 * channels, 3, name="conv2")

    def call(self, x, training=None):
        return self.conv2(self.conv1(x, training=training), training=training) + x

    def torch_weight_map(self, prefix):
        return self.conv1.torch_weight_map(prefix + "conv1") + self.conv2.torch_weight_map(prefix + "conv2")


class DarkNetBackbone(keras.layers.Layer):
    """Darknet-53 returning C3, C4, C5.

    Call: images float [B, S, S, 3] (RGB / 255) -> tuple of three float tensors NHWC:
    C3 [B, s3, s3, 256], C4 [B, s4, s4, 512], C5 [B, s5, s5, 1024] with s_{k+1} = floor((s_k - 1) / 2) + 1 from
    s0 = S over five stride-2 stages (69, 35, 18 at 550).

    original: backbone.py DarkNetBackbone (selected_layers [2, 3, 4] of yolact_darknet53_config).
    """

    out_channels = tuple(2 * STAGE_CHANNELS[i] for i in SELECTED_STAGES)

    def __init__(self, layers=DARKNET_BLOCKS["darknet53"], **kwargs):
        super().__init__(**kwargs)
        self.preconv = DarkNetConv(STAGE_CHANNELS[0], 3, name="preconv")
        # Flat list (Keras tracks it for saving); self._index[k] = (stage i, index j in the original Sequential).
        self.units, self._index = [], []
        for i, (channels, blocks) in enumerate(zip(STAGE_CHANNELS, layers)):
            self.units.append(DarkNetConv(2 * channels, 3, strides=2, name=f"layers_{i}_0"))
            self._index.append((i, 0))
            for j in range(1, blocks + 1):
                self.units.append(DarkNetBlock(channels, name=f"layers_{i}_{j}"))
                self._index.append((i, j))

    def call(self, x, training=None):
        x = self.preconv(x, training=training)
        outs = []
        for k, unit in enumerate(self.units):
            x = unit(x, training=training)
            if k + 1 == len(self.units) or self._index[k + 1][1] == 0:
                outs.append(x)  # end of a stage
        return tuple(outs[i] for i in SELECTED_STAGES)

    def torch_weight_map(self, prefix="backbone."):
        """[(original state_dict prefix, keras layer)]: ``backbone._preconv.{0,1}``, ``backbone.layers.{i}.0.{0,1}``
        (downsample), ``backbone.layers.{i}.{j}.conv{1,2}.{0,1}`` (blocks, j >= 1)."""
        items = self.preconv.torch_weight_map(prefix + "_preconv")
        for (i, j), unit in zip(self._index, self.units):
            items += unit.torch_weight_map(f"{prefix}layers.{i}.{j}" if j == 0 else f"{prefix}layers.{i}.{j}.")
        return items

    def batch_norm_layers(self):
        return [layer for _, layer in self.torch_weight_map() if isinstance(layer, keras.layers.BatchNormalization)]
