from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from support import REPO

from model.bases.vggface import build_base
from model.bases.vggface_h5 import WEIGHTS_FILENAME, WeightsSource, resolve_weights
from model.errors import WeightsError


@pytest.fixture
def h5_copy(vggface_h5: Path, tmp_path: Path) -> Path:
    """A writable copy of the fixture weights, to be broken by the test."""
    return Path(shutil.copyfile(vggface_h5, tmp_path / WEIGHTS_FILENAME))


def _cached(cache_dir: Path) -> Path:
    return cache_dir / "models" / "vggface" / WEIGHTS_FILENAME


def test_resolve_weights_random_seed() -> None:
    assert resolve_weights("random:7") == WeightsSource(path=None, seed=7, identity="random:7")
    assert resolve_weights("random:007").identity == "random:7"


@pytest.mark.parametrize("spec", ["random:", "random:abc", "random:-1", "random:1.5"])
def test_resolve_weights_bad_seed_raises(spec: str) -> None:
    with pytest.raises(WeightsError, match=rf"weights '{spec}': the seed must be a non-negative integer"):
        resolve_weights(spec)


def test_resolve_weights_path_identity_is_sha256(tmp_path: Path) -> None:
    path = tmp_path / "w.h5"
    path.write_bytes(b"some weights")
    source = resolve_weights(str(path))
    assert source == WeightsSource(
        path=path, seed=None, identity="sha256:" + hashlib.sha256(b"some weights").hexdigest()
    )


def test_resolve_weights_missing_path_names_it_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nope.h5"
    with pytest.raises(
        WeightsError, match=r"nope\.h5 does not exist.*--weights PATH.*HPO_WEIGHTS.*random:SEED"
    ):
        resolve_weights(str(missing))
    with pytest.raises(WeightsError, match=r"is a directory"):
        resolve_weights(str(tmp_path))


def test_resolve_weights_vggface_uses_cached_file(tmp_path: Path) -> None:
    cached = _cached(tmp_path)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"cached")
    # The origin is unreachable: a cached file must not trigger a download.
    source = resolve_weights("vggface", cache_dir=tmp_path, origin="http://127.0.0.1:1/none.h5")
    assert source.path == cached
    assert source.identity == "sha256:" + hashlib.sha256(b"cached").hexdigest()


def test_resolve_weights_vggface_downloads_into_cache_saying_so_on_stderr(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    origin = tmp_path / "mirror.h5"
    origin.write_bytes(b"published")
    source = resolve_weights("vggface", cache_dir=tmp_path / "keras", origin=origin.as_uri())
    assert source.path == _cached(tmp_path / "keras")
    assert source.path.read_bytes() == b"published"
    # Keras' notice and progress bar go to stderr: stdout is `hpo predict`'s JSON.
    out, err = capfd.readouterr()
    assert out == ""
    assert f"Downloading data from {origin.as_uri()}" in err


def test_resolve_weights_vggface_offline_says_so(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    expected = (
        r"not in the Keras cache \(.*models/vggface/rcmalli_vggface_tf_notop_vgg16\.h5\) and "
        r"downloading them from http://127\.0\.0\.1:1/none\.h5 failed: .*"
        r"No network\? Put rcmalli_vggface_tf_notop_vgg16\.h5 at "
        r".*--weights PATH \(or set HPO_WEIGHTS\).*--weights random:SEED"
    )
    with pytest.raises(WeightsError, match=expected):
        resolve_weights("vggface", cache_dir=tmp_path, origin="http://127.0.0.1:1/none.h5")
    assert list(tmp_path.iterdir()) == []  # the folders made for the download are removed again
    # Keras' "Downloading data from" notice is held back until bytes come: the error alone is printed.
    assert capfd.readouterr() == ("", "")


def test_resolve_weights_vggface_default_cache_is_keras_home(tmp_path: Path) -> None:
    cached = _cached(tmp_path)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"home")
    code = "from model.bases.vggface_h5 import resolve_weights; print(resolve_weights('vggface').path)"
    env = {**os.environ, "KERAS_HOME": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(cached)


def test_build_base_extra_layer_in_file_raises(h5_copy: Path) -> None:
    with h5py.File(h5_copy, "a") as file:
        file.attrs["layer_names"] = [*file.attrs["layer_names"], b"fc6"]
        file.create_group("fc6").attrs["weight_names"] = [b"fc6/kernel:0"]
        file["fc6"].create_dataset("fc6/kernel:0", data=np.zeros((25088, 4), np.float32))
    with pytest.raises(
        WeightsError, match=r"has weights for layer\(s\) \['fc6'\] that the VGG16 base does not"
    ):
        build_base(resolve_weights(str(h5_copy)))


def test_build_base_shape_mismatch_raises(h5_copy: Path) -> None:
    with h5py.File(h5_copy, "a") as file:
        del file["conv2_1"]["conv2_1/kernel:0"]
        file["conv2_1"].create_dataset("conv2_1/kernel:0", data=np.zeros((3, 3, 64, 64), np.float32))
    expected = (
        r"layer conv2_1 has weight shapes \[\(3, 3, 64, 64\), \(128,\)\], "
        r"the base expects \[\(3, 3, 64, 128\), \(128,\)\]"
    )
    with pytest.raises(WeightsError, match=expected):
        build_base(resolve_weights(str(h5_copy)))


def test_build_base_missing_conv_raises(h5_copy: Path) -> None:
    with h5py.File(h5_copy, "a") as file:
        file.attrs["layer_names"] = [name for name in file.attrs["layer_names"] if name != b"conv5_3"]
        del file["conv5_3"]
    with pytest.raises(WeightsError, match=r"has no weights for the base's layer\(s\) \['conv5_3'\]"):
        build_base(resolve_weights(str(h5_copy)))


def test_build_base_truncated_file_raises(h5_copy: Path) -> None:
    data = h5_copy.read_bytes()
    h5_copy.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=rf"{h5_copy.name} is not a readable HDF5 weights file"):
        build_base(resolve_weights(str(h5_copy)))


def test_build_base_non_hdf5_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "weights.h5"
    path.write_text("<html>404 Not Found</html>")
    with pytest.raises(WeightsError, match=r"weights\.h5 is not a readable HDF5 weights file"):
        build_base(resolve_weights(str(path)))


def test_build_base_hdf5_without_layer_names_raises(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as file:
        file.create_dataset("x", data=np.zeros(3))
    with pytest.raises(
        WeightsError, match=r"other\.h5 has no 'layer_names' attribute: not a Keras-2 weights"
    ):
        build_base(resolve_weights(str(path)))


def test_build_base_reads_whole_model_save(vggface_h5: Path, tmp_path: Path) -> None:
    path = tmp_path / "model.h5"
    with h5py.File(vggface_h5, "r") as source, h5py.File(path, "w") as target:
        group = target.create_group("model_weights")
        for key, value in source.attrs.items():
            group.attrs[key] = value
        for name in source:
            source.copy(source[name], group, name=name)
    model = build_base(resolve_weights(str(path)))
    with h5py.File(vggface_h5, "r") as file:
        np.testing.assert_array_equal(
            model.get_layer("conv5_3").get_weights()[1], file["conv5_3/conv5_3/bias:0"]
        )
