"""How a trial draws a head config from a space's parameters, and how a config maps back to them.

A trial draws `n_layers`, then `units_{i}`, `activation_{i}`, `dropout_{i}` for each layer i < n_layers
(every layer from the same distributions, so multivariate TPE with `group=True` models the conditional
space), then `learning_rate`, `batch_size`, `class_weight_strength` and `optimizer`. The wide space's
parameters follow, each only when the space has it: `weight_decay` (only for optimizer adamw),
`input_norm`, `label_smoothing`, `batch_norm`, `loss_weight_{head}`, `lr_schedule`, `augment_prob`, then
`branch_layers` and, when it is above 0, `branch_units_{head}_{j}`, `branch_activation`, `branch_dropout`.
A parameter the space lacks keeps the `HeadConfig` default. One function, `assemble`, decides that order
for drawing and for replaying a config, so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from data.errors import ConfigError
from data.labels import HEADS
from model.head import HeadConfig, LayerSpec

Value = int | float | str | bool
Draw = Callable[[str, str], Value]  # (space parameter, Optuna name) -> value

PER_LAYER = ("units", "activation", "dropout")
OPTIONS = ("learning_rate", "batch_size", "class_weight_strength", "optimizer")
# The wide space's parameters drawn once each, in draw order; all optional in a space file.
SINGLE = ("input_norm", "label_smoothing", "batch_norm", "lr_schedule", "augment_prob")
BRANCH = ("branch_units", "branch_activation", "branch_dropout")  # needed exactly when branch_layers is
OPTIONAL = ("weight_decay", *SINGLE, "loss_weight", "branch_layers", *BRANCH)
REQUIRED = ("n_layers", *PER_LAYER, *OPTIONS)


def assemble(params: Mapping[str, object], draw: Draw) -> HeadConfig:
    """The head config whose every value comes from ``draw``, for the parameters ``params`` has."""
    layers = tuple(
        LayerSpec(*(draw(key, f"{key}_{i}") for key in PER_LAYER))  # type: ignore[arg-type]
        for i in range(int(draw("n_layers", "n_layers")))
    )
    options: dict[str, object] = {key: draw(key, key) for key in OPTIONS}
    if "weight_decay" in params and options["optimizer"] == "adamw":
        options["weight_decay"] = draw("weight_decay", "weight_decay")
    options |= {key: draw(key, key) for key in SINGLE if key in params}
    if "loss_weight" in params:
        options["loss_weights"] = tuple(draw("loss_weight", f"loss_weight_{head}") for head in HEADS)
    if "branch_layers" in params:
        options["branches"] = _branches(draw)
    return HeadConfig(layers=layers, **options)  # type: ignore[arg-type]


def _branches(draw: Draw) -> tuple[tuple[LayerSpec, ...], ...]:
    depth = int(draw("branch_layers", "branch_layers"))
    if depth == 0:
        return ()
    units = {
        (head, j): draw("branch_units", f"branch_units_{head}_{j}") for j in range(depth) for head in HEADS
    }
    activation, dropout = (
        draw("branch_activation", "branch_activation"),
        draw("branch_dropout", "branch_dropout"),
    )
    return tuple(
        tuple(LayerSpec(units[head, j], activation, dropout) for j in range(depth))  # type: ignore[arg-type]
        for head in HEADS
    )


def config_values(config: HeadConfig) -> dict[str, Value | None]:
    """Every Optuna name a space could draw for ``config``, with the value that gives ``config``."""
    values: dict[str, Value | None] = {"n_layers": len(config.layers)}
    for i, layer in enumerate(config.layers):
        values |= {f"{key}_{i}": getattr(layer, key) for key in PER_LAYER}
    values |= {key: getattr(config, key) for key in (*OPTIONS, "weight_decay", *SINGLE)}
    values |= {f"loss_weight_{head}": w for head, w in zip(HEADS, config.loss_weights, strict=True)}
    values["branch_layers"] = len(config.branches[0]) if config.branches else 0
    for head, branch in zip(HEADS, config.branches, strict=False):  # () when no branches
        values |= {f"branch_units_{head}_{j}": layer.units for j, layer in enumerate(branch)}
    if config.branches:
        values |= {"branch_activation": config.branches[0][0].activation}
        values |= {"branch_dropout": config.branches[0][0].dropout}
    return values


Drawn = list[tuple[str, str, Value | None]]  # (Optuna name, space parameter, value)


def replay(params: Mapping[str, object], config: HeadConfig) -> tuple[Drawn, HeadConfig | None]:
    """(Optuna name, space parameter, value) of each draw that would give ``config``, in draw order, and
    the config those draws assemble (None when a value is missing or invalid for the head)."""
    values = config_values(config)
    drawn: Drawn = []

    def draw(key: str, label: str) -> Value:
        drawn.append((label, key, values.get(label)))
        return values.get(label)  # type: ignore[return-value]

    try:
        return drawn, assemble(params, draw)
    except (ConfigError, TypeError):  # a value makes no valid head: it is outside the space anyway
        return drawn, None
