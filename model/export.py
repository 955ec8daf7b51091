"""The exported model: base and head as one Keras model, or the head alone, with its card; and loading it.

An export is of one of two kinds, named in its card. ``keras`` (Keras bases, e.g. vggface): base and head
joined into one model, ``model.keras`` (Keras 3, loads in safe mode: built-in layers only) and
``saved_model/`` (TensorFlow SavedModel: ``serving_default`` takes uint8 images, ``serve_bytes`` encoded
JPEG/PNG files, see :mod:`model.serving`).
``head+predictor`` (bases that are not Keras models, e.g. dlib-resnet): the head alone, ``head.keras``;
:class:`Predictor` runs the base the card describes and then the head. Either way the directory also holds
the evaluation report and ``model_card.json``, written last and listing every other file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras

from data.cache import Cache
from data.embed import BASE_KEYS
from data.errors import CacheError, ConfigError
from data.images import DECODER
from data.labels import HEADS, VOCABULARIES
from model.head import HeadConfig
from model.loading import load_keras_file
from model.serving import signatures_card, write_saved_model

CARD_FORMAT_VERSION = 1
CARD = "model_card.json"
KERAS_FILE = "model.keras"
HEAD_FILE = "head.keras"
SAVED_MODEL = "saved_model"
INPUT_NAME = "image"
KERAS_KIND = "keras"  # one Keras model: image -> outputs
HEAD_KIND = "head+predictor"  # the head alone; the predictor runs the base first
MODEL_FILES = {KERAS_KIND: KERAS_FILE, HEAD_KIND: HEAD_FILE}
# The card's entries that loading, prediction and evaluation read, with their JSON types.
CARD_READ = {
    "base": dict,
    "cache_fingerprint": dict,
    "parts": dict,
    "study": dict,
    "weights": str,
    "files": list,
}


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
        return str(self.card["kind"])

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
    write_saved_model(model, out / SAVED_MODEL)


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
    class_weights: Mapping[str, Iterable[float]] | None = None,
) -> dict[str, object]:
    """The card of an export (everything but the file list, which `write_card` adds).

    ``model`` is what the export saved: the joined model (kind keras) or the head (head+predictor).
    ``base`` is the base's description (``Base.description``); ``study`` says where the head came from
    (study name, trial number, objective and value, ...); ``class_weights`` are the loss weights the head
    was trained with per class in vocabulary order (``model.train.loss_class_weights``), None if unknown.
    """
    if kind == KERAS_KIND:
        names = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
        parts = {"base": names[0], "head": names[1]}
        head_model = model.get_layer(names[1])
    else:
        parts = {"head": model.name}
        head_model = model
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
        "decoder": dict(DECODER),
        "signatures": signatures_card(int(base["input_size"])) if kind == KERAS_KIND else None,
        "compute_dtype": compute_dtypes(str(base["dtype"]), head_model),
        "class_weights": None if class_weights is None else _labelled_weights(class_weights),
        "parts": parts,
        "weights": base["weights"],
        "head_config": head_config.to_dict(),
        "study": dict(study),
        "validation_metrics": dict(validation_metrics),
        "cache_fingerprint": dict(cache_fingerprint),
    }


def compute_dtypes(base_dtype: str, head: keras.Model) -> dict[str, object]:
    """The dtype policies the export computes in: the base's, and the head's hidden and output layers.

    A head trained under ``mixed_bfloat16`` (the default on CPU) keeps that policy when saved: its hidden
    matmuls run in bfloat16 at inference too, with float32 weights; its output layers are float32.
    """
    outputs = {head.get_layer(name).dtype_policy.name for name in HEADS}
    hidden = {
        layer.dtype_policy.name
        for layer in head.layers
        if isinstance(layer, keras.layers.Dense) and layer.name not in HEADS
    }
    return {"base": base_dtype, "head_hidden": sorted(hidden), "head_outputs": sorted(outputs)}


def _labelled_weights(weights: Mapping[str, Iterable[float]]) -> dict[str, object]:
    labelled: dict[str, object] = {
        head: dict(zip(VOCABULARIES[head], (float(w) for w in values), strict=True))
        for head, values in weights.items()
    }
    return labelled | {"gender": "unweighted binary cross-entropy"}


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
    if card.get("kind") not in MODEL_FILES:
        raise ConfigError(
            f"{card_path} has kind {card.get('kind')!r}; this face-hpo reads {' or '.join(MODEL_FILES)}: "
            "export the model again."
        )
    missing = [key for key, kind in CARD_READ.items() if not isinstance(card.get(key), kind)]
    if missing:
        raise ConfigError(f"{card_path} is damaged: it lacks {', '.join(missing)}; export the model again.")
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
    fix = "copy the whole export again, or export the model again with `hpo export-best`."
    model = load_keras_file(path / MODEL_FILES[card["kind"]], what="model file", fix=fix)
    return ExportedModel(path=path, model=model, card=card)


def check_cache_matches(card: Mapping[str, Any], cache: Cache) -> None:
    """Refuse a cache whose embeddings this model's base did not make (other base, weights, preprocessing)."""
    made_with: Mapping[str, object] = card["cache_fingerprint"]
    have = cache.fingerprint
    if have["base"] != made_with["base"]:
        raise CacheError(
            f"the cache at {cache.path} was embedded with the {have['base']} base, but the model's head was "
            f"trained on {made_with['base']} embeddings; its embeddings do not fit this model's head. Use "
            f"--dataset, or a cache embedded with --base {made_with['base']}."
        )
    if have["weights"] != card["weights"]:
        raise CacheError(
            f"the cache at {cache.path} was embedded with base weights {have['weights']!r}, but the model "
            f"uses {card['weights']!r}; its embeddings do not fit this model's head. Use --dataset, "
            "or a cache built with those weights."
        )
    for key in BASE_KEYS:
        if have[key] != made_with[key]:
            raise CacheError(
                f"the cache at {cache.path} has {key}={have[key]!r} but the model's was "
                f"{made_with[key]!r}; use --dataset, or a cache built like the model's."
            )
