"""tf.data pipelines: TFRecords (data/tfrecord_schema.py) → training batches or evaluation batches.

Training (:func:`train_dataset`) yields ``(images, targets)`` as in docs/architecture.md "Parser → training";
evaluation (:func:`eval_dataset`) yields ``(images, info)``. Both read the sharded records with ``interleave``,
decode images (yolact/ops/image_io.py ``decode_image_rgb``: JPEG with OpenCV's exact IDCT, 3 channels) and PNG
instance masks, map dataset category ids to class channels with the ``label_map.json`` next to the records, and
prefetch with AUTOTUNE.

Training-set rules (decided here; the original differs as noted):

* Images without a non-crowd object (no annotation at all, or crowds only) are filtered out before decoding. The
  original never samples images without annotations and crashes on crowd-only ones (reference §9.3).
* Images whose non-crowd objects all vanish in augmentation (the discard rule removing degenerate boxes; the crop
  always keeps one) are filtered out after augmentation, the counterpart of the original's "resampling" of another
  image. With ``drop_empty=False`` they are kept with all-background targets instead.
* More than ``cfg.parser.num_max_pad`` objects: the ``num_max_pad`` largest by annotation area are kept (crowds
  count among them) before decoding; see data/targets.py.

Determinism: every random choice (file order, shuffle, augmentation) derives from ``seed``; the augmentation of
the k-th element uses the stateless seed ``(seed, k)``. ``seed=None`` draws a fresh seed.
"""

from __future__ import annotations

import os
from typing import NamedTuple, Optional, Set, Tuple

import numpy as np
import tensorflow as tf

from data import augment as augment_lib
from yolact.ops import preprocess
from yolact.ops import label_map as label_map_lib
from data import targets as targets_lib
from data import tfrecord_schema as schema
from yolact.ops.image_io import decode_image_rgb
from yolact.ops.anchors import make_anchors

AUTOTUNE = tf.data.AUTOTUNE

# train_dataset gives up after this many consecutive records that yield no training image (no non-crowd object, or
# every object removed by augmentation): a dataset that cannot feed training fails instead of spinning forever.
MAX_CONSECUTIVE_DROPPED = 1000
# The message of the InvalidArgumentError raised then; callers recognise the condition by this prefix.
STARVED_MESSAGE = "no training image in"


def _files(file_pattern) -> list:
    patterns = [file_pattern] if isinstance(file_pattern, (str, os.PathLike)) else list(file_pattern)
    files = sorted(f for p in patterns for f in tf.io.gfile.glob(str(p)))
    if not files:
        raise ValueError(f"no TFRecord files match {file_pattern!r}")
    return files


def _load_label_map(label_map, files, cfg):
    if isinstance(label_map, label_map_lib.LabelMap):
        lm = label_map
    else:
        path = label_map if label_map is not None else os.path.dirname(files[0])
        try:
            lm = label_map_lib.read_label_map(path)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read the label map ({path}): {e}") from None
    if lm.num_classes != cfg.num_classes:
        raise ValueError(
            f"the label map has {lm.num_classes} classes (incl. background) but the config has {cfg.num_classes};"
            f" use cfg.with_num_classes({lm.num_classes})"
        )
    return lm


def _record_dataset(files, shuffle, seed, input_context, num_parallel_calls):
    ds = tf.data.Dataset.from_tensor_slices(files)
    if input_context is not None and input_context.num_input_pipelines > len(files):
        raise ValueError(
            f"{len(files)} TFRecord file(s) cannot be sharded between {input_context.num_input_pipelines} input"
            " pipelines; write at least that many shards"
        )
    if input_context is not None and input_context.num_input_pipelines > 1:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed)
    return ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 16),
        num_parallel_calls=num_parallel_calls,
        deterministic=True,
    )


def _parse(serialized, id_to_index):
    """Parse one record; boxes to relative ``[x1, y1, x2, y2]``, category ids to class channels."""
    ex = schema.parse_example(serialized)
    ymin, xmin, ymax, xmax = tf.unstack(ex["boxes_yxyx"], 4, axis=1)
    labels = ex["labels"]
    known = (labels >= 0) & (labels < tf.shape(id_to_index)[0])
    classes = tf.gather(id_to_index, tf.where(known, labels, 0))
    classes = tf.where(known, classes, -1)
    with tf.control_dependencies(
        [tf.debugging.assert_non_negative(classes, message="record has a category id missing from label_map.json")]
    ):
        classes = tf.identity(classes)
    ex["boxes"] = tf.stack([xmin, ymin, xmax, ymax], axis=1)
    ex["classes"] = classes
    return ex


def _decode_masks(masks_png, height, width):
    """uint8 [n, H, W] 0/1 from n PNGs (n may be 0)."""
    masks = tf.map_fn(
        lambda p: tf.io.decode_png(p, channels=1)[:, :, 0],
        masks_png,
        fn_output_signature=tf.TensorSpec([None, None], tf.uint8),
    )
    return tf.reshape(masks, [tf.shape(masks_png)[0], height, width])


def _cap(ex, num_max_pad):
    keep = targets_lib.keep_largest(ex["area"], num_max_pad)
    out = dict(ex)
    for k in ("boxes", "classes", "is_crowd", "area", "masks_png"):
        out[k] = tf.gather(ex[k], keep)
    return out


def _guarded_filter(ds, keep_fn, what: str, limit: int):
    """``ds.filter(keep_fn)`` that fails after ``limit`` consecutive dropped elements.

    A ``scan`` counts the elements dropped since the last kept one; when the count reaches ``limit`` the iterator
    raises ``tf.errors.InvalidArgumentError`` whose message contains ``STARVED_MESSAGE`` and ``what``.
    """

    def count(dropped, element):
        keep = keep_fn(element)
        dropped = tf.where(keep, tf.zeros_like(dropped), dropped + 1)
        check = tf.debugging.assert_less(dropped, tf.constant(limit, tf.int64),
                                         message=f"{STARVED_MESSAGE} {limit} consecutive records ({what})")
        with tf.control_dependencies([check]):
            keep = tf.identity(keep)
        return dropped, (element, keep)

    def kept(element, keep):
        return keep

    def element_only(element, keep):
        return element

    ds = ds.scan(tf.constant(0, tf.int64), count)
    return ds.filter(kept).map(element_only)


class RecordCount(NamedTuple):
    """What :func:`count_training_records` found.

    Attributes:
      records: records read (a truncated or corrupt shard counts its records before the first error).
      trainable: those with at least one non-crowd object (the records ``train_dataset`` does not filter out
        before decoding).
      unreadable: shards that raised ``DataLossError`` / ``InvalidArgumentError`` (truncated, corrupt, not
        ``tf.train.Example``); their records from the error on are not counted.
    """

    records: int
    trainable: int
    unreadable: Tuple[str, ...]


def _scan_records(file_pattern) -> Tuple[RecordCount, Set[int]]:
    """:func:`count_training_records`, and the category ids the counted records use."""
    spec = {schema.IS_CROWD: tf.io.VarLenFeature(tf.int64), schema.CLASS_LABEL: tf.io.VarLenFeature(tf.int64)}

    def count(serialized):
        parsed = tf.io.parse_example(serialized, spec)
        crowd = tf.sparse.to_dense(parsed[schema.IS_CROWD], default_value=1)
        has_object = tf.reduce_any(tf.equal(crowd, 0), axis=1)
        return tf.size(serialized), tf.reduce_sum(tf.cast(has_object, tf.int32)), tf.unique(
            parsed[schema.CLASS_LABEL].values)[0]

    totals = {"records": 0, "trainable": 0}
    ids: Set[int] = set()

    def add(batches):
        for n, k, labels in batches.map(count).prefetch(1):
            totals["records"] += int(n)
            totals["trainable"] += int(k)
            ids.update(labels.numpy().tolist())

    unreadable = []
    for path in _files(file_pattern):
        records, before = tf.data.TFRecordDataset(path), totals["records"]
        try:
            add(records.batch(1024))
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError):
            unreadable.append(path)
            try:  # the batch that failed, one record at a time, up to the first that cannot be read
                add(records.skip(totals["records"] - before).batch(1))
            except (tf.errors.DataLossError, tf.errors.InvalidArgumentError):
                pass
    return RecordCount(totals["records"], totals["trainable"], tuple(unreadable)), ids


def count_training_records(file_pattern) -> RecordCount:
    """Count the records of ``file_pattern`` that can yield a training image: a pass over every record that parses
    only ``image/object/is_crowd`` and ``image/object/class/label`` (no image decoding). A truncated or corrupt
    shard counts its records before the first error and is listed in ``unreadable``.

    Raises:
      ValueError: no file matches.
    """
    return _scan_records(file_pattern)[0]


def check_category_ids(ids, label_map: label_map_lib.LabelMap, label_map_path: str, records: str) -> None:
    """Check that ``label_map`` (read from ``label_map_path``) has every category id in ``ids`` (those of the
    records ``records``).

    Raises:
      LabelMapError (a ValueError): one line naming the missing ids (the first 10) and the label map file.
    """
    missing = sorted(i for i in ids if not label_map.has_id(i))
    if missing:
        more = f" (and {len(missing) - 10} more)" if len(missing) > 10 else ""
        raise label_map_lib.LabelMapError(
            f"{label_map_path} lacks category id(s) {', '.join(map(str, missing[:10]))}{more} used by {records}: "
            "write the records and the label map together (python -m data.coco_tfrecord_creator)")


class TrainRecords:
    """The training split of a dataset folder for yolact/training (the ``data`` of ``Trainer``):
    ``DATA_DIR/train-*.tfrecord`` with ``DATA_DIR/label_map.json``; validation records ``DATA_DIR/val-*.tfrecord``.

    Raises (from ``label_map`` / ``count``):
      ValueError: no training records, an unreadable label map, or one without a category id the records use
        (one-line messages naming the folder or the file).
    """

    def __init__(self, data_dir: str, max_consecutive_dropped: int = MAX_CONSECUTIVE_DROPPED):
        self.data_dir = os.fspath(data_dir)
        self.name = self.data_dir
        self.pattern = os.path.join(self.data_dir, "train-*.tfrecord")
        self.val_pattern = os.path.join(self.data_dir, "val-*.tfrecord")
        self.max_consecutive_dropped = max_consecutive_dropped
        self._label_map = None

    @property
    def label_map(self) -> label_map_lib.LabelMap:
        if self._label_map is None:
            if not tf.io.gfile.glob(self.pattern):
                raise ValueError(f"no training records {self.pattern} (create them with "
                                 f"python -m data.coco_tfrecord_creator)")
            path = os.path.join(self.data_dir, schema.LABEL_MAP_FILENAME)
            try:
                self._label_map = label_map_lib.read_label_map(path)
            except (OSError, ValueError) as e:
                raise ValueError(f"cannot read {path}: {e}") from None
        return self._label_map

    def count(self) -> RecordCount:
        """:func:`count_training_records` of the training shards, checking on the way that the label map has every
        category id they use (:func:`check_category_ids`: a ``LabelMapError``, a ValueError, naming the ids)."""
        count, ids = _scan_records(self.pattern)
        check_category_ids(ids, self.label_map, os.path.join(self.data_dir, schema.LABEL_MAP_FILENAME), self.pattern)
        return count

    def input_fn(self, cfg, batch_size, seed, shuffle, input_context=None) -> tf.data.Dataset:
        """:func:`train_dataset` of the training shards with this folder's label map."""
        return train_dataset(self.pattern, cfg, batch_size, label_map=self.label_map, seed=seed, shuffle=shuffle,
                             input_context=input_context, max_consecutive_dropped=self.max_consecutive_dropped)

    @staticmethod
    def is_starved(error) -> bool:
        """Whether ``error`` (from the iterator) is train_dataset's "no training image in N records" failure."""
        return STARVED_MESSAGE in str(getattr(error, "message", error))


def _seed(seed) -> int:
    return int(np.random.SeedSequence().entropy % (2**31)) if seed is None else int(seed)


def train_dataset(
    file_pattern,
    cfg,
    batch_size: int,
    *,
    label_map=None,
    seed: Optional[int] = None,
    shuffle: bool = True,
    repeat: bool = True,
    num_parallel_calls=AUTOTUNE,
    input_context: Optional[tf.distribute.InputContext] = None,
    drop_empty: bool = True,
    max_consecutive_dropped: int = MAX_CONSECUTIVE_DROPPED,
) -> tf.data.Dataset:
    """Training batches: decode, SSDAugmentation (data/augment.py), matching and targets (data/targets.py).

    Args:
      file_pattern: glob (or list of globs) of TFRecord shards.
      cfg: YolactConfig; ``cfg.num_classes`` must equal the label map's.
      batch_size: global batch size; with ``input_context`` each pipeline yields
        ``input_context.get_per_replica_batch_size(batch_size)``. The last partial batch is dropped (as the
        original's epochs of ``len // batch`` iterations).
      label_map: None (``label_map.json`` next to the records), a path, or a ``yolact.ops.label_map.LabelMap``.
      seed: one integer for file order, shuffle and augmentation; None draws one.
      shuffle, repeat: shuffle records (buffer ``cfg.parser.shuffle_buffer``) / repeat forever.
      num_parallel_calls: parallelism of the decode/augment map.
      input_context: ``tf.distribute.InputContext`` for sharding files between input pipelines.
      drop_empty: drop images left without non-crowd objects after augmentation (else all-background targets).
      max_consecutive_dropped: after this many consecutive records dropped by either filter (no non-crowd object;
        empty after augmentation) the iterator raises ``tf.errors.InvalidArgumentError`` with
        ``STARVED_MESSAGE`` in its message instead of searching forever.
    Returns:
      ``tf.data.Dataset`` of ``(images float32 [B, S, S, 3], targets)`` with targets ``cls_t`` int32 [B, N],
      ``loc_t`` float32 [B, N, 4], ``idx_t`` int32 [B, N], ``gt_boxes`` float32 [B, M, 4] relative
      ``[x1, y1, x2, y2]``, ``gt_classes`` int32 [B, M], ``gt_masks`` float32 [B, M, Hp, Hp], ``segm_t`` float32
      [B, H3, H3, C − 1], ``num_obj`` int32 [B].

      Errors of single records surface from the iterator and the next ``get_next`` goes on with the following
      records (callers count and skip them): ``tf.errors.DataLossError`` for a truncated or corrupt shard (the
      rest of that shard is skipped), ``tf.errors.InvalidArgumentError`` for an undecodable image or mask or a
      category id missing from the label map.
    Raises:
      ValueError: no file matches, unreadable label map, class-count mismatch, or fewer files than input pipelines.
    """
    files = _files(file_pattern)
    lm = _load_label_map(label_map, files, cfg)
    id_to_index = tf.constant(lm.id_to_index_array(), tf.int32)
    anchors = tf.constant(make_anchors(cfg), tf.float32)
    seed = _seed(seed)
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)

    ds = _record_dataset(files, shuffle, seed, input_context, num_parallel_calls)
    if shuffle:
        ds = ds.shuffle(cfg.parser.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.map(lambda s: _parse(s, id_to_index), num_parallel_calls=num_parallel_calls)
    ds = _guarded_filter(ds, lambda ex: tf.reduce_any(~ex["is_crowd"]), "no non-crowd object",
                         max_consecutive_dropped)
    ds = ds.enumerate()

    def prepare(index, ex):
        ex = _cap(ex, cfg.parser.num_max_pad)
        image = decode_image_rgb(ex["encoded"])
        masks = _decode_masks(ex["masks_png"], tf.shape(image)[0], tf.shape(image)[1])
        aug = augment_lib.augment(
            image, ex["boxes"], masks, ex["is_crowd"], cfg, tf.stack([tf.constant(seed, tf.int64), index])
        )
        classes = tf.gather(ex["classes"], aug["indices"])
        targets = targets_lib.build_targets(aug["boxes"], classes, aug["masks"], aug["is_crowd"], anchors, cfg)
        return aug["image"], targets

    ds = ds.map(prepare, num_parallel_calls=num_parallel_calls)
    if drop_empty:
        ds = _guarded_filter(ds, lambda element: element[1]["num_obj"] > 0, "no object left after augmentation",
                             max_consecutive_dropped)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(AUTOTUNE)


def eval_images(file_pattern, *, num_parallel_calls=AUTOTUNE) -> tf.data.Dataset:
    """The decoded photos of evaluation records, every record once, in file order: what every inference form
    takes (yolact/runtimes.py ``predict``), so that evaluation from TFRecords and from an image folder agree.

    Args:
      file_pattern: glob (or list of globs) of TFRecord shards.
      num_parallel_calls: parallelism of the decode map.
    Returns:
      ``tf.data.Dataset`` of ``(image uint8 [H, W, 3] RGB, image_id int64 [])`` (``image/source_id``), unbatched.
    Raises:
      ValueError: no file matches.
    """
    return _photos(file_pattern, None, num_parallel_calls).prefetch(AUTOTUNE)


def _photos(file_pattern, input_context, num_parallel_calls) -> tf.data.Dataset:
    """(decoded uint8 RGB image [H, W, 3], image_id int64) of every record, in file order."""
    ds = _record_dataset(_files(file_pattern), False, None, input_context, num_parallel_calls)

    def decode(serialized):
        ex = schema.parse_example(serialized)
        return decode_image_rgb(ex["encoded"]), tf.strings.to_number(ex["source_id"], tf.int64)

    return ds.map(decode, num_parallel_calls=num_parallel_calls)


def eval_dataset(
    file_pattern,
    cfg,
    batch_size: int = 1,
    *,
    num_parallel_calls=AUTOTUNE,
    input_context: Optional[tf.distribute.InputContext] = None,
) -> tf.data.Dataset:
    """Evaluation batches: every record once, in file order, no augmentation.

    The image is resized to H × W = ``cfg.input_size`` (half-pixel bilinear, no antialias, aspect not kept) and then normalized, as the
    original's BaseTransform / FastBaseTransform (yolact/ops/preprocess.py ``eval_preprocess``).

    Args:
      file_pattern: glob (or list of globs) of TFRecord shards.
      cfg: YolactConfig.
      batch_size: images per batch (the last batch may be smaller).
      num_parallel_calls: parallelism of the decode map.
      input_context: optional ``tf.distribute.InputContext`` (files sharded between pipelines).
    Returns:
      ``tf.data.Dataset`` of ``(images float32 [B, H, W, 3], info)`` with ``image_id`` int64 [B] (from
      ``image/source_id``), ``height`` / ``width`` int32 [B] (original size in pixels).
    Raises:
      ValueError: no file matches.
    """
    ds = _photos(file_pattern, input_context, num_parallel_calls)

    def prepare(image, image_id):
        info = {"image_id": image_id, "height": tf.shape(image)[0], "width": tf.shape(image)[1]}
        return preprocess.eval_preprocess(image, cfg), info

    ds = ds.map(prepare, num_parallel_calls=num_parallel_calls)
    return ds.batch(batch_size).prefetch(AUTOTUNE)
