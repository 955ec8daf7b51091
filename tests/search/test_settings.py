from __future__ import annotations

from pathlib import Path

import pytest

from data.errors import ConfigError
from search.settings import Settings, resolve_settings


def test_resolve_settings_defaults_live_in_workdir() -> None:
    settings = resolve_settings({}, {})
    assert settings == Settings()
    assert settings.weights is None  # each base has its own default
    assert settings.cache_dir == Path("work/cache")
    assert settings.artifact_dir == Path("work/artifacts")
    assert settings.storage_url == f"sqlite:///{Path('work/study.db').resolve()}"


def test_resolve_settings_environment_overrides_defaults() -> None:
    environ = {"HPO_WORKDIR": "/tmp/w", "HPO_STUDY": "s1", "HPO_WEIGHTS": "random:3", "PATH": "/bin"}
    settings = resolve_settings({}, environ)
    assert settings.workdir == Path("/tmp/w")
    assert settings.cache_dir == Path("/tmp/w/cache")
    assert settings.study == "s1"
    assert settings.weights == "random:3"


def test_resolve_settings_flags_override_environment() -> None:
    settings = resolve_settings(
        {"study": "from-flag", "cache": "/c", "storage": None},
        {"HPO_STUDY": "from-env", "HPO_STORAGE": "postgresql+psycopg2://u@h/db"},
    )
    assert settings.study == "from-flag"
    assert settings.cache_dir == Path("/c")
    assert settings.storage_url == "postgresql+psycopg2://u@h/db"


def test_resolve_settings_empty_environment_value_is_ignored() -> None:
    assert resolve_settings({}, {"HPO_STUDY": ""}).study == "face-hpo"


def test_resolve_settings_unknown_environment_variable_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown environment variable HPO_STUDDY; face-hpo reads only"):
        resolve_settings({}, {"HPO_STUDDY": "x"})


def test_resolve_settings_unknown_flag_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting 'colour'"):
        resolve_settings({"colour": "blue"}, {})
