"""The training path of a trial: a head trained on cached embeddings held in (GPU) memory.

One epoch is one ``tf.function`` call: the shuffle, the choice of an augmented view per sample and every
optimizer step run inside the graph, so no step costs a Python round trip or a host copy. After each
epoch one forward pass scores the whole validation split; the metrics are computed in numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from data.cache import Cache
from data.errors import CacheError, ConfigError
from data.labels import HEADS, VOCABULARIES
from model.head import HeadConfig, build_head, build_optimizer, class_weights, head_losses
from model.metrics import METRICS, head_metrics, mean_metric, predicted_classes

PRECISIONS = ("float32", "mixed")

EpochCallback = Callable[[int, dict[str, dict[str, float]]], None]
Forward = Callable[[tf.Tensor], dict[str, tf.Tensor]]


@dataclass(frozen=True)
class TrainOptions:
    """How the training graph is compiled; None picks what bench/search_train.py measured best."""

    jit_compile: bool | None = None  # XLA for the whole epoch; auto: on with a GPU, off on CPU (11x slower)
    xla_update: bool | None = None  # XLA for the optimizer update alone; auto: on (moot under jit_compile)
    precision: str | None = None  # "float32" | "mixed" (bfloat16 compute, float32 weights); auto: mixed

    def resolved(self) -> TrainOptions:
        """The options with every None replaced by the default for the device in use."""
        if self.precision not in (None, *PRECISIONS):
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        gpu = bool(tf.config.list_logical_devices("GPU"))
        jit = gpu if self.jit_compile is None else self.jit_compile
        update = True if self.xla_update is None else self.xla_update
        return TrainOptions(jit_compile=jit, xla_update=update, precision=self.precision or "mixed")


@dataclass(frozen=True)
class TrainData:
    """A cache's train views and val embeddings as device tensors, built once per worker."""

    views: tf.Tensor  # (V, N, D) float32, view 0 clean, views 1.. augmented
    train_labels: np.ndarray  # (N, 3) int8, columns in HEADS order
    val_embeddings: tf.Tensor  # (M, D) float32
    val_labels: np.ndarray  # (M, 3) int8

    @classmethod
    def from_arrays(
        cls,
        views: np.ndarray | Sequence[np.ndarray],
        train_labels: np.ndarray,
        val_embeddings: np.ndarray,
        val_labels: np.ndarray,
    ) -> TrainData:
        """From in-memory arrays: ``views`` (V, N, D) or a sequence of V (N, D) arrays."""
        stacked = views if isinstance(views, np.ndarray) else np.stack(views)
        _check_shapes(stacked, train_labels, val_embeddings, val_labels)
        with tf.device(_device()):
            return cls(
                views=tf.identity(tf.constant(stacked, tf.float32)),
                train_labels=np.asarray(train_labels, np.int8),
                val_embeddings=tf.identity(tf.constant(val_embeddings, tf.float32)),
                val_labels=np.asarray(val_labels, np.int8),
            )

    @classmethod
    def from_cache(cls, cache: Cache) -> TrainData:
        """The cache's ``train`` split (all views) and ``val`` split (clean view), loaded once."""
        for split in ("train", "val"):
            if split not in cache.splits or cache.manifest["splits"][split]["count"] == 0:
                raise CacheError(
                    f"the cache at {cache.path} has no {split!r} embeddings (splits: {cache.splits}); "
                    "run `hpo embed` with the train and val splits."
                )
        count = cache.views("train")
        views = np.empty((count, *cache.embeddings("train").shape), np.float32)
        for view in range(count):
            views[view] = cache.embeddings("train", view)
        return cls.from_arrays(views, cache.labels("train"), cache.embeddings("val"), cache.labels("val"))

    @property
    def dim(self) -> int:
        """Embedding width D."""
        return int(self.views.shape[2])


@dataclass
class TrainResult:
    """A trained head with its best epoch's weights and validation metrics."""

    model: keras.Model
    epochs_run: int
    metrics: dict[str, dict[str, float]]  # best epoch's, per head: accuracy, balanced_accuracy, macro_f1
    best_epoch: int  # 0-based


@dataclass(frozen=True)
class CompiledHead:
    """A head ready to train: its model, its epoch function and its inference function."""

    model: keras.Model
    run_epoch: Callable[[tf.Tensor], tf.Tensor]  # (2,) int64 (seed, epoch) -> mean batch loss
    forward: Forward  # (M, D) embeddings -> {"age", "race", "gender"} probabilities


def train_head(
    config: HeadConfig,
    data: TrainData,
    *,
    epochs: int,
    seed: int,
    on_epoch: EpochCallback | None = None,
    patience: int | None = 5,
    rank_by: str = "balanced_accuracy",
    options: TrainOptions | None = None,
) -> TrainResult:
    """Train ``config``'s head on ``data`` and return it with its best epoch's weights restored.

    After each epoch (0-based) ``on_epoch(epoch, metrics)`` gets the validation metrics per head; it may
    raise (e.g. ``optuna.TrialPruned``) to stop, and the exception propagates. Epochs are ranked by the
    mean over the heads of the metric ``rank_by`` (one of ``model.metrics.METRICS``); training stops
    early after ``patience`` epochs without a better one. Seeds Keras' global RNGs with ``seed``: same
    seed and config give the same head on CPU.
    """
    if epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}")
    if rank_by not in METRICS:
        raise ConfigError(f"epochs are ranked by one of {', '.join(METRICS)}, got {rank_by!r}")
    head = compile_head(config, data, seed=seed, options=options)
    best: tuple[float, int, dict[str, dict[str, float]], list[np.ndarray]] | None = None
    for epoch in range(epochs):
        head.run_epoch(tf.constant([seed, epoch], tf.int64))
        metrics = _validation_metrics(head.forward, data)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        value = mean_metric(metrics, rank_by)
        if best is None or value > best[0]:
            best = (value, epoch, metrics, head.model.get_weights())
        elif patience is not None and epoch - best[1] >= patience:
            break
    assert best is not None
    _, best_epoch, best_metrics, weights = best
    if best_epoch != epoch:
        head.model.set_weights(weights)
    return TrainResult(model=head.model, epochs_run=epoch + 1, metrics=best_metrics, best_epoch=best_epoch)


def epoch_function(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    config: HeadConfig,
    data: TrainData,
    *,
    jit_compile: bool,
    xla_update: bool,
    weights: Mapping[str, np.ndarray] | None = None,
) -> Callable[[tf.Tensor], tf.Tensor]:
    """One epoch as a ``tf.function`` of a (2,) int64 seed, returning the mean batch loss.

    ``weights``: the age and race loss weights per class; None: ``loss_class_weights`` (balanced).

    The seed fixes the epoch's shuffle and, per sample, which of the V views it is drawn from. Full batches
    run in a graph loop; a last partial batch is one more step of static shape (so XLA can compile both).
    """
    losses = head_losses(
        dict(weights) if weights is not None else loss_class_weights(data.train_labels, config)
    )
    views, count, dim = (int(size) for size in data.views.shape)
    batch = min(config.batch_size, count)
    full, rest = divmod(count, batch)
    with tf.device(_device()):
        flat = tf.reshape(data.views, [views * count, dim])
        targets = tf.constant(data.train_labels, tf.int32)
    variables = model.trainable_variables

    def apply(gradients: list[tf.Tensor]) -> None:
        optimizer.apply(gradients, variables)

    # XLA fuses the optimizer's many elementwise passes over every weight into one; on CPU that alone
    # is worth 11-18 % of an epoch while the matmuls stay on oneDNN (bench/README.md).
    update = tf.function(apply, jit_compile=True) if xla_update else apply

    def step(rows: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
        labels = tf.gather(targets, rows)
        with tf.GradientTape() as tape:
            outputs = model(tf.gather(flat, tf.gather(index, rows)), training=True)
            loss = tf.add_n(
                [losses[head](labels[:, column], outputs[head]) for column, head in enumerate(HEADS)]
            )
        update(tape.gradient(loss, variables))
        return loss

    @tf.function(jit_compile=jit_compile)
    def run_epoch(seed: tf.Tensor) -> tf.Tensor:
        shuffle_seed, view_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        order = tf.argsort(tf.random.stateless_uniform([count], shuffle_seed))
        chosen = tf.random.stateless_uniform([count], view_seed, minval=0, maxval=views, dtype=tf.int32)
        index = chosen * count + tf.range(count)  # row of `flat` holding each sample's drawn view
        batches = tf.reshape(order[: full * batch], [full, batch])
        total = tf.constant(0.0)
        for number in tf.range(full):
            total += step(batches[number], index)
        if rest:
            total += step(order[full * batch :], index)
        return total / (full + (1 if rest else 0))

    return run_epoch


def loss_class_weights(train_labels: np.ndarray, config: HeadConfig) -> dict[str, np.ndarray]:
    """The age and race loss weights a head of ``config`` trains with on ``train_labels`` (N, 3): per
    class in vocabulary order, balanced to the power of its class-weight strength."""
    return {
        head: class_weights(train_labels[:, column], len(VOCABULARIES[head]), config.class_weight_strength)
        for column, head in enumerate(HEADS[:2])
    }


def _validation_metrics(forward: Forward, data: TrainData) -> dict[str, dict[str, float]]:
    predicted = predicted_classes(
        {head: value.numpy() for head, value in forward(data.val_embeddings).items()}
    )
    return {
        head: head_metrics(data.val_labels[:, column], predicted[:, column], len(VOCABULARIES[head]))
        for column, head in enumerate(HEADS)
    }


def compile_head(
    config: HeadConfig,
    data: TrainData,
    *,
    seed: int,
    options: TrainOptions | None = None,
    weights: Mapping[str, np.ndarray] | None = None,
) -> CompiledHead:
    """A fresh head for ``config`` (Keras' global RNGs seeded with ``seed``) with its compiled epoch.

    ``weights`` replaces the balanced loss weights (e.g. to replay another weighting); see
    :func:`epoch_function`.
    """
    options = (options or TrainOptions()).resolved()
    keras.utils.set_random_seed(seed)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16" if options.precision == "mixed" else "float32")
    try:
        with tf.device(_device()):
            model = build_head(config, data.dim)
            optimizer = build_optimizer(config)
            optimizer.build(model.trainable_variables)
    finally:
        keras.config.set_dtype_policy(previous)
    return CompiledHead(
        model=model,
        run_epoch=epoch_function(
            model,
            optimizer,
            config,
            data,
            jit_compile=bool(options.jit_compile),
            xla_update=bool(options.xla_update),
            weights=weights,
        ),
        forward=tf.function(lambda embeddings: model(embeddings, training=False)),
    )


def _device() -> str:
    return "/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0"


def _check_shapes(
    views: np.ndarray, train_labels: np.ndarray, val_embeddings: np.ndarray, val_labels: np.ndarray
) -> None:
    problems = []
    if views.ndim != 3 or 0 in views.shape:
        problems.append(f"views must be (V, N, D) with V, N, D > 0, got {views.shape}")
    elif train_labels.shape != (views.shape[1], len(HEADS)):
        problems.append(f"train_labels must be ({views.shape[1]}, 3), got {train_labels.shape}")
    if val_embeddings.ndim != 2 or val_embeddings.shape[0] == 0 or val_embeddings.shape[1] != views.shape[-1]:
        problems.append(
            f"val_embeddings must be (M, {views.shape[-1]}) with M > 0, got {val_embeddings.shape}"
        )
    elif val_labels.shape != (val_embeddings.shape[0], len(HEADS)):
        problems.append(f"val_labels must be ({val_embeddings.shape[0]}, 3), got {val_labels.shape}")
    if problems:
        raise ValueError("; ".join(problems) + ".")
