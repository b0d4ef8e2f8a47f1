"""Runners: one interface for every inference form — the in-process model (yolact/predictor.py ``Predictor``), a
SavedModel folder, a .tflite (LiteRT), a .onnx (onnxruntime) or an OpenVINO IR .xml (OpenVINO CPU) — so that inference.py's modes and
utils/coco_eval.py take any of them.

Every runner has ``cfg``, ``label_map``, ``category_ids``, ``kind`` and
``predict(image, timings=None, score_threshold=0.0, max_detections=None, by_display_score=False)`` (also as its
steps ``prepare`` / ``run`` / ``finish``, which utils/video.py runs in different threads) — uint8 RGB [H, W, 3] →
dict ``boxes`` int32 [n, 4] pixel ``[x1, y1, x2, y2]``, ``classes`` int32 [n] 0-based foreground class,
``category_ids`` int32 [n] dataset ids, ``scores`` float32 [n], ``masks`` uint8 [n, H, W] 0/1 (YOLACT++ also
``mask_scores`` float32 [n]), sorted by score. The steps, each with one owner:

1. preprocess: :func:`yolact.ops.preprocess.resize_image` (the photo resized to S × S in float; the SavedModel
   takes the photo itself and runs the same resize in its graph);
2. the form's graph (:meth:`Runner.run`): :func:`yolact.deploy.graph.inference_function`, in-process or exported
   — normalisation, network, decode, Fast NMS, masks, YOLACT++ re-scoring, the output convention;
3. the host step :func:`yolact.detection.results.to_results` (rows selected, masks upsampled to the photo and
   thresholded, boxes to pixels, category id → class).

Timings (``timings`` dict, seconds added per call): 'preprocess', 'network' (the whole graph of step 2), 'masks'
(step 3).
"""

from __future__ import annotations

import os
import time
from typing import Dict, Optional

import numpy as np

from yolact.detection.results import to_results
from yolact.ops.image_io import ImageError
from yolact.ops.preprocess import resize_image

RUNTIME_KINDS = ("saved_model", "tflite", "onnx", "openvino")


class ModelFileError(ValueError):
    """An exported model that cannot be used: unknown kind, missing, or not the shape its config says (one line)."""


def model_kind(path: str) -> str:
    """'saved_model' (a folder with saved_model.pb), 'tflite' (\\*.tflite), 'onnx' (\\*.onnx) or 'openvino'
    (\\*.xml, an OpenVINO IR with its .bin beside it).

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
    if ext == ".xml":
        return "openvino"
    raise ModelFileError(f"{path}: unknown model type (expected a SavedModel folder, a .tflite, a .onnx or an "
                         f"OpenVINO .xml)")


def _add(timings, key, seconds):
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + seconds


class Runner:
    """The interface and the shared steps of every inference form (module docstring); subclasses implement
    :meth:`run`.

    Args:
      cfg: the model's YolactConfig; label_map: its LabelMap.
    """

    kind = ""
    resizes_in_graph = False  # True: run() takes the photo itself (SavedModel)

    def __init__(self, cfg, label_map):
        self.cfg, self.label_map = cfg, label_map
        self.category_ids = label_map.index_to_id_array()
        self._id_to_class = label_map.id_to_index_array()

    def run(self, inputs: np.ndarray, height: int, width: int) -> Dict[str, np.ndarray]:
        """The form's graph on one preprocessed input (float32 [1, S, S, 3], or the uint8 photo [1, H, W, 3] when
        ``resizes_in_graph``) of a photo of (height, width) → the output convention as numpy (batch of one); masks
        as float32 probabilities at any resolution, or uint8 0/1 when already at (height, width)."""
        raise NotImplementedError

    def prepare(self, image: np.ndarray, timings: Optional[Dict[str, float]] = None) -> np.ndarray:
        """Step 1 (module docstring): uint8 RGB [H, W, 3] → the input of :meth:`run` (float32 [1, S, S, 3], or the
        photo [1, H, W, 3] when ``resizes_in_graph``). utils/video.py runs :meth:`prepare`, :meth:`run` and
        :meth:`finish` in different threads (:meth:`run`: one thread at a time per runner; the others are
        thread-safe).

        Raises:
          ImageError: not a uint8 RGB image.
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ImageError(f"expected a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}")
        t0 = time.perf_counter()
        inputs = image[None] if self.resizes_in_graph else resize_image(image, self.cfg)
        _add(timings, "preprocess", time.perf_counter() - t0)
        return inputs

    def finish(self, outputs: Dict[str, np.ndarray], height: int, width: int,
               timings: Optional[Dict[str, float]] = None, score_threshold: float = 0.0,
               max_detections: Optional[int] = None, by_display_score: bool = False) -> Dict[str, np.ndarray]:
        """Step 3 (the host step, :func:`yolact.detection.results.to_results`) of :meth:`run`'s outputs for a
        photo of (height, width) pixels → results (module docstring); the selection arguments as
        :meth:`predict`."""
        t0 = time.perf_counter()
        result = to_results(outputs, height, width, self._id_to_class, score_threshold, max_detections,
                            by_display_score)
        _add(timings, "masks", time.perf_counter() - t0)
        return result

    def predict(self, image: np.ndarray, timings: Optional[Dict[str, float]] = None, score_threshold: float = 0.0,
                max_detections: Optional[int] = None, by_display_score: bool = False) -> Dict[str, np.ndarray]:
        """uint8 RGB [H, W, 3] → results at (H, W) (module docstring): :meth:`prepare`, :meth:`run`, :meth:`finish`.
        ``score_threshold`` / ``max_detections`` select the rows before their masks are upsampled (display modes);
        with ``by_display_score`` a YOLACT++ model's ``max_detections`` are the best by the displayed score (box
        score x mask IoU, utils/visualize.py ``display_order``), so only the detections a display shows get
        full-size masks.

        Raises:
          ImageError: not a uint8 RGB image.
        """
        image = np.asarray(image)
        inputs = self.prepare(image, timings)
        height, width = image.shape[:2]
        t0 = time.perf_counter()
        out = self.run(inputs, height, width)
        _add(timings, "network", time.perf_counter() - t0)
        return self.finish(out, height, width, timings, score_threshold, max_detections, by_display_score)


class SavedModelRunner(Runner):
    """``serving_default`` of a SavedModel written by export_saved_model.py (resize and masks at full size
    in-graph; the masks are thresholded by TF before the copy to numpy)."""

    kind = "saved_model"
    resizes_in_graph = True

    def __init__(self, cfg, label_map, path: str):
        import tensorflow as tf

        super().__init__(cfg, label_map)
        self.path = path
        self._serve = tf.saved_model.load(path).signatures["serving_default"]

    def run(self, inputs, height, width):
        import tensorflow as tf

        out = dict(self._serve(images=tf.constant(inputs)))
        # The float masks at the image size are D x H x W x 4 bytes: threshold in TF, copy uint8.
        out["detection_masks"] = tf.cast(out["detection_masks"] > 0.5, tf.uint8)
        return {k: v.numpy() for k, v in out.items()}


class _FileRunner(Runner):
    """A .tflite / .onnx export: its input must be [1, H, W, 3] with (H, W) = config.json's input size (S x S for
    a square img_size S)."""

    def __init__(self, cfg, label_map, path: str):
        super().__init__(cfg, label_map)
        self.path = path

    def _check_input_size(self, shape) -> None:
        """``shape``: the model's input shape [1, H, W, 3]."""
        h, w = int(shape[1]), int(shape[2])
        if (h, w) != tuple(self.cfg.input_size):
            raise ModelFileError(f"{self.path} takes {h}x{w} images but its config says img_size "
                                 f"{self.cfg.img_size_text}")


class TFLiteRunner(_FileRunner):
    """A .tflite export run by LiteRT (``ai_edge_litert.interpreter.Interpreter``, XNNPACK CPU delegate).

    Args:
      num_threads: interpreter threads (None: LiteRT's default).

    Raises:
      ModelFileError: the model's input size (H, W) differs from the config's.
    """

    kind = "tflite"

    def __init__(self, cfg, label_map, path: str, num_threads: Optional[int] = None):
        from ai_edge_litert.interpreter import Interpreter

        super().__init__(cfg, label_map, path)
        self._interpreter = Interpreter(model_path=path, num_threads=num_threads)
        self._interpreter.allocate_tensors()  # applies XNNPACK here, not at the first run (its INFO line: see cli)
        self._check_input_size(self._interpreter.get_input_details()[0]["shape"])
        self._runner = self._interpreter.get_signature_runner()

    def run(self, inputs, height, width):
        return self._runner(images=inputs)


class OnnxRunner(_FileRunner):
    """A .onnx export run by onnxruntime's CPU execution provider.

    Args:
      num_threads: ``intra_op_num_threads`` (None: onnxruntime's default).
      spinning: False: the intra-op threads sleep instead of spin-waiting between ops
        (``session.intra_op.allow_spinning`` 0), for pipelines whose other threads need the cores (utils/video.py:
        with spinning the video path ran at a third of the graph's rate on 2 cores); True: onnxruntime's default.

    Raises:
      ModelFileError: the model's input size (H, W) differs from the config's.
    """

    kind = "onnx"

    def __init__(self, cfg, label_map, path: str, num_threads: Optional[int] = None, spinning: bool = True):
        import onnxruntime as ort

        super().__init__(cfg, label_map, path)
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._check_input_size(self._session.get_inputs()[0].shape)
        self._names = [o.name for o in self._session.get_outputs()]

    def run(self, inputs, height, width):
        return dict(zip(self._names, self._session.run(self._names, {"images": inputs})))


class OpenVinoRunner(_FileRunner):
    """An OpenVINO IR (.xml + .bin, export_saved_model.py ``-openvino``: the ONNX export converted,
    yolact/deploy/openvino.py) compiled for OpenVINO's CPU plugin, latency hint, with an explicit arithmetic
    precision (``yolact.deploy.openvino.compile_config``: OpenVINO would pick bfloat16 by itself on CPUs that have
    it).

    Args:
      num_threads: ``INFERENCE_NUM_THREADS`` (None: OpenVINO's default).
      precision: 'float32' (default: the ONNX model's results to ~1e-5) or 'bfloat16' (AVX-512 BF16 / AMX: several
        times faster on such CPUs; scores move by up to a few 1e-2, as the in-process ``-precision bfloat16``).

    Raises:
      ModelFileError: the model's input size differs from the config's img_size.
      ValueError: an unknown precision.
    """

    kind = "openvino"

    def __init__(self, cfg, label_map, path: str, num_threads: Optional[int] = None, precision: str = "float32"):
        import openvino as ov

        from yolact.deploy.openvino import compile_config

        super().__init__(cfg, label_map, path)
        self.precision = precision
        self._compiled = ov.Core().compile_model(path, "CPU", compile_config(precision, num_threads))
        self._check_input_size([d.get_length() for d in self._compiled.input(0).get_partial_shape()])
        self._request = self._compiled.create_infer_request()
        self._outputs = [(o, o.get_any_name()) for o in self._compiled.outputs]

    def run(self, inputs, height, width):
        result = self._request.infer({"images": inputs})
        return {name: result[o] for o, name in self._outputs}


def open_model(path: str, cfg, label_map, num_threads: Optional[int] = None, spinning: bool = True,
               precision: str = "float32") -> Runner:
    """The runner for an exported model ``path`` (see :func:`model_kind`); ``cfg`` / ``label_map`` are the
    export's (``yolact.checkpoint.resolve_run(path)``: config.json and label_map.json beside the model).
    ``num_threads``: .tflite / .onnx / .xml CPU threads; ``spinning``: .onnx only (:class:`OnnxRunner`);
    ``precision``: an OpenVINO .xml may run in 'bfloat16' (:class:`OpenVinoRunner`), every other form only in its
    own precision ('float32' here).

    Raises:
      ModelFileError: unknown kind, missing file, a file the runtime cannot read (truncated, corrupt: one line
        naming it), an input size that differs from ``cfg``, or a precision other than float32 for a form that
        is not an OpenVINO .xml.
    """
    kind = model_kind(path)
    if precision != "float32" and kind != "openvino":
        raise ModelFileError(f"{path}: precision {precision} applies to an OpenVINO .xml (and to -checkpoint); a "
                             f"{kind} export has its own precision")
    try:
        if kind == "saved_model":
            return SavedModelRunner(cfg, label_map, path)
        if kind == "onnx":
            return OnnxRunner(cfg, label_map, path, num_threads, spinning)
        if kind == "openvino":
            return OpenVinoRunner(cfg, label_map, path, num_threads, precision)
        return TFLiteRunner(cfg, label_map, path, num_threads)
    except ModelFileError:
        raise
    except Exception as e:  # noqa: BLE001 -- each runtime has its own errors for a truncated or corrupt file
        text = " ".join(str(e).split())[:300] or type(e).__name__
        raise ModelFileError(f"cannot read {path} as a {kind} model (truncated or not an export?): {text}") from None


__all__ = ["RUNTIME_KINDS", "ModelFileError", "model_kind", "Runner", "SavedModelRunner", "TFLiteRunner",
           "OnnxRunner", "OpenVinoRunner", "open_model"]
