"""Backbone registry: ``build_backbone(cfg)`` -> a Keras layer returning (C3, C4, C5).

Every backbone layer has ``out_channels`` (C3, C4, C5 channels), ``torch_weight_map(prefix)`` (original
state_dict prefixes -> Keras layers, used by utils/convert_weights.py) and ``batch_norm_layers()``.
"""

from __future__ import annotations

from yolact.backbones.efficientnet_lite import EfficientNetLiteBackbone
from yolact.backbones.resnet import RESNET_BLOCKS, ResNetBackbone


def build_backbone(cfg):
    """The backbone named by ``cfg.model.backbone`` ('resnet50', 'resnet101', 'efficientnet_lite0').

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
    raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(RESNET_BLOCKS) + ['efficientnet_lite0']}")


__all__ = ["build_backbone", "ResNetBackbone", "EfficientNetLiteBackbone"]
