"""face-hpo's own searches for bench/quality.py: a study made and run by the product's code; its best head.

Each search is a real study (``search.study.create_study`` on SQLite in the bench's work directory) run to
its budget by ``search.worker.run_worker`` in this process, one worker (the machine has 2 cores). The head
scored on the test part is the one the worker stored for the best trial (``load_best_head``), not a retrain.
A study that already exists with the same settings is reused: its worker only runs what is left.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from data.cache import open_cache
from model.head import HeadConfig
from search.artifacts import load_best_head
from search.records import EPOCHS_ATTR, StudySettings
from search.space import Space, load_space, parse_space
from search.storage import open_storage
from search.study import create_study, open_study
from search.worker import StopFlag, WorkerSpec, configure_logging, progress, run_worker

if TYPE_CHECKING:
    import keras

PATIENCE = 5  # the paper's early stopping, for every search and baseline alike


@dataclass(frozen=True)
class SearchOutcome:
    """A finished search: its best head, how it got there and what it cost."""

    name: str
    model: keras.Model
    config: HeadConfig
    val_value: float  # the best trial's value of the study's objective, on validation
    values: tuple[float | None, ...]  # per finished trial in order; None = pruned
    epochs: int  # epochs trained over all trials
    seconds: float | None  # wall time of the search in this run; None: it had finished before (reused)
    note: str  # where the head comes from
    resumed_from: int = 0  # trials finished before this run: its wall time covers only the rest
    study: optuna.Study | None = None  # None: not a face-hpo study
    artifact_dir: Path | None = None  # where the study's stored heads are


def bench_space(name: str = "default") -> Space:
    """Packaged space ``name`` without its named points: no search starts from the paper's head for free.

    KerasTuner has no way to queue a given point first, so face-hpo's searches do without it too.
    """
    text = load_space(Path(name)).text
    ranges = text.split("\n[points.", 1)[0]
    return parse_space(ranges, source=f"the {name} space without its points (bench/quality.py)")


def run_study(
    label: str,
    *,
    space: str,
    objective: str = "balanced_accuracy",
    sampler: str = "tpe",
    pruner: str = "hyperband",
    cache_dir: Path,
    workdir: Path,
    trials: int,
    epochs: int,
    seed: int,
) -> SearchOutcome:
    """Create (or reuse) study ``label`` in ``workdir/studies.db``, run it to its budget; its best head."""
    url = f"sqlite:///{(workdir / 'studies.db').resolve()}"
    name = f"{label}-t{trials}-e{epochs}-s{seed}"
    artifact_dir = workdir / "artifacts" / name
    settings = StudySettings(
        budget=trials,
        objective=objective,
        sampler=sampler,
        pruner=pruner,
        epochs=epochs,
        patience=PATIENCE,
        seed=seed,
    )
    study, _ = create_study(
        open_storage(url), name, space=bench_space(space), cache=open_cache(cache_dir), settings=settings
    )
    before = progress(study)[0]
    reused = before >= trials
    print(
        f"[{label}] study {name!r}: {space} space, {objective}, {sampler} sampler, {pruner} pruner, "
        f"{trials} trials",
        flush=True,
    )
    configure_logging(0)  # the worker's per-trial lines are the progress
    started = time.monotonic()
    run_worker(WorkerSpec(url, name, cache_dir, artifact_dir), StopFlag())
    seconds = None if reused else time.monotonic() - started
    outcome = study_outcome(open_study(open_storage(url), name), label, artifact_dir, seconds)
    return replace(outcome, resumed_from=before)


def study_outcome(
    study: optuna.Study, label: str, artifact_dir: Path, seconds: float | None
) -> SearchOutcome:
    """A finished study's best stored head, its trials' values in order and the epochs they trained."""
    model, config, best = load_best_head(study, artifact_dir)
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    finished.sort(key=lambda trial: trial.number)
    return SearchOutcome(
        name=label,
        study=study,
        artifact_dir=artifact_dir,
        model=model,
        config=config,
        val_value=float(best.values[0]),
        values=tuple(t.values[0] if t.state == TrialState.COMPLETE else None for t in finished),
        epochs=sum(int(t.user_attrs.get(EPOCHS_ATTR, 0)) for t in finished),
        seconds=seconds,
        note=f"stored head of trial {best.number}",
    )
