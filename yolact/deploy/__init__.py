"""Deployable forms of a YOLACT model beyond the SavedModel: TFLite (float32, float16, int8) and ONNX.

``graph.py`` builds the one deployable function (the export contract below), ``tflite.py`` and ``onnx.py`` convert
it; ``yolact/runtimes.py`` runs the results (and SavedModels) behind the Predictor's interface.
"""
