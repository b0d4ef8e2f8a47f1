"""YOLACT training as a library (TF Model Garden style: a task driven by a small loop).

How a caller (a tool) trains: it hands in what reads the dataset's files, the training records (data/parser.py)
and the validation's evaluation (train.py ``coco_evaluate``, over utils/coco_eval.py); this package imports
neither::

    from data.parser import TrainRecords
    from train import coco_evaluate
    from yolact.training import TrainOptions, train

    summary = train(TrainOptions(name="coco", tfrecord_dir="data/tfrecords", weights="weights",
                                 config="yolact_resnet50", batch_size=8, val_interval=5000,
                                 val_annotations="data/instances_val2017.json"),
                    TrainRecords("data/tfrecords/coco"), evaluate_fn=coco_evaluate)

* :mod:`yolact.training.options`: ``TrainOptions``, ``validate_options`` (every option checked before anything is
  read or built), ``resolve_config`` (the config a run trains with, written to the run folder's config.json).
* :mod:`yolact.training.task`: ``YolactTask`` (``build_model``, ``initialize``, ``create_optimizer``,
  ``build_inputs``, ``build_losses`` / ``compute_loss``, ``train_step``, ``validation_step``).
* :mod:`yolact.training.trainer`: ``Trainer`` / ``train`` (strategy, checkpoints, resume, skipped steps, data
  errors, callbacks) and its errors (``DataError``, ``DataFault``, ``ResumeError``; ``OptionError`` and
  ``InitError`` from options / task), which are ``utils.cli`` errors: exit 2 (user) or 1 (fault).
* :mod:`yolact.training.callbacks`: Keras callbacks for logging, TensorBoard images, validation and signals.

Only the options module is imported eagerly (no TensorFlow): ``train.py -help`` and flag errors stay fast.
"""

from yolact.training.options import OptionError, TrainOptions, resolve_config, validate_options

_LAZY = {"Trainer": "trainer", "train": "trainer", "DataError": "trainer", "DataFault": "trainer",
         "ResumeError": "trainer", "DiskFull": "trainer", "Diverged": "trainer", "YolactTask": "task",
         "InitError": "task"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"yolact.training.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'yolact.training' has no attribute {name!r}")


__all__ = ["TrainOptions", "OptionError", "validate_options", "resolve_config", *_LAZY]
