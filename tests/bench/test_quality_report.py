"""bench/quality_report.py: the stored predictions, the paired bootstrap and the goals' verdicts."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from data.labels import HEADS, VOCABULARIES
from model.metrics import scores

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from quality_report import decode, encode, goal_lines, mean_balanced, paired, render

ROWS = 400
ROUNDS = 40  # bootstrap rounds: enough for a clear win's interval, cheap enough for a unit test


def labels(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, len(VOCABULARIES[head]), ROWS) for head in HEADS], axis=1)


def noisy(truth: np.ndarray, wrong: float, seed: int) -> np.ndarray:
    """``truth`` with a share ``wrong`` of its entries replaced by random classes."""
    rng = np.random.default_rng(seed)
    guess = truth.copy()
    for column, head in enumerate(HEADS):
        rows = rng.random(len(truth)) < wrong
        guess[rows, column] = rng.integers(0, len(VOCABULARIES[head]), rows.sum())
    return guess


def run(method: str, label: str, predicted: np.ndarray, truth: np.ndarray, seconds: float = 60.0) -> dict:
    metrics, groups = scores(truth, predicted)
    return {
        "method": method,
        "label": label,
        "seed": 0,
        "test": metrics,
        "test_groups": groups,
        "val_value": 0.5,
        "trials": 50,
        "epochs": 100,
        "seconds": seconds,
        "cpu_seconds": 2 * seconds,
        "load_average": [1.0, 1.0],
        "note": "made by the test",
        "predicted": {head: encode(predicted[:, column]) for column, head in enumerate(HEADS)},
    }


def test_predictions_round_trip_and_refuse_what_one_digit_cannot_hold() -> None:
    classes = np.array([0, 9, 3, 3, 1])
    assert decode(encode(classes)).tolist() == classes.tolist()
    with pytest.raises(ValueError, match="class indices 0-9"):
        encode(np.array([1, 10]))


def test_paired_bootstrap_is_zero_for_equal_predictions_and_positive_for_a_clear_win() -> None:
    truth = labels()
    same = noisy(truth, 0.5, seed=1)
    assert paired(mean_balanced, same, same, truth, ROUNDS) == (0.0, 0.0, 0.0)
    better = noisy(truth, 0.1, seed=2)
    difference, low, high = paired(mean_balanced, better, same, truth, ROUNDS)
    assert 0 < low < difference < high
    assert difference == pytest.approx(mean_balanced(truth, better) - mean_balanced(truth, same))


def seed_runs(truth: np.ndarray, wide_wrong: float, wide_seconds: float) -> dict[str, dict]:
    baseline = noisy(truth, 0.5, seed=3)
    return {
        "probe": run("probe", "(a) probe", baseline, truth),
        "paper": run("paper", "(b) paper", noisy(truth, 0.6, seed=4), truth),
        "kerastuner": run("kerastuner", "(f) kt", noisy(truth, 0.55, seed=5), truth),
        "tpe-default": run("tpe-default", "(c) default", baseline, truth, seconds=100.0),
        "tpe-wide": run("tpe-wide", "(d) wide", noisy(truth, wide_wrong, seed=6), truth, wide_seconds),
        "ensemble": run("ensemble", "(e) ensemble", noisy(truth, wide_wrong, seed=7), truth),
        "fair-wide": run("fair-wide", "(g) fair", noisy(truth, wide_wrong, seed=8), truth),
    }


def test_goals_follow_the_figures() -> None:
    truth = labels()
    won = goal_lines(seed_runs(truth, wide_wrong=0.1, wide_seconds=150.0), truth, ROUNDS)
    assert won[0].startswith("goal 1 met: best of (a), (b), (f) on test is (a)")
    assert won[2].startswith("goal 3 met: wide / default search wall time 1.50 (CPU time 1.50")
    lost = goal_lines(seed_runs(truth, wide_wrong=0.5, wide_seconds=300.0), truth, ROUNDS)
    assert lost[0].startswith("goal 1 NOT met")
    assert lost[2].startswith("goal 3 NOT met: wide / default search wall time 3.00")
    assert lost[1].startswith("goal 2 NOT met")  # same noise: no 3-point raise of the worst group


def test_a_seed_without_all_runs_judges_only_what_it_has() -> None:
    truth = labels()
    runs = seed_runs(truth, wide_wrong=0.1, wide_seconds=150.0)
    del runs["kerastuner"], runs["fair-wide"]
    lines = goal_lines(runs, truth, ROUNDS)
    assert [line.split()[1] for line in lines] == ["1", "3"]
    # Without (f) a win can only be provisional; a miss stands (another baseline only raises the bar).
    assert lines[0].startswith("goal 1 provisionally met: best of (a), (b) on test is (a)")
    assert lines[0].endswith(" ((f) not run)")
    lost = seed_runs(truth, wide_wrong=0.5, wide_seconds=150.0)
    del lost["kerastuner"]
    assert goal_lines(lost, truth, ROUNDS)[0].startswith("goal 1 NOT met: best of (a), (b) on test")
    del runs["paper"]
    runs["tpe-wide"]["extra"] = {"resumed_from": 20}  # its wall time covers 30 of its 50 trials
    assert goal_lines(runs, truth, ROUNDS) == []


def test_render_lists_every_seed_and_counts_the_seeds_that_met_a_goal() -> None:
    truth = labels()
    content = {
        "budget": {"trials": 50, "epochs": 20, "patience": 5},
        "data": {"sizes": {"test": ROWS}, "dim": 128, "train_views": 3, "embed": "embed"},
        "machine": "test machine",
        "versions": {"numpy": np.__version__},
        "test_labels": {head: encode(truth[:, column]) for column, head in enumerate(HEADS)},
        "runs": {},
    }
    for seed, wrong in ((0, 0.1), (1, 0.5), (2, 0.1)):
        for method, entry in seed_runs(truth, wrong, 150.0).items():
            if (method, seed) != ("kerastuner", 2):
                content["runs"][f"{method}/{seed}"] = entry | {"seed": seed}
    text = render(content, ROUNDS)
    assert "## Seed 0" in text and "## Seed 1" in text
    assert "- goal 1: met on 1 of 3 seed(s) judged (0, 1, 2): seed(s) 0 (provisionally on 2: a" in text
    assert "- goal 3: met on 3 of 3 seed(s) judged (0, 1, 2): seed(s) 0, 1, 2\n" in text
    assert render({"runs": {}}) == "no results yet\n"
