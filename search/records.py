"""The one list of what a study and a trial store: attribute names, the study's settings, its provenance.

Everything a worker needs to run the study lives on it as user attributes, so workers on any machine run
the same search: the settings, the space file's text and sha256, the cache fingerprint, the code
version. Each trial stores what it drew, what it scored and where its head is.
"""

from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from data.errors import ConfigError
from data.labels import HEADS
from model.head import HeadConfig
from model.metrics import METRICS, Metrics
from search.errors import StudyError
from search.objectives import OBJECTIVES, Objective
from search.space import Space, parse_space

SAMPLERS = ("tpe", "random")
PRUNERS = ("hyperband", "median", "none")
PAPER_POINT = "paper"  # the space's named point a new study queues as trial 0

# Study user attributes, written by `search.study.create_study` (CREATED_ATTR last).
SETTINGS_ATTR = "settings"  # StudySettings.to_dict()
SPACE_ATTR = "space"  # the space file's text
SPACE_SHA_ATTR = "space_sha256"
CACHE_ATTR = "cache_fingerprint"
CODE_ATTR = "code_version"
CREATED_ATTR = "created_at"

# Trial user attributes.
POINT_ATTR = "point"  # the space's named point a queued trial is (e.g. "paper")
WORKER_ATTR = "worker"  # "<host>:<pid>/<worker index>" of the process that ran the trial
CONFIG_ATTR = "head_config"  # HeadConfig.to_dict() of the trial's head
EPOCHS_ATTR = "epochs_run"  # epochs trained (early stopping or pruning may end a trial early)
ARTIFACT_ATTR = "head_artifact_id"  # the artifact id of the stored head, when the worker stored it


def metric_attr(head: str, metric: str) -> str:
    """The user attribute holding one head's validation metric, e.g. ``age_balanced_accuracy``."""
    return f"{head}_{metric}"


def record_metrics(trial: optuna.Trial, metrics: Metrics, epochs_run: int) -> None:
    """Store the best epoch's per-head metrics and the epochs run as user attributes."""
    for head, values in metrics.items():
        for metric in METRICS:
            trial.set_user_attr(metric_attr(head, metric), float(values[metric]))
    trial.set_user_attr(EPOCHS_ATTR, epochs_run)


def trial_metrics(trial: FrozenTrial) -> dict[str, dict[str, Any]]:
    """The per-head validation metrics a trial recorded (None where it recorded none)."""
    return {head: {m: trial.user_attrs.get(metric_attr(head, m)) for m in METRICS} for head in HEADS}


def trial_config(trial: FrozenTrial) -> HeadConfig:
    """The head config a trial recorded."""
    return HeadConfig.from_dict(trial.user_attrs[CONFIG_ATTR])


@dataclass(frozen=True)
class StudySettings:
    """How a study searches; recorded on the study and read back by every worker."""

    budget: int = 200  # trials that finish (COMPLETE + PRUNED), counted across all workers
    objective: str = "balanced_accuracy"  # a name of search.objectives.OBJECTIVES
    sampler: str = "tpe"
    pruner: str = "hyperband"
    epochs: int = 30
    patience: int = 5  # early stopping on the objective; 0 = off
    seed: int = 0  # worker i samples with seed + i; trial n trains with seed + n
    heartbeat_interval: int = 10  # seconds between a running trial's heartbeats
    grace_period: int = 30  # seconds of silence after which a running trial is failed and queued again

    def __post_init__(self) -> None:
        for name, allowed in (("objective", tuple(OBJECTIVES)), ("sampler", SAMPLERS), ("pruner", PRUNERS)):
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

    @property
    def goal(self) -> Objective:
        """The objective object the study maximises."""
        return OBJECTIVES[self.objective]


def trial_seed(settings: StudySettings, number: int) -> int:
    """The training seed of trial ``number``: the study's seed + the trial number."""
    return settings.seed + number


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
    root = Path(__file__).resolve().parents[1]  # the checkout: search/ is one level down
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
