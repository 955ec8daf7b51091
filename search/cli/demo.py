"""`hpo demo`: the whole flow on this machine in a few minutes, with nothing but a checkout."""

from __future__ import annotations

import sys

import click

from model.bases import BASE_NAMES
from search import demo as flow
from search.cli.options import dataset_option, pass_settings, weights_option, workdir_option
from search.cli.output import echo_err
from search.settings import Settings

DEFAULTS = flow.DemoOptions()


@click.command("demo")
@workdir_option("Work directory; the demo writes only into its demo/ folder.")
@dataset_option(default="../shared/fairface if present, else the checkout's tests/fixtures/fairface")
@click.option("--base", type=click.Choice(BASE_NAMES), default=DEFAULTS.base, show_default=True,
              help="The frozen base; vggface needs its weights file (random:SEED: tests).")  # fmt: skip
@weights_option("The base's weights (dlib-resnet: 'dlib'; vggface: a file or random:SEED).")
@click.option("--limit", type=click.IntRange(min=1), default=DEFAULTS.limit, show_default=True,
              help="Rows of each split to embed: train, val (searched on), test (reported).")  # fmt: skip
@click.option("--augment-views", type=click.IntRange(min=0), default=DEFAULTS.augment_views,
              show_default=True, help="Augmented embeddings stored per train image.")  # fmt: skip
@click.option("--budget", type=click.IntRange(min=1), default=DEFAULTS.budget, show_default=True,
              help="Trials to run, across the workers; trial 0 is the paper's Table II head.")  # fmt: skip
@click.option("--epochs", type=click.IntRange(min=1), default=DEFAULTS.epochs, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=DEFAULTS.workers, show_default=True,
              help="Worker processes.")  # fmt: skip
@click.option("--port", type=click.IntRange(min=1, max=65535), default=DEFAULTS.port, show_default=True,
              help="The dashboard's port on 127.0.0.1; checked free first.")  # fmt: skip
@click.option("--dashboard", is_flag=True,
              help="After the flow, serve optuna-dashboard on the study until Ctrl-C.")  # fmt: skip
@pass_settings
def demo(settings: Settings, base: str, limit: int, augment_views: int, budget: int, epochs: int,
         workers: int, port: int, dashboard: bool) -> None:  # fmt: skip
    """Run the whole flow on SQLite with dlib's face network: embed, study, workers, exports, reports.

    Uses <workdir>/demo and the real FairFace images of ../shared/fairface when present (the first
    --limit rows of each split), else the checkout's 56 fixture images. Ends with a table on the
    held-out test split: the paper's Table II head (trial 0) and the best searched head, both trained
    in this study, beside the paper's published figures. A rerun reuses the embedding cache and starts
    the demo study afresh.

    \b
    Examples:  hpo demo --dashboard
               hpo demo --base vggface --weights random:0 --limit 8   (a random base: for tests)
    """
    options = flow.DemoOptions(
        base=base,
        weights=settings.weights,
        limit=limit,
        augment_views=augment_views,
        budget=budget,
        epochs=epochs,
        workers=workers,
        port=port,
        dashboard=dashboard,
    )
    try:
        flow.run_demo(settings.workdir, settings.dataset, options, click.echo, echo_err)
    except flow.StepFailed as failed:
        echo_err(f"hpo demo: {failed}")
        sys.exit(failed.code)
