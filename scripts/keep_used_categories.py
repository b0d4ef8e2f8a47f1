"""Write copies of COCO-style jsons whose ``categories`` keep only the categories the first json's annotations use.

The quick start trains on 24 images that use a handful of COCO's 80 categories; training those as a custom dataset
(background + the used categories, official ids and names kept) lets a few minutes of CPU training give visible
detections, where an 81-way softmax would still score everything below the 0.05 detection threshold.

    python scripts/keep_used_categories.py -out_dir OUT_DIR -annotations_files train.json[,val.json,...]

Every json is written to OUT_DIR under its own file name, images and annotations unchanged. Annotations of the
other jsons whose category is not kept make the script fail (exit 2, one line, nothing written), so no split
silently loses objects. Errors follow utils/cli.py (one line, exit 2).
"""

import json
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils import cli  # noqa: E402

cli.quiet_startup(__name__)


def define_flags() -> None:
    """The script's flags (called under ``__main__`` only, the project's convention: see utils/cli.py)."""
    from absl import flags

    flags.DEFINE_string("out_dir", None, "Folder for the rewritten jsons (created).")
    flags.DEFINE_list("annotations_files", None, "COCO-style jsons, comma-separated; the first one's annotations "
                      "decide the kept categories (the training split).")
    flags.mark_flags_as_required(["out_dir", "annotations_files"])


def keep_used_categories(datasets):
    """Restrict each dataset's ``categories`` (in place) to the category ids the first dataset's annotations use.

    Args:
      datasets: list of ``(path, COCO json dict)``; the first is the reference (training) split.

    Returns:
      The sorted list of kept category ids.

    Raises:
      cli.UserError: a json lacks ``annotations`` / ``categories`` or has malformed entries, or a later json has
        annotations of a category the first one does not use.
    """
    try:
        used = {a["category_id"] for a in datasets[0][1]["annotations"]}
        for path, d in datasets:
            missing = {a["category_id"] for a in d["annotations"]} - used
            if missing:
                raise cli.UserError(f"{path} has annotations of categories {sorted(missing)} absent from "
                                    f"{datasets[0][0]}")
            d["categories"] = [c for c in d["categories"] if c["id"] in used]
    except (KeyError, TypeError) as e:
        raise cli.UserError(f"not a COCO-style json with 'annotations' and 'categories' ({type(e).__name__}: {e})")
    return sorted(used)


def main(argv):
    from absl import flags

    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])} (use -out_dir and -annotations_files)")
    datasets = []
    for path in FLAGS.annotations_files:
        try:
            with open(path, encoding="utf-8") as f:
                datasets.append((path, json.load(f)))
        except (OSError, ValueError) as e:
            raise cli.UserError(f"cannot read {path}: {str(e).splitlines()[0]}")
    used = keep_used_categories(datasets)
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    for path, d in datasets:
        with open(os.path.join(FLAGS.out_dir, os.path.basename(path)), "w", encoding="utf-8") as f:
            json.dump(d, f)
    names = ", ".join(c["name"] for c in datasets[0][1]["categories"])
    print(f"kept {len(used)} categories ({names}) in {len(datasets)} json(s) -> {FLAGS.out_dir}")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
