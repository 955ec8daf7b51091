from __future__ import annotations

import json
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from support import FIXTURE

from data.errors import ConfigError
from model.bases.vggface import BASE_DIM, BGR_MEANS, PREPROCESSING, build_base, conv_shapes, preprocess_numpy
from model.bases.vggface_h5 import random_weights, resolve_weights

CONVS = [
    f"conv{block}_{index}"
    for block, convs in enumerate((2, 2, 3, 3, 3), start=1)
    for index in range(1, convs + 1)
]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Two real FairFace faces, (2, 224, 224, 3) uint8 RGB."""
    return np.stack([np.asarray(Image.open(FIXTURE / "train" / f"{i}.jpg").convert("RGB")) for i in (1, 2)])


@pytest.fixture(scope="module")
def base(vggface_h5: Path) -> keras.Model:
    return build_base(resolve_weights(str(vggface_h5)))


@pytest.fixture(scope="module")
def embeddings(base: keras.Model, images: np.ndarray) -> np.ndarray:
    return np.asarray(base(images.astype(np.float32)))


def _reference_vgg16(h5: Path) -> keras.Model:
    """keras.applications' VGG16, built independently, with the file's kernels copied in by position."""
    reference = keras.applications.VGG16(
        include_top=False, weights=None, pooling="avg", input_shape=(224, 224, 3)
    )
    convs = [layer for layer in reference.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == len(CONVS)
    with h5py.File(h5, "r") as file:
        for layer, name in zip(convs, CONVS, strict=True):
            group = file[name]
            layer.set_weights([group[f"{name}/kernel:0"][()], group[f"{name}/bias:0"][()]])
    return reference


def test_build_base_layer_names_and_output() -> None:
    model = build_base(resolve_weights("random:0"))
    pools = [f"pool{block}" for block in range(1, 6)]
    expected = ["image", "vggface_cast", "vggface_preprocess"]
    for block, pool in enumerate(pools, start=1):
        expected += [name for name in CONVS if name.startswith(f"conv{block}_")] + [pool]
    assert [layer.name for layer in model.layers] == [*expected, "avg_pool"]
    assert tuple(model.input.shape) == (None, 224, 224, 3)
    assert tuple(model.output.shape) == (None, BASE_DIM) == (None, 512)
    assert model.output.dtype == "float32"
    conv = model.get_layer("conv3_2")
    assert (conv.kernel_size, conv.padding, conv.activation.__name__) == ((3, 3), "same", "relu")
    pool = model.get_layer("pool3")
    assert (pool.pool_size, pool.strides) == ((2, 2), (2, 2))
    assert model.count_params() == 14_714_688 + 12  # VGG16 without top, plus the 1x1 preprocessing conv


def test_build_base_h5_matches_reference_vgg16(
    vggface_h5: Path, images: np.ndarray, embeddings: np.ndarray
) -> None:
    reference = _reference_vgg16(vggface_h5)
    expected = np.asarray(reference(preprocess_numpy(images)))
    assert embeddings.shape == (2, 512) and embeddings.dtype == np.float32
    # Same float32 convolutions in both; the bound only allows for a different summation order.
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(embeddings, expected, rtol=1e-4, atol=1e-5 * scale)


def test_build_base_h5_weights_loaded_exactly(base: keras.Model, vggface_h5: Path) -> None:
    with h5py.File(vggface_h5, "r") as file:
        for name in CONVS:
            kernel, bias = base.get_layer(name).get_weights()
            np.testing.assert_array_equal(kernel, file[name][f"{name}/kernel:0"][()])
            np.testing.assert_array_equal(bias, file[name][f"{name}/bias:0"][()])


def test_preprocess_layers_equal_preprocess_numpy(base: keras.Model, images: np.ndarray) -> None:
    preprocess = keras.Model(base.input, base.get_layer("vggface_preprocess").output)
    np.testing.assert_array_equal(np.asarray(preprocess(images.astype(np.float32))), preprocess_numpy(images))
    assert not base.get_layer("vggface_preprocess").trainable


def test_preprocess_numpy_rgb_to_bgr_minus_means() -> None:
    pixel = np.array([[[255, 0, 10]]], dtype=np.uint8)  # R 255, G 0, B 10
    out = preprocess_numpy(pixel)
    assert out.dtype == np.float32
    expected = [
        np.float32(10) - np.float32(93.5940),
        -np.float32(104.7624),
        np.float32(255) - np.float32(129.1863),
    ]
    np.testing.assert_array_equal(out[0, 0], expected)
    assert BGR_MEANS == (93.5940, 104.7624, 129.1863)


def test_preprocessing_description_is_json_safe() -> None:
    assert json.loads(json.dumps(PREPROCESSING)) == PREPROCESSING
    assert PREPROCESSING["channel_order"] == "BGR"
    assert PREPROCESSING["mean_bgr"] == [93.5940, 104.7624, 129.1863]


def test_build_base_uint8_input_equals_float(
    base: keras.Model, images: np.ndarray, embeddings: np.ndarray
) -> None:
    np.testing.assert_array_equal(np.asarray(base(tf.constant(images))), embeddings)


def test_build_base_bfloat16_close_to_float32(
    vggface_h5: Path, images: np.ndarray, embeddings: np.ndarray
) -> None:
    model = build_base(resolve_weights(str(vggface_h5)), dtype="bfloat16")
    assert model.get_layer("conv1_1").dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("conv1_1").compute_dtype == "bfloat16"
    assert model.get_layer("vggface_preprocess").dtype_policy.name == "float32"
    out = np.asarray(model(images))
    assert out.dtype == np.float32 and out.shape == (2, 512)
    cosine = (out * embeddings).sum(axis=1) / (
        np.linalg.norm(out, axis=1) * np.linalg.norm(embeddings, axis=1)
    )
    assert cosine.min() >= 0.999


def test_build_base_unknown_dtype_raises() -> None:
    with pytest.raises(ConfigError, match=r"base dtype must be one of float32, bfloat16, got 'float16'"):
        build_base(resolve_weights("random:0"), dtype="float16")


def test_build_base_random_seed_is_deterministic() -> None:
    model = build_base(resolve_weights("random:3"))
    again = random_weights(3, conv_shapes())
    for name in CONVS:
        kernel, bias = model.get_layer(name).get_weights()
        np.testing.assert_array_equal(kernel, again[name][0])
        np.testing.assert_array_equal(bias, np.zeros_like(bias))
    other = random_weights(4, conv_shapes())
    assert not np.array_equal(other["conv1_1"][0], again["conv1_1"][0])
    # He-normal: std sqrt(2 / fan_in); 1.2M samples put the estimate within 1%.
    assert abs(float(again["conv4_1"][0].std()) / np.sqrt(2 / (9 * 256)) - 1) < 0.01


def test_build_base_keras_file_loads_in_safe_mode(
    base: keras.Model, images: np.ndarray, embeddings: np.ndarray, tmp_path: Path
) -> None:
    path = tmp_path / "base.keras"
    base.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in base.layers]
    np.testing.assert_array_equal(np.asarray(loaded(images.astype(np.float32))), embeddings)
