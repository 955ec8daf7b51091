"""`hpo worker`: run trials of a study until its budget is met, one process per GPU slot."""

from __future__ import annotations

import sys

import click

from search.cli.options import (
    artifacts_option,
    cache_option,
    pass_settings,
    storage_option,
    study_option,
    workdir_option,
)
from search.settings import Settings
from search.stopflag import StopFlag, Stopped
from search.tfquiet import import_tensorflow_quietly


@click.command("worker")
@storage_option()
@study_option()
@cache_option("The embedding cache the study was created with.")
@artifacts_option("Where the heads of best trials are stored; shared by all workers.")
@workdir_option()
@click.option(
    "--gpus",
    default=None,
    help="all (every GPU nvidia-smi lists; CPU if none), a list such as 0,1, or none (CPU). [default: all]",
)
@click.option(
    "--per-gpu",
    type=int,
    default=1,
    show_default=True,
    help="Worker processes per GPU (with --gpus none: CPU processes).",
)
@click.option("--n-workers", type=int, default=None, help="Number of CPU worker processes (implies no GPU).")
@click.option(
    "--first-index",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Index of the first worker here; give each machine its own range so seeds differ.",
)
@pass_settings
def worker(
    settings: Settings,
    gpus: str | None,
    per_gpu: int,
    n_workers: int | None,
    first_index: int,
) -> None:
    """Run trials of the study until its budget is met across all workers, then exit 0.

    Each worker process loads the cache once, then trains one suggested head per trial. SIGTERM or
    Ctrl-C ends the current trial (it is failed and queued again) and exits 0. More machines join by
    running workers with the same --storage and a shared --artifacts directory.

    \b
    Example:  hpo worker --storage postgresql+psycopg2://hpo:PW@db:5432/hpo --gpus all --per-gpu 2
    """
    stop = StopFlag()
    stop.install()  # first: a stop while TensorFlow loads or the database is awaited ends this cleanly
    import_tensorflow_quietly()
    from search.launcher import describe_slots, launch, plan_slots
    from search.worker import WorkerSpec, prepare

    slots = plan_slots(gpus or "all", per_gpu=per_gpu, n_workers=n_workers)
    spec = WorkerSpec.from_settings(settings)
    try:
        prepare(spec, stop=stop)  # a bad study, cache or artifact store: one line here, not one per worker
    except Stopped:
        click.echo("hpo worker: stopped while waiting for the study database; no trial ran", err=True)
        return
    click.echo(f"hpo worker: {describe_slots(slots)}", err=True)
    code = launch(spec, slots, first_index=first_index, stop=stop)
    if code:
        sys.exit(code)
