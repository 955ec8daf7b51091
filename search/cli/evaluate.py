"""`hpo evaluate`: the report of an exported model, from images or from a matching embedding cache."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from data.errors import ConfigError
from data.outdir import check_new_dir
from search.cli.options import (
    batch_size_option,
    cache_option,
    dataset_option,
    model_option,
    pass_settings,
    weights_option,
)
from search.cli.output import ProgressLine
from search.settings import Settings
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
@click.option(
    "--allow-partial",
    is_flag=True,
    help="With --dataset: evaluate even when under 99 % of the split's images are there (the report "
    "and stderr state the coverage either way; missing_images.txt lists the absent ones).",
)
@click.pass_context
@pass_settings
def evaluate(
    ctx: click.Context,
    settings: Settings,
    model_dir: Path,
    split_name: str,
    out: Path,
    batch_size: int,
    allow_partial: bool,
) -> None:
    """Write report.json, report.md and confusion_<head>.png for an exported model on one split.

    Per head: precision, recall, F1 and support per class, accuracy, balanced accuracy, the
    row-normalised confusion matrix with counts, and the paper's Tables III–V beside it. Give --dataset
    (images) or --cache (embeddings); with neither, HPO_DATASET is used if set, else the cache. A
    dataset holding under 99 % of the split's images is refused (exit 2) unless --allow-partial.

    \b
    Example:  hpo evaluate --model work/export --dataset ../fairface --out work/eval
    """
    import_tensorflow_quietly()  # its start-up notices would bury the one-line errors and the summary
    from model.evaluate import evaluate_export
    from model.report import Coverage, write_report

    given = {name: ctx.params[name] is not None for name in ("dataset", "cache")}
    if all(given.values()):
        raise ConfigError(
            "give one of --dataset and --cache, not both: they are two ways to the same report."
        )
    check_new_dir(out, flag="--out")  # before the evaluation, which can take an hour on images
    # A --cache flag wins over HPO_DATASET; otherwise the dataset (flag or environment) wins.
    dataset = None if given["cache"] else settings.dataset
    progress = ProgressLine(sys.stderr, label="evaluate")
    report = evaluate_export(
        model_dir,
        split_name,
        dataset=dataset,
        cache_dir=settings.cache_dir,
        weights=settings.weights,
        batch_size=batch_size,
        on_progress=progress,
        allow_partial=allow_partial,
    )
    progress.close()
    for path in write_report(report, out):
        click.echo(str(path))
    coverage: dict[str, object] | None = report.get("coverage")  # type: ignore[assignment]
    if coverage is not None:
        click.echo(f"coverage: {Coverage.from_dict(coverage).sentence()}", err=True)
    _echo_summary(report)


def _echo_summary(report: dict[str, object]) -> None:
    heads: dict[str, dict[str, float]] = report["heads"]  # type: ignore[assignment]
    figures = ", ".join(
        f"{head} accuracy {result['accuracy']:.1%} balanced {result['balanced_accuracy']:.1%}"
        for head, result in heads.items()
    )
    click.echo(f"{report['count']:,} images: {figures}", err=True)
