"""`hpo demo`: the whole flow on this machine in a few minutes, with nothing but a checkout."""

from __future__ import annotations

import sys

import click

from search import demo as flow
from search.cli.options import dataset_option, pass_settings, workdir_option
from search.cli.output import echo_err
from search.settings import Settings

DEFAULTS = flow.DemoOptions()


@click.command("demo")
@workdir_option("Work directory; the demo writes only into its demo/ folder.")
@dataset_option(default="../shared/fairface if present, else the checkout's tests/fixtures/fairface")
@click.option("--limit", type=click.IntRange(min=1), default=DEFAULTS.limit, show_default=True,
              help="Rows of each split to embed.")  # fmt: skip
@click.option("--budget", type=click.IntRange(min=1), default=DEFAULTS.budget, show_default=True,
              help="Trials to run, across the workers.")  # fmt: skip
@click.option("--epochs", type=click.IntRange(min=1), default=DEFAULTS.epochs, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=DEFAULTS.workers, show_default=True,
              help="Worker processes.")  # fmt: skip
@click.option("--port", type=click.IntRange(min=1, max=65535), default=DEFAULTS.port, show_default=True,
              help="Port of the dashboard command printed at the end; checked free first.")  # fmt: skip
@pass_settings
def demo(settings: Settings, limit: int, budget: int, epochs: int, workers: int, port: int) -> None:
    """Run the whole flow on SQLite with a random base: embed, study, workers, export, report.

    Uses <workdir>/demo, the real FairFace images of ../shared/fairface when present (the first --limit
    rows of each split), else the checkout's fixture images. Prints where each output went and the
    command that opens optuna-dashboard on the study. A rerun reuses the embedding cache and starts
    the demo study afresh. Real runs need the VGG-Face weights (hpo embed --weights PATH).

    \b
    Example:  hpo demo --port 8081
    """
    options = flow.DemoOptions(limit=limit, budget=budget, epochs=epochs, workers=workers, port=port)
    try:
        flow.run_demo(settings.workdir, settings.dataset, options, click.echo, echo_err)
    except flow.StepFailed as failed:
        echo_err(f"hpo demo: {failed}")
        sys.exit(failed.code)
