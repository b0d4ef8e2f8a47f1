"""Train YOLACT on TFRecords: ``python train.py -name coco -tfrecord_dir data/tfrecords -weights weights``.

A thin command line over the library (yolact/training): flags -> ``TrainOptions`` -> ``yolact.training.train``,
given the training records (data/parser.py ``TrainRecords``) and the validation's evaluation (:func:`coco_evaluate`,
utils/coco_eval.py), which the library does not import itself.
As the original train.py: SGD with PyTorch momentum and coupled L2 decay, linear warmup and step schedule with the
batch-size autoscale, BN frozen when the per-replica batch is below 6, non-finite steps skipped (counted).

The run folder WEIGHTS/NAME describes itself: ``config.json`` (the resolved config, training values included),
``label_map.json``, ``ckpt-N`` checkpoints, ``logs/`` (TensorBoard) and the final ``<config>_<step>.weights.h5``.
``-resume`` continues from its latest checkpoint with its config.json; ``-init`` takes a run folder, a .weights.h5,
or an original .pth/.npz.

One process writes a run folder at a time (a lock on ``RUN/.lock``); a new run into a folder that holds checkpoints
or weights needs ``-resume`` or ``-overwrite``; checkpoints and weights carry a hash of the config they were
trained with, checked on load. Every file is written atomically.

Exit status (utils/cli.py): 0 done (last stdout line: a JSON summary), 2 a bad flag or input (one line, checked
before anything is built or written), 1 a fault after saving a checkpoint (data errors, a full disk, a diverged
loss: ``"diverged": true`` in the JSON summary), 75 interrupted by SIGINT/SIGTERM after saving a checkpoint (the
JSON summary is printed too; continue with ``-resume``).
"""

from __future__ import annotations

import dataclasses
import json
import os

from utils import cli

cli.quiet_startup(__name__)  # before anything imports TensorFlow (acts only when run as a program)

from absl import flags

from utils.flags_util import DEFINE_img_size, DEFINE_number
from yolact.training.options import MIXED_PRECISION, TrainOptions, validate_options

SUMMARY_KEYS = ("step", "skipped", "data_errors", "checkpoint", "final_weights", "run_dir", "interrupted", "diverged",
                "diverged_at")


def _define_flags():
    f = flags
    f.DEFINE_string("name", "coco", "Dataset name: reads -tfrecord_dir/NAME/train-*.tfrecord and its label_map.json; "
                    "the run folder is -weights/NAME.")
    f.DEFINE_string("tfrecord_dir", "data/tfrecords", "Folder holding one subfolder of TFRecords per dataset.")
    f.DEFINE_string("weights", "weights", "Folder of run folders: this run's is WEIGHTS/NAME.")
    f.DEFINE_string("config", None, "Config preset (config.py); default yolact_base, or the run's config.json with "
                    "-resume (then it must agree).")
    DEFINE_img_size("img_size", None, "Input size: S (square) or HxW, e.g. 384x672 for 16:9 video (anchor scales "
                    "follow); with -resume it must agree with config.json.")
    f.DEFINE_integer("batch_size", None, "Global batch size, split across replicas (default: 8; with -resume the "
                     "run's).")
    DEFINE_number("lr", None, "Learning rate (default: the config's, autoscaled by batch/8). Accepts '1e-3'.")
    DEFINE_number("momentum", None, "SGD momentum in [0, 1) (default: config, 0.9).")
    DEFINE_number("weight_decay", None, "Coupled L2 weight decay (default: config, 5e-4). Accepts '5 * 1e-4'.")
    f.DEFINE_integer("train_iter", None, "Iterations to train (default: the config's max_iter, autoscaled).")
    f.DEFINE_integer("warmup_iter", None, "Linear lr warmup length in iterations (default: the config's "
                     "lr_warmup_until, 500; not autoscaled, as the original).")
    f.DEFINE_list("lr_steps", None, "Iterations at which lr is multiplied by the config's gamma (0.1), e.g. "
                  "'6000,8000' (default: the config's lr_steps, autoscaled by batch/8); used as given.")
    f.DEFINE_bool("no_autoscale", False, "Do not scale lr / iterations / steps by batch_size / 8.")
    f.DEFINE_bool("augment", None, "Use the original's SSD augmentation (-noaugment: resize only; default: the "
                  "config's switches).")
    f.DEFINE_integer("print_interval", 10, "Print/log losses every N steps.")
    f.DEFINE_integer("save_interval", 10000, "Save a checkpoint every N steps.")
    f.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept by the CheckpointManager.")
    f.DEFINE_bool("resume", False, "Continue from the latest checkpoint in WEIGHTS/NAME (with its config.json).")
    f.DEFINE_bool("overwrite", False, "Start WEIGHTS/NAME anew when it already holds checkpoints or weights (its "
                  "contents are deleted); without it such a folder is refused unless -resume.")
    f.DEFINE_string("init", None, "Initial weights: a run folder or a .weights.h5 in one (same architecture), or "
                    "an original .pth/.npz (full YOLACT or an ImageNet backbone such as the EfficientNet-Lite0 file) "
                    "converted on the fly. Another class count (fine-tuning): the class-dependent layers are "
                    "re-initialised and listed, every other tensor is loaded.")
    f.DEFINE_string("logdir", None, "TensorBoard folder (default: WEIGHTS/NAME/logs).")
    f.DEFINE_enum("mixed_precision", "none", list(MIXED_PRECISION), "Compute dtype policy.")
    f.DEFINE_integer("val_interval", 0, "Validation box/mask AP every N steps (0: off); needs -val_annotations and "
                     "val-*.tfrecord next to the training records.")
    f.DEFINE_string("val_annotations", None, "COCO json of the validation split (for -val_interval).")
    f.DEFINE_integer("val_images", 0, "Validate on at most N images (0: all).")
    f.DEFINE_integer("seed", None, "Seed for weights init, data order, augmentation and mask sampling.")
    f.DEFINE_bool("deterministic", False, "tf.config.experimental.enable_op_determinism() (needs -seed).")
    f.DEFINE_bool("save_data_state", False, "Checkpoint the tf.data iterator for an exact resume (single replica).")
    f.DEFINE_bool("shuffle", True, "Shuffle the training records.")
    DEFINE_number("clip_grad_norm", 0.0, "Clip each replica's gradients to this global L2 norm (0: off, as the "
                  "original). Not an original option: it keeps the prototypes alive in short CPU runs.")


def options_from_flags(fv=None) -> TrainOptions:
    fv = fv or flags.FLAGS
    return TrainOptions(**{field.name: fv[field.name].value for field in dataclasses.fields(TrainOptions)})


def coco_evaluate(predictor, *, tfrecord_pattern, annotations_file, max_images=None):
    """The validation of ``-val_interval`` (the task's ``evaluate_fn``): utils/coco_eval.py ``evaluate_dataset`` of
    ``predictor`` on the records ``tfrecord_pattern`` (read with data/parser.py) against the COCO json
    ``annotations_file``, at most ``max_images`` images (None: all), without tables or progress bar.

    Returns:
      dict: ``box/AP`` ... ``mask/APl`` (floats, fractions), ``images_evaluated``, ``images_in_annotations``.

    Raises:
      FileNotFoundError: missing annotations; utils/coco_eval.py ``NoImagesEvaluated``: no record is annotated.
    """
    from utils.coco_eval import evaluate_dataset

    return evaluate_dataset(predictor, annotations_file, tfrecord_pattern=tfrecord_pattern, max_images=max_images,
                            verbose=False, progress=False)


def main(argv):
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments {argv[1:]}")
    options = validate_options(options_from_flags())  # before TensorFlow is imported
    from data.parser import TrainRecords
    from yolact.training import train

    summary = train(options, TrainRecords(os.path.join(options.tfrecord_dir, options.name)),
                    evaluate_fn=coco_evaluate)
    print(json.dumps({k: summary[k] for k in SUMMARY_KEYS}), flush=True)
    if summary["diverged"]:
        from yolact.training import Diverged

        raise Diverged(f"training diverged from step {summary['diverged_at']} (loss non-finite or above the bound "
                       f"for several steps); checkpoint {summary['checkpoint']}; lower -lr or set -clip_grad_norm")
    if summary["interrupted"]:
        raise cli.Interrupted(f"interrupted ({summary['interrupted']}) at step {summary['step']}; checkpoint "
                              f"{summary['checkpoint']}; continue with -resume")


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
