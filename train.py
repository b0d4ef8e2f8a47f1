"""Train YOLACT on TFRecords: ``python train.py -name coco -tfrecord_dir data/tfrecords -weights weights``.

As the original train.py: SGD with PyTorch momentum and coupled L2 decay (utils/torch_sgd.py), linear warmup and
step schedule with the batch-size autoscale (utils/lr_schedule.py), BN frozen when the per-replica batch is below
6, the four loss terms of yolact/losses.py, a step with a non-finite loss is skipped (counted). Checkpoints
(tf.train.CheckpointManager over model, optimizer, step) go to ``-weights/NAME``: every ``-save_interval``, at the
end and on SIGINT/SIGTERM (the running step finishes, then save and exit 130 / 0). ``-resume`` continues from the
latest one at the same step, lr and momentum. The final weights are also written as
``-weights/NAME/<config>_<step>.weights.h5`` for inference.py / export_saved_model.py.

Distribution: MultiWorkerMirroredStrategy when TF_CONFIG is set, MirroredStrategy with more than one GPU, the
default strategy otherwise. The global batch ``-batch_size`` is split across replicas; the loss divides by the
positives and images of the GLOBAL batch (all-reduced), so it equals the single-device loss.

Data order on resume: with ``-save_data_state`` the tf.data iterator is part of the checkpoint and a resumed run
sees exactly the batches an uninterrupted run would (single replica only; the state includes the shuffle buffer,
so checkpoints grow). Without it, a resumed run starts a fresh data stream seeded from (seed, step), like the
original's new DataLoader.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import signal
import sys
import time
from collections import deque
from typing import Callable, Dict, List, Optional

from absl import app, flags

from utils.flags_util import DEFINE_number

MIXED_PRECISION = ("none", "float16", "bfloat16")


class TrainError(Exception):
    """A problem the user can fix (bad flag, missing data, unusable checkpoint): printed as one line."""


@dataclasses.dataclass
class TrainOptions:
    """Everything train.py's flags set (see ``_define_flags`` for the meaning of each)."""

    name: str = "coco"
    tfrecord_dir: str = "data/tfrecords"
    weights: str = "weights"
    config: str = "yolact_base"
    batch_size: int = 8
    lr: Optional[float] = None
    momentum: Optional[float] = None
    weight_decay: Optional[float] = None
    train_iter: Optional[int] = None
    print_interval: int = 10
    save_interval: int = 10000
    keep_checkpoints: int = 3
    resume: bool = False
    init: Optional[str] = None
    logdir: Optional[str] = None
    mixed_precision: str = "none"
    val_interval: int = 0
    val_annotations: Optional[str] = None
    val_images: int = 0
    seed: Optional[int] = None
    deterministic: bool = False
    img_size: Optional[int] = None
    no_autoscale: bool = False
    save_data_state: bool = False
    shuffle: bool = True
    augment: bool = True
    warmup_iter: Optional[int] = None
    lr_steps: Optional[List[int]] = None
    clip_grad_norm: float = 0.0


def _define_flags():
    f = flags
    f.DEFINE_string("name", "coco", "Dataset name: reads -tfrecord_dir/NAME/train-*.tfrecord and its label_map.json.")
    f.DEFINE_string("tfrecord_dir", "data/tfrecords", "Folder holding one subfolder of TFRecords per dataset.")
    f.DEFINE_string("weights", "weights", "Checkpoint folder; checkpoints go to WEIGHTS/NAME.")
    f.DEFINE_string("config", "yolact_base", "Config preset (config.py).")
    f.DEFINE_integer("batch_size", 8, "Global batch size (split across replicas).", lower_bound=1)
    DEFINE_number("lr", None, "Learning rate (default: the config's, autoscaled by batch/8). Accepts '1e-3'.")
    DEFINE_number("momentum", None, "SGD momentum (default: config, 0.9).")
    DEFINE_number("weight_decay", None, "Coupled L2 weight decay (default: config, 5e-4). Accepts '5 * 1e-4'.")
    f.DEFINE_integer("train_iter", None, "Iterations to train (default: the config's max_iter, autoscaled).",
                     lower_bound=1)
    f.DEFINE_integer("print_interval", 10, "Print/log losses every N steps.", lower_bound=1)
    f.DEFINE_integer("save_interval", 10000, "Save a checkpoint every N steps.", lower_bound=1)
    f.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept by the CheckpointManager.", lower_bound=1)
    f.DEFINE_bool("resume", False, "Continue from the latest checkpoint in WEIGHTS/NAME.")
    f.DEFINE_string("init", None, "Initial weights: a .weights.h5, or an original .pth/.npz (full YOLACT or an "
                    "ImageNet backbone such as the EfficientNet-Lite0 file) converted on the fly.")
    f.DEFINE_alias("backbone_weights", "init")
    f.DEFINE_string("logdir", None, "TensorBoard folder (default: WEIGHTS/NAME/logs).")
    f.DEFINE_enum("mixed_precision", "none", list(MIXED_PRECISION), "Compute dtype policy.")
    f.DEFINE_integer("val_interval", 0, "Validation box/mask AP every N steps (0: off); needs -val_annotations and "
                     "val-*.tfrecord next to the training records.", lower_bound=0)
    f.DEFINE_string("val_annotations", None, "COCO json of the validation split (for -val_interval).")
    f.DEFINE_integer("val_images", 0, "Validate on at most N images (0: all).", lower_bound=0)
    f.DEFINE_integer("seed", None, "Seed for weights init, data order, augmentation and mask sampling.")
    f.DEFINE_bool("deterministic", False, "tf.config.experimental.enable_op_determinism() (needs -seed).")
    f.DEFINE_integer("img_size", None, "Override the config's input size (anchor scales follow).", lower_bound=64)
    f.DEFINE_bool("no_autoscale", False, "Do not scale lr / iterations / steps by batch_size / 8.")
    f.DEFINE_bool("save_data_state", False, "Checkpoint the tf.data iterator for an exact resume (single replica).")
    f.DEFINE_bool("shuffle", True, "Shuffle the training records.")
    f.DEFINE_bool("augment", True, "Use the original's SSD augmentation (off: resize only).")
    f.DEFINE_integer("warmup_iter", None, "Linear lr warmup length in iterations (default: the config's "
                     "lr_warmup_until, 500; not autoscaled, as the original).", lower_bound=0)
    f.DEFINE_float("clip_grad_norm", 0.0, "Clip each replica's gradients to this global L2 norm (0: off, as the "
                   "original). Not an original option: it keeps the prototypes alive in short CPU runs.",
                   lower_bound=0.0)
    f.DEFINE_list("lr_steps", None, "Iterations at which lr is multiplied by the config's gamma (0.1), e.g. "
                  "'6000,8000' (default: the config's lr_steps, autoscaled by batch/8); used as given.")


def options_from_flags(fv=None) -> TrainOptions:
    fv = fv or flags.FLAGS
    return TrainOptions(**{field.name: fv[field.name].value for field in dataclasses.fields(TrainOptions)})


# ----------------------------------------------------------------------------------------------------------------
# Everything below imports TensorFlow lazily so that `train.py --help` and flag errors are fast.


def make_strategy():
    """MultiWorkerMirroredStrategy if TF_CONFIG is set, MirroredStrategy with > 1 GPU, else the default."""
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type is None or task_type == "chief" or (task_type == "worker" and task_id == 0 and
                                                          "chief" not in resolver.cluster_spec().as_dict())


class Trainer:
    """The training loop. ``Trainer(opts).run()`` returns a summary dict (step, skipped, loss history).

    Test hooks: ``nan_steps`` (set of steps whose loss is multiplied by NaN), ``stop_at_step`` (behave as if a
    SIGTERM arrived after that step).
    """

    def __init__(self, opts: TrainOptions, nan_steps=(), stop_at_step: Optional[int] = None, log: Callable = print):
        self.opts = opts
        self.nan_steps = set(nan_steps)
        self.stop_at_step = stop_at_step
        self.log = log
        self.stop_signal = None

    # -- setup -----------------------------------------------------------------------------------------------
    def _setup(self):
        import keras
        import tensorflow as tf

        from config import get_config
        from yolact.ops import label_map as label_map_lib
        from data import tfrecord_schema as schema
        from utils.lr_schedule import schedule_from_config

        o = self.opts
        if o.mixed_precision not in MIXED_PRECISION:
            raise TrainError(f"-mixed_precision must be one of {MIXED_PRECISION}, got {o.mixed_precision!r}")
        if o.deterministic and o.seed is None:
            raise TrainError("-deterministic needs -seed")
        self.data_dir = os.path.join(o.tfrecord_dir, o.name)
        self.train_pattern = os.path.join(self.data_dir, "train-*.tfrecord")
        if not tf.io.gfile.glob(self.train_pattern):
            raise TrainError(f"no training records {self.train_pattern} (create them with "
                             f"python -m data.coco_tfrecord_creator)")
        try:
            self.label_map = label_map_lib.read_label_map(os.path.join(self.data_dir, schema.LABEL_MAP_FILENAME))
        except (OSError, ValueError) as e:
            raise TrainError(f"cannot read {self.data_dir}/{schema.LABEL_MAP_FILENAME}: {e}") from None
        try:
            cfg = get_config(o.config, num_classes=self.label_map.num_classes, img_size=o.img_size)
        except ValueError as e:
            raise TrainError(str(e)) from None
        if not o.augment:
            cfg = dataclasses.replace(cfg, parser=dataclasses.replace(
                cfg.parser, augment_photometric_distort=False, augment_expand=False,
                augment_random_sample_crop=False, augment_random_mirror=False))
        if o.warmup_iter is not None:
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr_warmup_until=o.warmup_iter))
        self.cfg = cfg

        if o.seed is not None:
            keras.utils.set_random_seed(o.seed)
        if o.deterministic:
            tf.config.experimental.enable_op_determinism()
        if o.clip_grad_norm and o.mixed_precision == "float16":
            raise TrainError("-clip_grad_norm does not combine with -mixed_precision float16 (loss-scaled "
                             "gradients); use bfloat16")
        if o.mixed_precision != "none":
            keras.mixed_precision.set_global_policy(f"mixed_{o.mixed_precision}")

        self.strategy = make_strategy()
        self.replicas = self.strategy.num_replicas_in_sync
        if o.batch_size % self.replicas:
            raise TrainError(f"-batch_size {o.batch_size} is not divisible by the {self.replicas} replicas")
        self.per_replica_batch = o.batch_size // self.replicas
        self.chief = _is_chief(self.strategy)

        try:
            lr_steps = [int(x) for x in o.lr_steps] if o.lr_steps is not None else None
            self.schedule, scaled = schedule_from_config(cfg.train, o.batch_size, lr=o.lr,
                                                         enabled_autoscale=not o.no_autoscale, lr_steps=lr_steps)
        except ValueError as e:
            raise TrainError(f"-lr_steps: {e}") from None
        self.scaled = scaled
        self.max_iter = int(o.train_iter if o.train_iter is not None else scaled.max_iter)
        if scaled.factor != 1.0:
            self.log(f"Scaling parameters by {scaled.factor:.2f} to account for a batch size of {o.batch_size}.")
        self.seed = int(o.seed) if o.seed is not None else int(time.time()) % (2**31)

        self.ckpt_dir = os.path.join(o.weights, o.name)
        if not self.chief:  # multi-worker: non-chief workers write to a private folder
            self.ckpt_dir = os.path.join(self.ckpt_dir, f"worker_{self.strategy.cluster_resolver.task_id}")
        self.logdir = o.logdir or os.path.join(o.weights, o.name, "logs")
        with self.strategy.scope():
            self._build_model_and_optimizer()

    def _build_model_and_optimizer(self):
        import keras
        import tensorflow as tf

        from utils.torch_sgd import TorchSGD
        from yolact.model import build_model, should_freeze_bn

        o, cfg = self.opts, self.cfg
        freeze = should_freeze_bn(cfg, self.per_replica_batch)
        if freeze:
            self.log(f"Per-replica batch {self.per_replica_batch} < 6: BatchNorm frozen (as the original).")
        self.model = build_model(cfg, freeze_bn=freeze)
        if o.init and not o.resume:
            self._load_init(o.init)
        momentum = o.momentum if o.momentum is not None else cfg.train.momentum
        decay = o.weight_decay if o.weight_decay is not None else cfg.train.weight_decay
        self.inner_opt = TorchSGD(self.schedule, momentum=float(momentum), l2_decay=float(decay))
        self.optimizer = self.inner_opt
        if o.mixed_precision == "float16":
            self.optimizer = keras.optimizers.LossScaleOptimizer(self.inner_opt)
        self.optimizer.build(self.model.trainable_variables)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_steps")
        self.loss_factor = tf.Variable(1.0, dtype=tf.float32, trainable=False, name="loss_factor",
                                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def _load_init(self, path):
        from utils import convert_weights as cw

        if not os.path.exists(path):
            raise TrainError(f"-init file not found: {path}")
        try:
            if path.endswith(".weights.h5"):
                self.model.load_weights(path)
                self.log(f"Initialized from {path}")
                return
            sd = cw.load_state_dict_file(path)
            info = cw.convert_state_dict(sd, self.model, self.cfg, backbone_only=cw.detect_kind(sd) != "yolact")
            self.log(f"Initialized from {path}: {info['kind']}, {info['loaded']} tensors")
        except (ValueError, OSError, KeyError) as e:
            raise TrainError(f"cannot initialize from {path}: {str(e).splitlines()[0]}") from None

    def _make_dataset(self, start_step: int):
        from data.parser import train_dataset

        o, cfg = self.opts, self.cfg
        data_seed = self.seed if (start_step == 0 or o.save_data_state) else (self.seed + 7919 * start_step) % 2**31

        def fn(ctx=None):
            return train_dataset(self.train_pattern, cfg, o.batch_size, seed=data_seed, shuffle=o.shuffle,
                                 input_context=ctx)

        try:
            if self.replicas == 1 and not os.environ.get("TF_CONFIG"):
                return fn(), False
            return self.strategy.distribute_datasets_from_function(fn), True
        except ValueError as e:
            raise TrainError(str(e).splitlines()[0]) from None

    # -- checkpoints ---------------------------------------------------------------------------------------
    def _checkpoint(self, iterator=None):
        import tensorflow as tf

        from yolact.model import checkpoint_variables

        # Keras 3 objects are not fully tracked by tf.train.Checkpoint: list the model's variables and the
        # optimizer's momentum buffers explicitly.
        items = dict(model_variables=checkpoint_variables(self.model), optimizer=self.inner_opt,
                     momentums=list(self.inner_opt.momentums),
                     step=self.step, skipped=self.skipped)
        if iterator is not None:
            items["data"] = iterator
        ckpt = tf.train.Checkpoint(**items)
        return ckpt, tf.train.CheckpointManager(ckpt, self.ckpt_dir, max_to_keep=self.opts.keep_checkpoints,
                                                checkpoint_name="ckpt")

    def _restore(self, ckpt, manager):
        import tensorflow as tf

        path = manager.latest_checkpoint
        if path is None:
            raise TrainError(f"-resume: no checkpoint in {self.ckpt_dir}")
        try:
            status = ckpt.restore(path)
            status.assert_existing_objects_matched()
        except Exception as e:  # noqa: BLE001 (corrupt files raise OpError, IndexError, ValueError...)
            msg = " ".join(str(e).split())[:300]
            raise TrainError(f"cannot resume from {path} (corrupt, or saved with another config/dataset/batch "
                             f"norm setting): {msg}") from None
        self.log(f"Resumed from {path} at step {int(self.step.numpy())}")

    # -- the step ----------------------------------------------------------------------------------------------
    def _train_step_fn(self):
        import tensorflow as tf

        from yolact.losses import LOSS_KEYS, loss_sums, normalize_losses

        model, opt, inner, cfg = self.model, self.optimizer, self.inner_opt, self.cfg
        seed0 = tf.constant(self.seed % 2**31, tf.int64)
        lso = opt is not inner
        clip = float(self.opts.clip_grad_norm)

        def replica_step(images, targets):
            ctx = tf.distribute.get_replica_context()
            rid = tf.cast(ctx.replica_id_in_sync_group, tf.int64)
            seed = tf.stack([seed0, self.step * self.replicas + rid])
            variables = model.trainable_variables
            with tf.GradientTape() as tape:
                out = model(images, training=True)
                sums = loss_sums(out, targets, cfg, seed=seed)
                gpos, gbatch = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [sums["num_pos"], sums["batch_size"]])
                losses = normalize_losses(sums, gpos, gbatch)
                loss = losses["total"] * self.loss_factor
                scaled = opt.scale_loss(loss) if lso else loss
            grads = tape.gradient(scaled, variables)
            if clip > 0:
                grads, _ = tf.clip_by_global_norm(grads, clip)
            total = ctx.all_reduce(tf.distribute.ReduceOp.SUM, loss)
            finite = tf.math.is_finite(total)
            inner.apply_update.assign(finite)
            opt.apply_gradients(zip(grads, variables))
            result = {k: losses[k] for k in LOSS_KEYS}
            result["total"] = loss
            result["num_pos"] = sums["num_pos"]
            return result, finite

        @tf.function
        def train_step(batch):
            images, targets = batch
            per_replica, finite = self.strategy.run(replica_step, args=(images, targets))
            out = {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}
            ok = self.strategy.experimental_local_results(finite)[0]
            self.skipped.assign_add(tf.cast(tf.logical_not(ok), tf.int64))
            self.step.assign_add(1)
            out["finite"] = ok
            return out

        return train_step

    # -- monitoring ---------------------------------------------------------------------------------------------
    def _image_summary(self, writer, images, step):
        """An input image of the current batch with the model's predicted masks (TensorBoard)."""
        import numpy as np
        import tensorflow as tf

        img = images.values[0] if hasattr(images, "values") else images
        img = tf.convert_to_tensor(img)[:1]
        rgb = img[0].numpy() * np.array(self.cfg.model.std_rgb) + np.array(self.cfg.model.mean_rgb)
        rgb = np.clip(rgb, 0, 255).astype(np.uint8)
        overlay = rgb
        try:
            from utils.visualize import draw_detections
            from yolact.predictor import Predictor

            s = self.cfg.model.img_size
            result = Predictor(self.cfg, self.model, self.label_map).predict_preprocessed(img, s, s)
            names = self.label_map.names
            names = names[1:] if len(names) == self.cfg.num_classes else names
            overlay = draw_detections(rgb, result, names, score_threshold=0.3, top_k=10)
        except Exception as e:  # monitoring must never stop a training run: fall back to the plain input
            self.log(f"(prediction overlay failed, input image only: {type(e).__name__})")
        with writer.as_default():
            tf.summary.image("predictions", overlay[None], step=step)

    def _validate(self, writer, step):
        o = self.opts
        if not o.val_interval or not o.val_annotations:
            return None
        import tensorflow as tf

        pattern = os.path.join(self.data_dir, "val-*.tfrecord")
        if not tf.io.gfile.glob(pattern):
            self.log(f"(validation skipped: no {pattern})")
            return None
        try:
            from utils.coco_eval import evaluate_dataset
            from yolact.predictor import Predictor
        except ImportError as e:
            self.log(f"(validation skipped: {e})")
            return None
        metrics = evaluate_dataset(Predictor(self.cfg, self.model, self.label_map), o.val_annotations,
                                   tfrecord_pattern=pattern, max_images=o.val_images or None, verbose=False,
                                   progress=False)
        box = metrics.get("box_AP", metrics.get("bbox_AP"))
        mask = metrics.get("mask_AP", metrics.get("segm_AP"))
        self.log(f"[val] step {step}: " + " | ".join(f"{k}: {v:.4f}" for k, v in metrics.items()
                                                       if isinstance(v, float) and k.endswith("AP")))
        if writer is not None:
            with writer.as_default():
                for k, v in metrics.items():
                    if isinstance(v, (int, float)):
                        tf.summary.scalar(f"val/{k}", v, step=step)
        return {"box": box, "mask": mask}

    # -- main loop -----------------------------------------------------------------------------------------
    def _on_signal(self, signum, _frame):
        self.stop_signal = signum
        self.log(f"Received signal {signum}: finishing the current step, then saving.")

    def run(self) -> Dict:
        import numpy as np
        import tensorflow as tf

        self._setup()
        o = self.opts
        ckpt_probe, manager = self._checkpoint()
        if o.resume:
            # Restore weights/optimizer/step first; the data iterator (if saved) is restored below.
            self._restore(ckpt_probe, manager)
        start = int(self.step.numpy())
        dataset, distributed = self._make_dataset(start)
        iterator = iter(dataset)
        use_data_state = o.save_data_state and not distributed
        if o.save_data_state and distributed:
            self.log("(-save_data_state ignored with more than one replica)")
        ckpt, manager = self._checkpoint(iterator if use_data_state else None)
        if o.resume and use_data_state:
            try:
                ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
            except Exception as e:  # noqa: BLE001 (corrupt files raise OpError, IndexError, ValueError...)
                raise TrainError(f"cannot restore the data iterator from {manager.latest_checkpoint} (saved "
                                 f"without -save_data_state?): {' '.join(str(e).split())[:200]}") from None
        writer = tf.summary.create_file_writer(self.logdir) if self.chief else None
        train_step = self._train_step_fn()

        old_handlers = {}
        if sys.platform != "win32" and __import__("threading").current_thread() is __import__("threading").main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old_handlers[sig] = signal.signal(sig, self._on_signal)

        history, window = [], {k: deque(maxlen=100) for k in ("B", "C", "M", "S", "T")}
        times = deque(maxlen=50)
        step = start
        last_batch_images = None
        self.log(f"Begin training! {self.cfg.name}, {self.replicas} replica(s), batch {o.batch_size}, "
                 f"steps {start} -> {self.max_iter}, checkpoints in {self.ckpt_dir}")
        try:
            while step < self.max_iter and self.stop_signal is None:
                self.loss_factor.assign(float("nan") if step in self.nan_steps else 1.0)
                t0 = time.perf_counter()
                batch = next(iterator)
                lr = float(self.schedule(step))
                out = train_step(batch)
                out = {k: v.numpy() for k, v in out.items()}
                dt = time.perf_counter() - t0
                if step != start:
                    times.append(dt)
                last_batch_images = batch[0]
                step += 1
                rec = {"step": step - 1, "lr": lr, "finite": bool(out["finite"]),
                       **{k: float(out[k]) for k in ("B", "C", "M", "S", "total")}}
                history.append(rec)
                if rec["finite"]:
                    for k, key in zip(("B", "C", "M", "S", "T"), ("B", "C", "M", "S", "total")):
                        window[k].append(rec[key])
                else:
                    self.log(f"step {step - 1}: non-finite loss ({rec['total']}), update skipped "
                             f"({int(self.skipped.numpy())} so far)")
                if (step - 1) % o.print_interval == 0 or step == self.max_iter:
                    self._print(step - 1, window, lr, times, writer)
                if step % o.save_interval == 0 and step < self.max_iter:
                    self._save(manager, step, writer, last_batch_images)
                if o.val_interval and step % o.val_interval == 0:
                    self._validate(writer, step)
                if self.stop_at_step is not None and step >= self.stop_at_step:
                    self.stop_signal = signal.SIGTERM
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
        self._save(manager, step, writer, last_batch_images)
        final = None
        if self.stop_signal is None:
            final = os.path.join(self.ckpt_dir, f"{self.cfg.name}_{step}.weights.h5")
            self.model.save_weights(final)
            self.log(f"Final weights: {final}")
        if writer is not None:
            writer.flush()
        return {"step": step, "skipped": int(self.skipped.numpy()), "history": history, "final_weights": final,
                "checkpoint": manager.latest_checkpoint, "interrupted": self.stop_signal,
                "ckpt_dir": self.ckpt_dir, "lr": float(np.float32(self.schedule(step)))}

    def _save(self, manager, step, writer, images):
        path = manager.save(checkpoint_number=step)
        self.log(f"Saved checkpoint {path} (step {step})")
        if writer is not None and images is not None:
            self._image_summary(writer, images, step)

    def _print(self, step, window, lr, times, writer):
        import tensorflow as tf

        avg = {k: (sum(v) / len(v) if v else float("nan")) for k, v in window.items()}
        sec = (sum(times) / len(times)) if times else float("nan")
        ips = self.opts.batch_size / sec if times else float("nan")
        eta = str(datetime.timedelta(seconds=int((self.max_iter - step) * sec))) if times else "?"
        self.log(f"[{step:7d}] B: {avg['B']:.3f} | C: {avg['C']:.3f} | M: {avg['M']:.3f} | S: {avg['S']:.3f} | "
                 f"T: {avg['T']:.3f} || lr: {lr:.6g} | {ips:.2f} img/s | ETA: {eta}")
        if writer is not None:
            with writer.as_default():
                for k, v in avg.items():
                    tf.summary.scalar(f"loss/{'total' if k == 'T' else k}", v, step=step)
                tf.summary.scalar("lr", lr, step=step)
                if times:
                    tf.summary.scalar("images_per_second", ips, step=step)


def main(argv):
    if len(argv) > 1:
        print(f"train.py: unexpected arguments {argv[1:]}", file=sys.stderr)
        return 2
    try:
        summary = Trainer(options_from_flags()).run()
    except TrainError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 1
    if summary["interrupted"] == signal.SIGINT:
        return 130
    print(json.dumps({k: summary[k] for k in ("step", "skipped", "checkpoint", "final_weights")}))
    return 0


if __name__ == "__main__":
    _define_flags()
    app.run(main)
