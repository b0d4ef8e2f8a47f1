"""The YOLACT training task, in the style of TF Model Garden's tasks (official/vision/tasks/retinanet.py).

A task knows how to build the model, its optimizer and its inputs, how to compute the loss and how to run one
training or validation step; :class:`yolact.training.trainer.Trainer` drives it (strategy, checkpoints, resume,
callbacks). Subclass it to change one piece, e.g. ``compute_loss``. What reads files of a dataset is injected by
the caller (train.py): the training input (``input_fn``, data/parser.py) and the evaluation (``evaluate_fn``,
utils/coco_eval.py), so that yolact/ imports neither data/ nor a tool.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Optional

import keras
import tensorflow as tf

from yolact import torch_weights
from yolact.losses import LOSS_KEYS, loss_sums, normalize_losses
from yolact.training.options import OptionError, TrainOptions


class InitError(OptionError):
    """``-init`` names weights that do not exist, cannot be read or do not fit the model (one line, exit 2)."""


# The model fields two configs must share for one's weights to initialise the other (the class count may differ:
# see YolactTask.initialize).
ARCHITECTURE_FIELDS = ("backbone", "img_size", "fpn_channels", "num_mask")


def _shown(value, field_name: str) -> str:
    """A model field for a message: ``img_size`` as the flag takes it (``550``, ``384x672``)."""
    from config import format_img_size

    return format_img_size(value) if field_name == "img_size" else str(value)


def schedule_for(train_cfg):
    """The lr schedule of a resolved ``TrainConfig`` (values used as they are: autoscaling happened when the
    config was resolved, see yolact/training/options.py)."""
    from utils.lr_schedule import YolactLRSchedule

    return YolactLRSchedule(train_cfg.lr, train_cfg.lr_warmup_init, train_cfg.lr_warmup_until, train_cfg.lr_steps,
                            train_cfg.gamma)


class YolactTask:
    """Model, optimizer, inputs, loss and steps of YOLACT training.

    Args:
      cfg: the resolved YolactConfig (``cfg.train`` holds lr, momentum, weight decay, schedule, batch size).
      label_map: the dataset's LabelMap (class channels <-> category ids).
      options: the run's TrainOptions (init weights, clipping, validation, seed).
      input_fn: ``input_fn(cfg, global_batch_size, seed, shuffle, input_context) -> tf.data.Dataset`` of
        ``(images, targets)`` (data/parser.py ``train_dataset``); injected so that yolact/ does not import data/.
      log: one-line logger.
      evaluate_fn: ``evaluate_fn(predictor, *, tfrecord_pattern, annotations_file, max_images) -> dict`` (see
        :meth:`validation_step`): box and mask AP of a :class:`yolact.predictor.Predictor` on evaluation records
        (train.py passes one over utils/coco_eval.py ``evaluate_dataset``); injected so that yolact/ imports
        neither utils/coco_eval.py nor data/. None: no validation (:meth:`validation_step` raises).
    """

    def __init__(self, cfg, label_map, options: TrainOptions, input_fn: Callable, log: Callable = print,
                 evaluate_fn: Optional[Callable] = None):
        self.cfg = cfg
        self.label_map = label_map
        self.options = options
        self.input_fn = input_fn
        self.log = log
        self.evaluate_fn = evaluate_fn
        self.schedule = schedule_for(cfg.train)

    # -- building ------------------------------------------------------------------------------------------------
    def build_model(self, per_replica_batch: int) -> keras.Model:
        """A training Yolact; BatchNorm frozen when the per-replica batch is below 6 (original train.py)."""
        from yolact.model import build_model, should_freeze_bn

        freeze = should_freeze_bn(self.cfg, per_replica_batch)
        if freeze:
            self.log(f"Per-replica batch {per_replica_batch} < 6: BatchNorm frozen (as the original).")
        return build_model(self.cfg, freeze_bn=freeze)

    def initialize(self, model: keras.Model) -> None:
        """Load ``options.init`` into ``model``: a run folder (its latest checkpoint, else its newest
        ``.weights.h5``) or a ``.weights.h5``, whose folder's config.json must agree in architecture; or an
        original ``.pth`` / ``.npz`` (full YOLACT, or an ImageNet backbone), converted on the fly.

        Fine-tuning to another class count (a dataset whose label_map.json differs from the ``-init`` model's,
        e.g. a converted 81-class COCO model on an 11-class dataset): every tensor whose shape does not depend on
        the class count is loaded; the class-dependent layers (yolact/torch_weights.py
        ``class_dependent_prefixes``: the head's conf_layer, semantic_seg_conv, the mask-IoU net's last conv) keep
        ``model``'s fresh initialisation, and each is logged as ``skipped PREFIX (81 classes in -init, 11 here):
        re-initialised``. Keras weights go through a model built with the ``-init`` folder's config and then
        through the same key / shape checks as an original state_dict (``state_dict_of`` ->
        ``load_all_but_class_dependent``).

        Raises:
          InitError: missing or unreadable weights; an architecture other than the class count (backbone,
            img_size, FPN channels, prototypes, or any mismatched tensor outside the class-dependent layers)
            that differs from this run's.
        """
        path = self.options.init
        if not path:
            return
        if not os.path.exists(path):
            raise InitError(f"-init not found: {path}")
        try:
            if os.path.isdir(path) or path.endswith(".weights.h5"):
                self._init_from_run(model, path)
            else:
                self._init_from_state_dict(model, path, torch_weights.load_state_dict_file(path))
        except InitError:
            raise
        except (ValueError, OSError, KeyError, tf.errors.OpError) as e:
            raise InitError(f"cannot initialize from {path}: {' '.join(str(e).split())[:300]}") from None

    def _init_from_run(self, model, path):
        from yolact import checkpoint
        from yolact.model import build_model, checkpoint_variables

        folder = checkpoint.run_dir_of(path)
        theirs = None
        if os.path.isfile(os.path.join(folder, checkpoint.CONFIG_FILENAME)):
            theirs = checkpoint.read_config(folder)
            diff = [f"{k} {_shown(getattr(theirs.model, k), k)} vs {_shown(getattr(self.cfg.model, k), k)}"
                    for k in ARCHITECTURE_FIELDS
                    if getattr(theirs.model, k) != getattr(self.cfg.model, k)]
            if diff:
                raise InitError(f"-init {path} has another architecture than this run ({'; '.join(diff)})")
        weights = path if path.endswith(".weights.h5") else None
        prefix = None if weights else tf.train.latest_checkpoint(path)
        if weights is None and prefix is None:
            found = sorted((os.path.join(path, f) for f in os.listdir(path) if f.endswith(".weights.h5")),
                           key=os.path.getmtime)
            if not found:
                raise InitError(f"-init {path}: no checkpoint and no .weights.h5 in the folder")
            weights = found[-1]
        other_classes = theirs is not None and theirs.num_classes != self.cfg.num_classes
        # another class count: load into a model of the -init's config, then copy all but the class-dependent
        target = build_model(theirs, freeze_bn=True) if other_classes else model
        if weights:
            target.load_weights(weights)
        else:
            tf.train.Checkpoint(model_variables=checkpoint_variables(target)).restore(prefix).expect_partial()
        if other_classes:
            self._init_from_state_dict(model, weights or prefix, torch_weights.state_dict_of(target))
        else:
            self.log(f"Initialized from {weights or prefix}")

    def _init_from_state_dict(self, model, path, sd):
        info = torch_weights.load_all_but_class_dependent(sd, model, self.cfg)  # backbone-only for ImageNet files
        for prefix in info["reinitialized"]:
            self.log(f"skipped {prefix} ({info['source_classes']} classes in -init, {self.cfg.num_classes} here): "
                     "re-initialised")
        self.log(f"Initialized from {path}: {info['kind']}, {info['loaded']} tensors"
                 + (f", {len(info['reinitialized'])} class-dependent layers re-initialised"
                    if info["reinitialized"] else ""))

    def create_optimizer(self, mixed_precision: str = "none"):
        """``(optimizer, torch_sgd)``: TorchSGD (PyTorch momentum, coupled L2 decay) on :attr:`schedule`, wrapped
        in a LossScaleOptimizer for float16."""
        from utils.torch_sgd import TorchSGD

        inner = TorchSGD(self.schedule, momentum=float(self.cfg.train.momentum),
                         l2_decay=float(self.cfg.train.weight_decay))
        outer = keras.optimizers.LossScaleOptimizer(inner) if mixed_precision == "float16" else inner
        return outer, inner

    def build_inputs(self, seed: int, input_context: Optional[tf.distribute.InputContext] = None):
        """The training dataset (global batch ``cfg.train.batch_size``, split by ``input_context``)."""
        return self.input_fn(self.cfg, self.cfg.train.batch_size, seed, self.options.shuffle, input_context)

    # -- losses and steps ------------------------------------------------------------------------------------
    def build_losses(self, outputs, targets, seed, maskiou_net=None) -> Dict[str, tf.Tensor]:
        """This replica's loss sums and counts (yolact/losses.py ``loss_sums``; YOLACT++'s ``I`` needs the model's
        ``maskiou_net``)."""
        return loss_sums(outputs, targets, self.cfg, seed=seed, maskiou_net=maskiou_net)

    def compute_loss(self, outputs, targets, seed, step, maskiou_net=None) -> Dict[str, tf.Tensor]:
        """The losses (B, C, M, S and YOLACT++'s I) and ``total`` of this replica, divided by the positives and images of the
        GLOBAL batch (all-reduced across replicas), so that the sum over replicas equals the single-device loss.
        Must run in a replica context. ``step`` (int64 scalar) is the global step."""
        del step
        ctx = tf.distribute.get_replica_context()
        sums = self.build_losses(outputs, targets, seed, maskiou_net)
        gpos, gbatch = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [sums["num_pos"], sums["batch_size"]])
        losses = normalize_losses(sums, gpos, gbatch)
        losses["num_pos"] = sums["num_pos"]
        return losses

    def train_step(self, inputs, model, optimizer, step, seed0):
        """One replica's step: forward, loss, gradients (clipped to ``options.clip_grad_norm`` if set), update
        applied only when the all-reduced loss is finite (TorchSGD ``apply_update``; the original skips
        ``optimizer.step()``).

        Returns:
          ``(logs, finite)``: logs B, C, M, S, I, total (float32), num_pos; finite a bool scalar.
        """
        images, targets = inputs
        ctx = tf.distribute.get_replica_context()
        rid = tf.cast(ctx.replica_id_in_sync_group, tf.int64)
        seed = tf.stack([seed0, step * ctx.num_replicas_in_sync + rid])
        variables = model.trainable_variables
        loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        with tf.GradientTape() as tape:
            outputs = model(images, training=True)
            losses = self.compute_loss(outputs, targets, seed, step, maskiou_net=model.maskiou_net)
            loss = losses["total"]
            scaled = optimizer.scale_loss(loss) if loss_scaled else loss
        grads = tape.gradient(scaled, variables)
        if self.options.clip_grad_norm > 0:
            grads, _ = tf.clip_by_global_norm(grads, float(self.options.clip_grad_norm))
        finite = tf.math.is_finite(ctx.all_reduce(tf.distribute.ReduceOp.SUM, loss))
        inner = optimizer.inner_optimizer if loss_scaled else optimizer
        inner.apply_update.assign(finite)
        optimizer.apply_gradients(zip(grads, variables))
        logs = {k: losses[k] for k in LOSS_KEYS}
        logs["total"] = loss
        logs["num_pos"] = losses["num_pos"]
        return logs, finite

    def validation_step(self, model, val_pattern: str) -> Dict[str, float]:
        """Box and mask AP of ``model`` on the records ``val_pattern`` against ``options.val_annotations``, at most
        ``options.val_images`` images: ``evaluate_fn(Predictor(cfg, model, label_map), tfrecord_pattern=val_pattern,
        annotations_file=options.val_annotations, max_images=options.val_images or None)``.

        Returns:
          the evaluation's metrics, name -> number (utils/coco_eval.py: ``box/AP``, ``mask/AP50``, ... as fractions,
          ``images_evaluated``); the Validation callback logs the floats whose name ends in ``AP`` and
          writes every number to TensorBoard as ``val/NAME``.

        Raises:
          ValueError: the task was built without ``evaluate_fn``; whatever ``evaluate_fn`` raises.
        """
        from yolact.predictor import Predictor

        if self.evaluate_fn is None:
            raise ValueError("validation needs an evaluate_fn (YolactTask(..., evaluate_fn=...); train.py passes one "
                             "over utils/coco_eval.py)")
        o = self.options
        return self.evaluate_fn(Predictor(self.cfg, model, self.label_map), tfrecord_pattern=val_pattern,
                                annotations_file=o.val_annotations, max_images=o.val_images or None)


__all__ = ["YolactTask", "InitError", "schedule_for", "ARCHITECTURE_FIELDS"]
