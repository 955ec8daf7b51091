"""The workers part of bench/gpu_figures.py: K worker processes per GPU on one fixed budget.

Each K gets its own study (same storage, same settings): `hpo study create` with a space of one head
(3 x 1024 relu, dropout 0.2, batch 256, Adam 1e-3), so every trial does the same work whatever the
sampler draws; random sampler, no pruning, no early stopping. K processes (spawned; they inherit
CUDA_VISIBLE_DEVICES, so all share one GPU) each run `search.worker.run_worker`, with `train_head`
wrapped to time itself less its epoch callbacks (`trial.report` and `should_prune` are Optuna's).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from synthetic import synthetic_arrays

import model.train as training
from data.shards import build_record, finalize, shard_grid, write_shard
from search.records import StudySettings
from search.settings import Settings
from search.study import create_from
from search.worker import StopFlag, WorkerSpec, configure_logging, run_worker

FIXED_SPACE = """\
format_version = 1
name = "bench-fixed-head"

[params.n_layers]
choices = [3]

[params.units]
choices = [1024]

[params.activation]
choices = ["relu"]

[params.dropout]
choices = [0.2]

[params.learning_rate]
choices = [0.001]

[params.batch_size]
choices = [256]

[params.class_weight_strength]
choices = [1.0]

[params.optimizer]
choices = ["adam"]
"""


def write_synthetic_cache(path: Path, rows: int, val_rows: int) -> Path:
    """A finished one-view cache of bench/synthetic.py's rows (512-d), as `hpo embed` would leave it."""
    x, labels, val_x, val_labels = synthetic_arrays(rows, 512, val_rows)
    arrays = {"train": (x, labels), "val": (val_x, val_labels)}
    counts = {split: len(pair[0]) for split, pair in arrays.items()}
    fingerprint = {"weights": "synthetic:0", "dim": 512, "split": "synthetic"}
    build = build_record(
        fingerprint, counts=counts, views={"train": 1, "val": 1}, shard_size=8192, batch_size=32
    )
    for shard in shard_grid(build):
        rows_ = list(range(shard.start, shard.stop))
        record = {"files": [f"{shard.split}/{row + 1}.jpg" for row in rows_], "rows": rows_, "skipped": []}
        write_shard(path, build, shard, arrays[shard.split][0][rows_], record)
    finalize(path, build, {split: pair[1] for split, pair in arrays.items()})
    return path


def _worker_process(fields: dict[str, Any], out: str) -> None:
    spec = WorkerSpec(**fields)
    configure_logging(spec.index)
    spent: list[float] = []
    original = training.train_head

    def timed_train(*args: Any, on_epoch: Any = None, **kwargs: Any) -> Any:
        in_callbacks = 0.0

        def report(epoch: int, metrics: Any) -> None:
            nonlocal in_callbacks
            begun = time.perf_counter()
            try:
                on_epoch(epoch, metrics)
            finally:
                in_callbacks += time.perf_counter() - begun

        begun = time.perf_counter()
        try:
            return original(*args, on_epoch=report if on_epoch else None, **kwargs)
        finally:
            spent.append(time.perf_counter() - begun - in_callbacks)

    training.train_head = timed_train  # the objective imports it from the module at each trial
    run_worker(spec, StopFlag())
    Path(out).write_text(json.dumps(spent), encoding="utf-8")


def run_workers(
    args: argparse.Namespace, url: str, cache: Path, work: Path, k: int, deadline: float
) -> dict[str, float]:
    """One study of ``args.budget`` trials run by ``k`` worker processes; its figures."""
    name = f"bench-workers-{k}"
    space = work / "fixed-space.toml"
    space.write_text(FIXED_SPACE, encoding="utf-8")
    settings = StudySettings(
        budget=args.budget, epochs=args.worker_epochs, sampler="random", pruner="none", patience=0, seed=0
    )
    create_from(Settings(storage=url, study=name, cache=cache), space, settings)
    context = multiprocessing.get_context("spawn")
    outs = [work / f"train-seconds-{k}-{i}.json" for i in range(k)]
    children = [
        context.Process(
            target=_worker_process,
            args=(
                {
                    "storage_url": url,
                    "study_name": name,
                    "cache_dir": cache,
                    "artifact_dir": work / "artifacts",
                    "index": i,
                },
                str(outs[i]),
            ),
        )
        for i in range(k)
    ]
    begun = time.perf_counter()
    for child in children:
        child.start()
    for child in children:
        child.join(max(1.0, deadline - time.monotonic()))
    stopped = [child for child in children if child.is_alive()]
    for child in stopped:
        child.kill()
        child.join()
    figures = {"trials": 0, "killed_at_deadline": len(stopped), "run_s": time.perf_counter() - begun}
    trials = optuna.load_study(study_name=name, storage=url).get_trials(states=(TrialState.COMPLETE,))
    spans = [
        (t.datetime_start, t.datetime_complete) for t in trials if t.datetime_start and t.datetime_complete
    ]
    if not spans or stopped:
        return figures  # a killed worker's training seconds are lost with it
    walls = [(end - start).total_seconds() for start, end in spans]
    trained = sum(sum(json.loads(out.read_text(encoding="utf-8"))) for out in outs)
    elapsed = (max(end for _, end in spans) - min(start for start, _ in spans)).total_seconds()
    return figures | {
        "trials": len(spans),
        "trials_per_hour": 3600 * len(spans) / elapsed,
        "trial_wall_mean_s": float(np.mean(walls)),
        "train_head_mean_s": trained / len(spans),
        "optuna_storage_share": (sum(walls) - trained) / sum(walls),
    }


def worker_figures(args: argparse.Namespace, cache: Path, work: Path, *, deadline: float) -> dict[str, Any]:
    """Per K in ``args.workers``: trials/hour and the Optuna + storage share, until ``deadline``.

    ``deadline`` is a `time.monotonic` instant; a K run still going then is killed and records no rates.
    """
    url = args.storage or f"sqlite:///{work / 'study.db'}"
    figures: dict[str, Any] = {
        "budget": args.budget,
        "epochs": args.worker_epochs,
        "storage": url.split(":")[0],
    }
    figures["skipped"] = []
    ks = [int(k) for k in args.workers.split(",")]
    for number, k in enumerate(ks):
        # Leave each remaining K an equal share of the time left.
        if (deadline - time.monotonic()) / (len(ks) - number) < 20:
            figures["skipped"].append(k)
            continue
        figures[f"per_gpu_{k}"] = run_workers(args, url, cache, work, k, deadline)
    return figures
