"""The options several commands share, declared once, and the one way a command gets its settings.

The settings flags (``--workdir`` ... ``--artifacts``) all default to None -- "not given", so that
:func:`search.settings.resolve_settings` falls back to the environment, then to the defaults -- and end
their help with the same ``[env: HPO_X; default: ...]`` note. A command passes its own first sentence
where the option means something particular to it. :func:`pass_settings` turns a command's settings
flags into its one ``settings`` argument.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from search.settings import ENVIRONMENT, Settings, resolve_settings

F = TypeVar("F", bound=Callable[..., object])

_VARIABLE = {field: variable for variable, field in ENVIRONMENT.items()}
_PATH = click.Path(path_type=Path)


def _setting(
    field: str, help: str, *, default: str | None, dest: str | None = None, is_path: bool = True
) -> Callable[[F], F]:
    note = f"env: {_VARIABLE[field]}" + (f"; default: {default}" if default is not None else "")
    declarations = [f"--{field}", *([dest] if dest is not None else [])]
    return click.option(*declarations, type=_PATH if is_path else None, default=None, help=f"{help} [{note}]")


def workdir_option(help: str = "Work directory.") -> Callable[[F], F]:
    """``--workdir``: where the other settings default to."""
    return _setting("workdir", help, default=f"./{Settings().workdir}")


def dataset_option(help: str = "FairFace root.", *, default: str | None = None) -> Callable[[F], F]:
    """``--dataset``: a FairFace root (no default but the command's own, if it has one)."""
    return _setting("dataset", help, default=default)


def cache_option(help: str) -> Callable[[F], F]:
    """``--cache``: an embedding cache directory."""
    return _setting("cache", help, default="<workdir>/cache")


def weights_option(help: str) -> Callable[[F], F]:
    """``--weights``: the frozen base's weights, as the base reads them."""
    return _setting("weights", help, default="the base's default", is_path=False)


def storage_option() -> Callable[[F], F]:
    """``--storage``: the study database URL."""
    return _setting("storage", "Study database URL.", default="SQLite in the workdir", is_path=False)


def study_option() -> Callable[[F], F]:
    """``--study``, passed to the command as ``study_name``."""
    return _setting("study", "Study name.", default=Settings().study, dest="study_name", is_path=False)


def artifacts_option(help: str) -> Callable[[F], F]:
    """``--artifacts``: the directory of the best trials' stored heads."""
    return _setting("artifacts", help, default="<workdir>/artifacts")


def model_option() -> Callable[[F], F]:
    """``--model``, passed as ``model_dir``: the export a command reads."""
    return click.option(
        "--model",
        "model_dir",
        type=_PATH,
        required=True,
        help="Export directory written by `hpo export-best`.",
    )


def batch_size_option(help: str = "Images per batch.") -> Callable[[F], F]:
    """``--batch-size``: images decoded and run through the base at once."""
    return click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help=help)


# Command parameter -> settings field, for the settings flags above.
_SETTING_PARAMS = {
    "workdir": "workdir",
    "dataset": "dataset",
    "cache": "cache",
    "weights": "weights",
    "storage": "storage",
    "study_name": "study",
    "artifacts": "artifacts",
}


def pass_settings(command: F) -> F:
    """Replace a command's settings flags by one ``settings`` keyword: the flags, then the environment the
    group read (``ctx.obj``), then the defaults."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> object:
        environ = click.get_current_context().find_root().obj
        flags = {field: kwargs.pop(param) for param, field in _SETTING_PARAMS.items() if param in kwargs}
        settings = resolve_settings(flags, environ if environ is not None else os.environ)
        return command(*args, settings=settings, **kwargs)

    return wrapper  # type: ignore[return-value]
