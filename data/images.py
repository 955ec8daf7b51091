"""Decoding FairFace images into batches for the base: a deterministic, parallel tf.data pipeline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import tensorflow as tf

from data.augment import augment_image, image_seed
from data.errors import ConfigError

# How an image file becomes the base's input, here and (the same ops) inside the exported SavedModel's
# bytes signature; model cards record it, because another decoder gives other pixels.
DECODER: Mapping[str, str] = MappingProxyType(
    {
        "decode": "tf.io.decode_image(contents, channels=3, dtype=uint8, expand_animations=False)",
        "resize": "unless already 224x224: tf.image.resize bilinear, antialias=True; round, clip to 0..255",
        "reference": "face-hpo's data.images.decode_image; other decoders (e.g. PIL) give other pixels",
    }
)


def image_batches(
    root: Path,
    files: Sequence[str],
    *,
    batch_size: int,
    size: int = 224,
    augment_seed: tuple[int, int] | None = None,
    index_offset: int = 0,
) -> tf.data.Dataset:
    """Batches ``(index int64 [B], image uint8 [B, size, size, 3])`` of the images at ``root / files``.

    ``index`` is ``index_offset`` + the image's position in ``files``, in order. Images that cannot be
    read or decoded are dropped: their index never appears (:func:`decode_error` says why). Images
    that are not ``size`` x ``size`` are resized (bilinear). With ``augment_seed=(seed, view)`` image
    ``index`` is augmented from (seed, view, index) alone, so a shard of ``files`` passed with its
    ``index_offset`` gives the same bytes as the whole list.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    if size < 1:
        raise ConfigError(f"image size must be >= 1, got {size}")
    indices = tf.range(index_offset, index_offset + len(files), dtype=tf.int64)
    paths = tf.constant([str(root / name) for name in files], dtype=tf.string, shape=[len(files)])

    def load(index: tf.Tensor, path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = decode_image(tf.io.read_file(path), size)
        if augment_seed is not None:
            image = augment_image(image, image_seed(*augment_seed, index))
        return index, image

    dataset = tf.data.Dataset.from_tensor_slices((indices, paths))
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.ignore_errors().batch(batch_size).prefetch(tf.data.AUTOTUNE)


def decode_image(contents: tf.Tensor, size: int) -> tf.Tensor:
    """The encoded image ``contents`` (JPEG, PNG, BMP or GIF bytes) as uint8 [size, size, 3] RGB.

    The one decoder of face-hpo: the cache's images, ``hpo evaluate --dataset``, ``hpo predict`` and the
    SavedModel's ``serve_bytes`` signature all run it (see ``DECODER``).
    """
    return fit_image(_decode(contents), size)


def fit_image(image: tf.Tensor, size: int) -> tf.Tensor:
    """``image`` (uint8 [H, W, 3]) as uint8 [size, size, 3]: unchanged if already that size, else resized."""
    shape = tf.shape(image)

    def resized() -> tf.Tensor:
        # Antialiasing only matters when shrinking (e.g. the 448-pixel padding-1.25 crops); it keeps
        # downscaled faces from aliasing. Enlarging is plain bilinear either way.
        scaled = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(scaled), 0.0, 255.0), tf.uint8)

    same = tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size))
    return tf.ensure_shape(tf.cond(same, lambda: image, resized), [size, size, 3])


def decode_error(path: Path) -> str | None:
    """Why the image at ``path`` cannot be read or decoded (one line), or None if it can."""
    try:
        _decode(tf.io.read_file(str(path)))
    except tf.errors.OpError as error:
        # TF prefixes messages with "{{function_node ...}}" and suffixes "[Op:...]": keep the sentence.
        message = error.message.split("}}")[-1].split(" [Op:")[0].strip()
        return message or type(error).__name__
    return None


def _decode(contents: tf.Tensor) -> tf.Tensor:
    return tf.io.decode_image(contents, channels=3, dtype=tf.uint8, expand_animations=False)
