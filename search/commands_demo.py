"""`hpo demo`: the whole flow on this machine in a few minutes, with nothing but a checkout."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from search import demo as flow
from search.options import dataset_option, workdir_option
from search.settings import resolve_settings

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
def demo(
    workdir: Path | None, dataset: Path | None, limit: int, budget: int, epochs: int, workers: int, port: int
) -> None:
    """Run the whole flow on SQLite with a random base: embed, study, workers, export, report.

    Uses <workdir>/demo, the real FairFace images of ../shared/fairface when present (the first --limit
    rows of each split), else the checkout's fixture images. Prints where each output went and the
    command that opens optuna-dashboard on the study. A rerun reuses the embedding cache and starts
    the demo study afresh. Real runs need the VGG-Face weights (hpo embed --weights PATH).

    \b
    Example:  hpo demo --port 8081
    """
    settings = resolve_settings({"workdir": workdir, "dataset": dataset}, os.environ)
    options = flow.DemoOptions(limit=limit, budget=budget, epochs=epochs, workers=workers, port=port)
    flow.check_port(port)
    flow.check_writable(settings.workdir / "demo")
    chosen = flow.choose_dataset(settings.dataset)
    layout = flow.layout_for(settings.workdir / "demo", chosen.root, limit)
    click.echo(f"hpo demo: dataset: {chosen.description}, at most {limit} rows per split")
    click.echo(flow.WEIGHTS_NOTE)
    removed = flow.reset_outputs(layout)
    if removed:
        click.echo(
            f"hpo demo: starting afresh: removed the last run's {', '.join(removed)}; the cache is kept"
        )
    try:
        took = flow.run_steps(flow.demo_steps(layout, chosen.root, options), click.echo, _echo_err)
    except flow.StepFailed as failed:
        _echo_err(f"hpo demo: {failed}")
        sys.exit(failed.code)
    click.echo(f"\nhpo demo: finished in {took} on {chosen.description}")
    for line in flow.outputs_summary(layout, options):
        click.echo(line)
    click.echo(flow.WEIGHTS_NOTE)


def _echo_err(line: str) -> None:
    click.echo(line, err=True)
