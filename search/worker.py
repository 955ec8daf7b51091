"""A worker: runs trials of one study until the study's budget is met across all workers.

Workers coordinate only through the database. Each trial runs inside ``study.optimize`` (heartbeats
run only there); before each trial the worker counts the finished trials (COMPLETE + PRUNED) of all
workers, so the budget is overshot by at most workers - 1. A trial whose worker died is failed when its
heartbeat goes stale and queued again with the same parameters.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from data.cache import Cache, open_cache
from data.errors import HpoError
from search.artifacts import check_artifact_store, remove_outranked_heads
from search.errors import SetupError, StudyError
from search.objective import TrialAborted
from search.records import ARTIFACT_ATTR, StudyRecord, StudySettings, read_record
from search.settings import Settings
from search.stopflag import StopFlag, Stopped
from search.storage import RETRY_FOR, ResilientStorage
from search.study import check_cache, open_storage_for, open_study
from search.workerlog import configure_logging

N_STARTUP_TRIALS = 10  # random trials before TPE models the space (it has ~20 parameters)
MAX_FAILURES_IN_A_ROW = 5  # then the worker stops: a bug or a broken setup, not one bad head
_logger = logging.getLogger("hpo.worker")
Objective = Callable[[optuna.Trial], float | Sequence[float]]


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker process needs; picklable, so the launcher can hand it to a child process."""

    storage_url: str
    study_name: str
    cache_dir: Path
    artifact_dir: Path
    index: int = 0  # distinct per worker: the sampler's seed is the study's seed + index
    gpu: str | None = None  # CUDA_VISIBLE_DEVICES for this process ("" = no GPU); None = inherit

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerSpec:
        """The spec of a worker on ``settings``' study, cache and artifact store."""
        return cls(settings.storage_url, settings.study, settings.cache_dir, settings.artifact_dir)


def make_sampler(settings: StudySettings, index: int) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded distinctly for worker ``index``."""
    seed = settings.seed + index
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # `group` is experimental
        # Constant liar: running trials count as bad, so parallel workers do not all sample one spot.
        return optuna.samplers.TPESampler(
            multivariate=True,
            group=True,
            constant_liar=True,
            seed=seed,
            n_startup_trials=N_STARTUP_TRIALS,
            # --max-gap: TPE models which trials were feasible and samples towards them.
            constraints_func=settings.constraints if settings.max_gap is not None else None,
        )


def make_pruner(settings: StudySettings) -> optuna.pruners.BasePruner:
    """The study's pruner over the epoch curve (none for an objective that cannot be pruned)."""
    if not settings.goal.prunable or settings.pruner == "none":
        return optuna.pruners.NopPruner()
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=min(3, settings.epochs - 1))
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=settings.epochs, reduction_factor=3)


def progress(study: optuna.Study) -> tuple[int, int]:
    """(finished = COMPLETE + PRUNED, RUNNING) trials of the study, across all workers."""
    trials = study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    )
    running = sum(1 for t in trials if t.state == TrialState.RUNNING)
    return len(trials) - running, running


def _fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        fail_stale_trials(study)


def _requeue(study: optuna.Study, number: int) -> None:
    # As the heartbeat's retry does for a dead worker's trial: a WAITING copy with the same parameters.
    for trial in study.get_trials(deepcopy=True, states=(TrialState.FAIL,)):
        if trial.number == number:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                RetryHeartbeatStaleTrialCallback()(study, trial)


def _log_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    values = "" if trial.values is None else " " + ", ".join(f"{v:.4f}" for v in trial.values)
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    _logger.info("trial %d %s%s (%.1f s)", trial.number, trial.state.name, values, seconds)


def head_keeper(settings: StudySettings, artifact_dir: Path) -> Callable[[optuna.Study, FrozenTrial], None]:
    """The callback that, after a trial stored its head, removes the heads it pushed out of the best.

    A failure to remove is logged, not raised: the trial's result is already told, and the next new
    head's callback tries again.
    """

    def keep(study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state != TrialState.COMPLETE or not trial.user_attrs.get(ARTIFACT_ATTR):
            return
        try:
            removed = remove_outranked_heads(study, settings, artifact_dir)
        except OSError as error:
            _logger.warning("could not remove outranked heads from %s: %s", artifact_dir, error)
            return
        if removed:
            listed = ", ".join(map(str, removed))
            _logger.info(
                "removed the heads of trial(s) %s: no longer among the %d best", listed, settings.keep_heads
            )

    return keep


def run_trials(
    study: optuna.Study,
    storage: ResilientStorage,
    objective: Objective,
    *,
    settings: StudySettings,
    stop: StopFlag,
    poll: float = 1.0,
    after_trial: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
) -> int:
    """Run trials until ``settings.budget`` trials have finished across all workers, or ``stop`` is set;
    each of ``after_trial`` is called with every trial this worker finished.

    Returns the number of trials this worker finished. Before returning, RUNNING trials of dead workers
    are failed (and queued again), waiting at most the grace period.
    """
    finished = failures = 0
    while not stop.is_set():
        done, running = progress(study)
        if done >= settings.budget:
            break
        if done + running >= settings.budget:
            # Enough trials are under way; wait in case one fails or its worker dies.
            _fail_stale(study)
            stop.wait(poll)
            continue
        try:
            study.optimize(objective, n_trials=1, callbacks=[_log_trial, *after_trial])
        except TrialAborted as aborted:
            _requeue(study, aborted.number)
            _logger.info("%s; queued again", aborted)
            break
        except SetupError as error:
            # Not the head's fault: stop before the next trial meets the same cause and burns the budget.
            if error.trial is not None:
                _requeue(study, error.trial)
            raise
        except UpdateFinishedTrialError as error:
            # Another worker failed this trial as stale (e.g. a database outage outlasted the grace
            # period); its retry is queued, so the result is not lost, only recomputed.
            _logger.warning("trial result not stored: %s", error)
            continue
        except StudyError:
            raise
        except Exception as error:
            # Optuna has marked the trial FAIL (or another worker did, as stale): a trial-level failure.
            _logger.warning("trial failed: %r", error)
            failures += 1
            if failures >= MAX_FAILURES_IN_A_ROW:
                raise StudyError(
                    f"{failures} trials in a row failed on this worker, the last with {error!r}; see the "
                    "log above, fix the cause, then start the worker again."
                ) from error
            continue
        failures = 0
        finished += 1
    settle_running(study, storage, settings)
    return finished


def settle_running(study: optuna.Study, storage: ResilientStorage, settings: StudySettings) -> None:
    """Fail RUNNING trials whose worker died (no fresh heartbeat), waiting at most the grace period."""
    study_id = storage.get_study_id_from_name(study.study_name)
    deadline = time.monotonic() + settings.grace_period + settings.heartbeat_interval
    while True:
        _fail_stale(study)
        ages = storage.heartbeat_ages(study_id)
        # A live worker beats every interval; anything older is probably a dead worker's trial.
        silent = [n for n, age in ages.items() if age is None or age > settings.heartbeat_interval + 1]
        if not silent or time.monotonic() > deadline:
            return
        time.sleep(1.0)


def prepare(
    spec: WorkerSpec, *, wait: float = RETRY_FOR, stop: StopFlag | None = None
) -> tuple[StudyRecord, Cache]:
    """Check everything a worker's trials rely on, before the first: the study (waiting up to ``wait``
    seconds for its database; Stopped if ``stop`` is set meanwhile), the cache against the study, the
    artifact store. Returns the study's record and the opened cache; the first problem found is an
    HpoError."""
    plain = open_storage_for(spec.storage_url, wait=wait, stop=stop)
    try:
        study = open_study(plain, spec.study_name)
        record = read_record(study)
        cache = open_cache(spec.cache_dir)
        check_cache(study, cache)
    finally:
        plain.engine.dispose()
    check_artifact_store(spec.artifact_dir)
    return record, cache


def run_worker(spec: WorkerSpec, stop: StopFlag) -> int:
    """Run one worker in this process until the budget is met or ``stop`` is set; the trials it finished."""
    if spec.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = spec.gpu  # before TensorFlow is first imported
    from search.objective import TrialRunner

    record, cache = prepare(spec, stop=stop)
    if stop.is_set():
        raise Stopped  # before the cache is loaded
    settings = record.settings
    storage = open_storage_for(spec.storage_url, record, wait=RETRY_FOR, stop=stop)
    study = open_study(
        storage, spec.study_name, sampler=make_sampler(settings, spec.index), pruner=make_pruner(settings)
    )
    from model.train_data import TrainData

    data = TrainData.from_cache(cache)
    worker = f"{socket.gethostname()}:{os.getpid()}/{spec.index}"
    objective = TrialRunner(
        space=record.space,
        data=data,
        settings=settings,
        artifact_dir=spec.artifact_dir,
        worker=worker,
        stop_requested=stop.is_set,
    )
    _logger.info("%s on study %r: budget %d trials", worker, spec.study_name, settings.budget)
    keep = head_keeper(settings, spec.artifact_dir)
    finished = run_trials(study, storage, objective, settings=settings, stop=stop, after_trial=[keep])
    done, _ = progress(study)
    _logger.info("finished %d trial(s); the study has %d of %d", finished, done, settings.budget)
    return finished


def worker_main(spec: WorkerSpec, stop: StopFlag | None = None) -> int:
    """A worker process's body: exit code 0 when done or stopped, 2 on a user error, 130 when aborted.

    ``stop``: a flag its process installed earlier (a launcher's child does, before its imports); by
    default one is installed here.
    """
    configure_logging(spec.index)
    if stop is None:
        stop = StopFlag()
        stop.install()
    try:
        run_worker(spec, stop)
    except Stopped:
        _logger.info("stopped before the first trial")
    except HpoError as error:
        print(f"hpo: error: {error}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
