"""The Predictor: the in-process runner (yolact/runtimes.py's interface) of a Yolact model with its weights.

Per image (original: utils/augmentations.py FastBaseTransform, yolact.py Yolact.forward, Detect,
layers/output_utils.py postprocess): uint8 RGB [H, W, 3] → :func:`yolact.ops.preprocess.resize_image` →
:func:`yolact.deploy.graph.inference_function` as one tf.function (normalisation, network, decode, Fast NMS,
prototype-resolution masks, YOLACT++ re-scoring, the output convention; optionally a frozen graph) →
:func:`yolact.detection.results.to_results`. The exported forms run the same steps with their own graph.

Loading lives in yolact/checkpoint.py (``resolve_run``, ``load_model``), image files in yolact/ops/image_io.py
(``read_image``), dataset evaluation in utils/coco_eval.py (``evaluate_dataset``).
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from yolact.deploy.graph import freeze, inference_function
from yolact.detection import DetectionGenerator
from yolact.runtimes import Runner

PRECISIONS = ("float32", "bfloat16")  # compute dtypes of Predictor.from_checkpoint
# freeze=None: images run on the live model before the graph is frozen. Freezing costs a few seconds once and saves
# a few percent per image afterwards (docs/benchmarks.md), so short-lived predictors (train.py's image summaries and
# small validations, a few photos) never pay for it.
FREEZE_AFTER_IMAGES = 16


class Predictor(Runner):
    """Runs a Yolact model on images and returns final detections at the images' own size.

    Args:
      cfg: YolactConfig.
      model: a built Yolact.
      label_map: LabelMap (class names / dataset category ids).
      nms_type: 'fast', 'cross_class' or 'traditional'; with ``jit``: None (both) uses
        ``model.detection_generator``, otherwise a :class:`yolact.detection.DetectionGenerator` ``(cfg, nms_type,
        jit)`` (default ``cfg.detection.nms_type``).
      jit: XLA for the NMS (default: on for the Fast NMS variants; always off for 'traditional', which XLA cannot
        compile).
      freeze: run a frozen graph (:func:`yolact.deploy.graph.freeze`: BatchNorm folded into the convolutions, same
        outputs to float rounding, a few seconds to build). True: from the first image; None (default): from image
        ``FREEZE_AFTER_IMAGES + 1`` on, the earlier ones run on the live model; False: never. The weights are read
        when freezing: build a new Predictor after they change (train.py does).
    """

    kind = "in_process"

    def __init__(self, cfg, model, label_map, nms_type: Optional[str] = None, jit: Optional[bool] = None,
                 freeze: Optional[bool] = None):
        super().__init__(cfg, label_map)
        self.model = model
        generator = None if nms_type is None and jit is None else DetectionGenerator(cfg, nms_type, jit)
        in_h, in_w = cfg.input_size
        self._graph = tf.function(inference_function(model, cfg, self.category_ids, generator),
                                  input_signature=[tf.TensorSpec([1, in_h, in_w, 3], tf.float32, name="images")])
        self._fn = self._graph
        self._freeze = freeze
        self._frozen = False  # True once the graph runs frozen (or freezing was tried and failed)
        self._images_run = 0

    @classmethod
    def from_checkpoint(cls, checkpoint, config_name: Optional[str] = None, img_size=None,
                        label_map_path: Optional[str] = None, precision: str = "float32", **kwargs) -> "Predictor":
        """Config and label map from the checkpoint's folder (:func:`yolact.checkpoint.resolve_run`; the explicit
        values are only for folders without config.json), weights by :func:`yolact.checkpoint.load_model`;
        ``kwargs`` go to the constructor.

        ``precision`` 'bfloat16' builds the network under Keras' ``mixed_bfloat16`` policy (float32 weights,
        bfloat16 convolutions; the model's outputs, the NMS and the masks stay float32); the global policy is
        restored afterwards.

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

    def run(self, inputs, height, width):
        """float32 [1, S, S, 3] resized pixels → the output convention (numpy), masks at prototype resolution."""
        self._images_run += 1
        if not self._frozen and (self._freeze or (self._freeze is None and self._images_run > FREEZE_AFTER_IMAGES)):
            self._frozen = True
            try:
                self._fn = freeze(self._graph)
            except Exception:  # noqa: BLE001 - freezing only saves time; the live graph gives the same results
                self._fn = self._graph
        return {k: v.numpy() for k, v in self._fn(tf.convert_to_tensor(inputs, tf.float32)).items()}


__all__ = ["PRECISIONS", "FREEZE_AFTER_IMAGES", "Predictor"]
