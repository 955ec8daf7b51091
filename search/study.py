"""A study and its provenance: create it once (with the paper's head as trial 0), open it, compare it.

Everything a worker needs to run the study lives on it as user attributes, so workers on any machine
run the same search: the settings, the space file's text and sha256, the cache fingerprint, the code
version. The sampler and pruner are not stored by Optuna; workers rebuild them from ``settings``.
"""

from __future__ import annotations

import json
import subprocess
import warnings
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning

from data.cache import Cache, fingerprint_differences
from data.errors import CacheError, ConfigError, StudyError
from data.labels import HEADS
from search.space import Space, parse_space
from search.storage import ResilientStorage, open_storage, render_url

OBJECTIVES = ("balanced_accuracy", "accuracy", "pareto")
SAMPLERS = ("tpe", "random")
PRUNERS = ("hyperband", "median", "none")
PAPER_POINT = "paper"
# Study user attributes written by `create_study`.
SETTINGS_ATTR, SPACE_ATTR, SPACE_SHA_ATTR = "settings", "space", "space_sha256"
CACHE_ATTR, CODE_ATTR, CREATED_ATTR = "cache_fingerprint", "code_version", "created_at"


@dataclass(frozen=True)
class StudySettings:
    """How a study searches; recorded on the study and read back by every worker."""

    budget: int = 200  # trials that finish (COMPLETE + PRUNED), counted across all workers
    objective: str = "balanced_accuracy"  # or accuracy, or pareto (age, race, gender; no pruning)
    sampler: str = "tpe"
    pruner: str = "hyperband"
    epochs: int = 30
    patience: int = 5  # early stopping on the objective; 0 = off
    seed: int = 0  # worker i samples with seed + i; trial n trains with seed + n
    heartbeat_interval: int = 10  # seconds between a running trial's heartbeats
    grace_period: int = 30  # seconds of silence after which a running trial is failed and queued again

    def __post_init__(self) -> None:
        for name, allowed in (("objective", OBJECTIVES), ("sampler", SAMPLERS), ("pruner", PRUNERS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        for name in ("budget", "epochs", "heartbeat_interval", "grace_period"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 0:
            raise ConfigError(
                f"patience must be an integer >= 0 (0 = no early stopping), got {self.patience!r}"
            )
        if self.grace_period <= self.heartbeat_interval:
            raise ConfigError(
                f"grace_period ({self.grace_period} s) must exceed heartbeat_interval "
                f"({self.heartbeat_interval} s), or live trials would be failed as stale"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudySettings:
        """Settings from `to_dict`'s form; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise StudyError(f"the study's settings have unknown key(s) {unknown}; upgrade face-hpo.")
        return cls(**data)


@dataclass(frozen=True)
class StudyRecord:
    """What a study was created with."""

    settings: StudySettings
    space: Space
    cache_fingerprint: dict[str, Any]
    code_version: dict[str, Any]


def code_version() -> dict[str, Any]:
    """The face-hpo package version and, when run from a git checkout, its commit and whether it is dirty."""
    try:
        package = metadata.version("face-hpo")
    except metadata.PackageNotFoundError:
        package = "unknown"
    version: dict[str, Any] = {"package": package, "git_commit": None, "git_dirty": None}
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return version
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return version
    if commit.returncode == 0:
        version["git_commit"] = commit.stdout.strip()
        version["git_dirty"] = bool(dirty.stdout.strip()) if dirty.returncode == 0 else None
    return version


def _directions(objective: str) -> list[optuna.study.StudyDirection]:
    return [optuna.study.StudyDirection.MAXIMIZE] * (3 if objective == "pareto" else 1)


def metric_names(objective: str) -> list[str]:
    """What each objective value is, as optuna-dashboard labels its axes (instead of "Objective 0")."""
    if objective == "pareto":
        return [f"{head} balanced accuracy (val)" for head in HEADS]
    return [f"mean {objective.replace('_', ' ')} (val)"]


def create_study(
    storage: ResilientStorage, name: str, *, space: Space, cache: Cache, settings: StudySettings
) -> tuple[optuna.Study, bool]:
    """Create study ``name``, or find it already created with the same space, cache and settings.

    Returns (study, created). A new study gets its provenance and, when the space has a ``paper``
    point, that head enqueued as trial 0 -- here only, never by workers. An existing study made with
    another space, cache or settings is refused with a StudyError listing each difference.
    """
    if name in _study_names(storage):
        study = open_study(storage, name)
        differences = compare_study(read_record(study), space=space, cache=cache, settings=settings)
        if differences:
            raise StudyError(
                f"study {name!r} already exists with other settings -- {'; '.join(differences)}. "
                "Choose another --study name, or run the existing study as it is."
            )
        return study, False
    study = optuna.create_study(storage=storage, study_name=name, directions=_directions(settings.objective))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # set_metric_names is experimental
        study.set_metric_names(metric_names(settings.objective))
    if PAPER_POINT in space.points:
        study.enqueue_trial(
            space.params_of(space.named_point(PAPER_POINT)), user_attrs={"point": PAPER_POINT}
        )
    attrs = {
        SETTINGS_ATTR: settings.to_dict(),
        SPACE_ATTR: space.text,
        SPACE_SHA_ATTR: space.sha256,
        CACHE_ATTR: cache.fingerprint,
        CODE_ATTR: code_version(),
    }
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    # Written last: a study whose creation was interrupted lacks it and is reported as such.
    study.set_user_attr(CREATED_ATTR, datetime.now(UTC).isoformat(timespec="seconds"))
    return study, True


def compare_study(record: StudyRecord, *, space: Space, cache: Cache, settings: StudySettings) -> list[str]:
    """Each way the study's record differs from this space, cache and settings, as readable phrases."""
    differences = []
    if record.space.sha256 != space.sha256:
        differences.append(
            f"space: the study has {record.space.name!r} (sha256 {record.space.sha256[:12]}), "
            f"this command gives {space.name!r} (sha256 {space.sha256[:12]})"
        )
    for key, had, given in fingerprint_differences(record.cache_fingerprint, cache.fingerprint, exact=True):
        differences.append(
            f"cache {key}: the study has {json.dumps(had)}, {cache.path} has {json.dumps(given)}"
        )
    had_settings, given_settings = record.settings.to_dict(), settings.to_dict()
    for key, had in had_settings.items():
        if had != given_settings[key]:
            differences.append(f"{key}: the study has {had!r}, this command gives {given_settings[key]!r}")
    return differences


def check_cache(study: optuna.Study, cache: Cache) -> None:
    """Refuse a cache whose fingerprint is not the one the study was created with."""
    recorded = study.user_attrs.get(CACHE_ATTR, {})
    differences = fingerprint_differences(cache.fingerprint, recorded, exact=True)
    if differences:
        listed = "; ".join(
            f"{key}: the cache has {json.dumps(had)}, the study was created with {json.dumps(want)}"
            for key, had, want in differences
        )
        raise CacheError(
            f"the cache at {cache.path} does not match study {study.study_name!r} -- {listed}. Point "
            "--cache (HPO_CACHE) at the cache the study was created with."
        )


def _study_names(storage: ResilientStorage) -> list[str]:
    return sorted(summary.study_name for summary in storage.get_all_studies())


def open_study(
    storage: ResilientStorage,
    name: str,
    *,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Load study ``name``; StudyError listing the studies that exist when there is none of that name."""
    names = _study_names(storage)
    if name not in names:
        listed = ", ".join(repr(n) for n in names) if names else "none"
        raise StudyError(
            f"no study {name!r} in {render_url(storage.url)}; the studies there: {listed}. Create it with "
            "`hpo study create`, or pass --study (HPO_STUDY) with one of these."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)


def read_record(study: optuna.Study) -> StudyRecord:
    """The study's provenance; StudyError when it was not (completely) created by `hpo study create`."""
    attrs = study.user_attrs
    if CREATED_ATTR not in attrs:
        raise StudyError(
            f"study {study.study_name!r} was not created by `hpo study create`, or its creation was "
            "interrupted; delete it (optuna delete-study) or choose another --study name."
        )
    space = parse_space(attrs[SPACE_ATTR], source=f"recorded on study {study.study_name!r}")
    return StudyRecord(
        settings=StudySettings.from_dict(attrs[SETTINGS_ATTR]),
        space=space,
        cache_fingerprint=attrs[CACHE_ATTR],
        code_version=attrs[CODE_ATTR],
    )


def open_storage_for(url: str, record: StudyRecord | None = None) -> ResilientStorage:
    """The storage with the heartbeat the study's settings ask for (none without a record)."""
    if record is None:
        return open_storage(url)
    return open_storage(
        url,
        heartbeat_interval=record.settings.heartbeat_interval,
        grace_period=record.settings.grace_period,
    )
