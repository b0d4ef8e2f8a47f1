"""The original's state_dict (PyTorch naming and layouts) <-> the Keras Yolact's weights.

original: yolact.py ``Yolact.load_weights`` / ``init_weights``, backbone.py ``ResNetBackbone.init_backbone`` /
``DarkNetBackbone.init_backbone``; shared/docs/yolact_reference.md. The command line over it is
utils/convert_weights.py; ``train.py -init`` (yolact/training/task.py ``YolactTask.initialize``) uses it directly.

Accepted sources (:func:`load_state_dict_file`): ``.pth`` (PyTorch legacy or zip format; ``torch.load`` when torch is
installed, else utils/torch_pickle.py) and ``.npz`` with the same keys (the fixture's ``sd/`` prefix is stripped,
float16 is cast to float32). Kinds (:func:`detect_kind`, :func:`to_yolact_keys`):

* a full YOLACT state_dict (``backbone.*``, ``fpn.*``, ``proto_net.*``, ``prediction_layers.0.*``,
  ``semantic_seg_conv.*``). As the original's ``Yolact.load_weights``, legacy ``backbone.layer*`` keys and
  ``fpn.downsample_layers.{i}`` with i >= 2 are dropped.
* a torchvision ImageNet ResNet (``conv1.*``, ``bn1.*``, ``layer{N}.*``, ``fc.*``): renamed as the original's
  ``ResNetBackbone.init_backbone`` (``layer{N}.`` -> ``layers.{N-1}.``), ``fc.*`` dropped; backbone only.
* the EfficientNet-Lite0 package file (``_conv_stem``, ``_bn0``, ``_blocks.*``): ``_conv_head``, top-level
  ``_bn1`` and ``_fc`` (the classifier head) dropped; backbone only.
* the original's ImageNet Darknet-53 file ``darknet53.pth`` (a ``DarkNetBackbone`` state_dict: ``_preconv.*``,
  ``layers.*``): prefixed with ``backbone.`` as the original's ``DarkNetBackbone.init_backbone`` loads it into
  ``net.backbone``; backbone only. That load is ``strict=False``; here any other key of the file is ignored
  (listed in ``ignored``) while a missing backbone key is still an error (deliberate: the original would leave it
  at its random initialisation silently).

Layouts: conv OIHW -> HWIO, depthwise [C, 1, kh, kw] -> [kh, kw, C, 1], BatchNorm weight/bias/running_mean/
running_var -> gamma/beta/moving_mean/moving_variance (``num_batches_tracked`` ignored). Backbone-only sources
leave the other layers at their glorot_uniform / zero-bias initialisation (original ``Yolact.init_weights``).

YOLACT++ (``yolact_plus_base_54_800000.pth`` -> ``yolact_plus_base``, ``yolact_plus_resnet50_54_800000.pth`` ->
``yolact_plus_resnet50``, or ``.npz`` with the same keys): a DCN ``backbone.layers.{i}.{b}.conv2`` has ``weight``
(OIHW -> the layer's HWIO ``kernel``), ``bias`` and ``conv_offset_mask.weight`` / ``.bias`` (OIHW -> HWIO, 27
output channels: 18 interleaved (dy, dx) offsets then 9 mask logits, kept in that order); the mask-IoU net's convs
are ``maskiou_net.maskiou_net.{0,2,4,6,8,10}.weight/bias``. An ImageNet ResNet has only ``conv2.weight`` for a DCN
block: it becomes the deformable kernel, and the DCN's bias and offset/mask conv keep their zero initialisation
(the original's ``init_backbone`` loads with ``strict=False``).

Fine-tuning to another class count (``train.py -init`` with a dataset whose label map differs from the weights'):
:func:`load_all_but_class_dependent` loads every tensor whose shape does not depend on the class count and leaves
the layers of :func:`class_dependent_prefixes` (``prediction_layers.0.conf_layer``, ``semantic_seg_conv``,
YOLACT++'s ``maskiou_net.maskiou_net.10``) at the model's fresh initialisation, returning them in
``reinitialized``; Keras weights are first turned into an original-naming state_dict by :func:`state_dict_of`, so a
``.weights.h5``, a training checkpoint and a ``.pth`` / ``.npz`` go through the same checks. The original has no
such option (its ``load_weights`` is strict; users delete those keys by hand).

Keras and the model are imported lazily: importing this module loads numpy only, so that a tool can import it
before its quiet TensorFlow start-up (utils/cli.py ``quiet_startup``).
"""

from __future__ import annotations

import collections
import pathlib
import re

import numpy as np

from utils import torch_pickle

_BN_PARAMS = ("weight", "bias", "running_mean", "running_var")
# Keys of the original's DarkNetBackbone state_dict (darknet53.pth); other keys of that file are ignored.
_DARKNET_PREFIXES = ("_preconv.", "layers.")
_MAX_LISTED = 12


class WeightConversionError(ValueError):
    """Missing, unexpected or mis-shaped keys, an unrecognised state_dict, or an unreadable weights file (a
    ValueError, so that tools report it as a user error)."""


def _listing(keys):
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... ({len(keys)} in total)" if len(keys) > _MAX_LISTED else "")


def _to_numpy(value):
    """torch tensor / numpy array -> numpy array (float16/bfloat16 -> float32)."""
    if hasattr(value, "detach"):  # a torch tensor (torch.load path)
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    arr = np.asarray(value)
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    return arr


def _unwrap(obj, path):
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightConversionError(f"{path}: expected a state_dict (name -> tensor), got {type(obj).__name__}")
    return obj


def load_state_dict_file(path) -> "collections.OrderedDict[str, np.ndarray]":
    """Read a state_dict from ``.pth`` (legacy or zip format) or ``.npz``.

    original: ``torch.load(path)`` of a ``Yolact.save_weights`` / ImageNet backbone file. A ``{"state_dict": ...}``
    wrapper is unwrapped.

    Args:
      path: ``.npz`` (read with numpy, no pickles), anything else is read as a PyTorch file (``torch.load`` with
        ``weights_only=True`` when torch is installed, else utils/torch_pickle.py).

    Returns:
      OrderedDict original key -> numpy array in the file's order and torch layout (float16 / bfloat16 cast to
      float32, other dtypes kept; an ``sd/`` key prefix, as in the reference fixture, stripped).

    Raises:
      FileNotFoundError: no such file.
      WeightConversionError: not a state_dict / unreadable format.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                raw = collections.OrderedDict((k, data[k]) for k in data.files)
        except Exception as exc:  # noqa: BLE001 - BadZipFile, EOFError, ValueError, zlib.error of a truncated file
            text = " ".join(str(exc).split()) or type(exc).__name__
            raise WeightConversionError(f"{path}: cannot read as a .npz file, truncated or corrupt? "
                                        f"({type(exc).__name__}: {text})") from None
    else:
        try:
            import torch  # noqa: F401
        except ImportError:
            torch = None
        try:
            if torch is not None:
                obj = torch.load(str(path), map_location="cpu", weights_only=True)
            else:
                obj = torch_pickle.load(path)
        except torch_pickle.TorchPickleError as exc:
            raise WeightConversionError(f"{path}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - torch.load raises many kinds
            raise WeightConversionError(f"{path}: cannot read as a PyTorch file ({type(exc).__name__}: {exc})") from None
        raw = _unwrap(obj, path)
    out = collections.OrderedDict()
    for key, value in raw.items():
        key = key[3:] if key.startswith("sd/") else key
        out[key] = _to_numpy(value)
    return out


def detect_kind(state_dict) -> str:
    """'yolact', 'torchvision_resnet', 'efficientnet_lite' or 'darknet' from the key names (module docstring).

    Args:
      state_dict: mapping original key -> array.

    Raises:
      WeightConversionError: none of these key patterns.
    """
    keys = list(state_dict)
    if any(k.startswith("backbone.") for k in keys):
        return "yolact"
    if any(re.match(r"layer\d+\.", k) for k in keys) or "conv1.weight" in state_dict:
        return "torchvision_resnet"
    if any(k.startswith(("_conv_stem.", "_blocks.")) for k in keys):
        return "efficientnet_lite"
    if any(k.startswith(_DARKNET_PREFIXES[0]) for k in keys):
        return "darknet"
    raise WeightConversionError(f"unrecognised state_dict: keys start with {_listing(keys[:5])}")


def to_yolact_keys(state_dict, kind, num_downsample=2):
    """Rename / drop source keys into the original YOLACT state_dict naming (see module docstring).

    original: yolact.py ``Yolact.load_weights`` (YOLACT: legacy ``backbone.layer*`` and
    ``fpn.downsample_layers.{i >= num_downsample}`` dropped), backbone.py ``ResNetBackbone.init_backbone`` /
    ``DarkNetBackbone.init_backbone`` (ImageNet files).

    Args:
      state_dict: mapping key -> array (values passed through unchanged).
      kind: a :func:`detect_kind` result.
      num_downsample: the FPN's extra downsampling layers kept (the original's ``cfg.fpn.num_downsample``, 2).

    Returns:
      OrderedDict in the source's order.

    Raises:
      WeightConversionError: an unknown ``kind``.
    """
    out = collections.OrderedDict()
    for key, value in state_dict.items():
        if kind == "yolact":
            if key.startswith("backbone.layer") and not key.startswith("backbone.layers"):
                continue
            m = re.match(r"fpn\.downsample_layers\.(\d+)\.", key)
            if m and int(m.group(1)) >= num_downsample:
                continue
            out[key] = value
        elif kind == "torchvision_resnet":
            if key.startswith("fc."):
                continue
            m = re.match(r"layer(\d+)\.(.*)", key)
            out["backbone." + (f"layers.{int(m.group(1)) - 1}.{m.group(2)}" if m else key)] = value
        elif kind == "efficientnet_lite":
            if key.startswith(("_fc.", "_conv_head.", "_bn1.")):
                continue
            out["backbone." + key] = value
        elif kind == "darknet":
            # original DarkNetBackbone.init_backbone: load_state_dict(torch.load(path), strict=False) into backbone;
            # other keys keep their name (no "backbone." prefix), so backbone-only loading lists them as ignored.
            out[("backbone." + key) if key.startswith(_DARKNET_PREFIXES) else key] = value
        else:
            raise WeightConversionError(f"unknown state_dict kind {kind!r}")
    return out


def _keras_targets(model):
    """{original key: (keras variable, layout)} for every weight of a built Yolact, from its
    ``torch_weight_map()``; layout ``"conv"`` (torch OIHW, Keras HWIO), ``"depthwise"`` (torch [C, 1, kh, kw],
    Keras [kh, kw, C, 1]) or ``"vector"`` (copied as is).

    Raises:
      WeightConversionError: a layer is not built, or has no conversion rule.
    """
    return _keras_targets_and_init_only(model)[0]


def _keras_targets_and_init_only(model):
    """(:func:`_keras_targets`, set of the DCN keys an ImageNet backbone does not have: ``bias`` and
    ``conv_offset_mask.*`` of every deformable conv)."""
    import keras

    from yolact.dcn import DeformableConv2D

    targets, init_only = {}, set()
    for prefix, layer in model.torch_weight_map():
        if not layer.built:
            raise WeightConversionError(f"layer {layer.name} is not built: call the model on an input first")
        if isinstance(layer, DeformableConv2D):
            dcn_targets = layer.torch_weight_targets(prefix)
            targets.update(dcn_targets)
            init_only.update(k for k in dcn_targets if k != f"{prefix}.weight")
        elif isinstance(layer, keras.layers.BatchNormalization):
            for param, var in zip(_BN_PARAMS, (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance)):
                targets[f"{prefix}.{param}"] = (var, "vector")
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            targets[f"{prefix}.weight"] = (layer.kernel, "depthwise")
            if layer.use_bias:
                targets[f"{prefix}.bias"] = (layer.bias, "vector")
        elif isinstance(layer, keras.layers.Conv2D):
            targets[f"{prefix}.weight"] = (layer.kernel, "conv")
            if layer.use_bias:
                targets[f"{prefix}.bias"] = (layer.bias, "vector")
        else:
            raise WeightConversionError(f"no conversion rule for layer {layer.name} ({type(layer).__name__})")
    return targets, init_only


# Keras layout -> torch layout (inverse of _to_keras_layout), for 4-D kernels.
_FROM_KERAS_LAYOUT = {"conv": (3, 2, 0, 1), "depthwise": (2, 3, 0, 1)}


def _to_keras_layout(array, layout):
    """Torch layout -> Keras layout of a 4-D ``"conv"`` / ``"depthwise"`` kernel; anything else unchanged."""
    if layout == "conv" and array.ndim == 4:
        return np.transpose(array, (2, 3, 1, 0))  # OIHW -> HWIO
    if layout == "depthwise" and array.ndim == 4:
        return np.transpose(array, (2, 3, 0, 1))  # [C, 1, kh, kw] -> [kh, kw, C, 1]
    return array


def class_dependent_prefixes(model):
    """The original state_dict prefixes of the layers whose shape depends on the class count, in the model's order:
    the head's class-confidence conv ``prediction_layers.0.conf_layer`` (A * C outputs), ``semantic_seg_conv``
    (C - 1) and, for YOLACT++, the mask-IoU net's last conv ``maskiou_net.maskiou_net.{2 * len(channels)}``
    (C - 1). Every other weight has the same shape for any class count.

    Returns:
      list of str, e.g. ``["prediction_layers.0.conf_layer", "semantic_seg_conv"]``.
    """
    layers = [model.head.conf_layer, model.semantic_seg_conv]
    if model.maskiou_net is not None:
        layers.append(model.maskiou_net.convs[-1])
    return [prefix for prefix, layer in model.torch_weight_map() if any(layer is x for x in layers)]


def _source_num_classes(renamed):
    """Classes incl. background of a full YOLACT state_dict (``semantic_seg_conv.weight`` has C - 1 outputs)."""
    weight = renamed.get("semantic_seg_conv.weight")
    return None if weight is None else int(np.shape(weight)[0]) + 1


def state_dict_of(model):
    """The original-naming state_dict of a built Yolact: the inverse of :func:`convert_state_dict`, so that Keras
    weights (a ``.weights.h5`` or a training checkpoint loaded into a model) go through the same key / shape checks
    as an original ``.pth``.

    Returns:
      OrderedDict original key -> float32 numpy array in torch layout (conv OIHW, depthwise [C, 1, kh, kw]), in
      the model's ``torch_weight_map()`` order; no ``num_batches_tracked``.

    Raises:
      WeightConversionError: as :func:`_keras_targets` (a layer not built).
    """
    out = collections.OrderedDict()
    for key, (var, layout) in _keras_targets(model).items():
        value = np.asarray(var.numpy(), np.float32)
        perm = _FROM_KERAS_LAYOUT.get(layout) if value.ndim == 4 else None
        out[key] = np.transpose(value, perm) if perm else value
    return out


def convert_state_dict(state_dict, model, cfg=None, backbone_only=False):
    """Assign an original state_dict to a built :class:`yolact.model.Yolact`.

    Args:
      state_dict: mapping key -> array (from :func:`load_state_dict_file`, or :func:`state_dict_of` a Keras model);
        any kind :func:`detect_kind` knows.
      model: a built Yolact (e.g. ``yolact.model.build_model(cfg)``).
      cfg: the model's config (defaults to ``model.cfg``).
      backbone_only: load only ``backbone.*`` (other source keys are ignored, other model weights keep their
        initialisation). Implied for ImageNet backbone files.

    Returns:
      dict with ``kind``, ``loaded`` (number of tensors assigned) and ``ignored`` (source keys not used because of
      ``backbone_only``).

    Raises:
      WeightConversionError: keys missing from the source, unexpected source keys, or shape mismatches, each
        naming the keys; nothing is assigned in that case.
    """
    summary = _assign(state_dict, model, cfg, backbone_only, reinit_class_dependent=False)
    return {k: summary[k] for k in ("kind", "loaded", "ignored")}


def load_all_but_class_dependent(state_dict, model, cfg=None):
    """:func:`convert_state_dict` for fine-tuning to another class count: when the source's ``semantic_seg_conv``
    has another number of outputs than ``cfg.num_classes - 1``, the layers of :func:`class_dependent_prefixes`
    are not assigned (they keep the model's fresh glorot_uniform kernel / zero bias, as a new model's) and every
    other tensor is loaded and must fit exactly. Same class count, or a backbone-only source: exactly
    :func:`convert_state_dict`. The original has no such option (its ``load_weights`` is strict).

    Args:
      state_dict, model, cfg: as :func:`convert_state_dict` (Keras weights: :func:`state_dict_of` a model of the
        source's config).

    Returns:
      dict with ``kind``, ``loaded``, ``ignored`` (as :func:`convert_state_dict`), ``loaded_keys`` (the original
      keys assigned, sorted), ``reinitialized`` (the class-dependent prefixes left at their initialisation, in
      model order) and ``source_classes`` (the source's class count incl. background for a full YOLACT
      state_dict, else None).

    Raises:
      WeightConversionError: as :func:`convert_state_dict`, for any other missing / unexpected key or shape
        mismatch (another architecture); nothing is assigned then.
    """
    return _assign(state_dict, model, cfg, False, reinit_class_dependent=True)


def _assign(state_dict, model, cfg, backbone_only, reinit_class_dependent):
    """Shared body of :func:`convert_state_dict` and :func:`load_all_but_class_dependent` (the latter's summary)."""
    cfg = model.cfg if cfg is None else cfg
    kind = detect_kind(state_dict)
    renamed = to_yolact_keys(state_dict, kind)
    renamed = collections.OrderedDict((k, v) for k, v in renamed.items() if not k.endswith(".num_batches_tracked"))
    backbone_only = backbone_only or kind != "yolact"
    targets, init_only = _keras_targets_and_init_only(model)
    if kind != "yolact":  # ImageNet backbones: DCN offsets/masks/bias stay at their zero initialisation
        targets = {k: v for k, v in targets.items() if k not in init_only}
    ignored = []
    if backbone_only:
        targets = {k: v for k, v in targets.items() if k.startswith("backbone.")}
        ignored = [k for k in renamed if not k.startswith("backbone.")]
        renamed = collections.OrderedDict((k, v) for k, v in renamed.items() if k.startswith("backbone."))
    missing = set(targets) - set(renamed)
    unexpected = set(renamed) - set(targets)
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
    other_classes = kind == "yolact" and _source_num_classes(renamed) not in (None, cfg.num_classes)
    class_prefixes = class_dependent_prefixes(model) if reinit_class_dependent and other_classes and not backbone_only \
        else []
    converted, mismatched, reinit = {}, [], set()
    for key in set(targets) & set(renamed):
        var, layout = targets[key]
        value = _to_keras_layout(np.asarray(renamed[key]), layout)
        if tuple(value.shape) == tuple(var.shape):
            converted[key] = value
        elif key.rsplit(".", 1)[0] in class_prefixes:
            reinit.add(key.rsplit(".", 1)[0])
        else:
            mismatched.append(f"{key} {tuple(renamed[key].shape)} -> {tuple(value.shape)} vs model {tuple(var.shape)}")
    # a class-dependent layer is loaded or re-initialised as a whole (kernel and bias)
    for key in [k for k in converted if k.rsplit(".", 1)[0] in reinit]:
        del converted[key]
    if mismatched:
        problems.append(f"shape mismatch ({len(mismatched)}): {_listing(mismatched)}")
    if problems:
        raise WeightConversionError(
            f"state_dict ({kind}) does not fit config {cfg.name!r} (backbone {cfg.model.backbone}, "
            f"{cfg.num_classes} classes): " + "; ".join(problems)
        )
    for key, value in converted.items():
        var = targets[key][0]
        var.assign(value.astype(var.dtype))
    return {"kind": kind, "loaded": len(converted), "loaded_keys": sorted(converted), "ignored": ignored,
            "reinitialized": [p for p in class_prefixes if p in reinit],
            "source_classes": _source_num_classes(renamed) if kind == "yolact" else None}


def _run_files(config_name, num_classes, label_map_path, folder):
    """``(cfg, label_map)`` to write beside the converted weights (yolact/checkpoint.py run folder).

    Raises:
      ValueError: see :func:`convert_file`.
    """
    from config import get_config
    from yolact import checkpoint
    from yolact.ops import label_map as label_map_lib

    if label_map_path:
        label_map = label_map_lib.read_label_map(label_map_path)
        num_classes = num_classes or label_map.num_classes
    cfg = get_config(config_name, num_classes=num_classes)
    if not label_map_path:
        if cfg.num_classes != 81:
            raise ValueError(f"{cfg.num_classes} classes: pass -label_map (COCO's 80 categories are assumed only "
                             "for 81-class models)")
        label_map = label_map_lib.coco_label_map()
    if label_map.num_classes != cfg.num_classes:
        raise ValueError(f"-label_map has {label_map.num_classes} classes incl. background, the model "
                         f"{cfg.num_classes}")
    if (folder / checkpoint.CONFIG_FILENAME).is_file():
        from config import to_dict

        existing = checkpoint.read_config(str(folder))
        if to_dict(existing) != to_dict(cfg):
            raise ValueError(f"{folder}/{checkpoint.CONFIG_FILENAME} describes another model ({existing.name}, "
                             f"{existing.num_classes} classes, {existing.img_size_text} px): write into another folder")
    return cfg, label_map


def convert_file(src, config_name, out, num_classes=None, backbone_only=False, label_map_path=None):
    """Read ``src``, build the ``config_name`` model, assign, and save ``out``; write ``config.json`` and
    ``label_map.json`` beside it (yolact/checkpoint.py ``write_run_files``), so that ``-checkpoint OUT`` /
    ``-init OUT`` need no other flag. One model per folder. The work of utils/convert_weights.py.

    Args:
      src: a state_dict file (:func:`load_state_dict_file`).
      config_name: a config preset (config.py ``get_config``).
      out: the Keras weights file to write; must end in ``.weights.h5``.
      num_classes: classes incl. background (default: the label map's, else the config's).
      backbone_only: see :func:`convert_state_dict`.
      label_map_path: a ``label_map.json`` to write beside ``out``; None: COCO's 80 categories (81-class models
        only).

    Returns:
      the :func:`convert_state_dict` summary.

    Raises:
      ValueError: bad arguments (``out`` not ``.weights.h5``, no label map for a non-COCO class count, a label map
        whose class count differs from the model's, a folder whose config.json describes another model, a malformed
        label_map.json or config.json); nothing is written.
      FileNotFoundError: ``src`` or ``label_map_path`` missing.
      WeightConversionError: ``src`` unreadable or not fitting the config (a ValueError); nothing is written.
      utils.atomic.DiskFullError: no space left (the previous ``out`` stays as it was).
    """
    if not str(out).endswith(".weights.h5"):
        raise ValueError(f"-out must end with .weights.h5 (Keras 3 weights format), got {out}")
    from yolact import checkpoint
    from yolact.model import build_model

    folder = pathlib.Path(out).absolute().parent
    cfg, label_map = _run_files(config_name, num_classes, label_map_path, folder)
    state_dict = load_state_dict_file(src)
    model = build_model(cfg, freeze_bn=True)
    summary = convert_state_dict(state_dict, model, cfg, backbone_only=backbone_only)
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint.write_weights(model, str(out))  # atomic; no config hash: converted weights fit any img_size
    checkpoint.write_run_files(str(folder), cfg, label_map)
    return summary


__all__ = ["WeightConversionError", "load_state_dict_file", "detect_kind", "to_yolact_keys", "class_dependent_prefixes",
           "state_dict_of", "convert_state_dict", "load_all_but_class_dependent", "convert_file"]
