"""Model loading and single-image / dataset prediction shared by inference.py, evaluation, export and train.py.

Pipeline per image (original: utils/augmentations.py FastBaseTransform, yolact.py Yolact.forward, Detect,
layers/output_utils.py postprocess): uint8 RGB [H, W, 3] → half-pixel bilinear resize (no antialias, aspect not
kept) to S × S → ``(x - mean_rgb) / std_rgb`` → network → Fast NMS → masks and boxes at (H, W).

Checkpoints: a ``.weights.h5`` (``model.save_weights`` / utils/convert_weights.py), or a training checkpoint written
by ``tf.train.CheckpointManager`` for ``tf.train.Checkpoint(model=model, ...)`` (a directory → its latest
checkpoint, or a prefix such as ``ckpt/ckpt-12``); only the ``model`` object is read.
"""

from __future__ import annotations

import os
import time
from typing import Dict, Iterator, Optional, Tuple

import numpy as np
import tensorflow as tf

from yolact.ops import preprocess
from yolact.ops import label_map as label_map_lib
from yolact.ops.image_io import decode_image_rgb
from yolact import detection, masks
from yolact.maskiou import rescore_detections
from yolact.model import build_model, checkpoint_variables


class InputError(ValueError):
    """An input image / checkpoint / label map cannot be used (one-line message)."""


def resolve_label_map(path: Optional[str], cfg) -> label_map_lib.LabelMap:
    """``label_map.json`` at ``path`` (file or folder), or COCO's 80 when ``path`` is None and the model has 81 classes.

    Raises:
      InputError: no path for a non-COCO class count, unreadable file, or a class count that differs from ``cfg``.
    """
    if path is None:
        if cfg.num_classes != 81:
            raise InputError(f"config has {cfg.num_classes} classes: pass -label_map (label_map.json of training)")
        return label_map_lib.coco_label_map()
    try:
        lm = label_map_lib.read_label_map(path)
    except (FileNotFoundError, label_map_lib.LabelMapError) as e:
        raise InputError(str(e)) from None
    if lm.num_classes != cfg.num_classes:
        raise InputError(f"label map {path} has {lm.num_classes} classes incl. background, config has {cfg.num_classes}")
    return lm


def inference_config(name: str, label_map_path: Optional[str] = None, img_size: Optional[int] = None):
    """The preset ``name`` for inference/export: the class count comes from ``label_map_path`` (a custom dataset's
    label_map.json, as train.py takes it), ``img_size`` overrides the input size.

    Raises:
      ValueError: unknown preset or bad override; FileNotFoundError / LabelMapError: unreadable label map.
    """
    from config import get_config

    num_classes = label_map_lib.read_label_map(label_map_path).num_classes if label_map_path else None
    return get_config(name, num_classes=num_classes, img_size=img_size)


def load_model(cfg, checkpoint: str):
    """A built Yolact (BatchNorm frozen, inference) with weights from ``checkpoint``.

    Args:
      cfg: YolactConfig matching the checkpoint.
      checkpoint: ``*.weights.h5``, a training checkpoint directory (latest checkpoint) or a checkpoint prefix.

    Raises:
      InputError: nothing found at ``checkpoint`` or the weights do not fit ``cfg``.
    """
    checkpoint = os.fspath(checkpoint)
    if checkpoint.endswith(".weights.h5"):
        if not os.path.isfile(checkpoint):
            raise InputError(f"weights file not found: {checkpoint}")
        try:
            return build_model(cfg, freeze_bn=True, weights=checkpoint)
        except ValueError as e:
            raise InputError(f"cannot load {checkpoint} into {cfg.name}: {str(e).splitlines()[0]}") from None
    prefix = tf.train.latest_checkpoint(checkpoint) if os.path.isdir(checkpoint) else checkpoint
    if not prefix or not tf.io.gfile.exists(prefix + ".index"):
        raise InputError(f"no checkpoint found at {checkpoint} (expected a .weights.h5, a checkpoint directory or "
                         "prefix)")
    model = build_model(cfg, freeze_bn=True)
    try:
        tf.train.Checkpoint(model_variables=checkpoint_variables(model)).read(prefix).expect_partial()\
            .assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        raise InputError(f"checkpoint {prefix} does not fit {cfg.name}: {str(e).splitlines()[0]}") from None
    return model


def read_image(path: str) -> np.ndarray:
    """Decode an image file (JPEG, PNG, BMP, GIF first frame) to uint8 RGB [H, W, 3].

    JPEGs are decoded with the accurate integer IDCT, which gives exactly OpenCV's ``cv2.imread`` pixels (the
    original's decoder); ``tf.io.decode_image``'s default fast IDCT differs by up to ~16 levels, enough to move
    a detection score by 0.01 (it turns 0 detections of the original into 100 on one of the media photos).

    Raises:
      InputError: missing, unreadable or not an image.
    """
    if not os.path.isfile(path):
        raise InputError(f"image not found: {path}")
    try:
        image = decode_image_rgb(tf.io.read_file(path))
    except (tf.errors.OpError, ValueError) as e:
        msg = getattr(e, "message", str(e)).splitlines()[0]
        raise InputError(f"cannot decode image {path}: {msg.split('}} ')[-1][:120]}") from None
    return image.numpy()


INFERENCE_KEYS = ("loc", "conf", "mask", "proto")
# freeze=None: images run on the live model before the network is frozen. Freezing costs a few seconds once (about
# 8 s for ResNet-50, 3 s for EfficientNet-Lite0 on 2 cores) and saves about 5 % per image afterwards, so short-lived
# predictors (train.py's image summaries and small validations, a few photos) never pay for it.
FREEZE_AFTER_IMAGES = 16


def live_network_fn(model):
    """tf.function float32 [B, S, S, 3] → dict of :data:`INFERENCE_KEYS` (float32) running ``model`` in inference
    mode; ``segm`` (training only) is not computed."""
    return tf.function(lambda x: {k: v for k, v in model(x, training=False).items() if k in INFERENCE_KEYS},
                       reduce_retracing=True)


def frozen_network_fn(model, img_size: int):
    """As :func:`live_network_fn`, but on a frozen graph: the model's CURRENT weights become constants (later
    changes to the model are not seen), so grappler folds each inference-mode BatchNorm into the preceding
    convolution (oneDNN fused conv + bias + ReLU), which it cannot do while the BN statistics are variables.

    Input float32 [B, img_size, img_size, 3]. Returns None when freezing is not possible (private TF API moved,
    variables of an unsupported kind); the caller then keeps the live model (correct, about 5 % slower on CPU).
    """
    try:
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        concrete = live_network_fn(model).get_concrete_function(
            tf.TensorSpec([None, img_size, img_size, 3], tf.float32))
        frozen = convert_variables_to_constants_v2(concrete)
    except Exception:  # noqa: BLE001 - any failure only costs speed
        return None
    structure = concrete.structured_outputs

    def run(images):
        return tf.nest.pack_sequence_as(structure, frozen(tf.convert_to_tensor(images, tf.float32)))

    return run


class Predictor:
    """Runs a Yolact model on images and returns final detections at the images' own size.

    Args:
      cfg: YolactConfig.
      model: a built Yolact.
      label_map: LabelMap (class names / dataset ids).
      nms_type: 'fast', 'cross_class' or 'traditional' (default ``cfg.detection.nms_type``).
      jit: XLA for NMS (default: on for the Fast NMS variants, CPU and GPU alike; XLA Fast NMS is about twice as
        fast as the plain graph on CPU too; always off for 'traditional', which XLA cannot compile).
      freeze: run the network as a frozen graph (see :func:`frozen_network_fn`: BatchNorm folded into the
        convolutions, about 5 % less CPU time per image, same outputs to float rounding, a few seconds to build).
        True: from the first image; None (default): from image ``FREEZE_AFTER_IMAGES + 1`` on, the earlier ones
        run on the live model; False: never. The weights are read when freezing: build a new Predictor after they
        change (train.py does).

    Speed (benchmarks/end_to_end_cpu.py): the network dominates; XLA for the network is slower than TF's oneDNN
    convolutions on CPU and is therefore not used.
    """

    def __init__(self, cfg, model, label_map, nms_type: Optional[str] = None, jit: Optional[bool] = None,
                 freeze: Optional[bool] = None):
        self.cfg, self.model, self.label_map = cfg, model, label_map
        self.anchors = model.anchors
        nms_type = nms_type or cfg.detection.nms_type
        if jit is None:
            jit = nms_type != "traditional"
        self._detect = detection.detect_fn(cfg, nms_type, jit)
        self._freeze = freeze
        self._net = live_network_fn(model)
        self._frozen = False  # True once the network runs frozen (or freezing was tried and failed)
        self._images_run = 0
        self._pre = tf.function(lambda img: preprocess.eval_preprocess(img, cfg)[None], reduce_retracing=True)

    @classmethod
    def from_checkpoint(cls, cfg, checkpoint, label_map_path=None, **kwargs) -> "Predictor":
        """Load weights (see :func:`load_model`) and the label map (see :func:`resolve_label_map`)."""
        lm = resolve_label_map(label_map_path, cfg)
        return cls(cfg, load_model(cfg, checkpoint), lm, **kwargs)

    def preprocess(self, image: np.ndarray) -> tf.Tensor:
        """uint8 RGB [H, W, 3] → float32 [1, S, S, 3] normalized (original: FastBaseTransform)."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise InputError(f"expected a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}")
        return self._pre(tf.convert_to_tensor(image))

    def run_network(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
        """float32 [B, S, S, 3] normalized → dict ``loc`` [B,N,4], ``conf`` [B,N,C], ``mask`` [B,N,K],
        ``proto`` [B,Hp,Wp,K] (float32; see :class:`yolact.model.Yolact`)."""
        self._images_run += 1
        if not self._frozen and (self._freeze or (self._freeze is None and self._images_run > FREEZE_AFTER_IMAGES)):
            self._frozen = True
            self._net = frozen_network_fn(self.model, self.cfg.model.img_size) or self._net
        return self._net(images)

    def detect(self, outputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        """Network outputs → fixed-shape detections (see :func:`yolact.detection.detect`)."""
        return self._detect(outputs["loc"], outputs["conf"], outputs["mask"], self.anchors)

    def predict_preprocessed(self, images: tf.Tensor, height: int, width: int,
                             timings: Optional[Dict[str, float]] = None, score_threshold: float = 0.0,
                             max_detections: Optional[int] = None) -> Dict[str, np.ndarray]:
        """One normalized image [1, S, S, 3] → :func:`yolact.masks.postprocess` dict at (height, width).

        ``timings`` (if given) accumulates seconds under 'network', 'nms', 'masks' (each synchronised).
        ``score_threshold`` / ``max_detections`` restrict the detections before mask assembly (display modes).
        """
        t0 = time.perf_counter()
        out = self.run_network(images)
        out["proto"].numpy()
        t1 = time.perf_counter()
        dets = rescore_detections(self.detect(out), out["proto"], self.model.maskiou_net, self.cfg.detection)
        dets["num_detections"].numpy()
        t2 = time.perf_counter()
        result = masks.postprocess(dets, out["proto"], height, width, score_threshold=score_threshold,
                                   max_detections=max_detections)
        t3 = time.perf_counter()
        if timings is not None:
            for key, dt in (("network", t1 - t0), ("nms", t2 - t1), ("masks", t3 - t2)):
                timings[key] = timings.get(key, 0.0) + dt
        return result

    def predict(self, image: np.ndarray, timings: Optional[Dict[str, float]] = None, score_threshold: float = 0.0,
                max_detections: Optional[int] = None) -> Dict[str, np.ndarray]:
        """uint8 RGB [H, W, 3] → dict ``boxes`` int32 [n,4] pixel ``[x1, y1, x2, y2]``, ``classes`` int32 [n]
        (0-based foreground), ``scores`` float32 [n], ``masks`` uint8 [n, H, W], sorted by score.

        ``score_threshold`` / ``max_detections``: see :meth:`predict_preprocessed`.

        Raises:
          InputError: not a uint8 RGB image.
        """
        t0 = time.perf_counter()
        x = self.preprocess(image)
        x.numpy()
        if timings is not None:
            timings["preprocess"] = timings.get("preprocess", 0.0) + time.perf_counter() - t0
        return self.predict_preprocessed(x, image.shape[0], image.shape[1], timings, score_threshold, max_detections)

    def iter_dataset(self, coco_gt, image_dir=None, tfrecord_pattern=None, max_images=None,
                     progress=True) -> Iterator[Tuple[int, Dict[str, np.ndarray]]]:
        """Yield ``(image_id, result)`` over a COCO-style dataset.

        With ``image_dir``: the images of ``coco_gt`` that have annotations, in id order, read from
        ``image_dir/file_name`` (unreadable files are reported on stderr and skipped). With ``tfrecord_pattern``:
        ``data.parser.eval_dataset`` batches of 1.
        """
        from tqdm import tqdm

        if image_dir is not None:
            if not os.path.isdir(image_dir):
                raise InputError(f"image directory not found: {image_dir}")
            ids = sorted(i for i in coco_gt.getImgIds() if coco_gt.imgToAnns.get(i))
            ids = ids[:max_images] if max_images else ids
            for image_id in tqdm(ids, disable=not progress, desc="eval", unit="img"):
                path = os.path.join(image_dir, coco_gt.imgs[image_id]["file_name"])
                try:
                    image = read_image(path)
                except InputError as e:
                    tqdm.write(f"skipped: {e}")
                    continue
                yield image_id, self.predict(image)
        else:
            from data.parser import eval_dataset

            ds = eval_dataset(tfrecord_pattern, self.cfg, batch_size=1)
            if max_images:
                ds = ds.take(int(max_images))
            for images, info in tqdm(ds, disable=not progress, desc="eval", unit="img"):
                yield (int(info["image_id"][0]),
                       self.predict_preprocessed(images, int(info["height"][0]), int(info["width"][0])))


__all__ = ["InputError", "resolve_label_map", "load_model", "read_image",
           "INFERENCE_KEYS", "FREEZE_AFTER_IMAGES", "live_network_fn", "frozen_network_fn", "Predictor"]
