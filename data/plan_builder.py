"""Building a :class:`~data.split_plan.SplitPlan` from polygon instances: the common part of the readers whose
datasets describe masks as polygons in pixels (data/labelme_reader.py, data/yolo_reader.py).

A reader walks its files and hands :class:`PlanBuilder` each image (:meth:`PlanBuilder.add_image`) and each
instance as one or more polygons (:meth:`PlanBuilder.add_instance`); the builder clips the points to the image
(counted in ``boxes_clipped``), checks that every part has 3 or more points and that the instance's box is not
empty, computes the COCO ``area`` with pycocotools (the mask's pixel count, as the TFRecords will hold it) and keeps
the segmentation in COCO's polygon form, so that data/encoding.py rasterises it exactly as ``COCO.annToMask``
(several polygons of one instance: their union, as COCO's polygon lists). What it refuses is listed with a reason.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
from pycocotools import mask as mask_utils

from data.split_plan import SplitPlan
from yolact.ops import label_map as label_map_lib

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class PlanBuilder:
    """Collects one split's images, instances and skipped items, then :meth:`build` returns the plan.

    Args:
      name: the split ('train' or 'val'); source: what was read (a folder, a data.yaml), named in messages;
      label_map: the split's categories (category ids the readers pass to :meth:`add_instance`).
    """

    def __init__(self, name: str, source: str, label_map: label_map_lib.LabelMap):
        self.name, self.source, self.label_map = name, source, label_map
        self.tasks: List[Dict] = []
        self.skipped_images: List[Tuple[str, str]] = []
        self.skipped_annotations: List[Tuple[object, str, str]] = []
        self.warnings: List[str] = []
        self.num_images = 0
        self.clipped = 0

    def add_image(self, file_name: str, path: str, height: int, width: int) -> Dict:
        """Add an image to encode (its id is its position, 1-based) and return its task (``anns`` empty).

        Args:
          file_name: the name stored in the record and the COCO json (relative to the split's image folder);
          path: the existing file; height, width: positive ints, the size the polygons refer to.
        """
        self.num_images += 1
        task = {"image_id": self.num_images, "file_name": file_name, "path": path, "height": int(height),
                "width": int(width), "anns": []}
        self.tasks.append(task)
        return task

    def skip_image(self, file_name: str, reason: str) -> None:
        """List an image of the dataset that is not written (counted in ``images_in_json``)."""
        self.num_images += 1
        self.skipped_images.append((file_name, reason))

    def skip_annotation(self, ref: str, file_name: str, reason: str) -> None:
        """List an instance (or a shape / line of it) that is not written; ``ref`` names it in the report."""
        self.skipped_annotations.append((ref, file_name, reason))

    def add_instance(self, task: Dict, ref: str, category_id: int, polygons: Sequence[np.ndarray]) -> bool:
        """Add one instance, the union of ``polygons``, to ``task``'s annotations.

        Args:
          task: from :meth:`add_image`; ref: the instance's name in the report (e.g. ``"shape 3"``, ``"line 7"``);
          category_id: a category id of the label map;
          polygons: float arrays [k, 2] of ``(x, y)`` in pixels (COCO's convention: pixel ``i`` spans
            ``[i, i + 1)``), each with k >= 3; points outside ``[0, width] x [0, height]`` are clipped.

        Returns:
          True when added; False when skipped and listed (no polygon, a part with fewer than 3 points, a box of
          zero area after clipping).
        """
        height, width = task["height"], task["width"]
        if not polygons:
            self.skip_annotation(ref, task["file_name"], "no polygon")
            return False
        flat, clipped = [], False
        for poly in polygons:
            poly = np.asarray(poly, np.float64).reshape(-1, 2)
            if len(poly) < 3:
                self.skip_annotation(ref, task["file_name"], "polygon with fewer than 3 points")
                return False
            inside = np.clip(poly, 0.0, [width, height])
            clipped |= bool((inside != poly).any())
            flat.append(inside)
        points = np.concatenate(flat)
        (x1, y1), (x2, y2) = points.min(0), points.max(0)
        if x2 <= x1 or y2 <= y1:
            self.skip_annotation(ref, task["file_name"], "zero-area box (after clipping to the image)")
            return False
        segmentation = [p.ravel().tolist() for p in flat]
        area = float(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))))
        self.clipped += clipped
        task["anns"].append({
            "id": ref,
            "category_id": int(category_id),
            "name": self.label_map.id_to_name(category_id),
            "iscrowd": 0,
            "area": area,
            "box": (x1 / width, y1 / height, x2 / width, y2 / height),
            "segmentation": segmentation,
        })
        return True

    def build(self) -> SplitPlan:
        """The plan of everything added (images in the order added)."""
        return SplitPlan(name=self.name, source=self.source, label_map=self.label_map, tasks=self.tasks,
                         skipped_images=self.skipped_images, skipped_annotations=self.skipped_annotations,
                         num_images=self.num_images, boxes_clipped=self.clipped, warnings=self.warnings)


def plan_to_coco(plan: SplitPlan) -> Dict:
    """A split plan as a COCO instances json (what ``inference.py -eval`` and ``train.py -val_annotations`` read).

    Args:
      plan: any reader's plan, after the write (its skipped lists then include what the encoder refused): every
        task whose image is not in ``plan.skipped_images`` is included.

    Returns:
      ``{"images": [{"id", "file_name", "height", "width"}], "annotations": [{"id" (1..n), "image_id",
      "category_id", "segmentation" (the plan's), "area", "bbox" [x, y, w, h] pixels, "iscrowd"}], "categories":
      [{"id", "name", "supercategory"}]}``; annotations the encoder skipped are left out.
    """
    skipped = {n for n, _ in plan.skipped_images}
    bad_anns = {(a, n) for a, n, _ in plan.skipped_annotations}
    images, annotations = [], []
    for task in plan.tasks:
        if task["file_name"] in skipped:
            continue
        H, W = task["height"], task["width"]
        images.append({k: task[k] for k in ("file_name", "height", "width")} | {"id": task["image_id"]})
        for ann in task["anns"]:
            if (ann["id"], task["file_name"]) in bad_anns:
                continue
            x1, y1, x2, y2 = ann["box"]
            annotations.append({
                "id": len(annotations) + 1, "image_id": task["image_id"], "category_id": ann["category_id"],
                "segmentation": ann["segmentation"], "area": ann["area"],
                "bbox": [x1 * W, y1 * H, (x2 - x1) * W, (y2 - y1) * H], "iscrowd": ann["iscrowd"],
            })
    categories = [{"id": c.id, "name": c.name, "supercategory": ""} for c in plan.label_map.categories]
    return {"images": images, "annotations": annotations, "categories": categories}
