from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import optuna
import pytest

from data.errors import ConfigError
from data.labels import HEADS
from model.head import HeadConfig, LayerSpec
from model.paper import PAPER_HEAD
from search.space import Choice, Range, default_space_path, load_space, parse_space

DEFAULT_TEXT = default_space_path().read_text(encoding="utf-8")
PAPER_PARAMS = {
    "n_layers": 5,
    "units_0": 640,
    "activation_0": "leaky_relu",
    "dropout_0": 0.2,
    "units_1": 896,
    "activation_1": "relu",
    "dropout_1": 0.3,
    "units_2": 2176,
    "activation_2": "tanh",
    "dropout_2": 0.4,
    "units_3": 640,
    "activation_3": "leaky_relu",
    "dropout_3": 0.6,
    "units_4": 1664,
    "activation_4": "leaky_relu",
    "dropout_4": 0.2,
    "learning_rate": 1e-3,
    "batch_size": 256,
    "class_weight_strength": 1.0,
    "optimizer": "adam",
}


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _edited(tmp_path: Path, old: str, new: str) -> Path:
    assert DEFAULT_TEXT.count(old) == 1, f"the default space no longer contains {old!r}"
    path = tmp_path / "space.toml"
    path.write_text(DEFAULT_TEXT.replace(old, new), encoding="utf-8")
    return path


def test_load_space_default_file() -> None:
    space = load_space()
    assert space.name == "default"
    assert space.text == DEFAULT_TEXT
    assert len(space.sha256) == 64
    assert space.params == {
        "n_layers": Range(True, 1, 6, step=1),
        "units": Range(True, 128, 2560, step=128),
        "activation": Choice(("relu", "leaky_relu", "tanh", "elu", "gelu")),
        "dropout": Range(False, 0.0, 0.7, step=0.1),
        "learning_rate": Range(False, 1e-5, 1e-2, log=True),
        "batch_size": Choice((128, 256, 512, 1024)),
        "class_weight_strength": Range(False, 0.0, 1.0, step=0.25),
        "optimizer": Choice(("adam",)),
    }
    assert sorted(space.points) == ["paper"]


def test_space_paper_point_is_paper_head_inside_space() -> None:
    space = load_space()
    assert space.named_point("paper") == PAPER_HEAD
    assert space.contains(PAPER_HEAD)


def test_space_params_of_paper_head() -> None:
    params = load_space().params_of(PAPER_HEAD)
    assert params == PAPER_PARAMS
    assert list(params) == list(PAPER_PARAMS)  # the order suggest draws them


def test_space_suggest_fixed_trial_reproduces_paper_head() -> None:
    space = load_space()
    assert space.suggest(optuna.trial.FixedTrial(space.params_of(PAPER_HEAD))) == PAPER_HEAD


def test_space_enqueued_grid_floats_round_trip_exactly() -> None:
    space = load_space()
    config = HeadConfig((LayerSpec(128, "gelu", 0.3), LayerSpec(2560, "elu", 0.7)), 1e-5, 1024, 0.75)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(space.params_of(config))
    suggested = space.suggest(study.ask())
    assert suggested == config
    assert [layer.dropout for layer in suggested.layers] == [0.3, 0.7]


@pytest.mark.parametrize("seed", [0, 1])
def test_space_random_suggestions_stay_inside(seed: int) -> None:
    space = load_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs = []
    for _ in range(100):
        trial = study.ask()
        configs.append(space.suggest(trial))
        study.tell(trial, 0.0)
    assert all(space.contains(config) for config in configs)
    assert {len(config.layers) for config in configs} == {1, 2, 3, 4, 5, 6}
    # Optuna's raw 0.30000000000000004 and 0.6000000000000001 are snapped to the grid's decimals.
    dropouts = {layer.dropout for config in configs for layer in config.layers}
    assert dropouts == {0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7}


def test_space_multivariate_group_tpe_suggestions_stay_inside() -> None:
    space = load_space()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=3, multivariate=True, group=True, n_startup_trials=5)
    study = optuna.create_study(sampler=sampler)
    study.enqueue_trial(space.params_of(PAPER_HEAD))
    configs: list[HeadConfig] = []

    def objective(trial: optuna.Trial) -> float:
        configs.append(space.suggest(trial))
        return configs[-1].learning_rate * len(configs[-1].layers)

    study.optimize(objective, n_trials=20)
    assert configs[0] == PAPER_HEAD
    assert all(space.contains(config) for config in configs)


@pytest.mark.parametrize(
    ("change", "outside"),
    [
        ({"learning_rate": 0.1}, r"learning_rate = 0\.1 is not a number in \[1e-05, 0\.01\] \(log scale\)"),
        ({"batch_size": 300}, r"batch_size = 300 is not one of 128, 256, 512, 1024"),
        (
            {"class_weight_strength": 0.3},
            r"class_weight_strength = 0\.3 is not a number in \[0\.0, 1\.0\] step 0\.25",
        ),
        (
            {"layers": (LayerSpec(100, "relu", 0.1),)},
            r"units_0 = 100 is not an integer in \[128, 2560\] step 128",
        ),
        ({"layers": (LayerSpec(128, "relu", 0.1 + 0.2),)}, r"dropout_0 = 0\.30000000000000004 is not"),
        ({"layers": (LayerSpec(128, "relu"),) * 7}, r"n_layers = 7 is not an integer in \[1, 6\] step 1"),
    ],
)
def test_space_config_outside_is_refused(change: dict[str, object], outside: str) -> None:
    space = load_space()
    config = dataclasses.replace(PAPER_HEAD, **change)  # type: ignore[arg-type]
    assert not space.contains(config)
    with pytest.raises(ConfigError, match=r"head config is outside space 'default': .*" + outside):
        space.params_of(config)


def test_space_named_point_unknown_lists_points() -> None:
    with pytest.raises(ConfigError, match=r"space 'default' has no point 'authors'; its points: paper"):
        load_space().named_point("authors")


def test_space_sha256_ignores_comments_layout_and_number_spelling() -> None:
    default = load_space()
    reformatted = DEFAULT_TEXT.replace("# ", "#~ ").replace(
        "low = 0.0\nhigh = 0.7", "low = 0\nhigh   =   0.7"
    )
    same = parse_space(reformatted)
    assert same.text != default.text
    assert same.sha256 == default.sha256


def test_space_sha256_changes_with_a_range() -> None:
    changed = parse_space(DEFAULT_TEXT.replace("low = 1\nhigh = 6", "low = 1\nhigh = 5"))
    assert changed.sha256 != load_space().sha256


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        (
            'name = "default"',
            'name = "default"\ncolour = "red"',
            r"the top level has unknown key\(s\) \['colour'\]",
        ),
        (
            "format_version = 1",
            "format_version = 3",
            r"format_version = 3 is not supported; this hpo reads 1 and 2",
        ),
        ("[params.optimizer]", "[params.momentum]", r"\[params\] has unknown key\(s\) \['momentum'\]"),
        ("step = 128", "step = 128\nstride = 2", r"\[params.units\] has unknown key\(s\) \['stride'\]"),
        ("high = 2560", 'high = "2560"', r"\[params.units\] high = '2560' must be an integer"),
        ("step = 128", "step = 128.0", r"\[params.units\] step = 128\.0 must be an integer > 0"),
        ("low = 1\nhigh = 6", "low = 7\nhigh = 6", r"\[params.n_layers\] low = 7 is greater than high = 6"),
        ("step = 128", "step = 100", r"\[params.units\] step = 100 does not divide high - low = 2560 - 128"),
        (
            "step = 0.1",
            "step = 0.3",
            r"\[params.dropout\] step = 0\.3 does not divide high - low = 0\.7 - 0\.0",
        ),
        (
            '"elu", "gelu"]',
            '"elu", "swish"]',
            r"\[params.activation\] choices\[4\] = 'swish' is not allowed: activation must be one of rel",
        ),
        (
            "high = 0.7",
            "high = 1.0",
            r"\[params.dropout\] high = 1\.0 is not allowed: dropout must be in \[0, 1\)",
        ),
        (
            "high = 1e-2\nlog = true",
            "high = 1e-2\nlog = true\nstep = 1e-5",
            r"\[params.learning_rate\] has both step = 1e-05 and log = true",
        ),
        (
            "[128, 256, 512, 1024]",
            "[128, 256, 256]",
            r"\[params.batch_size\] choices = \[128, 256, 256\] has dup",
        ),
        ("[128, 256, 512, 1024]", "[]", r"\[params.batch_size\] choices = \[\] must be a non-empty list"),
        ('choices = ["adam"]', 'low = "adam"', r"\[params.optimizer\] has unknown key\(s\) \['low'\]"),
        (
            "{ units = 896,",
            "{ units = 900,",
            r"\[points.paper\] lies outside the space: units_1 = 900 is not an",
        ),
        (
            '"tanh", dropout',
            '"swish", dropout',
            r"\[points.paper\]: layers\[2\]: layer activation must be one of",
        ),
    ],
)
def test_load_space_invalid_file_raises(tmp_path: Path, old: str, new: str, match: str) -> None:
    path = _edited(tmp_path, old, new)
    with pytest.raises(ConfigError, match=rf"^space file {path}: {match}"):
        load_space(path)


def test_load_space_missing_param_raises(tmp_path: Path) -> None:
    path = _edited(tmp_path, '[params.optimizer]\nchoices = ["adam"]\n', "")
    with pytest.raises(ConfigError, match=r"\[params\] is missing \['optimizer'\]"):
        load_space(path)


def test_load_space_missing_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=rf"^space file not found: {path}; pass an existing TOML file$"):
        load_space(path)


def test_load_space_toml_syntax_error_names_line(tmp_path: Path) -> None:
    path = _edited(tmp_path, "[params.units]\nlow = 128", "[params.units]\nlow = = 128")
    line = DEFAULT_TEXT.splitlines().index("[params.units]") + 2
    with pytest.raises(ConfigError, match=rf"^space file {path}: invalid TOML: .*line {line}"):
        load_space(path)


WIDE_PATH = default_space_path("wide")
WIDE_TEXT = WIDE_PATH.read_text(encoding="utf-8")


def test_wide_space_keeps_the_paper_head_as_its_named_point() -> None:
    wide = load_space(Path("wide"))  # a packaged space by name
    assert wide.name == "wide" and wide.sha256 != load_space().sha256
    paper = wide.named_point("paper")
    assert paper.layers == PAPER_HEAD.layers and paper.augment_prob == 1.0
    assert (paper.optimizer, paper.branches, paper.input_norm, paper.lr_schedule) == (
        "adam",
        (),
        "none",
        "constant",
    )
    params = wide.params_of(paper)
    assert (
        params["branch_layers"] == 0 and "weight_decay" not in params and "branch_units_age_0" not in params
    )


def test_wide_space_draws_every_new_parameter() -> None:
    wide = load_space(WIDE_PATH)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: set[str] = set()
    for _ in range(60):
        trial = study.ask()
        config = wide.suggest(trial)
        assert wide.contains(config) and set(wide.params_of(config)) == set(trial.params)
        assert wide.suggest(optuna.trial.FixedTrial(wide.params_of(config))) == config
        seen |= set(trial.params)
        study.tell(trial, 0.0)
    expected = {"weight_decay", "input_norm", "label_smoothing", "batch_norm", "lr_schedule", "augment_prob"}
    expected |= {f"loss_weight_{head}" for head in HEADS} | {
        "branch_layers",
        "branch_activation",
        "branch_dropout",
    }
    expected |= {f"branch_units_{head}_{j}" for head in HEADS for j in (0, 1)}
    assert expected <= seen


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        (
            "format_version = 2",
            "format_version = 1",
            r"\[params\] has unknown key\(s\) \['augment_prob', 'batch_norm'",
        ),
        (
            "[params.branch_units]\nlow = 128",
            "[params.trunk_units]\nlow = 128",
            r"\[params\] has unknown key\(s\) \['trunk_units'\]",
        ),
        (
            'choices = ["adam", "adamw"]',
            'choices = ["adam"]',
            r"\[params.weight_decay\] is drawn only for optimizer adamw",
        ),
        (
            "choices = [false, true]",
            "choices = [0, 1]",
            r"\[params.batch_norm\] choices\[0\] = 0 must be true or false",
        ),
        (
            'choices = ["none", "standardize", "l2"]',
            'choices = ["pca"]',
            r"\[params.input_norm\] choices\[0\] = 'pca' is not allowed: input_norm must be one of none, "
            "standardize, l2",
        ),
        (
            "high = 0.2\nstep = 0.05",
            "high = 1.0\nstep = 0.05",
            r"\[params.label_smoothing\] high = 1\.0 is not allowed: label_smoothing must be in \[0, 1\)",
        ),
        (
            "[params.branch_layers]\nlow = 0\nhigh = 2",
            "[params.branch_layers]\nlow = 0\nhigh = 3",
            r"\[params.branch_layers\] high = 3 is not allowed: branch_layers must be in 0\.\.2",
        ),
        (
            "augment_prob = 1.0",
            "augment_prob = 0.3",
            r"\[points.paper\] lies outside the space: augment_prob = 0\.3 is not a number in \[0\.0, 1\.0\] "
            r"step 0\.25",
        ),
    ],
)
def test_load_wide_space_invalid_file_raises(tmp_path: Path, old: str, new: str, match: str) -> None:
    assert old in WIDE_TEXT
    path = tmp_path / "space.toml"
    path.write_text(WIDE_TEXT.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^space file {path}: {match}"):
        load_space(path)


def test_load_space_branch_parameters_go_together(tmp_path: Path) -> None:
    start = WIDE_TEXT.index("[params.branch_units]")
    end = WIDE_TEXT.index("[params.branch_activation]")
    path = tmp_path / "space.toml"
    path.write_text(WIDE_TEXT[:start] + WIDE_TEXT[end:], encoding="utf-8")
    with pytest.raises(
        ConfigError,
        match=r"go together; give all of them or none \(given: branch_layers, branch_activation, "
        r"branch_dropout\)$",
    ):
        load_space(path)


def test_point_with_a_setting_the_space_does_not_draw_is_outside(tmp_path: Path) -> None:
    path = tmp_path / "space.toml"
    path.write_text(
        DEFAULT_TEXT.replace('optimizer = "adam"\n', 'optimizer = "adam"\naugment_prob = 0.5\n').replace(
            "format_version = 1", "format_version = 2"
        ),
        encoding="utf-8",
    )
    with pytest.raises(
        ConfigError,
        match=r"\[points.paper\] lies outside the space: the space cannot draw augment_prob = 0\.5 "
        r"\(the space gives None\)$",
    ):
        load_space(path)
