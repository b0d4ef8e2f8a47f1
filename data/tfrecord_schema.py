"""TFRecord feature keys, shared by the writer (data/shards.py) and the parser (data/parser.py).

Keys follow the TF Model Garden / Object Detection API conventions. One ``tf.train.Example`` per image:

=================================  ==========  ===============================================================
key                                type        meaning
=================================  ==========  ===============================================================
``image/encoded``                  bytes       the image, JPEG (or PNG), always 3-channel RGB
``image/format``                   bytes       b"jpeg" or b"png"
``image/source_id``                bytes       the dataset's image id as decimal text (COCO image id)
``image/filename``                 bytes       file name inside the image directory
``image/height``, ``image/width``  int64       original size in pixels
``image/object/bbox/xmin|ymin|``   float list  box corners normalized by width / height, clipped to [0, 1]
``xmax|ymax``
``image/object/class/label``       int64 list  the dataset's own category id (COCO: 1..90 with gaps)
``image/object/class/text``        bytes list  category name
``image/object/is_crowd``          int64 list  0 / 1
``image/object/area``              float list  annotation ``area`` in original pixels
``image/object/mask``              bytes list  one PNG (uint8 0/1, original H x W) per instance
=================================  ==========  ===============================================================
"""

from __future__ import annotations

from typing import Dict, Sequence

import tensorflow as tf

from yolact.ops.label_map import LABEL_MAP_FILENAME  # noqa: F401  (re-exported; defined once in label_map)

IMAGE_ENCODED = "image/encoded"
IMAGE_FORMAT = "image/format"
IMAGE_SOURCE_ID = "image/source_id"
IMAGE_FILENAME = "image/filename"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
BBOX_XMIN = "image/object/bbox/xmin"
BBOX_YMIN = "image/object/bbox/ymin"
BBOX_XMAX = "image/object/bbox/xmax"
BBOX_YMAX = "image/object/bbox/ymax"
CLASS_LABEL = "image/object/class/label"
CLASS_TEXT = "image/object/class/text"
IS_CROWD = "image/object/is_crowd"
AREA = "image/object/area"
MASK = "image/object/mask"


def _bytes(values: Sequence[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _ints(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values: Sequence[float]) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def make_example(
    *,
    encoded: bytes,
    image_format: str,
    source_id: int | str,
    filename: str,
    height: int,
    width: int,
    xmin: Sequence[float],
    ymin: Sequence[float],
    xmax: Sequence[float],
    ymax: Sequence[float],
    labels: Sequence[int],
    texts: Sequence[str],
    is_crowd: Sequence[int],
    areas: Sequence[float],
    masks_png: Sequence[bytes],
) -> tf.train.Example:
    """Build one image's ``tf.train.Example``; boxes normalized ``[0, 1]``, labels are dataset category ids.

    Raises:
      ValueError: the per-object lists differ in length.
    """
    n = len(labels)
    lengths = {len(xmin), len(ymin), len(xmax), len(ymax), len(texts), len(is_crowd), len(areas), len(masks_png)}
    if lengths != {n}:
        raise ValueError(f"per-object feature lists differ in length: {sorted(lengths | {n})}")
    feature = {
        IMAGE_ENCODED: _bytes([encoded]),
        IMAGE_FORMAT: _bytes([image_format.encode()]),
        IMAGE_SOURCE_ID: _bytes([str(source_id).encode()]),
        IMAGE_FILENAME: _bytes([filename.encode()]),
        IMAGE_HEIGHT: _ints([height]),
        IMAGE_WIDTH: _ints([width]),
        BBOX_XMIN: _floats(xmin),
        BBOX_YMIN: _floats(ymin),
        BBOX_XMAX: _floats(xmax),
        BBOX_YMAX: _floats(ymax),
        CLASS_LABEL: _ints(labels),
        CLASS_TEXT: _bytes([t.encode() for t in texts]),
        IS_CROWD: _ints(is_crowd),
        AREA: _floats(areas),
        MASK: _bytes(masks_png),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


FEATURE_SPEC = {
    IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
    IMAGE_FORMAT: tf.io.FixedLenFeature([], tf.string, default_value=b"jpeg"),
    IMAGE_SOURCE_ID: tf.io.FixedLenFeature([], tf.string),
    IMAGE_FILENAME: tf.io.FixedLenFeature([], tf.string, default_value=b""),
    IMAGE_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
    IMAGE_WIDTH: tf.io.FixedLenFeature([], tf.int64),
    BBOX_XMIN: tf.io.VarLenFeature(tf.float32),
    BBOX_YMIN: tf.io.VarLenFeature(tf.float32),
    BBOX_XMAX: tf.io.VarLenFeature(tf.float32),
    BBOX_YMAX: tf.io.VarLenFeature(tf.float32),
    CLASS_LABEL: tf.io.VarLenFeature(tf.int64),
    CLASS_TEXT: tf.io.VarLenFeature(tf.string),
    IS_CROWD: tf.io.VarLenFeature(tf.int64),
    AREA: tf.io.VarLenFeature(tf.float32),
    MASK: tf.io.VarLenFeature(tf.string),
}


def parse_example(serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Parse one serialized Example into dense tensors (graph code, no decoding).

    Returns a dict with ``encoded`` string [], ``source_id`` string [], ``height``/``width`` int32 [],
    ``boxes_yxyx`` float32 [n, 4] normalized ``[ymin, xmin, ymax, xmax]``, ``labels`` int32 [n] (dataset category
    ids), ``is_crowd`` bool [n], ``area`` float32 [n], ``masks_png`` string [n].
    """
    f = tf.io.parse_single_example(serialized, FEATURE_SPEC)

    def dense(key, default):
        return tf.sparse.to_dense(f[key], default_value=default)

    boxes = tf.stack(
        [dense(BBOX_YMIN, 0.0), dense(BBOX_XMIN, 0.0), dense(BBOX_YMAX, 0.0), dense(BBOX_XMAX, 0.0)], axis=-1
    )
    return {
        "encoded": f[IMAGE_ENCODED],
        "source_id": f[IMAGE_SOURCE_ID],
        "filename": f[IMAGE_FILENAME],
        "height": tf.cast(f[IMAGE_HEIGHT], tf.int32),
        "width": tf.cast(f[IMAGE_WIDTH], tf.int32),
        "boxes_yxyx": tf.reshape(boxes, [-1, 4]),
        "labels": tf.cast(dense(CLASS_LABEL, 0), tf.int32),
        "is_crowd": tf.cast(dense(IS_CROWD, 0), tf.bool),
        "area": dense(AREA, 0.0),
        "masks_png": dense(MASK, b""),
    }
