"""The methods bench/quality.py compares, each run to a ``Result``: its predictions on the test part.

(a) a logistic-regression probe, (b) the paper's Table II head, (c)/(d) TPE on the default/wide space,
(e) (d)'s stored heads as a top-5 ensemble (the product's ``export-best --ensemble`` selection), (f)
KerasTuner on the default space, (g) TPE with the fair objective on the wide space. Every search has the
same budget of trials x epochs; none starts from the Table II head (bench_space drops the named points).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from quality_data import head_predictions
from quality_search import PATIENCE, SearchOutcome, run_study
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from data.cache import Cache, open_cache
from data.labels import HEADS, VOCABULARIES
from model.metrics import head_metrics, mean_metric
from model.paper import PAPER_HEAD
from model.train import train_head
from model.train_data import TrainData

PAPER_EPOCHS = 30  # the paper trained 30 epochs with early stopping, whatever the searches' budget
PROBE_C = (0.001, 0.01, 0.1, 1.0)
PROBE_WEIGHTING = (None, "balanced")
ENSEMBLE_SIZE = 5
Arrays = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (clean embeddings, (N, 3) labels)


@dataclass(frozen=True)
class Budget:
    """What every search gets, and where the bench keeps its studies and cache."""

    trials: int
    epochs: int
    seed: int
    cache_dir: Path
    workdir: Path


@dataclass(frozen=True)
class Result:
    """One method's chosen head (or probe) and what choosing it cost."""

    predicted: dict[str, np.ndarray]  # test-part class indices per head
    val_value: float  # the value it was chosen by, on val (the objective of its search)
    trials: int
    epochs: int  # epochs trained over all trials (0: not a network)
    seconds: float  # wall time of this method in this run (a reused search counts its reuse only)
    note: str
    config: dict[str, object] | None = None
    extra: dict[str, object] = field(default_factory=dict)


def load_arrays(cache: Cache) -> Arrays:
    """(clean embeddings, labels) of each split, in memory."""
    return {
        split: (np.array(cache.embeddings(split), np.float32), np.array(cache.labels(split)))
        for split in ("train", "val", "test")
    }


def _probe_head(arrays: Arrays, column: int) -> tuple[Pipeline, float, str]:
    """The probe of one head: the (C, class weighting) of best validation balanced accuracy."""
    (train_x, train_y), (val_x, val_y) = arrays["train"], arrays["val"]
    classes = len(VOCABULARIES[HEADS[column]])
    best: tuple[Pipeline, float, str] | None = None
    for c in PROBE_C:
        for weighting in PROBE_WEIGHTING:
            model = make_pipeline(
                StandardScaler(), LogisticRegression(C=c, class_weight=weighting, max_iter=2000)
            )
            model.fit(train_x, train_y[:, column])
            value = head_metrics(val_y[:, column], model.predict(val_x), classes)["balanced_accuracy"]
            if best is None or value > best[1]:
                best = (model, value, f"{HEADS[column]} C={c} {weighting or 'unweighted'}")
    assert best is not None
    return best


def probe(arrays: Arrays, budget: Budget) -> Result:
    """(a) Standardised clean embeddings -> LogisticRegression per head; C and weighting chosen on val."""
    started = time.monotonic()
    chosen = [_probe_head(arrays, column) for column in range(len(HEADS))]
    test_x = arrays["test"][0]
    return Result(
        predicted={head: model.predict(test_x) for head, (model, _, _) in zip(HEADS, chosen, strict=True)},
        val_value=float(np.mean([value for _, value, _ in chosen])),
        trials=len(PROBE_C) * len(PROBE_WEIGHTING),
        epochs=0,
        seconds=time.monotonic() - started,
        note="; ".join(note for _, _, note in chosen),
    )


def paper_head(arrays: Arrays, budget: Budget) -> Result:
    """(b) Table II, Adam 1e-3, batch 256, class weights 1.0, 30 epochs, patience 5, best epoch on val."""
    started = time.monotonic()
    data = TrainData.from_cache(open_cache(budget.cache_dir))
    result = train_head(PAPER_HEAD, data, epochs=PAPER_EPOCHS, seed=budget.seed, patience=PATIENCE)
    return Result(
        predicted=head_predictions(result.model, arrays["test"][0]),
        val_value=mean_metric(result.metrics, "balanced_accuracy"),
        trials=1,
        epochs=result.epochs_run,
        seconds=time.monotonic() - started,
        note=f"best epoch {result.best_epoch + 1} of {result.epochs_run}",
        config=PAPER_HEAD.to_dict(),
    )


def _search(label: str, budget: Budget, **study: str) -> SearchOutcome:
    return run_study(
        label,
        cache_dir=budget.cache_dir,
        workdir=budget.workdir,
        trials=budget.trials,
        epochs=budget.epochs,
        seed=budget.seed,
        **study,
    )


def _search_result(outcome: SearchOutcome, arrays: Arrays, seconds: float) -> Result:
    pruned = sum(value is None for value in outcome.values)
    resumed = (
        f"; resumed after {outcome.resumed_from} trials of an earlier run: wall and CPU time cover the rest"
        if outcome.resumed_from
        else ""
    )
    return Result(
        predicted=head_predictions(outcome.model, arrays["test"][0]),
        val_value=outcome.val_value,
        trials=len(outcome.values),
        epochs=outcome.epochs,
        seconds=seconds,
        note=f"{outcome.note}; {pruned} of {len(outcome.values)} trials pruned{resumed}",
        config=outcome.config.to_dict(),
        extra={"values": list(outcome.values), "resumed_from": outcome.resumed_from},
    )


def searched(label: str, **study: str) -> Callable[[Arrays, Budget], Result]:
    """(c), (d), (g): a face-hpo study of the bench's budget; the stored head of its best trial."""

    def run(arrays: Arrays, budget: Budget) -> Result:
        started = time.monotonic()
        outcome = _search(label, budget, **study)
        return _search_result(outcome, arrays, time.monotonic() - started)

    return run


def ensemble(arrays: Arrays, budget: Budget) -> Result:
    """(e) The wide TPE study's stored heads, greedy selection of 5 rounds on val, outputs averaged.

    The selection and the averaged head are export-best --ensemble's own (search/ensemble.py,
    model/ensemble.py); only the frozen base is left out, as every row here scores cached embeddings.
    Its wall time is the selection's: the search it draws from is (d)'s.
    """
    from model.ensemble import ensemble_head
    from search.ensemble import select_stored_heads
    from search.study import read_record

    outcome = _search("tpe-wide", budget, space="wide")  # reused: (d) ran it
    assert outcome.study is not None and outcome.artifact_dir is not None
    started = time.monotonic()
    record = read_record(outcome.study)
    cache = open_cache(budget.cache_dir)
    choice = select_stored_heads(outcome.study, record, cache, outcome.artifact_dir, ENSEMBLE_SIZE)
    model = ensemble_head([m.model for m in choice.members], [m.weight for m in choice.members])
    members = [{"trial": m.trial.number, "weight": m.weight} for m in choice.members]
    listed = ", ".join(f"{m['trial']} ({m['weight']:.2f})" for m in members)
    return Result(
        predicted=head_predictions(model, arrays["test"][0]),
        val_value=choice.value,
        trials=len(outcome.values),
        epochs=outcome.epochs,
        seconds=time.monotonic() - started,
        note=f"{len(members)} of {choice.candidates} stored heads, trial (weight): {listed}; its wall "
        "time is the selection's, the search is (d)'s",
        extra={"members": members, "candidates": choice.candidates},
    )


def kerastuner(arrays: Arrays, budget: Budget) -> Result:
    """(f) KerasTuner RandomSearch over the default space at the same budget (bench/quality_kt.py)."""
    from quality_kt import run_kerastuner

    started = time.monotonic()
    outcome = run_kerastuner(
        data={split: arrays[split] for split in ("train", "val")},
        workdir=budget.workdir,
        trials=budget.trials,
        epochs=budget.epochs,
        seed=budget.seed,
    )
    return _search_result(outcome, arrays, time.monotonic() - started)


METHODS: dict[str, tuple[str, Callable[[Arrays, Budget], Result]]] = {
    "probe": ("(a) logistic-regression probe", probe),
    "paper": ("(b) paper's Table II head", paper_head),
    "tpe-default": ("(c) TPE + Hyperband, default space", searched("tpe-default", space="default")),
    "tpe-wide": ("(d) TPE + Hyperband, wide space", searched("tpe-wide", space="wide")),
    "ensemble": ("(e) (d) as a top-5 ensemble", ensemble),
    "kerastuner": ("(f) KerasTuner RandomSearch, default space", kerastuner),
    "fair-wide": (
        "(g) TPE + Hyperband, fair objective, wide space",
        searched("fair-wide", space="wide", objective="fair"),
    ),
}
