from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import keras
import numpy as np
import pytest

from model.ensemble import Selection, ensemble_head, select_ensemble
from model.export import join_model
from model.head import HeadConfig, LayerSpec
from model.network import build_head

REPO = Path(__file__).resolve().parents[2]
DIM = 16
CONFIG = HeadConfig(layers=(LayerSpec(8, "relu"), LayerSpec(8, "tanh")))
# Dyadic probabilities keep sums exact: a repeated member averages to itself, and hand-computed ties tie.
TARGET = np.array([1.0, 0.0])  # gender (1 = Male) of the two validation rows

# Loads the saved ensemble in a fresh interpreter, in safe mode, with no custom objects.
FRESH_PROCESS = """
import sys
from collections.abc import Mapping
import keras, numpy as np
model_path, vectors_path, out_path = sys.argv[1:]
model = keras.saving.load_model(model_path, safe_mode=True)
outputs = model.predict_on_batch(np.load(vectors_path))
np.savez(out_path, **{name: np.asarray(value) for name, value in outputs.items()})
"""


def _member(gender: list[float]) -> dict[str, np.ndarray]:
    rows = len(gender)
    return {
        "age": np.full((rows, 9), 1 / 9),
        "race": np.full((rows, 7), 1 / 7),
        "gender": np.array(gender).reshape(-1, 1),
    }


def _gender_accuracy(outputs: Mapping[str, np.ndarray]) -> float:
    return float(np.mean((outputs["gender"][:, 0] >= 0.5) == TARGET))


def _gender_brier(outputs: Mapping[str, np.ndarray]) -> float:
    return -float(np.mean((outputs["gender"][:, 0] - TARGET) ** 2))


@pytest.fixture(scope="module")
def heads() -> list[keras.Model]:
    """Four seeded heads, all named "head" with the same layer names, as loaded heads are."""
    made = []
    for seed in range(4):
        keras.utils.set_random_seed(seed)
        made.append(build_head(CONFIG, DIM))
    return made


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((12, DIM)).astype(np.float32)


def _weighted_average(
    heads: list[keras.Model], weights: list[float], vectors: np.ndarray
) -> dict[str, np.ndarray]:
    """Σ w_i · head_i(vectors) in float64, from each head run on its own."""
    outputs = [head.predict_on_batch(vectors) for head in heads]
    return {
        name: np.einsum("m,m...->...", np.asarray(weights), np.stack([out[name] for out in outputs]))
        for name in ("age", "race", "gender")
    }


def test_select_ensemble_complementary_members_are_picked_together() -> None:
    # Alone, members 0 and 1 each get one row right; averaged, (0.625, 0.375), both. Member 2 is wrong.
    members = [_member([0.875, 0.625]), _member([0.375, 0.125]), _member([0.0625, 0.875])]
    selection = select_ensemble(members, _gender_accuracy, 3)
    # Step 3: adding 0 gives (0.708, 0.458) and adding 1 (0.542, 0.292), both all right: the tie goes to 0.
    assert selection == Selection(
        indices=(0, 1),
        counts=(1, 1, 0),
        weights=(0.5, 0.5, 0.0),
        score=1.0,
        path=(0, 1, 0),
        scores=(0.5, 1.0, 1.0),
    )


def test_select_ensemble_strong_member_alone_is_the_shortest_best_prefix() -> None:
    # Brier: member 1 alone scores -0.015625; with member 0, (0.75, 0.25) scores -0.0625.
    members = [_member([0.625, 0.375]), _member([0.875, 0.125])]
    selection = select_ensemble(members, _gender_brier, 3)
    assert selection.path == (1, 1, 1)
    assert selection.scores == (-0.015625, -0.015625, -0.015625)
    assert (selection.indices, selection.counts, selection.weights) == ((1,), (0, 1), (0.0, 1.0))


def test_select_ensemble_duplicate_member_gets_twice_the_weight() -> None:
    # Errors (-0.25, 0) and (0, 0.5): 0 alone -1/32, 0+1 -5/128, then 0+0+1 = (5/6, 1/6) scores -1/36.
    members = [_member([0.75, 0.0]), _member([1.0, 0.5])]
    selection = select_ensemble(members, _gender_brier, 3)
    assert selection.path == selection.indices == (0, 0, 1)
    assert selection.scores == pytest.approx((-1 / 32, -1 / 32, -1 / 36), rel=1e-15)
    assert selection.counts == (2, 1)
    assert selection.weights == (2 / 3, 1 / 3)


def test_select_ensemble_same_members_same_selection() -> None:
    rng = np.random.default_rng(3)
    members = [_member(list(rng.uniform(0, 1, 2))) for _ in range(5)]
    first = select_ensemble(members, _gender_accuracy, 6)
    assert select_ensemble(members, _gender_accuracy, 6) == first
    assert sum(first.counts) == len(first.indices)


def test_select_ensemble_size_below_one_raises() -> None:
    with pytest.raises(ValueError, match=r"`size >= 1` must hold for an integer size, but got size=0"):
        select_ensemble([_member([0.5, 0.5])], _gender_accuracy, 0)


def test_select_ensemble_no_members_raises() -> None:
    with pytest.raises(ValueError, match="needs at least one member, got 0"):
        select_ensemble([], _gender_accuracy, 2)


def test_select_ensemble_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match=r"member 1 has .*'gender': \(3, 1\)"):
        select_ensemble([_member([0.5, 0.5]), _member([0.5, 0.5, 0.5])], _gender_accuracy, 2)


def test_select_ensemble_non_finite_score_raises() -> None:
    with pytest.raises(
        ValueError, match="score must return a finite number, but got nan at step 1 for member 0"
    ):
        select_ensemble([_member([0.5, 0.5])], lambda outputs: float("nan"), 1)


def test_ensemble_head_reloaded_in_fresh_process_equals_weighted_average(
    heads: list[keras.Model], vectors: np.ndarray, tmp_path: Path
) -> None:
    weights = [0.5, 0.25, 0.25]
    model = ensemble_head(heads[:3], weights)
    model.save(tmp_path / "ensemble.keras")
    np.save(tmp_path / "vectors.npy", vectors)
    command = [
        sys.executable,
        "-c",
        FRESH_PROCESS,
        *(str(tmp_path / f) for f in ("ensemble.keras", "vectors.npy", "out.npz")),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    fresh = np.load(tmp_path / "out.npz")
    expected = _weighted_average(heads[:3], weights, vectors)
    for name in ("age", "race", "gender"):
        assert fresh[name].dtype == np.float32
        np.testing.assert_allclose(fresh[name], expected[name], rtol=1e-6)
    # Not saturated, so the comparison means something.
    assert 0.05 < float(expected["gender"].min()) < float(expected["gender"].max()) < 0.95


def test_ensemble_head_has_a_heads_interface(heads: list[keras.Model]) -> None:
    model = ensemble_head(heads[:2], [0.5, 0.5])
    assert model.name == "head"
    assert [(t.name, t.dtype, t.shape) for t in model.inputs] == [("embedding", "float32", (None, DIM))]
    assert {name: (t.dtype, tuple(t.shape)) for name, t in model.output.items()} == {
        "age": ("float32", (None, 9)),
        "race": ("float32", (None, 7)),
        "gender": ("float32", (None, 1)),
    }


def test_ensemble_head_leaves_out_zero_weights(heads: list[keras.Model], vectors: np.ndarray) -> None:
    model = ensemble_head(heads, [0.5, 0.0, 0.25, 0.25])
    assert [layer.name for layer in model.layers if isinstance(layer, keras.Model)] == [
        "member_0",
        "member_2",
        "member_3",
    ]
    outputs = model.predict_on_batch(vectors)
    expected = _weighted_average([heads[0], heads[2], heads[3]], [0.5, 0.25, 0.25], vectors)
    np.testing.assert_allclose(outputs["age"], expected["age"], rtol=1e-6)


def test_ensemble_head_selection_weights_give_duplicate_twice_the_weight(
    heads: list[keras.Model], vectors: np.ndarray
) -> None:
    members = [_member([0.75, 0.0]), _member([1.0, 0.5])]
    model = ensemble_head(heads[:2], select_ensemble(members, _gender_brier, 3).weights)
    first, second = (head.predict_on_batch(vectors)["race"] for head in heads[:2])
    np.testing.assert_allclose(model.predict_on_batch(vectors)["race"], (2 * first + second) / 3, rtol=1e-6)


def test_ensemble_head_of_loaded_heads_one_of_them_twice_saves_and_loads(
    heads: list[keras.Model], vectors: np.ndarray, tmp_path: Path
) -> None:
    for index in (0, 1):
        heads[index].save(tmp_path / f"head_{index}.keras")
    first, second = (keras.saving.load_model(tmp_path / f"head_{i}.keras", safe_mode=True) for i in (0, 1))
    ensemble_head([first, first, second], [1.0, 1.0, 1.0]).save(tmp_path / "ensemble.keras")
    loaded = keras.saving.load_model(tmp_path / "ensemble.keras", safe_mode=True)
    expected = _weighted_average(heads[:2], [2 / 3, 1 / 3], vectors)
    outputs = loaded.predict_on_batch(vectors)
    for name in ("age", "race", "gender"):
        np.testing.assert_allclose(outputs[name], expected[name], rtol=1e-6)


def test_ensemble_head_joins_a_base(heads: list[keras.Model]) -> None:
    image = keras.Input(shape=(4, 4, 3), dtype="uint8", name="pixels")
    pixels = keras.layers.Rescaling(1 / 255)(image)
    embedding = keras.layers.Dense(DIM, name="embed")(keras.layers.Flatten()(pixels))
    base = keras.Model(image, embedding, name="base")
    model = join_model(base, ensemble_head(heads[:2], [0.75, 0.25]))
    images = np.random.default_rng(0).integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    joined = model.predict_on_batch(images)
    expected = _weighted_average(heads[:2], [0.75, 0.25], base.predict_on_batch(images))
    assert model.get_layer("head").get_layer("member_1").name == "member_1"
    for name in ("age", "race", "gender"):
        np.testing.assert_allclose(joined[name], expected[name], rtol=1e-6)


def test_ensemble_head_weight_count_mismatch_raises(heads: list[keras.Model]) -> None:
    with pytest.raises(ValueError, match=r"one weight per head .* but got 2 heads and 3 weights"):
        ensemble_head(heads[:2], [0.5, 0.25, 0.25])


@pytest.mark.parametrize("weights", [[0.5, -0.5], [0.0, 0.0], [float("inf"), 1.0]])
def test_ensemble_head_bad_weights_raise(heads: list[keras.Model], weights: list[float]) -> None:
    with pytest.raises(ValueError, match=r"finite and >= 0 with a sum > 0, but got \["):
        ensemble_head(heads[:2], weights)


def test_ensemble_head_different_embedding_sizes_raise(heads: list[keras.Model]) -> None:
    other = build_head(CONFIG, DIM * 2)
    with pytest.raises(
        ValueError, match=r"same \(None, D\) embedding, but got input shapes \[\(None, 16\), \(None, 32\)\]"
    ):
        ensemble_head([heads[0], other], [0.5, 0.5])


def test_ensemble_head_without_the_three_outputs_raises(heads: list[keras.Model]) -> None:
    inputs = keras.Input(shape=(DIM,), name="embedding")
    age_only = keras.Model(inputs, {"age": keras.layers.Dense(9, activation="softmax")(inputs)})
    with pytest.raises(ValueError, match=r"must output \{age, race, gender\}; head 1 outputs \['age'\]"):
        ensemble_head([heads[0], age_only], [0.5, 0.5])
