from __future__ import annotations

import json
import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from data.errors import ConfigError, DatasetError
from data.labels import AGE
from model.fitting import build_optimizer, class_weights, head_losses
from model.head import HeadConfig, LayerSpec
from model.network import build_head
from model.paper import PAPER_HEAD


def _age_labels(*names: str) -> np.ndarray:
    return np.array([AGE.index(name) for name in names], dtype=np.int8)


# n = 8 labels, k = 9 classes; first appearance order (20-29 first) differs from vocabulary order.
AGE_SAMPLE = _age_labels("20-29", "20-29", "30-39", "20-29", "0-2", "more than 70", "30-39", "20-29")
# n / (k · count): 0-2 → 8/9, 20-29 → 8/36, 30-39 → 8/18, more than 70 → 8/9; absent classes → 1.
AGE_BALANCED = np.array([8 / 9, 1, 1, 8 / 36, 8 / 18, 1, 1, 1, 8 / 9], dtype=np.float32)


def test_class_weights_balanced_in_vocabulary_order() -> None:
    weights = class_weights(AGE_SAMPLE, len(AGE))
    assert weights.dtype == np.float32
    np.testing.assert_array_equal(weights, AGE_BALANCED)


def test_class_weights_small_vector_exact() -> None:
    # n = 6, k = 4: 6/(4·3), 6/(4·1), 6/(4·2); class 3 is absent → 1.
    weights = class_weights(np.array([0, 0, 0, 1, 2, 2]), 4)
    np.testing.assert_array_equal(weights, np.array([0.5, 1.5, 0.75, 1.0], dtype=np.float32))


def test_class_weights_strength_zero_is_unweighted() -> None:
    np.testing.assert_array_equal(class_weights(AGE_SAMPLE, 9, 0.0), np.ones(9, dtype=np.float32))


def test_class_weights_strength_half_is_square_root() -> None:
    expected = np.sqrt(np.array([8 / 9, 1, 1, 8 / 36, 8 / 18, 1, 1, 1, 8 / 9])).astype(np.float32)
    np.testing.assert_array_equal(class_weights(AGE_SAMPLE, 9, 0.5), expected)


def test_class_weights_label_out_of_range_raises() -> None:
    with pytest.raises(DatasetError, match=r"labels must lie in 0\.\.8, got values 0\.\.9"):
        class_weights(np.array([0, 9]), 9)


def test_class_weights_strength_out_of_range_raises() -> None:
    with pytest.raises(ConfigError, match=r"strength must be a number in \[0, 1\], got 1\.5"):
        class_weights(AGE_SAMPLE, 9, 1.5)


def test_paper_head_is_table_two() -> None:
    assert [(layer.units, layer.activation, layer.dropout) for layer in PAPER_HEAD.layers] == [
        (640, "leaky_relu", 0.2),
        (896, "relu", 0.3),
        (2176, "tanh", 0.4),
        (640, "leaky_relu", 0.6),
        (1664, "leaky_relu", 0.2),
    ]
    assert (PAPER_HEAD.learning_rate, PAPER_HEAD.batch_size, PAPER_HEAD.optimizer) == (1e-3, 256, "adam")
    assert PAPER_HEAD.class_weight_strength == 1.0


def test_head_config_to_dict_round_trips_through_json() -> None:
    config = HeadConfig((LayerSpec(128, "gelu", 0.3), LayerSpec(256, "elu")), 3e-4, 512, 0.25, "adamw")
    data = config.to_dict()
    assert data == {
        "layers": [
            {"units": 128, "activation": "gelu", "dropout": 0.3},
            {"units": 256, "activation": "elu", "dropout": 0.0},
        ],
        "learning_rate": 3e-4,
        "batch_size": 512,
        "class_weight_strength": 0.25,
        "optimizer": "adamw",
        # The wide space's settings, at their defaults: the paper's way of training.
        "weight_decay": 0.0,
        "input_norm": "none",
        "label_smoothing": 0.0,
        "batch_norm": False,
        "branches": {},
        "loss_weights": {"age": 1.0, "race": 1.0, "gender": 1.0},
        "lr_schedule": "constant",
        "augment_prob": None,
    }
    assert HeadConfig.from_dict(json.loads(json.dumps(data))) == config
    assert HeadConfig.from_dict(PAPER_HEAD.to_dict()) == PAPER_HEAD


def test_head_config_from_dict_of_before_the_wide_fields_keeps_their_defaults() -> None:
    old = {"layers": [{"units": 8, "activation": "relu", "dropout": 0.0}], "optimizer": "adam"}
    assert HeadConfig.from_dict(old) == HeadConfig((LayerSpec(8, "relu"),))


WIDE = HeadConfig(
    (LayerSpec(16, "gelu", 0.1),),
    optimizer="adamw",
    weight_decay=1e-3,
    input_norm="standardize",
    label_smoothing=0.1,
    batch_norm=True,
    branches=((LayerSpec(8, "relu", 0.2),), (LayerSpec(12, "relu", 0.2),), (LayerSpec(4, "relu", 0.2),)),
    loss_weights=(1.5, 1.0, 0.5),
    lr_schedule="cosine",
    augment_prob=0.5,
)


def test_head_config_wide_fields_round_trip_through_json() -> None:
    data = json.loads(json.dumps(WIDE.to_dict()))
    assert data["branches"] == {
        "age": [{"units": 8, "activation": "relu", "dropout": 0.2}],
        "race": [{"units": 12, "activation": "relu", "dropout": 0.2}],
        "gender": [{"units": 4, "activation": "relu", "dropout": 0.2}],
    }
    assert data["loss_weights"] == {"age": 1.5, "race": 1.0, "gender": 0.5}
    assert HeadConfig.from_dict(data) == WIDE


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"weight_decay": 1e-3}, r"^weight_decay 0\.001 needs optimizer adamw, got 'adam'$"),
        ({"weight_decay": -1.0, "optimizer": "adamw"}, r"^weight_decay must be a number >= 0, got -1\.0$"),
        ({"input_norm": "pca"}, r"^input_norm must be one of none, standardize, l2, got 'pca'$"),
        ({"label_smoothing": 1.0}, r"^label_smoothing must be a number in \[0, 1\), got 1\.0$"),
        ({"batch_norm": 1}, r"^batch_norm must be true or false, got 1$"),
        ({"lr_schedule": "step"}, r"^lr_schedule must be one of constant, cosine, got 'step'$"),
        ({"augment_prob": 1.5}, r"^augment_prob must be a number in \[0, 1\], got 1\.5$"),
        ({"loss_weights": (1.0, -1.0, 1.0)}, r"^loss weight of race must be a number >= 0, got -1\.0$"),
        ({"loss_weights": (0.0, 0.0, 0.0)}, r"^loss_weights must not all be 0, got \(0\.0, 0\.0, 0\.0\)$"),
        (
            {"branches": ((LayerSpec(8, "relu"),), (), ())},
            r"^branches must give every head \(age, race, gender\) the same 1\.\.2 layers, got \[1, 0, 0\]",
        ),
    ],
)
def test_head_config_wide_field_invalid_raises(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        HeadConfig((LayerSpec(8, "relu"),), **changes)  # type: ignore[arg-type]


def test_build_head_wide_config_has_its_layers_and_trains_under_mixed_precision() -> None:
    statistics = np.stack([np.full(6, 2.0), np.full(6, 4.0)]).astype(np.float32)
    model = build_head(WIDE, 6, statistics=statistics)
    names = [layer.name for layer in model.layers]
    assert names[:2] == ["embedding", "input_standardize"]
    assert {"batch_norm_0", "gelu_0", "dense_age_0", "dense_race_0", "dense_gender_0"} <= set(names)
    assert model.get_layer("dense_race_0").units == 12
    normalised = model.get_layer("input_standardize")(np.full((1, 6), 4.0, np.float32)).numpy()
    np.testing.assert_allclose(normalised, np.ones((1, 6)), rtol=1e-6)  # (4 - 2) / sqrt(4)


def test_build_head_l2_input_norm_is_unit_normalization() -> None:
    model = build_head(HeadConfig((LayerSpec(4, "relu"),), input_norm="l2"), 2)
    out = model.get_layer("input_l2")(np.array([[3.0, 4.0]], np.float32)).numpy()
    np.testing.assert_allclose(out, [[0.6, 0.8]], rtol=1e-6)


def test_build_head_standardize_without_statistics_raises() -> None:
    with pytest.raises(ConfigError, match="input_norm standardize needs the train split's statistics"):
        build_head(HeadConfig((LayerSpec(4, "relu"),), input_norm="standardize"), 2)


def test_build_optimizer_cosine_decays_and_adamw_gets_its_decay() -> None:
    optimizer = build_optimizer(WIDE, decay_steps=100)
    assert isinstance(optimizer, keras.optimizers.AdamW) and optimizer.weight_decay == pytest.approx(1e-3)
    schedule = optimizer._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    assert float(schedule(0)) == pytest.approx(1e-3) and float(schedule(100)) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ConfigError, match="a cosine schedule needs decay_steps > 0, got None"):
        build_optimizer(WIDE)


def test_head_losses_label_smoothing_spreads_the_target() -> None:
    probs = np.full((1, 9), 1 / 9, np.float32)
    plain = head_losses({"age": np.ones(9), "race": np.ones(7)})
    smooth = head_losses({"age": np.ones(9), "race": np.ones(7)}, label_smoothing=0.1)
    # Uniform predictions: every target distribution costs log 9, smoothed or not.
    assert float(smooth["age"](np.array([2]), probs)) == pytest.approx(
        float(plain["age"](np.array([2]), probs))
    )
    confident = np.array([[0.9] + [0.1 / 8] * 8], np.float32)
    expected = -(0.9 + 0.1 / 9) * np.log(0.9) - (0.1 / 9) * 8 * np.log(0.1 / 8)
    assert float(smooth["age"](np.array([0]), confident)) == pytest.approx(expected, rel=1e-5)
    male = np.array([[0.8]], np.float32)
    assert float(smooth["gender"](np.array([1]), male)) == pytest.approx(
        -(0.95 * np.log(0.8) + 0.05 * np.log(0.2)), rel=1e-5
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"layers": (LayerSpec(8, "relu"),), "learning_rate": 0.0},
            r"learning_rate must be a number > 0, got 0\.0",
        ),
        ({"layers": (LayerSpec(8, "relu"),), "batch_size": 0}, r"batch_size must be an integer > 0, got 0"),
        (
            {"layers": (LayerSpec(8, "relu"),), "batch_size": 256.0},
            r"batch_size must be an integer > 0, got 256\.0",
        ),
        ({"layers": (LayerSpec(8, "relu"),), "class_weight_strength": 1.5}, r"in \[0, 1\], got 1\.5"),
        (
            {"layers": (LayerSpec(8, "relu"),), "optimizer": "adagrad"},
            r"optimizer must be one of .*got 'adagrad'",
        ),
        ({"layers": ()}, r"at least one hidden layer"),
    ],
)
def test_head_config_invalid_raises(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        HeadConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, "relu", 0.1), r"units must be an integer > 0, got 0"),
        ((8, "swish", 0.1), r"activation must be one of relu, leaky_relu, tanh, elu, gelu, got 'swish'"),
        ((8, "relu", 1.0), r"dropout must be a number in \[0, 1\), got 1\.0"),
    ],
)
def test_layer_spec_invalid_raises(args: tuple[int, str, float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LayerSpec(*args)


def test_head_config_from_dict_unknown_key_raises() -> None:
    data = {**PAPER_HEAD.to_dict(), "momentum": 0.9}
    with pytest.raises(ConfigError, match=r"unknown head config key\(s\) \['momentum'\]"):
        HeadConfig.from_dict(data)


def test_head_config_from_dict_bad_layer_names_index() -> None:
    data = {"layers": [{"units": 8, "activation": "relu"}, {"units": -1, "activation": "relu"}]}
    with pytest.raises(ConfigError, match=r"layers\[1\]: layer units must be an integer > 0, got -1"):
        HeadConfig.from_dict(data)


def test_build_head_paper_shapes_names_and_param_count() -> None:
    model = build_head(PAPER_HEAD, 512)
    hidden = [
        (512 * 640 + 640),
        (640 * 896 + 896),
        (896 * 2176 + 2176),
        (2176 * 640 + 640),
        (640 * 1664 + 1664),
    ]
    outputs = [(1664 * 9 + 9), (1664 * 7 + 7), (1664 * 1 + 1)]
    assert sum(hidden) + sum(outputs) == 5_342_737
    assert model.count_params() == 5_342_737
    assert model.input_shape == (None, 512)
    assert {name: model.get_layer(name).output.shape for name in ("age", "race", "gender")} == {
        "age": (None, 9),
        "race": (None, 7),
        "gender": (None, 1),
    }
    assert [layer.name for layer in model.layers if isinstance(layer, keras.layers.Dropout)] == [
        f"dropout_{i}" for i in range(5)
    ]
    assert [model.get_layer(f"dropout_{i}").rate for i in range(5)] == [0.2, 0.3, 0.4, 0.6, 0.2]


def test_build_head_activations_follow_config() -> None:
    model = build_head(PAPER_HEAD, 512)
    assert model.get_layer("dense_0").activation is keras.activations.linear
    # tf.nn.leaky_relu's default slope, which the authors' activation="leaky_relu" ran on Keras 2.7.
    assert [model.get_layer(f"leaky_relu_{i}").negative_slope for i in (0, 3, 4)] == [0.2, 0.2, 0.2]
    assert model.get_layer("dense_1").activation is keras.activations.relu
    assert model.get_layer("dense_2").activation is keras.activations.tanh
    assert model.get_layer("age").activation is keras.activations.softmax
    assert model.get_layer("race").activation is keras.activations.softmax
    assert model.get_layer("gender").activation is keras.activations.sigmoid


def test_build_head_leaky_relu_maps_minus_one_to_minus_point_two() -> None:
    model = build_head(HeadConfig((LayerSpec(1, "leaky_relu"),)), 1)
    layer = model.get_layer("leaky_relu_0")
    assert layer(np.array([[-1.0, 2.0]], np.float32)).numpy().tolist() == [[np.float32(-0.2), 2.0]]


def test_build_head_outputs_float32_under_mixed_precision() -> None:
    config = HeadConfig((LayerSpec(16, "gelu", 0.0), LayerSpec(8, "elu", 0.5)))
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_head(config, 32)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("dense_0").compute_dtype == "bfloat16"
    outputs = model(np.ones((3, 32), dtype=np.float32))
    assert {name: value.dtype.name for name, value in outputs.items()} == {
        "age": "float32",
        "race": "float32",
        "gender": "float32",
    }
    np.testing.assert_allclose(np.sum(outputs["age"], axis=1), np.ones(3), rtol=1e-6)
    assert "dropout_0" not in [layer.name for layer in model.layers]


def _example() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    age_probs = np.full((3, 9), 0.0, dtype=np.float32)
    age_probs[0, [0, 1]] = [0.5, 0.5]  # true 0: p = 1/2
    age_probs[1, [3, 4]] = [0.25, 0.75]  # true 3: p = 1/4
    age_probs[2, [8, 2]] = [0.125, 0.875]  # true 8: p = 1/8
    race_probs = np.full((3, 7), 0.0, dtype=np.float32)
    race_probs[0, [2, 0]] = [0.5, 0.5]  # true 2: p = 1/2
    race_probs[1, [2, 6]] = [0.25, 0.75]  # true 2: p = 1/4
    race_probs[2, 6] = 1.0  # true 6: p = 1
    age_w = np.ones(9, dtype=np.float32)
    age_w[[0, 3, 8]] = [2.0, 0.5, 1.0]
    race_w = np.ones(7, dtype=np.float32)
    race_w[[2, 6]] = [4.0, 3.0]
    labels = {
        "age": np.array([0, 3, 8], np.int8),
        "race": np.array([2, 2, 6], np.int8),
        "gender": np.array([1, 0, 1]),
    }
    probs = {"age": age_probs, "race": race_probs, "gender": np.array([[0.8], [0.25], [0.5]], np.float32)}
    return labels, probs, {"age": age_w, "race": race_w}


# Mean over the batch of w[y] · −ln p[y] (not divided by the sum of weights):
LN2 = math.log(2)
EXPECTED = {
    "age": (2.0 * LN2 + 0.5 * 2 * LN2 + 1.0 * 3 * LN2) / 3,  # = 2 ln 2
    "race": (4.0 * LN2 + 4.0 * 2 * LN2 + 3.0 * 0.0) / 3,  # = 4 ln 2
    "gender": -(math.log(0.8) + math.log(0.75) + math.log(0.5)) / 3,
}


def test_head_losses_equal_hand_computed_values() -> None:
    labels, probs, weights = _example()
    losses = head_losses(weights)
    assert sorted(losses) == ["age", "gender", "race"]
    for head, expected in EXPECTED.items():
        assert float(losses[head](labels[head], probs[head])) == pytest.approx(expected, rel=1e-6)
        column = labels[head].reshape(-1, 1)
        assert float(losses[head](column, probs[head])) == pytest.approx(expected, rel=1e-6)


def test_head_losses_inside_tf_function_match_eager() -> None:
    labels, probs, weights = _example()
    losses = head_losses(weights)

    @tf.function
    def total(age_y: tf.Tensor, age_p: tf.Tensor, race_y: tf.Tensor, race_p: tf.Tensor) -> tf.Tensor:
        return losses["age"](age_y, age_p) + losses["race"](race_y, race_p)

    value = total(labels["age"], probs["age"], labels["race"], probs["race"])
    assert float(value) == pytest.approx(6 * LN2, rel=1e-6)


def test_head_losses_are_finite_at_zero_probability() -> None:
    losses = head_losses({"age": np.ones(9, np.float32), "race": np.ones(7, np.float32)})
    probs = np.zeros((1, 9), np.float32)
    probs[0, 1] = 1.0
    assert float(losses["age"](np.array([0]), probs)) == pytest.approx(-math.log(1e-7), rel=1e-6)
    assert math.isfinite(float(losses["gender"](np.array([1]), np.array([[0.0]], np.float32))))


def test_head_losses_train_a_compiled_keras_model() -> None:
    labels, _, weights = _example()
    model = build_head(HeadConfig((LayerSpec(4, "relu"),)), 8)
    model.compile(optimizer=build_optimizer(PAPER_HEAD), loss=head_losses(weights))
    inputs = np.linspace(-1.0, 1.0, 24, dtype=np.float32).reshape(3, 8)
    result = model.evaluate(inputs, labels, verbose=0, return_dict=True)
    outputs = model(inputs)
    direct = {head: float(fn(labels[head], outputs[head])) for head, fn in head_losses(weights).items()}
    for head in ("age", "race", "gender"):
        assert result[f"{head}_loss"] == pytest.approx(direct[head], rel=1e-5)


def test_head_losses_reject_gender_weights() -> None:
    weights = {"age": np.ones(9), "race": np.ones(7), "gender": np.ones(2)}
    with pytest.raises(ConfigError, match=r"exactly age and race, got keys \['age', 'gender', 'race'\]"):
        head_losses(weights)


def test_head_losses_wrong_weight_shape_raises() -> None:
    with pytest.raises(ConfigError, match=r"race class weights must have shape \(7,\), got \(9,\)"):
        head_losses({"age": np.ones(9), "race": np.ones(9)})


def test_build_optimizer_uses_config() -> None:
    optimizer = build_optimizer(HeadConfig((LayerSpec(4, "relu"),), learning_rate=0.5, optimizer="sgd"))
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert float(optimizer.learning_rate) == 0.5


def test_wide_head_saves_and_loads_in_safe_mode_with_equal_outputs(tmp_path: Path) -> None:
    statistics = np.stack([np.linspace(-1, 1, 6), np.linspace(0.5, 2, 6)]).astype(np.float32)
    model = build_head(WIDE, 6, statistics=statistics)
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    model.save(tmp_path / "head.keras")
    loaded = keras.saving.load_model(tmp_path / "head.keras", safe_mode=True)
    for name in ("age", "race", "gender"):
        np.testing.assert_allclose(loaded(x)[name].numpy(), model(x)[name].numpy(), rtol=1e-6)
