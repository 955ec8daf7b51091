"""The search space's types: a parameter is a `Choice` or a `Range`; a `Space` draws a head config from
them (in the order :mod:`search.space.draw` sets)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING

from data.errors import ConfigError
from model.head import MAX_BRANCH_LAYERS, RULES, HeadConfig, Rule
from search.space.draw import OPTIONS, PER_LAYER, SINGLE, Value, assemble, replay

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

# Parameter -> the rule its values must satisfy: the head's own rules, and the space's layer counts.
DOMAINS: Mapping[str, Rule] = MappingProxyType(
    {
        "n_layers": Rule(int, "at least 1", lambda v: v >= 1),
        **{key: RULES[key] for key in (*PER_LAYER, *OPTIONS, "weight_decay", *SINGLE, "loss_weight")},
        "branch_layers": Rule(int, f"in 0..{MAX_BRANCH_LAYERS}", lambda v: 0 <= v <= MAX_BRANCH_LAYERS),
        "branch_units": RULES["units"],
        "branch_activation": RULES["activation"],
        "branch_dropout": RULES["dropout"],
    }
)


def decimal(value: float) -> Decimal:
    """``value`` as the decimal it was written as."""
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
        return max(0, *(-int(decimal(x).as_tuple().exponent) for x in (self.low, self.step)))

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
        return (decimal(value) - decimal(self.low)) % decimal(self.step) == 0

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
        return assemble(self.params, lambda key, label: self.params[key].suggest(trial, label))

    def params_of(self, config: HeadConfig) -> dict[str, object]:
        """The Optuna params (for `study.enqueue_trial`) that make `suggest` return `config` exactly."""
        outside = values_outside(self.params, config)
        if outside:
            raise ConfigError(f"head config is outside space {self.name!r}: {'; '.join(outside)}")
        return {label: value for label, _, value in replay(self.params, config)[0]}

    def contains(self, config: HeadConfig) -> bool:
        """Whether `suggest` can return `config`."""
        return not values_outside(self.params, config)

    def named_point(self, name: str) -> HeadConfig:
        """The head config listed as `[points.<name>]` in the space file."""
        if name not in self.points:
            listed = ", ".join(sorted(self.points)) or "none"
            raise ConfigError(f"space {self.name!r} has no point {name!r}; its points: {listed}")
        return self.points[name]


def values_outside(params: Mapping[str, Param], config: HeadConfig) -> list[str]:
    """One line per value of `config` that its parameter cannot take, or that the space cannot draw."""
    drawn, rebuilt = replay(params, config)
    outside = [
        f"{label} = {value!r} is not {params[key].describe()}"
        for label, key, value in drawn
        if not params[key].contains(value)
    ]
    if not outside and rebuilt != config:
        assert rebuilt is not None
        fixed = [
            f"{name} = {getattr(config, name)!r} (the space gives {getattr(rebuilt, name)!r})"
            for name in config.to_dict()
            if getattr(config, name) != getattr(rebuilt, name)
        ]
        outside.append(f"the space cannot draw {', '.join(fixed)}")
    return outside
