"""Feature pyramid P3-P7 as the original builds it.

original: yolact.py FPN (shared/docs/yolact_reference.md §3) with fpn_base + use_conv_downsample True,
num_downsample 2, pad True, relu_pred_layers True, relu_downsample_layers False.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from yolact.backbones.layers import symmetric_pads


def resize_bilinear(x, size):
    """Half-pixel, non-antialiased bilinear resize to ``size`` = (h, w), keeping x's dtype.

    Equals ``F.interpolate(x, size, mode='bilinear', align_corners=False)``. x float [B, H, W, C]. The resize runs in
    float32 (TF's kernel computes in float32 anyway): with a bfloat16 / float16 x, XLA cannot compile the gradient
    of a resize whose input is not float32 ("Seen floating point types of different precisions").
    """
    return tf.cast(tf.image.resize(tf.cast(x, tf.float32), size, method="bilinear", antialias=False), x.dtype)


def xavier_conv(filters, kernel, name, **kwargs):
    """Non-backbone conv: glorot_uniform weights and zero bias (original Yolact.init_weights, xavier_uniform_)."""
    return keras.layers.Conv2D(
        filters, kernel, kernel_initializer="glorot_uniform", bias_initializer="zeros", name=name, **kwargs
    )


class FPN(keras.layers.Layer):
    """(C3, C4, C5) -> (P3, P4, P5, P6, P7), all ``num_features`` channels, NHWC.

    Lateral 1x1 convs; top-down: x = lat(C5); x = resize(x, size of C_i) + lat(C_i) for C4, C3 (exact-size
    bilinear); 3x3 'same' conv + ReLU on P3-P5; P6 = 3x3/2 conv (symmetric pad 1) of the ReLU-ed P5, P7 = the same
    of P6, both without ReLU. Sides at 550 (ResNet): 69, 35, 18, 9, 5.

    State-dict names are reversed as in the original: ``lat_layers.0`` / ``pred_layers.0`` act on C5 / P5.
    """

    def __init__(self, num_features=256, num_downsample=2, **kwargs):
        super().__init__(**kwargs)
        self.num_features, self.num_downsample = int(num_features), int(num_downsample)
        self.lat_layers = [xavier_conv(num_features, 1, name=f"lat_layers_{i}") for i in range(3)]
        self.pred_layers = [xavier_conv(num_features, 3, name=f"pred_layers_{i}", padding="same") for i in range(3)]
        self.down_pads, self.downsample_layers = [], []
        for i in range(num_downsample):
            self.down_pads.append(keras.layers.ZeroPadding2D(symmetric_pads(3), name=f"downsample_pad_{i}"))
            self.downsample_layers.append(xavier_conv(num_features, 3, name=f"downsample_layers_{i}", strides=2))

    def get_config(self):
        return {**super().get_config(), "num_features": self.num_features, "num_downsample": self.num_downsample}

    def call(self, convouts):
        n = len(convouts)
        merged = [None] * n
        x = None
        for i, lat in enumerate(self.lat_layers):
            j = n - 1 - i
            lateral = lat(convouts[j])
            if x is None:
                x = lateral
            else:
                shape = tf.shape(convouts[j])
                x = resize_bilinear(x, shape[1:3]) + lateral
            merged[j] = x
        outs = [None] * n
        for i, pred in enumerate(self.pred_layers):
            j = n - 1 - i
            outs[j] = keras.ops.relu(pred(merged[j]))
        for pad, down in zip(self.down_pads, self.downsample_layers):
            outs.append(down(pad(outs[-1])))
        return tuple(outs)

    def torch_weight_map(self, prefix="fpn."):
        items = [(f"{prefix}lat_layers.{i}", layer) for i, layer in enumerate(self.lat_layers)]
        items += [(f"{prefix}pred_layers.{i}", layer) for i, layer in enumerate(self.pred_layers)]
        items += [(f"{prefix}downsample_layers.{i}", layer) for i, layer in enumerate(self.downsample_layers)]
        return items
