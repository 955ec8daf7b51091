from __future__ import annotations

import inspect

import pytest
from optuna.storages import RDBStorage

from search.storage import WRAPPED, ResilientStorage, database_location, is_connection_error, render_url


@pytest.mark.parametrize("name", [name for name in WRAPPED if name != "heartbeat_ages"])
def test_wrapped_name_is_an_rdbstorage_method(name: str) -> None:
    # The wrapper names Optuna's methods (private ones too); an Optuna release that renames one would
    # leave that call unprotected against a lost database, so the pinned major is checked here.
    assert callable(getattr(RDBStorage, name, None)), f"optuna's RDBStorage has no method {name}"


def test_wrapped_methods_keep_their_signatures() -> None:
    for name in WRAPPED:
        wrapped = getattr(ResilientStorage, name)
        assert wrapped.__wrapped__ is not None
        assert inspect.signature(wrapped) == inspect.signature(wrapped.__wrapped__)


def test_render_url_hides_the_password() -> None:
    url = "postgresql+psycopg2://hpo:s3cret@db:5432/hpo"
    assert render_url(url) == "postgresql+psycopg2://hpo:***@db:5432/hpo"
    assert render_url("not a url") == "<not a database URL>"


def test_database_location_names_host_and_port_or_file() -> None:
    assert database_location("postgresql+psycopg2://u:p@db/hpo") == "db:5432"
    assert database_location("sqlite:////tmp/x.db") == "SQLite file /tmp/x.db"


def test_is_connection_error_follows_the_cause_chain() -> None:
    import sqlalchemy.exc

    lost = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))
    try:
        try:
            raise lost
        except sqlalchemy.exc.OperationalError as inner:
            raise RuntimeError("error during the commit") from inner
    except RuntimeError as outer:
        assert is_connection_error(outer)
    assert not is_connection_error(ValueError("no"))
