"""`hpo status`: where a study stands -- trials by state, the best head so far, live workers."""

from __future__ import annotations

import json

import click

from search.cli.options import pass_settings, storage_option, study_option, workdir_option
from search.settings import Settings


@click.command("status")
@storage_option()
@study_option()
@workdir_option()
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
@pass_settings
def status(settings: Settings, as_json: bool) -> None:
    """Show a study: trials by state, progress against the budget, trials per hour, the best trial
    with its per-head metrics and parameters, and the workers with a fresh heartbeat.

    \b
    Example:  hpo status --storage postgresql+psycopg2://hpo:PW@db:5432/hpo
    """
    from search.status import render_status, status_of

    report = status_of(settings)
    click.echo(json.dumps(report, indent=2) if as_json else render_status(report))
