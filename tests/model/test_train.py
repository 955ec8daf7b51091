from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import optuna
import pytest
import tensorflow as tf

from data.cache import open_cache
from data.errors import CacheError, ConfigError
from data.labels import HEADS, VOCABULARIES
from model.head import HeadConfig, LayerSpec
from model.metrics import group_metrics, head_metrics, mean_metric
from model.train import TrainOptions, TrainResult, drawn_views, train_head
from model.train_data import TrainData

DIM = 32
HEAD = HeadConfig(layers=(LayerSpec(32, "relu", 0.0),), learning_rate=1e-2, batch_size=32)
DROPOUT_HEAD = HeadConfig(layers=(LayerSpec(64, "relu", 0.2),), learning_rate=1e-2, batch_size=32)
FLOAT32 = TrainOptions(jit_compile=False, precision="float32")
Run = tuple[TrainResult, list[tuple[int, dict]]]  # result, on_epoch's (epoch, metrics) calls
CPU_ONLY = pytest.mark.skipif(bool(tf.config.list_logical_devices("GPU")), reason="CPU defaults")


def separable(n: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per head one fixed centre per class, summed, plus a little noise: linearly separable."""
    centres = np.random.default_rng(0).standard_normal((3, 9, DIM)).astype(np.float32)
    rng = np.random.default_rng(seed)
    labels = np.stack([rng.integers(0, len(VOCABULARIES[head]), n) for head in HEADS], axis=1).astype(np.int8)
    x = sum(centres[column][labels[:, column]] for column in range(3))
    return (x + 0.1 * rng.standard_normal((n, DIM))).astype(np.float32), labels


def dataset(*views: np.ndarray, labels: np.ndarray, val: tuple[np.ndarray, np.ndarray]) -> TrainData:
    return TrainData.from_arrays(np.stack(views), labels, *val)


# 250 rows: 7 full batches of 32 and a last one of 26.
TRAIN = separable(250, seed=1)
VAL = separable(120, seed=2)
SEPARABLE = dataset(TRAIN[0], labels=TRAIN[1], val=VAL)
# Validation labels unrelated to the embeddings: the objective wanders, the best epoch is not the last.
NOISE_VAL = dataset(TRAIN[0], labels=TRAIN[1], val=(VAL[0], np.random.default_rng(4).permutation(VAL[1])))


def run(data: TrainData = SEPARABLE, config: HeadConfig = HEAD, **kwargs: object) -> Run:
    calls: list[tuple[int, dict]] = []
    arguments: dict = {"epochs": 3, "seed": 7, "patience": None, "options": FLOAT32} | kwargs
    result = train_head(config, data, on_epoch=lambda epoch, m: calls.append((epoch, m)), **arguments)
    return result, calls


def weights_equal(a: TrainResult, b: TrainResult) -> bool:
    return all(
        np.array_equal(x, y) for x, y in zip(a.model.get_weights(), b.model.get_weights(), strict=True)
    )


def val_metrics(result: TrainResult, data: TrainData) -> dict[str, dict[str, float]]:
    out = {head: value.numpy() for head, value in result.model(data.val_embeddings, training=False).items()}
    predicted = [out["age"].argmax(1), out["race"].argmax(1), (out["gender"][:, 0] >= 0.5).astype(int)]
    labels = data.val_labels.astype(np.int64)
    groups = group_metrics(labels, np.stack(predicted, axis=1))
    return {
        head: head_metrics(labels[:, column], predicted[column], len(VOCABULARIES[head]))
        | {"group_min": groups[head]["group_min"], "difference": groups[head]["difference"]}
        for column, head in enumerate(HEADS)
    }


@pytest.fixture(scope="module")
def float32_run() -> Run:
    return run()


def test_train_head_separable_task_reaches_high_balanced_accuracy(float32_run: Run) -> None:
    result, _ = float32_run
    assert min(result.metrics[head]["balanced_accuracy"] for head in HEADS) >= 0.9
    assert result.epochs_run == 3


def test_train_head_on_epoch_called_once_per_epoch_with_three_heads(float32_run: Run) -> None:
    _, calls = float32_run
    assert [epoch for epoch, _ in calls] == [0, 1, 2]
    for _, metrics in calls:
        assert list(metrics) == list(HEADS)
        assert all(
            set(values) == {"accuracy", "balanced_accuracy", "macro_f1", "group_min", "difference"}
            for values in metrics.values()
        )


@pytest.mark.parametrize(
    "options",
    [
        TrainOptions(jit_compile=False, precision="mixed"),
        TrainOptions(jit_compile=False, xla_update=False, fused_update=False, precision="float32"),
        TrainOptions(jit_compile=False, fast_dropout=False, fused_update=False),
        TrainOptions(jit_compile=True, precision="float32"),
    ],
    ids=["mixed", "no-xla", "previous-default", "xla-epoch"],
)
def test_train_head_options_train_the_separable_task(options: TrainOptions) -> None:
    result, _ = run(options=options, config=DROPOUT_HEAD)
    assert min(result.metrics[head]["balanced_accuracy"] for head in HEADS) >= 0.9


@pytest.mark.parametrize("optimizer", ["adamw", "nadam", "rmsprop", "sgd"])
def test_train_head_every_optimizer_trains(optimizer: str) -> None:
    config = dataclasses.replace(HEAD, optimizer=optimizer)
    result = train_head(config, SEPARABLE, epochs=1, seed=0, patience=None)
    assert result.epochs_run == 1
    assert set(result.metrics) == set(HEADS)


def test_train_head_on_epoch_raise_stops_training() -> None:
    epochs: list[int] = []

    def stop_at_one(epoch: int, metrics: dict) -> None:
        epochs.append(epoch)
        if epoch == 1:
            raise optuna.TrialPruned("pruned")

    with pytest.raises(optuna.TrialPruned, match="pruned"):
        train_head(HEAD, SEPARABLE, epochs=5, seed=0, on_epoch=stop_at_one)
    assert epochs == [0, 1]


def test_train_head_with_dropout_same_seed_same_result() -> None:
    first, calls = run(config=DROPOUT_HEAD, options=TrainOptions(jit_compile=False))
    again, calls_again = run(config=DROPOUT_HEAD, options=TrainOptions(jit_compile=False))
    assert weights_equal(first, again)
    assert calls == calls_again


def test_train_head_same_seed_same_result_other_seed_differs(float32_run: Run) -> None:
    first, calls = float32_run
    again, calls_again = run()
    other, _ = run(seed=8)
    assert weights_equal(first, again)
    assert calls == calls_again
    assert not weights_equal(first, other)


def test_train_head_identical_views_train_as_one_view(float32_run: Run) -> None:
    # Which view a sample is drawn from changes nothing when the views are equal; the shuffle is the same.
    twice, _ = run(dataset(TRAIN[0], TRAIN[0], labels=TRAIN[1], val=VAL), options=FLOAT32)
    assert weights_equal(float32_run[0], twice)


def test_train_head_noise_view_is_drawn(float32_run: Run) -> None:
    noise = np.random.default_rng(3).standard_normal(TRAIN[0].shape).astype(np.float32)
    noisy, _ = run(dataset(TRAIN[0], noise, labels=TRAIN[1], val=VAL), options=FLOAT32)
    assert not weights_equal(float32_run[0], noisy)


def test_train_head_restores_best_epoch_weights() -> None:
    result, calls = run(NOISE_VAL, epochs=4)
    assert result.best_epoch != 3
    assert calls[result.best_epoch][1] != calls[3][1]
    assert result.metrics == calls[result.best_epoch][1]
    assert val_metrics(result, NOISE_VAL) == result.metrics
    assert result.best_epoch == max(
        range(4), key=lambda e: (mean_metric(calls[e][1], "balanced_accuracy"), -e)
    )


def test_train_head_patience_stops_after_epochs_without_improvement() -> None:
    result, calls = run(NOISE_VAL, epochs=12, patience=2)
    values = [mean_metric(metrics, "balanced_accuracy") for _, metrics in calls]
    # The first epoch that is `patience` epochs past the best so far (ties are no improvement).
    stop = next(e for e in range(len(values)) if e - values.index(max(values[: e + 1])) >= 2)
    assert result.epochs_run == stop + 1 == len(calls) < 12
    assert result.best_epoch == values.index(max(values))


def test_train_head_zero_epochs_raises() -> None:
    with pytest.raises(ConfigError, match="epochs must be at least 1, got 0"):
        train_head(HEAD, SEPARABLE, epochs=0, seed=0)


def test_train_head_unknown_rank_metric_raises() -> None:
    with pytest.raises(
        ConfigError,
        match=r"epochs are ranked by one of accuracy, balanced_accuracy, macro_f1, group_min, difference, "
        r"got 'f1'",
    ):
        train_head(HEAD, SEPARABLE, epochs=1, seed=0, rank_by="f1")


def test_train_head_ranks_epochs_by_the_given_metric() -> None:
    result, calls = run(NOISE_VAL, epochs=4, rank_by="accuracy")
    assert result.best_epoch == max(range(4), key=lambda e: (mean_metric(calls[e][1], "accuracy"), -e))


@CPU_ONLY
def test_train_options_cpu_defaults_no_xla_mixed_precision_fast_dropout_fused_adam() -> None:
    assert TrainOptions().resolved() == TrainOptions(
        jit_compile=False, xla_update=True, precision="mixed", fast_dropout=True, fused_update=True
    )


def test_train_options_unknown_precision_raises() -> None:
    with pytest.raises(ConfigError, match="precision must be one of float32, mixed, got 'float16'"):
        TrainOptions(precision="float16").resolved()


def test_train_data_from_cache_loads_every_train_view(tiny_cache: Path) -> None:
    cache = open_cache(tiny_cache)
    data = TrainData.from_cache(cache)
    assert data.views.shape == (2, 96, 16)
    for view in range(2):
        assert np.array_equal(data.views[view].numpy(), cache.embeddings("train", view))
    assert np.array_equal(data.train_labels, cache.labels("train"))
    assert np.array_equal(data.val_embeddings.numpy(), cache.embeddings("val"))
    assert np.array_equal(data.val_labels, cache.labels("val"))


def test_train_data_from_cache_without_val_raises(tiny_cache: Path) -> None:
    cache = open_cache(tiny_cache)
    cache = dataclasses.replace(cache, splits=("train",))
    with pytest.raises(CacheError, match="has no 'val' embeddings"):
        TrainData.from_cache(cache)


def test_train_data_from_arrays_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match=r"train_labels must be \(250, 3\), got \(249, 3\)"):
        TrainData.from_arrays(TRAIN[0][None], TRAIN[1][:249], *VAL)


WIDE_HEAD = HeadConfig(
    (LayerSpec(32, "relu", 0.1),),
    learning_rate=1e-2,
    batch_size=32,
    optimizer="adamw",
    weight_decay=1e-4,
    input_norm="standardize",
    label_smoothing=0.05,
    batch_norm=True,
    branches=((LayerSpec(16, "tanh", 0.1),),) * 3,
    loss_weights=(1.0, 1.0, 0.5),
    lr_schedule="cosine",
)


@pytest.mark.parametrize("options", [FLOAT32, TrainOptions()], ids=["float32", "default"])
def test_train_head_wide_config_trains_the_separable_task(options: TrainOptions) -> None:
    result = train_head(WIDE_HEAD, SEPARABLE, epochs=4, seed=3, patience=None, options=options)
    assert min(result.metrics[head]["balanced_accuracy"] for head in HEADS) >= 0.8
    assert set(result.groups) == set(HEADS)
    assert result.metrics["age"]["group_min"] == result.groups["age"]["group_min"]


def test_train_data_statistics_are_the_clean_views_mean_and_variance() -> None:
    np.testing.assert_allclose(SEPARABLE.statistics[0], TRAIN[0].mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(SEPARABLE.statistics[1], TRAIN[0].var(axis=0), rtol=1e-5)


def test_drawn_views_follow_augment_prob() -> None:
    seed = tf.constant([1, 2], tf.int64)
    assert drawn_views(seed, 10_000, 1, 1.0).numpy().max() == 0  # no augmented view stored
    never = drawn_views(seed, 10_000, 3, 0.0).numpy()
    always = drawn_views(seed, 10_000, 3, 1.0).numpy()
    quarter = drawn_views(seed, 10_000, 3, 0.25).numpy()
    alike = drawn_views(seed, 30_000, 3, None).numpy()
    assert never.max() == 0 and set(always.tolist()) == {1, 2}
    assert abs((quarter > 0).mean() - 0.25) < 0.02 and set(quarter.tolist()) == {0, 1, 2}
    assert np.allclose(np.bincount(alike) / 30_000, 1 / 3, atol=0.02)


def test_train_head_ranks_epochs_by_the_worst_group() -> None:
    result, calls = run(NOISE_VAL, epochs=4, rank_by="group_min")
    assert result.best_epoch == max(range(4), key=lambda e: (mean_metric(calls[e][1], "group_min"), -e))
