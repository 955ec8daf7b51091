"""What every frozen base is: its description (for fingerprints and model cards) and its encoder.

A :class:`Base` is a base resolved with its weights. Its ``description`` goes into the cache fingerprint
(and from there into model cards), ``make_encoder()`` gives the image -> embedding function that
``hpo embed`` runs, and Keras bases also ``build_model()`` so an export is one graph. Importing this
module loads neither TensorFlow nor dlib.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from data.embed import BASE_KEYS
from data.errors import ConfigError
from model.errors import WeightsError

if TYPE_CHECKING:
    import keras

INPUT_SIZE = 224  # the image side every base is fed (the cache's images are resized to it)
KERAS_BASE = "vggface"  # the base an export can join with its head into one graph


class Encoder(Protocol):
    """A base as a function: uint8 RGB images (B, 224, 224, 3), numpy or tf -> (B, dim) float32 numpy."""

    def __call__(self, images: Any) -> np.ndarray: ...

    def stats(self) -> dict[str, int]:
        """JSON-safe counts over every call so far (e.g. faces found); empty if nothing is counted."""
        ...

    def notes(self) -> list[str]:
        """Lines for a run's summary (e.g. how often no face was found); may be empty."""
        ...

    def close(self) -> None:
        """Release worker processes, if the encoder has any."""
        ...


@dataclass(frozen=True)
class Base(ABC):
    """A base resolved with its weights; ``weights`` is their identity (``sha256:...``, ``random:SEED``)."""

    name: str
    dim: int
    is_keras: bool  # a Keras model: an export joins it and the head into one graph
    weights: str
    dtype: str
    preprocessing: Mapping[str, object] = field(repr=False)
    pooling: str = field(repr=False)

    @property
    def description(self) -> dict[str, object]:
        """JSON-safe account of the base for the cache fingerprint; keys ``data.embed.BASE_KEYS``."""
        described: dict[str, object] = {
            "base": self.name,
            "weights": self.weights,
            "input_size": INPUT_SIZE,
            "preprocessing": dict(self.preprocessing),
            "pooling": self.pooling,
            "dtype": self.dtype,
            "dim": self.dim,
        }
        assert tuple(described) == BASE_KEYS
        return described

    @property
    def weights_path(self) -> str | None:
        """Where the weights were read (absolute file or directory), None for generated ones (random:SEED).

        Kept beside the fingerprint, not in it: the weights' identity is their sha256, wherever they lie.
        """
        return None

    @abstractmethod
    def make_encoder(self, *, workers: int | None = None) -> Encoder:
        """The base as a batch function for ``hpo embed``, ``hpo predict`` and ``hpo evaluate --dataset``.

        ``workers`` is for bases that parallelise themselves (dlib-resnet: processes, default one per
        CPU); Keras bases leave threading to TensorFlow and ignore it.
        """

    def build_model(self) -> keras.Model:
        """The base as a Keras model (None, 224, 224, 3) -> (None, dim); only for Keras bases."""
        raise ConfigError(
            f"the {self.name} base is not a Keras model, so it cannot be joined with the head into one "
            f"graph; export its head with a predictor that runs the base, or use the {KERAS_BASE} base."
        )

    def check_matches(self, recorded: Mapping[str, object], *, holder: str) -> None:
        """Refuse embeddings this base would not make: ``recorded`` is a cache fingerprint or a card's copy.

        ``holder`` names where ``recorded`` comes from, e.g. ``"the cache at work/cache"``.
        """
        mine = self.description
        differ = [key for key in BASE_KEYS if key in recorded and recorded[key] != mine[key]]
        if not differ:
            return
        seen = ", ".join(f"{key} {recorded[key]!r} (asked: {mine[key]!r})" for key in differ)
        if "base" in differ:
            raise ConfigError(
                f"{holder} was embedded with the {recorded['base']} base, not {self.name}: {seen}. "
                f"Pass --base {recorded['base']}, or embed a new cache with --base {self.name}."
            )
        # The commands that check this compute in the recorded dtype and have no --dtype flag.
        raise WeightsError(
            f"{holder} was embedded with other {self.name} settings: {seen}. Pass the --weights "
            "(HPO_WEIGHTS) it was embedded with, or embed a new cache."
        )


class KerasEncoder:
    """A Keras base as one compiled call: uint8 [B, 224, 224, 3] -> (B, D) float32 numpy."""

    def __init__(self, model: keras.Model) -> None:
        import tensorflow as tf

        # A tf.function call runs about twice as fast as model.predict on small batches; the fixed
        # signature keeps the last, shorter batch of a shard from retracing.
        @tf.function(input_signature=[tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 3], tf.uint8)])
        def forward(images: tf.Tensor) -> tf.Tensor:
            return model(tf.cast(images, tf.float32), training=False)

        self._forward = forward

    def __call__(self, images: Any) -> np.ndarray:
        return np.asarray(self._forward(images))

    def stats(self) -> dict[str, int]:
        return {}

    def notes(self) -> list[str]:
        return []

    def close(self) -> None:
        pass


def file_sha256(path: Path, *, what: str, fix: str) -> str:
    """Hex SHA-256 of a base's weights file, for its identity; a WeightsError naming ``what`` and the
    ``fix`` when the file cannot be read."""
    try:
        with path.open("rb") as stream:
            return hashlib.file_digest(stream, "sha256").hexdigest()
    except OSError as error:
        raise WeightsError(f"cannot read {what} {path}: {error.strerror}; {fix}") from error
