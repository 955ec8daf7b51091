from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from support import FIXTURE

from data.errors import ConfigError
from data.images import decode_error, image_batches

TRAIN_FILES = tuple(f"train/{i}.jpg" for i in range(1, 41))


def collect(dataset: tf.data.Dataset) -> tuple[list[int], list[int], np.ndarray]:
    """Indices, batch sizes and all images of a dataset of (index, image) batches."""
    indices: list[int] = []
    sizes: list[int] = []
    images = []
    for index, image in dataset:
        indices.extend(index.numpy().tolist())
        sizes.append(int(index.shape[0]))
        images.append(image.numpy())
    return indices, sizes, np.concatenate(images)


def copy_fixture(tmp_path: Path) -> Path:
    root = tmp_path / "fairface"
    shutil.copytree(FIXTURE, root)
    return root


def test_image_batches_fixture_all_in_order() -> None:
    dataset = image_batches(FIXTURE, TRAIN_FILES, batch_size=16)
    assert dataset.element_spec[0].dtype == tf.int64
    indices, sizes, images = collect(dataset)
    assert indices == list(range(40))
    assert sizes == [16, 16, 8]
    assert images.dtype == np.uint8 and images.shape == (40, 224, 224, 3)
    # A 224 x 224 image passes through exactly as decoded.
    for position in (0, 39):
        decoded = tf.io.decode_jpeg(tf.io.read_file(str(FIXTURE / TRAIN_FILES[position])), channels=3)
        assert np.array_equal(images[position], decoded.numpy())


def test_image_batches_drops_undecodable_images(tmp_path: Path) -> None:
    root = copy_fixture(tmp_path)
    truncated = root / "train" / "3.jpg"
    truncated.write_bytes(truncated.read_bytes()[:2000])
    (root / "train" / "5.jpg").write_bytes(b"this is not an image" * 50)
    files = TRAIN_FILES[:8]
    indices, sizes, images = collect(image_batches(root, files, batch_size=4))
    assert indices == [0, 1, 3, 5, 6, 7]
    assert sizes == [4, 2]
    _, _, clean = collect(image_batches(FIXTURE, files, batch_size=4))
    assert np.array_equal(images, clean[indices])


def test_image_batches_missing_image_is_dropped(tmp_path: Path) -> None:
    root = copy_fixture(tmp_path)
    (root / "train" / "2.jpg").unlink()
    indices, _, _ = collect(image_batches(root, TRAIN_FILES[:3], batch_size=8))
    assert indices == [0, 2]


def test_image_batches_resizes_other_sizes(tmp_path: Path) -> None:
    Image.new("RGB", (100, 80), (10, 200, 30)).save(tmp_path / "small.png")
    Image.new("L", (300, 500), 77).save(tmp_path / "gray.png")
    files = ("small.png", "gray.png")
    indices, _, images = collect(image_batches(tmp_path, files, batch_size=2, size=64))
    assert indices == [0, 1]
    assert images.shape == (2, 64, 64, 3)
    assert np.all(images[0] == np.array([10, 200, 30], dtype=np.uint8))
    assert np.all(images[1] == 77)


def test_image_batches_augmentation_is_seeded_per_image() -> None:
    files = TRAIN_FILES[:6]
    _, _, clean = collect(image_batches(FIXTURE, files, batch_size=4))
    _, _, first = collect(image_batches(FIXTURE, files, batch_size=4, augment_seed=(3, 1)))
    _, _, again = collect(image_batches(FIXTURE, files, batch_size=3, augment_seed=(3, 1)))
    _, _, other_view = collect(image_batches(FIXTURE, files, batch_size=4, augment_seed=(3, 2)))
    shard, _, shard_images = collect(
        image_batches(FIXTURE, files[2:5], batch_size=2, augment_seed=(3, 1), index_offset=2)
    )
    assert first.shape == (6, 224, 224, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert shard == [2, 3, 4]
    assert np.array_equal(shard_images, first[2:5])
    for position in range(6):
        assert not np.array_equal(first[position], clean[position])
        assert not np.array_equal(first[position], other_view[position])


def test_image_batches_empty_list() -> None:
    assert list(image_batches(FIXTURE, [], batch_size=4)) == []


@pytest.mark.parametrize(
    ("batch_size", "size", "message"),
    [(0, 224, "batch size must be >= 1, got 0"), (8, -1, "image size must be >= 1, got -1")],
)
def test_image_batches_rejects_bad_sizes(batch_size: int, size: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        image_batches(FIXTURE, TRAIN_FILES, batch_size=batch_size, size=size)


def test_decode_error_says_why(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((FIXTURE / "train" / "1.jpg").read_bytes()[:1000])
    assert decode_error(FIXTURE / "train" / "1.jpg") is None
    assert (
        decode_error(garbage)
        == "Unknown image file format. One of JPEG, JPEG XL, PNG, GIF, BMP, WebP required."
    )
    assert decode_error(truncated) == "jpeg::Uncompress failed. Invalid JPEG data or crop window."
    assert decode_error(tmp_path / "absent.jpg") == f"{tmp_path / 'absent.jpg'}; No such file or directory"
