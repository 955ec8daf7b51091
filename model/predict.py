"""Running an export: the head on cached embeddings, or the whole model on images, and the labels it gives."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from data.images import image_batches
from data.labels import HEADS, VOCABULARIES
from model.bases import INPUT_SIZE, resolve_base
from model.export import HEAD_KIND, ExportedModel

if TYPE_CHECKING:
    from model.bases import Encoder

_WIDTHS = {"age": len(VOCABULARIES["age"]), "race": len(VOCABULARIES["race"]), "gender": 1}  # output units


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


def class_probabilities(outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Per head an (N, k) float array of class probabilities in vocabulary order (gender: [1 - p, p])."""
    probabilities = {head: np.asarray(outputs[head], dtype=np.float64) for head in HEADS}
    male = probabilities["gender"].reshape(-1, 1)
    probabilities["gender"] = np.concatenate([1.0 - male, male], axis=1)
    return probabilities


def top_labels(probabilities: Mapping[str, np.ndarray], k: int) -> list[Labels]:
    """Per image, per head, the ``k`` most probable labels (all, if the head has fewer) and probabilities."""
    rows: list[Labels] = [{} for _ in range(len(probabilities[HEADS[0]]))]
    for head in HEADS:
        vocabulary = VOCABULARIES[head]
        # Stable sort on the negated probability: ties keep vocabulary order.
        order = np.argsort(-probabilities[head], axis=1, kind="stable")[:, :k]
        for n, picks in enumerate(order):
            rows[n][head] = [
                {"label": vocabulary[c], "probability": float(probabilities[head][n, c])} for c in picks
            ]
    return rows


Labels = dict[str, list[dict[str, object]]]  # head -> the top labels with their probabilities


def predict_files(
    model_dir: Path, images: Sequence[Path], *, weights: str | None, batch_size: int, top_k: int
) -> tuple[dict[int, Labels], list[tuple[Path, str]]]:
    """`hpo predict`: the top-k labels of each image that decodes (by position in ``images``, in order),
    and (image, why) for each that does not. ``weights`` finds a head+predictor export's base."""
    from data.images import decode_error
    from model.export import load_export

    exported = load_export(model_dir)
    with Predictor(exported, weights=weights) as run_model:
        # Path() / name keeps relative names relative and absolute ones absolute.
        indices, outputs = image_outputs(run_model, Path(), [str(p) for p in images], batch_size=batch_size)
    labelled = dict(zip(indices.tolist(), top_labels(class_probabilities(outputs), top_k), strict=True))
    failed = []
    for i, path in enumerate(images):
        if i not in labelled:
            reason = (
                "no such file" if not path.is_file() else decode_error(path) or "not decodable as an image"
            )
            failed.append((path, reason))
    return dict(sorted(labelled.items())), failed
