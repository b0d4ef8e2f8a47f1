"""YOLACT++ Fast Mask Re-scoring: the mask-IoU network and detection re-scoring.

original: yolact.py FastMaskIoUNet (+ utils/functions.py make_net with include_last_relu=True),
layers/output_utils.py postprocess (``use_maskiou`` / ``rescore_mask`` / ``rescore_bbox``), eval.py prep_metrics
(box AP uses the box score, mask AP the mask score). The loss side (target IoU, ``discard_mask_area``) is in
yolact/losses.py.

At inference the detection layer calls it (``model.detection_generator(out, maskiou_net=model.maskiou_net)``,
yolact/detection/generator.py); on the fixed-shape NMS output (``DetectionGenerator.nms``)::

    dets = rescore_detections(dets, out["proto"], model.maskiou_net, cfg.detection)   # adds "mask_scores"
    # or the parts:
    iou = predict_mask_iou(model.maskiou_net, proto, dets["coefs"], dets["boxes"], dets["classes"])
    box_scores, mask_scores = rescore(dets["scores"], iou, cfg.detection.rescore_mask, cfg.detection.rescore_bbox)
"""

from __future__ import annotations

import keras
import tensorflow as tf

from config import min_mask_side
from yolact.fpn import xavier_conv
from yolact.masks import assemble_masks


class FastMaskIoUNet(keras.layers.Layer):
    """Predicts the IoU of a predicted mask with its (unknown) ground truth, for every foreground class.

    Layers: for each of ``channels`` a 3x3 stride-2 conv WITHOUT padding + ReLU (138 -> 68 -> 33 -> 16 -> 7 -> 3 at
    the 550 prototype size), then a 1x1 conv to ``num_classes - 1`` + ReLU, then a max over the remaining spatial
    map. Weights glorot_uniform, biases zero (original Yolact.init_weights: xavier_uniform_ on every non-backbone
    conv).

    Call: ``masks`` float [n, H, W] or [n, H, W, 1] (cropped continuous mask probabilities at prototype size)
    -> float [n, num_classes - 1] predicted mask IoU per class (>= 0, can be exactly 0), in the layer's compute
    dtype. H, W must be at least 63 (five unpadded stride-2 convs; prototypes of 63+ px need img_size >= 250; a
    rectangular input along both axes).

    Args:
      num_classes: classes including background (the net predicts the ``num_classes - 1`` foreground ones).
      channels: output channels of the 3x3 stride-2 convs ((8, 16, 32, 64, 128) for YOLACT++).

    Raises (at build):
      ValueError: an input side too small for the unpadded convs (the original fails there too).
    """

    def __init__(self, num_classes, channels=(8, 16, 32, 64, 128), **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.channels = tuple(int(c) for c in channels)
        self.convs = [
            xavier_conv(c, 3, name=f"conv_{i}", strides=2, padding="valid") for i, c in enumerate(self.channels)
        ]
        self.convs.append(xavier_conv(self.num_classes - 1, 1, name=f"conv_{len(self.channels)}"))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "channels": list(self.channels)}

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) == 3:
            shape = shape + (1,)
        need = min_mask_side(len(self.channels))
        if any(side is not None and side < need for side in shape[1:3]):
            raise ValueError(f"the mask-IoU net needs masks of at least {need}x{need} px (prototypes), got "
                             f"{shape[1]}x{shape[2]}: use a larger img_size (>= 250 for YOLACT++)")
        for conv in self.convs:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
        self.built = True

    def call(self, masks):
        x = masks[..., None] if masks.shape.rank == 3 else masks
        for conv in self.convs:
            x = keras.ops.relu(conv(x))
        return keras.ops.max(x, axis=(1, 2))

    def torch_weight_map(self, prefix="maskiou_net."):
        """[(original state_dict prefix, keras conv)]: ``maskiou_net.maskiou_net.{0, 2, ..., 2 * len(channels)}``
        (the Sequential of make_net interleaves the ReLUs)."""
        return [(f"{prefix}maskiou_net.{2 * i}", conv) for i, conv in enumerate(self.convs)]


def mask_iou_input(proto, coefs, boxes):
    """The mask-IoU net's input at inference: ``crop(sigmoid(proto @ coefs^T), box, 1 px)`` at prototype size.

    original: postprocess: ``masks = crop(sigmoid(proto @ coef.T), boxes)`` (before upsampling / binarising).

    Args:
      proto: float32 [B, Hp, Wp, K] prototypes.
      coefs: float32 [B, D, K] mask coefficients of the detections.
      boxes: float32 [B, D, 4] relative ``[x1, y1, x2, y2]`` (the detections' boxes, unclipped).

    Returns:
      float32 [B, D, Hp, Wp] cropped mask probabilities.
    """
    # At prototype size: no resize (the original's same-size interpolation is the identity), so that the detection
    # stage's own masks at prototype size are the same expression (one assembly in a traced graph).
    return assemble_masks(tf.convert_to_tensor(proto, tf.float32), tf.cast(coefs, tf.float32),
                          tf.cast(boxes, tf.float32), crop_to_box=True)


def predict_mask_iou(maskiou_net, proto, coefs, boxes, classes):
    """Predicted mask IoU of every detection at its class.

    original: postprocess: ``gather(net.maskiou_net(masks.unsqueeze(1)), 1, classes)``.

    Args:
      maskiou_net: a built :class:`FastMaskIoUNet` (``model.maskiou_net``).
      proto, coefs, boxes: see :func:`mask_iou_input`.
      classes: int [B, D] 0-based foreground class of each detection.

    Returns:
      float32 [B, D] predicted IoU (>= 0). Padding rows get some value; their scores are 0 so their products are 0.
    """
    masks = mask_iou_input(proto, coefs, boxes)
    shape = tf.shape(masks)
    flat = tf.reshape(masks, [shape[0] * shape[1], shape[2], shape[3], 1])
    per_class = tf.cast(maskiou_net(flat), tf.float32)  # [B*D, C-1]
    per_class = tf.reshape(per_class, [shape[0], shape[1], -1])
    return tf.gather(per_class, tf.cast(classes, tf.int32), batch_dims=2)


def rescore(scores, mask_iou, rescore_mask=True, rescore_bbox=False):
    """Box and mask scores of detections from their class scores and predicted mask IoU.

    original: postprocess with use_maskiou: rescore_mask and rescore_bbox -> ``scores * maskiou`` for both;
    rescore_mask only (every YOLACT++ config) -> box ``scores``, mask ``scores * maskiou``; neither -> ``scores``
    for both. eval.py uses the box score for the bbox results and the mask score for the mask results; the
    detections stay in box-score order (the original's prep_display, for visualisation, temporarily sets
    rescore_bbox True: one score ``scores * maskiou``).

    Args:
      scores: float32 [...] class (box) scores of the detections.
      mask_iou: float32 [...] predicted mask IoU (:func:`predict_mask_iou`), same shape.
      rescore_mask, rescore_bbox: ``cfg.detection.rescore_mask`` / ``rescore_bbox``.

    Returns:
      (box_scores, mask_scores), float32 tensors shaped like ``scores``.
    """
    scores = tf.convert_to_tensor(scores, tf.float32)
    if not rescore_mask:
        return scores, scores
    rescored = scores * tf.cast(mask_iou, tf.float32)
    return (rescored if rescore_bbox else scores), rescored


def rescore_detections(detections, proto, maskiou_net, det_cfg):
    """NMS detections with the YOLACT++ scores: ``scores`` (box) and ``mask_scores``.

    original: postprocess + eval.py prep_metrics (bbox results scored by the box score, mask results by the mask
    score); see :func:`rescore`.

    Args:
      detections: dict with ``boxes`` float32 [B, D, 4] relative ``[x1, y1, x2, y2]``, ``classes`` int [B, D]
        0-based, ``scores`` float32 [B, D], ``coefs`` float32 [B, D, K] (the fixed-shape NMS output); other keys
        are passed through.
      proto: float32 [B, Hp, Wp, K].
      maskiou_net: ``model.maskiou_net``; None (YOLACT without mask IoU) returns ``detections`` unchanged.
      det_cfg: ``cfg.detection`` (``rescore_mask``, ``rescore_bbox``).

    Returns:
      a new dict: the input's keys with ``scores`` replaced by the box scores, plus ``mask_scores`` float32 [B, D]
      and ``mask_iou`` float32 [B, D]. Row order is unchanged (box-score order).
    """
    if maskiou_net is None:
        return detections
    out = dict(detections)
    iou = predict_mask_iou(maskiou_net, proto, detections["coefs"], detections["boxes"], detections["classes"])
    out["scores"], out["mask_scores"] = rescore(detections["scores"], iou, det_cfg.rescore_mask, det_cfg.rescore_bbox)
    out["mask_iou"] = iou
    return out


__all__ = ["FastMaskIoUNet", "mask_iou_input", "predict_mask_iou", "rescore", "rescore_detections"]
