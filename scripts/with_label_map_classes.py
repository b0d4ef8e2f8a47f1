"""Run inference.py / export_saved_model.py with the class count of their ``-label_map`` (custom datasets).

Workaround: both CLIs build their config with ``get_config(FLAGS.config, img_size=...)`` and then reject a
``-label_map`` whose class count differs from the preset's 81 ("label map ... has 11 classes incl. background,
config has 81"), so a model trained by train.py on a custom dataset (train.py does take the count from the
dataset's label_map.json) cannot be evaluated or exported. This wrapper makes ``config.get_config`` default
``num_classes`` to the label map's before running the CLI unchanged. Remove it once the CLIs pass
``num_classes=read_label_map(FLAGS.label_map).num_classes``.

    python scripts/with_label_map_classes.py inference.py -eval -label_map data/x/label_map.json ...
"""

import os
import runpy
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _label_map_arg(argv):
    for i, arg in enumerate(argv):
        for prefix in ("-label_map=", "--label_map="):
            if arg.startswith(prefix):
                return arg[len(prefix):]
        if arg in ("-label_map", "--label_map") and i + 1 < len(argv):
            return argv[i + 1]
    return None


def main():
    if len(sys.argv) < 2 or os.path.basename(sys.argv[1]) not in ("inference.py", "export_saved_model.py"):
        sys.exit("usage: with_label_map_classes.py {inference.py|export_saved_model.py} [flags ...]")
    sys.path.insert(0, ROOT)
    import config
    from data import label_map as label_map_lib

    path = _label_map_arg(sys.argv[2:])
    if path:
        try:
            num_classes = label_map_lib.read_label_map(path).num_classes
        except (OSError, ValueError) as e:
            sys.exit(f"with_label_map_classes: error: cannot read {path}: {e}")
        original = config.get_config

        def get_config(name, num_classes=None, img_size=None, _n=num_classes):
            return original(name, num_classes=_n if num_classes is None else num_classes, img_size=img_size)

        config.get_config = get_config
    script = os.path.join(ROOT, os.path.basename(sys.argv[1]))
    sys.argv = [script] + sys.argv[2:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
