"""The deployable function: one fixed-size uint8 image in, the SavedModel's detections out, prototype-size masks.

The contract of every TFLite / ONNX export (``export_saved_model.py -tflite ... -onnx``), also written into the
models' metadata (:func:`contract_metadata`):

* input ``images``: uint8 [1, S, S, 3] RGB, S = ``cfg.model.img_size``, the image ALREADY resized to S × S with
  bilinear interpolation (``cv2.resize(image, (S, S), interpolation=cv2.INTER_LINEAR)``, which is the half-pixel,
  non-antialiased bilinear resize of the SavedModel and of the original's FastBaseTransform; aspect not kept);
* outputs, named and shaped as the SavedModel's ``serving_default`` (D = ``cfg.detection.max_num_detection``, rows
  sorted by descending score, rows past ``num_detections`` zero): ``num_detections`` int32 [1];
  ``detection_boxes`` float32 [1, D, 4] normalised ``[ymin, xmin, ymax, xmax]`` clipped to [0, 1];
  ``detection_classes`` int32 [1, D] the dataset's category ids (label_map.json); ``detection_scores`` float32
  [1, D]; and, unlike the SavedModel, ``detection_masks`` float32 [1, D, Hp, Wp]: mask probabilities at PROTOTYPE
  resolution (Hp = Wp = S / 4 rounded as the backbone does: 138 at 550), already zeroed outside the box padded by
  one prototype pixel. The caller upsamples each mask bilinearly (half-pixel, ``cv2.INTER_LINEAR``) to the
  original image size and thresholds at 0.5 (``> 0.5``), which is exactly what the SavedModel does in-graph.
  YOLACT++ models (``use_maskiou``) add ``detection_mask_scores`` float32 [1, D] (box score x predicted mask IoU,
  the score of the mask results and of the display), as their SavedModel does.

Normalisation, the network, box decoding, per-class Fast NMS (original: layers/functions/detection.py
Detect.fast_nms) and mask assembly (original: layers/output_utils.py postprocess, before the upsampling) are all
inside, built only from ops that TFLite has as builtins (no Flex / select-TF ops) and that tf2onnx converts: no
while loops, no XLA (``jit=False``), the Fast NMS upper-triangle mask a constant, no image resize after the network.
The resize to S × S stays outside so that the model has one static input shape (TFLite and ONNX runtimes are
fastest and int8 calibration is defined on fixed shapes); the runtimes in yolact/runtimes.py do it.
"""

from __future__ import annotations

import json
from typing import Dict

import numpy as np
import tensorflow as tf

from yolact.detection import DetectionGenerator, to_output_convention
from yolact.maskiou import rescore_detections
from yolact.ops.preprocess import normalize

INPUT_NAME = "images"
# Name prefix of the tensors of the detection stage (the DetectionGenerator layer and YOLACT++ re-scoring) in the
# traced graph: an int8 TFLite export keeps them float32 (yolact/deploy/tflite.py).
DETECTION_SCOPE = "detection_generator"
OUTPUT_NAMES = ("num_detections", "detection_boxes", "detection_classes", "detection_scores", "detection_masks")


def prototype_size(cfg) -> int:
    """Hp = Wp of the prototypes (twice the P3 side): 138 at 550 for ResNet backbones."""
    return 2 * cfg.feature_map_sizes()[0]


def deployable_function(model, cfg, category_ids) -> tf.types.experimental.GenericFunction:
    """A ``tf.function`` with the export contract (module docstring), traced for uint8 [1, S, S, 3].

    Args:
      model: a built :class:`yolact.model.Yolact` with its weights (inference mode is used).
      cfg: its YolactConfig (img_size, normalisation, detection thresholds).
      category_ids: int [C] dataset category id of each class channel (``label_map.index_to_id_array()``).

    Returns:
      the tf.function; ``.get_concrete_function()`` needs no argument (the input signature is fixed).
    """
    size = cfg.model.img_size
    detector = DetectionGenerator(cfg, "fast", jit=False, name=DETECTION_SCOPE)
    ids = np.asarray(category_ids, np.int32)  # numpy: a graph constant, not a captured input (tf2onnx)

    def run(images):
        out = model(normalize(images, cfg), training=False)
        dets = detector(out)  # masks at prototype resolution
        if model.maskiou_net is not None:  # YOLACT++: adds detection_mask_scores, as Yolact.detect
            with tf.name_scope(DETECTION_SCOPE + "_rescore"):  # float32 in int8 TFLite too (crop coordinates)
                dets = rescore_detections(dets, out["proto"], model.maskiou_net, cfg.detection)
        return to_output_convention(dets, ids)

    return tf.function(run, input_signature=[tf.TensorSpec([1, size, size, 3], tf.uint8, name=INPUT_NAME)])


def contract_metadata(cfg, label_map, precision: str) -> Dict[str, str]:
    """String key/values stored in the exported models (ONNX ``metadata_props``, TFLite ``yolact_contract``
    metadata buffer): the contract in words, the config name, S, Hp, the precision and the label map."""
    return {
        "yolact_contract": ("input images uint8 [1,S,S,3] RGB resized to SxS with bilinear (cv2 INTER_LINEAR); "
                            "outputs num_detections int32 [1], detection_boxes float32 [1,D,4] normalised "
                            "[ymin,xmin,ymax,xmax], detection_classes int32 [1,D] dataset category ids, "
                            "detection_scores float32 [1,D], detection_masks float32 [1,D,Hp,Wp] probabilities at "
                            "prototype resolution cropped to the box: upsample bilinear to the image, > 0.5"
                            + ("; detection_mask_scores float32 [1,D] box score x predicted mask IoU (YOLACT++)"
                               if cfg.model.use_maskiou else "")),
        "config": cfg.name,
        "img_size": str(cfg.model.img_size),
        "prototype_size": str(prototype_size(cfg)),
        "max_num_detection": str(cfg.detection.max_num_detection),
        "precision": precision,
        "label_map": json.dumps(label_map.to_json_dict()),
    }


__all__ = ["INPUT_NAME", "OUTPUT_NAMES", "DETECTION_SCOPE", "prototype_size", "deployable_function",
           "contract_metadata"]
