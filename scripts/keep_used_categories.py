"""Write copies of COCO-style jsons whose ``categories`` keep only the categories the first json's annotations use.

The quick start trains on 24 images that use a handful of COCO's 80 categories; training those as a custom dataset
(background + the used categories, official ids and names kept) lets a few minutes of CPU training give visible
detections, where an 81-way softmax would still score everything below the 0.05 detection threshold.

    python scripts/keep_used_categories.py OUT_DIR train.json [val.json ...]

Every json is written to OUT_DIR under its own file name, images and annotations unchanged. Annotations of the
other jsons whose category is not kept make the script fail (exit 1, one line), so no split silently loses objects.
"""

import json
import os
import sys


def main(argv):
    if len(argv) < 3:
        sys.exit(f"usage: {os.path.basename(argv[0])} OUT_DIR train.json [val.json ...]")
    out_dir, paths = argv[1], argv[2:]
    try:
        datasets = []
        for p in paths:
            with open(p) as f:
                datasets.append(json.load(f))
        used = {a["category_id"] for a in datasets[0]["annotations"]}
        for p, d in zip(paths, datasets):
            missing = {a["category_id"] for a in d["annotations"]} - used
            if missing:
                raise ValueError(f"{p} has annotations of categories {sorted(missing)} absent from {paths[0]}")
            d["categories"] = [c for c in d["categories"] if c["id"] in used]
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"keep_used_categories: error: {e}")
    os.makedirs(out_dir, exist_ok=True)
    for p, d in zip(paths, datasets):
        with open(os.path.join(out_dir, os.path.basename(p)), "w") as f:
            json.dump(d, f)
    names = ", ".join(c["name"] for c in datasets[0]["categories"])
    print(f"kept {len(used)} categories ({names}) in {len(paths)} json(s) -> {out_dir}")


if __name__ == "__main__":
    main(sys.argv)
