"""Benchmark of search quality on real faces (issue 10, item 4): does the search earn its keep?

On the shared FairFace sample embedded once by the dlib-resnet base (``hpo embed --base dlib-resnet
--split paper --augment-views 2``: train = 80 % of the 8,000 train images with two augmented views each,
test = the other 20 % -- never seen by a search --, val = the 2,000 official val images, on which every
search scores), each method of bench/quality_methods.py runs per seed at one budget of ``--trials`` x up
to ``--epochs`` epochs (early stopping patience 5): (a) LR probe, (b) Table II head, (c) TPE on the
default space, (d) TPE on the wide space, (e) (d) as a top-5 ensemble, (f) KerasTuner, (g) the fair
objective on the wide space.

Each (method, seed) is written to ``--results`` as soon as it finishes, with its test predictions; a
rerun skips what is there, so the bench resumes where a killed run stopped. The report (bench/
quality_report.py: tables, paired-bootstrap intervals, the issue's goals) is rewritten beside it from
the whole file after every method. Two processes may share one results file (``--methods`` splits the
work; writes are locked and merged).

    .venv/bin/python bench/quality.py --workdir work/bench-quality --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import json
import os
import platform
import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from search.tfquiet import import_tensorflow_quietly

import_tensorflow_quietly()

from quality_data import build_cache, embed_command, prepare_root  # noqa: E402
from quality_methods import METHODS, Budget, Result, load_arrays  # noqa: E402
from quality_report import encode, render  # noqa: E402
from quality_search import PATIENCE  # noqa: E402

from data.cache import open_cache  # noqa: E402
from data.labels import HEADS  # noqa: E402
from model.metrics import scores  # noqa: E402

FORMAT = 1
RESULTS = Path(__file__).with_name("results") / "quality-dlib-resnet.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("work/bench-quality"))
    parser.add_argument("--dataset", type=Path, default=Path("../shared/fairface"), help="the shared sample")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results file (JSON)")
    parser.add_argument("--trials", type=int, default=50, help="trials per search")
    parser.add_argument("--epochs", type=int, default=20, help="most epochs per trial of a search")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated: " + ", ".join(METHODS))
    parser.add_argument("--report-only", action="store_true", help="rewrite the report, run nothing")
    args = parser.parse_args(argv)
    args.seeds = [int(seed) for seed in args.seeds.split(",")]
    args.methods = args.methods.split(",")
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    return args


def machine() -> str:
    """CPU model and cores, for the report."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs"


def versions() -> dict[str, str]:
    """The libraries every figure depends on."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in (
        "tensorflow",
        "tensorflow-cpu",
        "keras",
        "optuna",
        "keras-tuner",
        "scikit-learn",
        "dlib-bin",
        "numpy",
    ):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


@contextmanager
def locked(path: Path) -> Iterator[dict[str, Any]]:
    """The results file's content under an exclusive lock, written back (atomically) on exit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_suffix(".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        content = read_results(path)
        yield content
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps(content, indent=1, sort_keys=True) + "\n")
        partial.replace(path)


def read_results(path: Path) -> dict[str, Any]:
    """The results file's content, without the lock: every write replaces the whole file atomically."""
    return json.loads(path.read_text()) if path.exists() else {}


def check_header(content: dict[str, Any], header: dict[str, Any]) -> None:
    """Start the file, or refuse to mix figures of another budget or another test part into it."""
    if not content:
        content.update(header, runs={})
        return
    for key in ("format", "budget", "test_labels"):
        if content.get(key) != header[key]:
            raise SystemExit(
                f"{key} of the results file differs from this run's; use another --results file "
                f"(file: {str(content.get(key))[:80]}, run: {str(header[key])[:80]})"
            )


def entry(method: str, seed: int, result: Result, labels: np.ndarray, load: tuple[float, float]) -> dict:
    """What the results file keeps of one (method, seed): test figures, groups, cost, predictions."""
    predicted = np.stack([result.predicted[head] for head in HEADS], axis=1).astype(np.int64)
    metrics, groups = scores(labels, predicted)
    return {
        "method": method,
        "label": METHODS[method][0],
        "seed": seed,
        "test": metrics,
        "test_groups": {head: dict(groups[head]) for head in HEADS},
        "val_value": result.val_value,
        "trials": result.trials,
        "epochs": result.epochs,
        "seconds": result.seconds,
        "load_average": list(load),
        "note": result.note,
        "config": result.config,
        "extra": result.extra,
        "predicted": {head: encode(predicted[:, column]) for column, head in enumerate(HEADS)},
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def run_one(method: str, arrays: dict, budget: Budget) -> tuple[Result, tuple[float, float], float]:
    """Run one method; its result, the 1-minute load average before and after, its CPU seconds."""
    import keras

    label, run = METHODS[method]
    print(f"\n=== seed {budget.seed}: {label}", flush=True)
    before, cpu = os.getloadavg()[0], _cpu_seconds()
    result = run(arrays, budget)
    cpu = _cpu_seconds() - cpu
    keras.backend.clear_session()  # a long run otherwise keeps every search's graphs
    gc.collect()
    return result, (before, os.getloadavg()[0]), cpu


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return sum(part.ru_utime + part.ru_stime for part in usage)


def write_report(path: Path) -> None:
    path.with_suffix(".md").write_text(render(read_results(path)))  # no lock held while it bootstraps
    print(f"wrote {path.with_suffix('.md')}", flush=True)


def main() -> None:
    args = parse_args()
    if args.report_only:
        write_report(args.results)
        return
    root, cache_dir = args.workdir / "root", args.workdir / "cache-k2"
    print(f"FairFace root {root}: {prepare_root(args.dataset, root)} label rows kept", flush=True)
    build_cache(root, cache_dir)
    cache = open_cache(cache_dir)
    arrays = load_arrays(cache)
    labels = arrays["test"][1].astype(np.int64)
    header = {
        "format": FORMAT,
        "budget": {"trials": args.trials, "epochs": args.epochs, "patience": PATIENCE},
        "test_labels": {head: encode(labels[:, column]) for column, head in enumerate(HEADS)},
        "data": {
            "sizes": {split: len(arrays[split][1]) for split in arrays},
            "train_views": cache.views("train"),
            "embed": " ".join(embed_command(root, cache_dir)[1:]),
            "dim": cache.dim,
        },
        "machine": machine(),
        "versions": versions(),
    }
    with locked(args.results) as content:
        check_header(content, header)
    for seed in args.seeds:
        budget = Budget(args.trials, args.epochs, seed, cache_dir, args.workdir)
        for method in args.methods:
            key = f"{method}/{seed}"
            if key in read_results(args.results)["runs"]:
                print(f"{key}: in {args.results} already", flush=True)
                continue
            result, load, cpu = run_one(method, arrays, budget)
            record = entry(method, seed, result, labels, load) | {"cpu_seconds": cpu, "argv": sys.argv}
            with locked(args.results) as content:
                content["runs"][key] = record
            mean = np.mean([record["test"][head]["balanced_accuracy"] for head in HEADS])
            print(f"{key}: test mean balanced accuracy {100 * mean:.1f} in {result.seconds / 60:.1f} min")
    write_report(args.results)  # its bootstraps take a minute: once at the end (or --report-only)


if __name__ == "__main__":
    main()
