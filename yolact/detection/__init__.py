"""Detection: NMS kernels (:mod:`yolact.detection.nms`), the model's detection layer and the output convention
(:mod:`yolact.detection.generator`), and the host step to results at the image's size
(:mod:`yolact.detection.results`).

Usage::

    model = build_model(cfg)                 # model.detection_generator is a DetectionGenerator(cfg)
    dets = model.detect(images)              # network + the layer: boxes, classes, scores, masks (prototype size)
    out = to_output_convention(dets, label_map.index_to_id_array())  # normalised [ymin, xmin, ymax, xmax], ids
    result = to_results({k: v.numpy() for k, v in out.items()}, h, w, label_map.id_to_index_array())
"""

from yolact.detection.generator import DETECTION_SCOPE, DetectionGenerator, to_output_convention
from yolact.detection.nms import NMS_TYPES, cross_class_fast_nms, fast_nms, nms_fn, traditional_nms
from yolact.detection.results import to_results

__all__ = ["DETECTION_SCOPE", "DetectionGenerator", "to_output_convention", "NMS_TYPES", "fast_nms",
           "cross_class_fast_nms", "traditional_nms", "nms_fn", "to_results"]
