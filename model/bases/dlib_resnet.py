"""dlib's face-recognition ResNet as a frozen base: face image -> 128-d descriptor (optional extra ``dlib``).

Per image: dlib's HOG frontal face detector finds the face (the first detection; when it finds none, the
whole image is the face box, which on FairFace's padding-0.25 crops is close to where the detector's boxes
fall), the 5-point shape predictor places the landmarks, and the ResNet embeds the aligned 150x150 chip
(``get_face_chip`` alignment, padding 0.25, no jitter). Every step is deterministic, and each image is
embedded on its own, so its vector does not depend on the batch or on the number of worker processes.

dlib and the model files come from the extra: ``pip install 'face-hpo[dlib]'`` (dlib-bin and
face-recognition-models). Neither is imported before a dlib base is asked for.
"""

from __future__ import annotations

import importlib
import importlib.util
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from data.errors import ConfigError
from model.bases.base import Base, Encoder, file_sha256
from model.errors import WeightsError

NAME = "dlib-resnet"
DIM = 128
RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
MODELS_PACKAGE = "face_recognition_models"
DEFAULT_WEIGHTS = "dlib"  # the model files shipped by face-recognition-models
INSTALL = "pip install 'face-hpo[dlib]'"
# On 1,250 shared FairFace crops (every 8th), upsample 0 finds no face in 30.3 %, upsample 1 in 27.8 %
# at a quarter of the detector's speed (a third more time per image, the ResNet included): the faces
# fill the crop, so upsampling, which is for small faces, buys little.
UPSAMPLE = 0
CHIP_SIZE = 150  # the ResNet's input; dlib's own alignment
CHIP_PADDING = 0.25
JITTERS = 0  # jittering is random: 0 keeps the descriptors deterministic
ALIGNMENT: dict[str, object] = {
    "name": "dlib-face-chip",
    "input": "RGB uint8, any size (the cache feeds 224x224)",
    "detector": "dlib frontal_face_detector (HOG)",
    "upsample": UPSAMPLE,
    "face": "first detection; none: the whole image",
    "landmarks": "5-point shape predictor",
    "chip_size": CHIP_SIZE,
    "chip_padding": CHIP_PADDING,
    "jitters": JITTERS,
}


@dataclass(frozen=True)
class DlibWeights:
    """The two model files the base needs, and their identity for fingerprints and model cards."""

    resnet: Path
    landmarks: Path
    identity: str  # "sha256:<resnet file>+sha256:<landmarks file>"


def import_dlib() -> ModuleType:
    """The ``dlib`` module, or a ConfigError that says how to install the extra."""
    try:
        return importlib.import_module("dlib")
    except ImportError as error:
        raise ConfigError(
            f"the dlib-resnet base needs the optional extra, and dlib does not import ({error}): {INSTALL}"
        ) from error


def resolve_dlib_weights(spec: str | None = None) -> DlibWeights:
    """Find the model files: ``None`` or ``"dlib"`` = face-recognition-models' copies, else a directory.

    The directory must hold ``dlib_face_recognition_resnet_model_v1.dat`` and
    ``shape_predictor_5_face_landmarks.dat`` (as dlib.net/files ships them, decompressed).
    """
    if spec is None or spec == DEFAULT_WEIGHTS:
        folder = _package_models()
    else:
        folder = Path(spec).expanduser()
        if not folder.is_dir():
            raise WeightsError(
                f"--weights {spec!r}: the dlib-resnet base takes --weights {DEFAULT_WEIGHTS} (the files of "
                f"face-recognition-models) or a directory holding {RESNET_FILE} and {LANDMARKS_FILE}."
            )
    paths = [folder / RESNET_FILE, folder / LANDMARKS_FILE]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise WeightsError(
            f"{folder} lacks {', '.join(missing)}, which the dlib-resnet base needs; "
            f"reinstall the optional extra ({INSTALL}) or pass a directory that holds them."
        )
    digests = [file_sha256(path, what="the dlib model file", fix=INSTALL) for path in paths]
    identity = "+".join(f"sha256:{digest}" for digest in digests)
    return DlibWeights(resnet=paths[0], landmarks=paths[1], identity=identity)


def _package_models() -> Path:
    # find_spec locates the package without running its __init__, which imports the deprecated
    # pkg_resources just to build these same paths.
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            f"the dlib-resnet base needs the optional extra, and {MODELS_PACKAGE} (its model files) "
            f"is not installed: {INSTALL}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class _Models:
    """One detector, shape predictor and ResNet, loaded from the model files."""

    def __init__(self, weights: DlibWeights) -> None:
        self.dlib = import_dlib()
        self.detector = self.dlib.get_frontal_face_detector()
        self.landmarks = self.dlib.shape_predictor(str(weights.landmarks))
        self.resnet = self.dlib.face_recognition_model_v1(str(weights.resnet))

    def embed(self, images: np.ndarray) -> tuple[np.ndarray, int]:
        """(B, 128) float32 descriptors of ``images`` and how many had a detected face."""
        out = np.empty((len(images), DIM), dtype=np.float32)
        found = 0
        for row, image in enumerate(images):
            faces = self.detector(image, UPSAMPLE)
            found += len(faces) > 0
            height, width = image.shape[:2]
            box = faces[0] if faces else self.dlib.rectangle(0, 0, width - 1, height - 1)
            chip = self.dlib.get_face_chip(image, self.landmarks(image, box), CHIP_SIZE, CHIP_PADDING)
            out[row] = np.asarray(self.resnet.compute_face_descriptor(chip, JITTERS))
        return out, found


_worker_models: _Models | None = None  # a pool process's own models


def _start_worker(weights: DlibWeights) -> None:
    global _worker_models
    # Ctrl-C reaches the whole process group; the parent stops the pool, the workers stay quiet.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_models = _Models(weights)


def _worker_embed(images: np.ndarray) -> tuple[np.ndarray, int]:
    assert _worker_models is not None  # set by _start_worker
    return _worker_models.embed(images)


class DlibEncoder:
    """uint8 RGB images (B, H, W, 3) -> (B, 128) float32 descriptors; counts detected and missed faces.

    dlib holds the GIL while it computes, so ``workers`` > 1 (default: the CPUs this process may use)
    embeds contiguous slices of each batch in that many spawned processes, each with its own models;
    every image is embedded on its own, so the vectors do not depend on ``workers`` or the batch.
    Example: ``with DlibEncoder(resolve_dlib_weights(), workers=1) as encode: vectors = encode(images)``.
    """

    def __init__(self, weights: DlibWeights, *, workers: int | None = None) -> None:
        count = workers if workers is not None else _usable_cpus()
        if count < 1:
            raise ConfigError(f"dlib encoder workers must be >= 1, got {count}.")
        self.weights = weights
        self.workers = count
        self.faces_found = 0
        self.faces_missing = 0
        # Loaded here even with a pool, so missing or unreadable files fail now, in this process.
        self._models = _Models(weights)
        self._pool: ProcessPoolExecutor | None = None
        if count > 1:
            # spawn, not fork: the parent has TensorFlow's threads running.
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                count, mp_context=context, initializer=_start_worker, initargs=(weights,)
            )

    def __call__(self, images: Any) -> np.ndarray:
        array = _checked_images(images)
        if self._pool is None or len(array) < 2:
            vectors, found = self._models.embed(array)
        else:
            parts = [part for part in np.array_split(array, self.workers) if len(part)]
            results = list(self._pool.map(_worker_embed, parts))
            vectors = np.concatenate([part for part, _ in results])
            found = sum(count for _, count in results)
        self.faces_found += found
        self.faces_missing += len(array) - found
        return vectors

    def close(self) -> None:
        """Stop the worker processes, if any."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> DlibEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, int]:
        """Faces the detector found and missed (the whole image used instead) over every call so far."""
        return {"faces_found": self.faces_found, "faces_missing": self.faces_missing}

    def notes(self) -> list[str]:
        """A line for a run's summary: how often the detector found no face."""
        total = self.faces_found + self.faces_missing
        share = 100.0 * self.faces_missing / total if total else 0.0
        return [
            f"dlib face detector: a face found in {self.faces_found} of {total} images; "
            f"{self.faces_missing} ({share:.1f} %) had none and were embedded whole"
        ]


def _usable_cpus() -> int:
    # The CPUs this process may run on (a container's or taskset's share), where the OS says so.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _checked_images(images: Any) -> np.ndarray:
    # Eager tf.Tensors convert too; dlib itself takes only C-contiguous uint8 RGB.
    array = np.ascontiguousarray(np.asarray(images))
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (B, H, W, 3) RGB, got {array.dtype} {array.shape}")
    return array


@dataclass(frozen=True)
class DlibResnetBase(Base):
    """dlib's face-recognition ResNet: not Keras, 128-d descriptors of aligned faces."""

    files: DlibWeights | None = field(default=None, repr=False)

    @property
    def weights_path(self) -> str | None:
        # The directory holding both model files: what --weights takes for this base.
        return None if self.files is None else str(self.files.resnet.parent.resolve())

    def make_encoder(self, *, workers: int | None = None) -> Encoder:
        assert self.files is not None  # set by resolve
        return DlibEncoder(self.files, workers=workers)


def resolve(weights: str | None, dtype: str) -> Base:
    """The registry's entry: the base with its model files (default: face-recognition-models') found."""
    if dtype != "float32":
        raise ConfigError(f"the dlib-resnet base computes in float32 only, got dtype {dtype!r}.")
    import_dlib()  # the missing extra is reported before any weights
    files = resolve_dlib_weights(weights)
    # dlib's metric network ends in a global average pool and a 128-unit fully connected layer, no bias.
    return DlibResnetBase(
        name=NAME,
        dim=DIM,
        is_keras=False,
        weights=files.identity,
        dtype=dtype,
        preprocessing=ALIGNMENT,
        pooling="avg, fc 128 (no bias)",
        files=files,
    )
