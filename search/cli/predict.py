"""`hpo predict`: label face images with an exported model."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import click

from data.labels import HEADS
from search.cli.options import batch_size_option, model_option, pass_settings, weights_option
from search.settings import Settings
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
@pass_settings
def predict(
    settings: Settings, model_dir: Path, images: tuple[Path, ...], as_json: bool, top_k: int, batch_size: int
) -> None:
    """Print age, race and gender with their probabilities for each IMAGE (any size: resized to 224x224).

    An image that cannot be read is named on stderr; the others still print, and the exit code is 2.

    \b
    Example:  hpo predict --model work/export face.jpg other.png --top-k 3
    """
    # TensorFlow's start-up notices, and its C++ notices (one per unreadable file), would bury the
    # one-line errors.
    import_tensorflow_quietly()
    from model.predict import predict_files

    labelled, failed = predict_files(
        model_dir, images, weights=settings.weights, batch_size=batch_size, top_k=top_k
    )
    if as_json:
        rows = [{"image": str(images[i]), **labels} for i, labels in labelled.items()]
        click.echo(json.dumps(rows, indent=2))
    else:
        for i, labels in labelled.items():
            click.echo(format_prediction(str(images[i]), labels))
    for path, reason in failed:
        click.echo(f"hpo: error: cannot label {path}: {reason}", err=True)
    if failed:
        raise click.exceptions.Exit(2)


def format_prediction(image: str, labels: Mapping[str, Sequence[Mapping[str, object]]]) -> str:
    """The text form: the image, then one line per head of ``label (probability)`` pairs."""
    lines = [image]
    for head in HEADS:
        picks = "  ".join(f"{pick['label']} ({pick['probability']:.3f})" for pick in labels[head])
        lines.append(f"  {head + ':':<8}{picks}")
    return "\n".join(lines)
