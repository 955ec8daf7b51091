from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import FIXTURE

from model.bases.dlib_resnet import (
    DIM,
    LANDMARKS_FILE,
    RESNET_FILE,
    DlibEncoder,
    DlibWeights,
    resolve_dlib_weights,
)
from model.errors import WeightsError

dlib = pytest.importorskip(
    "dlib", reason="the dlib-resnet base needs the optional extra: pip install 'face-hpo[dlib]'"
)

if importlib.util.find_spec("face_recognition_models") is None:
    pytest.skip(
        "the dlib-resnet base needs the optional extra (face-recognition-models is missing): "
        "pip install 'face-hpo[dlib]'",
        allow_module_level=True,
    )

# dlib's HOG detector at upsample 0 finds a face in train/2 and train/3, none in train/1 and train/4.
FOUND, MISSING = (2, 3), (1, 4)


def _image(number: int) -> np.ndarray:
    return np.asarray(Image.open(FIXTURE / "train" / f"{number}.jpg").convert("RGB"))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """train/1..4 of the fixture: (4, 224, 224, 3) uint8 RGB."""
    return np.stack([_image(number) for number in (1, 2, 3, 4)])


@pytest.fixture(scope="module")
def weights() -> DlibWeights:
    return resolve_dlib_weights()


@pytest.fixture(scope="module")
def encoder(weights: DlibWeights) -> DlibEncoder:
    return DlibEncoder(weights, workers=1)


@pytest.fixture(scope="module")
def vectors(encoder: DlibEncoder, images: np.ndarray) -> np.ndarray:
    return encoder(images)


def _reference(weights: DlibWeights, images: np.ndarray) -> np.ndarray:
    """dlib's own path: detect (else the whole image), 5 landmarks, descriptor with its default alignment."""
    detector = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(str(weights.landmarks))
    resnet = dlib.face_recognition_model_v1(str(weights.resnet))
    vectors = []
    for image in images:
        faces = detector(image, 0)
        box = faces[0] if len(faces) else dlib.rectangle(0, 0, image.shape[1] - 1, image.shape[0] - 1)
        vectors.append(resnet.compute_face_descriptor(image, landmarks(image, box), 0))
    return np.asarray(vectors, dtype=np.float32)


def test_dlib_encoder_fixture_images_finite_128d(vectors: np.ndarray) -> None:
    assert vectors.shape == (4, DIM) == (4, 128)
    assert vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    # Four different people: no two descriptors coincide.
    distances = np.linalg.norm(vectors[:, None] - vectors[None], axis=-1)
    assert (distances[~np.eye(4, dtype=bool)] > 0.1).all()


def test_dlib_encoder_equals_dlib_reference(
    weights: DlibWeights, images: np.ndarray, vectors: np.ndarray
) -> None:
    np.testing.assert_array_equal(vectors, _reference(weights, images))


def test_dlib_encoder_counts_faces_found_and_missing(weights: DlibWeights, images: np.ndarray) -> None:
    encoder = DlibEncoder(weights, workers=1)
    encoder(images)
    encoder(images[1:2])
    assert encoder.stats() == {"faces_found": len(FOUND) + 1, "faces_missing": len(MISSING)}
    assert encoder.notes() == [
        "dlib face detector: a face found in 3 of 5 images; 2 (40.0 %) had none and were embedded whole"
    ]


def test_dlib_encoder_same_image_same_vector(
    encoder: DlibEncoder, images: np.ndarray, vectors: np.ndarray
) -> None:
    again = encoder(np.stack([images[2], images[0], images[2]]))
    np.testing.assert_array_equal(again, vectors[[2, 0, 2]])
    np.testing.assert_array_equal(encoder(images[3:4]), vectors[3:4])


def test_dlib_encoder_workers_equal_inline(
    weights: DlibWeights, images: np.ndarray, vectors: np.ndarray
) -> None:
    with DlibEncoder(weights, workers=2) as pooled:
        np.testing.assert_array_equal(pooled(images), vectors)
        assert pooled.stats() == {"faces_found": 2, "faces_missing": 2}


def test_dlib_encoder_non_uint8_refused(encoder: DlibEncoder, images: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"images must be uint8 \(B, H, W, 3\) RGB, got float32"):
        encoder(images.astype(np.float32))


def test_resolve_dlib_weights_identity_is_both_files_sha256(weights: DlibWeights) -> None:
    assert (weights.resnet.name, weights.landmarks.name) == (RESNET_FILE, LANDMARKS_FILE)
    digests = [hashlib.sha256(path.read_bytes()).hexdigest() for path in (weights.resnet, weights.landmarks)]
    assert weights.identity == f"sha256:{digests[0]}+sha256:{digests[1]}"
    assert resolve_dlib_weights("dlib") == weights


def test_resolve_dlib_weights_directory(weights: DlibWeights, tmp_path: Path) -> None:
    for path in (weights.resnet, weights.landmarks):
        (tmp_path / path.name).symlink_to(path)
    found = resolve_dlib_weights(str(tmp_path))
    assert (found.resnet, found.landmarks) == (tmp_path / RESNET_FILE, tmp_path / LANDMARKS_FILE)
    assert found.identity == weights.identity


def test_resolve_dlib_weights_missing_file(weights: DlibWeights, tmp_path: Path) -> None:
    (tmp_path / RESNET_FILE).symlink_to(weights.resnet)
    with pytest.raises(WeightsError, match=rf"{tmp_path} lacks {LANDMARKS_FILE}, which the dlib-resnet"):
        resolve_dlib_weights(str(tmp_path))


def test_resolve_dlib_weights_not_a_directory() -> None:
    with pytest.raises(WeightsError, match=r"--weights 'vggface': the dlib-resnet base takes --weights dlib"):
        resolve_dlib_weights("vggface")
