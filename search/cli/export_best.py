"""`hpo export-best`: the study's winning head on the cache's base, as a servable model with its report."""

from __future__ import annotations

from pathlib import Path

import click

from search.cli.options import (
    artifacts_option,
    cache_option,
    pass_settings,
    storage_option,
    study_option,
    weights_option,
    workdir_option,
)
from search.cli.output import step_printer
from search.settings import Settings
from search.tfquiet import import_tensorflow_quietly


@click.command("export-best")
@storage_option()
@study_option()
@cache_option("The embedding cache the study was created with.")
@weights_option(
    "The base weights the cache was embedded with (vggface: file, 'vggface' or random:SEED; "
    "dlib-resnet: 'dlib' or a directory). Not needed when the cache's manifest finds them: random:SEED "
    "as recorded, or the file embedded from, at its recorded path, while its sha256 matches."
)
@artifacts_option("Where the workers stored the heads of best trials.")
@workdir_option()
@click.option("--out", type=click.Path(path_type=Path), required=True, help="New directory for the export.")
@click.option(
    "--trial",
    type=click.IntRange(min=0),
    default=None,
    help="Export this trial instead of the best (required for a Pareto study).",
)
@click.option(
    "--retrain",
    is_flag=True,
    help="Train the trial's head again from its parameters and seed instead of loading its stored head.",
)
@click.option(
    "--ensemble",
    type=click.IntRange(min=1),
    default=None,
    help="Export the average of the stored heads that greedy selection picks in K rounds (with "
    "replacement, scored by the study's objective on validation) instead of one trial's head.",
)
@pass_settings
def export_best(
    settings: Settings, out: Path, trial: int | None, retrain: bool, ensemble: int | None
) -> None:
    """Export the best trial's head with the cache's base, its model card and its test report.

    \b
    Writes into --out, for a Keras base (vggface), one joined model:
      model.keras        Keras 3 model: uint8 image (N, 224, 224, 3) -> age, race, gender
      saved_model/       TensorFlow SavedModel: "serving_default" takes uint8 images,
                         "serve_bytes" encoded JPEG/PNG files (decoded as the cache was)
    for the dlib-resnet base, the head alone (card kind "head+predictor"; hpo predict runs the base):
      head.keras         Keras 3 model: (N, 128) embedding -> age, race, gender
    and either way:
      report/            report.json, report.md, confusion_<head>.png on the cache's test split
      model_card.json    kind, base, vocabularies, preprocessing, decoder, head, class weights,
                         compute dtypes, study and trial, metrics

    \b
    Example:  hpo export-best --storage postgresql+psycopg2://hpo:PW@db:5432/hpo --out work/export
    """
    import_tensorflow_quietly()  # its start-up notices would bury the progress lines and one-line errors
    from search.export_best import ParetoTrialRequired
    from search.export_best import export_best as run_export

    try:
        written = run_export(
            settings,
            out,
            trial=trial,
            retrain=retrain,
            ensemble=ensemble,
            on_step=step_printer("export-best"),
        )
    except ParetoTrialRequired as error:
        click.echo("Pareto front (trial: validation balanced accuracy of age, race, gender):")
        for front in error.front:
            click.echo(f"  {front.number}: " + ", ".join(f"{value:.4f}" for value in front.values))
        raise
    click.echo(str(written))
