"""YOLACT training losses: OHEM confidence, smooth-L1 box, lincomb mask, semantic segmentation and (YOLACT++) mask IoU.

original: layers/modules/multibox_loss.py MultiBoxLoss (shared/docs/yolact_reference.md §7).

Everything is fixed-shape graph code (XLA friendly): ground truth is padded to ``M = cfg.parser.num_max_pad`` with
``num_obj`` valid rows, and at most ``cfg.loss.masks_to_train`` positives per image enter the mask loss.

Distribution: the original divides B, C and M by the positives of the WHOLE batch and S by the batch size. Under
``tf.distribute`` each replica calls :func:`loss_sums` on its shard, all-reduces ``num_pos`` and the batch size,
and calls :func:`normalize_losses` with the global values; the per-replica losses then sum (as the gradients do)
to the exact global loss. :func:`yolact_loss` is the single-replica shortcut.

YOLACT++ (``cfg.model.use_maskiou``): the loss ``I`` trains the FastMaskIoUNet (yolact/maskiou.py, pass
``maskiou_net=model.maskiou_net``) on the same ``masks_to_train`` positives as ``M``; without mask IoU ``I`` is 0.
"""

from __future__ import annotations

from typing import Dict, Optional

import tensorflow as tf

from yolact.masks import crop

LOSS_KEYS = ("B", "C", "M", "S", "I")


@tf.custom_gradient
def _bce_clamped(p, y):
    """PyTorch ``F.binary_cross_entropy(p, y, reduction='none')``: log terms clamped at -100.

    Forward ``-(y·max(log p, -100) + (1-y)·max(log(1-p), -100))``; backward as PyTorch's
    ``(p - y) / max(p·(1-p), 1e-12)``, which stays finite at p = 0 or 1 (cropped-out pixels).
    """
    log_p = tf.maximum(tf.math.log(p), -100.0)
    log_1mp = tf.maximum(tf.math.log(1.0 - p), -100.0)
    loss = -(y * log_p + (1.0 - y) * log_1mp)

    def grad(upstream):
        return upstream * (p - y) / tf.maximum(p * (1.0 - p), 1e-12), tf.zeros_like(y)

    return loss, grad


@tf.custom_gradient
def _torch_sigmoid(x):
    """float32 sigmoid computed as PyTorch's CPU kernel does, ``1 / (1 + exp(-x))``.

    It saturates to exactly 1.0 for x above ~16.6 (where ``tf.sigmoid`` does not), which matters with the
    BCE clamp: a saturated pixel with GT 0 costs exactly 100 in the original. The gradient is ``p·(1 − p)``
    (PyTorch's sigmoid backward), finite where ``exp(-x)`` overflows.
    """
    p = 1.0 / (1.0 + tf.exp(-x))

    def grad(upstream):
        return upstream * p * (1.0 - p)

    return p, grad


def _box_loss(loc, loc_t, pos):
    """Smooth-L1 (beta 1) summed over the 4 coordinates of every positive; [B] per image."""
    diff = tf.abs(loc - loc_t)
    sl1 = tf.where(diff < 1.0, 0.5 * diff * diff, diff - 0.5)
    return tf.reduce_sum(tf.reduce_sum(sl1, axis=-1) * tf.cast(pos, loc.dtype), axis=-1)


def _ohem_conf_loss(conf, cls_t, pos, neg_pos_ratio):
    """OHEM softmax cross-entropy over positives + hardest negatives, summed per image; [B].

    original: MultiBoxLoss.ohem_conf_loss. Negatives are ranked by ``logsumexp(conf) − conf[..., 0]`` with
    positives and neutrals zeroed; ``num_neg = min(ratio·num_pos_i, N − 1)`` per image. The selection has no
    gradient.
    """
    n = tf.shape(conf)[1]
    neutral = cls_t < 0
    sg = tf.stop_gradient(conf)
    rank_score = tf.reduce_logsumexp(sg, axis=-1) - sg[..., 0]
    rank_score = tf.where(pos | neutral, tf.zeros_like(rank_score), rank_score)
    order = tf.argsort(rank_score, axis=1, direction="DESCENDING", stable=True)
    rank = tf.argsort(order, axis=1, stable=True)  # rank of each anchor, 0 = hardest
    num_pos = tf.reduce_sum(tf.cast(pos, tf.int32), axis=1, keepdims=True)
    num_neg = tf.minimum(neg_pos_ratio * num_pos, n - 1)
    neg = (rank < num_neg) & tf.logical_not(pos) & tf.logical_not(neutral)
    selected = tf.stop_gradient(tf.cast(pos | neg, conf.dtype))
    labels = tf.maximum(cls_t, 0)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=conf)
    return tf.reduce_sum(ce * selected, axis=1)


def _sample_positives(pos, max_masks, seed):
    """Indices of at most ``max_masks`` positives per image, a uniformly random subset when there are more.

    Returns ``(index int32 [B, P], valid bool [B, P], scale float32 [B])`` with P = min(max_masks, N) and
    ``scale = old_count / kept_count`` (1 when nothing was dropped), as the original's torch.randperm branch.
    """
    shape = tf.shape(pos)
    if seed is None:
        noise = tf.random.uniform(shape, dtype=tf.float32)
    else:
        noise = tf.random.stateless_uniform(shape, seed=seed, dtype=tf.float32)
    # Positives get keys in [1, 2), others in [0, 1): top_k keeps positives first, in random order.
    keys = noise + tf.cast(pos, tf.float32)
    k = tf.minimum(max_masks, shape[1])
    _, index = tf.math.top_k(keys, k=k, sorted=False)
    valid = tf.gather(pos, index, batch_dims=1)
    old = tf.reduce_sum(tf.cast(pos, tf.float32), axis=1)
    kept = tf.reduce_sum(tf.cast(valid, tf.float32), axis=1)
    scale = tf.where(old > kept, old / tf.maximum(kept, 1.0), tf.ones_like(old))
    return index, valid, scale


def _smooth_l1(diff):
    """PyTorch smooth_l1 (beta 1) of a difference, elementwise."""
    diff = tf.abs(diff)
    return tf.where(diff < 1.0, 0.5 * diff * diff, diff - 0.5)


def selected_mask_losses(proto, coef, index, valid, scale, idx_t, gt_boxes, gt_masks, gt_classes, loss_cfg,
                         maskiou_net=None):
    """Mask loss ``M`` and mask-IoU loss ``I`` of chosen positives, before normalisation; ([B], [B]).

    original: MultiBoxLoss.lincomb_mask_loss (mask_proto_crop, binarized GT, emulated ROI normalisation) and
    mask_iou_loss. Per chosen positive p with matched GT g (box b_g, binary mask t_g at prototype size):
    ``pred_p = crop(sigmoid(proto @ coef_p), b_g, 1 px)``;
    ``M += Σ BCE(pred_p, t_g) / (gw·Wp) / (gh·Hp) · Hp·Wp · scale`` (then × mask_alpha / (Hp·Wp) by the caller);
    if ``maskiou_net`` is given and ``Σ t_g > loss_cfg.discard_mask_area`` (always when that is <= 0):
    ``I += smooth_l1(maskiou_net(pred_p)[class_g], IoU(pred_p > 0.5, t_g)) · loss_weight_maskiou`` -- the net sees
    the continuous crop (the gradient reaches proto and coef), the IoU target has no gradient, and unlike ``M``
    ``I`` is not rescaled by ``scale``. Deliberate difference: a sample whose prediction and GT are both empty
    (possible only with discard_mask_area <= 0) gets target 0 where the original divides 0 by 0 (NaN).

    Args:
      proto: float32 [B, Hp, Wp, K]; coef: float32 [B, N, K] tanh coefficients.
      index: int32 [B, P] anchor indices of the chosen positives; valid: bool [B, P] (False = padding row).
      scale: float32 [B], ``old_num_pos / kept`` (1 when nothing was dropped).
      idx_t: int32 [B, N] matched GT row per anchor; gt_boxes: float32 [B, M, 4] relative ``[x1, y1, x2, y2]``;
      gt_masks: float32 [B, M, Hp, Wp] binary; gt_classes: int32 [B, M] class channel 1..C-1.
      loss_cfg: ``cfg.loss``.
      maskiou_net: ``model.maskiou_net`` or None (then ``I`` is zeros).

    Returns:
      (M per image float32 [B], I per image float32 [B]).
    """
    hp = tf.cast(tf.shape(proto)[1], tf.float32)
    wp = tf.cast(tf.shape(proto)[2], tf.float32)
    sel_coef = tf.gather(coef, index, batch_dims=1)  # [B, P, K]
    sel_gt = tf.gather(idx_t, index, batch_dims=1)  # [B, P]
    boxes = tf.gather(gt_boxes, sel_gt, batch_dims=1)  # [B, P, 4]
    target = tf.gather(gt_masks, sel_gt, batch_dims=1)  # [B, P, Hp, Wp]
    logits = tf.einsum("bhwk,bpk->bphw", proto, sel_coef)
    cropped = crop(_torch_sigmoid(logits), boxes, padding=1.0)  # the one crop (yolact/masks.py)
    pred = tf.clip_by_value(cropped, 0.0, 1.0)
    per_pixel = _bce_clamped(pred, target)
    gw = (boxes[..., 2] - boxes[..., 0]) * wp
    gh = (boxes[..., 3] - boxes[..., 1]) * hp
    validf = tf.cast(valid, tf.float32)
    # Padding rows are replaced before dividing so that they can never produce inf * 0.
    gw = tf.where(valid, gw, tf.ones_like(gw))
    gh = tf.where(valid, gh, tf.ones_like(gh))
    per_instance = tf.reduce_sum(per_pixel, axis=[2, 3]) / gw / gh * (hp * wp)
    per_instance = tf.where(valid, per_instance, tf.zeros_like(per_instance))
    m = tf.reduce_sum(per_instance * validf, axis=1) * scale
    if maskiou_net is None:
        return m, tf.zeros_like(m)

    gt_area = tf.reduce_sum(target, axis=[2, 3])  # [B, P]
    use = valid & (gt_area > loss_cfg.discard_mask_area) if loss_cfg.discard_mask_area > 0 else valid
    binary = tf.stop_gradient(tf.cast(cropped > 0.5, tf.float32))
    inter = tf.reduce_sum(binary * target, axis=[2, 3])
    union = tf.reduce_sum(binary, axis=[2, 3]) + gt_area - inter
    iou_t = tf.where(union > 0, inter / tf.maximum(union, 1.0), tf.zeros_like(union))
    labels = tf.maximum(tf.gather(gt_classes, sel_gt, batch_dims=1) - 1, 0)  # 0-based class, [B, P]
    shape = tf.shape(cropped)
    net_in = tf.reshape(cropped, [shape[0] * shape[1], shape[2], shape[3], 1])
    per_class = tf.reshape(tf.cast(maskiou_net(net_in), tf.float32), [shape[0], shape[1], -1])
    iou_p = tf.gather(per_class, labels, batch_dims=2)  # [B, P]
    per_sample = tf.where(use, _smooth_l1(iou_p - iou_t), tf.zeros_like(iou_p))
    return m, tf.reduce_sum(per_sample, axis=1) * loss_cfg.loss_weight_maskiou


def _semantic_loss(segm, segm_t):
    """Sigmoid BCE-with-logits summed over classes and pixels, ÷ (H3·W3); [B]."""
    h3 = tf.cast(tf.shape(segm)[1], tf.float32)
    w3 = tf.cast(tf.shape(segm)[2], tf.float32)
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=segm_t, logits=segm)
    return tf.reduce_sum(bce, axis=[1, 2, 3]) / h3 / w3


def loss_sums(outputs: Dict[str, tf.Tensor], targets: Dict[str, tf.Tensor], cfg, seed=None,
              maskiou_net=None) -> Dict[str, tf.Tensor]:
    """Weighted, un-normalized loss sums of one (per-replica) batch.

    Args:
      outputs: the model's dict (cast to float32 here): ``loc`` [B,N,4], ``conf`` [B,N,C] logits, ``mask``
        [B,N,K] tanh coefficients, ``proto`` [B,Hp,Wp,K], ``segm`` [B,H3,W3,C−1] logits.
      targets: the parser's dict (docs/architecture.md): ``cls_t`` int32 [B,N] (−1 neutral, 0 background,
        1..C−1), ``loc_t`` [B,N,4] encoded, ``idx_t`` int32 [B,N], ``gt_boxes`` [B,M,4] relative
        ``[x1, y1, x2, y2]``, ``gt_masks`` [B,M,Hp,Wp] binary, ``segm_t`` [B,H3,W3,C−1], ``gt_classes`` [B,M]
        class channel (YOLACT++ only; ``num_obj`` is not needed: padding rows are never indexed by a positive).
      cfg: a YolactConfig (uses ``cfg.loss``).
      seed: optional int32 [2] for the stateless random choice of ``masks_to_train`` positives (deterministic,
        e.g. ``[seed, step]``); None uses the stateful global generator.
      maskiou_net: ``model.maskiou_net``; required when ``cfg.model.use_maskiou`` (YOLACT++), ignored otherwise.

    Returns:
      dict of float32 scalars: ``B``, ``C``, ``M``, ``S``, ``I`` (weighted sums: B × loss_weight_box, C ×
      loss_weight_cls, M × loss_weight_mask / (Hp·Wp), S × loss_weight_seg / (H3·W3), I × loss_weight_maskiou,
      0 without mask IoU), ``num_pos`` (positives of this batch) and ``batch_size``.

    Raises:
      ValueError: ``cfg.model.use_maskiou`` without ``maskiou_net``.
    """
    lc = cfg.loss
    if cfg.model.use_maskiou and maskiou_net is None:
        raise ValueError(f"config {cfg.name!r} trains a mask-IoU net: pass maskiou_net=model.maskiou_net")
    if not cfg.model.use_maskiou:
        maskiou_net = None
    f32 = lambda t: tf.cast(t, tf.float32)  # noqa: E731
    loc, conf, coef, proto = f32(outputs["loc"]), f32(outputs["conf"]), f32(outputs["mask"]), f32(outputs["proto"])
    cls_t = tf.cast(targets["cls_t"], tf.int32)
    idx_t = tf.cast(targets["idx_t"], tf.int32)
    pos = cls_t > 0
    hp = tf.cast(tf.shape(proto)[1], tf.float32)
    wp = tf.cast(tf.shape(proto)[2], tf.float32)

    b = tf.reduce_sum(_box_loss(loc, f32(targets["loc_t"]), pos)) * lc.loss_weight_box
    c = tf.reduce_sum(_ohem_conf_loss(conf, cls_t, pos, lc.neg_pos_ratio)) * lc.loss_weight_cls
    index, valid, scale = _sample_positives(pos, lc.masks_to_train, seed)
    gt_classes = targets["gt_classes"] if maskiou_net is not None else tf.zeros_like(targets["gt_boxes"][..., 0])
    m_per_image, i_per_image = selected_mask_losses(
        proto, coef, index, valid, scale, idx_t, f32(targets["gt_boxes"]), f32(targets["gt_masks"]),
        tf.cast(gt_classes, tf.int32), lc, maskiou_net,
    )
    m = tf.reduce_sum(m_per_image) * lc.loss_weight_mask / hp / wp
    if lc.use_semantic_segmentation_loss:
        s = tf.reduce_sum(_semantic_loss(f32(outputs["segm"]), f32(targets["segm_t"]))) * lc.loss_weight_seg
    else:
        s = tf.zeros([], tf.float32)
    return {
        "B": b,
        "C": c,
        "M": m,
        "S": s,
        "I": tf.reduce_sum(i_per_image),
        "num_pos": tf.reduce_sum(tf.cast(pos, tf.float32)),
        "batch_size": tf.cast(tf.shape(cls_t)[0], tf.float32),
    }


def normalize_losses(sums: Dict[str, tf.Tensor], total_num_pos, batch_size) -> Dict[str, tf.Tensor]:
    """Divide B, C, M, I by the batch's positives and S by the batch size; add ``total``.

    ``total_num_pos`` and ``batch_size`` are those of the GLOBAL batch under distribution (all-reduced). A batch
    without positives gives B = C = M = 0 (the original divides by zero and gets NaN; the step would be skipped).
    Returns float32 scalars ``B``, ``C``, ``M``, ``S``, ``I``, ``total`` (``I`` 0 when ``sums`` has none).
    """
    denom = tf.maximum(tf.cast(total_num_pos, tf.float32), 1.0)
    out = {k: sums[k] / denom for k in ("B", "C", "M")}
    out["I"] = sums.get("I", tf.zeros([], tf.float32)) / denom
    out["S"] = sums["S"] / tf.cast(batch_size, tf.float32)
    out["total"] = out["B"] + out["C"] + out["M"] + out["S"] + out["I"]
    return out


def yolact_loss(outputs, targets, cfg, seed: Optional[tf.Tensor] = None, maskiou_net=None) -> Dict[str, tf.Tensor]:
    """The original's MultiBoxLoss on one batch (no distribution): dict ``B, C, M, S, I, total`` float32 scalars.

    See :func:`loss_sums` for the inputs. original: layers/modules/multibox_loss.py MultiBoxLoss.forward.
    """
    sums = loss_sums(outputs, targets, cfg, seed=seed, maskiou_net=maskiou_net)
    return normalize_losses(sums, sums["num_pos"], sums["batch_size"])


__all__ = ["yolact_loss", "loss_sums", "normalize_losses", "selected_mask_losses", "LOSS_KEYS"]
