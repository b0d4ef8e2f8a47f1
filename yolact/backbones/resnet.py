"""ResNet-50 / ResNet-101 backbone in the original's torchvision layout.

original: backbone.py ResNetBackbone, Bottleneck (shared/docs/yolact_reference.md §2.1). Stride on the 3x3 conv
("v1.5"), every conv without bias, BatchNorm eps 1e-5 (PyTorch momentum 0.1 = Keras 0.9), symmetric explicit
padding for the stride-2 7x7 stem, the stem max-pool and the stride-2 3x3 convs.
"""

from __future__ import annotations

import keras

from yolact.backbones.layers import batch_norm, padded_conv, symmetric_pads

RESNET_BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
BN_EPS = 1e-5
BN_TORCH_MOMENTUM = 0.1


class Bottleneck(keras.layers.Layer):
    """torchvision Bottleneck: 1x1 -> BN -> ReLU -> 3x3/stride -> BN -> ReLU -> 1x1 (x4) -> BN, + shortcut, ReLU.

    Input/output float [B, H, W, C] NHWC; output channels ``4 * planes``, spatial side ``floor((H - 1) / s) + 1``.
    """

    expansion = 4

    def __init__(self, planes, stride=1, downsample=False, **kwargs):
        super().__init__(**kwargs)
        self.stride = stride
        self.conv1 = keras.layers.Conv2D(planes, 1, use_bias=False, name="conv1")
        self.bn1 = batch_norm(BN_EPS, BN_TORCH_MOMENTUM, name="bn1")
        pads = symmetric_pads(3) if stride != 1 else None
        self.pad2, self.conv2 = padded_conv(planes, 3, strides=stride, pads=pads, name="conv2")
        self.bn2 = batch_norm(BN_EPS, BN_TORCH_MOMENTUM, name="bn2")
        self.conv3 = keras.layers.Conv2D(planes * self.expansion, 1, use_bias=False, name="conv3")
        self.bn3 = batch_norm(BN_EPS, BN_TORCH_MOMENTUM, name="bn3")
        if downsample:
            self.down_conv = keras.layers.Conv2D(
                planes * self.expansion, 1, strides=stride, use_bias=False, name="downsample_0"
            )
            self.down_bn = batch_norm(BN_EPS, BN_TORCH_MOMENTUM, name="downsample_1")
        else:
            self.down_conv = self.down_bn = None

    def call(self, x, training=None):
        out = keras.ops.relu(self.bn1(self.conv1(x), training=training))
        if self.pad2 is not None:
            out = self.pad2(out)
        out = keras.ops.relu(self.bn2(self.conv2(out), training=training))
        out = self.bn3(self.conv3(out), training=training)
        shortcut = x if self.down_conv is None else self.down_bn(self.down_conv(x), training=training)
        return keras.ops.relu(out + shortcut)

    def torch_weight_map(self, prefix):
        """[(original state_dict prefix, keras layer)] for this block, e.g. ``backbone.layers.0.0.conv1``."""
        items = [
            (prefix + "conv1", self.conv1),
            (prefix + "bn1", self.bn1),
            (prefix + "conv2", self.conv2),
            (prefix + "bn2", self.bn2),
            (prefix + "conv3", self.conv3),
            (prefix + "bn3", self.bn3),
        ]
        if self.down_conv is not None:
            items += [(prefix + "downsample.0", self.down_conv), (prefix + "downsample.1", self.down_bn)]
        return items


class ResNetBackbone(keras.layers.Layer):
    """ResNet backbone returning C3, C4, C5.

    Call: images float [B, S, S, 3] (normalized RGB) -> tuple of three float tensors NHWC:
    C3 [B, S/8, S/8, 512], C4 [B, S/16, S/16, 1024], C5 [B, S/32, S/32, 2048] (floor arithmetic, 69/35/18 at 550).

    original: backbone.py ResNetBackbone (selected_layers [1, 2, 3]).
    """

    out_channels = (512, 1024, 2048)

    def __init__(self, layers=(3, 4, 6, 3), **kwargs):
        super().__init__(**kwargs)
        self.stem_pad, self.conv1 = padded_conv(64, 7, strides=2, pads=symmetric_pads(7), name="conv1")
        self.bn1 = batch_norm(BN_EPS, BN_TORCH_MOMENTUM, name="bn1")
        # Max-pool 3x3/2 pad 1: zero padding equals PyTorch's -inf padding because the input is post-ReLU.
        self.pool_pad = keras.layers.ZeroPadding2D(symmetric_pads(3), name="pool_pad")
        self.pool = keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="maxpool")
        # A flat list (Keras tracks it for saving); self._index[k] = (stage i, block b) of self.blocks[k].
        self.blocks, self._index = [], []
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            for b in range(blocks):
                stride = 1 if (i == 0 or b > 0) else 2
                self.blocks.append(Bottleneck(planes, stride=stride, downsample=(b == 0), name=f"layers_{i}_{b}"))
                self._index.append((i, b))

    def call(self, x, training=None):
        x = self.conv1(self.stem_pad(x))
        x = keras.ops.relu(self.bn1(x, training=training))
        x = self.pool(self.pool_pad(x))
        outs = []
        for k, block in enumerate(self.blocks):
            x = block(x, training=training)
            if k + 1 == len(self.blocks) or self._index[k + 1][1] == 0:
                outs.append(x)  # end of a stage: C2, C3, C4, C5
        return tuple(outs[1:])

    def torch_weight_map(self, prefix="backbone."):
        """[(original state_dict prefix, keras layer)]: ``backbone.conv1``, ``backbone.layers.{i}.{b}.*``."""
        items = [(prefix + "conv1", self.conv1), (prefix + "bn1", self.bn1)]
        for (i, b), block in zip(self._index, self.blocks):
            items += block.torch_weight_map(f"{prefix}layers.{i}.{b}.")
        return items

    def batch_norm_layers(self):
        return [layer for _, layer in self.torch_weight_map() if isinstance(layer, keras.layers.BatchNormalization)]
