"""The Optuna objective: a trial's suggested head, trained on the cached embeddings, scored on validation.

Single-objective studies report the objective after every epoch, so the pruner can stop a poor curve;
a Pareto study (age, race, gender) cannot be pruned and only returns its three values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from search.artifacts import ARTIFACT_ATTR, CONFIG_ATTR, is_new_best, store_head
from search.space import Space
from search.study import StudySettings

if TYPE_CHECKING:
    from search.train import TrainData, TrainResult

# Trial user attributes (besides head_config and head_artifact_id from search.artifacts).
WORKER_ATTR = "worker"  # "<host>:<pid>/<worker index>" of the process that ran the trial
EPOCHS_ATTR = "epochs_run"  # epochs trained (early stopping or pruning may end a trial early)
METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


def metric_attr(head: str, metric: str) -> str:
    """The user attribute holding one head's validation metric, e.g. ``age_balanced_accuracy``."""
    return f"{head}_{metric}"


class TrialAborted(Exception):
    """The worker was asked to stop while this trial trained; Optuna marks the trial FAIL."""

    def __init__(self, number: int, epoch: int) -> None:
        super().__init__(f"worker stopping; trial {number} abandoned after epoch {epoch}")
        self.number = number


@dataclass(frozen=True)
class Objective:
    """Callable for ``study.optimize``: suggest -> train -> record -> (new best: store the head) -> value."""

    space: Space
    data: TrainData
    settings: StudySettings
    artifact_dir: Path
    worker: str
    stop_requested: Callable[[], bool] = lambda: False

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        from search.train import objective_value, train_head

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
            seed=self.settings.seed + trial.number,
            on_epoch=self._on_epoch(trial),
            patience=self.settings.patience or None,
            objective=self.settings.objective,
        )
        record_metrics(trial, result)
        value = objective_value(result.metrics, self.settings.objective)
        values = value if isinstance(value, tuple) else (value,)
        if is_new_best(trial.study, values):
            store_head(trial, result.model, self.artifact_dir)
        return value

    def _on_epoch(self, trial: optuna.Trial) -> Callable[[int, Mapping[str, Mapping[str, float]]], None]:
        from search.train import objective_value

        single = self.settings.objective != "pareto"

        def report(epoch: int, metrics: Mapping[str, Mapping[str, float]]) -> None:
            if single:
                value = objective_value(metrics, self.settings.objective)
                assert not isinstance(value, tuple)
                trial.report(float(value), epoch)
            if self.stop_requested():
                raise TrialAborted(trial.number, epoch)
            if single and trial.should_prune():
                trial.set_user_attr(EPOCHS_ATTR, epoch + 1)
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        return report


def record_metrics(trial: optuna.Trial, result: TrainResult) -> None:
    """Store the best epoch's per-head metrics and the epochs run as user attributes."""
    for head, metrics in result.metrics.items():
        for metric in METRICS:
            trial.set_user_attr(metric_attr(head, metric), float(metrics[metric]))
    trial.set_user_attr(EPOCHS_ATTR, result.epochs_run)
