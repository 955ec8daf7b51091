"""Loading a saved Keras file (an export's model, a stored head) in safe mode, with one-line errors.

A ``.keras`` file is a zip archive of the model's config and weights. A copy cut short, a file that is
not one, and a model holding Python code (a ``Lambda`` layer, which safe mode refuses: loading it would
run that code) each become a :class:`ConfigError` naming the file, what is wrong with it and the fix.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import keras

from data.errors import ConfigError


def load_keras_file(
    path: Path, *, what: str, fix: str, compile: bool = True, shown: str | None = None
) -> keras.Model:
    """The model in the ``.keras`` file ``path``, loaded in safe mode. Errors name it as ``what`` (e.g.
    "model file") and ``shown`` (default: the path), and end with ``fix`` (e.g. "export it again")."""
    name = f"{what} {shown or path}"
    if not path.is_file():
        raise ConfigError(f"{name} does not exist; {fix}")
    if not zipfile.is_zipfile(path):
        size = path.stat().st_size
        raise ConfigError(
            f"{name} is not a .keras archive ({size} bytes, truncated or another format); {fix}"
        )
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as error:  # a damaged archive fails in Keras, h5py or zipfile, with any type
        if "safe_mode" in str(error):
            raise ConfigError(
                f"{name} holds Python code (such as a Lambda layer), which Keras safe mode refuses to "
                f"load because loading would run it; face-hpo's models use built-in layers only: {fix}"
            ) from error
        raise ConfigError(f"cannot load {name} ({_first_line(error)}); {fix}") from error


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
