"""Reading a search-space TOML file into a validated `Space`; the packaged spaces live beside this module."""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from data.errors import ConfigError
from model.head import HeadConfig, LayerSpec
from search.space.draw import BRANCH, OPTIONAL, REQUIRED
from search.space.types import DOMAINS, Choice, Param, Range, Space, Value, decimal, values_outside

FORMAT_VERSION = 2  # 2 adds the wide space's optional parameters; version 1 files stay valid
VERSIONS = (1, 2)


PACKAGED = ("default", "wide")  # the spaces shipped beside this module, by name


def default_space_path(name: str = "default") -> Path:
    """The packaged space file ``name`` (``default``: the paper's neighbourhood; ``wide``)."""
    return Path(str(resources.files("search.space") / f"{name}.toml"))


def load_space(path: Path | None = None) -> Space:
    """Read and validate a space file; None = the packaged default (`search/space/default.toml`).

    A packaged space's name (``default``, ``wide``) stands for its file, unless a file of that name exists.
    """
    path = default_space_path() if path is None else Path(path)
    if not path.exists() and str(path) in PACKAGED:
        path = default_space_path(str(path))
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
    if version not in VERSIONS or isinstance(version, bool):
        readable = " and ".join(str(v) for v in VERSIONS)
        raise ConfigError(f"format_version = {version!r} is not supported; this hpo reads {readable}")
    name = data["name"]
    if not isinstance(name, str) or not name:
        raise ConfigError(f"name = {name!r} must be a non-empty string")
    tables = _table("[params]", data["params"])
    _check_keys("[params]", tables, set(REQUIRED) | (set(OPTIONAL) if version >= 2 else set()), set(REQUIRED))
    params = {
        key: _parse_param(key, _table(f"[params.{key}]", tables[key])) for key in DOMAINS if key in tables
    }
    _check_groups(params)
    points = {
        key: _parse_point(key, value) for key, value in _table("[points]", data.get("points", {})).items()
    }
    for key, point in points.items():
        outside = values_outside(params, point)
        if outside:
            raise ConfigError(f"[points.{key}] lies outside the space: {'; '.join(outside)}")
    canonical = {
        "format_version": version,
        "name": name,
        "params": {key: {"kind": type(param).__name__, **asdict(param)} for key, param in params.items()},
        "points": {key: _canonical_point(point) for key, point in points.items()},
    }
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return Space(name, MappingProxyType(params), MappingProxyType(points), text=text, sha256=digest)


_DEFAULTS = HeadConfig(layers=(LayerSpec(1, "relu"),)).to_dict()  # the settings' defaults (layers aside)
_VERSION_1_KEYS = frozenset({"layers", "learning_rate", "batch_size", "class_weight_strength", "optimizer"})


def _canonical_point(point: HeadConfig) -> dict[str, object]:
    # The wide settings a point leaves at their defaults are left out: a version-1 space keeps the
    # sha256 it had before those settings existed.
    data = point.to_dict()
    return {key: value for key, value in data.items() if key in _VERSION_1_KEYS or value != _DEFAULTS[key]}


def _check_groups(params: Mapping[str, Param]) -> None:
    """The parameters that only make sense together."""
    group = ("branch_layers", *BRANCH)
    given = [key for key in group if key in params]
    if given and len(given) != len(group):
        raise ConfigError(
            f"{', '.join(f'[params.{key}]' for key in group)} go together; give all of them or none "
            f"(given: {', '.join(given)})"
        )
    optimizer = params["optimizer"]
    if "weight_decay" in params and not (isinstance(optimizer, Choice) and optimizer.contains("adamw")):
        raise ConfigError(
            "[params.weight_decay] is drawn only for optimizer adamw, which [params.optimizer] does not "
            'offer; add "adamw" to its choices or drop [params.weight_decay]'
        )


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
    rule = DOMAINS[name]
    kind, domain_rule = rule.kind, rule.text
    where = f"[params.{name}]"
    categorical = kind in (str, bool)
    _check_keys(
        where, table, {"choices"} if categorical else {"choices", "low", "high", "step", "log"}, set()
    )
    if "choices" not in table:
        if categorical:
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


def _value(name: str, key: str, raw: object) -> Value:
    """`raw` as parameter `name`'s type (TOML integers accepted for floats), checked against its domain."""
    rule = DOMAINS[name]
    ok_type = isinstance(raw, int | float) if rule.kind is float else isinstance(raw, rule.kind)
    if (isinstance(raw, bool) and rule.kind is not bool) or not ok_type:
        raise ConfigError(f"[params.{name}] {key} = {raw!r} must be {rule.type_name}")
    assert isinstance(raw, int | float | str)
    value: Value = float(raw) if rule.kind is float else raw
    if not rule.test(value):
        raise ConfigError(f"[params.{name}] {key} = {raw!r} is not allowed: {name} must be {rule.text}")
    return value


def _number(name: str, table: dict[str, Any], key: str) -> float:
    value = _value(name, key, table[key])
    assert isinstance(value, int | float) and not isinstance(value, bool)  # others take choices only
    return value


def _parse_range(name: str, table: dict[str, Any]) -> Range:
    where, integer = f"[params.{name}]", DOMAINS[name].kind is int
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
    if (decimal(high) - decimal(low)) % decimal(step) != 0:
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
