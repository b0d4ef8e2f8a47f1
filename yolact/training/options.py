"""Training options, their validation and the resolved config of a run (no TensorFlow imported here).

:func:`validate_options` checks every option on its own, before anything is read or built; :func:`resolve_config`
turns the options, the dataset's label map and (with ``resume``) the run folder's ``config.json`` into the one
:class:`config.YolactConfig` the run trains with. Its ``train`` section holds the values actually used (lr,
momentum, weight decay, warmup, ``max_iter``, ``lr_steps`` after the original's batch-size autoscale, batch
size) and its ``parser`` section the augmentation switches, so the run folder's ``config.json`` describes the run.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

from utils.cli import UserError

MIXED_PRECISION = ("none", "float16", "bfloat16")
AUGMENT_FIELDS = ("augment_photometric_distort", "augment_expand", "augment_random_sample_crop",
                  "augment_random_mirror")


class OptionError(UserError):
    """An option (flag) the user can fix, or options that contradict the run folder: one line, exit 2."""


@dataclasses.dataclass
class TrainOptions:
    """What a training run is asked to do (train.py's flags; see there for each one's help).

    ``config``/``img_size`` None: ``yolact_base`` at its own size for a new run, the run folder's ``config.json``
    with ``resume``. ``lr``, ``momentum``, ``weight_decay``, ``train_iter``, ``warmup_iter``, ``lr_steps`` and
    ``augment`` None: the config's values (autoscaled by ``batch_size / 8`` for a new run unless ``no_autoscale``;
    as saved for a resumed one). ``batch_size`` None: 8 for a new run, the saved one with ``resume``.
    """

    name: str = "coco"
    tfrecord_dir: str = "data/tfrecords"
    weights: str = "weights"
    config: Optional[str] = None
    img_size: Optional[object] = None  # int S, (H, W) or "HxW" (config.parse_img_size)
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    momentum: Optional[float] = None
    weight_decay: Optional[float] = None
    train_iter: Optional[int] = None
    warmup_iter: Optional[int] = None
    lr_steps: Optional[Sequence[int]] = None
    no_autoscale: bool = False
    augment: Optional[bool] = None
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
    save_data_state: bool = False
    shuffle: bool = True
    clip_grad_norm: float = 0.0
    overwrite: bool = False

    @property
    def run_dir(self) -> str:
        """WEIGHTS/NAME: config.json, label_map.json, checkpoints, logs/ and the final .weights.h5."""
        return os.path.join(self.weights, self.name)


def _parse_lr_steps(values) -> tuple:
    try:
        steps = tuple(int(str(v).strip()) for v in values)
    except ValueError:
        raise OptionError(f"-lr_steps must be integers, got {','.join(map(str, values))}") from None
    if any(s <= 0 for s in steps) or any(b <= a for a, b in zip(steps, steps[1:])):
        raise OptionError(f"-lr_steps must be increasing positive iterations, got {','.join(map(str, steps))}")
    return steps


def _img_size_check(img_size):
    """``(ok, message)`` for ``-img_size``: S or HxW, both sides >= 64."""
    from config import check_min_img_size, parse_img_size

    if img_size is None:
        return True, ""
    try:
        check_min_img_size(parse_img_size(img_size), "-img_size")
    except ValueError as e:
        return False, str(e) if str(e).startswith("-img_size") else f"-{e}"
    return True, ""


def validate_options(o: TrainOptions) -> TrainOptions:
    """Check every option on its own (before any file is read or anything built); return them with ``lr_steps``
    as a tuple of ints.

    Raises:
      OptionError: the first invalid option, one line naming the flag and the value.
    """
    checks = [
        (o.lr is None or o.lr > 0, f"-lr must be > 0, got {o.lr}"),
        (o.momentum is None or 0 <= o.momentum < 1, f"-momentum must be in [0, 1), got {o.momentum}"),
        (o.weight_decay is None or o.weight_decay >= 0, f"-weight_decay must be >= 0, got {o.weight_decay}"),
        (o.train_iter is None or o.train_iter >= 1, f"-train_iter must be >= 1, got {o.train_iter}"),
        (o.warmup_iter is None or o.warmup_iter >= 0, f"-warmup_iter must be >= 0, got {o.warmup_iter}"),
        (o.batch_size is None or o.batch_size >= 1, f"-batch_size must be >= 1, got {o.batch_size}"),
        _img_size_check(o.img_size),
        (o.print_interval >= 1, f"-print_interval must be >= 1, got {o.print_interval}"),
        (o.save_interval >= 1, f"-save_interval must be >= 1, got {o.save_interval}"),
        (o.keep_checkpoints >= 1, f"-keep_checkpoints must be >= 1, got {o.keep_checkpoints}"),
        (o.val_interval >= 0 and o.val_images >= 0, "-val_interval and -val_images must be >= 0"),
        (o.clip_grad_norm >= 0, f"-clip_grad_norm must be >= 0, got {o.clip_grad_norm}"),
        (o.mixed_precision in MIXED_PRECISION,
         f"-mixed_precision must be one of {', '.join(MIXED_PRECISION)}, got {o.mixed_precision!r}"),
        (not o.deterministic or o.seed is not None, "-deterministic needs -seed"),
        (not (o.clip_grad_norm and o.mixed_precision == "float16"),
         "-clip_grad_norm does not combine with -mixed_precision float16 (loss-scaled gradients); use bfloat16"),
        (not (o.resume and o.init), "-resume continues the run's own weights: drop -init"),
        (not (o.resume and o.overwrite), "-resume continues the run folder, -overwrite starts it anew: pick one"),
        (not o.val_interval or o.val_annotations, "-val_interval needs -val_annotations"),
        (bool(o.name) and os.sep not in o.name, f"-name must be a plain folder name, got {o.name!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise OptionError(message)
    if o.config is not None:
        from config import config_names

        if o.config not in config_names():
            raise OptionError(f"unknown -config {o.config!r}; choose one of: {', '.join(config_names())}")
    if o.lr_steps is not None:
        o = dataclasses.replace(o, lr_steps=_parse_lr_steps(o.lr_steps))
    return o


def check_val_annotations(path: str) -> None:
    """``-val_annotations`` must be a COCO json: an object with ``images``, ``annotations`` and ``categories``
    lists (checked when validation is on, before anything is built or written).

    Raises:
      OptionError: missing or unreadable file, not json, or not such an object (one line naming the file).
    """
    import json

    if not os.path.isfile(path):
        raise OptionError(f"-val_annotations not found: {path}")
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise OptionError(f"-val_annotations {path} is not readable json: {' '.join(str(e).split())[:200]}") from None
    missing = [k for k in ("images", "annotations", "categories")
               if not isinstance(data, dict) or not isinstance(data.get(k), list)]
    if missing:
        raise OptionError(f"-val_annotations {path} is not a COCO annotation file (no {', '.join(missing)} "
                          "list)")


def check_img_size(cfg) -> None:
    """The input size must suit the network: the backbone's strides must leave at least one cell at every level
    P3..P7 along both axes (every backbone does from 64 px on, the flags' minimum), and YOLACT++'s mask-IoU net
    (yolact/maskiou.py: five unpadded 3x3 stride-2 convs) needs prototypes of at least 63 px along both axes
    (inputs of about 250 px and more).

    Raises:
      OptionError: some level would be empty (e.g. 17 px for EfficientNet-Lite0), or prototypes too small for the
        mask-IoU net; one line naming the size.
    """
    from config import min_mask_side

    if cfg.model.is_square:
        sizes = cfg.feature_map_sizes()
        empty = min(sizes) < 1
    else:
        sizes = [f"{h}x{w}" for h, w in cfg.feature_map_shapes()]
        empty = min(min(hw) for hw in cfg.feature_map_shapes()) < 1
    if empty:
        raise OptionError(f"-img_size {cfg.img_size_text} is too small for {cfg.model.backbone}: feature maps "
                          f"P3..P7 would be {list(sizes)}")
    if cfg.model.use_maskiou:
        need = min_mask_side(len(cfg.model.maskiou_channels))
        hp, wp = cfg.model.proto_output_shape
        if min(hp, wp) < need:
            raise OptionError(f"-img_size {cfg.img_size_text} is too small for the mask-IoU net of {cfg.name}: "
                              f"prototypes {hp}x{wp}, it needs at least {need}x{need} (about 250 px inputs)")


def _resolved_train(o: TrainOptions, base_train, autoscale: bool, log):
    """``base_train`` with the explicit options and, for a new run, the original's batch-size autoscale."""
    from utils.lr_schedule import autoscale as autoscale_fn

    train = base_train
    batch_size = o.batch_size or (8 if autoscale else train.batch_size)
    if autoscale:
        scaled = autoscale_fn(train.lr, train.max_iter, train.lr_steps, batch_size, not o.no_autoscale)
        if scaled.factor != 1.0:
            log(f"Scaling parameters by {scaled.factor:.2f} to account for a batch size of {batch_size}.")
        train = dataclasses.replace(train, lr=float(scaled.lr), max_iter=int(scaled.max_iter),
                                    lr_steps=tuple(int(s) for s in scaled.lr_steps))
    explicit = {"lr": o.lr, "momentum": o.momentum, "weight_decay": o.weight_decay, "max_iter": o.train_iter,
                "lr_warmup_until": o.warmup_iter, "lr_steps": o.lr_steps}
    explicit = {k: (tuple(v) if k == "lr_steps" else v) for k, v in explicit.items() if v is not None}
    return dataclasses.replace(train, batch_size=int(batch_size), **explicit)


def resolve_config(o: TrainOptions, label_map, log=print):
    """The config a run trains with, and whether it came from the run folder.

    A new run: preset ``o.config`` (default ``yolact_base``) with the dataset's class count and ``o.img_size``,
    train values autoscaled (original) then overridden by explicit options. With ``o.resume`` and a
    ``RUN_DIR/config.json``: that config, whose architecture explicit ``-config`` / ``-img_size`` must not
    contradict, with explicit training options (e.g. a longer ``-train_iter``) applied as given.

    Args:
      o: validated options.
      label_map: the dataset's ``LabelMap``.
    Returns:
      ``(cfg, resumed_from_config_json)``.
    Raises:
      OptionError: a contradiction with the run folder (config, img_size, label map), an unreadable config.json,
        or an input size the backbone cannot take.
    """
    from config import get_config
    from yolact import checkpoint
    from yolact.ops import label_map as label_map_lib

    saved = None
    if o.resume and os.path.isfile(os.path.join(o.run_dir, checkpoint.CONFIG_FILENAME)):
        try:
            saved = checkpoint.resolve_run(o.run_dir, config_name=o.config, img_size=o.img_size)
        except checkpoint.RunFilesError as e:
            raise OptionError(f"-resume: {e}") from None
        if saved.label_map != label_map:
            raise OptionError(f"-resume: the dataset's {label_map_lib.LABEL_MAP_FILENAME} differs from "
                              f"{o.run_dir}/{label_map_lib.LABEL_MAP_FILENAME}")
        cfg = saved.cfg
    else:
        try:
            cfg = get_config(o.config or "yolact_base", num_classes=label_map.num_classes, img_size=o.img_size)
        except ValueError as e:
            raise OptionError(str(e)) from None
    check_img_size(cfg)
    cfg = dataclasses.replace(cfg, train=_resolved_train(o, cfg.train, autoscale=saved is None, log=log))
    if o.augment is not None:
        cfg = dataclasses.replace(cfg, parser=dataclasses.replace(
            cfg.parser, **{field: bool(o.augment) for field in AUGMENT_FIELDS}))
    return cfg, saved is not None


__all__ = ["MIXED_PRECISION", "OptionError", "TrainOptions", "validate_options", "check_val_annotations",
           "check_img_size", "resolve_config"]
