"""Classification metrics of the heads, per head and per group, in numpy only (no TensorFlow, no
scikit-learn).

Conventions follow scikit-learn's defaults so figures compare with the paper's tables: a precision whose
class is never predicted, or a recall whose class never occurs, counts as 0; balanced accuracy is the mean
recall over the classes present in ``y_true``; macro-F1 averages over the classes present in ``y_true`` or
``y_pred``.

Per-group metrics use Fairlearn's words (``by_group``, ``group_min``, ``difference``). FairFace exists to
measure bias: age and gender are scored within each race group, race within each gender group; a row's
group is its label, not its prediction. A group with no rows is absent: listed under ``"absent"``, never
scored 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypedDict

import numpy as np

from data.labels import HEADS, VOCABULARIES

METRICS = ("accuracy", "balanced_accuracy", "macro_f1")  # what head_metrics gives for each head
# What `scores` adds per head from its per-group metrics: the worst group's balanced accuracy, the gap.
GROUP_METRICS = ("group_min", "difference")
Metrics = Mapping[str, Mapping[str, float]]  # head -> metric -> value


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(k, k) int64 counts, rows = true class, columns = predicted class."""
    true, pred = _checked(y_true, y_pred, num_classes)
    counts = np.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def head_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, float]:
    """``{"accuracy", "balanced_accuracy", "macro_f1"}`` of integer predictions against integer labels."""
    return _summary(confusion_matrix(y_true, y_pred, num_classes))


def mean_metric(metrics: Metrics, name: str) -> float:
    """The mean over the three heads of one metric (e.g. ``balanced_accuracy``) of per-head metrics."""
    return float(np.mean([metrics[head][name] for head in HEADS]))


def classification_report(
    y_true: np.ndarray, y_pred: np.ndarray, vocabulary: Sequence[str]
) -> dict[str, object]:
    """Per-class precision/recall/F1/support, the summary metrics and the confusion matrix (JSON-safe).

    ``{"classes": {name: {"precision", "recall", "f1", "support"}}, "accuracy", "balanced_accuracy",
    "macro_f1", "support", "labels": [names], "confusion_matrix": [[int]] (rows = true, vocabulary order)}``
    """
    matrix = confusion_matrix(y_true, y_pred, len(vocabulary))
    precision, recall, f1 = _per_class(matrix)
    support = matrix.sum(axis=1)
    classes = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(vocabulary)
    }
    return {
        "classes": classes,
        **_summary(matrix),
        "support": int(support.sum()),
        "labels": list(vocabulary),
        "confusion_matrix": matrix.tolist(),
    }


def _checked(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    true = np.asarray(y_true).astype(np.int64, copy=False).ravel()
    pred = np.asarray(y_pred).astype(np.int64, copy=False).ravel()
    if true.shape != pred.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {true.size} and {pred.size}.")
    if true.size == 0:
        raise ValueError("metrics need at least one sample, got 0.")
    for name, values in (("y_true", true), ("y_pred", pred)):
        if values.min() < 0 or values.max() >= num_classes:
            raise ValueError(
                f"{name} must hold class indices in [0, {num_classes}), "
                f"got values from {values.min()} to {values.max()}."
            )
    return true, pred


def _per_class(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    hits = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    # 0/0 counts as 0 (scikit-learn's zero_division default), not NaN: reports stay JSON-safe.
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(hits), where=both > 0)
    return precision, recall, f1


def _summary(matrix: np.ndarray) -> dict[str, float]:
    _, recall, f1 = _per_class(matrix)
    actual = matrix.sum(axis=1)
    seen = (actual > 0) | (matrix.sum(axis=0) > 0)
    return {
        "accuracy": float(np.trace(matrix) / matrix.sum()),
        "balanced_accuracy": float(recall[actual > 0].mean()),
        "macro_f1": float(f1[seen].mean()),
    }


def predicted_classes(outputs: Mapping[str, Any]) -> np.ndarray:
    """(N, 3) class indices in HEADS order from a head's outputs: argmax of the age and race
    probabilities; gender is Male when P(Male) >= 0.5. The one place outputs become classes."""
    age, race = (np.asarray(outputs[head]).argmax(axis=1) for head in ("age", "race"))
    male = np.asarray(outputs["gender"]).reshape(-1) >= 0.5
    return np.stack([age, race, male.astype(np.int64)], axis=1)


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
    true, pred = _checked_pairs(labels, predicted)
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


def _checked_pairs(labels: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def scores(
    labels: np.ndarray, predicted: np.ndarray
) -> tuple[dict[str, dict[str, float]], dict[str, GroupMetrics]]:
    """Per head its METRICS and GROUP_METRICS, and its per-group metrics, of (N, 3) class indices."""
    groups = group_metrics(labels, predicted)
    metrics = {
        head: head_metrics(labels[:, column], predicted[:, column], len(VOCABULARIES[head]))
        | {name: float(groups[head][name]) for name in GROUP_METRICS}  # type: ignore[literal-required]
        for column, head in enumerate(HEADS)
    }
    return metrics, groups
