"""`hpo status`: where a study stands -- trials by state, the best head so far, live workers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from search.options import storage_option, study_option, workdir_option
from search.settings import resolve_settings


@click.command("status")
@storage_option()
@study_option()
@workdir_option()
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
def status(storage: str | None, study_name: str | None, workdir: Path | None, as_json: bool) -> None:
    """Show a study: trials by state, progress against the budget, trials per hour, the best trial
    with its per-head metrics and parameters, and the workers with a fresh heartbeat.

    \b
    Example:  hpo status --storage postgresql+psycopg2://hpo:PW@db:5432/hpo
    """
    from search.status import render_status, study_status
    from search.storage import open_storage
    from search.study import open_study, read_record

    settings = resolve_settings({"storage": storage, "study": study_name, "workdir": workdir}, os.environ)
    opened = open_storage(settings.storage_url)
    study = open_study(opened, settings.study)
    report = study_status(study, opened, read_record(study))
    click.echo(json.dumps(report, indent=2) if as_json else render_status(report))
