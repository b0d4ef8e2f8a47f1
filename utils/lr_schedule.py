"""The original's learning-rate schedule (linear warmup, then step decay) and batch-size autoscale.

original: train.py (module-level autoscale; ``set_lr`` calls in ``train``); shared/docs/yolact_reference.md §1.5.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple

import keras
import tensorflow as tf


class ScaledSchedule(NamedTuple):
    """lr, max_iter and lr_steps after the autoscale rule (floats where the original's ``//=`` gives floats)."""

    lr: float
    max_iter: float
    lr_steps: Tuple[float, ...]
    factor: float


def autoscale(lr: float, max_iter: int, lr_steps: Sequence[int], batch_size: int, enabled: bool = True) -> ScaledSchedule:
    """The original's autoscale: if ``batch_size != 8``, ``factor = batch_size / 8``, ``lr *= factor``,
    ``max_iter //= factor``, ``lr_steps = [s // factor]`` (floor division by a float). Warmup is not scaled.

    Raises:
      ValueError: batch_size < 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not enabled or batch_size == 8:
        return ScaledSchedule(float(lr), max_iter, tuple(lr_steps), 1.0)
    factor = batch_size / 8
    return ScaledSchedule(lr * factor, max_iter // factor, tuple(s // factor for s in lr_steps), factor)


@keras.saving.register_keras_serializable(package="yolact")
class YolactLRSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate at iteration ``step`` (0-based, the original's ``iteration``), float32 scalar.

    With k = number of ``steps`` that are <= step:
      * k > 0: ``lr · gamma^k``;
      * else if step <= warmup_until: ``(lr − warmup_init) · step / warmup_until + warmup_init``;
      * else: the warmup's last value ``(lr − warmup_init) · 1 + warmup_init`` (the original keeps the value set at
        iteration warmup_until, which equals lr up to float rounding).
    Computed in float64, returned as float32.
    """

    def __init__(self, lr: float, warmup_init: float = 1e-4, warmup_until: int = 500,
                 steps: Sequence[float] = (), gamma: float = 0.1):
        super().__init__()
        self.lr = float(lr)
        self.warmup_init = float(warmup_init)
        self.warmup_until = int(warmup_until)
        self.steps = tuple(float(s) for s in steps)
        self.gamma = float(gamma)

    def __call__(self, step):
        step = tf.cast(step, tf.float64)
        lr = tf.constant(self.lr, tf.float64)
        if self.steps:
            k = tf.reduce_sum(tf.cast(step >= tf.constant(self.steps, tf.float64), tf.float64))
        else:
            k = tf.constant(0.0, tf.float64)
        decayed = lr * tf.pow(tf.constant(self.gamma, tf.float64), k)
        if self.warmup_until > 0:
            frac = tf.minimum(step, float(self.warmup_until)) / float(self.warmup_until)
            warm = (lr - self.warmup_init) * frac + self.warmup_init
        else:
            warm = lr
        return tf.cast(tf.where(k > 0, decayed, warm), tf.float32)

    def get_config(self):
        return {
            "lr": self.lr,
            "warmup_init": self.warmup_init,
            "warmup_until": self.warmup_until,
            "steps": list(self.steps),
            "gamma": self.gamma,
        }


def schedule_from_config(train_cfg, batch_size: int, lr: Optional[float] = None,
                         enabled_autoscale: bool = True,
                         lr_steps: Optional[Sequence[int]] = None) -> Tuple[YolactLRSchedule, ScaledSchedule]:
    """Schedule for a ``TrainConfig`` (values given for batch 8) at ``batch_size``.

    An explicit ``lr`` is used as given (not scaled), as the original: train.py's ``replace('lr')`` takes the
    autoscaled config lr only when ``--lr`` is absent; max_iter and the config's lr_steps are scaled either way.
    Explicit ``lr_steps`` (iterations at which lr is multiplied by gamma; train.py ``-lr_steps``, not an original
    flag) are likewise used as given.
    Returns the schedule and the scaled (lr, max_iter, lr_steps, factor).

    Raises:
      ValueError: ``batch_size`` < 1, or ``lr_steps`` not positive iterations in ascending order.
    """
    scaled = autoscale(train_cfg.lr, train_cfg.max_iter, train_cfg.lr_steps, batch_size, enabled_autoscale)
    if lr is not None:
        scaled = scaled._replace(lr=float(lr))
    if lr_steps is not None:
        steps = tuple(int(x) for x in lr_steps)
        if any(x <= 0 for x in steps) or list(steps) != sorted(steps):
            raise ValueError(f"lr_steps must be increasing positive iterations, got {list(steps)}")
        scaled = scaled._replace(lr_steps=steps)
    sched = YolactLRSchedule(scaled.lr, train_cfg.lr_warmup_init, train_cfg.lr_warmup_until, scaled.lr_steps,
                             train_cfg.gamma)
    return sched, scaled


__all__ = ["YolactLRSchedule", "autoscale", "schedule_from_config", "ScaledSchedule"]
