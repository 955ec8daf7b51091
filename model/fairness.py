"""Per-group metrics of the three heads, in Fairlearn's words: ``by_group``, ``group_min``, ``difference``.

FairFace exists to measure bias. Age and gender are scored within each race group, race within each gender
group; a row's group is its label, not its prediction. A group's metric is balanced accuracy as
:func:`model.metrics.head_metrics` computes it: the mean recall over the classes present in that group's
labels. A group with no rows is absent: listed under ``"absent"``, never scored 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TypedDict

import numpy as np

from data.labels import HEADS, VOCABULARIES
from model.metrics import head_metrics

# Head -> the attribute whose groups it is scored within.
SENSITIVE: Mapping[str, str] = MappingProxyType({"age": "race", "race": "gender", "gender": "race"})


class GroupMetrics(TypedDict):
    """One head's balanced accuracy per group; groups in vocabulary order, all floats JSON-safe."""

    sensitive: str  # "race" or "gender"
    by_group: dict[str, float]  # present groups only
    group_min: float
    group_min_name: str  # the first in vocabulary order among equal minima
    group_max: float
    difference: float  # group_max - group_min
    absent: list[str]  # groups with no rows
    counts: dict[str, int]  # rows per group, absent ones included as 0


class WorstGroup(TypedDict):
    """The worst-group figures over the three heads."""

    mean_group_min: float  # what `--objective fair` maximises
    max_difference: float  # what `--max-gap` bounds
    max_difference_head: str  # the first in HEADS order among equal differences


def group_metrics(labels: np.ndarray, predicted: np.ndarray) -> dict[str, GroupMetrics]:
    """Per head (HEADS order), its balanced accuracy within each group of its sensitive attribute.

    ``labels`` and ``predicted`` are (N, 3) class indices with columns age, race, gender.
    """
    true, pred = _checked(labels, predicted)
    return {head: _head_group_metrics(true, pred, head) for head in HEADS}


def worst_group_summary(metrics: Mapping[str, GroupMetrics]) -> WorstGroup:
    """The mean over heads of ``group_min``, and the largest ``difference`` and its head."""
    widest = max(metrics, key=lambda head: metrics[head]["difference"])
    return {
        "mean_group_min": float(np.mean([head["group_min"] for head in metrics.values()])),
        "max_difference": metrics[widest]["difference"],
        "max_difference_head": widest,
    }


def _head_group_metrics(true: np.ndarray, pred: np.ndarray, head: str) -> GroupMetrics:
    sensitive = SENSITIVE[head]
    column, group_column = HEADS.index(head), HEADS.index(sensitive)
    counts: dict[str, int] = {}
    by_group: dict[str, float] = {}
    for code, group in enumerate(VOCABULARIES[sensitive]):
        rows = true[:, group_column] == code
        counts[group] = int(rows.sum())
        if counts[group]:
            summary = head_metrics(true[rows, column], pred[rows, column], len(VOCABULARIES[head]))
            by_group[group] = summary["balanced_accuracy"]
    worst = min(by_group, key=by_group.__getitem__)
    best = max(by_group.values())
    return {
        "sensitive": sensitive,
        "by_group": by_group,
        "group_min": by_group[worst],
        "group_min_name": worst,
        "group_max": best,
        "difference": best - by_group[worst],
        "absent": [group for group, rows in counts.items() if rows == 0],
        "counts": counts,
    }


def _checked(labels: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    true, pred = np.asarray(labels), np.asarray(predicted)
    width = len(HEADS)
    if true.ndim != 2 or true.shape[1] != width or true.shape != pred.shape or len(true) == 0:
        raise ValueError(
            f"labels and predicted must both be (N, {width}) arrays with N >= 1 (columns "
            f"{', '.join(HEADS)}), got shapes {true.shape} and {pred.shape}."
        )
    for name, values in (("labels", true), ("predicted", pred)):
        if not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"{name} must hold integer class indices, got dtype {values.dtype}.")
        for column, head in enumerate(HEADS):
            size, low, high = len(VOCABULARIES[head]), values[:, column].min(), values[:, column].max()
            if low < 0 or high >= size:
                raise ValueError(
                    f"{name}[:, {column}] ({head}) must hold class indices in [0, {size}), "
                    f"got values from {low} to {high}."
                )
    return true.astype(np.int64), pred.astype(np.int64)
