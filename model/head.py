"""The searched dense head: its frozen config, its Keras model, its class weights and losses.

Keras and TensorFlow are imported inside the functions that need them, so that `HeadConfig` (used by the
search space, the study commands and `hpo status`) costs no TensorFlow import.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from data.errors import ConfigError, DatasetError
from data.labels import AGE, RACE

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

ACTIVATIONS: tuple[str, ...] = ("relu", "leaky_relu", "tanh", "elu", "gelu")
# Each name is a Keras optimizer identifier: `keras.optimizers.get(name)` builds it.
OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "nadam", "rmsprop", "sgd")
# What the authors' code ran: it writes `Dense(..., activation="leaky_relu")`, which their pinned Keras 2.7
# resolves to `tf.nn.leaky_relu` with its default slope 0.2 (not the 0.3 of the `LeakyReLU()` layer,
# which their code never uses). docs/paper.md has the references.
LEAKY_RELU_SLOPE = 0.2
# Probabilities are clipped to [EPSILON, 1 - EPSILON] before the log, as Keras' own cross-entropies do.
EPSILON = 1e-7


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string"}
_TYPE_TESTS = {int: _is_int, float: _is_number, str: lambda value: isinstance(value, str)}


@dataclass(frozen=True)
class Rule:
    """What one head setting accepts: a type and a domain, in words and as a test.

    The one statement of the head's domain: `HeadConfig` checks its fields against it and the search
    space checks that its ranges lie inside it.
    """

    kind: type  # int, float or str
    text: str  # the domain in words, e.g. "> 0", "in [0, 1)", "one of relu, tanh"
    test: Callable[[Any], bool]

    def accepts(self, value: object) -> bool:
        """Whether ``value`` has the rule's type (an int is a number; a bool is neither) and domain."""
        return bool(_TYPE_TESTS[self.kind](value) and self.test(value))

    @property
    def type_name(self) -> str:
        """The type in words: "an integer", "a number" or "a string"."""
        return _TYPE_NAMES[self.kind]

    def describe(self) -> str:
        """The type and the domain, e.g. "an integer > 0" or "one of adam, sgd"."""
        return self.text if self.kind is str else f"{self.type_name} {self.text}"


RULES: Mapping[str, Rule] = MappingProxyType(
    {
        "units": Rule(int, "> 0", lambda v: v > 0),
        "activation": Rule(str, f"one of {', '.join(ACTIVATIONS)}", lambda v: v in ACTIVATIONS),
        "dropout": Rule(float, "in [0, 1)", lambda v: 0.0 <= v < 1.0),
        "learning_rate": Rule(float, "> 0", lambda v: v > 0),
        "batch_size": Rule(int, "> 0", lambda v: v > 0),
        "class_weight_strength": Rule(float, "in [0, 1]", lambda v: 0.0 <= v <= 1.0),
        "optimizer": Rule(str, f"one of {', '.join(OPTIMIZERS)}", lambda v: v in OPTIMIZERS),
    }
)


def _check(name: str, value: object, label: str | None = None) -> None:
    rule = RULES[name]
    _require(rule.accepts(value), f"{label or name} must be {rule.describe()}, got {value!r}")


@dataclass(frozen=True)
class LayerSpec:
    """One hidden layer: Dense(units) with `activation`, then Dropout(dropout)."""

    units: int
    activation: str
    dropout: float = 0.0  # rate of the Dropout after the activation; 0 = no Dropout layer

    def __post_init__(self) -> None:
        for name in ("units", "activation", "dropout"):
            _check(name, getattr(self, name), f"layer {name}")
        object.__setattr__(self, "dropout", float(self.dropout))


@dataclass(frozen=True)
class HeadConfig:
    """Everything that defines a head and how it trains; the search suggests one, the builder takes one."""

    layers: tuple[LayerSpec, ...]
    learning_rate: float = 1e-3
    batch_size: int = 256
    class_weight_strength: float = 1.0  # 0 = unweighted, 1 = "balanced" n/(k·count); weights ** strength
    optimizer: str = "adam"

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        _require(len(layers) > 0, "a head needs at least one hidden layer, got none")
        _require(
            all(isinstance(layer, LayerSpec) for layer in layers),
            f"layers must be LayerSpec objects, got {[type(layer).__name__ for layer in layers]}",
        )
        for name in ("learning_rate", "batch_size", "class_weight_strength", "optimizer"):
            _check(name, getattr(self, name))
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "learning_rate", float(self.learning_rate))
        object.__setattr__(self, "class_weight_strength", float(self.class_weight_strength))

    def to_dict(self) -> dict[str, object]:
        """The config as JSON-safe plain data; `HeadConfig.from_dict` gives back an equal config."""
        data = asdict(self)
        data["layers"] = [dict(layer) for layer in data["layers"]]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HeadConfig:
        """Build a config from `to_dict`'s form; `layers` is required, the other keys default."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a head config must be a table/object, got {data!r}")
        unknown = sorted(set(data) - _CONFIG_KEYS)
        _require(
            not unknown, f"unknown head config key(s) {unknown}; allowed: {', '.join(sorted(_CONFIG_KEYS))}"
        )
        layers = data.get("layers")
        if not isinstance(layers, list | tuple):
            raise ConfigError(
                f"'layers' must be a list of {{units, activation, dropout}} tables, got {layers!r}"
            )
        options = {key: value for key, value in data.items() if key != "layers"}
        return cls(layers=tuple(_layer_from_dict(i, layer) for i, layer in enumerate(layers)), **options)


_CONFIG_KEYS = frozenset({"layers", "learning_rate", "batch_size", "class_weight_strength", "optimizer"})
_LAYER_KEYS = frozenset({"units", "activation", "dropout"})


def _layer_from_dict(index: int, data: object) -> LayerSpec:
    if not isinstance(data, Mapping):
        raise ConfigError(f"layers[{index}] must be a table/object, got {data!r}")
    unknown = sorted(set(data) - _LAYER_KEYS)
    _require(
        not unknown, f"layers[{index}] has unknown key(s) {unknown}; allowed: activation, dropout, units"
    )
    missing = [key for key in ("units", "activation") if key not in data]
    _require(not missing, f"layers[{index}] is missing {missing}")
    try:
        return LayerSpec(**data)
    except ConfigError as error:
        raise ConfigError(f"layers[{index}]: {error}") from None


def class_weights(labels: np.ndarray, num_classes: int, strength: float = 1.0) -> np.ndarray:
    """Per-class loss weights in vocabulary order: (n / (k · count_c)) ** strength, float32 of shape (k,).

    A class absent from `labels` gets weight 1.0 (the unweighted value): it contributes no loss term
    whatever its weight, and 1.0 keeps the vector finite, JSON-safe and strength-independent.
    """
    labels = np.asarray(labels)
    _require(
        _is_int(num_classes) and num_classes > 0, f"num_classes must be an integer > 0, got {num_classes!r}"
    )
    _check("class_weight_strength", strength, "class-weight strength")
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


def build_head(config: HeadConfig, input_dim: int) -> keras.Model:
    """The head as a Keras model: (None, input_dim) float32 -> {"age", "race", "gender"} probabilities.

    Built-in layers only, so a saved model loads in Keras safe mode. The output layers run in float32
    even under a mixed-precision policy, so softmax/sigmoid and the losses never see bfloat16.
    """
    import keras

    _require(_is_int(input_dim) and input_dim > 0, f"input_dim must be an integer > 0, got {input_dim!r}")
    inputs = keras.Input(shape=(input_dim,), dtype="float32", name="embedding")
    x = inputs
    for index, layer in enumerate(config.layers):
        x = _hidden_block(x, layer, index)
    outputs = {
        "age": keras.layers.Dense(len(AGE), activation="softmax", dtype="float32", name="age")(x),
        "race": keras.layers.Dense(len(RACE), activation="softmax", dtype="float32", name="race")(x),
        "gender": keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="gender")(x),
    }
    return keras.Model(inputs=inputs, outputs=outputs, name="head")


def _hidden_block(x: keras.KerasTensor, layer: LayerSpec, index: int) -> keras.KerasTensor:
    import keras

    if layer.activation == "leaky_relu":
        x = keras.layers.Dense(layer.units, name=f"dense_{index}")(x)
        x = keras.layers.LeakyReLU(negative_slope=LEAKY_RELU_SLOPE, name=f"leaky_relu_{index}")(x)
    else:
        x = keras.layers.Dense(layer.units, activation=layer.activation, name=f"dense_{index}")(x)
    if layer.dropout > 0.0:
        x = keras.layers.Dropout(layer.dropout, name=f"dropout_{index}")(x)
    return x


def build_optimizer(config: HeadConfig) -> keras.optimizers.Optimizer:
    """A fresh Keras optimizer of `config.optimizer` with `config.learning_rate`."""
    import keras

    return keras.optimizers.get(
        {"class_name": config.optimizer, "config": {"learning_rate": config.learning_rate}}
    )


def head_losses(weights: Mapping[str, np.ndarray]) -> dict[str, LossFn]:
    """Loss callables `(y_true, y_pred) -> scalar` per head, pure TensorFlow ops (safe in `tf.function`).

    `weights` holds class weights for "age" and "race" (vocabulary order, e.g. from `class_weights`).
    Age and race: mean over the batch of w[y] · −log p[y] on integer labels — not divided by the sum of
    the weights, exactly what Keras' `class_weight` did for the authors (per-sample loss × weight, then
    the batch mean). Gender: unweighted binary cross-entropy on 0/1 labels (1 = Male).
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
        "age": _weighted_sparse_cross_entropy(weights["age"]),
        "race": _weighted_sparse_cross_entropy(weights["race"]),
        "gender": _binary_cross_entropy,
    }


def _weighted_sparse_cross_entropy(weights: np.ndarray) -> LossFn:
    import tensorflow as tf

    table = tf.constant(np.asarray(weights, dtype=np.float32))

    def loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        labels = tf.reshape(tf.cast(y_true, tf.int32), [-1])
        probs = tf.cast(y_pred, tf.float32)
        picked = tf.gather(probs, labels, axis=1, batch_dims=1)
        nll = -tf.math.log(tf.clip_by_value(picked, EPSILON, 1.0))
        return tf.reduce_mean(tf.gather(table, labels) * nll)

    return loss


def _binary_cross_entropy(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    import tensorflow as tf

    target = tf.reshape(tf.cast(y_true, tf.float32), [-1])
    p = tf.clip_by_value(tf.reshape(tf.cast(y_pred, tf.float32), [-1]), EPSILON, 1.0 - EPSILON)
    return tf.reduce_mean(-(target * tf.math.log(p) + (1.0 - target) * tf.math.log(1.0 - p)))
