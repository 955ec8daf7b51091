from __future__ import annotations

import json

import numpy as np
import pytest

from model.metrics import classification_report, confusion_matrix, head_metrics

# Class 2 occurs but is never predicted; class 3 is predicted but never occurs; class 4 is in neither.
Y_TRUE = np.array([0, 0, 0, 1, 1, 2], dtype=np.int8)
Y_PRED = np.array([0, 0, 3, 0, 1, 0], dtype=np.int8)
MATRIX = [
    [2, 0, 0, 1, 0],
    [1, 1, 0, 0, 0],
    [1, 0, 0, 0, 0],
    [0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0],
]


def test_confusion_matrix_rows_are_true_classes() -> None:
    assert confusion_matrix(Y_TRUE, Y_PRED, 5).tolist() == MATRIX


def test_head_metrics_hand_computed() -> None:
    metrics = head_metrics(Y_TRUE, Y_PRED, 5)
    assert set(metrics) == {"accuracy", "balanced_accuracy", "macro_f1"}
    assert metrics["accuracy"] == 0.5
    # Recalls 2/3, 1/2, 0 over the classes present in y_true (0, 1, 2).
    assert metrics["balanced_accuracy"] == pytest.approx(7 / 18, rel=1e-12)
    # F1 4/7, 2/3, 0, 0 over the classes seen in y_true or y_pred (0..3).
    assert metrics["macro_f1"] == pytest.approx(13 / 42, rel=1e-12)


def test_head_metrics_perfect_predictions() -> None:
    labels = np.array([1, 0, 1, 1])
    assert head_metrics(labels, labels, 2) == {"accuracy": 1.0, "balanced_accuracy": 1.0, "macro_f1": 1.0}


def test_classification_report_per_class_and_summary() -> None:
    vocabulary = ("a", "b", "c", "d", "e")
    report = classification_report(Y_TRUE, Y_PRED, vocabulary)
    classes = report["classes"]
    assert isinstance(classes, dict)
    assert classes["a"] == pytest.approx({"precision": 0.5, "recall": 2 / 3, "f1": 4 / 7, "support": 3})
    assert classes["b"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert classes["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert classes["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert classes["e"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert report["accuracy"] == 0.5
    assert report["balanced_accuracy"] == pytest.approx(7 / 18, rel=1e-12)
    assert report["macro_f1"] == pytest.approx(13 / 42, rel=1e-12)
    assert report["support"] == 6
    assert report["labels"] == list(vocabulary)
    assert report["confusion_matrix"] == MATRIX


def test_classification_report_is_json_safe() -> None:
    report = classification_report(Y_TRUE, Y_PRED, ("a", "b", "c", "d", "e"))
    assert json.loads(json.dumps(report)) == report


def test_head_metrics_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="same length, got 6 and 5"):
        head_metrics(Y_TRUE, Y_PRED[:5], 5)


def test_head_metrics_index_out_of_range_raises() -> None:
    with pytest.raises(
        ValueError, match=r"y_pred must hold class indices in \[0, 3\), got values from 0 to 3"
    ):
        head_metrics(Y_TRUE, Y_PRED, 3)


def test_head_metrics_empty_raises() -> None:
    with pytest.raises(ValueError, match="at least one sample, got 0"):
        head_metrics(np.array([], dtype=np.int8), np.array([], dtype=np.int8), 2)
