"""Small building blocks shared by the backbones: explicit padding convs and a freezable BatchNorm.

PyTorch pads explicitly (symmetric, or the EfficientNet package's fixed asymmetric pads); Keras 'same' with stride
2 pads (0, 1) on even inputs. Stride-2 layers are therefore built as ``ZeroPadding2D(pads)`` + ``'valid'``
(shared/docs/yolact_reference.md §2.1, §12.1, §13.1).
"""

from __future__ import annotations

import keras


def padded_conv(filters, kernel_size, strides=1, pads=None, use_bias=False, name=None, depthwise=False):
    """A conv layer (or depthwise conv) preceded by explicit zero padding when ``pads`` is given.

    Args:
      filters: output channels (ignored for depthwise).
      kernel_size: square kernel side.
      strides: stride.
      pads: None for Keras 'same' (stride 1 only, equals PyTorch pad (k-1)/2), or ``((top, bottom), (left,
        right))`` pixels of zero padding followed by a 'valid' conv.
      use_bias: conv bias.
      depthwise: a ``DepthwiseConv2D`` (depth multiplier 1) instead of ``Conv2D``.

    Returns:
      ``(pad_layer or None, conv_layer)``; apply as ``conv(pad(x))``.

    Raises:
      ValueError: a strided conv without explicit pads.
    """
    padding = "same" if pads is None else "valid"
    if pads is None and strides != 1 and kernel_size != 1:
        raise ValueError("stride-2 convs need explicit pads to match PyTorch")
    pad = None if pads is None else keras.layers.ZeroPadding2D(pads, name=None if name is None else name + "_pad")
    if depthwise:
        conv = keras.layers.DepthwiseConv2D(
            kernel_size, strides=strides, padding=padding, use_bias=use_bias, name=name
        )
    else:
        conv = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias, name=name)
    return pad, conv


def symmetric_pads(kernel_size):
    """PyTorch ``padding=k // 2`` as Keras ZeroPadding2D pads ``((p, p), (p, p))``."""
    p = kernel_size // 2
    return ((p, p), (p, p))


def batch_norm(epsilon, torch_momentum, name=None):
    """A Keras BatchNormalization equivalent to ``nn.BatchNorm2d(eps, momentum=torch_momentum)``.

    PyTorch's running-stat momentum m is Keras momentum 1 - m (0.1 -> 0.9). Note: PyTorch updates
    ``running_var`` with the unbiased batch variance, Keras with the biased one (factor n/(n-1), negligible for
    n = batch * H * W).
    """
    return keras.layers.BatchNormalization(epsilon=epsilon, momentum=1.0 - torch_momentum, name=name)


def set_bn_frozen(layers, frozen: bool):
    """Freeze (or unfreeze) BatchNorm layers: frozen BN runs in inference mode and its gamma/beta are not trained.

    In Keras 3 a BatchNormalization with ``trainable=False`` both uses its moving statistics and exposes no
    trainable weights, exactly the original's ``Yolact.freeze_bn`` (eval mode + ``requires_grad=False``).
    """
    for layer in layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = not frozen
