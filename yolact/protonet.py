"""Prototype network (protonet) on P3.

original: yolact.py Yolact.__init__/forward with mask_proto_net = 3 x (256, 3x3, pad 1) + ReLU, bilinear x2
(+ ReLU), (256, 3x3, pad 1) + ReLU, (k, 1x1); then the prototype activation ReLU (reference doc §1.4).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from yolact.fpn import xavier_conv, resize_bilinear


class ProtoNet(keras.layers.Layer):
    """P3 float [B, H3, W3, 256] -> prototypes float [B, 2*H3, 2*W3, k] after ReLU (138 x 138 x 32 at 550).

    State-dict names ``proto_net.{0,2,4,8,10}`` (the Sequential indices of the original).
    """

    TORCH_INDICES = (0, 2, 4, 8, 10)

    def __init__(self, channels=256, num_prototypes=32, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.num_prototypes = int(channels), int(num_prototypes)
        self.convs = [xavier_conv(channels, 3, name=f"proto_{i}", padding="same") for i in self.TORCH_INDICES[:4]]
        self.last = xavier_conv(num_prototypes, 1, name="proto_10")

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "num_prototypes": self.num_prototypes}

    def call(self, x):
        for conv in self.convs[:3]:
            x = keras.ops.relu(conv(x))
        shape = tf.shape(x)
        x = keras.ops.relu(resize_bilinear(x, shape[1:3] * 2))
        x = keras.ops.relu(self.convs[3](x))
        return keras.ops.relu(self.last(x))

    def torch_weight_map(self, prefix="proto_net."):
        layers = list(self.convs) + [self.last]
        return [(f"{prefix}{i}", layer) for i, layer in zip(self.TORCH_INDICES, layers)]
