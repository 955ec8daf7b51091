"""Classification metrics of one head, in numpy only (no TensorFlow, no scikit-learn).

Conventions follow scikit-learn's defaults so figures compare with the paper's tables: a precision whose
class is never predicted, or a recall whose class never occurs, counts as 0; balanced accuracy is the mean
recall over the classes present in ``y_true``; macro-F1 averages over the classes present in ``y_true`` or
``y_pred``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from data.labels import HEADS

METRICS = ("accuracy", "balanced_accuracy", "macro_f1")  # what head_metrics gives for each head
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
