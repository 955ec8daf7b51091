"""The study database: open it, wait out a lost connection, read the workers' heartbeats.

Only ``search/`` talks to the database, and within it only this module knows Optuna's tables.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import sqlalchemy
import sqlalchemy.exc
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._rdb import models
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from search.errors import StudyError
from search.stopflag import StopFlag

RETRY_FOR = 600.0  # seconds a worker waits for a lost database before it gives up
_FIRST_DELAY = 0.2
_MAX_DELAY = 2.0  # short: a heartbeat waiting to retry is a heartbeat missed
_logger = logging.getLogger("hpo.storage")

P = ParamSpec("P")
R = TypeVar("R")


def render_url(url: str) -> str:
    """The storage URL as it may be shown: the password replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return "<not a database URL>"


def database_location(url: str) -> str:
    """Where the database lives, for messages: ``host:port`` or the SQLite file."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite file {parsed.database or ':memory:'}"
    default_port = {"postgresql": "5432", "mysql": "3306"}.get(parsed.get_backend_name(), "default port")
    return f"{parsed.host or 'localhost'}:{parsed.port or default_port}"


def is_connection_error(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) says the database could not be reached."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            return True
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _first_line(error: BaseException) -> str:
    """The driver's own first line (Optuna wraps it in a generic "error during the commit")."""
    seen: BaseException | None = error
    while seen is not None and not isinstance(seen, sqlalchemy.exc.DBAPIError):
        seen = seen.__cause__ or seen.__context__
    cause = (
        seen.orig if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.orig is not None else seen or error
    )
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__


def _retrying(method: Callable[P, R]) -> Callable[P, R]:
    """Repeat ``method`` with backoff while the database is unreachable, up to ``retry_for`` seconds."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        storage = args[0]
        assert isinstance(storage, ResilientStorage)
        delay, started = _FIRST_DELAY, time.monotonic()
        while True:
            try:
                return method(*args, **kwargs)
            except Exception as error:
                if not is_connection_error(error):
                    raise
                if time.monotonic() - started > storage.retry_for:
                    raise StudyError(
                        f"lost the study database at {database_location(storage.url)} and it did not "
                        f"come back within {storage.retry_for:.0f} s ({_first_line(error)}); "
                        "check the database server, then start the workers again."
                    ) from error
                _logger.warning(
                    "study database at %s unreachable (%s); retrying in %.1f s",
                    database_location(storage.url),
                    _first_line(error),
                    delay,
                )
                time.sleep(delay)
                delay = min(2 * delay, _MAX_DELAY)

    return call


class ResilientStorage(RDBStorage):
    """An ``RDBStorage`` whose calls wait out a lost connection instead of failing the worker.

    Optuna's cache layer calls some private methods of the backend, so those are wrapped too. A result
    whose ``tell`` meets a restarting database is therefore written once the database is back.
    """

    retry_for: float = RETRY_FOR

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        # Optuna never finds a trial stale that has no heartbeat row yet: a worker killed while sampling
        # (after the trial was created, before its first heartbeat) would leave it RUNNING forever.
        stale = super()._get_stale_trial_ids(study_id)
        if self.heartbeat_interval is None:
            return stale
        grace = self.grace_period or 2 * self.heartbeat_interval
        oldest_start = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=grace)
        trial, beat = models.TrialModel, models.TrialHeartbeatModel
        query = (
            sqlalchemy.select(trial.trial_id)
            .outerjoin(beat, beat.trial_id == trial.trial_id)
            .where(trial.study_id == study_id, trial.state == TrialState.RUNNING)
            .where(beat.trial_id.is_(None), trial._datetime_start_utc < oldest_start)
        )
        with self.engine.connect() as connection:
            return stale + [row[0] for row in connection.execute(query)]

    def heartbeat_ages(self, study_id: int) -> dict[int, float | None]:
        """Seconds since the last heartbeat of each RUNNING trial (by trial number; None = none yet)."""
        trial, beat = models.TrialModel, models.TrialHeartbeatModel
        query = (
            sqlalchemy.select(trial.number, beat.heartbeat)
            .outerjoin(beat, beat.trial_id == trial.trial_id)
            .where(trial.study_id == study_id, trial.state == TrialState.RUNNING)
        )
        with self.engine.connect() as connection:
            now = connection.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar_one()
            rows = connection.execute(query).all()
        # As Optuna does: the database's clock for both, compared without time zones.
        now = now.replace(tzinfo=None)
        return {number: None if at is None else (now - at).total_seconds() for number, at in rows}


# Every RDBStorage method a worker's calls reach, Optuna's cache layer's private ones included (optuna is
# capped at the major version tests/search/test_storage.py checks these names against).
WRAPPED = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "_create_new_trial",
    "_set_trial_param",
    "get_trial_id_from_study_id_trial_number",
    "get_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "get_trial",
    "_get_trials",
    "_get_best_trial_id",
    "record_heartbeat",
    "_get_stale_trial_ids",
    "heartbeat_ages",
)
for _name in WRAPPED:
    setattr(ResilientStorage, _name, _retrying(getattr(ResilientStorage, _name)))


def open_storage(
    url: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    retry_for: float = RETRY_FOR,
    create: bool = True,
    wait: float = 0.0,
    stop: StopFlag | None = None,
) -> ResilientStorage:
    """Connect to the study database (creating Optuna's tables if needed, unless ``create`` is false).

    With ``heartbeat_interval`` set, running trials beat every that many seconds, and a trial silent for
    ``grace_period`` seconds is failed and queued again with the same parameters. ``create=False`` (the
    commands that only read or join a study) refuses a database with no studies instead of making one.
    ``wait`` is how long to wait for a server that cannot be reached yet (a worker started while the
    database restarts); a ``stop`` set meanwhile ends the wait with Stopped. Raises StudyError naming the
    host and port (never the password) otherwise.
    """
    deadline, delay, warned = time.monotonic() + wait, _FIRST_DELAY, False
    while True:
        try:
            storage = _connect(url, heartbeat_interval, grace_period, create=create)
            break
        except sqlalchemy.exc.SQLAlchemyError as error:
            remaining = deadline - time.monotonic()
            if not _worth_waiting(url, error) or remaining <= 0:
                raise _unusable(url, error, wait) from None
            if not warned:
                _logger.warning(
                    "study database at %s unreachable (%s); waiting up to %.0f s for it",
                    database_location(url),
                    _first_line(error),
                    wait,
                )
                warned = True
            if stop is None:
                time.sleep(min(delay, remaining))
            else:
                stop.sleep(min(delay, remaining))
            delay = min(2 * delay, _MAX_DELAY)
    storage.retry_for = retry_for
    return storage


def _connect(
    url: str, heartbeat_interval: int | None, grace_period: int | None, *, create: bool
) -> ResilientStorage:
    # SQLite is one file on one machine: no connection pool to keep alive.
    engine_kwargs: dict[str, Any] = {} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        if not create:
            _require_studies(url)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            retry_stale = RetryHeartbeatStaleTrialCallback() if heartbeat_interval else None
            return ResilientStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=retry_stale,
            )
    except (sqlalchemy.exc.ArgumentError, ImportError):
        # The URL itself is not echoed: it may carry a password.
        raise StudyError(
            "the storage URL (HPO_STORAGE / --storage) is not a database URL face-hpo can use; use "
            "postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB or sqlite:///PATH."
        ) from None


def _require_studies(url: str) -> None:
    """Refuse a database that holds no studies, without creating anything (RDBStorage creates its tables)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        raise StudyError(
            f"no study database at {database_location(url)}; create a study with `hpo study create`, or "
            "point --storage (HPO_STORAGE) or --workdir at the database that holds it."
        )
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            found = sqlalchemy.inspect(connection).has_table(models.StudyModel.__tablename__)
    finally:
        engine.dispose()
    if not found:
        raise StudyError(
            f"the database at {database_location(url)} ({render_url(url)}) holds no studies (no Optuna "
            "tables); create one with `hpo study create`, or check --storage (HPO_STORAGE)."
        )


# A server that answers but refuses: waiting for it changes nothing.
_REFUSALS = ("authentication failed", "does not exist", "no password supplied")


def _worth_waiting(url: str, error: BaseException) -> bool:
    if url.startswith("sqlite") or not is_connection_error(error):
        return False
    return not any(phrase in _first_line(error) for phrase in _REFUSALS)


def _unusable(url: str, error: BaseException, waited: float) -> StudyError:
    if url.startswith("sqlite"):
        folder = Path(make_url(url).database or "").parent
        why = _first_line(error) if folder.is_dir() else f"directory {folder} does not exist"
        return StudyError(
            f"cannot open the study database, {database_location(url)}: {why}; check --storage "
            "(HPO_STORAGE) or --workdir."
        )
    within = f" within {waited:.0f} s" if waited and _worth_waiting(url, error) else ""
    return StudyError(
        f"cannot reach the study database at {database_location(url)} ({render_url(url)}){within}: "
        f"{_first_line(error)}; check that the server runs and the URL (HPO_STORAGE / --storage)."
    )
