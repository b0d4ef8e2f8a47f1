"""The model's detection stage as a Keras layer (:class:`DetectionGenerator`: decode, NMS, masks at prototype
resolution or a given size, YOLACT++ re-scoring) and the one conversion of detections to the output convention
(:func:`to_output_convention`).

original: layers/functions/detection.py Detect + layers/output_utils.py postprocess (before the upsampling to the
image when no ``output_size`` is given) + yolact.py's mask-IoU re-scoring.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import keras
import tensorflow as tf

from yolact import masks as masks_lib
from yolact.detection.nms import nms_fn, resolve_nms
from yolact.maskiou import rescore_detections
from yolact.ops.anchors import make_anchors

# The layer's name and name scope: the tensors of the detection stage in a traced graph start with it, so that an
# int8 TFLite export can keep them float32 (yolact/deploy/tflite.py).
DETECTION_SCOPE = "detection_generator"


def _check_outputs(outputs, anchors):
    """float32 tensors (loc, conf, mask, anchors) after the rank / anchor-count checks."""
    loc = tf.convert_to_tensor(outputs["loc"], tf.float32)
    conf = tf.convert_to_tensor(outputs["conf"], tf.float32)
    mask = tf.convert_to_tensor(outputs["mask"], tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    if loc.shape.rank != 3 or conf.shape.rank != 3 or mask.shape.rank != 3:
        raise ValueError(f"detection expects batched loc/conf/mask of rank 3, got {loc.shape}, {conf.shape}, "
                         f"{mask.shape}")
    if loc.shape[1] is not None and loc.shape[1] != anchors.shape[0]:
        raise ValueError(f"loc has {loc.shape[1]} anchors but anchors has {anchors.shape[0]}")
    return loc, conf, mask, anchors


class DetectionGenerator(keras.layers.Layer):
    """The model's detection stage: decode ``loc`` against the anchors, NMS, mask assembly, YOLACT++ re-scoring
    (no weights of its own).

    In the spirit of TF Model Garden's ``DetectionGenerator`` and keras-hub's ``prediction_decoder``: a
    :class:`yolact.model.Yolact` holds one as ``model.detection_generator`` and ``model.detect(images)`` runs the
    network and this layer. Output shapes are fixed (D = ``cfg.detection.max_num_detection`` rows, padding rows
    zero).

    Args:
      cfg: a ``YolactConfig`` (``cfg.detection``: thresholds, top_k, D, default nms_type; ``cfg.input_size`` for traditional NMS;
        the anchors are ``make_anchors(cfg)``, the same as ``model.anchors``).
      nms_type: 'fast' (per class), 'cross_class' or 'traditional' (yolact/detection/nms.py); default
        ``cfg.detection.nms_type``.
      jit: XLA-compile the NMS; default True for the Fast NMS variants, False for 'traditional' (no XLA kernel).
        Exports to TFLite / ONNX need False (no XLA inside a converted graph).

    Raises:
      ValueError: unknown ``nms_type`` or ``jit=True`` with traditional NMS.
    """

    def __init__(self, cfg, nms_type: Optional[str] = None, jit: Optional[bool] = None, **kwargs):
        if isinstance(cfg, dict):  # from_config
            from config import from_dict

            cfg = from_dict(cfg)
        kwargs.setdefault("name", DETECTION_SCOPE)
        kwargs.setdefault("dtype", "float32")  # never autocast the NMS inputs under a mixed-precision policy
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.cfg = cfg
        self.nms_type, self.jit = resolve_nms(cfg, nms_type, jit)
        self._nms = nms_fn(cfg, self.nms_type, self.jit)
        self._anchors_np = make_anchors(cfg)

    @property
    def anchors(self) -> tf.Tensor:
        """float32 [N, 4] relative ``[cx, cy, w, h]``."""
        return tf.constant(self._anchors_np)

    @property
    def max_num_detection(self) -> int:
        return self.cfg.detection.max_num_detection

    def nms(self, outputs, anchors=None) -> Dict[str, tf.Tensor]:
        """Decode + NMS without masks.

        Args:
          outputs: dict with ``loc`` float32 [B,N,4] (encoded), ``conf`` float32 [B,N,C] logits (softmax applied
            here), ``mask`` float32 [B,N,K] coefficients; other keys are ignored.
          anchors: float32 [N,4] relative ``[cx, cy, w, h]``; default this layer's.

        Returns:
          dict ``boxes`` float32 [B,D,4] relative ``[x1, y1, x2, y2]`` (unclipped), ``classes`` int32 [B,D] 0-based
          foreground class, ``scores`` float32 [B,D], ``coefs`` float32 [B,D,K], ``num_detections`` int32 [B]; rows
          sorted by descending score, padding rows zero.

        Raises:
          ValueError: not rank 3, or a number of rows that differs from the anchors'.
        """
        return self._nms(*_check_outputs(outputs, self.anchors if anchors is None else anchors))

    def call(self, outputs, maskiou_net=None, output_size: Optional[Sequence] = None, crop_to_box: bool = True):
        """Network outputs → detections with masks.

        Args:
          outputs: dict ``loc`` [B,N,4], ``conf`` [B,N,C], ``mask`` [B,N,K], ``proto`` [B,Hp,Wp,K] (float32,
            :class:`yolact.model.Yolact`'s raw outputs).
          maskiou_net: YOLACT++ ``model.maskiou_net``: re-scores the detections (:func:`yolact.maskiou.
            rescore_detections`); None: no re-scoring.
          output_size: ``(height, width)`` in pixels (ints or scalar tensors) to upsample the masks to (half-pixel
            bilinear, no antialias); None keeps them at prototype resolution [Hp, Wp].
          crop_to_box: zero each mask outside its box padded by one prototype pixel (the original's default).

        Returns:
          :meth:`nms`'s dict plus ``masks`` float32 [B,D,H,W] (or [B,D,Hp,Wp]) probabilities, ``> 0.5`` is the
          binary mask, rows past ``num_detections`` zero; with ``maskiou_net`` also ``mask_scores`` and
          ``mask_iou`` float32 [B,D] (``scores`` stay the box scores).
        """
        dets = self.nms(outputs)
        proto = tf.convert_to_tensor(outputs["proto"], tf.float32)
        height, width = (None, None) if output_size is None else output_size
        probs = masks_lib.assemble_masks(proto, dets["coefs"], dets["boxes"], height, width, crop_to_box)
        valid = tf.sequence_mask(dets["num_detections"], self.max_num_detection, tf.float32)
        dets = {**dets, "masks": probs * valid[:, :, None, None]}
        return rescore_detections(dets, proto, maskiou_net, self.cfg.detection)

    def get_config(self):
        from config import to_dict

        return {**super().get_config(), "cfg": to_dict(self.cfg), "nms_type": self.nms_type, "jit": self.jit}


def to_output_convention(detections: Dict[str, tf.Tensor], category_ids=None) -> Dict[str, tf.Tensor]:
    """THE conversion of detections to the output convention (TF Object Detection API style), used by every
    inference form (yolact/deploy/graph.py ``inference_function``).

    Args:
      detections: :class:`DetectionGenerator` output (or a selection of its rows): ``boxes`` float32 [B,D,4]
        relative ``[x1, y1, x2, y2]``, ``classes`` int32 [B,D] 0-based foreground class, ``scores`` float32 [B,D];
        optional ``num_detections`` int32 [B] (rows past it are zeroed; without it every row is real), ``masks``
        float32 [B,D,H,W] and (YOLACT++) ``mask_scores`` float32 [B,D].
      category_ids: int32 [C] dataset category id of each class channel, ``label_map.index_to_id_array()``
        (index 0, background, maps to 0); None: no ``detection_classes``.

    Returns:
      dict ``detection_boxes`` float32 [B,D,4] normalised ``[ymin, xmin, ymax, xmax]`` ordered and clipped to
      [0, 1]; ``detection_scores`` float32 [B,D]; ``detection_classes`` int32 [B,D] dataset category ids (0 on
      padding rows); ``num_detections`` int32 [B], ``detection_masks`` and ``detection_mask_scores`` float32 [B,D]
      when the input has them.
    """
    boxes = tf.convert_to_tensor(detections["boxes"], tf.float32)
    if "num_detections" in detections:
        valid = tf.sequence_mask(detections["num_detections"], tf.shape(boxes)[1])
    else:
        valid = tf.ones(tf.shape(boxes)[:2], tf.bool)
    x1, x2 = masks_lib.sanitize_coordinates(boxes[..., 0], boxes[..., 2], 1)
    y1, y2 = masks_lib.sanitize_coordinates(boxes[..., 1], boxes[..., 3], 1)
    out = {"detection_boxes": tf.stack([y1, x1, y2, x2], axis=-1) * tf.cast(valid, tf.float32)[..., None],
           "detection_scores": tf.where(valid, tf.convert_to_tensor(detections["scores"], tf.float32), 0.0)}
    if category_ids is not None:
        ids = tf.convert_to_tensor(category_ids, tf.int32)
        out["detection_classes"] = tf.where(valid, tf.gather(ids, tf.cast(detections["classes"], tf.int32) + 1), 0)
    if "mask_scores" in detections:  # YOLACT++: box score x predicted mask IoU (yolact/maskiou.py rescore)
        out["detection_mask_scores"] = tf.where(valid, tf.convert_to_tensor(detections["mask_scores"], tf.float32), 0.0)
    if "num_detections" in detections:
        out["num_detections"] = detections["num_detections"]
    if "masks" in detections:
        out["detection_masks"] = detections["masks"]
    return out


__all__ = ["DETECTION_SCOPE", "DetectionGenerator", "to_output_convention"]
