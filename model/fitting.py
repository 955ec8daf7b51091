"""What a head trains with: class weights in vocabulary order, the per-head losses, the optimizer.

TensorFlow and Keras are imported inside the functions, so importing this module stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from data.errors import ConfigError, DatasetError
from data.labels import AGE, RACE
from model.head import RULES, HeadConfig

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

# Probabilities are clipped to [EPSILON, 1 - EPSILON] before the log, as Keras' own cross-entropies do.
EPSILON = 1e-7


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def class_weights(labels: np.ndarray, num_classes: int, strength: float = 1.0) -> np.ndarray:
    """Per-class loss weights in vocabulary order: (n / (k · count_c)) ** strength, float32 of shape (k,).

    A class absent from `labels` gets weight 1.0 (the unweighted value): it contributes no loss term
    whatever its weight, and 1.0 keeps the vector finite, JSON-safe and strength-independent.
    """
    labels = np.asarray(labels)
    _require(
        isinstance(num_classes, int) and num_classes > 0,
        f"num_classes must be an integer > 0, got {num_classes!r}",
    )
    rule = RULES["class_weight_strength"]
    _require(rule.accepts(strength), f"class-weight strength must be {rule.describe()}, got {strength!r}")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(
            f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(
            f"labels must lie in 0..{num_classes - 1}, got values {labels.min()}..{labels.max()}; "
            "the label array does not match the vocabulary"
        )
    counts = np.bincount(labels.astype(np.int64), minlength=num_classes).astype(np.float64)
    present = counts > 0
    balanced = np.ones(num_classes, dtype=np.float64)
    balanced[present] = labels.size / (num_classes * counts[present])
    return (balanced**strength).astype(np.float32)


def build_optimizer(config: HeadConfig, *, decay_steps: int | None = None) -> keras.optimizers.Optimizer:
    """A fresh Keras optimizer of ``config.optimizer`` at ``config.learning_rate``.

    ``lr_schedule="cosine"`` decays the rate to 0 over ``decay_steps`` optimizer steps (the trial's
    epochs x steps per epoch); adamw gets ``config.weight_decay`` (decoupled, as Keras applies it).
    """
    import keras

    rate: float | keras.optimizers.schedules.LearningRateSchedule = config.learning_rate
    if config.lr_schedule == "cosine":
        _require(
            decay_steps is not None and decay_steps > 0,
            f"a cosine schedule needs decay_steps > 0, got {decay_steps!r}",
        )
        rate = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps)
    options: dict[str, object] = {"learning_rate": rate}
    if config.optimizer == "adamw":
        options["weight_decay"] = config.weight_decay
    return keras.optimizers.get({"class_name": config.optimizer, "config": options})


def head_losses(weights: Mapping[str, np.ndarray], *, label_smoothing: float = 0.0) -> dict[str, LossFn]:
    """Loss callables `(y_true, y_pred) -> scalar` per head, pure TensorFlow ops (safe in `tf.function`).

    `weights` holds class weights for "age" and "race" (vocabulary order, e.g. from `class_weights`).
    Age and race: mean over the batch of w[y] · cross-entropy on integer labels — not divided by the sum
    of the weights, exactly what Keras' `class_weight` did for the authors (per-sample loss × weight, then
    the batch mean). Gender: unweighted binary cross-entropy on 0/1 labels (1 = Male). With
    ``label_smoothing`` ε the targets are (1 - ε) one-hot + ε / k (Keras' convention; k = 2 for gender).
    """
    expected = {"age": len(AGE), "race": len(RACE)}
    _require(
        set(weights) == set(expected),
        f"head_losses needs class weights for exactly age and race, got keys {sorted(weights)}; "
        "gender's loss is unweighted binary cross-entropy",
    )
    for head, size in expected.items():
        shape = np.shape(weights[head])
        _require(shape == (size,), f"{head} class weights must have shape ({size},), got {shape}")
    return {
        "age": _weighted_sparse_cross_entropy(weights["age"], label_smoothing),
        "race": _weighted_sparse_cross_entropy(weights["race"], label_smoothing),
        "gender": _binary_cross_entropy(label_smoothing),
    }


def _weighted_sparse_cross_entropy(weights: np.ndarray, smoothing: float) -> LossFn:
    import tensorflow as tf

    table = tf.constant(np.asarray(weights, dtype=np.float32))
    classes = len(weights)

    def loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        labels = tf.reshape(tf.cast(y_true, tf.int32), [-1])
        log_p = tf.math.log(tf.clip_by_value(tf.cast(y_pred, tf.float32), EPSILON, 1.0))
        nll = -tf.gather(log_p, labels, axis=1, batch_dims=1)
        if smoothing:
            # Targets (1 - ε) one-hot + ε / k: the cross-entropy is (1 - ε) nll + ε mean_j(-log p_j).
            nll = (1.0 - smoothing) * nll - smoothing * tf.reduce_sum(log_p, axis=1) / classes
        return tf.reduce_mean(tf.gather(table, labels) * nll)

    return loss


def _binary_cross_entropy(smoothing: float) -> LossFn:
    import tensorflow as tf

    def loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        target = tf.reshape(tf.cast(y_true, tf.float32), [-1]) * (1.0 - smoothing) + smoothing / 2.0
        p = tf.clip_by_value(tf.reshape(tf.cast(y_pred, tf.float32), [-1]), EPSILON, 1.0 - EPSILON)
        return tf.reduce_mean(-(target * tf.math.log(p) + (1.0 - target) * tf.math.log(1.0 - p)))

    return loss
