"""The report of bench/quality.py, rendered from its whole results file: tables, intervals and the goals.

Every figure is on the test part (1,600 rows no search saw). Intervals are paired bootstraps over the test
rows: both methods are scored on the same resampled rows each round, so the interval is the difference's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from data.labels import HEADS, VOCABULARIES
from model.metrics import head_metrics, scores

BOOTSTRAP_ROUNDS = 1000
BASELINES = ("probe", "paper", "kerastuner")  # (a), (b), (f): what the search must beat
SEARCHED = ("tpe-wide", "ensemble")  # (d), (e)
WIN_MARGIN = 2.0  # points of test mean balanced accuracy, goal 1
FAIR_RAISE, FAIR_COST = 3.0, 1.0  # points, goal 2
WIDE_COST = 2.0  # wall-time ratio, goal 3
WORST_HEADS = ("age", "gender")  # the heads whose worst race group goal 2 judges
Stat = Callable[[np.ndarray, np.ndarray], float]


def encode(classes: np.ndarray) -> str:
    """Class indices (all < 10) as one digit each: 1,600 test rows are a 1,600-character string."""
    if classes.ndim != 1 or not ((classes >= 0).all() and (classes < 10).all()):
        raise ValueError(f"encode takes a vector of class indices 0-9, got {classes!r}")
    return "".join(map(str, classes.tolist()))


def decode(text: str) -> np.ndarray:
    """The inverse of ``encode``."""
    return np.frombuffer(text.encode("ascii"), np.uint8).astype(np.int64) - ord("0")


def mean_balanced(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Balanced accuracy averaged over the three heads, in points (no per-group pass: a bootstrap calls it
    2,000 times)."""
    return 100 * float(
        np.mean(
            [
                head_metrics(labels[:, column], predicted[:, column], len(VOCABULARIES[head]))[
                    "balanced_accuracy"
                ]
                for column, head in enumerate(HEADS)
            ]
        )
    )


def worst_race(labels: np.ndarray, predicted: np.ndarray) -> float:
    """The worst race group's balanced accuracy, averaged over the age and gender heads, in points."""
    metrics, _ = scores(labels, predicted)
    return 100 * float(np.mean([metrics[head]["group_min"] for head in WORST_HEADS]))


def paired(
    stat: Stat, a: np.ndarray, b: np.ndarray, labels: np.ndarray, rounds: int = BOOTSTRAP_ROUNDS
) -> tuple[float, ...]:
    """``stat`` of a minus b, and the 2.5 and 97.5 percentiles of it over bootstrap resamples of the rows."""
    rng = np.random.default_rng(0)
    differences = []
    for _ in range(rounds):
        rows = rng.integers(0, len(labels), len(labels))
        differences.append(stat(labels[rows], a[rows]) - stat(labels[rows], b[rows]))
    low, high = np.percentile(differences, [2.5, 97.5])
    return stat(labels, a) - stat(labels, b), float(low), float(high)


def _interval(values: Sequence[float]) -> str:
    difference, low, high = values
    return f"{difference:+.1f} ({low:+.1f} to {high:+.1f})"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _mean(run: Mapping[str, Any], metric: str) -> float:
    return 100 * float(np.mean([run["test"][head][metric] for head in HEADS]))


def _worst(run: Mapping[str, Any], head: str) -> str:
    groups = run["test_groups"][head]
    return f"{_pct(groups['group_min'])} ({groups['group_min_name']})"


def seed_table(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """One seed's methods: test figures per head, the worst race groups, what each cost."""
    lines = [
        "| method | val value | age bal | race bal | gender bal | mean acc | **mean bal** | age worst race "
        "| gender worst race | trials | epochs | wall | CPU |",
        "|---|" + "---|" * 12,
    ]
    for run in runs:
        heads = " | ".join(_pct(run["test"][head]["balanced_accuracy"]) for head in HEADS)
        lines.append(
            f"| {run['label']} | {_pct(run['val_value'])} | {heads} | {_mean(run, 'accuracy'):.1f} | "
            f"**{_mean(run, 'balanced_accuracy'):.1f}** | {_worst(run, 'age')} | {_worst(run, 'gender')} | "
            f"{run['trials']} | {run['epochs']} | {run['seconds'] / 60:.1f} min | "
            f"{run['cpu_seconds'] / 60:.1f} min |"
        )
    lines.append("")
    lines += [
        f"- {run['label']}: {run['note']} (load average {run['load_average'][0]:.1f} -> "
        f"{run['load_average'][1]:.1f})"
        for run in runs
    ]
    return lines


def goal_lines(
    by_method: Mapping[str, Mapping[str, Any]], labels: np.ndarray, rounds: int = BOOTSTRAP_ROUNDS
) -> list[str]:
    """One seed's verdict on each goal it has the runs for; the first word of each is met / NOT met."""

    def predicted(method: str) -> np.ndarray:
        return np.stack([decode(by_method[method]["predicted"][head]) for head in HEADS], axis=1)

    lines = []
    baselines = [method for method in BASELINES if method in by_method]
    # Without (f) a miss is still a miss (another baseline can only raise the bar); a win is provisional.
    if {"probe", "paper"} <= set(baselines) and all(method in by_method for method in SEARCHED):
        best = max(baselines, key=lambda method: _mean(by_method[method], "balanced_accuracy"))
        wins = {m: paired(mean_balanced, predicted(m), predicted(best), labels, rounds) for m in SEARCHED}
        met = any(value >= WIN_MARGIN and low > 0 for value, low, _ in wins.values())
        complete = len(baselines) == len(BASELINES)
        verdict = "met" if met and complete else "provisionally met" if met else "NOT met"
        judged = ", ".join(by_method[m]["label"][:3] for m in baselines)
        lines.append(
            f"goal 1 {verdict}: best of {judged} on test is "
            f"{by_method[best]['label'][:3]} {_mean(by_method[best], 'balanced_accuracy'):.1f}; "
            + "; ".join(f"{by_method[m]['label'][:3]} minus it {_interval(wins[m])}" for m in SEARCHED)
            + ("" if complete else " ((f) not run)")
        )
    if "fair-wide" in by_method and "tpe-wide" in by_method:
        fair, wide = by_method["fair-wide"], by_method["tpe-wide"]
        raised = {
            head: 100 * (fair["test_groups"][head]["group_min"] - wide["test_groups"][head]["group_min"])
            for head in WORST_HEADS
        }
        cost = _mean(wide, "balanced_accuracy") - _mean(fair, "balanced_accuracy")
        met = all(value >= FAIR_RAISE for value in raised.values()) and cost <= FAIR_COST
        both = paired(worst_race, predicted("fair-wide"), predicted("tpe-wide"), labels, rounds)
        lines.append(
            f"goal 2 {'met' if met else 'NOT met'}: (g) - (d) worst race group, age {raised['age']:+.1f}, "
            f"gender {raised['gender']:+.1f} (their mean {_interval(both)}); mean balanced accuracy "
            f"{-cost:+.1f}"
        )
    timed = [by_method[m] for m in ("tpe-wide", "tpe-default") if m in by_method]
    if len(timed) == 2 and not any(run.get("extra", {}).get("resumed_from") for run in timed):
        wide, narrow = timed
        ratio = wide["seconds"] / narrow["seconds"]
        cpu = wide["cpu_seconds"] / narrow["cpu_seconds"]
        minutes = f"{wide['seconds'] / 60:.1f} vs {narrow['seconds'] / 60:.1f} min"
        lines.append(
            f"goal 3 {'met' if ratio <= WIDE_COST else 'NOT met'}: wide / default search wall time "
            f"{ratio:.2f} (CPU time {cpu:.2f}; {minutes})"
        )
    return lines


def render(content: Mapping[str, Any], rounds: int = BOOTSTRAP_ROUNDS) -> str:
    """The whole report of a results file."""
    if not content.get("runs"):
        return "no results yet\n"
    labels = np.stack([decode(content["test_labels"][head]) for head in HEADS], axis=1)
    budget, data = content["budget"], content["data"]
    seeds = sorted({run["seed"] for run in content["runs"].values()})
    out = [
        "# bench/quality.py: search quality on real faces (dlib-resnet base, shared FairFace sample)",
        "",
        f"- machine: {content['machine']}; {', '.join(f'{k} {v}' for k, v in content['versions'].items())}",
        f"- data: {data['sizes']} rows ({data['dim']}-d), train with {data['train_views'] - 1} augmented "
        f"views per image: `hpo {data['embed']}`",
        f"- budget of every search: {budget['trials']} trials x up to {budget['epochs']} epochs, early "
        f"stopping patience {budget['patience']}; no search starts from the Table II head",
        f"- intervals: 95 % paired bootstrap over the test rows, {rounds} rounds",
        "",
    ]
    order = list(dict.fromkeys(run["method"] for run in sorted(content["runs"].values(), key=_order)))
    verdicts: dict[int, list[str]] = {}
    for seed in seeds:
        by_method = {run["method"]: run for run in content["runs"].values() if run["seed"] == seed}
        runs = [by_method[method] for method in order if method in by_method]
        verdicts[seed] = goal_lines(by_method, labels, rounds)
        out += [f"## Seed {seed}", "", *seed_table(runs), "", *(f"- {line}" for line in verdicts[seed]), ""]
    out += ["## Goals over the seeds done", ""]
    for goal in (1, 2, 3):
        name = f"goal {goal}"
        judged = {s: line for s, lines in verdicts.items() for line in lines if line.startswith(name)}
        met = [seed for seed, line in judged.items() if line.startswith(f"{name} met")]
        maybe = [seed for seed, line in judged.items() if line.startswith(f"{name} provisionally met")]
        out.append(
            f"- {name}: met on {len(met)} of {len(judged)} seed(s) judged ({_seeds(sorted(judged))})"
            + (f": seed(s) {_seeds(met)}" if met else "")
            + (f" (provisionally on {_seeds(maybe)}: a baseline not run yet)" if maybe else "")
        )
    return "\n".join(out) + "\n"


def _order(run: Mapping[str, Any]) -> str:
    return run["label"]


def _seeds(seeds: list[int]) -> str:
    return ", ".join(map(str, seeds)) or "none"
