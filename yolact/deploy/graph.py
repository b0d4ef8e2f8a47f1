"""The inference function of every form, and the deployable function of the TFLite / ONNX exports.

:func:`inference_function` is the one composition of the network and the detection stage for inference:
float32 pixels [B, H, W, 3] (``yolact.ops.preprocess.resize`` of the photo) → :func:`yolact.ops.preprocess.
normalize` → ``model.detect`` (network, decode, NMS, masks, YOLACT++ re-scoring) →
:func:`yolact.detection.to_output_convention`. The Predictor runs it in-process (yolact/predictor.py), the
SavedModel wraps it with its in-graph resize (yolact/deploy/saved_model.py) and the TFLite / ONNX exports are
:func:`deployable_function`, the same function with one fixed input shape.

The contract of every TFLite / ONNX export (``export_saved_model.py -tflite ... -onnx``), also written into the
models' metadata (:func:`contract_metadata`):

* input ``images``: float32 [1, H, W, 3] RGB pixel values 0..255, (H, W) = ``cfg.input_size`` (S x S for a square
  ``cfg.model.img_size`` S; e.g. [1, 384, 672, 3] for ``-img_size 384x672``): the photo resized to H × W in float
  with half-pixel bilinear interpolation, no antialias, aspect not kept (``tf.image.resize(image, (H, W))``, :func:`yolact.ops.preprocess.resize_image`, the original's FastBaseTransform). An int8 model keeps
  this float input and quantizes inside.
* outputs, named and shaped as the SavedModel's ``serving_default`` (D = ``cfg.detection.max_num_detection``, rows
  sorted by descending score, rows past ``num_detections`` zero): ``num_detections`` int32 [1];
  ``detection_boxes`` float32 [1, D, 4] normalised ``[ymin, xmin, ymax, xmax]`` clipped to [0, 1];
  ``detection_classes`` int32 [1, D] the dataset's category ids (label_map.json); ``detection_scores`` float32
  [1, D]; and, unlike the SavedModel, ``detection_masks`` float32 [1, D, Hp, Wp]: mask probabilities at PROTOTYPE
  resolution ((Hp, Wp) = twice the P3 size per axis: 138 x 138 at 550, 96 x 168 at 384x672 for ResNet), already zeroed outside the box padded by one prototype
  pixel. The caller upsamples each mask bilinearly (half-pixel, ``cv2.INTER_LINEAR``) to the original image size
  and thresholds at 0.5 (``> 0.5``): :func:`yolact.detection.results.to_results`, the host step of every form.
  YOLACT++ models (``use_maskiou``) add ``detection_mask_scores`` float32 [1, D] (box score x predicted mask IoU,
  the score of the mask results and of the display).

Inside: only ops that TFLite has as builtins (no Flex / select-TF ops) and that tf2onnx converts: no while loops,
no XLA (the detection stage with ``jit=False``), the Fast NMS upper-triangle mask a constant, no image resize after
the network. The resize to H × W stays outside so that the model has one static input shape (TFLite and ONNX
runtimes are fastest and int8 calibration is defined on fixed shapes).
"""

from __future__ import annotations

import json
from typing import Callable, Dict

import numpy as np
import tensorflow as tf

from yolact.detection import DetectionGenerator, to_output_convention
from yolact.detection.generator import DETECTION_SCOPE
from yolact.ops.preprocess import normalize

INPUT_NAME = "images"
OUTPUT_NAMES = ("num_detections", "detection_boxes", "detection_classes", "detection_scores", "detection_masks")


def prototype_size(cfg) -> int:
    """Hp = Wp of the prototypes of a square config (twice the P3 side): 138 at 550 for ResNet backbones.

    Raises:
      ValueError: a rectangular config (``cfg.model.proto_output_shape`` gives (Hp, Wp)).
    """
    return cfg.model.proto_output_size


def inference_function(model, cfg, category_ids, detection_generator=None) -> Callable:
    """The inference composition: ``run(pixels, output_size=None)`` → the output convention.

    Args:
      model: a built :class:`yolact.model.Yolact` with its weights (inference mode is used).
      cfg: its YolactConfig (normalisation, detection thresholds).
      category_ids: int [C] dataset category id of each class channel (``label_map.index_to_id_array()``).
      detection_generator: passed to ``model.detect`` (None: ``model.detection_generator``).

    Returns:
      a Python callable for tracing: ``pixels`` float32 [B, H, W, 3] (:func:`yolact.ops.preprocess.resize`
      output), ``output_size`` None (masks at prototype resolution) or ``(height, width)`` → dict
      ``num_detections`` int32 [B], ``detection_boxes`` float32 [B,D,4] normalised ``[ymin, xmin, ymax, xmax]``,
      ``detection_classes`` int32 [B,D] dataset ids, ``detection_scores`` float32 [B,D], ``detection_masks``
      float32 [B,D,H,W] probabilities, YOLACT++ ``detection_mask_scores`` float32 [B,D].
    """
    ids = np.asarray(category_ids, np.int32)  # numpy: a graph constant, not a captured input (tf2onnx)

    def run(pixels, output_size=None):
        dets = model.detect(normalize(pixels, cfg), output_size=output_size, detection_generator=detection_generator)
        return to_output_convention(dets, ids)

    return run


def deployable_function(model, cfg, category_ids) -> tf.types.experimental.GenericFunction:
    """A ``tf.function`` with the export contract (module docstring), traced for float32 [1, H, W, 3]:
    :func:`inference_function` with a detection stage without XLA.

    Returns:
      the tf.function; ``.get_concrete_function()`` needs no argument (the input signature is fixed).
    """
    in_h, in_w = cfg.input_size
    run = inference_function(model, cfg, category_ids, DetectionGenerator(cfg, "fast", jit=False))
    return tf.function(lambda images: run(images),
                       input_signature=[tf.TensorSpec([1, in_h, in_w, 3], tf.float32, name=INPUT_NAME)])


def freeze(fn) -> tf.types.experimental.ConcreteFunction:
    """``fn`` (a tf.function with a fixed input signature) with its variables turned into constants, still
    returning the named dict.

    Freezing lets grappler fold each inference-mode BatchNorm into the preceding convolution, and puts the weights
    into a TFLite flatbuffer (the converter's own paths keep Keras 3 variables as resource variables without their
    values). The model's weights are read now: later changes are not seen.

    Raises:
      any TensorFlow error of the conversion (variables of an unsupported kind).
    """
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = fn.get_concrete_function()
    graph = convert_variables_to_constants_v2(concrete)
    structure = concrete.structured_outputs
    named = tf.function(lambda *args: tf.nest.pack_sequence_as(structure, graph(*args)),
                        input_signature=fn.input_signature)
    return named.get_concrete_function()


def contract_metadata(cfg, label_map, precision: str) -> Dict[str, str]:
    """String key/values stored in the exported models (ONNX ``metadata_props``, TFLite ``yolact_contract``
    metadata buffer): the contract in words, the config name, the input size (``"550"`` or ``"384x672"``, H x W),
    the prototype size (``"138"`` or ``"96x168"``), the precision and the label map."""
    from config import format_img_size

    return {
        "yolact_contract": ("input images float32 [1,H,W,3] RGB 0..255 resized to HxW (the img_size) in float with "
                            "half-pixel "
                            "bilinear, no antialias (tf.image.resize); "
                            "outputs num_detections int32 [1], detection_boxes float32 [1,D,4] normalised "
                            "[ymin,xmin,ymax,xmax], detection_classes int32 [1,D] dataset category ids, "
                            "detection_scores float32 [1,D], detection_masks float32 [1,D,Hp,Wp] probabilities at "
                            "prototype resolution cropped to the box: upsample bilinear to the image, > 0.5"
                            + ("; detection_mask_scores float32 [1,D] box score x predicted mask IoU (YOLACT++)"
                               if cfg.model.use_maskiou else "")),
        "config": cfg.name,
        "img_size": format_img_size(cfg.model.img_size),
        "prototype_size": format_img_size(cfg.model.proto_output_shape),
        "max_num_detection": str(cfg.detection.max_num_detection),
        "precision": precision,
        "label_map": json.dumps(label_map.to_json_dict()),
    }


__all__ = ["INPUT_NAME", "OUTPUT_NAMES", "DETECTION_SCOPE", "prototype_size", "inference_function",
           "deployable_function", "freeze", "contract_metadata"]
