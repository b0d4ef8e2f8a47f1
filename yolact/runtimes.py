"""Runners for exported models — a SavedModel folder, a .tflite (LiteRT) or a .onnx (onnxruntime) — with the
Predictor's interface, so that inference.py's modes and utils/coco_eval.py take any of them.

Each runner has ``cfg``, ``label_map``, ``category_ids`` and
``predict(image, timings=None, score_threshold=0.0, max_detections=None)`` /
``predict_preprocessed(images, height, width, ...)`` returning :meth:`yolact.predictor.Predictor.predict`'s dict:
``boxes`` int32 [n, 4] pixel ``[x1, y1, x2, y2]``, ``classes`` int32 [n] 0-based foreground class,
``category_ids`` int32 [n] dataset ids, ``scores`` float32 [n], ``masks`` uint8 [n, H, W] 0/1, sorted by score.

Per image (TFLite / ONNX, the contract of yolact/deploy/graph.py): ``cv2.resize(image, (S, S), INTER_LINEAR)``
(uint8, S from the model's input shape, which must equal config.json's img_size) → the model (normalisation,
network, Fast NMS, masks at prototype resolution, all inside) → the kept rows' masks upsampled with
``cv2.resize(..., (W, H), INTER_LINEAR)`` and thresholded ``> 0.5``; boxes ``detection_boxes × (H, W)``
truncated to int, as :func:`yolact.detection.postprocess`. The SavedModel gets the original image (it resizes and
upsamples in-graph). Timings: 'preprocess' (resize), 'network' (the whole exported model), 'masks' (upsampling,
thresholding, boxes).

``predict_preprocessed`` (TFRecord evaluation, whose images arrive resized and normalized by
``eval_preprocess``) turns the float image back into uint8 pixels (``round(x·std + mean)``) first.
"""

from __future__ import annotations

import os
import time
from typing import Dict, Optional

import numpy as np

RUNTIME_KINDS = ("saved_model", "tflite", "onnx")


class ModelFileError(ValueError):
    """An exported model that cannot be used: unknown kind, missing, or not the shape its config says (one line)."""


def model_kind(path: str) -> str:
    """'saved_model' (a folder with saved_model.pb), 'tflite' (\\*.tflite) or 'onnx' (\\*.onnx).

    Raises:
      ModelFileError: missing, or none of these.
    """
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            return "saved_model"
        raise ModelFileError(f"{path} is a folder without saved_model.pb (expected a SavedModel, .tflite or .onnx)")
    if not os.path.isfile(path):
        raise ModelFileError(f"model not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext in (".tflite", ".onnx"):
        return ext[1:]
    raise ModelFileError(f"{path}: unknown model type (expected a SavedModel folder, a .tflite or a .onnx)")


class ExportedModelRunner:
    """Shared pre/post-processing of the runners; subclasses implement :meth:`run` (and set ``input_size``).

    Args:
      cfg: the export's YolactConfig (its config.json); label_map: its LabelMap; path: the model.
    """

    kind = ""
    resizes_in_graph = False  # True: the model takes the original image (SavedModel)

    def __init__(self, cfg, label_map, path: str):
        self.cfg, self.label_map, self.path = cfg, label_map, path
        self.category_ids = label_map.index_to_id_array()
        self._id_to_class = label_map.id_to_index_array() - 1
        self._mean = np.asarray(cfg.model.mean_rgb, np.float32)
        self._std = np.asarray(cfg.model.std_rgb, np.float32)

    def _check_input_size(self, size: int) -> None:
        if int(size) != self.cfg.img_size:
            raise ModelFileError(f"{self.path} takes {size}x{size} images but its config says img_size "
                                 f"{self.cfg.img_size}")

    def run(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        """uint8 [1, S, S, 3] (or [1, H, W, 3] when ``resizes_in_graph``) → the five contract outputs (numpy)."""
        raise NotImplementedError

    def predict(self, image: np.ndarray, timings: Optional[Dict[str, float]] = None, score_threshold: float = 0.0,
                max_detections: Optional[int] = None) -> Dict[str, np.ndarray]:
        """uint8 RGB [H, W, 3] → the Predictor's result dict (module docstring).

        Raises:
          yolact.ops.image_io.ImageError: not a uint8 RGB image.
        """
        import cv2

        from yolact.ops.image_io import ImageError

        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ImageError(f"expected a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}")
        t0 = time.perf_counter()
        s = self.cfg.img_size
        x = image if self.resizes_in_graph else cv2.resize(image, (s, s), interpolation=cv2.INTER_LINEAR)
        _add(timings, "preprocess", time.perf_counter() - t0)
        return self._predict_pixels(x[None], image.shape[0], image.shape[1], timings, score_threshold, max_detections)

    def predict_preprocessed(self, images, height: int, width: int, timings: Optional[Dict[str, float]] = None,
                             score_threshold: float = 0.0, max_detections: Optional[int] = None):
        """float32 [1, S, S, 3] normalized (``eval_preprocess``) → result at (height, width); the image is first
        turned back into uint8 pixels ``round(x · std + mean)``."""
        pixels = np.clip(np.rint(np.asarray(images, np.float32) * self._std + self._mean), 0, 255).astype(np.uint8)
        return self._predict_pixels(pixels, height, width, timings, score_threshold, max_detections)

    def _outputs_for(self, pixels: np.ndarray, height: int, width: int) -> Dict[str, np.ndarray]:
        """The model's outputs for ``pixels`` of an image of (height, width): :meth:`run`'s, except that a runner
        may return ``detection_masks`` already thresholded (uint8 0 / 1) when they come at (height, width)."""
        return self.run(pixels)

    def _predict_pixels(self, pixels, height, width, timings, score_threshold, max_detections):
        t0 = time.perf_counter()
        out = self._outputs_for(pixels, height, width)
        t1 = time.perf_counter()
        result = self.postprocess(out, height, width, score_threshold, max_detections)
        _add(timings, "network", t1 - t0)
        _add(timings, "masks", time.perf_counter() - t1)
        return result

    def postprocess(self, out: Dict[str, np.ndarray], height: int, width: int, score_threshold: float = 0.0,
                    max_detections: Optional[int] = None) -> Dict[str, np.ndarray]:
        """Contract outputs (batch of one) → the Predictor's result dict at (height, width): the kept rows (score
        > ``score_threshold`` when it is > 0, then the best ``max_detections``), masks upsampled bilinearly
        (``cv2.INTER_LINEAR``, unless already at (height, width)) and thresholded at 0.5 (uint8 masks count as
        thresholded already); YOLACT++ exports' ``detection_mask_scores`` become ``mask_scores`` (as the
        Predictor's result)."""
        import cv2

        n = int(out["num_detections"][0])
        scores = np.asarray(out["detection_scores"][0, :n], np.float32)
        keep = np.nonzero(scores > score_threshold)[0] if score_threshold > 0 else np.arange(n)
        if max_detections is not None:
            keep = keep[:max_detections]
        scale = np.asarray([height, width, height, width], np.float32)
        boxes = (np.asarray(out["detection_boxes"][0, keep], np.float32) * scale)[:, [1, 0, 3, 2]].astype(np.int32)
        ids = np.asarray(out["detection_classes"][0, keep], np.int32)
        masks = out["detection_masks"][0, keep]
        if masks.dtype != np.uint8:  # probabilities (uint8: already thresholded at the image size, see below)
            probs = np.asarray(masks, np.float32)
            binary = np.empty([len(keep), height, width], np.uint8)
            for i, m in enumerate(probs):  # into one preallocated array: ~5x faster than np.stack + numpy '>'
                if m.shape != (height, width):
                    m = cv2.resize(m, (int(width), int(height)), interpolation=cv2.INTER_LINEAR)
                cv2.compare(m, 0.5, cv2.CMP_GT, dst=binary[i])  # 255 where > 0.5
            masks = np.bitwise_and(binary, 1, out=binary)
        result = {"boxes": boxes, "classes": self._id_to_class[ids].astype(np.int32), "category_ids": ids,
                  "scores": scores[keep], "masks": masks}
        if "detection_mask_scores" in out:  # YOLACT++: mask AP and the display use box score x mask IoU
            result["mask_scores"] = np.asarray(out["detection_mask_scores"][0, keep], np.float32)
        return result


def _add(timings, key, seconds):
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + seconds


class SavedModelRunner(ExportedModelRunner):
    """``serving_default`` of a SavedModel written by export_saved_model.py (resize and masks at full size
    in-graph)."""

    kind = "saved_model"
    resizes_in_graph = True

    def __init__(self, cfg, label_map, path: str):
        import tensorflow as tf

        super().__init__(cfg, label_map, path)
        self._serve = tf.saved_model.load(path).signatures["serving_default"]

    def run(self, images):
        import tensorflow as tf

        return {k: v.numpy() for k, v in self._serve(images=tf.constant(images)).items()}

    def _outputs_for(self, pixels, height, width):
        if tuple(pixels.shape[1:3]) != (height, width):  # masks at the input size: resized as probabilities
            return self.run(pixels)
        import tensorflow as tf

        out = dict(self._serve(images=tf.constant(pixels)))
        # Thresholded by TF before the copy to numpy: the float masks at the image size are D x H x W x 4 bytes
        # (92 MB at 480 x 640); copying and comparing them in numpy took a third of the SavedModel's time.
        out["detection_masks"] = tf.cast(out["detection_masks"] > 0.5, tf.uint8)
        return {k: v.numpy() for k, v in out.items()}


class TFLiteRunner(ExportedModelRunner):
    """A .tflite export run by LiteRT (``ai_edge_litert.interpreter.Interpreter``, XNNPACK CPU delegate).

    Args:
      num_threads: interpreter threads (None: LiteRT's default).

    Raises:
      ModelFileError: the model's input side differs from the config's img_size.
    """

    kind = "tflite"

    def __init__(self, cfg, label_map, path: str, num_threads: Optional[int] = None):
        from ai_edge_litert.interpreter import Interpreter

        super().__init__(cfg, label_map, path)
        self._interpreter = Interpreter(model_path=path, num_threads=num_threads)
        self._check_input_size(self._interpreter.get_input_details()[0]["shape"][1])
        self._runner = self._interpreter.get_signature_runner()

    def run(self, images):
        return self._runner(images=images)


class OnnxRunner(ExportedModelRunner):
    """A .onnx export run by onnxruntime's CPU execution provider.

    Args:
      num_threads: ``intra_op_num_threads`` (None: onnxruntime's default).

    Raises:
      ModelFileError: the model's input side differs from the config's img_size.
    """

    kind = "onnx"

    def __init__(self, cfg, label_map, path: str, num_threads: Optional[int] = None):
        import onnxruntime as ort

        super().__init__(cfg, label_map, path)
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._check_input_size(self._session.get_inputs()[0].shape[1])
        self._names = [o.name for o in self._session.get_outputs()]

    def run(self, images):
        return dict(zip(self._names, self._session.run(self._names, {"images": images})))


def open_model(path: str, cfg, label_map, num_threads: Optional[int] = None) -> ExportedModelRunner:
    """The runner for ``path`` (see :func:`model_kind`); ``cfg`` / ``label_map`` are the export's
    (``yolact.checkpoint.resolve_run(path)``: config.json and label_map.json beside the model).

    Raises:
      ModelFileError: unknown kind, missing file, or an input size that differs from ``cfg``.
    """
    kind = model_kind(path)
    if kind == "saved_model":
        return SavedModelRunner(cfg, label_map, path)
    runner = TFLiteRunner if kind == "tflite" else OnnxRunner
    return runner(cfg, label_map, path, num_threads)


__all__ = ["RUNTIME_KINDS", "ModelFileError", "model_kind", "ExportedModelRunner", "SavedModelRunner",
           "TFLiteRunner", "OnnxRunner", "open_model"]
