"""Image decoding shared by the input pipeline, the predictor and the SavedModel.

JPEGs are decoded with the accurate integer IDCT (``dct_method="INTEGER_ACCURATE"``), which gives exactly
OpenCV's ``cv2.imread`` pixels, i.e. the original's decoder (data/coco.py, eval.py); TensorFlow's default fast
IDCT differs by up to ~16 levels. Other formats (PNG, BMP, GIF first frame) go through ``tf.io.decode_image``.
"""

from __future__ import annotations

import tensorflow as tf


def decode_image_rgb(encoded: tf.Tensor) -> tf.Tensor:
    """Decode one encoded image (string scalar) to uint8 RGB [H, W, 3]; graph code (works in tf.data / SavedModel).

    Raises (at run time):
      tf.errors.InvalidArgumentError: the bytes are not a decodable image.
    """
    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False, dtype=tf.uint8),
    )
    return tf.ensure_shape(image, [None, None, 3])
