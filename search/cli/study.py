"""`hpo study create` and `hpo study list`: make a study with its provenance; see which studies exist."""

from __future__ import annotations

from pathlib import Path

import click

from search.cli.options import cache_option, pass_settings, storage_option, study_option, workdir_option
from search.objectives import OBJECTIVES
from search.records import PRUNERS, SAMPLERS, StudySettings
from search.settings import Settings

DEFAULTS = StudySettings()


@click.group("study")
def study() -> None:
    """Create and list studies (the search's shared state, in the study database)."""


@study.command("create")
@storage_option()
@study_option()
@click.option(
    "--space",
    "space_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Search-space TOML file, or a packaged space: default (the paper's neighbourhood) or wide "
    "(normalisation, weight decay, label smoothing, batch norm, branches, loss weights, schedule, "
    "augmented views). [default: default]",
)
@cache_option("Embedding cache the study searches on.")
@workdir_option()
@click.option(
    "--budget",
    type=click.IntRange(min=1),
    default=DEFAULTS.budget,
    show_default=True,
    help="Trials to finish (COMPLETE + PRUNED), counted across all workers.",
)
@click.option(
    "--objective",
    type=click.Choice(list(OBJECTIVES)),
    default=DEFAULTS.objective,
    show_default=True,
    help="; ".join(f"{name}: {objective.help}" for name, objective in OBJECTIVES.items()) + ".",
)
@click.option("--sampler", type=click.Choice(SAMPLERS), default=DEFAULTS.sampler, show_default=True)
@click.option(
    "--pruner",
    type=click.Choice(PRUNERS),
    default=DEFAULTS.pruner,
    show_default=True,
    help="Stops poor epoch curves early (not used by --objective pareto).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=DEFAULTS.epochs, show_default=True)
@click.option(
    "--patience",
    type=click.IntRange(min=0),
    default=DEFAULTS.patience,
    show_default=True,
    help="Early-stopping patience in epochs; 0 = none.",
)
@click.option(
    "--seed",
    type=int,
    default=DEFAULTS.seed,
    show_default=True,
    help="Worker i samples with seed + i; trial n trains with seed + n.",
)
@click.option(
    "--heartbeat-interval",
    type=click.IntRange(min=1),
    default=DEFAULTS.heartbeat_interval,
    show_default=True,
    help="Seconds between a running trial's heartbeats.",
)
@click.option(
    "--grace-period",
    type=click.IntRange(min=2),
    default=DEFAULTS.grace_period,
    show_default=True,
    help="Seconds without a heartbeat after which a trial is failed and queued again.",
)
@click.option(
    "--max-gap",
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=None,
    help="Constraint on any objective: a trial counts only if, for every head, its best and worst group's "
    "validation balanced accuracy differ by at most this (e.g. 0.15).",
)
@click.option(
    "--keep-heads",
    type=click.IntRange(min=1),
    default=DEFAULTS.keep_heads,
    show_default=True,
    help="Heads the workers keep: those of this many best trials (what export-best --ensemble selects "
    "from); a head that falls out of them is deleted, so the artifact store stays this size.",
)
@pass_settings
def create(settings: Settings, space_file: Path | None, **options: object) -> None:
    """Create a study on the cache, with the paper's head queued as trial 0.

    Records the settings, the space (text and sha256), the cache fingerprint and the code version on
    the study. Running it again with the same arguments does nothing; with another space, cache or
    settings it is refused, naming each difference.

    \b
    Example:  hpo study create --storage postgresql+psycopg2://hpo:PW@db:5432/hpo --budget 300
    """
    from search.storage import render_url
    from search.study import create_from

    study_settings = StudySettings(**options)  # type: ignore[arg-type]
    created, is_new, space = create_from(settings, space_file, study_settings)
    where = render_url(settings.storage_url)
    if not is_new:
        click.echo(
            f"study {settings.study!r} already exists in {where} with this space, cache and settings; "
            "nothing to do."
        )
        return
    first = "trial 0 = the space's 'paper' point" if created.get_trials() else "no 'paper' point to queue"
    gap = "" if study_settings.max_gap is None else f", max per-group gap {study_settings.max_gap}"
    click.echo(
        f"created study {settings.study!r} in {where}: space {space.name!r} (sha256 {space.sha256[:12]}), "
        f"budget {study_settings.budget}, objective {study_settings.objective}, {study_settings.sampler} "
        f"sampler, {study_settings.pruner} pruner, {study_settings.epochs} epochs"
        f"{gap}; {first}."
    )


@study.command("list")
@storage_option()
@workdir_option()
@pass_settings
def list_studies(settings: Settings) -> None:
    """List the studies in the database: name, objective, progress against the budget.

    \b
    Example:  hpo study list --storage sqlite:///work/study.db
    """
    from search.status import study_summaries

    rows = study_summaries(settings.storage_url)
    if not rows:
        click.echo("no studies")
    for row in rows:
        click.echo(
            f"{row['study']}\t{row['objective']}\t{row['finished']}/{row['budget']} finished\t"
            f"{row['running']} running"
        )
