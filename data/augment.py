"""Training augmentation of the original (SSDAugmentation), in TF ops inside the graph; the eval resize is
yolact/ops/preprocess.py ``eval_preprocess``.

original: utils/augmentations.py SSDAugmentation; shared/docs/yolact_reference.md
§2.3, §9.2. Steps, each switched by a ``cfg.parser.augment_*`` flag:

1. Photometric distortion on the float image, **never clipped**: brightness (p ½, + U(−32, 32)); then with p ½
   ``[contrast, →HSV, saturation, hue, →RGB]`` else ``[→HSV, saturation, hue, →RGB, contrast]`` (HSV round trip
   always done, in one fused expression, :func:`hsv_jitter`); contrast p ½
   × U(0.5, 1.5); saturation p ½ S × U(0.5, 1.5); hue p ½ H + U(−18, 18) degrees, wrapped. The HSV conversion
   reproduces OpenCV's float ``cvtColor`` (H in degrees, ``S = (V − min)/(|V| + FLT_EPSILON)``), so the original's
   BGR-float behaviour is obtained on RGB, out-of-range values included. Lighting noise is a no-op there too.
2. Expand (p ½): ratio U(1, ``expand_max_ratio``), canvas ``int(H·r) × int(W·r)`` filled with the mean (it
   normalizes to exactly 0), image pasted at ``(int(left), int(top))``; masks zero-padded.
3. Random sample crop: option None with p 1/6 (no crop); otherwise up to 50 trials of ``w ~ U(0.3W, W)``,
   ``h ~ U(0.3H, H)`` (rejected unless 0.5 <= h/w <= 2), ``left ~ numpy uniform(W − w)`` (i.e. U between W − w and
   1, the original's quirk), rect = truncated ints. The min-IoU test never rejects in the original, so it is not
   evaluated. A GT is kept iff its centre lies strictly inside rect; the trial is rejected if nothing, or only
   crowds, would be kept. Kept boxes are clipped to rect. After 50 failed trials a new option is drawn (at most
   ``_MAX_CROP_ROUNDS`` rounds, then no crop; the original loops until None comes up). Images without a non-crowd
   GT are never cropped (the original can accept no trial for them either).
4. Mirror (p ½).
5. Resize to the network input H x W (``cfg.input_size``: S x S for a square ``cfg.model.img_size``; aspect
   not kept), half-pixel bilinear without antialias as ``cv2.resize`` INTER_LINEAR; masks resized the same way and
   rounded to 0/1 (``>= 0.5``, as cv2's uint8 rounding); then the original's discard rule: keep boxes with
   ``w > 4/S`` and ``h > 4/S`` measured in *pixels* at size S (the original's unit slip: in effect only degenerate
   boxes go); for a rectangular input (not in the original) ``w > 4/W`` and ``h > 4/H``.
6. Normalization ``(x − mean_rgb) / std_rgb``.

Expand, crop and resize are fused into one resampling of the original image and masks (:func:`resample`: exact
``resize(crop)`` whenever the crop shows no fill, otherwise equal up to the one-pixel border lines), so the up to
4× canvas is never materialised. Mirror is applied after the resize (half-pixel resize commutes with flipping).

Randomness: stateless random ops only; the same ``seed`` (int [2]) gives the same output.
"""

from __future__ import annotations

from typing import Dict

import tensorflow as tf

from yolact.ops.preprocess import normalize

_FLT_EPSILON = 1.1920928955078125e-07
_MAX_CROP_ROUNDS = 100
_CROP_TRIALS = 50


# ----------------------------------------------------------------------------------------------- photometric
def rgb_to_hsv_cv2(image: tf.Tensor) -> tf.Tensor:
    """OpenCV's float RGB→HSV (``cv2.COLOR_RGB2HSV`` on float32), valid for any (unclipped) values.

    Args:
      image: float32 [..., 3] RGB (nominally 0..255).
    Returns:
      float32 [..., 3] ``(H in degrees [0, 360), S = (V − min)/(|V| + eps), V = max)``.
    """
    r, g, b = tf.unstack(image, 3, axis=-1)
    v = tf.maximum(tf.maximum(r, g), b)
    vmin = tf.minimum(tf.minimum(r, g), b)
    diff = v - vmin
    s = diff / (tf.abs(v) + _FLT_EPSILON)
    d = 60.0 / (diff + _FLT_EPSILON)
    h = tf.where(tf.equal(v, r), (g - b) * d, tf.where(tf.equal(v, g), (b - r) * d + 120.0, (r - g) * d + 240.0))
    h = tf.where(h < 0.0, h + 360.0, h)
    return tf.stack([h, s, v], axis=-1)


def hsv_to_rgb_cv2(hsv: tf.Tensor) -> tf.Tensor:
    """OpenCV's float HSV→RGB (``cv2.COLOR_HSV2RGB``, H in degrees, any S and V), float32 [..., 3] → [..., 3]."""
    h, s, v = tf.unstack(hsv, 3, axis=-1)
    h = tf.math.floormod(h * (6.0 / 360.0), 6.0)
    sector = tf.floor(h)
    f = h - sector
    sector = tf.clip_by_value(tf.cast(sector, tf.int32), 0, 5)
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    # OpenCV's sector_data, as RGB: sector 0 (v, t, p), 1 (q, v, p), 2 (p, v, t), 3 (p, q, v), 4 (t, p, v), 5 (v, p, q).
    sec = [tf.equal(sector, k) for k in range(6)]
    r = tf.where(sec[0] | sec[5], v, tf.where(sec[1], q, tf.where(sec[4], t, p)))
    g = tf.where(sec[1] | sec[2], v, tf.where(sec[0], t, tf.where(sec[3], q, p)))
    b = tf.where(sec[3] | sec[4], v, tf.where(sec[2], t, tf.where(sec[5], q, p)))
    return tf.stack([r, g, b], axis=-1)


def hsv_jitter(image: tf.Tensor, saturation_factor, hue_delta) -> tf.Tensor:
    """OpenCV-float ``RGB→HSV``, ``S *= saturation_factor``, ``H += hue_delta`` (degrees, wrapped), ``HSV→RGB``.

    One fused expression equal to the composition of :func:`rgb_to_hsv_cv2` and :func:`hsv_to_rgb_cv2` (to float
    rounding), for any (unclipped) values. Like the original, the round trip is not the identity for pixels whose
    maximum channel is negative (OpenCV's ``S = (V − min)/|V|``).

    Args:
      image: float32 [..., 3] RGB; saturation_factor, hue_delta: float scalars.
    Returns:
      float32 [..., 3] RGB. original: utils/augmentations.py ConvertColor, RandomSaturation, RandomHue.
    """
    r, g, b = tf.unstack(image, 3, axis=-1)
    v = tf.maximum(tf.maximum(r, g), b)
    c = v - tf.minimum(tf.minimum(r, g), b)
    inv = 1.0 / (c + _FLT_EPSILON)
    # Hue in sextants (degrees / 60), OpenCV's case order: V == R, then V == G, else B.
    h6 = tf.where(tf.equal(v, r), (g - b) * inv, tf.where(tf.equal(v, g), (b - r) * inv + 2.0, (r - g) * inv + 4.0))
    h6 = tf.math.floormod(h6 + hue_delta / 60.0, 6.0)
    vs = (v * saturation_factor) * (c / (tf.abs(v) + _FLT_EPSILON))  # V * S'
    # channel = V * (1 - S' * (1 - f_c(H))), f_c the piecewise-linear hue ramps of the sector table.
    ramps = tf.stack([2.0 - tf.abs(h6 - 3.0), tf.abs(h6 - 2.0) - 1.0, tf.abs(h6 - 4.0) - 1.0], axis=-1)
    return v[..., None] - vs[..., None] * tf.clip_by_value(ramps, 0.0, 1.0)


def photometric_distort(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """The original's PhotometricDistort on a float RGB image (no clipping).

    Args:
      image: float32 [H, W, 3] RGB in 0..255.
      seed: int [2] stateless seed.
    Returns:
      float32 [H, W, 3]. original: utils/augmentations.py PhotometricDistort.
    """
    u = tf.random.stateless_uniform([9], seed)
    image = image + tf.where(u[0] < 0.5, -32.0 + 64.0 * u[1], 0.0)

    def contrast(x):
        return x * tf.where(u[3] < 0.5, 0.5 + u[4], 1.0)

    def jitter(x):
        # Always converted, as the original (the round trip changes pixels whose max channel is negative).
        sat = tf.where(u[5] < 0.5, 0.5 + u[6], 1.0)
        hue = tf.where(u[7] < 0.5, -18.0 + 36.0 * u[8], 0.0)
        return hsv_jitter(x, sat, hue)

    return tf.cond(u[2] < 0.5, lambda: jitter(contrast(image)), lambda: contrast(jitter(image)))


# ------------------------------------------------------------------------------------------ expand and crop
def _expand_params(height, width, seed, max_ratio):
    """Expand's canvas: (top, left, canvas_h, canvas_w) int32; identity with p ½. original: Expand."""
    u = tf.random.stateless_uniform([4], seed)
    hf, wf = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    ratio = 1.0 + (max_ratio - 1.0) * u[1]
    left = (wf * ratio - wf) * u[2]
    top = (hf * ratio - hf) * u[3]
    apply = u[0] < 0.5
    canvas_h = tf.where(apply, tf.cast(hf * ratio, tf.int32), height)
    canvas_w = tf.where(apply, tf.cast(wf * ratio, tf.int32), width)
    top = tf.where(apply, tf.cast(top, tf.int32), 0)
    left = tf.where(apply, tf.cast(left, tf.int32), 0)
    return top, left, canvas_h, canvas_w


def sample_crop(boxes: tf.Tensor, is_crowd: tf.Tensor, height, width, seed: tf.Tensor):
    """The original's RandomSampleCrop decision (no pixels touched).

    Args:
      boxes: float32 [n, 4] absolute ``[x1, y1, x2, y2]`` pixels in the (expanded) image.
      is_crowd: bool [n].
      height, width: int32 scalars, the (expanded) image size.
      seed: int [2] stateless seed.
    Returns:
      ``(rect, keep)``: int32 [4] ``[x1, y1, x2, y2]`` crop rectangle in pixels (the whole image when no crop),
      bool [n] the objects whose centre lies strictly inside rect (all True when no crop).
    """
    hf, wf = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    whole = tf.stack([0, 0, width, height])
    n = tf.shape(boxes)[0]

    def round_fn(r, found, rect, keep):
        rs = tf.random.experimental.stateless_fold_in(seed, r)
        u = tf.random.stateless_uniform([5, _CROP_TRIALS], rs)
        option_none = u[0, 0] < 1.0 / 6.0
        w = 0.3 * wf + (wf - 0.3 * wf) * u[1]
        h = 0.3 * hf + (hf - 0.3 * hf) * u[2]
        ok = (h / w >= 0.5) & (h / w <= 2.0)
        left = (wf - w) + (1.0 - (wf - w)) * u[3]  # numpy uniform(low=W-w) with its default high=1
        top = (hf - h) + (1.0 - (hf - h)) * u[4]
        rects = tf.stack(
            [tf.floor(left), tf.floor(top), tf.floor(left + w), tf.floor(top + h)], axis=1
        )  # [T, 4], int() of non-negative floats
        inside = (
            (rects[:, None, 0] < centres[None, :, 0])
            & (rects[:, None, 1] < centres[None, :, 1])
            & (rects[:, None, 2] > centres[None, :, 0])
            & (rects[:, None, 3] > centres[None, :, 1])
        )  # [T, n]
        valid = ok & tf.reduce_any(inside & ~is_crowd[None, :], axis=1)
        first = tf.argmax(tf.cast(valid, tf.int32), output_type=tf.int32)
        got = ~option_none & tf.reduce_any(valid)
        new_rect = tf.where(got, tf.cast(rects[first], tf.int32), whole)
        new_keep = tf.where(got, inside[first], tf.ones([n], tf.bool))
        return r + 1, got | option_none, new_rect, new_keep

    any_gt = tf.reduce_any(~is_crowd)
    _, _, rect, keep = tf.while_loop(
        lambda r, found, *_: (~found) & (r < _MAX_CROP_ROUNDS),
        round_fn,
        (tf.constant(0), ~any_gt, whole, tf.ones([n], tf.bool)),
    )
    return rect, keep


# ------------------------------------------------------------------------------------------------ resampling
def resample(src: tf.Tensor, rect: tf.Tensor, top, left, out_size) -> tf.Tensor:
    """``resize(canvas[rect])``, canvas = ``src`` pasted at (top, left) on a zero background, size H × W.

    When rect lies inside the pasted ``src`` (always without Expand) this is exactly ``tf.image.resize`` of the
    slice: half-pixel bilinear, no antialias, edges clamped, as ``cv2.resize`` INTER_LINEAR. Otherwise (the crop
    shows some of Expand's fill) the same sampling grid is evaluated with ``tf.image.crop_and_resize`` on ``src``
    with extrapolation 0, which differs from the original only in the one-pixel lines at the fill border and at
    the crop edges (full fill instead of a blend, no clamp), and never materialises the up-to-4× canvas.
    Subtract the fill value from ``src`` beforehand for another background.

    Args:
      src: [H, W, C] (any real dtype).
      rect: int32 [4] ``[x1, y1, x2, y2]`` crop in canvas pixels.
      top, left: int32 scalars, paste offset of ``src`` in the canvas.
      out_size: output side S (square) or ``(H, W)``.
    Returns:
      float32 [H, W, C].
    """
    out_h, out_w = (out_size, out_size) if isinstance(out_size, int) else (int(out_size[0]), int(out_size[1]))
    h, w = tf.shape(src)[0], tf.shape(src)[1]
    x1, y1 = rect[0] - left, rect[1] - top  # crop in src coordinates
    x2, y2 = rect[2] - left, rect[3] - top
    inside = (x1 >= 0) & (y1 >= 0) & (x2 <= w) & (y2 <= h)

    def exact():
        crop = src[y1:y2, x1:x2]
        return tf.image.resize(tf.cast(crop, tf.float32), [out_h, out_w], "bilinear", antialias=False)

    def with_fill():
        def grid(start, stop, length, out_size):
            start, stop = tf.cast(start, tf.float32), tf.cast(stop, tf.float32)
            scale = (stop - start) / out_size
            first = start + 0.5 * scale - 0.5
            last = start + (out_size - 0.5) * scale - 0.5
            denom = tf.cast(tf.maximum(length - 1, 1), tf.float32)
            return first / denom, last / denom

        bx1, bx2 = grid(x1, x2, w, out_w)
        by1, by2 = grid(y1, y2, h, out_h)
        out = tf.image.crop_and_resize(
            src[None], tf.stack([[by1, bx1, by2, bx2]]), [0], [out_h, out_w], extrapolation_value=0.0
        )
        return out[0]

    return tf.cond(inside, exact, with_fill)


# ------------------------------------------------------------------------------------------------ pipeline
def augment(image, boxes, masks, is_crowd, cfg, seed) -> Dict[str, tf.Tensor]:
    """SSDAugmentation of one image (with all flags off: resize and normalize only).

    Args:
      image: uint8 [H, W, 3] RGB.
      boxes: float32 [n, 4] relative ``[x1, y1, x2, y2]`` of the original image.
      masks: uint8 (or float) [n, H, W] 0/1 instance masks.
      is_crowd: bool [n].
      cfg: YolactConfig (``cfg.parser.augment_*``, ``expand_max_ratio``, ``cfg.input_size``, mean/std).
      seed: int [2] stateless seed.
    Returns:
      dict with ``image`` float32 [H, W, 3] normalized RGB ((H, W) = ``cfg.input_size``); ``boxes`` float32
      [m, 4] relative ``[x1, y1, x2, y2]`` of the network input; ``masks`` uint8 [H, W, m] 0/1 (objects as channels, as the original's Resize);
      ``is_crowd`` bool [m]; ``indices`` int32 [m], the input row of each kept object (to gather labels etc.),
      m <= n, in input order.
    """
    p = cfg.parser
    size_h, size_w = cfg.input_size
    size = (size_h, size_w)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    image = tf.convert_to_tensor(image)
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    is_crowd = tf.cast(is_crowd, tf.bool)
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)

    img = tf.cast(image, tf.float32)
    if p.augment_photometric_distort:
        img = photometric_distort(img, seeds[0])
    img = normalize(img, cfg)  # fill (the mean) becomes 0; resampling is linear so this commutes with the resize

    boxes_abs = boxes * tf.stack([wf, hf, wf, hf])
    if p.augment_expand:
        top, left, canvas_h, canvas_w = _expand_params(h, w, seeds[1], p.expand_max_ratio)
    else:
        top, left, canvas_h, canvas_w = 0, 0, h, w
    shift = tf.cast(tf.stack([left, top, left, top]), tf.float32)
    boxes_abs = boxes_abs + shift

    if p.augment_random_sample_crop:
        rect, keep = sample_crop(boxes_abs, is_crowd, canvas_h, canvas_w, seeds[2])
    else:
        rect, keep = tf.stack([0, 0, canvas_w, canvas_h]), tf.ones([tf.shape(boxes)[0]], tf.bool)
    indices = tf.cast(tf.where(keep)[:, 0], tf.int32)
    rectf = tf.cast(rect, tf.float32)
    kept = tf.gather(boxes_abs, indices)
    kept = tf.concat([tf.maximum(kept[:, :2], rectf[:2]), tf.minimum(kept[:, 2:], rectf[2:])], axis=1)
    crop_w, crop_h = rectf[2] - rectf[0], rectf[3] - rectf[1]
    rel = (kept - tf.tile(rectf[:2], [2])) / tf.stack([crop_w, crop_h, crop_w, crop_h])

    out_img = resample(img, rect, top, left, size)
    kept_masks = tf.transpose(tf.gather(masks, indices), [1, 2, 0])  # gather on axis 0 is far cheaper
    out_masks = resample(kept_masks, rect, top, left, size)
    out_masks = tf.cast(out_masks >= 0.5, tf.uint8)  # uint8 keeps the later passes over [S, S, m] cheap
    crowd = tf.gather(is_crowd, indices)

    if p.augment_random_mirror:
        flip = tf.random.stateless_uniform([], seeds[3]) < 0.5
        out_img, out_masks = tf.cond(
            flip, lambda: (tf.reverse(out_img, [1]), tf.reverse(out_masks, [1])), lambda: (out_img, out_masks)
        )
        rel = tf.where(flip, tf.stack([1.0 - rel[:, 2], rel[:, 1], 1.0 - rel[:, 0], rel[:, 3]], axis=1), rel)

    # The original's discard rule (Resize): w, h in pixels at size S must exceed 4 / S (per axis: W, H).
    ok = (((rel[:, 2] - rel[:, 0]) * size_w > 4.0 / size_w)
          & ((rel[:, 3] - rel[:, 1]) * size_h > 4.0 / size_h))
    sel = tf.cast(tf.where(ok)[:, 0], tf.int32)
    out_img.set_shape([size_h, size_w, 3])
    out_masks = tf.cond(tf.reduce_all(ok), lambda: out_masks, lambda: tf.gather(out_masks, sel, axis=2))
    out_masks.set_shape([size_h, size_w, None])
    return {
        "image": out_img,
        "boxes": tf.gather(rel, sel),
        "masks": out_masks,
        "is_crowd": tf.gather(crowd, sel),
        "indices": tf.gather(indices, sel),
    }
