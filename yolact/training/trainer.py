"""The training loop: ``Trainer(options, data).run()`` trains a :class:`~yolact.training.task.YolactTask`.

What it guarantees (tests/test_train.py, tests/test_faults_train.py):

* Checkpoints (tf.train.CheckpointManager over every model variable, the optimizer with its momentum buffers,
  the step and the skipped-step / data-error counters) go to the run folder WEIGHTS/NAME every
  ``save_interval`` steps, at the end, when a callback stops training (SIGINT/SIGTERM: :class:`StopOnSignal`),
  and before a data fault ends the run. The chief first writes ``config.json`` (the resolved config) and
  ``label_map.json`` there; the final weights are ``WEIGHTS/NAME/<config>_<step>.weights.h5``.
* ``resume``: continue from the latest checkpoint at the same step, lr and momentum; with ``save_data_state`` the
  tf.data iterator is part of the checkpoint and a resumed run sees exactly the batches an uninterrupted run would
  (single replica; the state includes the shuffle buffer). Without it the data stream is re-seeded from
  (seed, step), like the original's new DataLoader.
* A step whose all-reduced loss is not finite changes no weight and no momentum buffer; it is counted
  (``skipped``). A record that raises a data error (``DataLossError``: corrupt shard; ``InvalidArgumentError``:
  undecodable image or mask) is skipped and counted (``data_errors``; the batch being collected is lost).
  ``MAX_CONSECUTIVE_DATA_ERRORS`` errors in a row, or the end of the data, save a checkpoint and raise
  :class:`DataFault`.
* One writer per run folder: the chief holds an exclusive ``flock`` on ``RUN/.lock`` (utils/run_lock.py) for the
  whole run; a second writer is refused (exit 2). Before the lock is taken or anything written, every input is
  checked: ``val_annotations`` (a COCO json), ``resume`` (a checkpoint written for this config), and a new run
  into a folder that already holds checkpoints or weights is refused unless ``overwrite`` (then the old contents
  are moved into a hidden ``.previous-run.tmp-*`` folder, the new config.json / label_map.json written, and the
  old folder deleted: a killed run leaves a temporary that the next start removes, never a mixed folder). A
  refused run (exit 2) leaves the folder as it was.
* Every checkpoint records :func:`yolact.checkpoint.config_hash` of the run's config (a string variable), the
  final ``.weights.h5`` too (an HDF5 attribute); ``resume`` and ``load_model`` refuse weights whose hash differs
  from the config they are loaded with. Files are written atomically (utils/atomic.py); each start removes the
  temporaries a killed run left (``ckpt-N_temp/``, ``.*.tmp-*``). A full disk while saving is :class:`DiskFull`
  (exit 1): the partial checkpoint is removed and the previous one stays the latest.
* Divergence: when the all-reduced total loss is non-finite or above ``DIVERGENCE_LOSS`` for
  ``DIVERGENCE_STEPS`` steps in a row, the run saves a checkpoint and stops; the summary says ``diverged`` (and
  the first step of that streak), and train.py exits 1 (:class:`Diverged`).
* Distribution: MultiWorkerMirroredStrategy when TF_CONFIG is set, MirroredStrategy with more than one GPU, the
  default strategy otherwise; the global batch is split across replicas and the loss divides by the positives and
  images of the GLOBAL batch (task.compute_loss), so it equals the single-device loss.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
import time
from typing import Callable, Dict, Optional, Sequence

from utils.atomic import DiskFullError, is_disk_full, remove_stale_temporaries
from utils.cli import FaultError, UserError
from utils.run_lock import LOCK_FILENAME, RunLock
from yolact.training.options import (OptionError, TrainOptions, check_val_annotations, resolve_config,
                                     validate_options)

MAX_CONSECUTIVE_DATA_ERRORS = 100
# Divergence: YOLACT's total loss (B + C + M + S, normalised per positive / image) starts around 10-40 from a fresh
# initialisation and falls; 1e4 is two to three orders above anything a healthy run shows (the learning-sanity
# run, lr 1e-2, peaks below 60), while exploding weights give 1e5 and more, then inf / NaN. Five steps in a row,
# so that an isolated non-finite step (skipped, counted) or one spike does not end a run.
DIVERGENCE_LOSS = 1e4
DIVERGENCE_STEPS = 5
_CKPT_TEMP = re.compile(r"ckpt-\d+_temp.*")


class DataError(UserError):
    """The training data cannot feed training at all (missing, no usable record): one line, exit 2."""


class DataFault(FaultError):
    """Training could not go on because of its data (too many errors in a row, or the data ended); a checkpoint
    was saved first: one line, exit 1."""


class ResumeError(OptionError):
    """``resume`` found no checkpoint, or one that does not fit (corrupt, other config / dataset): exit 2."""


class DiskFull(FaultError):
    """The disk filled up while saving a checkpoint, the final weights or the run files; nothing is half-written
    and the previous checkpoint is intact: one line, exit 1."""


class Diverged(FaultError):
    """The loss diverged (see ``DIVERGENCE_LOSS``); a checkpoint was saved: one line, exit 1 (raised by train.py
    from the summary)."""


def make_strategy():
    """MultiWorkerMirroredStrategy if TF_CONFIG is set, MirroredStrategy with > 1 GPU, else the default."""
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy) -> bool:
    """True for the task that writes the run folder (the chief, or worker 0 without a chief; single process)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type is None or task_type == "chief" or (task_type == "worker" and task_id == 0 and
                                                          "chief" not in resolver.cluster_spec().as_dict())


def _one_line(error, limit=200) -> str:
    return " ".join(str(getattr(error, "message", error)).split())[:limit]


class Trainer:
    """Build and run one training run.

    Args:
      options: TrainOptions (validated here).
      data: the training split, e.g. ``data.parser.TrainRecords(DIR)``: ``.name`` (for messages),
        ``.label_map``, ``.count()`` (``records``, ``trainable``, ``unreadable``), ``.input_fn`` (see
        :class:`YolactTask`), ``.val_pattern`` and ``.is_starved(error)``.
      task_cls: the task class (tests subclass it, e.g. to inject non-finite losses).
      callbacks: extra ``keras.callbacks.Callback`` objects (their ``model`` is the Yolact model).
      log: one-line logger.
      evaluate_fn: the validation's evaluation, handed to the task (see :class:`YolactTask`; train.py passes one
        over utils/coco_eval.py ``evaluate_dataset``). Required when ``options.val_interval`` is set.

    Raises:
      OptionError: an invalid option (``validate_options``).
      ValueError: ``options.val_interval`` without ``evaluate_fn`` (a caller's mistake, not a user's).
    """

    def __init__(self, options: TrainOptions, data, *, task_cls=None, callbacks: Sequence = (),
                 log: Callable = print, evaluate_fn: Optional[Callable] = None):
        self.options = validate_options(options)
        if self.options.val_interval and evaluate_fn is None:
            raise ValueError("val_interval needs evaluate_fn: Trainer(..., evaluate_fn=...) (train.py passes one "
                             "over utils/coco_eval.py evaluate_dataset)")
        self.data = data
        self.evaluate_fn = evaluate_fn
        self.task_cls = task_cls
        self.extra_callbacks = list(callbacks)
        self.log = log
        self.stop_reason = None
        self.writer = None
        self._built = False

    # -- setup -------------------------------------------------------------------------------------------------
    def setup(self):
        """Everything before the first step that writes nothing: input checks (data, ``val_annotations``), config,
        seeds, precision, strategy, the run folder's lock and checks, model, optimizer. Idempotent; :meth:`run`
        (or :meth:`close`) releases the lock.

        Raises:
          OptionError, DataError, ResumeError, InitError, RunLockedError: nothing was written (exit 2).
        """
        if self._built:
            return
        import keras
        import tensorflow as tf

        from yolact import checkpoint

        o = self.options
        if o.val_interval:
            check_val_annotations(o.val_annotations)
        if o.seed is not None:
            keras.utils.set_random_seed(o.seed)
        if o.deterministic:
            tf.config.experimental.enable_op_determinism()
        if o.mixed_precision != "none":
            keras.mixed_precision.set_global_policy(f"mixed_{o.mixed_precision}")
        self.seed = int(o.seed) if o.seed is not None else int(time.time()) % (2**31)
        self.strategy = make_strategy()  # before any TF op runs (collective ops are configured at startup)
        try:
            self.label_map = self.data.label_map
            count = self.data.count()
        except (OSError, ValueError) as e:
            raise DataError(_one_line(e, 1000)) from None
        for path in count.unreadable:
            self.log(f"(warning: {path} is corrupt; its records after the error are skipped)")
        if count.trainable == 0:
            raise DataError(f"{self.data.name}: none of its {count.records} training records has a non-crowd object "
                            "(annotations missing?): nothing to train on")
        self.log(f"{self.data.name}: {count.trainable} of {count.records} records have a non-crowd object")
        self.cfg, self.resumed_cfg = resolve_config(o, self.label_map, log=self.log)
        self.max_iter = int(self.cfg.train.max_iter)

        self.replicas = self.strategy.num_replicas_in_sync
        self.batch_size = int(self.cfg.train.batch_size)
        if self.batch_size % self.replicas:
            raise OptionError(f"-batch_size {self.batch_size} is not divisible by the {self.replicas} replicas")
        self.chief = is_chief(self.strategy)
        self.run_dir = o.run_dir
        # multi-worker: non-chief workers write to a private folder
        self.ckpt_dir = self.run_dir if self.chief else os.path.join(
            self.run_dir, f"worker_{self.strategy.cluster_resolver.task_id}")
        self.logdir = o.logdir or os.path.join(self.run_dir, "logs")
        if o.resume and not os.path.isdir(self.ckpt_dir):
            raise ResumeError(f"-resume: no checkpoint in {self.ckpt_dir}")
        if self.chief:
            try:
                self._lock = RunLock(self.run_dir).acquire()
            except OSError as e:
                raise OptionError(f"cannot write the run folder {self.run_dir}: {_one_line(e)}") from None
        try:
            self._check_run_folder()
            self._build(checkpoint)
        except BaseException:
            self.close()
            raise
        self._built = True

    def _build(self, checkpoint):
        import tensorflow as tf

        from yolact.training.task import YolactTask

        o = self.options
        self.task = (self.task_cls or YolactTask)(self.cfg, self.label_map, o, self.data.input_fn, log=self.log,
                                                  evaluate_fn=self.evaluate_fn)
        with self.strategy.scope():
            self.model = self.task.build_model(self.batch_size // self.replicas)
            self.task.initialize(self.model)
            self.optimizer, self.inner_opt = self.task.create_optimizer(o.mixed_precision)
            self.optimizer.build(self.model.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_steps")
        self.data_errors = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_errors")  # host-side count
        self.config_hash = tf.Variable(checkpoint.config_hash(self.cfg), dtype=tf.string, trainable=False,
                                       name="config_hash")

    def close(self) -> None:
        """Release the run folder's lock (done by :meth:`run`; idempotent)."""
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:
            lock.release()

    # -- the run folder ------------------------------------------------------------------------------------------
    def _held_files(self):
        """Checkpoints and weights already in the run folder (what a new run would mix with)."""
        d = self.run_dir
        if not os.path.isdir(d):
            return []
        return sorted(n for n in os.listdir(d) if not n.startswith(".") and (
            n == "checkpoint" or n.endswith(".index") or n.endswith(".weights.h5")))

    def _check_run_folder(self):
        """Everything about the run folder that can be checked before writing (holding the lock).

        Raises:
          ResumeError: ``resume`` without a checkpoint, or with one saved for another config.
          OptionError: a new run into a folder holding checkpoints or weights, without ``overwrite``.
        """
        import tensorflow as tf

        from yolact import checkpoint

        o, d = self.options, self.ckpt_dir
        if o.resume:
            latest = tf.train.latest_checkpoint(d) if os.path.isdir(d) else None
            if latest is None:
                raise ResumeError(f"-resume: no checkpoint in {d}")
            try:
                checkpoint.check_config_hash(self.cfg, latest)
            except checkpoint.CheckpointError as e:
                raise ResumeError(f"-resume: {e}") from None
        elif self.chief and not o.overwrite:
            held = self._held_files()
            if held:
                shown = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
                raise OptionError(f"{self.run_dir} already holds a run ({shown}): continue it with -resume, start "
                                  "it anew with -overwrite, or pick another -name")

    def _prepare_run_folder(self, resumed_cfg: bool):
        """Make the run folder this run's (chief, after every check and the restore): the old contents moved
        aside with ``overwrite``, stale temporaries removed, config.json / label_map.json written, the old
        contents deleted.

        Raises:
          DiskFull: the disk filled up while writing the run files (the previous ones stay).
        """
        from yolact import checkpoint

        d = self.run_dir
        os.makedirs(d, exist_ok=True)
        for path in remove_stale_temporaries(d) + self._remove_checkpoint_temporaries(d):
            self.log(f"(removed {path}, left by an earlier run that was killed)")
        aside = None
        entries = [n for n in os.listdir(d) if n != LOCK_FILENAME]
        if self.options.overwrite and entries:
            aside = tempfile.mkdtemp(prefix=".previous-run.tmp-", dir=d)
            for name in entries:
                os.rename(os.path.join(d, name), os.path.join(aside, name))
            self.log(f"-overwrite: {d} starts anew ({len(entries)} previous entries removed)")
        try:
            checkpoint.write_run_files(d, self.cfg, self.label_map)
        except DiskFullError as e:
            raise DiskFull(f"{e}; nothing was trained") from None
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
        if resumed_cfg:
            self.log(f"Resuming with {d}/{checkpoint.CONFIG_FILENAME}")

    @staticmethod
    def _remove_checkpoint_temporaries(folder):
        """``ckpt-N_temp*`` that tf.train.CheckpointManager leaves when killed or out of space while saving."""
        removed = []
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
            if _CKPT_TEMP.fullmatch(name):
                path = os.path.join(folder, name)
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
                removed.append(path)
        return removed

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def _checkpoint(self, iterator=None, for_saving=True):
        """``(tf.train.Checkpoint, CheckpointManager)`` over the run's state; ``for_saving`` adds the config hash
        (restoring reads it separately: checkpoints written before it existed still load)."""
        import tensorflow as tf

        from yolact.model import checkpoint_variables

        # Keras 3 objects are not fully tracked by tf.train.Checkpoint: list the model's variables and the
        # optimizer's momentum buffers explicitly.
        items = dict(model_variables=checkpoint_variables(self.model), optimizer=self.inner_opt,
                     momentums=list(self.inner_opt.momentums), step=self.step, skipped=self.skipped,
                     data_errors=self.data_errors)
        if iterator is not None:
            items["data"] = iterator
        if for_saving:
            items["config_hash"] = self.config_hash
        ckpt = tf.train.Checkpoint(**items)
        manager = tf.train.CheckpointManager(ckpt, self.ckpt_dir, max_to_keep=self.options.keep_checkpoints,
                                             checkpoint_name="ckpt")
        return ckpt, manager

    def _restore(self, ckpt, manager, what="checkpoint"):
        path = manager.latest_checkpoint
        if path is None:
            raise ResumeError(f"-resume: no checkpoint in {self.ckpt_dir}")
        try:
            ckpt.restore(path).assert_existing_objects_matched()
        except Exception as e:  # noqa: BLE001 (corrupt files raise OpError, IndexError, ValueError...)
            raise ResumeError(f"cannot resume from {path} ({what}: corrupt, or saved with another config, dataset, "
                              f"batch norm setting or without -save_data_state): {_one_line(e)}") from None

    def save(self, step: int, images=None) -> str:
        """Save a checkpoint at ``step`` (and the TensorBoard prediction image of ``images``).

        Raises:
          DiskFull: the disk filled up; what this save wrote is removed, the previous checkpoint stays the latest.
        """
        before = set(self.manager.checkpoints)
        try:
            path = self.manager.save(checkpoint_number=step)
        except Exception as e:  # noqa: BLE001 (TensorFlow reports ENOSPC as an OpError, sometimes as text only)
            if not is_disk_full(e):
                raise
            prefix = os.path.join(self.ckpt_dir, f"ckpt-{step}")
            partial = glob.glob(glob.escape(prefix) + "_temp*")
            if prefix not in before:
                partial += glob.glob(glob.escape(prefix) + ".index") + glob.glob(glob.escape(prefix) + ".data-*")
            for p in partial:
                shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.remove(p)
            raise DiskFull(f"no space left on the device while saving checkpoint {prefix} at step {step} (removed; "
                           f"latest complete checkpoint: {self.manager.latest_checkpoint or 'none'})") from None
        self.log(f"Saved checkpoint {path} (step {step})")
        for cb in self.callbacks.callbacks:
            if hasattr(cb, "on_checkpoint"):
                cb.on_checkpoint(step, images)
        return path

    # -- data ----------------------------------------------------------------------------------------------------
    def _make_dataset(self, start_step: int):
        o = self.options
        seed = self.seed if (start_step == 0 or o.save_data_state) else (self.seed + 7919 * start_step) % 2**31
        try:
            if self.replicas == 1 and not os.environ.get("TF_CONFIG"):
                return self.task.build_inputs(seed), False
            return self.strategy.distribute_datasets_from_function(
                lambda ctx: self.task.build_inputs(seed, ctx)), True
        except ValueError as e:
            raise DataError(_one_line(e, 1000)) from None

    def _next_batch(self, iterator):
        """The next batch, skipping and counting records that raise data errors. None when stopped meanwhile.

        Raises:
          DataError: the data yields no training image for many records in a row (data.is_starved).
          DataFault: ``MAX_CONSECUTIVE_DATA_ERRORS`` data errors in a row, or the data ended.
        """
        import tensorflow as tf

        errors = 0
        while not self.model.stop_training:
            try:
                return next(iterator)
            except (StopIteration, tf.errors.OutOfRangeError):
                raise DataFault(f"{self.data.name}: the training data ended at step {int(self.step.numpy())}"
                                f" after {int(self.data_errors.numpy())} data errors") from None
            except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
                if self.data.is_starved(e):
                    raise DataError(f"{self.data.name}: {_one_line(e).split(' [Op:')[0]}") from None
                errors += 1
                self.data_errors.assign_add(1)
                self.log(f"(data error skipped, {int(self.data_errors.numpy())} so far: {type(e).__name__}: "
                         f"{_one_line(e, 150)})")
                if errors >= MAX_CONSECUTIVE_DATA_ERRORS:
                    raise DataFault(f"{self.data.name}: {errors} data errors in a row at step "
                                    f"{int(self.step.numpy())} (last: {type(e).__name__})") from None
        return None

    # -- the step --------------------------------------------------------------------------------------------
    def _train_step_fn(self):
        import tensorflow as tf

        seed0 = tf.constant(self.seed % 2**31, tf.int64)

        @tf.function
        def train_step(batch):
            per_replica, finite = self.strategy.run(
                self.task.train_step, args=(batch, self.model, self.optimizer, self.step, seed0))
            out = {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}
            ok = self.strategy.experimental_local_results(finite)[0]
            self.skipped.assign_add(tf.cast(tf.logical_not(ok), tf.int64))
            self.step.assign_add(1)
            out["finite"] = ok
            return out

        return train_step

    def _default_callbacks(self):
        from yolact.training import callbacks as cb

        o = self.options
        out = [cb.StopOnSignal(self), cb.ProgressLogger(self, o.print_interval), cb.PredictionImages(self)]
        if o.val_interval:
            out.append(cb.Validation(self, o.val_interval, self.data.val_pattern))
        return out

    # -- main loop -----------------------------------------------------------------------------------------------
    def run(self) -> Dict:
        """Train from the current (or resumed) step to ``cfg.train.max_iter``, or until a callback stops or the loss
        diverges; the run folder's lock is held meanwhile and released at the end.

        Returns:
          dict: ``step`` (steps done), ``skipped`` (non-finite steps), ``data_errors``, ``history`` (one dict per
          step of this run: step, lr, finite, B, C, M, S, total), ``checkpoint`` (latest), ``final_weights``
          (None when interrupted), ``interrupted`` (None, or the signal's name / "stopped" when a callback
          stopped training), ``diverged`` (bool) and ``diverged_at`` (the first step of the divergent streak, or
          None; no final weights then), ``run_dir``, ``lr`` (the lr at the final step).
        Raises:
          OptionError, DataError, ResumeError, InitError, utils.run_lock.RunLockedError (exit 2 through utils.cli:
          nothing written); DataFault, DiskFull (exit 1).
        """
        self.setup()
        try:
            return self._run()
        finally:
            self.close()

    def _run(self) -> Dict:
        import keras
        import numpy as np
        import tensorflow as tf

        from yolact import checkpoint
        from yolact.losses import LOSS_KEYS

        o = self.options
        if o.resume:  # weights, optimizer, step first; the data iterator (if saved) once it exists
            probe, manager = self._checkpoint(for_saving=False)
            self._restore(probe, manager)
            self.log(f"Resumed from {manager.latest_checkpoint} at step {int(self.step.numpy())}")
        self.start_step = start = int(self.step.numpy())
        dataset, distributed = self._make_dataset(start)
        iterator = iter(dataset)
        use_data_state = o.save_data_state and not distributed
        if o.save_data_state and distributed:
            self.log("(-save_data_state ignored with more than one replica)")
        if o.resume and use_data_state:
            self._restore(*self._checkpoint(iterator, for_saving=False), what="data iterator")
        if self.chief:  # every check passed: from here on the run folder is written
            self._prepare_run_folder(self.resumed_cfg)
        ckpt, self.manager = self._checkpoint(iterator if use_data_state else None)
        self.writer = tf.summary.create_file_writer(self.logdir) if self.chief else None
        train_step = self._train_step_fn()
        self.callbacks = keras.callbacks.CallbackList(self._default_callbacks() + self.extra_callbacks,
                                                      model=self.model)
        self.model.stop_training = False
        history, images, step, bad_streak, diverged = [], None, start, 0, None
        self.log(f"Begin training! {self.cfg.name}, {self.replicas} replica(s), batch {self.batch_size}, "
                 f"steps {start} -> {self.max_iter}, checkpoints in {self.ckpt_dir}")
        self.callbacks.on_train_begin()
        try:
            while step < self.max_iter and not self.model.stop_training:
                t0 = time.perf_counter()
                batch = self._next_batch(iterator)
                if batch is None:
                    break
                lr = float(self.task.schedule(step))
                out = {k: v.numpy() for k, v in train_step(batch).items()}
                images = batch[0]
                rec = {"step": step, "lr": lr, "finite": bool(out["finite"]),
                       **{k: float(out[k]) for k in (*LOSS_KEYS, "total")}}
                history.append(rec)
                logs = dict(rec, skipped=int(self.skipped.numpy()), data_errors=int(self.data_errors.numpy()),
                            seconds=time.perf_counter() - t0)
                step += 1
                self.callbacks.on_train_batch_end(step - 1, logs)
                bad_streak = bad_streak + 1 if not (rec["finite"] and rec["total"] <= DIVERGENCE_LOSS) else 0
                if bad_streak >= DIVERGENCE_STEPS:
                    diverged = step - DIVERGENCE_STEPS
                    self.log(f"Training diverged: the total loss was non-finite or above {DIVERGENCE_LOSS:g} for "
                             f"{DIVERGENCE_STEPS} steps in a row from step {diverged} (last: {rec['total']:.4g}); "
                             "saving a checkpoint and stopping (lower -lr, or set -clip_grad_norm)")
                    break
                if step % o.save_interval == 0 and step < self.max_iter:
                    self.save(step, images)
        except (DataError, DataFault) as e:
            if step > start:
                e.args = (f"{e.args[0]}; saved {self.save(step, images)}",)
            raise
        finally:
            self.callbacks.on_train_end()
        interrupted = None
        if step < self.max_iter and diverged is None:
            interrupted = self.stop_reason or "stopped"
        path = self.save(step, images)
        final = None
        if interrupted is None and diverged is None:
            final = os.path.join(self.ckpt_dir, f"{self.cfg.name}_{step}.weights.h5")
            try:
                checkpoint.write_weights(self.model, final, self.cfg)
            except DiskFullError:
                raise DiskFull(f"no space left on the device while writing {final} (nothing written; checkpoint "
                               f"{path} is complete)") from None
            self.log(f"Final weights: {final}")
        if self.writer is not None:
            self.writer.flush()
        return {"step": step, "skipped": int(self.skipped.numpy()), "data_errors": int(self.data_errors.numpy()),
                "history": history, "final_weights": final, "checkpoint": path, "interrupted": interrupted,
                "diverged": diverged is not None, "diverged_at": diverged, "run_dir": self.run_dir, "lr": float(np.float32(self.task.schedule(step)))}


def train(options: TrainOptions, data, **kwargs) -> Dict:
    """``Trainer(options, data, **kwargs).run()``: the library entry point (see :class:`Trainer`)."""
    return Trainer(options, data, **kwargs).run()


__all__ = ["Trainer", "train", "DataError", "DataFault", "ResumeError", "DiskFull", "Diverged",
           "MAX_CONSECUTIVE_DATA_ERRORS", "DIVERGENCE_LOSS", "DIVERGENCE_STEPS", "make_strategy", "is_chief"]
