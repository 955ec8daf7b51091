from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest
from optuna.storages import RDBStorage

from search.errors import StudyError
from search.storage import (
    WRAPPED,
    ResilientStorage,
    database_location,
    is_connection_error,
    open_storage,
    render_url,
)


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


def test_read_only_open_of_an_empty_database_creates_nothing(
    fresh_database: Callable[[str], AbstractContextManager[str]],
) -> None:
    import sqlalchemy

    with fresh_database("hpo_empty") as url:
        with pytest.raises(StudyError, match=r"holds no studies \(no Optuna tables\); create one with"):
            open_storage(url, create=False)
        engine = sqlalchemy.create_engine(url)
        assert sqlalchemy.inspect(engine).get_table_names() == []
        engine.dispose()


def test_open_storage_waits_for_an_unreachable_server_then_names_it() -> None:
    started = time.monotonic()
    with pytest.raises(
        StudyError, match=r"^cannot reach the study database at 127\.0\.0\.1:1 .* within 2 s: "
    ):
        open_storage("postgresql+psycopg2://hpo:pw@127.0.0.1:1/hpo", wait=2)
    assert 1.5 <= time.monotonic() - started < 10
    with pytest.raises(
        StudyError, match=r"127\.0\.0\.1:1 \(postgresql\+psycopg2://hpo:\*\*\*@127\.0\.0\.1:1/hpo\): "
    ):
        open_storage("postgresql+psycopg2://hpo:pw@127.0.0.1:1/hpo")  # no wait: at once, no "within"
