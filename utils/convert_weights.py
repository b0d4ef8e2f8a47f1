"""Convert an original YOLACT / ImageNet-backbone state_dict into a Keras ``.weights.h5`` (command line).

Usage::

    python -m utils.convert_weights -src yolact_resnet50_54_800000.pth -config yolact_resnet50 \
        -out yolact_resnet50.weights.h5
    python -m utils.convert_weights -src resnet50-19c8e357.pth -config yolact_resnet50 -out r50_imagenet.weights.h5
    python -m utils.convert_weights -src ../shared/weights/efficientnet-lite0-57934424.npz \
        -config yolact_efficientnet_lite0 -out lite0_imagenet.weights.h5

Beside ``-out`` it writes ``config.json`` and ``label_map.json`` (COCO's 80 categories for 81-class models, else
``-label_map``): the folder is a run folder (yolact/checkpoint.py) that inference, export and ``train.py -init``
read without other model flags. One model per folder.

A thin command line over yolact/torch_weights.py ``convert_file`` (accepted files, kinds of state_dict, layouts,
YOLACT++): flags -> ``convert_file`` -> one summary line on stdout. Exit status (utils/cli.py): 0 converted; 2 a
bad flag, a missing or unreadable (e.g. truncated) file, ``-out`` that is ``-src``, or weights that do not fit
``-config`` (one line naming the keys; nothing written); 1 no space left (the previous ``-out`` stays). ``-out`` is
written atomically (utils/atomic.py): a killed conversion leaves the previous file, never a truncated one.
"""

from __future__ import annotations

import os

from utils import cli


def main(argv):
    from absl import flags

    from yolact.torch_weights import convert_file

    from utils.atomic import DiskFullError
    from utils.paths import check_output_not_input

    f = flags.FLAGS
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments {argv[1:]}")
    folder = os.path.dirname(os.path.abspath(f.out))
    for output in (f.out, os.path.join(folder, "config.json"), os.path.join(folder, "label_map.json")):
        check_output_not_input(output, [("-src", f.src)], "-out" if output == f.out else "-out's run file")
    try:
        summary = convert_file(f.src, f.config, f.out, num_classes=f.num_classes, backbone_only=f.backbone_only,
                               label_map_path=f.label_map)
    except DiskFullError as exc:  # nothing replaced: the previous -out stays
        raise cli.FaultError(str(exc)) from None
    except (ValueError, FileNotFoundError) as exc:  # WeightConversionError is a ValueError
        raise cli.UserError(str(exc)) from None
    what = "backbone only" if summary["kind"] != "yolact" or f.backbone_only else "full model"
    print(
        f"converted {summary['loaded']} tensors ({summary['kind']}, {what}) from {f.src} "
        f"for {f.config} -> {f.out}" + (f"; ignored {len(summary['ignored'])} non-backbone keys" if summary["ignored"] else "")
    )


def _define_flags():
    from absl import flags

    flags.DEFINE_string("src", None, "source state_dict: .pth (legacy or zip) or .npz", required=True)
    flags.DEFINE_string("config", None, "config preset, e.g. yolact_resnet50", required=True)
    flags.DEFINE_string("out", None, "output Keras weights, must end with .weights.h5", required=True)
    flags.DEFINE_integer("num_classes", None, "classes incl. background (default: the config's)")
    flags.DEFINE_bool("backbone_only", False, "load only backbone.* keys from a full YOLACT state_dict")
    flags.DEFINE_string("label_map", None, "label_map.json written beside -out with config.json (default: COCO's 80 "
                        "categories, for 81-class models only)")


if __name__ == "__main__":
    cli.quiet_startup(__name__)  # before TensorFlow is imported (main() imports it lazily)
    _define_flags()
    cli.run(main)
