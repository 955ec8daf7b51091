"""The searched dense head's frozen config, and the rules every setting of it obeys.

No TensorFlow here: `HeadConfig` is used by the search space, the study commands and `hpo status`. The
Keras model built from a config is :mod:`model.network`; what it trains with (class weights, losses,
the optimizer) is :mod:`model.fitting`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any

from data.errors import ConfigError
from data.labels import HEADS

ACTIVATIONS: tuple[str, ...] = ("relu", "leaky_relu", "tanh", "elu", "gelu")
# Each name is a Keras optimizer identifier: `keras.optimizers.get(name)` builds it.
OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "nadam", "rmsprop", "sgd")
INPUT_NORMS: tuple[str, ...] = ("none", "standardize", "l2")  # standardize: with train-split statistics
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")  # cosine: decays to 0 over the trial's epochs
MAX_BRANCH_LAYERS = 2


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
_TYPE_TESTS: dict[type, Callable[[object], bool]] = {
    int: _is_int,
    float: _is_number,
    str: lambda value: isinstance(value, str),
    bool: lambda value: isinstance(value, bool),
}


@dataclass(frozen=True)
class Rule:
    """What one head setting accepts: a type and a domain, in words and as a test.

    The one statement of the head's domain: `HeadConfig` checks its fields against it and the search
    space checks that its ranges lie inside it.
    """

    kind: type  # int, float, str or bool
    text: str  # the domain in words, e.g. "> 0", "in [0, 1)", "one of relu, tanh"
    test: Callable[[Any], bool]

    def accepts(self, value: object) -> bool:
        """Whether ``value`` has the rule's type (an int is a number; a bool is neither) and domain."""
        return bool(_TYPE_TESTS[self.kind](value) and self.test(value))

    @property
    def type_name(self) -> str:
        """The type in words: "an integer", "a number", "a string" or "true or false"."""
        return _TYPE_NAMES[self.kind]

    def describe(self) -> str:
        """The type and the domain, e.g. "an integer > 0" or "one of adam, sgd"."""
        return self.text if self.kind in (str, bool) else f"{self.type_name} {self.text}"


def _one_of(values: tuple[str, ...]) -> Rule:
    return Rule(str, f"one of {', '.join(values)}", lambda v: v in values)


RULES: Mapping[str, Rule] = MappingProxyType(
    {
        "units": Rule(int, "> 0", lambda v: v > 0),
        "activation": _one_of(ACTIVATIONS),
        "dropout": Rule(float, "in [0, 1)", lambda v: 0.0 <= v < 1.0),
        "learning_rate": Rule(float, "> 0", lambda v: v > 0),
        "batch_size": Rule(int, "> 0", lambda v: v > 0),
        "class_weight_strength": Rule(float, "in [0, 1]", lambda v: 0.0 <= v <= 1.0),
        "optimizer": _one_of(OPTIMIZERS),
        "weight_decay": Rule(float, ">= 0", lambda v: v >= 0.0),
        "input_norm": _one_of(INPUT_NORMS),
        "label_smoothing": Rule(float, "in [0, 1)", lambda v: 0.0 <= v < 1.0),
        "batch_norm": Rule(bool, "true or false", lambda v: True),
        "loss_weight": Rule(float, ">= 0", lambda v: v >= 0.0),
        "lr_schedule": _one_of(LR_SCHEDULES),
        "augment_prob": Rule(float, "in [0, 1]", lambda v: 0.0 <= v <= 1.0),
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
    """Everything that defines a head and how it trains; the search suggests one, the builder takes one.

    The fields after ``optimizer`` are the wide space's; their defaults are the paper's way of training.
    """

    layers: tuple[LayerSpec, ...]  # the shared trunk
    learning_rate: float = 1e-3
    batch_size: int = 256
    class_weight_strength: float = 1.0  # 0 = unweighted, 1 = "balanced" n/(k·count); weights ** strength
    optimizer: str = "adam"
    weight_decay: float = 0.0  # decoupled weight decay; only with optimizer adamw
    input_norm: str = "none"  # of the embedding: none, standardize (train statistics), l2
    label_smoothing: float = 0.0
    batch_norm: bool = False  # BatchNormalization after each hidden Dense, before its activation
    branches: tuple[tuple[LayerSpec, ...], ...] = ()  # per head (HEADS order) layers after the trunk
    loss_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # age, race, gender
    lr_schedule: str = "constant"
    augment_prob: float | None = None  # chance of an augmented view; None: every stored view alike

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        _require(len(layers) > 0, "a head needs at least one hidden layer, got none")
        _require(
            all(isinstance(layer, LayerSpec) for layer in layers),
            f"layers must be LayerSpec objects, got {[type(layer).__name__ for layer in layers]}",
        )
        for name in ("learning_rate", "batch_size", "class_weight_strength", "optimizer", "weight_decay"):
            _check(name, getattr(self, name))
        for name in ("input_norm", "label_smoothing", "batch_norm", "lr_schedule"):
            _check(name, getattr(self, name))
        _require(
            self.weight_decay == 0.0 or self.optimizer == "adamw",
            f"weight_decay {self.weight_decay!r} needs optimizer adamw, got {self.optimizer!r}",
        )
        if self.augment_prob is not None:
            _check("augment_prob", self.augment_prob)
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "branches", _checked_branches(self.branches))
        object.__setattr__(self, "loss_weights", _checked_loss_weights(self.loss_weights))
        for name in ("learning_rate", "class_weight_strength", "weight_decay", "label_smoothing"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.augment_prob is not None:
            object.__setattr__(self, "augment_prob", float(self.augment_prob))

    def to_dict(self) -> dict[str, object]:
        """The config as JSON-safe plain data; `HeadConfig.from_dict` gives back an equal config."""
        data: dict[str, object] = {field.name: getattr(self, field.name) for field in fields(self)}
        data["layers"] = [_layer_dict(layer) for layer in self.layers]
        data["branches"] = {
            head: [_layer_dict(layer) for layer in branch]
            for head, branch in zip(HEADS, self.branches, strict=False)  # () when no branches
        }
        data["loss_weights"] = dict(zip(HEADS, self.loss_weights, strict=True))
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
        options = {key: value for key, value in data.items() if key not in ("layers", "branches")}
        if "loss_weights" in options:
            options["loss_weights"] = _loss_weights_from(options["loss_weights"])
        branches = _branches_from(data.get("branches", {}))
        return cls(layers=_layers_from("layers", data.get("layers")), branches=branches, **options)


_CONFIG_KEYS = frozenset(field.name for field in fields(HeadConfig))
_LAYER_KEYS = frozenset({"units", "activation", "dropout"})


def _layer_dict(layer: LayerSpec) -> dict[str, object]:
    return {"units": layer.units, "activation": layer.activation, "dropout": layer.dropout}


def _checked_branches(branches: Iterable[Iterable[LayerSpec]]) -> tuple[tuple[LayerSpec, ...], ...]:
    given = tuple(tuple(branch) for branch in branches)
    if not any(given):
        return ()
    depths = {len(branch) for branch in given}
    _require(
        len(given) == len(HEADS) and len(depths) == 1 and 0 < min(depths) <= MAX_BRANCH_LAYERS,
        f"branches must give every head ({', '.join(HEADS)}) the same 1..{MAX_BRANCH_LAYERS} layers, "
        f"got {[len(branch) for branch in given]} layer(s)",
    )
    _require(
        all(isinstance(layer, LayerSpec) for branch in given for layer in branch),
        "branch layers must be LayerSpec objects",
    )
    return given


def _checked_loss_weights(weights: Iterable[float]) -> tuple[float, float, float]:
    values = tuple(weights)
    _require(len(values) == len(HEADS), f"loss_weights needs one weight per head, got {values!r}")
    for head, value in zip(HEADS, values, strict=True):
        _check("loss_weight", value, f"loss weight of {head}")
    _require(any(value > 0 for value in values), f"loss_weights must not all be 0, got {values!r}")
    age, race, gender = (float(value) for value in values)
    return age, race, gender


def _loss_weights_from(data: object) -> tuple[float, ...]:
    if not isinstance(data, Mapping) or set(data) != set(HEADS):
        raise ConfigError(f"'loss_weights' must be a table with keys {', '.join(HEADS)}, got {data!r}")
    return tuple(data[head] for head in HEADS)


def _branches_from(data: object) -> tuple[tuple[LayerSpec, ...], ...]:
    if not isinstance(data, Mapping) or not set(data) <= set(HEADS):
        raise ConfigError(f"'branches' must be a table keyed by {', '.join(HEADS)}, got {data!r}")
    return tuple(_layers_from(f"branches.{head}", data.get(head, [])) for head in HEADS)


def _layers_from(where: str, layers: object) -> tuple[LayerSpec, ...]:
    if not isinstance(layers, list | tuple):
        raise ConfigError(
            f"'{where}' must be a list of {{units, activation, dropout}} tables, got {layers!r}"
        )
    return tuple(_layer_from_dict(f"{where}[{i}]", layer) for i, layer in enumerate(layers))


def _layer_from_dict(where: str, data: object) -> LayerSpec:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a table/object, got {data!r}")
    unknown = sorted(set(data) - _LAYER_KEYS)
    _require(not unknown, f"{where} has unknown key(s) {unknown}; allowed: activation, dropout, units")
    missing = [key for key in ("units", "activation") if key not in data]
    _require(not missing, f"{where} is missing {missing}")
    try:
        return LayerSpec(**data)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
