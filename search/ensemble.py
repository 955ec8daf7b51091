"""`hpo export-best --ensemble K`: greedy selection over the study's stored heads, scored by its objective.

The candidates are the heads the workers keep: those of the ``keep_heads`` best feasible COMPLETE trials
(of a Pareto study: the feasible front), best first; workers delete the heads that fall out. Selection
with replacement (Caruana et al., ICML 2004) runs on the cache's validation split with the study's own
objective, so the ensemble is judged by what the search maximised, on the split the search scored on; the
test split stays untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from data.cache import Cache
from search.artifacts import head_removed, kept_heads, load_best_head
from search.errors import StudyError
from search.records import StudyRecord

if TYPE_CHECKING:
    import keras

    from model.head import HeadConfig


@dataclass(frozen=True)
class Member:
    """One stored head of the ensemble."""

    trial: FrozenTrial
    model: keras.Model
    config: HeadConfig
    weight: float  # its share of the average (selection count / ensemble size)


@dataclass(frozen=True)
class EnsembleChoice:
    """The heads greedy selection chose, and how it scored them."""

    members: tuple[Member, ...]
    candidates: int  # stored heads selection chose from
    value: float  # the objective of the averaged outputs on validation


def candidate_trials(study: optuna.Study, record: StudyRecord) -> list[FrozenTrial]:
    """The trials whose stored head the workers keep (`kept_heads`), best (mean value) first, lowest
    number on ties."""
    stored = kept_heads(study, record.settings)
    return sorted(stored, key=lambda t: (-sum(t.values) / len(t.values), t.number))


def select_stored_heads(
    study: optuna.Study, record: StudyRecord, cache: Cache, artifact_dir: Path, size: int
) -> EnsembleChoice:
    """Greedy selection of ``size`` rounds over the study's stored heads, on the cache's val split."""
    from model.ensemble import select_ensemble
    from model.predict import head_outputs

    trials, loaded = _load_candidates(study, record, artifact_dir)
    embeddings, labels = cache.embeddings("val"), cache.labels("val").astype(np.int64)
    outputs = [head_outputs(model, embeddings) for model, _, _ in loaded]
    selection = select_ensemble(outputs, lambda averaged: _objective(record, averaged, labels), size)
    members = tuple(
        Member(trial, model, config, weight)
        for (model, config, trial), weight in zip(loaded, selection.weights, strict=True)
        if weight > 0
    )
    return EnsembleChoice(members, candidates=len(trials), value=selection.score)


def _load_candidates(
    study: optuna.Study, record: StudyRecord, artifact_dir: Path
) -> tuple[list[FrozenTrial], list[tuple[keras.Model, HeadConfig, FrozenTrial]]]:
    # A worker may delete a candidate's head between the listing and the download, when a trial that
    # finished meanwhile pushes it out of the best: then list again (a running study settles in a try).
    tries = 3
    while True:
        trials = candidate_trials(study, record)[: record.settings.keep_heads]
        if not trials:
            raise StudyError(
                f"study {study.study_name!r} has no stored head to build an ensemble from; run `hpo "
                "worker` first."
            )
        try:
            return trials, [load_best_head(study, artifact_dir, trial.number) for trial in trials]
        except StudyError:
            tries -= 1
            if not tries or not any(head_removed(study, t, record.settings) for t in trials):
                raise


def _objective(record: StudyRecord, outputs: Mapping[str, np.ndarray], labels: np.ndarray) -> float:
    # A Pareto study's ensemble is scored by the mean of its three values.
    from model.metrics import predicted_classes, scores

    metrics, _ = scores(labels, predicted_classes(outputs))
    value = record.settings.goal.value(metrics)
    return float(np.mean(value))


@dataclass(frozen=True)
class BuiltEnsemble:
    """The averaged head of an ensemble choice, with what a model card says of it."""

    model: keras.Model
    first: Member  # the best member: its trial and config stand for the ensemble where one is needed
    validation_metrics: dict[str, dict[str, float]]  # the averaged head's, per head
    section: dict[str, object]  # the card's `study.ensemble`: size, candidates, value, members


def build_ensemble(
    study: optuna.Study,
    record: StudyRecord,
    cache: Cache,
    artifact_dir: Path,
    size: int,
    on_step: Callable[[str], None],
) -> BuiltEnsemble:
    """The stored heads greedy selection picks in ``size`` rounds, averaged into one head."""
    from model.ensemble import ensemble_head
    from model.metrics import METRICS, predicted_classes, scores
    from model.predict import head_outputs

    on_step(f"selecting an ensemble in {size} round(s) from the stored heads, on the validation split")
    choice = select_stored_heads(study, record, cache, artifact_dir, size)
    model = ensemble_head([member.model for member in choice.members], [m.weight for m in choice.members])
    listed = ", ".join(f"{member.trial.number} ({member.weight:.2f})" for member in choice.members)
    on_step(
        f"ensemble of {len(choice.members)} head(s) from the {choice.candidates} stored: trial (weight) "
        f"{listed}; validation {record.settings.objective} {choice.value:.4f}"
    )
    labels = cache.labels("val").astype(np.int64)
    scored, _ = scores(labels, predicted_classes(head_outputs(model, cache.embeddings("val"))))
    members = [
        {
            "trial": m.trial.number,
            "weight": m.weight,
            "values": list(m.trial.values),
            "head_config": m.config.to_dict(),
        }
        for m in choice.members
    ]
    section = {
        "size": size,
        "candidates": choice.candidates,
        "validation_value": choice.value,
        "members": members,
    }
    metrics = {head: {m: scored[head][m] for m in METRICS} for head in scored}
    return BuiltEnsemble(model, choice.members[0], metrics, section)
