"""The YOLACT network as a subclassed ``keras.Model``.

original: yolact.py Yolact (forward, freeze_bn). Usage::

    from config import get_config
    from yolact.model import Yolact, build_model
    model = Yolact(get_config("yolact_resnet50"))         # unbuilt
    model = build_model(get_config("yolact_resnet50"))    # built on a dummy batch, ready for load_weights
    out = model(images, training=False)                   # dict loc, conf, mask, proto, segm (float32)
    model.anchors                                         # float32 [N, 4] relative cx, cy, w, h
    dets = model.detect(images)                           # decode + NMS + masks (+ YOLACT++ re-scoring)
    dets = model.predict(images)                          # the same, batched by Keras (numpy)
    model.maskiou_net                                     # YOLACT++ FastMaskIoUNet (None without use_maskiou)
    Yolact.from_config(model.get_config())                # the same architecture, new weights
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from yolact.detection import DetectionGenerator
from yolact.ops.anchors import make_anchors
from yolact.backbones import build_backbone
from yolact.backbones.layers import set_bn_frozen
from yolact.fpn import FPN
from yolact.head import PredictionHead, semantic_seg_conv
from yolact.maskiou import FastMaskIoUNet
from yolact.protonet import ProtoNet

FEATURE_KEYS = ("C3", "C4", "C5", "P3", "P4", "P5", "P6", "P7")
OUTPUT_KEYS = ("loc", "conf", "mask", "proto", "segm")
# The original freezes BN when batch_size // num_gpus < 6 (train.py, module level).
AUTO_FREEZE_BELOW = 6


def should_freeze_bn(cfg, per_replica_batch: int) -> bool:
    """Whether BatchNorm must be frozen for training: ``cfg.model.freeze_bn`` True/False, or 'auto' = batch < 6.

    Args:
      cfg: a YolactConfig.
      per_replica_batch: images per replica (global batch // replicas).

    Raises:
      ValueError: ``cfg.model.freeze_bn`` is neither a bool nor 'auto'.
    """
    policy = cfg.model.freeze_bn
    if isinstance(policy, bool):
        return policy
    if policy == "auto":
        return int(per_replica_batch) < AUTO_FREEZE_BELOW
    raise ValueError(f"model.freeze_bn must be True, False or 'auto', got {policy!r}")


class Yolact(keras.Model):
    """YOLACT: backbone -> FPN P3..P7 -> shared head per level + protonet on P3 + semantic conv on P3.

    Args:
      cfg: a YolactConfig (backbone, img_size, fpn_channels, num_mask, num_classes, anchors).
      freeze_bn: True freezes every backbone BatchNorm (inference mode, gamma/beta not trainable), as the
        original's ``Yolact.freeze_bn``; False trains them. None takes ``cfg.model.freeze_bn`` when it is a bool and
        leaves BN trainable for 'auto' (train.py decides with :func:`should_freeze_bn` and calls
        :meth:`set_bn_frozen`).

    Call ``model(images, training=None, return_features=False)``:
      images: float [B, H, W, 3], normalized RGB ``(x - mean_rgb) / std_rgb``, (H, W) = ``cfg.input_size`` (S x S
        for a square ``cfg.model.img_size`` S).
      Returns a dict of float32 tensors (also under a mixed-precision policy):
        ``loc`` [B, N, 4] encoded box offsets, ``conf`` [B, N, C] class logits (0 = background),
        ``mask`` [B, N, K] tanh coefficients, ``proto`` [B, Hp, Wp, K] ReLU prototypes,
        ``segm`` [B, H3, W3, C - 1] semantic logits; with ``return_features`` also ``C3``..``C5``, ``P3``..``P7``.
      Row n of loc/conf/mask belongs to ``model.anchors[n]``.

    ``model.maskiou_net``: with ``cfg.model.use_maskiou`` (YOLACT++) a built :class:`yolact.maskiou.FastMaskIoUNet`
    (input [n, Hp, Wp, 1]); not run by ``call`` (as in the original): the loss (``I``) and the re-scoring of the
    detections (:func:`yolact.maskiou.predict_mask_iou`) call it. None otherwise.

    Raises (at call):
      ValueError: the input size differs from ``cfg.input_size``, or the FPN level sizes differ from
        ``cfg.feature_map_shapes()`` (then the anchors would not line up with the predictions).
    """

    def __init__(self, cfg, freeze_bn=None, **kwargs):
        if isinstance(cfg, dict):  # from_config
            from config import from_dict

            cfg = from_dict(cfg)
        kwargs.setdefault("name", cfg.name)
        super().__init__(**kwargs)
        self.cfg = cfg
        m = cfg.model
        self.backbone = build_backbone(cfg)
        self.fpn = FPN(m.fpn_channels, name="fpn")
        self.proto_net = ProtoNet(m.fpn_channels, m.num_mask, name="proto_net")
        self.head = PredictionHead(
            m.num_classes, cfg.anchors.num_anchors_per_location, m.num_mask, m.fpn_channels, name="prediction_head"
        )
        self.semantic_seg_conv = semantic_seg_conv(m.num_classes)
        self._anchors_np = make_anchors(cfg)
        self.maskiou_net = None
        if m.use_maskiou:
            self.maskiou_net = FastMaskIoUNet(m.num_classes, m.maskiou_channels, name="maskiou_net")
            with keras.name_scope(self.name, caller=self):  # variable paths under the model, as the called layers
                self.maskiou_net.build((None, *m.proto_output_shape, 1))
        if freeze_bn is None:
            freeze_bn = m.freeze_bn if isinstance(m.freeze_bn, bool) else False
        self.set_bn_frozen(bool(freeze_bn))
        self.detection_generator = DetectionGenerator(cfg)

    @property
    def detection_generator(self) -> DetectionGenerator:
        """The detection stage used by :meth:`detect` (a :class:`yolact.detection.DetectionGenerator`, no weights);
        assign another one to change the NMS (e.g. ``DetectionGenerator(cfg, nms_type="traditional")``). It is not
        tracked as a sub-layer, so weight files and checkpoints are the same with any generator."""
        return self._detection_generator

    def __setattr__(self, name, value):
        if name == "detection_generator":  # bypass Keras tracking: no weights, not a sub-layer of the network
            object.__setattr__(self, "_detection_generator", value)
        else:
            super().__setattr__(name, value)

    def detect(self, images, output_size=None, crop_to_box: bool = True, detection_generator=None):
        """Inference: the network in inference mode, then the detection stage (decode, NMS, masks, YOLACT++
        re-scoring). The one path from network outputs to detections of every inference form.

        Args:
          images: float32 [B, S, S, 3] normalized (``yolact.ops.preprocess.normalize`` of the resized image).
          output_size: ``(height, width)`` to upsample the masks to; None: prototype resolution [Hp, Wp].
          crop_to_box: see :meth:`yolact.detection.DetectionGenerator.call`.
          detection_generator: the stage to use instead of :attr:`detection_generator` (e.g. one without XLA for
            an export); the model is not changed.

        Returns:
          :meth:`yolact.detection.DetectionGenerator.call`'s dict: ``boxes`` float32 [B,D,4] relative ``[x1, y1,
          x2, y2]``, ``classes`` int32 [B,D] 0-based, ``scores`` float32 [B,D], ``coefs`` [B,D,K],
          ``num_detections`` int32 [B], ``masks`` float32 [B,D,H,W] probabilities; YOLACT++ also ``mask_scores`` /
          ``mask_iou`` [B, D] (``scores`` stay box scores).
        """
        generator = detection_generator or self.detection_generator
        out = self(images, training=False)
        return generator(out, maskiou_net=self.maskiou_net, output_size=output_size, crop_to_box=crop_to_box)

    def predict_step(self, data):
        """``model.predict(images)``: :meth:`detect` on each batch (normalized float32 [B, S, S, 3]), masks at
        prototype resolution; the detection dict, as keras-hub's object detectors return."""
        images = data[0] if isinstance(data, (tuple, list)) else data
        return self.detect(images)

    def get_config(self):
        """Everything :meth:`from_config` needs: the full config (``config.to_dict``) and the BatchNorm state."""
        from config import to_dict

        return {"cfg": to_dict(self.cfg), "freeze_bn": self.bn_frozen, "name": self.name}

    @classmethod
    def from_config(cls, config):
        """A new (unbuilt, freshly initialised) model with :meth:`get_config`'s architecture."""
        return cls(**config)

    @property
    def anchors(self):
        """float32 [N, 4] anchors, relative ``[cx, cy, w, h]``, in the prediction rows' order."""
        return tf.constant(self._anchors_np)

    @property
    def bn_frozen(self) -> bool:
        return self._bn_frozen

    def set_bn_frozen(self, frozen: bool):
        """Freeze / unfreeze every backbone BatchNorm (retrace any tf.function using the model afterwards)."""
        set_bn_frozen(self.backbone.batch_norm_layers(), frozen)
        self._bn_frozen = bool(frozen)

    def _check_sizes(self, images, levels):
        in_h, in_w = self.cfg.input_size
        h, w = images.shape[1], images.shape[2]
        if (h is not None and h != in_h) or (w is not None and w != in_w):
            raise ValueError(f"input images are {h}x{w} but config {self.cfg.name!r} expects {in_h}x{in_w}")
        if self.cfg.model.is_square:  # the message square configs always gave
            expected, actual = tuple(self.cfg.feature_map_sizes()), tuple(level.shape[1] for level in levels)
            what = "sides", "cfg.feature_map_sizes()"
        else:
            expected = tuple(self.cfg.feature_map_shapes())
            actual = tuple((level.shape[1], level.shape[2]) for level in levels)
            what = "sizes", "cfg.feature_map_shapes()"
        if None not in tf.nest.flatten(actual) and actual != expected:
            raise ValueError(
                f"FPN level {what[0]} {actual} differ from {what[1]} {expected} for backbone "
                f"{self.cfg.model.backbone!r} at {self.cfg.img_size_text}: the anchors would not match the "
                "predictions"
            )

    def call(self, images, training=None, return_features=False):
        c3, c4, c5 = self.backbone(images, training=training)
        levels = self.fpn((c3, c4, c5))
        self._check_sizes(images, levels)
        proto = self.proto_net(levels[0])
        preds = [self.head(level) for level in levels]
        out = {
            "loc": keras.ops.concatenate([p[0] for p in preds], axis=1),
            "conf": keras.ops.concatenate([p[1] for p in preds], axis=1),
            "mask": keras.ops.concatenate([p[2] for p in preds], axis=1),
            "proto": proto,
            "segm": self.semantic_seg_conv(levels[0]),
        }
        if return_features:
            out.update(zip(FEATURE_KEYS, (c3, c4, c5) + tuple(levels)))
        return {k: keras.ops.cast(v, "float32") for k, v in out.items()}

    def torch_weight_map(self):
        """[(original state_dict prefix, keras layer)] for every layer with weights, in the original's naming."""
        return (
            self.backbone.torch_weight_map("backbone.")
            + self.fpn.torch_weight_map("fpn.")
            + self.proto_net.torch_weight_map("proto_net.")
            + self.head.torch_weight_map("prediction_layers.0.")
            + [("semantic_seg_conv", self.semantic_seg_conv)]
            + ([] if self.maskiou_net is None else self.maskiou_net.torch_weight_map("maskiou_net."))
        )


def build_model(cfg, freeze_bn=None, weights=None):
    """A built :class:`Yolact` (called once on a zero batch [1, H, W, 3]), optionally loading ``weights``.

    Args:
      cfg: a YolactConfig.
      freeze_bn: see :class:`Yolact`.
      weights: optional path to a ``.weights.h5`` written by ``model.save_weights`` / utils/convert_weights.py.

    Raises:
      ValueError: the model's level sides disagree with the config (see :class:`Yolact`).
      FileNotFoundError: ``weights`` does not exist.
    """
    model = Yolact(cfg, freeze_bn=freeze_bn)
    model(np.zeros((1, *cfg.input_size, 3), np.float32), training=False)
    if weights is not None:
        if not tf.io.gfile.exists(str(weights)):
            raise FileNotFoundError(f"weights file not found: {weights}")
        model.load_weights(str(weights))
    return model


def checkpoint_variables(model) -> dict:
    """The model's variables keyed by a stable name, for ``tf.train.Checkpoint(model_variables=...)``.

    Keras 3 layers held in lists are not tracked by ``tf.train.Checkpoint(model=model)`` (only a handful of
    directly held variables would be saved), so training checkpoints list every variable explicitly. The key is
    the variable's path without the model's own (instance-numbered) name, ``/`` replaced by ``.``, e.g.
    ``backbone.conv_stem.kernel``; it does not depend on BatchNorm being frozen. Random-generator states of
    drop-connect layers (``seed_generator*``) are not weights and are left out.

    Raises:
      ValueError: two variables map to the same key.
    """
    out = {}
    for v in model.variables:
        parts = v.path.split("/")
        if parts[0].startswith("seed_generator") or "seed_generator_state" in parts[-1]:
            continue
        key = ".".join(parts[1:]) if len(parts) > 1 else parts[0]
        if key in out:
            raise ValueError(f"two model variables share the checkpoint key {key!r}")
        out[key] = v
    return out
