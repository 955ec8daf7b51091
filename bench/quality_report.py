"""The report of bench/quality.py: the results table, TPE vs random convergence, and the issue's goals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from quality_data import scores
from quality_search import SearchOutcome, trials_to_reach

from data.labels import HEADS

GOAL_MARGIN = 0.03  # the searched head must beat the paper's head and the probe by 3 points
BOOTSTRAP_ROUNDS = 1000


@dataclass(frozen=True)
class Row:
    """One method's line of the table."""

    method: str
    test: dict[str, dict[str, float]]  # per head: accuracy, balanced_accuracy, macro_f1
    val_value: float  # mean validation balanced accuracy of the chosen head
    trials: int
    epochs: int  # epochs trained over all trials (0: not a network)
    seconds: float | None  # None: a search reused from an earlier run
    note: str
    config: dict[str, object] | None = None
    predicted: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # test predictions per head

    def mean(self, metric: str) -> float:
        """The test metric averaged over the three heads."""
        return float(np.mean([self.test[head][metric] for head in HEADS]))


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def markdown_table(rows: Sequence[Row]) -> str:
    """Test accuracy / balanced accuracy per head and their means, with what each method cost."""
    heads = " | ".join(f"{head} acc | {head} bal" for head in HEADS)
    lines = [
        f"| method | val mean bal | {heads} | mean acc | **mean bal** | trials | epochs | wall |",
        "|---|" + "---|" * (2 * len(HEADS) + 6),
    ]
    for row in rows:
        cells = " | ".join(
            f"{_pct(row.test[head]['accuracy'])} | {_pct(row.test[head]['balanced_accuracy'])}"
            for head in HEADS
        )
        lines.append(
            f"| {row.method} | {_pct(row.val_value)} | {cells} | {_pct(row.mean('accuracy'))} | "
            f"**{_pct(row.mean('balanced_accuracy'))}** | {row.trials} | {row.epochs} | "
            f"{'reused' if row.seconds is None else f'{row.seconds / 60:.1f} min'} |"
        )
    lines.append("")
    lines += [f"- {row.method}: {row.note}" for row in rows]
    return "\n".join(lines)


def best_so_far(values: Sequence[float | None], count: int) -> str:
    """The best COMPLETE value among the first ``count`` trials, in percent ("-" when none)."""
    complete = [value for value in values[:count] if value is not None]
    return _pct(max(complete)) if complete else "-"


def reach_lines(outcomes: Mapping[str, SearchOutcome]) -> list[str]:
    """Trials TPE and random search took to reach random's final best validation value; bests so far."""
    random, tpe = outcomes["random"], outcomes["tpe"]
    target = random.val_value
    by_random, by_tpe = trials_to_reach(random.values, target), trials_to_reach(tpe.values, target)
    reached = (
        f"reached it after {by_tpe} trials"
        if by_tpe is not None
        else f"did not reach it within its {len(tpe.values)} trials"
    )
    pruned = sum(value is None for value in tpe.values)
    return [
        f"- random search's final best validation value {_pct(target)} % was found by random search "
        f"after {by_random} of its {len(random.values)} trials; TPE + pruning {reached} "
        f"(TPE's own best: {_pct(tpe.val_value)} %; {pruned} of its {len(tpe.values)} trials pruned; "
        f"epochs trained: TPE {tpe.epochs}, random {random.epochs}, KerasTuner "
        f"{outcomes['kerastuner'].epochs})."
    ] + [
        f"- best validation value after {count} trials: "
        + ", ".join(f"{name} {best_so_far(outcome.values, count)}" for name, outcome in outcomes.items())
        for count in sorted({5, 10, 15, 20, len(random.values)})
        if count <= len(random.values)
    ]


def mean_balanced(predicted: Mapping[str, np.ndarray], labels: np.ndarray) -> float:
    """Balanced accuracy averaged over the three heads."""
    return float(np.mean([value["balanced_accuracy"] for value in scores(dict(predicted), labels).values()]))


def paired_difference(better: Row, other: Row, labels: np.ndarray, *, seed: int = 0) -> str:
    """``better`` minus ``other`` in test mean balanced accuracy, with its 95 % paired bootstrap interval.

    Both are scored on the same resampled test rows each round, so the interval is that of the difference.
    """
    rng = np.random.default_rng(seed)
    rounds = []
    for _ in range(BOOTSTRAP_ROUNDS):
        rows = rng.integers(0, len(labels), len(labels))
        rounds.append(
            mean_balanced({head: guess[rows] for head, guess in better.predicted.items()}, labels[rows])
            - mean_balanced({head: guess[rows] for head, guess in other.predicted.items()}, labels[rows])
        )
    difference = better.mean("balanced_accuracy") - other.mean("balanced_accuracy")
    low, high = np.percentile(rounds, [2.5, 97.5])
    return f"{100 * difference:+.1f} points (95 % interval {100 * low:+.1f} to {100 * high:+.1f})"


def goals(
    rows: Sequence[Row], outcomes: Mapping[str, SearchOutcome], trials: int, labels: np.ndarray
) -> list[str]:
    """The issue's three goals, each judged on this run's figures; ``labels`` are the test labels."""
    by_method = {row.method[:3]: row for row in rows}
    searched, paper, probe, tuner = (by_method[key] for key in ("(b)", "(a)", "(e)", "(d)"))
    margin = min(searched.mean("balanced_accuracy") - row.mean("balanced_accuracy") for row in (paper, probe))
    target = outcomes["random"].val_value
    by_tpe = trials_to_reach(outcomes["tpe"].values, target)
    by_random = trials_to_reach(outcomes["random"].values, target)
    fast = by_tpe is not None and by_tpe <= trials / 2
    at_least = searched.mean("balanced_accuracy") >= tuner.mean("balanced_accuracy")
    return [
        f"- goal 1 (searched head beats the Table II head and the probe by >= 3 points of test mean "
        f"balanced accuracy): {'met' if margin >= GOAL_MARGIN else 'NOT met'} -- "
        f"(b) - (a) {paired_difference(searched, paper, labels)}; "
        f"(b) - (e) {paired_difference(searched, probe, labels)}",
        f"- goal 2 (TPE + pruning reaches random's final best in <= half the trials, {trials // 2} of "
        f"{trials}): {'met' if fast else 'NOT met'} -- trials needed: TPE {by_tpe or 'never'}, "
        f"random {by_random}",
        f"- goal 3 (face-hpo's best >= KerasTuner's, test mean balanced accuracy): "
        f"{'met' if at_least else 'NOT met'} -- (b) - (d) {paired_difference(searched, tuner, labels)}; "
        f"validation {_pct(searched.val_value)} vs {_pct(tuner.val_value)}",
    ]
