"""Where the VGG-Face base's weights come from, and reading keras-vggface's legacy Keras-2 HDF5 file.

keras-vggface is not a dependency (it does not import on Keras 3), so its published
``rcmalli_vggface_tf_notop_vgg16.h5`` is read here with h5py: the root attribute ``layer_names``
lists one group per layer; each group's ``weight_names`` attribute lists its datasets
(``conv1_1/kernel:0``, ``conv1_1/bias:0``), kernels in HWIO order.
"""

from __future__ import annotations

import contextlib
import io
import re
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import h5py
import keras
import numpy as np
from keras.src.backend.config import keras_home

from data.outdir import absent_folders, remove_empty
from model.bases.base import file_sha256
from model.errors import WeightsError

WEIGHTS_FILENAME = "rcmalli_vggface_tf_notop_vgg16.h5"
WEIGHTS_URL = f"https://github.com/rcmalli/keras-vggface/releases/download/v2.0/{WEIGHTS_FILENAME}"
# keras-vggface's own cache folder, so a file it once downloaded is found too.
WEIGHTS_SUBDIR = "models/vggface"
# Per socket operation, not for the whole download: a network that drops packets fails in seconds.
DOWNLOAD_TIMEOUT_S = 15.0

_FIX = (
    f"pass --weights PATH (or set HPO_WEIGHTS) to a copy of {WEIGHTS_FILENAME}, "
    "or use --weights random:SEED for a demo"
)

# Layer name -> the shapes of its weights, in the order the layer stores them.
Shapes = Mapping[str, Sequence[tuple[int, ...]]]
LayerWeights = dict[str, list[np.ndarray]]


@dataclass(frozen=True)
class WeightsSource:
    """Resolved weights: a file (``path``) or a seeded random init (``seed``), exactly one of them."""

    path: Path | None
    seed: int | None
    identity: str  # "sha256:<hex of the file>" or "random:<seed>"; goes into fingerprints and model cards

    def __post_init__(self) -> None:
        if (self.path is None) == (self.seed is None):
            raise ValueError(
                f"exactly one of path and seed must be set, got path={self.path}, seed={self.seed}"
            )


def resolve_weights(spec: str, *, cache_dir: Path | None = None, origin: str = WEIGHTS_URL) -> WeightsSource:
    """Turn ``--weights`` into a source: ``random:SEED``, ``vggface`` (the Keras cache) or a file path.

    ``vggface`` looks for ``models/vggface/rcmalli_vggface_tf_notop_vgg16.h5`` under ``cache_dir``
    (default: Keras's home, ``$KERAS_HOME`` or ``~/.keras``) and downloads it from ``origin`` when it is
    missing. Example: ``resolve_weights("random:0").identity == "random:0"``.
    """
    if spec.startswith("random:"):
        seed = _parse_seed(spec)
        return WeightsSource(path=None, seed=seed, identity=f"random:{seed}")
    if spec == "vggface":
        path = _fetch_vggface(cache_dir if cache_dir is not None else Path(keras_home()), origin)
    else:
        path = _existing_file(spec)
    digest = file_sha256(path, what="weights file", fix=f"{_FIX}.")
    return WeightsSource(path=path, seed=None, identity=f"sha256:{digest}")


def _parse_seed(spec: str) -> int:
    text = spec.removeprefix("random:")
    if not re.fullmatch(r"[0-9]+", text):
        raise WeightsError(f"weights {spec!r}: the seed must be a non-negative integer, e.g. random:0.")
    return int(text)


def _existing_file(spec: str) -> Path:
    path = Path(spec).expanduser()
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise WeightsError(
            f"weights file {path} {what}; {_FIX}, or 'vggface' for the Keras cache (downloaded when online)."
        )
    return path


def _fetch_vggface(cache_dir: Path, origin: str) -> Path:
    target = cache_dir / WEIGHTS_SUBDIR / WEIGHTS_FILENAME
    if target.is_file():
        return target
    # get_file silently falls back to /tmp/.keras when cache_dir does not exist yet: make the folders,
    # and remove those made here again if the download fails (an empty models/vggface helps no one).
    made = absent_folders(target.parent)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Keras prints its notice and progress bar on stdout, which is `hpo predict`'s JSON.
        with _socket_timeout(DOWNLOAD_TIMEOUT_S), contextlib.redirect_stdout(_Connected(sys.stderr)):
            fetched = keras.utils.get_file(
                WEIGHTS_FILENAME, origin, cache_subdir=WEIGHTS_SUBDIR, cache_dir=str(cache_dir)
            )
    except Exception as error:  # get_file raises a bare Exception for every URL failure
        remove_empty(made)
        raise WeightsError(
            f"the VGG-Face weights are not in the Keras cache ({target}) and downloading them from {origin} "
            f"failed: {error}. No network? Put {WEIGHTS_FILENAME} at {target}, or {_FIX}."
        ) from error
    return Path(fetched)


class _Connected(io.TextIOBase):
    """Writes to ``sink``, holding back the first line until more follows.

    Keras announces a download before it connects, then draws its progress bar: offline, the error
    stays the one line a failed command prints; online, the notice comes with the bar.
    """

    def __init__(self, sink: TextIO) -> None:
        self._sink = sink
        self._held: str | None = ""

    def write(self, text: str) -> int:
        if self._held is None:
            return self._sink.write(text)
        if "\n" not in self._held:
            self._held += text
            return len(text)
        self._sink.write(self._held)
        self._held = None
        return self._sink.write(text)

    def flush(self) -> None:
        self._sink.flush()


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # urlretrieve (inside get_file) takes no timeout; the process-wide default is the only handle.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def read_h5_weights(path: Path, shapes: Shapes) -> LayerWeights:
    """Read a Keras-2 HDF5 weights file and check it holds exactly ``shapes``' layers, shape for shape.

    Layers without weights (the input layer, pools) are skipped: keras-vggface's input layer has an
    auto-generated name such as ``input_1``.
    """
    try:
        with h5py.File(path, "r") as file:
            found = _read_layers(file, path)
    except OSError as error:
        raise WeightsError(f"{path} is not a readable HDF5 weights file ({error}); {_FIX}.") from error
    _check_layers(found, shapes, path)
    return found


def _read_layers(file: h5py.File, path: Path) -> LayerWeights:
    # A whole-model save keeps the same layout one level down.
    root = file["model_weights"] if "layer_names" not in file.attrs and "model_weights" in file else file
    if "layer_names" not in root.attrs:
        raise WeightsError(
            f"{path} has no 'layer_names' attribute: not a Keras-2 weights file "
            f"like {WEIGHTS_FILENAME}; {_FIX}."
        )
    found: LayerWeights = {}
    for layer in _strings(root.attrs["layer_names"]):
        if layer not in root:
            raise WeightsError(
                f"{path} lists layer {layer!r} in 'layer_names' but has no group for it; {_FIX}."
            )
        group = root[layer]
        names = _strings(group.attrs.get("weight_names", []))
        missing = [name for name in names if name not in group]
        if missing:
            raise WeightsError(f"{path}: layer {layer!r} lists weights {missing} that are not in the file.")
        if names:
            found[layer] = [np.asarray(group[name], dtype=np.float32) for name in names]
    return found


def _strings(values: Sequence[bytes | str]) -> list[str]:
    return [value.decode("utf-8") if isinstance(value, bytes) else str(value) for value in values]


def _check_layers(found: LayerWeights, shapes: Shapes, path: Path) -> None:
    unknown = [layer for layer in found if layer not in shapes]
    if unknown:
        raise WeightsError(
            f"{path} has weights for layer(s) {unknown} that the VGG16 base does not have; "
            f"it must be keras-vggface's VGG16 no-top file {WEIGHTS_FILENAME}; {_FIX}."
        )
    missing = [layer for layer in shapes if layer not in found]
    if missing:
        raise WeightsError(f"{path} has no weights for the base's layer(s) {missing}; {_FIX}.")
    for layer, expected in shapes.items():
        seen = [array.shape for array in found[layer]]
        if seen != list(expected):
            raise WeightsError(
                f"{path}: layer {layer} has weight shapes {seen}, the base expects {list(expected)}; {_FIX}."
            )


def random_weights(seed: int, shapes: Shapes) -> LayerWeights:
    """Seeded He-normal kernels and zero biases: numpy only, so a seed gives the same weights anywhere."""
    rng = np.random.default_rng(seed)
    weights: LayerWeights = {}
    for layer, (kernel_shape, *other_shapes) in shapes.items():
        fan_in = int(np.prod(kernel_shape[:-1]))
        kernel = rng.standard_normal(kernel_shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        weights[layer] = [kernel, *(np.zeros(shape, np.float32) for shape in other_shapes)]
    return weights
