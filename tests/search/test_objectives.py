from __future__ import annotations

import optuna
import pytest

from data.errors import ConfigError
from search.objectives import OBJECTIVES, get_objective

METRICS = {
    "age": {"accuracy": 0.5, "balanced_accuracy": 0.4, "macro_f1": 0.3},
    "race": {"accuracy": 0.6, "balanced_accuracy": 0.5, "macro_f1": 0.4},
    "gender": {"accuracy": 0.9, "balanced_accuracy": 0.75, "macro_f1": 0.7},
}


def test_objective_balanced_accuracy_is_mean_over_heads() -> None:
    assert get_objective("balanced_accuracy").value(METRICS) == pytest.approx(0.55, rel=1e-12)


def test_objective_accuracy_is_mean_over_heads() -> None:
    assert get_objective("accuracy").value(METRICS) == pytest.approx(2.0 / 3.0, rel=1e-12)


def test_objective_pareto_is_balanced_accuracy_per_head() -> None:
    assert get_objective("pareto").value(METRICS) == (0.4, 0.5, 0.75)
    assert tuple(OBJECTIVES) == ("balanced_accuracy", "accuracy", "pareto", "fair")


def test_objective_unknown_objective_raises() -> None:
    with pytest.raises(
        ConfigError, match="objective must be one of balanced_accuracy, accuracy, pareto, fair, got 'f1'"
    ):
        get_objective("f1")


@pytest.mark.parametrize(
    ("name", "values", "prunable", "rank_by"),
    [
        ("balanced_accuracy", 1, True, "balanced_accuracy"),
        ("accuracy", 1, True, "accuracy"),
        ("pareto", 3, False, "balanced_accuracy"),
    ],
)
def test_objective_directions_pruning_and_epoch_rank(
    name: str, values: int, prunable: bool, rank_by: str
) -> None:
    objective = get_objective(name)
    assert objective.directions == [optuna.study.StudyDirection.MAXIMIZE] * values
    assert (objective.prunable, objective.rank_by, len(objective.metric_names)) == (prunable, rank_by, values)


def test_objective_metric_names_label_the_dashboard_axes() -> None:
    assert get_objective("balanced_accuracy").metric_names == ["mean balanced accuracy (val)"]
    assert get_objective("accuracy").metric_names == ["mean accuracy (val)"]
    assert get_objective("pareto").metric_names == [
        "age balanced accuracy (val)",
        "race balanced accuracy (val)",
        "gender balanced accuracy (val)",
    ]


def test_objective_epoch_value_of_a_pareto_objective_is_refused() -> None:
    with pytest.raises(AssertionError, match="objective 'pareto' reports no single epoch value"):
        get_objective("pareto").epoch_value(METRICS)


def test_fair_objective_is_the_mean_worst_group_balanced_accuracy() -> None:
    metrics = {
        head: {**values, "group_min": low}
        for (head, values), low in zip(METRICS.items(), (0.1, 0.2, 0.6), strict=True)
    }
    fair = get_objective("fair")
    assert fair.value(metrics) == pytest.approx(0.3, rel=1e-12)
    assert (fair.rank_by, fair.prunable, fair.metric_names) == (
        "group_min",
        True,
        ["mean worst-group balanced accuracy (val)"],
    )
