"""Fixtures shared across the test packages: fresh PostgreSQL databases, and exports on the random base.

Tests run with ``--import-mode=importlib``, so test modules cannot import each other or a helper module;
what they share is offered here as fixtures (factories where a test passes arguments).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg2
import pytest

if TYPE_CHECKING:
    import keras

    from model.head import HeadConfig

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"


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
    from model.vggface import build_base, resolve_weights

    model = join_model(build_base(resolve_weights("random:0")), head)
    save_model(model, out)
    card = model_card(
        model,
        kind="keras",
        base=resolve_base("vggface", "random:0").description,
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
