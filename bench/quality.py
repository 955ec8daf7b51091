"""Benchmark of search quality on real faces (issue 6, item 2): does the search beat the paper's head?

On the shared FairFace sample embedded once by the dlib-resnet base (``hpo embed --base dlib-resnet
--split paper --augment-views 0``: train 80 % of the 8,000 train images, test the other 20 % -- never seen
by a search --, val the 2,000 official val images, on which every search scores), at one budget of
``--trials`` x up to ``--epochs`` epochs (early stopping patience 5) it trains and scores on test:

(a) the paper's Table II head, trained as the paper did (Adam 1e-3, batch 256, class weights 1.0);
(b) the best head of a face-hpo study, TPE + Hyperband pruning (stored head of the best trial);
(c) the same with random sampling and no pruner;
(d) KerasTuner RandomSearch over the same space, losses and objective (bench/quality_kt.py);
(e) a logistic-regression probe per head (C and class weighting chosen on val).

It prints a Markdown table of test accuracy and balanced accuracy per head and their means, how many
trials TPE and random search needed to reach random's final best validation value, the goals (with
paired bootstrap intervals over the test rows), and the noise floor: (a) and (b)'s configs retrained
with ``--spread-seeds`` other training seeds.
The cache, studies and KerasTuner project live in ``--workdir`` and are reused by later runs.

    .venv/bin/python bench/quality.py --workdir work/bench-quality --trials 30 --epochs 20 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from search.tfquiet import import_tensorflow_quietly

import_tensorflow_quietly()

from quality_data import (  # noqa: E402
    AUGMENT_VIEWS,
    build_cache,
    embed_command,
    head_predictions,
    prepare_root,
    scores,
)
from quality_report import Row, goals, markdown_table, reach_lines  # noqa: E402
from quality_search import PATIENCE, SearchOutcome, run_study  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import Pipeline, make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from data.cache import Cache, open_cache  # noqa: E402
from data.labels import HEADS, VOCABULARIES  # noqa: E402
from model.metrics import head_metrics, mean_metric  # noqa: E402
from model.paper import PAPER_HEAD  # noqa: E402
from model.train import train_head  # noqa: E402
from model.train_data import TrainData  # noqa: E402

SPLITS = ("train", "val", "test")
PAPER_EPOCHS = 30  # the paper trained 30 epochs with early stopping, whatever the searches' budget
PROBE_C = (0.001, 0.01, 0.1, 1.0)
PROBE_WEIGHTING = (None, "balanced")
SPREAD_FIRST_SEED = 100  # above every trial's training seed (seed + trial number) at the budgets used
Arrays = dict[str, tuple[np.ndarray, np.ndarray]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("work/bench-quality"))
    parser.add_argument("--dataset", type=Path, default=Path("../shared/fairface"), help="the shared sample")
    parser.add_argument("--trials", type=int, default=30, help="trials per search")
    parser.add_argument("--epochs", type=int, default=20, help="most epochs per trial of a search")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--spread-seeds", type=int, default=5, help="retrain (a) and (b)'s config with this many other seeds"
    )
    return parser.parse_args(argv)


def load_arrays(cache: Cache) -> Arrays:
    """(clean embeddings, labels) of each split, in memory."""
    return {
        split: (np.array(cache.embeddings(split), np.float32), np.array(cache.labels(split)))
        for split in SPLITS
    }


def paper_head(data: TrainData, arrays: Arrays, *, seed: int) -> Row:
    """(a) Table II, Adam 1e-3, batch 256, class weights 1.0, 30 epochs, patience 5, best epoch on val."""
    print(f"[paper] training the Table II head, up to {PAPER_EPOCHS} epochs", flush=True)
    started = time.monotonic()
    result = train_head(PAPER_HEAD, data, epochs=PAPER_EPOCHS, seed=seed, patience=PATIENCE)
    seconds = time.monotonic() - started
    value = mean_metric(result.metrics, "balanced_accuracy")
    test_x, test_y = arrays["test"]
    predicted = head_predictions(result.model, test_x)
    return Row(
        method="(a) paper's Table II head",
        test=scores(predicted, test_y),
        val_value=value,
        trials=1,
        epochs=result.epochs_run,
        seconds=seconds,
        note=f"best epoch {result.best_epoch + 1} of {result.epochs_run}",
        config=PAPER_HEAD.to_dict(),
        predicted=predicted,
    )


def probe_head(arrays: Arrays, column: int) -> tuple[Pipeline, str]:
    """The probe of one head: the (C, class weighting) of best validation balanced accuracy."""
    (train_x, train_y), (val_x, val_y) = arrays["train"], arrays["val"]
    classes = len(VOCABULARIES[HEADS[column]])
    best: tuple[float, Pipeline, str] | None = None
    for c in PROBE_C:
        for weighting in PROBE_WEIGHTING:
            model = make_pipeline(
                StandardScaler(), LogisticRegression(C=c, class_weight=weighting, max_iter=2000)
            )
            model.fit(train_x, train_y[:, column])
            value = head_metrics(val_y[:, column], model.predict(val_x), classes)["balanced_accuracy"]
            if best is None or value > best[0]:
                best = (value, model, f"{HEADS[column]} C={c} {weighting or 'unweighted'}")
    assert best is not None
    return best[1], best[2]


def probe(arrays: Arrays) -> Row:
    """(e) Standardised embeddings -> LogisticRegression per head; C and class weighting chosen on val."""
    print("[probe] logistic regression per head", flush=True)
    started = time.monotonic()
    models, chosen = zip(*(probe_head(arrays, column) for column in range(len(HEADS))), strict=True)
    (val_x, val_y), (test_x, test_y) = arrays["val"], arrays["test"]
    value = mean_metric(
        scores({head: model.predict(val_x) for head, model in zip(HEADS, models, strict=True)}, val_y),
        "balanced_accuracy",
    )
    predicted = {head: model.predict(test_x) for head, model in zip(HEADS, models, strict=True)}
    return Row(
        method="(e) logistic-regression probe",
        test=scores(predicted, test_y),
        val_value=value,
        trials=len(PROBE_C) * len(PROBE_WEIGHTING),
        epochs=0,
        seconds=time.monotonic() - started,
        note="; ".join(chosen),
        predicted=predicted,
    )


def search_row(method: str, outcome: SearchOutcome, arrays: Arrays) -> Row:
    """A search's line: its best head scored on the test part."""
    test_x, test_y = arrays["test"]
    predicted = head_predictions(outcome.model, test_x)
    return Row(
        method=method,
        test=scores(predicted, test_y),
        val_value=outcome.val_value,
        trials=len(outcome.values),
        epochs=outcome.epochs,
        seconds=outcome.seconds,
        note=outcome.note,
        config=outcome.config.to_dict(),
        predicted=predicted,
    )


def run_searches(args: argparse.Namespace, cache_dir: Path, arrays: Arrays) -> dict[str, SearchOutcome]:
    """(b) TPE + Hyperband, (c) random without pruning, (d) KerasTuner, all at the same budget."""
    budget = {"trials": args.trials, "epochs": args.epochs, "seed": args.seed}
    common = {"cache_dir": cache_dir, "workdir": args.workdir, **budget}
    outcomes = {
        "tpe": run_study("tpe", sampler="tpe", pruner="hyperband", **common),
        "random": run_study("random", sampler="random", pruner="none", **common),
    }
    from quality_kt import run_kerastuner

    kt_data = {split: arrays[split] for split in ("train", "val")}
    outcomes["kerastuner"] = run_kerastuner(data=kt_data, workdir=args.workdir, **budget)
    return outcomes


def seed_spread(data: TrainData, outcome: SearchOutcome, args: argparse.Namespace) -> list[str]:
    """The noise floor: the validation value of one head config retrained with training seeds of no trial."""
    seeds = range(SPREAD_FIRST_SEED, SPREAD_FIRST_SEED + args.spread_seeds)
    if not seeds:
        return []
    print(f"[spread] retraining (a) and (b)'s config with seeds {seeds.start}-{seeds.stop - 1}", flush=True)
    parts = []
    for name, config, epochs in (
        ("(a) Table II", PAPER_HEAD, PAPER_EPOCHS),
        ("(b)'s best", outcome.config, args.epochs),
    ):
        values = []
        for seed in seeds:
            result = train_head(config, data, epochs=epochs, seed=seed, patience=PATIENCE)
            value = mean_metric(result.metrics, "balanced_accuracy")
            assert not isinstance(value, tuple)
            values.append(100 * value)
        parts.append(f"{name} {min(values):.1f}-{max(values):.1f} (mean {np.mean(values):.1f})")
    return [
        f"- seed noise: validation value of one config retrained with seeds {seeds.start}-{seeds.stop - 1}: "
        + "; ".join(parts)
    ]


def machine() -> str:
    """CPU model, cores and load, for the report."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return f"{model}, {os.cpu_count()} CPUs, load average {load}"


LABELS = {
    "tpe": "(b) face-hpo TPE + Hyperband pruning",
    "random": "(c) face-hpo random search, no pruning",
    "kerastuner": "(d) KerasTuner RandomSearch",
}


def report(
    args: argparse.Namespace,
    rows: list[Row],
    outcomes: dict[str, SearchOutcome],
    setup: str,
    labels: np.ndarray,
) -> str:
    """The whole report: setup, table, convergence, goals (``labels``: the test part's)."""
    return "\n".join(
        [
            setup,
            f"budget: {args.trials} trials x up to {args.epochs} epochs per search, patience {PATIENCE}, "
            f"seed {args.seed}",
            "",
            markdown_table(rows),
            "",
            *reach_lines(outcomes),
            *goals(rows, outcomes, args.trials, labels),
        ]
    )


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    root, cache_dir = args.workdir / "root", args.workdir / f"cache-k{AUGMENT_VIEWS}"
    print(f"FairFace root {root}: {prepare_root(args.dataset, root)} label rows kept", flush=True)
    build_cache(root, cache_dir)
    cache = open_cache(cache_dir)
    arrays = load_arrays(cache)
    sizes = {split: len(arrays[split][1]) for split in SPLITS}
    setup = (
        f"machine: {machine()}\ndata: {sizes} ({cache.dim}-d dlib-resnet embeddings of "
        f"`{' '.join(embed_command(root, cache_dir)[1:])}`)"
    )
    print(setup, flush=True)
    data = TrainData.from_cache(cache)
    rows = [probe(arrays), paper_head(data, arrays, seed=args.seed)]
    outcomes = run_searches(args, cache_dir, arrays)
    rows += [search_row(LABELS[key], outcome, arrays) for key, outcome in outcomes.items()]
    text = report(args, rows, outcomes, setup, arrays["test"][1])
    text += "".join("\n" + line for line in seed_spread(data, outcomes["tpe"], args))
    text += f"\ntotal wall time {(time.monotonic() - started) / 60:.1f} min; machine at the end: {machine()}"
    print("\n" + text, flush=True)
    stem = args.workdir / f"quality-t{args.trials}-e{args.epochs}-s{args.seed}"
    stem.with_suffix(".md").write_text(text + "\n")
    plain = [{key: value for key, value in asdict(row).items() if key != "predicted"} for row in rows]
    stem.with_suffix(".json").write_text(json.dumps(plain, indent=1) + "\n")
    print(f"wrote {stem}.md and {stem}.json", file=sys.stderr)


if __name__ == "__main__":
    main()
