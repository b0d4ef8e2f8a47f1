"""``label_map.json``: a dataset's category ids <-> the contiguous training index.

Format (docs/architecture.md)::

    {"num_classes": 81,
     "categories": [{"id": 1, "name": "person", "index": 1}, ...]}

``id`` is the dataset's own category id (stored in the TFRecords as ``image/object/class/label``, written to COCO
results json, returned by the SavedModel as ``detection_classes``). ``index`` is the contiguous training index
1..C-1, the network's class channel (0 is background), so ``num_classes`` = number of categories + 1. Categories
are ordered by id, as the original's COCO label map (original: data/config.py COCO_LABEL_MAP, where
``label_map[id] - 1`` is the 0-based class and the class channel is that + 1; data/coco.py get_label_map). For a
dataset whose ids are 1..n (Pascal SBD, where the original uses ``label_map None``) the index equals the id.

Category ids are integers in 0..:data:`MAX_CATEGORY_ID` (a label map with others is refused: :class:`LabelMapError`),
so that :meth:`LabelMap.id_to_index_array`, the dense lookup vector of graph code (``tf.gather(tf.constant(arr),
labels)``) and of the inference results, holds at most 4 MiB. This module has no TensorFlow dependency.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

import numpy as np

from utils import atomic

LABEL_MAP_FILENAME = "label_map.json"
# The largest category id: dense id -> index lookups (id_to_index_array) hold MAX_CATEGORY_ID + 1 int32 (4 MiB).
MAX_CATEGORY_ID = 2**20 - 1

# The 80 COCO categories (id, name) in id order: original data/config.py COCO_CLASSES / COCO_LABEL_MAP.
COCO_CATEGORIES = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"), (7, "train"),
    (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"), (13, "stop sign"),
    (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"),
    (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"),
    (36, "snowboard"), (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"),
    (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"), (54, "sandwich"),
    (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"),
    (62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"),
    (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"), (77, "cell phone"),
    (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"), (82, "refrigerator"), (84, "book"),
    (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
)


class LabelMapError(ValueError):
    """A category list or label_map.json is malformed (one-line message)."""


@dataclasses.dataclass(frozen=True)
class Category:
    """One category: dataset ``id``, ``name`` and contiguous training ``index`` (1-based class channel)."""

    id: int
    name: str
    index: int


@dataclasses.dataclass(frozen=True)
class LabelMap:
    """Immutable mapping between dataset category ids, names and contiguous training indices.

    Attributes:
      categories: ordered by id; ``categories[i].index == i + 1``.
    """

    categories: Tuple[Category, ...]

    def __post_init__(self):
        ids = [c.id for c in self.categories]
        if not ids:
            raise LabelMapError("label map has no categories")
        outside = [i for i in ids if not 0 <= i <= MAX_CATEGORY_ID]
        if outside:
            raise LabelMapError(f"category id {outside[0]} outside 0..{MAX_CATEGORY_ID} (renumber the categories)")
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise LabelMapError(f"duplicate category ids {dup}")
        if ids != sorted(ids):
            raise LabelMapError("categories must be ordered by id")
        if [c.index for c in self.categories] != list(range(1, len(ids) + 1)):
            raise LabelMapError("category indices must be 1..n in id order")

    @property
    def num_classes(self) -> int:
        """Classes including background (number of categories + 1), the model's ``num_classes``."""
        return len(self.categories) + 1

    @property
    def ids(self) -> List[int]:
        """Dataset category ids in index order (``ids[index - 1]``)."""
        return [c.id for c in self.categories]

    @property
    def names(self) -> List[str]:
        """Category names in index order (``names[index - 1]``); foreground classes only."""
        return [c.name for c in self.categories]

    def id_to_index(self, category_id: int) -> int:
        """Dataset category id -> training index 1..C-1. Raises KeyError for an unknown id."""
        return self._by_id()[int(category_id)].index

    def index_to_id(self, index: int) -> int:
        """Training index 1..C-1 -> dataset category id. Raises KeyError for index 0 (background) or out of range."""
        index = int(index)
        if not 1 <= index <= len(self.categories):
            raise KeyError(f"class index {index} not in 1..{len(self.categories)}")
        return self.categories[index - 1].id

    def index_to_name(self, index: int) -> str:
        """Training index 1..C-1 -> category name. Raises KeyError as :meth:`index_to_id`."""
        self.index_to_id(index)
        return self.categories[int(index) - 1].name

    def id_to_name(self, category_id: int) -> str:
        """Dataset category id -> name. Raises KeyError for an unknown id."""
        return self._by_id()[int(category_id)].name

    def has_id(self, category_id: int) -> bool:
        """Whether ``category_id`` is one of the dataset's categories."""
        return int(category_id) in self._by_id()

    def id_to_index_array(self) -> np.ndarray:
        """Dense lookup vector, int32 [max_id + 1] (max_id <= :data:`MAX_CATEGORY_ID`): ``arr[id]`` = training index,
        -1 for ids with no category."""
        arr = np.full([max(self.ids) + 1], -1, np.int32)
        for c in self.categories:
            arr[c.id] = c.index
        return arr

    def index_to_id_array(self) -> np.ndarray:
        """Dense lookup vector, int32 [C]: ``arr[index]`` = dataset category id, ``arr[0]`` = 0 (background)."""
        return np.asarray([0] + self.ids, np.int32)

    def to_json_dict(self) -> Dict:
        """The ``label_map.json`` content as a dict."""
        return {
            "num_classes": self.num_classes,
            "categories": [{"id": c.id, "name": c.name, "index": c.index} for c in self.categories],
        }

    def _by_id(self) -> Mapping[int, Category]:
        cache = self.__dict__.get("_by_id_cache")
        if cache is None:
            cache = {c.id: c for c in self.categories}
            object.__setattr__(self, "_by_id_cache", cache)
        return cache


def from_categories(categories: Iterable[Mapping]) -> LabelMap:
    """Label map from a COCO json's ``categories`` list (dicts with ``id`` and ``name``, any order).

    Categories are sorted by id and given indices 1..n.

    Raises:
      LabelMapError: empty list, an entry without an integer ``id`` or a string ``name``, or duplicate ids.
    """
    cats = []
    for c in categories:
        if not isinstance(c, Mapping) or not isinstance(c.get("id"), int) or isinstance(c.get("id"), bool):
            raise LabelMapError(f"category entry without an integer 'id': {str(c)[:80]}")
        if not isinstance(c.get("name"), str):
            raise LabelMapError(f"category {c['id']} has no string 'name'")
        cats.append((c["id"], c["name"]))
    cats.sort(key=lambda t: t[0])
    return LabelMap(tuple(Category(id=i, name=n, index=k + 1) for k, (i, n) in enumerate(cats)))


def from_names(names: Sequence[str]) -> LabelMap:
    """Label map for a dataset whose category ids are 1..n in the given order (e.g. Pascal SBD's 20 classes)."""
    return from_categories([{"id": i + 1, "name": n} for i, n in enumerate(names)])


def write_label_map(path: str | os.PathLike, label_map: LabelMap) -> None:
    """Write ``label_map.json`` to ``path`` (a file path, or a directory to write ``label_map.json`` into)
    atomically (utils/atomic.py: the file keeps its previous content or gets the whole new one).

    Raises:
      utils.atomic.DiskFullError: the disk filled up; OSError: another write error.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, LABEL_MAP_FILENAME)
    atomic.write_text(path, json.dumps(label_map.to_json_dict(), indent=1) + "\n")


def read_label_map(path: str | os.PathLike) -> LabelMap:
    """Read ``label_map.json`` from ``path`` (the file, or the TFRecord directory holding it).

    Raises:
      FileNotFoundError: no such file.
      LabelMapError: not valid json, categories malformed or not indexed 1..n in id order, or ``num_classes``
        inconsistent with the categories.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, LABEL_MAP_FILENAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"label map not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError) as e:  # ValueError: UnicodeDecodeError, JSONDecodeError
        raise LabelMapError(f"cannot read label map {path}: {json_error(e)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("categories"), list):
        raise LabelMapError(f"{path}: expected an object with a 'categories' list")
    try:
        cats = tuple(Category(id=int(c["id"]), name=str(c["name"]), index=int(c["index"])) for c in data["categories"])
    except (KeyError, TypeError, ValueError, OverflowError):
        raise LabelMapError(f"{path}: every category needs 'id', 'name' and 'index'") from None
    label_map = LabelMap(cats)
    if "num_classes" in data and data["num_classes"] != label_map.num_classes:
        raise LabelMapError(
            f"{path}: num_classes {data['num_classes']} != {len(cats)} categories + background"
        )
    return label_map


def json_error(error: BaseException) -> str:
    """One line for an error of ``json.load``: ``"nested too deeply"`` for a RecursionError, else the message's
    first line (e.g. ``"Expecting value: line 1 column 1 (char 0)"``)."""
    if isinstance(error, RecursionError):
        return "nested too deeply"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def coco_label_map() -> LabelMap:
    """COCO's 80 categories (the label map of the original's published weights and of converted ``.pth`` files)."""
    return from_categories([{"id": i, "name": n} for i, n in COCO_CATEGORIES])
