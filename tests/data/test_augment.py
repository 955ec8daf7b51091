from __future__ import annotations

import json
from collections import Counter

import numpy as np
import tensorflow as tf
from support import FIXTURE

from data.augment import (
    AUGMENTATION,
    augment_image,
    dropout_mask,
    image_seed,
    imgaug_quality,
    jpeg_quality,
    upscale_nearest,
)


def face() -> tf.Tensor:
    return tf.io.decode_jpeg(tf.io.read_file(str(FIXTURE / "train" / "1.jpg")), channels=3)


def seed(a: int, b: int = 0) -> tf.Tensor:
    return tf.constant([a, b], dtype=tf.int64)


def test_augment_image_same_seed_same_bytes() -> None:
    image = face()
    first = augment_image(image, seed(5)).numpy()
    assert first.shape == (224, 224, 3) and first.dtype == np.uint8
    assert np.array_equal(first, augment_image(image, seed(5)).numpy())
    assert not np.array_equal(first, image.numpy())
    assert not np.array_equal(first, augment_image(image, seed(6)).numpy())


def test_augment_image_keeps_any_shape() -> None:
    image = tf.fill([50, 70, 3], tf.constant(128, tf.uint8))
    out = augment_image(image, seed(1)).numpy()
    assert out.shape == (50, 70, 3) and out.dtype == np.uint8


def test_augment_image_dropout_blacks_whole_pixels_at_rate_p() -> None:
    # On a white image JPEG leaves values near 255, so the zeros are exactly the dropped pixels.
    white = tf.fill([224, 224, 3], tf.constant(255, tf.uint8))
    fractions = []
    for s in range(60):
        out = augment_image(white, seed(s, 9)).numpy()
        dropped = (out == 0).all(axis=-1)
        assert np.array_equal(dropped, (out == 0).any(axis=-1))  # the same mask on every channel
        assert out[~dropped].min() >= 200
        fractions.append(dropped.mean())
    # p ~ U(0, 0.05) per image: on average 2.5 % of the pixels, never most of them.
    assert 0.015 <= float(np.mean(fractions)) <= 0.035
    assert max(fractions) < 0.25
    assert min(fractions) == 0.0


def test_dropout_mask_rate_and_values() -> None:
    masks = np.stack([dropout_mask(seed(s, 4), 224, 224).numpy() for s in range(100)])
    assert masks.dtype == np.uint8 and masks.shape == (100, 224, 224)
    assert set(np.unique(masks).tolist()) == {0, 1}
    assert 0.015 <= 1.0 - masks.mean() <= 0.035


def test_upscale_nearest_takes_floor_cells() -> None:
    cells = tf.reshape(tf.range(16, dtype=tf.int32), [4, 4])
    doubled = upscale_nearest(cells, 8, 8).numpy()
    assert np.array_equal(doubled, np.repeat(np.repeat(cells.numpy(), 2, axis=0), 2, axis=1))
    stretched = upscale_nearest(cells, 10, 5).numpy()
    assert stretched[:, 0].tolist() == [0, 0, 0, 4, 4, 8, 8, 8, 12, 12]
    assert stretched[0].tolist() == [0, 0, 1, 2, 3]


def test_jpeg_quality_is_imgaugs_mapping_of_compression_60_to_74() -> None:
    # imgaug 0.4 draws compression=(60, 75) uniformly, truncates it to 60..74, and compress_jpeg maps c
    # to round(1 + 99 (1 - c / 101)): the authors' images got the qualities 27..41.
    assert [imgaug_quality(c) for c in range(60, 75)] == list(range(41, 26, -1))
    counts = Counter(int(jpeg_quality(seed(s, 1))) for s in range(1500))
    assert set(counts) == {imgaug_quality(c) for c in range(60, 75)} == set(range(27, 42))
    assert max(counts.values()) < 2 * min(counts.values())  # about 100 each: uniform


def test_image_seed_depends_on_seed_view_and_index() -> None:
    base = image_seed(42, 1, 7)
    assert base.dtype == tf.int64 and base.shape == (2,)
    assert image_seed(42, 1, 7).numpy().tolist() == base.numpy().tolist()
    others = [image_seed(42, 2, 7), image_seed(42, 1, 8), image_seed(43, 1, 7)]
    assert all(other.numpy().tolist() != base.numpy().tolist() for other in others)


def test_augmentation_settings_are_json() -> None:
    settings = dict(AUGMENTATION)
    assert json.loads(json.dumps(settings)) == settings
    assert (settings["version"], settings["jpeg_compression"]) == (2, [60, 74])
    assert settings["sequence"] == ["jpeg_compression", "coarse_dropout"]
