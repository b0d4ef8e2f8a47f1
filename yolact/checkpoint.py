"""A self-describing checkpoint folder: ``config.json`` and ``label_map.json`` beside the weights.

Layout written by training (``train.py``), by the weight converter beside a ``.weights.h5`` and by every export::

    RUN_DIR/
      config.json          every field of the resolved YolactConfig (config.to_dict), after all flags
      label_map.json       dataset category ids <-> class channels (yolact/ops/label_map.py)
      ckpt-N.index/.data   tf.train.CheckpointManager checkpoints (training)
      *.weights.h5         final / converted weights

Later commands need only ``-checkpoint PATH`` where PATH is the folder, a checkpoint prefix inside it or a
``.weights.h5`` inside it: :func:`resolve_run` finds the folder's ``config.json`` and ``label_map.json``. An explicit
``config_name`` / ``img_size`` / ``label_map`` that contradicts the saved files is an error, not a silent change.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from typing import NamedTuple, Optional

from yolact.ops import label_map as label_map_lib

CONFIG_FILENAME = "config.json"


class RunFilesError(ValueError):
    """The checkpoint folder's config/label map is missing, unreadable or contradicts an explicit flag."""


class CheckpointError(ValueError):
    """Nothing loadable at the checkpoint path, or weights that do not fit the config (one-line message)."""


class ResolvedRun(NamedTuple):
    """What :func:`resolve_run` found: the config, the label map and the folder that described them (or None)."""

    cfg: object
    label_map: label_map_lib.LabelMap
    run_dir: Optional[str]


def run_dir_of(checkpoint: str) -> str:
    """The folder that describes ``checkpoint`` (a folder, a checkpoint prefix or a weights file inside it)."""
    checkpoint = os.fspath(checkpoint)
    return checkpoint if os.path.isdir(checkpoint) else os.path.dirname(os.path.abspath(checkpoint))


def _atomic_write_json(path: str, data) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_run_files(folder: str, cfg, label_map: label_map_lib.LabelMap) -> None:
    """Write ``config.json`` (every field of ``cfg``) and ``label_map.json`` into ``folder`` (created if needed),
    each atomically (temporary file + rename).

    Raises:
      ValueError: the label map's class count differs from ``cfg.num_classes``.
    """
    from config import to_dict

    if label_map.num_classes != cfg.num_classes:
        raise ValueError(f"label map has {label_map.num_classes} classes incl. background, config {cfg.num_classes}")
    os.makedirs(folder, exist_ok=True)
    _atomic_write_json(os.path.join(folder, CONFIG_FILENAME), to_dict(cfg))
    _atomic_write_json(os.path.join(folder, label_map_lib.LABEL_MAP_FILENAME), label_map.to_json_dict())


def read_config(folder: str):
    """The YolactConfig saved in ``folder/config.json``.

    Raises:
      RunFilesError: missing, not json, or not a config written by :func:`write_run_files`.
    """
    from config import from_dict

    path = os.path.join(folder, CONFIG_FILENAME)
    if not os.path.isfile(path):
        raise RunFilesError(f"no {CONFIG_FILENAME} in {folder}")
    try:
        with open(path, encoding="utf-8") as f:
            return from_dict(json.load(f))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError) as e:
        raise RunFilesError(f"cannot read {path}: {str(e).splitlines()[0]}") from None


def resolve_run(checkpoint: Optional[str], config_name: Optional[str] = None, img_size: Optional[int] = None,
                label_map_path: Optional[str] = None) -> ResolvedRun:
    """The config and label map for ``checkpoint``: from its folder's ``config.json`` / ``label_map.json`` when
    present, else from the explicit ``config_name`` (a preset), ``img_size`` and ``label_map_path`` (COCO's 80
    categories when the model has 81 classes and no label map is given: converted original weights).

    Args:
      checkpoint: a run folder, a checkpoint prefix or a ``.weights.h5``; None for a fresh model.
      config_name, img_size, label_map_path: explicit flags; each must agree with the saved files when both exist.

    Raises:
      RunFilesError: ``checkpoint`` does not exist; no saved config and no ``config_name``; unreadable files; an explicit value that contradicts
        the saved config or label map (one-line message naming both values).
    """
    from config import get_config

    if checkpoint and not (os.path.exists(checkpoint) or os.path.exists(f"{checkpoint}.index")):
        raise RunFilesError(f"checkpoint not found: {checkpoint} (expected a run folder, a checkpoint prefix or a "
                            ".weights.h5)")
    folder = run_dir_of(checkpoint) if checkpoint else None
    saved_cfg = None
    if folder and os.path.isfile(os.path.join(folder, CONFIG_FILENAME)):
        saved_cfg = read_config(folder)
    explicit_lm = None
    if label_map_path:
        try:
            explicit_lm = label_map_lib.read_label_map(label_map_path)
        except (FileNotFoundError, label_map_lib.LabelMapError) as e:
            raise RunFilesError(str(e)) from None
    if saved_cfg is not None:
        cfg = saved_cfg
        if config_name and config_name != cfg.name:
            raise RunFilesError(f"-config {config_name} contradicts {folder}/{CONFIG_FILENAME} ({cfg.name})")
        if img_size and int(img_size) != cfg.img_size:
            raise RunFilesError(f"-img_size {img_size} contradicts {folder}/{CONFIG_FILENAME} (img_size {cfg.img_size})")
        saved_lm_path = os.path.join(folder, label_map_lib.LABEL_MAP_FILENAME)
        saved_lm = None
        if os.path.isfile(saved_lm_path):
            try:
                saved_lm = label_map_lib.read_label_map(saved_lm_path)
            except label_map_lib.LabelMapError as e:
                raise RunFilesError(str(e)) from None
        if explicit_lm is not None and saved_lm is not None and explicit_lm != saved_lm:
            raise RunFilesError(f"-label_map {label_map_path} contradicts {saved_lm_path}")
        lm = saved_lm or explicit_lm
        if lm is None:
            if cfg.num_classes != 81:
                raise RunFilesError(f"{folder} has no {label_map_lib.LABEL_MAP_FILENAME} and the model has "
                                    f"{cfg.num_classes} classes: pass -label_map")
            lm = label_map_lib.coco_label_map()
    else:
        if not config_name:
            where = f"{folder}/{CONFIG_FILENAME} not found" if folder else "no -checkpoint"
            raise RunFilesError(f"{where}: pass -config (and -img_size / -label_map as trained)")
        lm = explicit_lm or label_map_lib.coco_label_map()
        try:
            cfg = get_config(config_name, num_classes=lm.num_classes, img_size=img_size)
        except ValueError as e:
            raise RunFilesError(str(e)) from None
    if lm.num_classes != cfg.num_classes:
        raise RunFilesError(f"label map has {lm.num_classes} classes incl. background, config has {cfg.num_classes}")
    return ResolvedRun(cfg, lm, folder if saved_cfg is not None else None)


def load_model(cfg, checkpoint: str):
    """A built Yolact (BatchNorm frozen, inference) with weights from ``checkpoint``.

    Checkpoints: a ``.weights.h5`` (``model.save_weights`` / utils/convert_weights.py), or a training checkpoint
    written by ``tf.train.CheckpointManager`` for ``tf.train.Checkpoint(model_variables=checkpoint_variables(model))``
    (a directory → its latest checkpoint, or a prefix such as ``run/ckpt-12``); only the model's variables are read.

    Args:
      cfg: YolactConfig matching the checkpoint (e.g. ``resolve_run(checkpoint).cfg``).
      checkpoint: ``*.weights.h5``, a training checkpoint directory (latest checkpoint) or a checkpoint prefix.

    Raises:
      CheckpointError: nothing found at ``checkpoint``, weights that do not fit ``cfg``, or files that cannot be
        read (truncated ``.data`` / ``.weights.h5``): one line naming the file.
    """
    import tensorflow as tf

    from yolact.model import build_model, checkpoint_variables

    checkpoint = os.fspath(checkpoint)
    if checkpoint.endswith(".weights.h5"):
        if not os.path.isfile(checkpoint):
            raise CheckpointError(f"weights file not found: {checkpoint}")
        try:
            return build_model(cfg, freeze_bn=True, weights=checkpoint)
        except ValueError as e:
            raise CheckpointError(f"cannot load {checkpoint} into {cfg.name}: {_first_line(e)}") from None
        except Exception as e:  # noqa: BLE001 -- h5py / Keras errors of a truncated or corrupt file
            raise CheckpointError(f"cannot read {checkpoint} (truncated or corrupt?): {_first_line(e)}") from None
    prefix = tf.train.latest_checkpoint(checkpoint) if os.path.isdir(checkpoint) else checkpoint
    if not prefix or not tf.io.gfile.exists(prefix + ".index"):
        weights = sorted(glob.glob(os.path.join(checkpoint, "*.weights.h5"))) if os.path.isdir(checkpoint) else []
        if len(weights) == 1:  # a run folder holding only its final weights (or converted weights + run files)
            return load_model(cfg, weights[0])
        raise CheckpointError(f"no checkpoint found at {checkpoint} (expected a .weights.h5, a checkpoint "
                              "directory or prefix)")
    model = build_model(cfg, freeze_bn=True)
    try:
        tf.train.Checkpoint(model_variables=checkpoint_variables(model)).read(prefix).expect_partial()\
            .assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:
        raise CheckpointError(f"checkpoint {prefix} does not fit {cfg.name}: {_first_line(e)}") from None
    except Exception as e:  # noqa: BLE001 -- tf.errors.OpError, IndexError "Read less bytes than requested", ...
        raise CheckpointError(f"cannot read checkpoint {prefix} (a truncated or corrupt .index / .data file?): "
                              f"{_first_line(e)}") from None
    return model


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


__all__ = ["CONFIG_FILENAME", "RunFilesError", "CheckpointError", "ResolvedRun", "run_dir_of", "write_run_files",
           "read_config", "resolve_run", "load_model"]
