"""A self-describing checkpoint folder: ``config.json`` and ``label_map.json`` beside the weights.

Layout written by training (``train.py``), by the weight converter beside a ``.weights.h5`` and by every export::

    RUN_DIR/
      config.json          every field of the resolved YolactConfig (config.to_dict), after all flags
      label_map.json       dataset category ids <-> class channels (yolact/ops/label_map.py)
      ckpt-N.index/.data   tf.train.CheckpointManager checkpoints (training; with the config hash)
      *.weights.h5         final / converted weights (training's: with the config hash, see write_weights)
      .lock                held by the training run writing the folder (utils/run_lock.py)

Later commands need only ``-checkpoint PATH`` where PATH is the folder, a checkpoint prefix inside it or a
``.weights.h5`` inside it: :func:`resolve_run` finds the folder's ``config.json`` and ``label_map.json``. An explicit
``config_name`` / ``img_size`` / ``label_map`` that contradicts the saved files is an error, not a silent change,
and so are weights whose recorded :func:`config_hash` differs from ``config.json`` (:func:`check_config_hash`).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from typing import NamedTuple, Optional

from utils.atomic import atomic_file, write_text
from yolact.ops import label_map as label_map_lib

CONFIG_FILENAME = "config.json"
# The config hash recorded with the weights (see config_hash): a checkpoint variable, an attribute of .weights.h5
CONFIG_HASH_KEY = "config_hash/.ATTRIBUTES/VARIABLE_VALUE"
CONFIG_HASH_ATTR = "yolact_config_hash"
HASHED_SECTIONS = ("model", "anchors")


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


def _json_text(data) -> str:
    return json.dumps(data, indent=1) + "\n"


def write_run_files(folder: str, cfg, label_map: label_map_lib.LabelMap) -> None:
    """Write ``config.json`` (every field of ``cfg``) and ``label_map.json`` into ``folder`` (created if needed),
    each atomically (utils/atomic.py: a complete new file or the previous one, also on a full disk).

    Args:
      folder: the run folder (str or path).
      cfg: the YolactConfig; label_map: its LabelMap.

    Raises:
      ValueError: the label map's class count differs from ``cfg.num_classes`` (nothing written).
      utils.atomic.DiskFullError: the disk filled up (the previous file stays).
      OSError: the folder cannot be written.
    """
    from config import to_dict

    if label_map.num_classes != cfg.num_classes:
        raise ValueError(f"label map has {label_map.num_classes} classes incl. background, config {cfg.num_classes}")
    os.makedirs(folder, exist_ok=True)
    write_text(os.path.join(folder, CONFIG_FILENAME), _json_text(to_dict(cfg)))
    write_text(os.path.join(folder, label_map_lib.LABEL_MAP_FILENAME), _json_text(label_map.to_json_dict()))


def read_config(folder: str):
    """The YolactConfig saved in ``folder/config.json``, every value type-checked (config.py ``from_dict``).

    Raises:
      RunFilesError: missing, not json, or not a config written by :func:`write_run_files` (an unknown field, a
        value of the wrong type such as ``"img_size": "256"``): one line naming the file and the field.
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


def config_hash(cfg) -> str:
    """sha256 (hex) of the canonical json of the config's ``model`` and ``anchors`` sections: what the weights
    mean (architecture, input size and normalisation, class count, anchors). ``name``, ``parser``, ``loss``,
    ``detection`` and ``train`` are left out: a resumed run may change them (e.g. a longer ``-train_iter``) and
    the same weights still fit. Recorded with every training checkpoint and ``.weights.h5`` written by
    :func:`write_weights`; :func:`check_config_hash` compares it on load."""
    from config import to_dict

    data = {k: v for k, v in to_dict(cfg).items() if k in HASHED_SECTIONS}
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def recorded_config_hash(checkpoint: str) -> Optional[str]:
    """The config hash recorded in ``checkpoint`` (a ``.weights.h5`` or a checkpoint prefix), or None when it
    holds none (written before hashes, or by another tool) or cannot be read (the loader reports that)."""
    checkpoint = os.fspath(checkpoint)
    try:
        if checkpoint.endswith(".weights.h5"):
            import h5py

            with h5py.File(checkpoint, "r") as f:
                value = f.attrs.get(CONFIG_HASH_ATTR)
        else:
            import tensorflow as tf

            reader = tf.train.load_checkpoint(checkpoint)
            value = reader.get_tensor(CONFIG_HASH_KEY) if reader.has_tensor(CONFIG_HASH_KEY) else None
    except Exception:  # noqa: BLE001 (a truncated / foreign file: the loader gives the one-line error)
        return None
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return str(value) if value is not None else None


def check_config_hash(cfg, checkpoint: str, config_path: Optional[str] = None) -> None:
    """Check that ``checkpoint`` was written for ``cfg`` (:func:`config_hash`); a checkpoint without a recorded
    hash passes.

    Raises:
      CheckpointError: the recorded hash differs: config.json and the weights describe different models.
    """
    recorded = recorded_config_hash(checkpoint)
    if recorded is not None and recorded != config_hash(cfg):
        where = config_path or os.path.join(run_dir_of(checkpoint), CONFIG_FILENAME)
        raise CheckpointError(f"{checkpoint} was saved for another model than {where} describes (config hash "
                              f"{recorded[:12]} vs {config_hash(cfg)[:12]}): restore the run's own config.json, "
                              "or train anew with -overwrite")


def write_weights(model, path: str, cfg=None) -> str:
    """``model``'s weights as a Keras ``.weights.h5`` at ``path``, with :func:`config_hash` of ``cfg`` as an
    attribute (none when ``cfg`` is None: weights meant for any img_size, e.g. converted ones), written atomically: Keras serialises into memory (its HDF5 writer crashes the process on a full
    disk, exit 139), then the bytes go through utils/atomic.py.

    Returns:
      ``path``.
    Raises:
      utils.atomic.DiskFullError: the disk filled up (no file at ``path`` changed, no temporary left).
      OSError: the folder cannot be written.
    """
    import io

    import h5py

    path = os.fspath(path)
    buffer = io.BytesIO()
    try:
        from keras.src.saving import saving_lib

        store = saving_lib.H5IOStore(buffer, mode="w")
        saving_lib._save_state(model, weights_store=store, assets_store=None, inner_path="", visited_saveables=set())
        store.close()
    except (ImportError, AttributeError, TypeError):  # another Keras: its public writer on a temporary file
        from utils.atomic import atomic_path

        with atomic_path(path, suffix=".weights.h5") as tmp:
            model.save_weights(tmp)
            if cfg is not None:
                with h5py.File(tmp, "a") as f:
                    f.attrs[CONFIG_HASH_ATTR] = config_hash(cfg)
        return path
    if cfg is not None:
        with h5py.File(buffer, "a") as f:
            f.attrs[CONFIG_HASH_ATTR] = config_hash(cfg)
    with atomic_file(path, "wb") as f:
        f.write(buffer.getbuffer())
    return path


def resolve_run(checkpoint: Optional[str], config_name: Optional[str] = None, img_size=None,
                label_map_path: Optional[str] = None) -> ResolvedRun:
    """The config and label map for ``checkpoint``: from its folder's ``config.json`` / ``label_map.json`` when
    present, else from the explicit ``config_name`` (a preset), ``img_size`` and ``label_map_path`` (COCO's 80
    categories when the model has 81 classes and no label map is given: converted original weights).

    Args:
      checkpoint: a run folder, a checkpoint prefix or a ``.weights.h5``; None for a fresh model.
      config_name, img_size, label_map_path: explicit flags; each must agree with the saved files when both exist
        (``img_size``: int S, ``(H, W)`` or ``"HxW"``, config.py ``parse_img_size``).

    Raises:
      RunFilesError: ``checkpoint`` does not exist; no saved config and no ``config_name``; unreadable files; an
        explicit value that contradicts the saved config or label map, a malformed ``img_size`` (one-line message
        naming both values).
    """
    from config import format_img_size, get_config, parse_img_size

    if img_size is not None:
        try:
            img_size = parse_img_size(img_size)
        except ValueError as e:
            raise RunFilesError(f"-{e}") from None

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
        if img_size and img_size != cfg.img_size:
            raise RunFilesError(f"-img_size {format_img_size(img_size)} contradicts {folder}/{CONFIG_FILENAME} "
                                f"(img_size {cfg.img_size_text})")
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
      CheckpointError: nothing found at ``checkpoint``, weights that do not fit ``cfg``, files that cannot be read
        (truncated ``.data`` / ``.weights.h5``), or weights saved for another config (:func:`check_config_hash`):
        one line naming the file.
    """
    import tensorflow as tf

    from yolact.model import build_model, checkpoint_variables

    checkpoint = os.fspath(checkpoint)
    if checkpoint.endswith(".weights.h5"):
        if not os.path.isfile(checkpoint):
            raise CheckpointError(f"weights file not found: {checkpoint}")
        check_config_hash(cfg, checkpoint)
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
    check_config_hash(cfg, prefix)
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
           "read_config", "config_hash", "recorded_config_hash", "check_config_hash", "write_weights", "resolve_run",
           "load_model"]
