"""Fixtures shared by the model tests: a weights file in keras-vggface's legacy Keras-2 HDF5 layout."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

# keras-vggface's VGG16 without its top, written out independently of model/vggface.py.
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
FIXTURE_SEED = 20240611


def write_vggface_h5(path: Path, seed: int) -> Path:
    """Write seeded He-scaled weights exactly as Keras 2's ``save_weights`` laid out the rcmalli file."""
    rng = np.random.default_rng(seed)
    layers: list[tuple[str, dict[str, np.ndarray]]] = [("input_1", {})]
    channels = 3
    for block, (filters, convs) in enumerate(VGG16_BLOCKS, start=1):
        for index in range(1, convs + 1):
            name = f"conv{block}_{index}"
            scale = np.float32(np.sqrt(2.0 / (9 * channels)))
            kernel = rng.standard_normal((3, 3, channels, filters), dtype=np.float32) * scale
            bias = rng.uniform(-0.1, 0.1, filters).astype(np.float32)
            layers.append((name, {f"{name}/kernel:0": kernel, f"{name}/bias:0": bias}))
            channels = filters
        layers.append((f"pool{block}", {}))
    with h5py.File(path, "w") as file:
        file.attrs["layer_names"] = np.array([name.encode() for name, _ in layers])
        file.attrs["backend"] = b"tensorflow"
        file.attrs["keras_version"] = b"2.2.4"
        for name, weights in layers:
            group = file.create_group(name)
            # Keras 2 stored an empty list for weightless layers, which numpy makes a float64 array.
            group.attrs["weight_names"] = (
                np.array([key.encode() for key in weights]) if weights else np.array([])
            )
            for key, value in weights.items():
                group.create_dataset(key, data=value)
    return path


@pytest.fixture(scope="session")
def vggface_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weights ``rcmalli_vggface_tf_notop_vgg16.h5`` look-alike (about 59 MB), written once."""
    folder = tmp_path_factory.mktemp("vggface")
    return write_vggface_h5(folder / "rcmalli_vggface_tf_notop_vgg16.h5", FIXTURE_SEED)
