"""What a study maximises: each objective an object with its direction(s), its value and whether it prunes.

An objective turns a trial's per-head validation metrics into the value(s) Optuna records. Single-value
objectives can be pruned on the epoch curve; a multi-objective (Pareto) study cannot. ``rank_by`` is the
metric by which a trial's own epochs are ranked (early stopping, the best epoch kept).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import optuna

from data.errors import ConfigError
from data.labels import HEADS
from model.metrics import Metrics, mean_metric


@dataclass(frozen=True)
class Objective:
    """An objective over the three heads' validation metrics; every value is maximised."""

    name: str
    help: str  # one phrase for --help
    metric: str  # the per-head metric it is made of (one of model.metrics.METRICS)
    per_head: bool = False  # one value per head (a Pareto study) instead of their mean

    @property
    def directions(self) -> list[optuna.study.StudyDirection]:
        """One MAXIMIZE per value."""
        return [optuna.study.StudyDirection.MAXIMIZE] * len(self.metric_names)

    @property
    def prunable(self) -> bool:
        """Whether a pruner may stop a trial on its epoch curve (single-value objectives only)."""
        return not self.per_head

    @property
    def rank_by(self) -> str:
        """The metric whose mean over the heads ranks a trial's epochs."""
        return self.metric

    @property
    def metric_names(self) -> list[str]:
        """What each value is, as optuna-dashboard labels its axes (instead of "Objective 0")."""
        words = _WORDS.get(self.metric, self.metric.replace("_", " "))
        if self.per_head:
            return [f"{head} {words} (val)" for head in HEADS]
        return [f"mean {words} (val)"]

    def value(self, metrics: Metrics) -> float | tuple[float, ...]:
        """The study's value(s) of per-head metrics."""
        if self.per_head:
            return tuple(float(metrics[head][self.metric]) for head in HEADS)
        return mean_metric(metrics, self.metric)

    def epoch_value(self, metrics: Metrics) -> float:
        """The single value reported after each epoch for the pruner (prunable objectives)."""
        value = self.value(metrics)
        assert isinstance(value, float), f"objective {self.name!r} reports no single epoch value"
        return value


_WORDS = {"group_min": "worst-group balanced accuracy"}

OBJECTIVES: Mapping[str, Objective] = MappingProxyType(
    {
        objective.name: objective
        for objective in (
            Objective("balanced_accuracy", "mean balanced accuracy of the three heads", "balanced_accuracy"),
            Objective("accuracy", "mean accuracy of the three heads", "accuracy"),
            Objective(
                "pareto", "a Pareto search of the three heads' balanced accuracy", "balanced_accuracy", True
            ),
            # FairFace's reason to exist: the head whose worst race (or gender) group fares best.
            Objective("fair", "mean over the heads of the worst group's balanced accuracy", "group_min"),
        )
    }
)


def get_objective(name: str) -> Objective:
    """The objective called ``name``; ConfigError listing the objectives when there is none."""
    if name not in OBJECTIVES:
        raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got {name!r}")
    return OBJECTIVES[name]
