"""The `hpo` command line: one click group of thin commands over the library.

The library raises :class:`HpoError`; here it becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys

import click

from data.errors import HpoError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="face-hpo")
def cli() -> None:
    """face-hpo: search a three-output face-attribute head over a frozen face base (VGG-Face or dlib ResNet).

    \b
    The flow:  hpo embed  ->  hpo study create  ->  hpo worker (x N)  ->  hpo export-best
    Settings come from flags, then HPO_* environment variables, then defaults (./work/).
    """


def _register_commands() -> None:
    # Imported here, not at module top, so `hpo --help` and a command's own import stay light:
    # each command imports TensorFlow or Optuna only inside its function.
    from search.commands_demo import demo
    from search.commands_embed import embed
    from search.commands_evaluate import evaluate
    from search.commands_export import export_best
    from search.commands_predict import predict
    from search.commands_status import status
    from search.commands_study import study
    from search.commands_worker import worker

    for command in (embed, study, worker, status, export_best, evaluate, predict, demo):
        cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, turning user errors into one line and exit code 2."""
    _register_commands()
    try:
        code = cli.main(args=argv, prog_name="hpo", standalone_mode=False)
    except HpoError as error:
        click.echo(f"hpo: error: {error}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("hpo: aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(2)
    if isinstance(code, int) and code != 0:
        sys.exit(code)
