"""Backbone registry: ``build_backbone(cfg)`` -> a Keras layer returning (C3, C4, C5).

Every backbone layer has ``out_channels`` (C3, C4, C5 channels), ``torch_weight_map(prefix)`` (original
state_dict prefixes -> Keras layers, used by utils/convert_weights.py) and ``batch_norm_layers()``.
"""

from __future__ import annotations

from yolact.backbones.darknet import DARKNET_BLOCKS, DarkNetBackbone
from yolact.backbones.efficientnet_lite import EfficientNetLiteBackbone
from yolact.backbones.resnet import RESNET_BLOCKS, ResNetBackbone


def build_backbone(cfg):
    """The backbone named by ``cfg.model.backbone`` ('resnet50', 'resnet101', 'efficientnet_lite0', 'darknet53').

    Raises:
      ValueError: unknown backbone name, or ``cfg.model.dcn_layers`` with a non-ResNet backbone.
    """
    name = cfg.model.backbone
    if name in RESNET_BLOCKS:
        return ResNetBackbone(RESNET_BLOCKS[name], cfg.model.dcn_layers, cfg.model.dcn_interval, name="backbone")
    if name == "efficientnet_lite0":
        if any(cfg.model.dcn_layers):
            raise ValueError("model.dcn_layers (deformable convs) exist for the ResNet backbones only")
        return EfficientNetLiteBackbone(name="backbone")
    if name in DARKNET_BLOCKS:
        return DarkNetBackbone(DARKNET_BLOCKS[name], name="backbone")
    known = sorted(RESNET_BLOCKS) + ["efficientnet_lite0"] + sorted(DARKNET_BLOCKS)
    raise ValueError(f"unknown backbone {name!r}; expected one of {known}")


__all__ = ["build_backbone", "ResNetBackbone", "EfficientNetLiteBackbone", "DarkNetBackbone"]
