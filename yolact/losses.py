"""YOLACT training losses: OHEM confidence, smooth-L1 box, lincomb mask and semantic segmentation.

original: layers/modules/multibox_loss.py MultiBoxLoss (shared/docs/yolact_reference.md §7).

Everything is fixed-shape graph code (XLA friendly): ground truth is padded to ``M = cfg.parser.num_max_pad`` with
``num_obj`` valid rows, and at most ``cfg.loss.masks_to_train`` positives per image enter the mask loss.

Distribution: the original divides B, C and M by the positives of the WHOLE batch and S by the batch size. Under
``tf.distribute`` each replica calls :func:`loss_sums` on its shard, all-reduces ``num_pos`` and the batch size,
and calls :func:`normalize_losses` with the global values; the per-replica losses then sum (as the gradients do)
to the exact global loss. :func:`yolact_loss` is the single-replica shortcut.
"""

from __future__ import annotations

from typing import Dict, Optional

import tensorflow as tf

from yolact.masks import crop

LOSS_KEYS = ("B", "C", "M", "S")


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


def _mask_loss(proto, coef, pos, idx_t, gt_boxes, gt_masks, max_masks, seed):
    """Lincomb mask loss before ``mask_alpha / (Hp·Wp)``, summed per image; [B].

    original: MultiBoxLoss.lincomb_mask_loss with mask_proto_crop, binarized GT and emulated ROI normalisation:
    per instance ``Σ BCE(crop(sigmoid(proto @ coefᵀ), gt_box, 1), gt) / (gw·Wp) / (gh·Hp) · Hp·Wp``.
    """
    hp = tf.cast(tf.shape(proto)[1], tf.float32)
    wp = tf.cast(tf.shape(proto)[2], tf.float32)
    index, valid, scale = _sample_positives(pos, max_masks, seed)
    sel_coef = tf.gather(coef, index, batch_dims=1)  # [B, P, K]
    sel_gt = tf.gather(idx_t, index, batch_dims=1)  # [B, P]
    boxes = tf.gather(gt_boxes, sel_gt, batch_dims=1)  # [B, P, 4]
    target = tf.gather(gt_masks, sel_gt, batch_dims=1)  # [B, P, Hp, Wp]
    logits = tf.einsum("bhwk,bpk->bphw", proto, sel_coef)
    pred = crop(_torch_sigmoid(logits), boxes, padding=1.0)  # the one crop (yolact/masks.py)
    pred = tf.clip_by_value(pred, 0.0, 1.0)
    per_pixel = _bce_clamped(pred, target)
    gw = (boxes[..., 2] - boxes[..., 0]) * wp
    gh = (boxes[..., 3] - boxes[..., 1]) * hp
    validf = tf.cast(valid, tf.float32)
    # Padding rows are replaced before dividing so that they can never produce inf * 0.
    gw = tf.where(valid, gw, tf.ones_like(gw))
    gh = tf.where(valid, gh, tf.ones_like(gh))
    per_instance = tf.reduce_sum(per_pixel, axis=[2, 3]) / gw / gh * (hp * wp)
    per_instance = tf.where(valid, per_instance, tf.zeros_like(per_instance))
    return tf.reduce_sum(per_instance * validf, axis=1) * scale


def _semantic_loss(segm, segm_t):
    """Sigmoid BCE-with-logits summed over classes and pixels, ÷ (H3·W3); [B]."""
    h3 = tf.cast(tf.shape(segm)[1], tf.float32)
    w3 = tf.cast(tf.shape(segm)[2], tf.float32)
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=segm_t, logits=segm)
    return tf.reduce_sum(bce, axis=[1, 2, 3]) / h3 / w3


def loss_sums(outputs: Dict[str, tf.Tensor], targets: Dict[str, tf.Tensor], cfg, seed=None) -> Dict[str, tf.Tensor]:
    """Weighted, un-normalized loss sums of one (per-replica) batch.

    Args:
      outputs: the model's dict (cast to float32 here): ``loc`` [B,N,4], ``conf`` [B,N,C] logits, ``mask``
        [B,N,K] tanh coefficients, ``proto`` [B,Hp,Wp,K], ``segm`` [B,H3,W3,C−1] logits.
      targets: the parser's dict (docs/architecture.md): ``cls_t`` int32 [B,N] (−1 neutral, 0 background,
        1..C−1), ``loc_t`` [B,N,4] encoded, ``idx_t`` int32 [B,N], ``gt_boxes`` [B,M,4] relative
        ``[x1, y1, x2, y2]``, ``gt_masks`` [B,M,Hp,Wp] binary, ``segm_t`` [B,H3,W3,C−1] (``gt_classes`` and
        ``num_obj`` are not needed: non-crowd padding rows are never indexed by a positive).
      cfg: a YolactConfig (uses ``cfg.loss``).
      seed: optional int32 [2] for the stateless random choice of ``masks_to_train`` positives (deterministic,
        e.g. ``[seed, step]``); None uses the stateful global generator.

    Returns:
      dict of float32 scalars: ``B``, ``C``, ``M``, ``S`` (weighted sums: B × loss_weight_box, C ×
      loss_weight_cls, M × loss_weight_mask / (Hp·Wp), S × loss_weight_seg / (H3·W3)), ``num_pos`` (positives
      of this batch) and ``batch_size``.
    """
    lc = cfg.loss
    f32 = lambda t: tf.cast(t, tf.float32)  # noqa: E731
    loc, conf, coef, proto = f32(outputs["loc"]), f32(outputs["conf"]), f32(outputs["mask"]), f32(outputs["proto"])
    cls_t = tf.cast(targets["cls_t"], tf.int32)
    idx_t = tf.cast(targets["idx_t"], tf.int32)
    pos = cls_t > 0
    hp = tf.cast(tf.shape(proto)[1], tf.float32)
    wp = tf.cast(tf.shape(proto)[2], tf.float32)

    b = tf.reduce_sum(_box_loss(loc, f32(targets["loc_t"]), pos)) * lc.loss_weight_box
    c = tf.reduce_sum(_ohem_conf_loss(conf, cls_t, pos, lc.neg_pos_ratio)) * lc.loss_weight_cls
    m_per_image = _mask_loss(
        proto, coef, pos, idx_t, f32(targets["gt_boxes"]), f32(targets["gt_masks"]), lc.masks_to_train, seed
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
        "num_pos": tf.reduce_sum(tf.cast(pos, tf.float32)),
        "batch_size": tf.cast(tf.shape(cls_t)[0], tf.float32),
    }


def normalize_losses(sums: Dict[str, tf.Tensor], total_num_pos, batch_size) -> Dict[str, tf.Tensor]:
    """Divide B, C, M by the batch's positives and S by the batch size; add ``total``.

    ``total_num_pos`` and ``batch_size`` are those of the GLOBAL batch under distribution (all-reduced). A batch
    without positives gives B = C = M = 0 (the original divides by zero and gets NaN; the step would be skipped).
    Returns float32 scalars ``B``, ``C``, ``M``, ``S``, ``total``.
    """
    denom = tf.maximum(tf.cast(total_num_pos, tf.float32), 1.0)
    out = {k: sums[k] / denom for k in ("B", "C", "M")}
    out["S"] = sums["S"] / tf.cast(batch_size, tf.float32)
    out["total"] = out["B"] + out["C"] + out["M"] + out["S"]
    return out


def yolact_loss(outputs, targets, cfg, seed: Optional[tf.Tensor] = None) -> Dict[str, tf.Tensor]:
    """The original's MultiBoxLoss on one batch (no distribution): dict ``B, C, M, S, total`` float32 scalars.

    See :func:`loss_sums` for the inputs. original: layers/modules/multibox_loss.py MultiBoxLoss.forward.
    """
    sums = loss_sums(outputs, targets, cfg, seed=seed)
    return normalize_losses(sums, sums["num_pos"], sums["batch_size"])


__all__ = ["yolact_loss", "loss_sums", "normalize_losses", "LOSS_KEYS"]
