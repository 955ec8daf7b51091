from __future__ import annotations

import json

import numpy as np
import pytest

from model.metrics import group_metrics, worst_group_summary

# Columns age, race, gender. Races present: White (0), Black (1), East Asian (3); the other four are absent.
LABELS = np.array(
    [
        [3, 0, 1],
        [3, 0, 0],
        [4, 0, 1],
        [3, 1, 0],
        [5, 1, 1],
        [2, 3, 0],
        [2, 3, 1],
        [6, 3, 0],
    ],
    dtype=np.int8,
)
PREDICTED = np.array(
    [
        [3, 0, 1],
        [4, 0, 0],
        [4, 1, 0],
        [3, 1, 0],
        [3, 3, 1],
        [2, 3, 1],
        [2, 0, 1],
        [6, 3, 0],
    ],
    dtype=np.int64,
)
ABSENT_RACES = ["Latino_Hispanic", "Southeast Asian", "Indian", "Middle Eastern"]
RACE_COUNTS = {
    "White": 3,
    "Black": 2,
    "Latino_Hispanic": 0,
    "East Asian": 3,
    "Southeast Asian": 0,
    "Indian": 0,
    "Middle Eastern": 0,
}


def test_group_metrics_equal_hand_computation() -> None:
    metrics = group_metrics(LABELS, PREDICTED)
    # Age by race. White: rows 0-2, true ages 3,3,4, predicted 3,4,4: recall 1/2 (age 3) and 1 (age 4).
    # Black: true 3,5, predicted 3,3: recalls 1 and 0. East Asian: all right.
    assert metrics["age"] == {
        "sensitive": "race",
        "by_group": {"White": 0.75, "Black": 0.5, "East Asian": 1.0},
        "group_min": 0.5,
        "group_min_name": "Black",
        "group_max": 1.0,
        "difference": 0.5,
        "absent": ABSENT_RACES,
        "counts": RACE_COUNTS,
    }
    # Race by gender. Female (rows 1, 3, 5, 7): all right. Male (rows 0, 2, 4, 6): true races 0,0,1,3,
    # predicted 0,1,3,0: recalls 1/2, 0, 0 over the three races present, so 1/6 (not 1/14 over seven).
    assert metrics["race"] == {
        "sensitive": "gender",
        "by_group": {"Female": 1.0, "Male": 1 / 6},
        "group_min": 1 / 6,
        "group_min_name": "Male",
        "group_max": 1.0,
        "difference": 5 / 6,
        "absent": [],
        "counts": {"Female": 4, "Male": 4},
    }
    # Gender by race. White: true 1,0,1, predicted 1,0,0: Female 1, Male 1/2. Black: both right.
    # East Asian: true 0,1,0, predicted 1,1,0: Female 1/2, Male 1. White and East Asian tie at the minimum.
    assert metrics["gender"] == {
        "sensitive": "race",
        "by_group": {"White": 0.75, "Black": 1.0, "East Asian": 0.75},
        "group_min": 0.75,
        "group_min_name": "White",
        "group_max": 1.0,
        "difference": 0.25,
        "absent": ABSENT_RACES,
        "counts": RACE_COUNTS,
    }


def test_group_metrics_group_without_rows_is_absent_not_zero() -> None:
    metrics = group_metrics(LABELS, PREDICTED)
    for head in ("age", "gender"):
        assert "Indian" in metrics[head]["absent"]
        assert "Indian" not in metrics[head]["by_group"]
        assert metrics[head]["counts"]["Indian"] == 0
    assert metrics["age"]["group_min"] == 0.5


def test_group_metrics_one_group_has_zero_difference() -> None:
    labels = np.array([[3, 5, 0], [4, 5, 0]], dtype=np.int8)
    predicted = np.array([[3, 5, 0], [3, 5, 0]])
    race = group_metrics(labels, predicted)["race"]
    assert race["by_group"] == {"Female": 1.0}
    assert race["absent"] == ["Male"]
    assert (race["group_min"], race["group_max"], race["difference"]) == (1.0, 1.0, 0.0)
    assert group_metrics(labels, predicted)["age"]["by_group"] == {"Indian": 0.5}


def test_group_metrics_is_json_safe() -> None:
    metrics = group_metrics(LABELS, PREDICTED)
    assert json.loads(json.dumps(metrics)) == metrics


def test_worst_group_summary_means_minima_and_takes_widest_gap() -> None:
    summary = worst_group_summary(group_metrics(LABELS, PREDICTED))
    assert summary == {
        "mean_group_min": pytest.approx((0.5 + 1 / 6 + 0.75) / 3, rel=1e-15),
        "max_difference": 5 / 6,
        "max_difference_head": "race",
    }
    assert isinstance(summary["mean_group_min"], float)


def test_group_metrics_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match=r"must both be \(N, 3\) arrays .* got shapes \(8, 3\) and \(7, 3\)"):
        group_metrics(LABELS, PREDICTED[:7])


def test_group_metrics_empty_raises() -> None:
    empty = np.zeros((0, 3), dtype=np.int8)
    with pytest.raises(ValueError, match=r"N >= 1 .* got shapes \(0, 3\) and \(0, 3\)"):
        group_metrics(empty, empty)


def test_group_metrics_race_out_of_range_raises() -> None:
    labels = LABELS.copy()
    labels[0, 1] = 7
    with pytest.raises(
        ValueError,
        match=r"labels\[:, 1\] \(race\) must hold class indices in \[0, 7\), got values from 0 to 7",
    ):
        group_metrics(labels, PREDICTED)


def test_group_metrics_float_predictions_raise() -> None:
    with pytest.raises(ValueError, match="predicted must hold integer class indices, got dtype float64"):
        group_metrics(LABELS, PREDICTED.astype(np.float64))
