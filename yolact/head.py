"""Shared prediction head and semantic-segmentation conv.

original: yolact.py PredictionModule (share_prediction_module True, extra_head_net [(256, 3, pad 1)],
head_layer_params kernel 3 pad 1) and Yolact.semantic_seg_conv (reference doc §4).
"""

from __future__ import annotations

import keras

from yolact.fpn import xavier_conv


class PredictionHead(keras.layers.Layer):
    """One head applied to every FPN level.

    Call on a level float [B, H, W, 256] -> (loc [B, H*W*A, 4], conf [B, H*W*A, C] logits,
    mask [B, H*W*A, K] tanh). Row order: y, then x, then anchor a (a fastest), the original's
    permute(0, 2, 3, 1).view(B, -1, D); conv channel c belongs to anchor c // D, component c % D.
    upfeature = 3x3 conv + ReLU; bbox/conf/mask = 3x3 convs; tanh on the mask coefficients only.
    """

    def __init__(self, num_classes, num_anchors, num_mask=32, channels=256, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.num_anchors, self.num_mask = num_classes, num_anchors, num_mask
        self.channels = int(channels)
        self.upfeature = xavier_conv(channels, 3, name="upfeature", padding="same")
        self.bbox_layer = xavier_conv(num_anchors * 4, 3, name="bbox_layer", padding="same")
        self.conf_layer = xavier_conv(num_anchors * num_classes, 3, name="conf_layer", padding="same")
        self.mask_layer = xavier_conv(num_anchors * num_mask, 3, name="mask_layer", padding="same")

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "num_anchors": self.num_anchors,
                "num_mask": self.num_mask, "channels": self.channels}

    def call(self, x):
        x = keras.ops.relu(self.upfeature(x))
        batch = keras.ops.shape(x)[0]
        loc = keras.ops.reshape(self.bbox_layer(x), (batch, -1, 4))
        conf = keras.ops.reshape(self.conf_layer(x), (batch, -1, self.num_classes))
        mask = keras.ops.tanh(keras.ops.reshape(self.mask_layer(x), (batch, -1, self.num_mask)))
        return loc, conf, mask

    def torch_weight_map(self, prefix="prediction_layers.0."):
        return [
            (prefix + "upfeature.0", self.upfeature),
            (prefix + "bbox_layer", self.bbox_layer),
            (prefix + "conf_layer", self.conf_layer),
            (prefix + "mask_layer", self.mask_layer),
        ]


def semantic_seg_conv(num_classes):
    """1x1 conv P3 [B, H3, W3, 256] -> semantic logits [B, H3, W3, C - 1] (no background channel)."""
    return xavier_conv(num_classes - 1, 1, name="semantic_seg_conv")
