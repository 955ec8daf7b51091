"""`hpo predict`: label face images with an exported model."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import click
import numpy as np

from data.labels import HEADS, VOCABULARIES
from search.options import batch_size_option, model_option, weights_option
from search.settings import resolve_settings
from search.tfquiet import import_tensorflow_quietly


@click.command("predict")
@model_option()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array instead of text.")
@click.option(
    "--top-k",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Labels per head, most probable first (gender has 2).",
)
@batch_size_option()
@weights_option(
    "For a head+predictor export (dlib-resnet): its base's weights, 'dlib' or a directory of the model files."
)
def predict(
    model_dir: Path,
    images: tuple[Path, ...],
    as_json: bool,
    top_k: int,
    batch_size: int,
    weights: str | None,
) -> None:
    """Print age, race and gender with their probabilities for each IMAGE (any size: resized to 224x224).

    An image that cannot be read is named on stderr; the others still print, and the exit code is 2.

    \b
    Example:  hpo predict --model work/export face.jpg other.png --top-k 3
    """
    # TensorFlow's start-up notices, and its C++ notices (one per unreadable file), would bury the
    # one-line errors.
    import_tensorflow_quietly()
    from data.images import decode_error
    from model.export import Predictor, class_probabilities, image_outputs, load_export

    settings = resolve_settings({"weights": weights}, os.environ)
    exported = load_export(model_dir)
    # A head+predictor export runs its base first (Predictor resolves it from the card).
    with Predictor(exported, weights=settings.weights) as run_model:
        # Path() / name keeps relative names relative and absolute ones absolute.
        files = [str(p) for p in images]
        indices, outputs = image_outputs(run_model, Path(), files, batch_size=batch_size)
    results = top_labels(class_probabilities(outputs), top_k)
    labelled = dict(zip(indices.tolist(), results, strict=True))
    if as_json:
        rows = [{"image": str(images[i]), **labelled[i]} for i in sorted(labelled)]
        click.echo(json.dumps(rows, indent=2))
    else:
        for i in sorted(labelled):
            click.echo(format_prediction(str(images[i]), labelled[i]))
    failed = [path for i, path in enumerate(images) if i not in labelled]
    for path in failed:
        reason = "no such file" if not path.is_file() else decode_error(path) or "not decodable as an image"
        click.echo(f"hpo: error: cannot label {path}: {reason}", err=True)
    if failed:
        raise click.exceptions.Exit(2)


def top_labels(probabilities: Mapping[str, np.ndarray], k: int) -> list[dict[str, list[dict[str, object]]]]:
    """Per image, per head, the ``k`` most probable labels (all, if the head has fewer) and probabilities."""
    rows: list[dict[str, list[dict[str, object]]]] = [{} for _ in range(len(probabilities[HEADS[0]]))]
    for head in HEADS:
        vocabulary = VOCABULARIES[head]
        # Stable sort on the negated probability: ties keep vocabulary order.
        order = np.argsort(-probabilities[head], axis=1, kind="stable")[:, :k]
        for n, picks in enumerate(order):
            rows[n][head] = [
                {"label": vocabulary[c], "probability": float(probabilities[head][n, c])} for c in picks
            ]
    return rows


def format_prediction(image: str, labels: Mapping[str, Sequence[Mapping[str, object]]]) -> str:
    """The text form: the image, then one line per head of ``label (probability)`` pairs."""
    lines = [image]
    for head in HEADS:
        picks = "  ".join(f"{pick['label']} ({pick['probability']:.3f})" for pick in labels[head])
        lines.append(f"  {head + ':':<8}{picks}")
    return "\n".join(lines)
