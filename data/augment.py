"""The paper's training augmentation, seeded and stateless: JPEG compression, then coarse dropout.

The authors used imgaug ``Sequential([JpegCompression(compression=(60, 75)),
CoarseDropout((0, 0.05), size_percent=(0.02, 0.25))])``. imgaug does not import on numpy 2, so this is
the same sequence in TensorFlow ops, following imgaug 0.4's semantics:

- JPEG: per image a compression strength c drawn as imgaug 0.4 draws ``compression=(60, 75)``: uniform
  in [60, 75), truncated to an integer (60..74); imgaug's ``compress_jpeg`` maps it to the PIL quality
  ``round(1 + 99 * (1 - c / 101))``, so the qualities are the integers 27..41, each with probability 1/15.
  Then encode and decode.
- Coarse dropout (``CoarseDropout`` = ``MultiplyElementwise(FromLowerResolution(Binomial(1 - p)))``): per
  image a drop probability p ~ U(0, 0.05) and two size fractions, one for the height and one for the
  width, each ~ U(0.02, 0.25); a low-resolution mask of ``max(int(H * fh), 4) x max(int(W * fw), 4)``
  cells (imgaug's default ``min_size=4``) drops each cell with probability p; the mask is upscaled to
  H x W by nearest neighbour (source cell ``floor(y * h / H)``, as OpenCV) and multiplies every channel.

Randomness comes only from the seed, so an image's augmentation is a pure function of (image, seed).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import tensorflow as tf

JPEG_COMPRESSION = (60, 74)  # imgaug's compression=(60, 75) after its integer truncation, inclusive
DROPOUT_P = (0.0, 0.05)
DROPOUT_SIZE_PERCENT = (0.02, 0.25)
DROPOUT_MIN_SIZE = 4
# Philox on every device: "auto_select" may pick another generator on other hardware.
RNG_ALG = "philox"

# What a cache fingerprint records; bump "version" whenever the code changes what an augmented image is.
AUGMENTATION: Mapping[str, object] = MappingProxyType(
    {
        "version": 2,  # 1 drew JPEG qualities 25..40 instead of imgaug's 27..41
        "sequence": ["jpeg_compression", "coarse_dropout"],
        "jpeg_compression": list(JPEG_COMPRESSION),
        "jpeg_quality": "round(1 + 99 * (1 - compression / 101)), imgaug 0.4",
        "dropout_p": list(DROPOUT_P),
        "dropout_size_percent": list(DROPOUT_SIZE_PERCENT),
        "dropout_min_size": DROPOUT_MIN_SIZE,
        "dropout_upscale": "nearest",
        "dropout_per_channel": False,
        "rng": f"{RNG_ALG}; image i of (seed, view) uses stateless_fold_in([seed, view], i)",
    }
)


def image_seed(seed: int, view: int, index: tf.Tensor | int) -> tf.Tensor:
    """The stateless seed (shape [2], int64) of image ``index`` in augmented view ``view``."""
    base = tf.constant([seed, view], dtype=tf.int64)
    return tf.random.experimental.stateless_fold_in(base, tf.cast(index, tf.int64), alg=RNG_ALG)


def augment_image(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """JPEG compression, then coarse dropout, of one uint8 [H, W, 3] image; same seed, same bytes."""
    jpeg_seed, dropout_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2, alg=RNG_ALG))
    # A sequence, as the paper's imgaug Sequential: dropped blocks stay exactly black.
    image = tf.image.adjust_jpeg_quality(image, jpeg_quality(jpeg_seed))
    shape = tf.shape(image)
    mask = dropout_mask(dropout_seed, shape[0], shape[1])
    return image * mask[:, :, tf.newaxis]


def jpeg_quality(seed: tf.Tensor) -> tf.Tensor:
    """The JPEG quality (int32 scalar) drawn from ``seed``: imgaug's compression c, as its quality."""
    low, high = JPEG_COMPRESSION
    compression = tf.random.stateless_uniform(
        [], seed, minval=low, maxval=high + 1, dtype=tf.int32, alg=RNG_ALG
    )
    return tf.cast(tf.round(1.0 + 99.0 * (1.0 - tf.cast(compression, tf.float32) / 101.0)), tf.int32)


def imgaug_quality(compression: int) -> int:
    """imgaug 0.4's ``compress_jpeg``, the reference: the PIL quality of compression strength 0..100."""
    return min(max(round(1 + 99 * (1.0 - compression / 101)), 1), 100)


def dropout_mask(seed: tf.Tensor, height: tf.Tensor | int, width: tf.Tensor | int) -> tf.Tensor:
    """The coarse-dropout mask drawn from ``seed``: uint8 [height, width], 0 where pixels are dropped."""
    p_seed, size_seed, cell_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3, alg=RNG_ALG))
    p = tf.random.stateless_uniform([], p_seed, minval=DROPOUT_P[0], maxval=DROPOUT_P[1], alg=RNG_ALG)
    fractions = tf.random.stateless_uniform(
        [2], size_seed, minval=DROPOUT_SIZE_PERCENT[0], maxval=DROPOUT_SIZE_PERCENT[1], alg=RNG_ALG
    )
    size = tf.stack([height, width])
    # Truncation, as imgaug's astype(np.int32), then its minimum size.
    cells = tf.maximum(tf.cast(fractions * tf.cast(size, tf.float32), tf.int32), DROPOUT_MIN_SIZE)
    keep = tf.random.stateless_uniform(cells, cell_seed, alg=RNG_ALG) >= p
    return upscale_nearest(tf.cast(keep, tf.uint8), height, width)


def upscale_nearest(cells: tf.Tensor, height: tf.Tensor | int, width: tf.Tensor | int) -> tf.Tensor:
    """Nearest-neighbour resize of a 2-D mask to [height, width]; output pixel y takes cell y*h // height."""
    shape = tf.shape(cells)
    rows = tf.range(height) * shape[0] // height
    columns = tf.range(width) * shape[1] // width
    return tf.gather(tf.gather(cells, rows, axis=0), columns, axis=1)
