"""Fixtures of the search tests: a fresh PostgreSQL database per test run, a tiny cache, a tiny space."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from support import PAPER_PARAMS, TINY_SPACE, write_tiny_cache


@pytest.fixture(scope="session")
def pg_url(fresh_database: Callable[[str], AbstractContextManager[str]]) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test run, dropped at the end."""
    with fresh_database("hpo_test") as url:
        yield url


@pytest.fixture(scope="session")
def other_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache like `tiny_cache` but with another fingerprint."""
    return write_tiny_cache(tmp_path_factory.mktemp("other-cache"), seed=1)


@pytest.fixture(scope="session")
def tiny_space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny space file."""
    path = tmp_path_factory.mktemp("space") / "tiny.toml"
    path.write_text(TINY_SPACE, encoding="utf-8")
    return path


@pytest.fixture
def study_name(request: pytest.FixtureRequest) -> str:
    """A study name unique to the test."""
    return f"{request.node.name[:40]}-{secrets.token_hex(3)}"


@pytest.fixture(scope="session")
def paper_params() -> dict[str, object]:
    """The Optuna params of the tiny space's "paper" point."""
    return dict(PAPER_PARAMS)
