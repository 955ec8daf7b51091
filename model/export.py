"""The exported model: base and head as one Keras model, or the head alone, with its card; and loaded back.

An export is of one of two kinds, named in its card. ``keras`` (Keras bases, e.g. vggface): base and head
joined into one model, ``model.keras`` (Keras 3, loads in safe mode: built-in layers only) and
``saved_model/`` (TensorFlow SavedModel with a ``serve`` / ``serving_default`` signature).
``head+predictor`` (bases that are not Keras models, e.g. dlib-resnet): the head alone, ``head.keras``;
:class:`Predictor` runs the base the card describes and then the head. Either way the directory also holds
the evaluation report and ``model_card.json``, written last and listing every other file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from data.cache import Cache
from data.errors import CacheError, ConfigError
from data.images import image_batches
from data.labels import HEADS, VOCABULARIES
from model.bases import DEFAULT_BASE, INPUT_SIZE, resolve_base
from model.head import HeadConfig

if TYPE_CHECKING:
    from model.bases import Encoder

CARD_FORMAT_VERSION = 1
CARD = "model_card.json"
KERAS_FILE = "model.keras"
HEAD_FILE = "head.keras"
SAVED_MODEL = "saved_model"
INPUT_NAME = "image"
KERAS_KIND = "keras"  # one Keras model: image -> outputs
HEAD_KIND = "head+predictor"  # the head alone; the predictor runs the base first
MODEL_FILES = {KERAS_KIND: KERAS_FILE, HEAD_KIND: HEAD_FILE}
# Fingerprint keys besides the weights that decide what a clean (view-0) embedding of an image is; a cache
# read through an exported model's head must agree with the model's cache on those both record.
EMBEDDING_KEYS = ("input_size", "preprocessing", "pooling", "dtype")
_WIDTHS = {"age": len(VOCABULARIES["age"]), "race": len(VOCABULARIES["race"]), "gender": 1}  # output units


def join_model(base: keras.Model, head: keras.Model) -> keras.Model:
    """One model: uint8 image (None, 224, 224, 3) named "image" -> base -> head -> age, race, gender."""
    image = keras.Input(shape=base.input_shape[1:], dtype="uint8", name=INPUT_NAME)
    outputs = head(base(image))
    # Identity layers give the joined model's outputs (and the SavedModel signature's keys) the head names.
    named = {name: keras.layers.Identity(name=name)(outputs[name]) for name in HEADS}
    return keras.Model(image, named, name="face_hpo")


@dataclass(frozen=True)
class ExportedModel:
    """A loaded export: its model (kind keras: the joined model; head+predictor: the head) and its card."""

    path: Path
    model: keras.Model
    card: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.card.get("kind", KERAS_KIND))  # cards from before bases had names: one Keras model

    @property
    def head(self) -> keras.Model:
        """The head, which maps (N, D) cached embeddings of the card's base to the three outputs."""
        if self.kind == HEAD_KIND:
            return self.model
        return self.model.get_layer(self.card["parts"]["head"])


def save_model(model: keras.Model, out: Path) -> None:
    """Write ``model.keras`` and the SavedModel into ``out`` (created if needed)."""
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / KERAS_FILE)
    model.export(out / SAVED_MODEL, verbose=False)


def save_head(head: keras.Model, out: Path) -> None:
    """Write the head alone as ``head.keras`` into ``out`` (created if needed): a head+predictor export."""
    out.mkdir(parents=True, exist_ok=True)
    head.save(out / HEAD_FILE)


def model_card(
    model: keras.Model,
    *,
    kind: str,
    base: Mapping[str, Any],
    head_config: HeadConfig,
    cache_fingerprint: Mapping[str, object],
    study: Mapping[str, object],
    validation_metrics: Mapping[str, object],
    code_version: Mapping[str, object],
) -> dict[str, object]:
    """The card of an export (everything but the file list, which `write_card` adds).

    ``model`` is what the export saved: the joined model (kind keras) or the head (head+predictor).
    ``base`` is the base's description (``Base.description``); ``study`` says where the head came from
    (study name, trial number, objective and value, ...).
    """
    if kind == KERAS_KIND:
        names = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
        parts = {"base": names[0], "head": names[1]}
    else:
        parts = {"head": model.name}
    return {
        "format_version": CARD_FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "code_version": dict(code_version),
        "kind": kind,
        "base": dict(base),
        "input": {
            "name": INPUT_NAME,
            "shape": [None, base["input_size"], base["input_size"], 3],
            "dtype": "uint8",
            "color": "RGB",
            "range": "0-255",
        },
        "outputs": {
            "age": {"activation": "softmax", "labels": list(VOCABULARIES["age"])},
            "race": {"activation": "softmax", "labels": list(VOCABULARIES["race"])},
            "gender": {"activation": "sigmoid", "labels": list(VOCABULARIES["gender"]), "value": "P(Male)"},
        },
        "vocabularies": {head: list(VOCABULARIES[head]) for head in HEADS},
        "preprocessing": dict(base["preprocessing"]),
        "parts": parts,
        "weights": base["weights"],
        "head_config": head_config.to_dict(),
        "study": dict(study),
        "validation_metrics": dict(validation_metrics),
        "cache_fingerprint": dict(cache_fingerprint),
    }


def write_card(out: Path, card: Mapping[str, object]) -> dict[str, object]:
    """Write ``model_card.json`` last, listing every file in ``out`` (so a partial copy is detectable)."""
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != CARD)
    complete = {**card, "files": [CARD, *files]}
    (out / CARD).write_text(json.dumps(complete, indent=2) + "\n", encoding="utf-8")
    return complete


def read_card(path: Path) -> dict[str, Any]:
    """The card of the export at ``path``, after checking every file it lists is there."""
    card_path = path / CARD
    if not card_path.is_file():
        what = "does not exist" if not path.exists() else f"has no {CARD}"
        raise ConfigError(
            f"model directory {path} {what}; pass a directory written by `hpo export-best --out`."
        )
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read {card_path} ({error}); export the model again.") from error
    if not isinstance(card, dict) or card.get("format_version") != CARD_FORMAT_VERSION:
        version = card.get("format_version") if isinstance(card, dict) else None
        raise ConfigError(
            f"{card_path} has format version {version!r}; this face-hpo reads version "
            f"{CARD_FORMAT_VERSION}: export the model again."
        )
    if card.get("kind", KERAS_KIND) not in MODEL_FILES:
        raise ConfigError(
            f"{card_path} has kind {card['kind']!r}; this face-hpo reads {' or '.join(MODEL_FILES)}: "
            "export the model again."
        )
    for name in card.get("files", []):
        if not (path / name).is_file():
            raise ConfigError(
                f"model directory {path} is missing {name} (listed in its {CARD}); "
                "copy the whole directory or export the model again."
            )
    return card


def load_export(path: Path) -> ExportedModel:
    """Load the export at ``path`` (``model.keras`` or ``head.keras``) in Keras safe mode (no pickles)."""
    card = read_card(path)
    model = keras.saving.load_model(path / MODEL_FILES[card.get("kind", KERAS_KIND)], safe_mode=True)
    return ExportedModel(path=path, model=model, card=card)


def check_cache_matches(card: Mapping[str, Any], cache: Cache) -> None:
    """Refuse a cache whose embeddings this model's base did not make (other base, weights, preprocessing)."""
    made_with: Mapping[str, object] = card["cache_fingerprint"]
    # Caches and cards made before bases had names were all VGG-Face.
    model_base, cache_base = (f.get("base", DEFAULT_BASE) for f in (made_with, cache.fingerprint))
    if cache_base != model_base:
        raise CacheError(
            f"the cache at {cache.path} was embedded with the {cache_base} base, but the model's head was "
            f"trained on {model_base} embeddings; its embeddings do not fit this model's head. Use "
            f"--dataset, or a cache embedded with --base {model_base}."
        )
    if cache.fingerprint.get("weights") != card["weights"]:
        raise CacheError(
            f"the cache at {cache.path} was embedded with base weights "
            f"{cache.fingerprint.get('weights')!r}, but the model uses {card['weights']!r}; its "
            "embeddings do not fit this model's head. Use --dataset, or a cache built with those weights."
        )
    for key in EMBEDDING_KEYS:
        if key in made_with and key in cache.fingerprint and cache.fingerprint[key] != made_with[key]:
            raise CacheError(
                f"the cache at {cache.path} has {key}={cache.fingerprint[key]!r} but the model's was "
                f"{made_with[key]!r}; use --dataset, or a cache built like the model's."
            )


def class_probabilities(outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Per head an (N, k) float array of class probabilities in vocabulary order (gender: [1 - p, p])."""
    probabilities = {head: np.asarray(outputs[head], dtype=np.float64) for head in HEADS}
    male = probabilities["gender"].reshape(-1, 1)
    probabilities["gender"] = np.concatenate([1.0 - male, male], axis=1)
    return probabilities


def predicted_classes(outputs: Mapping[str, Any]) -> np.ndarray:
    """(N, 3) class indices in HEADS order; gender is Male when P(Male) >= 0.5, as the search scores it."""
    age, race = (np.asarray(outputs[head]).argmax(axis=1) for head in ("age", "race"))
    male = np.asarray(outputs["gender"]).reshape(-1) >= 0.5
    return np.stack([age, race, male.astype(np.int64)], axis=1)


def head_outputs(
    head: keras.Model, embeddings: np.ndarray, *, batch_size: int = 1024
) -> dict[str, np.ndarray]:
    """The head's outputs on (N, D) embeddings, in row order."""
    parts = [
        head.predict_on_batch(np.asarray(embeddings[start : start + batch_size], dtype=np.float32))
        for start in range(0, len(embeddings), batch_size)
    ]
    return {name: np.concatenate([part[name] for part in parts]) for name in HEADS}


class Predictor:
    """An export as a function of images: uint8 RGB (B, 224, 224, 3) -> {head: (B, k) outputs} as numpy.

    Kind keras runs its one model. Kind head+predictor resolves the base its card names (``weights``:
    the base's own spec, None for its default), refuses it unless it makes the embeddings the head was
    trained on, and runs it before the head. ``close()`` (or ``with``) releases the base's workers.
    """

    def __init__(self, exported: ExportedModel, *, weights: str | None = None) -> None:
        self.exported = exported
        self._encode: Encoder | None = None
        if exported.kind == HEAD_KIND:
            recorded = exported.card["base"]
            base = resolve_base(str(recorded["base"]), weights, dtype=str(recorded["dtype"]))
            base.check_matches(recorded, holder=f"the cache the model at {exported.path} was trained on")
            self._encode = base.make_encoder()

    def __call__(self, images: Any) -> dict[str, np.ndarray]:
        if self._encode is None:
            outputs = self.exported.model.predict_on_batch(images)
        else:
            outputs = self.exported.head.predict_on_batch(self._encode(images))
        return {name: np.asarray(outputs[name]) for name in HEADS}

    def close(self) -> None:
        """Stop the base's worker processes, if it has any."""
        if self._encode is not None:
            self._encode.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def image_outputs(
    predict: Callable[[Any], Mapping[str, np.ndarray]],
    root: Path,
    files: Sequence[str],
    *,
    batch_size: int = 32,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``predict``'s outputs on the images ``root/files``: (indices into ``files``, outputs in that order).

    ``predict`` is usually a :class:`Predictor`. Images are resized to 224x224 if needed; images that do
    not decode are left out, so the indices name the rows that have outputs. ``on_progress(done, total)``
    follows each batch.
    """
    indices: list[np.ndarray] = []
    parts: list[Mapping[str, np.ndarray]] = []
    for index, images in image_batches(root, files, batch_size=batch_size, size=INPUT_SIZE):
        indices.append(index.numpy())
        parts.append(predict(images))
        if on_progress is not None:
            on_progress(int(index[-1]) + 1, len(files))
    if not indices:
        return np.zeros(0, dtype=np.int64), {name: np.zeros((0, _WIDTHS[name]), np.float32) for name in HEADS}
    order = np.argsort(np.concatenate(indices), kind="stable")
    outputs = {name: np.concatenate([part[name] for part in parts])[order] for name in HEADS}
    return np.concatenate(indices)[order], outputs
