"""Fixtures shared across the test packages: fresh PostgreSQL databases, `hpo` run in a subprocess or in
this process, and exports on the random base. Plain helpers (paths, file makers) live in
``tests/helpers/support.py``."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg2
import pytest
from support import HPO, Hpo, RunHpo, hpo_env, write_tiny_cache

from search.cli import main

if TYPE_CHECKING:
    import keras

    from model.head import HeadConfig

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
POSTGRES_FIXTURES = {"fresh_database", "pg_url"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses a PostgreSQL fixture is marked ``postgres`` (so ``-m "not postgres"`` works)."""
    for item in items:
        if POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


def _admin() -> psycopg2.extensions.connection:
    connection = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    connection.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    return connection


@contextlib.contextmanager
def _database(prefix: str) -> Iterator[str]:
    name = f"{prefix}_{secrets.token_hex(4)}"
    try:
        connection = _admin()
    except psycopg2.OperationalError as error:
        pytest.skip(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} as {PG_USER}: {error}")
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    connection.close()
    yield f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    connection = _admin()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    connection.close()


@pytest.fixture(scope="session")
def fresh_database() -> Callable[[str], AbstractContextManager[str]]:
    """``with fresh_database(prefix) as url:`` a new, empty database ``<prefix>_<random>``, dropped after.

    Skips the test when PostgreSQL is not reachable.
    """
    return _database


def _save_random_base_export(
    head: keras.Model,
    config: HeadConfig,
    out: Path,
    *,
    cache_fingerprint: Mapping[str, object],
    study: Mapping[str, object],
    validation_metrics: Mapping[str, object] | None = None,
) -> Path:
    from model.bases import resolve_base
    from model.export import join_model, model_card, save_model, write_card

    base = resolve_base("vggface", "random:0")
    model = join_model(base.build_model(), head)
    save_model(model, out)
    card = model_card(
        model,
        kind="keras",
        base=base.description,
        head_config=config,
        cache_fingerprint=cache_fingerprint,
        study=study,
        validation_metrics=validation_metrics if validation_metrics is not None else {},
        code_version={"package": "test"},
    )
    write_card(out, card)
    return out


@pytest.fixture(scope="session")
def save_random_base_export() -> Callable[..., Path]:
    """``save_random_base_export(head, config, out, *, cache_fingerprint, study, validation_metrics=None)``:
    ``head`` joined to the random:0 VGG-Face base, saved into ``out`` with its model card; returns ``out``."""
    return _save_random_base_export


@pytest.fixture(scope="session", name="hpo_env")
def hpo_env_fixture() -> dict[str, str]:
    """The environment for `hpo` subprocesses (``support.hpo_env``)."""
    return hpo_env()


@pytest.fixture(scope="session")
def hpo() -> Hpo:
    """`hpo(*args, timeout=120)`: run the real `hpo` executable to completion in a subprocess."""

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(HPO), *args], capture_output=True, text=True, timeout=timeout, env=hpo_env(), check=False
        )

    return run


@pytest.fixture
def run_hpo(capsys: pytest.CaptureFixture[str]) -> RunHpo:
    """`run_hpo(*args)`: run the `hpo` entry point in this process, to (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        try:
            main(list(args))
            code = 0
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 96 + 48 row cache of 16-d embeddings (two training views)."""
    return write_tiny_cache(tmp_path_factory.mktemp("cache"), seed=0)
