"""The `hpo` command line: one click group of thin commands over the library.

The group snapshots the environment once; each command's settings flags, then that environment, then
the defaults become one frozen :class:`~search.settings.Settings` (see ``options.pass_settings``). The
library raises :class:`HpoError`; here it becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import os
import sys

import click

from data.errors import HpoError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="face-hpo")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """face-hpo: search a three-output face-attribute head over a frozen face base (VGG-Face or dlib ResNet).

    \b
    The flow:  hpo embed  ->  hpo study create  ->  hpo worker (x N)  ->  hpo export-best
    Settings come from flags, then HPO_* environment variables, then defaults (./work/).
    """
    ctx.obj = dict(os.environ)


def _register_commands() -> None:
    # Imported here, not at module top, so `hpo --help` and a command's own import stay light:
    # each command imports TensorFlow or Optuna only inside its function.
    from search.cli.demo import demo
    from search.cli.embed import embed
    from search.cli.evaluate import evaluate
    from search.cli.export_best import export_best
    from search.cli.predict import predict
    from search.cli.status import status
    from search.cli.study import study
    from search.cli.worker import worker

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
    except click.UsageError as error:
        # Click's own form is four lines (usage, hint, blank, error); one line says the same.
        where = error.ctx.command_path if error.ctx is not None else "hpo"
        message = error.format_message()
        end = "" if message.endswith((".", "?")) else "."
        click.echo(f"hpo: error: {message}{end} See `{where} --help`.", err=True)
        sys.exit(2)
    except click.ClickException as error:
        click.echo(f"hpo: error: {error.format_message()}", err=True)
        sys.exit(2)
    if isinstance(code, int) and code != 0:
        sys.exit(code)
