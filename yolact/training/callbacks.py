"""Keras callbacks of the training loop (yolact/training/trainer.py calls them through keras.callbacks.CallbackList).

The loop passes ``logs`` with the step's losses (B, C, M, S, total), ``lr``, ``finite``, ``skipped``,
``data_errors`` and ``seconds`` (wall time of the step including the input). A callback stops training the Keras
way, ``self.model.stop_training = True``; the loop then saves a checkpoint and reports the run as interrupted.
"""

from __future__ import annotations

import datetime
import signal
import threading
from collections import deque

import keras
import numpy as np
import tensorflow as tf

from yolact.ops.preprocess import denormalize

LOSS_NAMES = {"B": "B", "C": "C", "M": "M", "S": "S", "I": "I", "T": "total"}  # I: YOLACT++ mask IoU


class ProgressLogger(keras.callbacks.Callback):
    """Every ``interval`` steps (and the last): one line of moving averages over the last 100 finite steps, lr,
    images/s and ETA (as the original), and the same as TensorBoard scalars (``loss/*``, ``lr``,
    ``images_per_second``, ``skipped_steps``, ``data_errors``) on the trainer's writer."""

    def __init__(self, trainer, interval: int):
        super().__init__()
        self.trainer, self.interval = trainer, int(interval)
        self.window = {k: deque(maxlen=100) for k in LOSS_NAMES}
        self.times = deque(maxlen=50)

    def on_train_batch_end(self, step, logs=None):
        t = self.trainer
        skipped, data_errors = int(logs["skipped"]), int(logs["data_errors"])  # CallbackList makes numbers floats
        if logs["finite"]:
            for short, key in LOSS_NAMES.items():
                self.window[short].append(logs[key])
        else:
            t.log(f"step {step}: non-finite loss ({logs['total']}), update skipped ({skipped} so far)")
        if step != t.start_step:  # the first step includes tracing
            self.times.append(logs["seconds"])
        if step % self.interval and step + 1 != t.max_iter:
            return
        avg = {k: (float(np.mean(v)) if v else float("nan")) for k, v in self.window.items()}
        sec = float(np.mean(self.times)) if self.times else None
        speed = f"{t.cfg.train.batch_size / sec:.2f}" if sec else "-"
        eta = str(datetime.timedelta(seconds=int((t.max_iter - step) * sec))) if sec else "?"
        errors = f" | data errors: {data_errors}" if data_errors else ""
        shown = [k for k in LOSS_NAMES if k != "I" or t.cfg.model.use_maskiou]
        losses = " | ".join(f"{k}: {avg[k]:.3f}" for k in shown)
        t.log(f"[{step:7d}] {losses} || lr: {logs['lr']:.6g} | {speed} img/s | ETA: {eta}{errors}")
        if t.writer is None:
            return
        with t.writer.as_default():
            for short, key in LOSS_NAMES.items():
                if short in shown:
                    tf.summary.scalar(f"loss/{key}", avg[short], step=step)
            tf.summary.scalar("lr", logs["lr"], step=step)
            tf.summary.scalar("skipped_steps", skipped, step=step)
            tf.summary.scalar("data_errors", data_errors, step=step)
            if sec:
                tf.summary.scalar("images_per_second", t.cfg.train.batch_size / sec, step=step)


class PredictionImages(keras.callbacks.Callback):
    """At every checkpoint: the first input image of the last batch with the model's predicted masks
    (TensorBoard ``predictions``). Monitoring never stops training: a failing overlay falls back to the input."""

    def __init__(self, trainer):
        super().__init__()
        self.trainer = trainer

    def on_checkpoint(self, step, images):
        t = self.trainer
        if t.writer is None or images is None:
            return
        img = images.values[0] if hasattr(images, "values") else images
        overlay = denormalize(tf.convert_to_tensor(img)[0], t.cfg)  # S x S: the Predictor's resize is the identity
        try:
            from utils.visualize import draw_detections
            from yolact.predictor import Predictor

            result = Predictor(t.cfg, t.model, t.label_map).predict(overlay)
            overlay = draw_detections(overlay, result, t.label_map.names, score_threshold=0.3, top_k=10)
        except Exception as e:  # noqa: BLE001 (monitoring must never stop a training run)
            t.log(f"(prediction overlay failed, input image only: {type(e).__name__})")
        with t.writer.as_default():
            tf.summary.image("predictions", overlay[None], step=step)


class Validation(keras.callbacks.Callback):
    """Every ``interval`` steps: box/mask AP on the validation records (task.validation_step), logged and written
    as ``val/*`` scalars. Skipped with a note when the records are missing."""

    def __init__(self, trainer, interval: int, val_pattern: str):
        super().__init__()
        self.trainer, self.interval, self.val_pattern = trainer, int(interval), val_pattern
        self.last = None

    def on_train_batch_end(self, step, logs=None):
        if (step + 1) % self.interval:
            return
        t = self.trainer
        if not tf.io.gfile.glob(self.val_pattern):
            t.log(f"(validation skipped: no {self.val_pattern})")
            return
        metrics = t.task.validation_step(t.model, self.val_pattern)
        self.last = metrics
        t.log(f"[val] step {step + 1}: " + " | ".join(f"{k}: {v:.4f}" for k, v in metrics.items()
                                                       if isinstance(v, float) and k.endswith("AP")))
        if t.writer is not None:
            with t.writer.as_default():
                for k, v in metrics.items():
                    if isinstance(v, (int, float)):
                        tf.summary.scalar(f"val/{k}", v, step=step + 1)


class StopOnSignal(keras.callbacks.Callback):
    """SIGINT / SIGTERM during training: the running step finishes, then training stops (the loop saves a
    checkpoint and reports the signal). Handlers are installed for the run only (main thread)."""

    def __init__(self, trainer):
        super().__init__()
        self.trainer = trainer
        self.previous = {}

    def _handle(self, signum, _frame):
        self.trainer.stop_reason = signal.Signals(signum).name
        self.model.stop_training = True
        self.trainer.log(f"Received {self.trainer.stop_reason}: finishing the current step, then saving.")

    def on_train_begin(self, logs=None):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)

    def on_train_end(self, logs=None):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


__all__ = ["ProgressLogger", "PredictionImages", "Validation", "StopOnSignal"]
