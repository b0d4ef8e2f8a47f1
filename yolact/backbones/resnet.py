"""ResNet-50 / ResNet-101 backbone in the original's torchvision layout.

original: backbone.py ResNetBackbone, Bottleneck (shared/docs/yolact_reference.md §2.1). Stride on the 3x3 conv
("v1.5"), every conv without bias, BatchNorm eps 1e-5 (PyTorch momentum 0.1 = Keras 0.9), symmetric explicit
padding for the stride-2 7x7 stem, the stem max-pool and the stride-2 3x3 convs.

YOLACT++ (``dcn_layers`` / ``dcn_interval``): the 3x3 ``conv2`` of selected blocks is a modulated deformable conv
(yolact/dcn.py ``DeformableConv2D``, the original's external/DCNv2 ``DCN``) with the block's stride, padding 1 and a
bias, whose offset/mask conv and bias start at zero (original backbone.py Bottleneck ``use_dcn``).
"""

from __future__ import annotations

import keras

from yolact.backbones.layers import batch_norm, padded_conv, symmetric_pads
from yolact.dcn import DeformableConv2D

RESNET_BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
BN_EPS = 1e-5
BN_TORCH_MOMENTUM = 0.1


class Bottleneck(keras.layers.Layer):
    """torchvision Bottleneck: 1x1 -> BN -> ReLU -> 3x3/stride -> BN -> ReLU -> 1x1 (x4) -> BN, + shortcut, ReLU.

    Input/output float [B, H, W, C] NHWC; output channels ``4 * planes``, spatial side ``floor((H - 1) / s) + 1``.
    With ``use_dcn`` the 3x3 conv is a ``DeformableConv2D`` (stride ``stride``, padding 1, with bias; offsets,
    masks and bias initialised to zero as the original's Bottleneck does).
    """

    expansion = 4

    def __init__(self, planes, stride=1, downsample=False, use_dcn=False, **kwargs):
        super().__init__(**kwargs)
        self.stride = stride
        self.use_dcn = bool(use_dcn)
        self.conv1 = keras.layers.Conv2D(planes, 1, use_bias=False, name="conv1")
        self.bn1 = batch_norm(BN_EPS, BN_TORCH_MOMENTUM, name="bn1")
        if self.use_dcn:
            self.pad2 = None
            self.conv2 = DeformableConv2D(planes, 3, strides=stride, padding=1, use_bias=True, name="conv2")
        else:
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


def uses_dcn(block: int, blocks: int, dcn_layers: int, dcn_interval: int) -> bool:
    """Whether block ``block`` (0-based) of a stage of ``blocks`` blocks has a deformable 3x3 conv.

    original: backbone.py ResNetBackbone._make_layer: block 0 iff ``dcn_layers >= blocks``; block b > 0 iff
    ``b + dcn_layers >= blocks and b % dcn_interval == 0``.
    """
    if block == 0:
        return dcn_layers >= blocks
    return block + dcn_layers >= blocks and block % dcn_interval == 0


class ResNetBackbone(keras.layers.Layer):
    """ResNet backbone returning C3, C4, C5.

    Call: images float [B, S, S, 3] (normalized RGB) -> tuple of three float tensors NHWC:
    C3 [B, S/8, S/8, 512], C4 [B, S/16, S/16, 1024], C5 [B, S/32, S/32, 2048] (floor arithmetic, 69/35/18 at 550).

    Args:
      layers: blocks per stage (3, 4, 6, 3) for ResNet-50, (3, 4, 23, 3) for ResNet-101.
      dcn_layers, dcn_interval: which blocks get a deformable 3x3 conv (:func:`uses_dcn`); (0, 0, 0, 0) = none.
        YOLACT++: (0, 4, 6, 3) / 1 for ResNet-50 (all 13 blocks of C3..C5), (0, 4, 23, 3) / 3 for ResNet-101.

    original: backbone.py ResNetBackbone (selected_layers [1, 2, 3]).
    """

    out_channels = (512, 1024, 2048)

    def __init__(self, layers=(3, 4, 6, 3), dcn_layers=(0, 0, 0, 0), dcn_interval=1, **kwargs):
        super().__init__(**kwargs)
        self.stem_pad, self.conv1 = padded_conv(64, 7, strides=2, pads=symmetric_pads(7), name="conv1")
        self.bn1 = batch_norm(BN_EPS, BN_TORCH_MOMENTUM, name="bn1")
        # Max-pool 3x3/2 pad 1: zero padding equals PyTorch's -inf padding because the input is post-ReLU.
        self.pool_pad = keras.layers.ZeroPadding2D(symmetric_pads(3), name="pool_pad")
        self.pool = keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="maxpool")
        # A flat list (Keras tracks it for saving); self._index[k] = (stage i, block b) of self.blocks[k].
        self.blocks, self._index = [], []
        for i, (planes, blocks, dcn) in enumerate(zip((64, 128, 256, 512), layers, dcn_layers)):
            for b in range(blocks):
                stride = 1 if (i == 0 or b > 0) else 2
                self.blocks.append(Bottleneck(planes, stride=stride, downsample=(b == 0),
                                              use_dcn=uses_dcn(b, blocks, dcn, dcn_interval), name=f"layers_{i}_{b}"))
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
