"""`hpo evaluate`: the report of an exported model, from images or from a matching embedding cache."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from data.errors import ConfigError
from search.options import batch_size_option, cache_option, dataset_option, model_option, weights_option
from search.settings import resolve_settings
from search.tfquiet import import_tensorflow_quietly


@click.command("evaluate")
@model_option()
@dataset_option("FairFace root: run its images through the full model.")
@cache_option(
    "Embedding cache made with the model's base weights: run its embeddings through the model's head "
    "(fast path)."
)
@weights_option(
    "With --dataset, for a head+predictor export (dlib-resnet): its base's weights, 'dlib' or a "
    "directory of the model files."
)
@click.option("--split-name", default="test", show_default=True, help="Which split to evaluate on.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory for the report.")
@batch_size_option("Images per batch (--dataset only).")
def evaluate(
    model_dir: Path,
    dataset: Path | None,
    cache: Path | None,
    weights: str | None,
    split_name: str,
    out: Path,
    batch_size: int,
) -> None:
    """Write report.json, report.md and confusion_<head>.png for an exported model on one split.

    Per head: precision, recall, F1 and support per class, accuracy, balanced accuracy, the
    row-normalised confusion matrix with counts, and the paper's Tables III–V beside it. Give --dataset
    (images) or --cache (embeddings); with neither, HPO_DATASET is used if set, else the cache.

    \b
    Example:  hpo evaluate --model work/export --dataset ../fairface --out work/eval
    """
    import_tensorflow_quietly()  # its start-up notices would bury the one-line errors and the summary
    from data.cache import open_cache
    from model.export import load_export
    from model.report import evaluate_cache, evaluate_images, write_report
    from search.commands_embed import ProgressLine

    if dataset is not None and cache is not None:
        raise ConfigError(
            "give one of --dataset and --cache, not both: they are two ways to the same report."
        )
    settings = resolve_settings({"dataset": dataset, "cache": cache, "weights": weights}, os.environ)
    exported = load_export(model_dir)
    if settings.dataset is not None and cache is None:
        progress = ProgressLine(sys.stderr)
        report = evaluate_images(
            exported,
            settings.dataset,
            split_name,
            weights=settings.weights,
            batch_size=batch_size,
            on_progress=progress,
        )
        progress.close()
    else:
        report = evaluate_cache(exported, open_cache(settings.cache_dir), split_name)
    for path in write_report(report, out):
        click.echo(str(path))
    _echo_summary(report)


def _echo_summary(report: dict[str, object]) -> None:
    heads: dict[str, dict[str, float]] = report["heads"]  # type: ignore[assignment]
    figures = ", ".join(
        f"{head} accuracy {result['accuracy']:.1%} balanced {result['balanced_accuracy']:.1%}"
        for head, result in heads.items()
    )
    click.echo(f"{report['count']:,} images: {figures}", err=True)
