"""The function a worker hands to ``study.optimize``: a trial's head, trained on the cached embeddings,
scored on validation.

Prunable objectives report their value after every epoch, so the pruner can stop a poor curve; a Pareto
study (age, race, gender) only returns its three values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from search.artifacts import deserves_head, store_head
from search.records import (
    ARTIFACT_ATTR,
    CONFIG_ATTR,
    EPOCHS_ATTR,
    POINT_ATTR,
    WORKER_ATTR,
    StudySettings,
    record_metrics,
    trial_seed,
)
from search.space import Space

if TYPE_CHECKING:
    from model.train_data import TrainData


class TrialAborted(Exception):
    """The worker was asked to stop while this trial trained; Optuna marks the trial FAIL."""

    def __init__(self, number: int, epoch: int) -> None:
        super().__init__(f"worker stopping; trial {number} abandoned after epoch {epoch}")
        self.number = number


@dataclass(frozen=True)
class TrialRunner:
    """Callable for ``study.optimize``: suggest, train, record, store the head if among the best, value."""

    space: Space
    data: TrainData
    settings: StudySettings
    artifact_dir: Path
    worker: str
    stop_requested: Callable[[], bool] = lambda: False

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        from model.train import train_head

        config = self.space.suggest(trial)
        trial.set_user_attr(WORKER_ATTR, self.worker)
        trial.set_user_attr(CONFIG_ATTR, config.to_dict())
        if trial.user_attrs.get(ARTIFACT_ATTR):
            # A retried trial inherits the failed one's attributes; that head is not this run's.
            trial.set_user_attr(ARTIFACT_ATTR, None)
        result = train_head(
            config,
            self.data,
            epochs=self.settings.epochs,
            seed=trial_seed(self.settings, trial.number),
            on_epoch=self._on_epoch(trial),
            patience=self.settings.patience or None,
            rank_by=self.settings.goal.rank_by,
        )
        record_metrics(trial, result.metrics, result.groups, result.epochs_run)
        value = self.settings.goal.value(result.metrics)
        values = value if isinstance(value, tuple) else (value,)
        gap = max(group["difference"] for group in result.groups.values())
        if deserves_head(trial.study, values, self.settings, gap):
            store_head(trial, result.model, self.artifact_dir)
        return value

    def _on_epoch(self, trial: optuna.Trial) -> Callable[[int, Mapping[str, Mapping[str, float]]], None]:
        goal = self.settings.goal
        # A queued named point (trial 0: the paper's Table II head) is what every trial is compared with,
        # so it trains in full: Hyperband sees its curve but never stops it.
        prunable = goal.prunable and not trial.user_attrs.get(POINT_ATTR)

        def report(epoch: int, metrics: Mapping[str, Mapping[str, float]]) -> None:
            if goal.prunable:
                trial.report(goal.epoch_value(metrics), epoch)
            if self.stop_requested():
                raise TrialAborted(trial.number, epoch)
            if prunable and trial.should_prune():
                trial.set_user_attr(EPOCHS_ATTR, epoch + 1)
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        return report
