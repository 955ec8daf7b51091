"""The search space as data: a TOML file of parameter ranges and named points, parsed into a `Space`.

A trial draws `n_layers`, then `units_{i}`, `activation_{i}`, `dropout_{i}` for each layer i < n_layers
(every layer from the same distributions, so multivariate TPE with `group=True` models the conditional
space), then `learning_rate`, `batch_size`, `class_weight_strength` and `optimizer`. The ranges live in
the file only; see `search/spaces/default.toml` for the format.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from data.errors import ConfigError
from model.head import ACTIVATIONS, OPTIMIZERS, HeadConfig, LayerSpec

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

FORMAT_VERSION = 1
PER_LAYER = ("units", "activation", "dropout")
_OPTIONS = ("learning_rate", "batch_size", "class_weight_strength", "optimizer")
Value = int | float | str

# Parameter -> (value type, what a HeadConfig accepts, test); the file's ranges must lie inside these.
_DOMAINS: dict[str, tuple[type, str, Any]] = {
    "n_layers": (int, "at least 1", lambda v: v >= 1),
    "units": (int, "at least 1", lambda v: v >= 1),
    "activation": (str, f"one of {', '.join(ACTIVATIONS)}", lambda v: v in ACTIVATIONS),
    "dropout": (float, "in [0, 1)", lambda v: 0.0 <= v < 1.0),
    "learning_rate": (float, "greater than 0", lambda v: v > 0.0),
    "batch_size": (int, "at least 1", lambda v: v >= 1),
    "class_weight_strength": (float, "in [0, 1]", lambda v: 0.0 <= v <= 1.0),
    "optimizer": (str, f"one of {', '.join(OPTIMIZERS)}", lambda v: v in OPTIMIZERS),
}


def _decimal(value: float) -> Decimal:
    # Through repr, so 0.1 is the decimal 0.1 the file wrote, not the binary float's expansion.
    return Decimal(repr(value))


@dataclass(frozen=True)
class Choice:
    """A categorical parameter: one of `choices`."""

    choices: tuple[Value, ...]

    def suggest(self, trial: BaseTrial, label: str) -> Value:
        """Draw this parameter on `trial` under the name `label`."""
        value = trial.suggest_categorical(label, self.choices)
        assert value is not None  # choices never hold None
        return value

    def contains(self, value: object) -> bool:
        """Whether `value` is one of the choices, of the same type (True is not 1)."""
        return any(type(value) is type(choice) and value == choice for choice in self.choices)

    def describe(self) -> str:
        """The allowed values, for error messages."""
        return "one of " + ", ".join(repr(choice) for choice in self.choices)


@dataclass(frozen=True)
class Range:
    """A numeric parameter in [low, high]: integers when `integer`, on a `step` grid or a log scale."""

    integer: bool
    low: float
    high: float
    step: float | None = None  # None: continuous (floats) or log scale
    log: bool = False

    def suggest(self, trial: BaseTrial, label: str) -> Value:
        """Draw this parameter on `trial` under the name `label`."""
        if self.integer:
            step = 1 if self.step is None else int(self.step)
            return trial.suggest_int(label, int(self.low), int(self.high), step=step, log=self.log)
        value = trial.suggest_float(label, self.low, self.high, step=self.step, log=self.log)
        # Optuna returns low + k·step in binary (0.30000000000000004); snap to the grid's decimals.
        return value if self.step is None else round(value, self._decimals())

    def _decimals(self) -> int:
        assert self.step is not None
        return max(0, *(-int(_decimal(x).as_tuple().exponent) for x in (self.low, self.step)))

    def contains(self, value: object) -> bool:
        """Whether `value` can be drawn, exactly: a grid float must be the decimal (0.3, not 0.30…04)."""
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if not (is_int if self.integer else isinstance(value, float)):
            return False
        assert isinstance(value, int | float)
        if not self.low <= value <= self.high:
            return False
        if self.step is None:
            return True
        return (_decimal(value) - _decimal(self.low)) % _decimal(self.step) == 0

    def describe(self) -> str:
        """The allowed values, for error messages."""
        rule = f" step {self.step}" if self.step is not None else " (log scale)" if self.log else ""
        return f"{'an integer' if self.integer else 'a number'} in [{self.low}, {self.high}]{rule}"


Param = Choice | Range


@dataclass(frozen=True)
class Space:
    """A parsed, validated search space; `sha256` identifies it (the file's comments and layout do not)."""

    name: str
    params: Mapping[str, Param]
    points: Mapping[str, HeadConfig]
    text: str
    sha256: str

    def suggest(self, trial: BaseTrial) -> HeadConfig:
        """Draw a head config on `trial` (an `optuna.Trial`, or a `FixedTrial` for replay)."""
        n_layers = int(self.params["n_layers"].suggest(trial, "n_layers"))
        layers = tuple(
            LayerSpec(**{key: self.params[key].suggest(trial, f"{key}_{i}") for key in PER_LAYER})  # type: ignore[arg-type]
            for i in range(n_layers)
        )
        options = {key: self.params[key].suggest(trial, key) for key in _OPTIONS}
        return HeadConfig(layers=layers, **options)  # type: ignore[arg-type]

    def params_of(self, config: HeadConfig) -> dict[str, object]:
        """The Optuna params (for `study.enqueue_trial`) that make `suggest` return `config` exactly."""
        outside = _outside(self.params, config)
        if outside:
            raise ConfigError(f"head config is outside space {self.name!r}: {'; '.join(outside)}")
        return {label: value for label, _, value in _flatten(config)}

    def contains(self, config: HeadConfig) -> bool:
        """Whether `suggest` can return `config`."""
        return not _outside(self.params, config)

    def named_point(self, name: str) -> HeadConfig:
        """The head config listed as `[points.<name>]` in the space file."""
        if name not in self.points:
            listed = ", ".join(sorted(self.points)) or "none"
            raise ConfigError(f"space {self.name!r} has no point {name!r}; its points: {listed}")
        return self.points[name]


def _flatten(config: HeadConfig) -> list[tuple[str, str, Value]]:
    """(Optuna param name, space param, value) in the order `Space.suggest` draws them."""
    triples: list[tuple[str, str, Value]] = [("n_layers", "n_layers", len(config.layers))]
    for i, layer in enumerate(config.layers):
        triples += [(f"{key}_{i}", key, getattr(layer, key)) for key in PER_LAYER]
    return triples + [(key, key, getattr(config, key)) for key in _OPTIONS]


def _outside(params: Mapping[str, Param], config: HeadConfig) -> list[str]:
    """One line per value of `config` that its parameter cannot take."""
    return [
        f"{label} = {value!r} is not {params[key].describe()}"
        for label, key, value in _flatten(config)
        if not params[key].contains(value)
    ]


def default_space_path() -> Path:
    """The packaged default space file."""
    return Path(str(resources.files("search") / "spaces" / "default.toml"))


def load_space(path: Path | None = None) -> Space:
    """Read and validate a space file; None = the packaged default (`search/spaces/default.toml`)."""
    path = default_space_path() if path is None else Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"space file not found: {path}; pass an existing TOML file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"space file {path} cannot be read: {error}") from None
    return parse_space(text, source=str(path))


def parse_space(text: str, *, source: str = "<space>") -> Space:
    """Validate a space file's text (e.g. the copy recorded on a study); errors name `source` and the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"space file {source}: invalid TOML: {error}") from None
    try:
        return _build_space(data, text)
    except ConfigError as error:
        raise ConfigError(f"space file {source}: {error}") from None


def _build_space(data: dict[str, Any], text: str) -> Space:
    _check_keys(
        "the top level",
        data,
        {"format_version", "name", "params", "points"},
        {"format_version", "name", "params"},
    )
    version = data["format_version"]
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise ConfigError(f"format_version = {version!r} is not supported; this hpo reads {FORMAT_VERSION}")
    name = data["name"]
    if not isinstance(name, str) or not name:
        raise ConfigError(f"name = {name!r} must be a non-empty string")
    tables = _table("[params]", data["params"])
    _check_keys("[params]", tables, set(_DOMAINS), set(_DOMAINS))
    params = {key: _parse_param(key, _table(f"[params.{key}]", tables[key])) for key in _DOMAINS}
    points = {
        key: _parse_point(key, value) for key, value in _table("[points]", data.get("points", {})).items()
    }
    for key, point in points.items():
        outside = _outside(params, point)
        if outside:
            raise ConfigError(f"[points.{key}] lies outside the space: {'; '.join(outside)}")
    canonical = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "params": {key: {"kind": type(param).__name__, **asdict(param)} for key, param in params.items()},
        "points": {key: point.to_dict() for key, point in points.items()},
    }
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return Space(name, MappingProxyType(params), MappingProxyType(points), text=text, sha256=digest)


def _table(where: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table, got {value!r}")
    return value


def _check_keys(where: str, table: Mapping[str, object], allowed: set[str], required: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {unknown}; allowed: {', '.join(sorted(allowed))}")
    missing = sorted(required - set(table))
    if missing:
        raise ConfigError(f"{where} is missing {missing}")


def _parse_param(name: str, table: dict[str, Any]) -> Param:
    kind, domain_rule, _ = _DOMAINS[name]
    where = f"[params.{name}]"
    _check_keys(
        where, table, {"choices"} if kind is str else {"choices", "low", "high", "step", "log"}, set()
    )
    if "choices" not in table:
        if kind is str:
            raise ConfigError(f"{where} needs choices = [...], from {domain_rule}")
        return _parse_range(name, table)
    if len(table) > 1:
        raise ConfigError(
            f"{where} has choices and {sorted(set(table) - {'choices'})}; give one or the other"
        )
    raw = table["choices"]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where} choices = {raw!r} must be a non-empty list")
    choices = tuple(_value(name, f"choices[{i}]", item) for i, item in enumerate(raw))
    if len(set(choices)) != len(choices):
        raise ConfigError(f"{where} choices = {raw!r} has duplicates; list each value once")
    return Choice(choices)


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string"}


def _value(name: str, key: str, raw: object) -> Value:
    """`raw` as parameter `name`'s type (TOML integers accepted for floats), checked against its domain."""
    kind, domain_rule, in_domain = _DOMAINS[name]
    ok_type = isinstance(raw, int | float) if kind is float else isinstance(raw, kind)
    if isinstance(raw, bool) or not ok_type:
        raise ConfigError(f"[params.{name}] {key} = {raw!r} must be {_TYPE_WORDS[kind]}")
    assert isinstance(raw, int | float | str)
    value = float(raw) if kind is float else raw
    if not in_domain(value):
        raise ConfigError(f"[params.{name}] {key} = {raw!r} is not allowed: {name} must be {domain_rule}")
    return value


def _number(name: str, table: dict[str, Any], key: str) -> float:
    value = _value(name, key, table[key])
    assert not isinstance(value, str)  # str parameters take choices only
    return value


def _parse_range(name: str, table: dict[str, Any]) -> Range:
    where, integer = f"[params.{name}]", _DOMAINS[name][0] is int
    missing = [key for key in ("low", "high") if key not in table]
    if missing:
        raise ConfigError(f"{where} is missing {missing}; give low and high, or choices")
    low, high = _number(name, table, "low"), _number(name, table, "high")
    if low > high:
        raise ConfigError(f"{where} low = {low!r} is greater than high = {high!r}; `low <= high` must hold")
    log = table.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where} log = {log!r} must be true or false")
    if log and low <= 0:
        raise ConfigError(f"{where} log = true needs low > 0, got low = {low!r}")
    if log and "step" in table:
        raise ConfigError(f"{where} has both step = {table['step']!r} and log = true; drop one of them")
    step = table.get("step", 1 if integer and not log else None)
    if step is None:
        return Range(integer, low, high, log=log)
    if isinstance(step, bool) or not isinstance(step, int if integer else int | float) or step <= 0:
        raise ConfigError(f"{where} step = {step!r} must be {'an integer' if integer else 'a number'} > 0")
    step = step if integer else float(step)
    if (_decimal(high) - _decimal(low)) % _decimal(step) != 0:
        raise ConfigError(
            f"{where} step = {step!r} does not divide high - low = {high!r} - {low!r}; "
            "choose a step that divides the range, or move low/high onto the grid"
        )
    return Range(integer, low, high, step=step)


def _parse_point(name: str, value: object) -> HeadConfig:
    table = _table(f"[points.{name}]", value)
    try:
        return HeadConfig.from_dict(table)
    except ConfigError as error:
        raise ConfigError(f"[points.{name}]: {error}") from None
