"""The Predictor: one image in, final detections at the image's own size out, with per-stage timings.

Pipeline per image (original: utils/augmentations.py FastBaseTransform, yolact.py Yolact.forward, Detect,
layers/output_utils.py postprocess): uint8 RGB [H, W, 3] → :func:`yolact.ops.preprocess.eval_preprocess` (half-pixel
bilinear resize to S × S, no antialias, aspect not kept; ``(x - mean_rgb) / std_rgb``) → network (frozen graph once
warm) → the model's :class:`yolact.detection.DetectionGenerator` (decode, NMS, masks, output convention).

Loading lives in yolact/checkpoint.py (``resolve_run``, ``load_model``), image files in yolact/ops/image_io.py
(``read_image``), dataset evaluation in utils/coco_eval.py (``iter_dataset``, ``evaluate_dataset``).
"""

from __future__ import annotations

import time
from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from yolact.detection import DetectionGenerator
from yolact.ops import preprocess
from yolact.ops.image_io import ImageError
from yolact.maskiou import rescore_detections


INFERENCE_KEYS = ("loc", "conf", "mask", "proto")
PRECISIONS = ("float32", "bfloat16")  # compute dtypes of Predictor.from_checkpoint
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
      label_map: LabelMap (class names / dataset category ids).
      nms_type: 'fast', 'cross_class' or 'traditional'; with ``jit``: None (both) uses
        ``model.detection_generator``, otherwise a :class:`yolact.detection.DetectionGenerator` ``(cfg, nms_type,
        jit)`` (default ``cfg.detection.nms_type``).
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
        default = getattr(model, "detection_generator", None)
        if nms_type is None and jit is None and default is not None:
            self.detector = default
        else:
            self.detector = DetectionGenerator(cfg, nms_type, jit)
        self.category_ids = label_map.index_to_id_array()
        self._freeze = freeze
        self._net = live_network_fn(model)
        self._frozen = False  # True once the network runs frozen (or freezing was tried and failed)
        self._images_run = 0
        self._pre = tf.function(lambda img: preprocess.eval_preprocess(img, cfg)[None], reduce_retracing=True)
        # YOLACT++ re-scoring as one graph: eager, the mask-IoU net's 100 masks cost about twice as much; XLA is
        # slower than both on CPU (benchmarks/plus_vs_yolact.py, docs/benchmarks.md).
        self._rescore = tf.function(
            lambda dets, proto: rescore_detections(dets, proto, model.maskiou_net, cfg.detection))

    @classmethod
    def from_checkpoint(cls, checkpoint, config_name: Optional[str] = None, img_size: Optional[int] = None,
                        label_map_path: Optional[str] = None, precision: str = "float32", **kwargs) -> "Predictor":
        """Config and label map from the checkpoint's folder (:func:`yolact.checkpoint.resolve_run`; the explicit
        values are only for folders without config.json), weights by :func:`yolact.checkpoint.load_model`;
        ``kwargs`` go to the constructor.

        ``precision`` 'bfloat16' builds the network under Keras' ``mixed_bfloat16`` policy (float32 weights,
        bfloat16 convolutions; the model's outputs, the NMS and the masks stay float32); the global policy is
        restored afterwards. Parity with float32: benchmarks/deploy.py and tests/test_deploy.py.

        Raises:
          yolact.checkpoint.RunFilesError / CheckpointError: see those functions; ValueError: unknown precision.
        """
        import keras

        from yolact.checkpoint import load_model, resolve_run

        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        run = resolve_run(checkpoint, config_name, img_size, label_map_path)
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("float32" if precision == "float32" else f"mixed_{precision}")
        try:
            model = load_model(run.cfg, checkpoint)
        finally:
            keras.mixed_precision.set_global_policy(previous)
        return cls(run.cfg, model, run.label_map, **kwargs)

    def preprocess(self, image: np.ndarray) -> tf.Tensor:
        """uint8 RGB [H, W, 3] → float32 [1, S, S, 3] normalized (original: FastBaseTransform).

        Raises:
          ImageError: not a uint8 RGB image.
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ImageError(f"expected a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}")
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
        """Network outputs → fixed-shape detections without masks (:meth:`DetectionGenerator.nms`)."""
        return self.detector.nms(outputs)

    def predict_preprocessed(self, images: tf.Tensor, height: int, width: int,
                             timings: Optional[Dict[str, float]] = None, score_threshold: float = 0.0,
                             max_detections: Optional[int] = None) -> Dict[str, np.ndarray]:
        """One normalized image [1, S, S, 3] → :func:`yolact.detection.postprocess` dict at (height, width).

        The detection generator's two stages run separately so that each is timed: ``timings`` (if given)
        accumulates seconds under 'network', 'nms', 'masks' (each synchronised). ``score_threshold`` /
        ``max_detections`` restrict the detections before mask assembly (display modes).
        """
        t0 = time.perf_counter()
        out = self.run_network(images)
        out["proto"].numpy()
        t1 = time.perf_counter()
        dets = self.detect(out)
        if self.model.maskiou_net is not None:
            dets = self._rescore(dets, out["proto"])
        dets["num_detections"].numpy()
        t2 = time.perf_counter()
        result = self.detector.postprocess(dets, out["proto"], height, width, score_threshold=score_threshold,
                                           max_detections=max_detections, category_ids=self.category_ids)
        t3 = time.perf_counter()
        if timings is not None:
            for key, dt in (("network", t1 - t0), ("nms", t2 - t1), ("masks", t3 - t2)):
                timings[key] = timings.get(key, 0.0) + dt
        return result

    def predict(self, image: np.ndarray, timings: Optional[Dict[str, float]] = None, score_threshold: float = 0.0,
                max_detections: Optional[int] = None) -> Dict[str, np.ndarray]:
        """uint8 RGB [H, W, 3] → dict ``boxes`` int32 [n,4] pixel ``[x1, y1, x2, y2]``, ``classes`` int32 [n]
        (0-based foreground), ``category_ids`` int32 [n] (dataset ids, the label map's), ``scores`` float32 [n],
        ``masks`` uint8 [n, H, W], sorted by score.

        ``timings`` adds 'preprocess'; ``score_threshold`` / ``max_detections``: see :meth:`predict_preprocessed`.

        Raises:
          ImageError: not a uint8 RGB image.
        """
        t0 = time.perf_counter()
        x = self.preprocess(image)
        x.numpy()
        if timings is not None:
            timings["preprocess"] = timings.get("preprocess", 0.0) + time.perf_counter() - t0
        return self.predict_preprocessed(x, image.shape[0], image.shape[1], timings, score_threshold, max_detections)


__all__ = ["INFERENCE_KEYS", "PRECISIONS", "FREEZE_AFTER_IMAGES", "live_network_fn", "frozen_network_fn", "Predictor"]
