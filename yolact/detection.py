"""Detection: the model's :class:`DetectionGenerator` layer (box decoding, NMS, mask assembly) and the one
conversion of detections to the output convention (:func:`to_output_convention`).

Usage::

    model = build_model(cfg)                       # model.detection_generator is a DetectionGenerator(cfg)
    dets = model.detect(images, output_size=(h, w))  # = model.detection_generator(model(images), output_size=...)
    out = to_output_convention(dets, label_map.index_to_id_array())  # normalised [ymin, xmin, ymax, xmax], ids

original: layers/functions/detection.py Detect (fast_nms, cc_fast_nms, traditional_nms); box decoding and IoU come
from yolact/ops/box_ops.py (the original's decode, jaccard); shared/docs/yolact_reference.md §8.

The NMS, the layer and the output conversion are graph code with static shapes so that they batch, export to a
SavedModel and (the two Fast NMS variants) compile with XLA; :func:`postprocess` is the Predictor's eager per-image
step (selection of the shown detections, numpy out). Where the original returns a variable number of detections we return
``D = cfg.detection.max_num_detection`` rows sorted by descending score, padded with score 0, class 0, box 0 and
coefficients 0; ``num_detections`` tells how many rows are real.

Differences to the original that we keep on purpose (documented, tested where it matters):

* Per-class Fast NMS: none. The original returns up to ``max_num_detection`` rows; so do we.
* Cross-class Fast NMS: the original returns every kept box of the top ``top_k`` (up to 200, no 100 cap); we keep
  the best ``max_num_detection`` of them (fixed shapes).
* Traditional NMS: the original's Cython NMS works on boxes scaled by ``img_size`` with the ``+1`` pixel
  width/height convention and suppresses when IoU ``>=`` threshold. We reproduce the ``+1`` by adding 1 to x2/y2 of
  the scaled boxes and the ``>=`` by passing the largest float32 below the threshold to
  ``tf.image.non_max_suppression`` (which suppresses on ``>``). The only remaining difference is float rounding of
  the IoU inside the TF kernel. It is not XLA-compiled (the TF NMS kernel has no XLA lowering).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from yolact import masks as masks_lib
from yolact.ops.anchors import make_anchors
from yolact.ops.box_ops import decode, iou

NMS_TYPES = ("fast", "cross_class", "traditional")
# Score given to non-candidates before sorting (real scores are softmax probabilities >= 0). Validity after a top-k
# is gathered from the boolean mask, never read back from the score: in an int8 TFLite model the scores are
# quantized on [0, 1] and -1 saturates to 0.
_INVALID = -1.0


def _suppressed_by_higher(iou: tf.Tensor, nms_threshold: float) -> tf.Tensor:
    """keep[..., j] iff max_{i<j} iou[..., i, j] <= threshold (upper-triangle trick); bool [..., k]."""
    k = iou.shape[-1]
    upper = tf.constant(np.triu(np.ones((k, k), np.float32), k=1))
    iou_max = tf.reduce_max(iou * upper, axis=-2)
    return iou_max <= nms_threshold


def _gather_rows(values: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """values [B, N, X], indices int32 [B, ...] -> [B, ..., X]."""
    return tf.gather(values, indices, batch_dims=1)


def _final_top(scores: tf.Tensor, valid: tf.Tensor, max_det: int):
    """Top ``max_det`` of ``scores`` [B, M] among ``valid``; returns (values, flat indices, valid mask)."""
    masked = tf.where(valid, scores, _INVALID)
    m = masked.shape[-1]
    k = min(max_det, m)
    top_scores, top_idx = tf.math.top_k(masked, k=k, sorted=True)
    top_valid = tf.gather(valid, top_idx, batch_dims=1)  # not ``top_scores > _INVALID / 2``: see _INVALID
    if k < max_det:
        pad = [[0, 0], [0, max_det - k]]
        top_scores = tf.pad(top_scores, pad, constant_values=_INVALID)
        top_idx = tf.pad(top_idx, pad)
        top_valid = tf.pad(top_valid, pad)
    return top_scores, top_idx, top_valid


def _pack(boxes, classes, scores, coefs, valid) -> Dict[str, tf.Tensor]:
    """Zero the padding rows and count the real ones."""
    vf = tf.cast(valid, tf.float32)
    return {
        "boxes": boxes * vf[..., None],
        "classes": tf.where(valid, tf.cast(classes, tf.int32), 0),
        "scores": tf.where(valid, scores, 0.0),
        "coefs": coefs * vf[..., None],
        "num_detections": tf.reduce_sum(tf.cast(valid, tf.int32), axis=-1),
    }


def fast_nms(boxes, fg_scores, coefs, conf_threshold, top_k, nms_threshold, max_num_detection):
    """Per-class Fast NMS with fixed shapes.

    original: Detect.detect + Detect.fast_nms (second_threshold False).

    Args:
      boxes: float32 [B, N, 4] relative ``[x1, y1, x2, y2]``.
      fg_scores: float32 [B, N, C-1] softmax probabilities of the foreground classes.
      coefs: float32 [B, N, K] mask coefficients.
      conf_threshold: an anchor is a candidate iff its max foreground score is > this.
      top_k: candidates kept per class.
      nms_threshold: keep iff max IoU with any higher-scored box of the class is <= this.
      max_num_detection: D, rows returned.

    Returns:
      dict boxes [B,D,4], classes int32 [B,D] (0-based foreground), scores [B,D], coefs [B,D,K],
      num_detections int32 [B]; padding rows are zero.
    """
    num_fg = fg_scores.shape[-1]
    n = fg_scores.shape[-2]
    k = min(top_k, n)
    candidate = tf.reduce_max(fg_scores, axis=-1) > conf_threshold  # [B, N]
    masked = tf.where(candidate[..., None], fg_scores, _INVALID)
    cls_scores, cls_idx = tf.math.top_k(tf.transpose(masked, [0, 2, 1]), k=k, sorted=True)  # [B, C-1, k]
    valid = tf.gather(candidate, cls_idx, batch_dims=1)
    batch = tf.shape(boxes)[0]
    flat_idx = tf.reshape(cls_idx, [batch, num_fg * k])
    cls_boxes = tf.reshape(_gather_rows(boxes, flat_idx), [batch, num_fg, k, 4])
    keep = _suppressed_by_higher(iou(cls_boxes, cls_boxes), nms_threshold) & valid  # [B, C-1, k]
    top_scores, top_flat, top_valid = _final_top(
        tf.reshape(cls_scores, [batch, num_fg * k]), tf.reshape(keep, [batch, num_fg * k]), max_num_detection)
    anchor_idx = tf.gather(flat_idx, top_flat, batch_dims=1)
    classes = top_flat // k
    return _pack(_gather_rows(boxes, anchor_idx), classes, top_scores, _gather_rows(coefs, anchor_idx), top_valid)


def cross_class_fast_nms(boxes, fg_scores, coefs, conf_threshold, top_k, nms_threshold, max_num_detection):
    """Fast NMS across classes: each anchor takes its best class, then one IoU test over all classes.

    original: Detect.detect + Detect.cc_fast_nms. Unlike the original (no cap), at most ``max_num_detection`` rows
    are returned. Arguments and result as :func:`fast_nms`.
    """
    n = fg_scores.shape[-2]
    k = min(top_k, n)
    best = tf.reduce_max(fg_scores, axis=-1)  # [B, N]
    best_cls = tf.argmax(fg_scores, axis=-1, output_type=tf.int32)
    candidate = best > conf_threshold
    masked = tf.where(candidate, best, _INVALID)
    top_scores, top_idx = tf.math.top_k(masked, k=k, sorted=True)  # [B, k]
    valid = tf.gather(candidate, top_idx, batch_dims=1)
    cand_boxes = _gather_rows(boxes, top_idx)
    keep = _suppressed_by_higher(iou(cand_boxes, cand_boxes), nms_threshold) & valid
    scores, pos, out_valid = _final_top(top_scores, keep, max_num_detection)
    anchor_idx = tf.gather(top_idx, pos, batch_dims=1)
    classes = tf.gather(best_cls, anchor_idx, batch_dims=1)
    return _pack(_gather_rows(boxes, anchor_idx), classes, scores, _gather_rows(coefs, anchor_idx), out_valid)


def traditional_nms(boxes, fg_scores, coefs, conf_threshold, nms_threshold, max_num_detection, img_size):
    """Per-class greedy NMS with ``tf.image.non_max_suppression``, the original's Cython conventions emulated.

    original: Detect.traditional_nms + utils/cython_nms.pyx: per class, boxes with that class's score
    > ``conf_threshold`` (no top_k), scaled by ``img_size`` with +1 width/height, suppressed when IoU >= threshold;
    all classes merged and the best ``max_num_detection`` kept. Arguments and result as :func:`fast_nms`;
    ``img_size`` is the network input side in pixels. Not XLA-compilable.
    """
    num_fg = fg_scores.shape[-1]
    batch = tf.shape(boxes)[0]
    scaled = boxes * float(img_size)
    plus_one = tf.concat([scaled[..., :2], scaled[..., 2:] + 1.0], axis=-1)
    iou_thr = float(np.nextafter(np.float32(nms_threshold), np.float32(0)))  # '>' on this == '>=' on threshold
    per_class_boxes = tf.repeat(plus_one, num_fg, axis=0)  # [B*(C-1), N, 4] row b*(C-1)+c
    per_class_scores = tf.reshape(tf.transpose(fg_scores, [0, 2, 1]), [-1, fg_scores.shape[-2]])

    def one(args):
        b, s = args
        idx = tf.image.non_max_suppression(b, s, max_num_detection, iou_threshold=iou_thr,
                                           score_threshold=conf_threshold)
        n_sel = tf.shape(idx)[0]
        return (tf.pad(idx, [[0, max_num_detection - n_sel]]),
                tf.sequence_mask(n_sel, max_num_detection))

    idx, sel_valid = tf.map_fn(one, (per_class_boxes, per_class_scores),
                               fn_output_signature=(tf.TensorSpec([max_num_detection], tf.int32),
                                                    tf.TensorSpec([max_num_detection], tf.bool)))
    sel_scores = tf.reshape(tf.gather(per_class_scores, idx, batch_dims=1), [batch, num_fg * max_num_detection])
    idx = tf.reshape(idx, [batch, num_fg * max_num_detection])
    sel_valid = tf.reshape(sel_valid, [batch, num_fg * max_num_detection])
    scores, pos, out_valid = _final_top(sel_scores, sel_valid, max_num_detection)
    anchor_idx = tf.gather(idx, pos, batch_dims=1)
    classes = pos // max_num_detection
    return _pack(_gather_rows(boxes, anchor_idx), classes, scores, _gather_rows(coefs, anchor_idx), out_valid)


def _detect_graph(loc, conf, mask, anchors, det_cfg, nms_type, img_size):
    n = anchors.shape[0]  # static shapes for top_k / reshapes even when the model's outputs lost them
    loc = tf.ensure_shape(loc, [None, n, 4])
    conf = tf.ensure_shape(conf, [None, n, None])
    mask = tf.ensure_shape(mask, [None, n, None])
    boxes = decode(loc, anchors)
    fg_scores = tf.nn.softmax(conf, axis=-1)[..., 1:]
    if nms_type == "fast":
        return fast_nms(boxes, fg_scores, mask, det_cfg.conf_threshold, det_cfg.top_k, det_cfg.nms_threshold,
                        det_cfg.max_num_detection)
    if nms_type == "cross_class":
        return cross_class_fast_nms(boxes, fg_scores, mask, det_cfg.conf_threshold, det_cfg.top_k,
                                    det_cfg.nms_threshold, det_cfg.max_num_detection)
    return traditional_nms(boxes, fg_scores, mask, det_cfg.conf_threshold, det_cfg.nms_threshold,
                           det_cfg.max_num_detection, img_size)


_COMPILED = {}


def default_jit() -> bool:
    """XLA on by default iff a GPU is visible."""
    return bool(tf.config.list_physical_devices("GPU"))


def detect_fn(cfg, nms_type: Optional[str] = None, jit: Optional[bool] = None):
    """A cached ``tf.function`` ``(loc, conf, mask, anchors) -> detections`` for ``cfg``.

    Raises:
      ValueError: unknown ``nms_type`` or ``jit=True`` with traditional NMS.
    """
    nms_type = nms_type or cfg.detection.nms_type
    if nms_type not in NMS_TYPES:
        raise ValueError(f"unknown nms_type {nms_type!r}; expected one of {NMS_TYPES}")
    if jit is None:
        jit = default_jit() and nms_type != "traditional"
    if jit and nms_type == "traditional":
        raise ValueError("traditional NMS uses tf.image.non_max_suppression, which XLA cannot compile; use jit=False")
    key = (cfg.detection, nms_type, bool(jit), cfg.model.img_size)
    if key not in _COMPILED:
        det_cfg, img_size = cfg.detection, cfg.model.img_size

        def run(loc, conf, mask, anchors):
            return _detect_graph(loc, conf, mask, anchors, det_cfg, nms_type, img_size)

        _COMPILED[key] = tf.function(run, jit_compile=bool(jit), reduce_retracing=True)
    return _COMPILED[key]


def _check_outputs(outputs, anchors):
    """float32 tensors (loc, conf, mask, anchors) after the rank / anchor-count checks of :func:`detect`."""
    loc = tf.convert_to_tensor(outputs["loc"], tf.float32)
    conf = tf.convert_to_tensor(outputs["conf"], tf.float32)
    mask = tf.convert_to_tensor(outputs["mask"], tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    if loc.shape.rank != 3 or conf.shape.rank != 3 or mask.shape.rank != 3:
        raise ValueError(f"detect expects batched loc/conf/mask of rank 3, got {loc.shape}, {conf.shape}, {mask.shape}")
    if loc.shape[1] is not None and loc.shape[1] != anchors.shape[0]:
        raise ValueError(f"loc has {loc.shape[1]} anchors but anchors has {anchors.shape[0]}")
    return loc, conf, mask, anchors


def detect(outputs, anchors, cfg, nms_type: Optional[str] = None, jit: Optional[bool] = None) -> Dict[str, tf.Tensor]:
    """Turn raw network outputs into at most ``D`` scored boxes per image (no masks; the functional form of
    :meth:`DetectionGenerator.nms`).

    original: layers/functions/detection.py Detect.__call__ (shared/docs/yolact_reference.md §8 steps 1-5).

    Args:
      outputs: dict with ``loc`` float32 [B,N,4] (encoded), ``conf`` float32 [B,N,C] logits (softmax applied here),
        ``mask`` float32 [B,N,K] coefficients (tanh already applied); other keys are ignored.
      anchors: float32 [N,4] relative ``[cx, cy, w, h]`` (``model.anchors``).
      cfg: a ``YolactConfig``; uses ``cfg.detection`` and ``cfg.model.img_size``.
      nms_type: 'fast' (per class, the original's default in eval.py), 'cross_class' or 'traditional';
        default ``cfg.detection.nms_type``.
      jit: compile with XLA; default True on GPU, False on CPU. Must be False for 'traditional'.

    Returns:
      dict, D = ``cfg.detection.max_num_detection``, rows sorted by descending score, padding rows zero:
      ``boxes`` float32 [B,D,4] relative ``[x1, y1, x2, y2]`` (unclipped), ``classes`` int32 [B,D] 0-based foreground
      class (channel - 1), ``scores`` float32 [B,D], ``coefs`` float32 [B,D,K], ``num_detections`` int32 [B].

    Raises:
      ValueError: unknown ``nms_type``, shape mismatch between outputs and anchors, or jit with traditional NMS.
    """
    return detect_fn(cfg, nms_type, jit)(*_check_outputs(outputs, anchors))


def to_output_convention(detections: Dict[str, tf.Tensor], category_ids=None) -> Dict[str, tf.Tensor]:
    """THE conversion of detections to the output convention (TF Object Detection API style), used by the
    SavedModel export and, through :func:`postprocess`, by the Predictor and utils/coco_eval.py.

    Args:
      detections: :class:`DetectionGenerator` / :func:`detect` output (or a selection of its rows): ``boxes``
        float32 [B,D,4] relative ``[x1, y1, x2, y2]``, ``classes`` int32 [B,D] 0-based foreground class,
        ``scores`` float32 [B,D]; optional ``num_detections`` int32 [B] (rows past it are zeroed; without it every
        row is real) and ``masks`` float32 [B,D,H,W].
      category_ids: int32 [C] dataset category id of each class channel, ``label_map.index_to_id_array()``
        (index 0, background, maps to 0); None: no ``detection_classes``.

    Returns:
      dict ``detection_boxes`` float32 [B,D,4] normalised ``[ymin, xmin, ymax, xmax]`` ordered and clipped to
      [0, 1]; ``detection_scores`` float32 [B,D]; ``detection_classes`` int32 [B,D] dataset category ids (0 on
      padding rows); ``num_detections`` int32 [B], ``detection_masks`` and (YOLACT++, from ``mask_scores``)
      ``detection_mask_scores`` float32 [B,D] when the input has them.
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


def postprocess(detections: Dict[str, tf.Tensor], proto: tf.Tensor, height: int, width: int,
                score_threshold: float = 0.0, crop_to_box: bool = True, max_detections: Optional[int] = None,
                category_ids=None) -> Dict[str, np.ndarray]:
    """Final detections of ONE image at its original size, as numpy, real rows only.

    original: layers/output_utils.py postprocess(dets, w, h, batch_idx, crop_masks=True, score_threshold).
    Boxes go through :func:`to_output_convention` (clipped, normalised) and are then scaled and truncated to
    pixels, which gives exactly the original's ``sanitize_coordinates`` + ``.long()``.

    Args:
      detections: :func:`detect` output for a batch of one (``boxes`` [1,D,4], ``classes``, ``scores``, ``coefs``,
        ``num_detections``; YOLACT++ also ``mask_scores``, passed through as ``mask_scores`` float32 [n]).
      proto: float32 [1, Hp, Wp, K] prototypes of that image.
      height, width: original image size in pixels.
      score_threshold: drop detections with score <= this (0 keeps every real row, like eval.py).
      crop_to_box: see :func:`yolact.masks.assemble_masks`.
      max_detections: keep only the best this many (masks are assembled for those only; display modes).
      category_ids: int32 [C] (see :func:`to_output_convention`); given, the result has ``category_ids``.

    Returns:
      dict ``boxes`` int32 [n,4] pixel ``[x1, y1, x2, y2]``, ``classes`` int32 [n] 0-based foreground class,
      ``scores`` float32 [n], ``masks`` uint8 [n, height, width] 0/1 and (with ``category_ids``) ``category_ids``
      int32 [n] dataset ids; n <= D, sorted by descending score.

    Raises:
      ValueError: a batch larger than one.
    """
    if int(tf.shape(detections["scores"])[0]) != 1 or int(tf.shape(proto)[0]) != 1:
        raise ValueError("postprocess handles one image: slice the batch (e.g. {k: v[i:i+1]}) first")
    n = int(detections["num_detections"][0])
    scores = detections["scores"][0, :n].numpy()
    keep = np.nonzero(scores > score_threshold)[0] if score_threshold > 0 else np.arange(n)
    if max_detections is not None:
        keep = keep[:max_detections]
    sel = {k: tf.gather(detections[k][:, :n], keep, axis=1) for k in ("boxes", "classes", "scores", "coefs")}
    conv = to_output_convention(sel, category_ids)
    scale = tf.constant([height, width, height, width], tf.float32)
    pixels = tf.cast(tf.gather(conv["detection_boxes"][0] * scale, [1, 0, 3, 2], axis=-1), tf.int32)  # truncation
    if len(keep):
        binary = _binary_masks_fn(bool(crop_to_box))(tf.convert_to_tensor(proto, tf.float32), sel["coefs"],
                                                     sel["boxes"], tf.constant(int(height)), tf.constant(int(width)))
        binary = binary.numpy()[0].view(np.uint8)  # bool → 0/1 bytes without a copy
    else:
        binary = np.zeros([0, int(height), int(width)], np.uint8)
    out = {"boxes": pixels.numpy(), "classes": sel["classes"][0].numpy().astype(np.int32),
           "scores": scores[keep].astype(np.float32), "masks": binary}
    if "mask_scores" in detections:  # YOLACT++ re-scoring (yolact/maskiou.py): the mask AP's scores
        out["mask_scores"] = detections["mask_scores"][0, :n].numpy()[keep].astype(np.float32)
    if category_ids is not None:
        out["category_ids"] = conv["detection_classes"][0].numpy()
    return out


_MASK_FNS = {}


def _binary_masks_fn(crop_to_box: bool):
    """Cached tf.function: assemble_masks(...) > 0.5 as bool [B, D, height, width] (thresholded in the graph)."""
    if crop_to_box not in _MASK_FNS:
        def run(proto, coefs, boxes, height, width):
            return masks_lib.assemble_masks(proto, coefs, boxes, height, width, crop_to_box) > 0.5

        _MASK_FNS[crop_to_box] = tf.function(run, reduce_retracing=True)
    return _MASK_FNS[crop_to_box]


class DetectionGenerator(keras.layers.Layer):
    """The model's detection stage: decode ``loc`` against the anchors, NMS, mask assembly (no weights).

    In the spirit of TF Model Garden's ``DetectionGenerator`` and keras-hub's ``prediction_decoder``: a
    :class:`yolact.model.Yolact` holds one as ``model.detection_generator`` (swappable) and ``model.detect(images)``
    runs the network and this layer. Output shapes are fixed (D = ``cfg.detection.max_num_detection`` rows, padding
    rows zero); the Fast NMS variants compile with XLA.

    original: layers/functions/detection.py Detect + layers/output_utils.py postprocess (masks).

    Args:
      cfg: a ``YolactConfig`` (``cfg.detection``: thresholds, top_k, D, default nms_type; ``cfg.model.img_size``;
        the anchors are ``make_anchors(cfg)``, the same as ``model.anchors``).
      nms_type: 'fast' (per class), 'cross_class' or 'traditional' (see :func:`fast_nms` ...); default
        ``cfg.detection.nms_type``.
      jit: XLA-compile the NMS; default True for the Fast NMS variants (about twice as fast as the plain graph on CPU
        too), False for 'traditional' (no XLA kernel).

    Raises:
      ValueError: unknown ``nms_type`` or ``jit=True`` with traditional NMS.
    """

    def __init__(self, cfg, nms_type: Optional[str] = None, jit: Optional[bool] = None, **kwargs):
        kwargs.setdefault("name", "detection_generator")
        kwargs.setdefault("dtype", "float32")  # never autocast the NMS inputs under a mixed-precision policy
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.cfg = cfg
        self.nms_type = nms_type or cfg.detection.nms_type
        self.jit = (self.nms_type != "traditional") if jit is None else bool(jit)
        self._nms = detect_fn(cfg, self.nms_type, self.jit)
        self._anchors_np = make_anchors(cfg)

    @property
    def anchors(self) -> tf.Tensor:
        """float32 [N, 4] relative ``[cx, cy, w, h]``."""
        return tf.constant(self._anchors_np)

    @property
    def max_num_detection(self) -> int:
        return self.cfg.detection.max_num_detection

    def nms(self, outputs, anchors=None) -> Dict[str, tf.Tensor]:
        """Decode + NMS: :func:`detect`'s result (``boxes``, ``classes``, ``scores``, ``coefs``, ``num_detections``)
        for network outputs ``loc`` / ``conf`` / ``mask``; ``anchors`` default: this layer's."""
        return self._nms(*_check_outputs(outputs, self.anchors if anchors is None else anchors))

    def call(self, outputs, anchors=None, output_size: Optional[Sequence] = None, crop_to_box: bool = True):
        """Network outputs → detections with masks.

        Args:
          outputs: dict ``loc`` [B,N,4], ``conf`` [B,N,C], ``mask`` [B,N,K], ``proto`` [B,Hp,Wp,K] (float32,
            :class:`yolact.model.Yolact`'s raw outputs).
          anchors: float32 [N,4] relative ``[cx, cy, w, h]``; default this layer's.
          output_size: ``(height, width)`` in pixels (ints or scalar tensors) to upsample the masks to (the
            original image); None keeps them at prototype resolution [Hp, Wp].
          crop_to_box: zero each mask outside its box padded by one prototype pixel (the original's default).

        Returns:
          :func:`detect`'s dict plus ``masks`` float32 [B,D,H,W] (or [B,D,Hp,Wp]) probabilities, ``> 0.5`` is the
          binary mask; rows past ``num_detections`` are zero.
        """
        dets = self.nms(outputs, anchors)
        height, width = (None, None) if output_size is None else output_size
        probs = masks_lib.assemble_masks(tf.convert_to_tensor(outputs["proto"], tf.float32), dets["coefs"],
                                         dets["boxes"], height, width, crop_to_box)
        valid = tf.sequence_mask(dets["num_detections"], self.max_num_detection, tf.float32)
        return {**dets, "masks": probs * valid[:, :, None, None]}

    def postprocess(self, detections, proto, height: int, width: int, **kwargs) -> Dict[str, np.ndarray]:
        """One image's detections (:meth:`nms` output, batch of one) as numpy at (height, width): :func:`postprocess`
        (keyword arguments ``score_threshold``, ``max_detections``, ``crop_to_box``, ``category_ids``)."""
        return postprocess(detections, proto, height, width, **kwargs)

    def get_config(self):
        return {**super().get_config(), "nms_type": self.nms_type, "jit": self.jit}


__all__ = ["NMS_TYPES", "fast_nms", "cross_class_fast_nms", "traditional_nms", "detect", "detect_fn", "default_jit",
           "to_output_convention", "postprocess", "DetectionGenerator"]
