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

from data.errors import ConfigError
from data.labels import HEADS, VOCABULARIES
from model.fitting import build_optimizer, class_weights, head_losses
from model.head import HeadConfig
from model.metrics import GROUP_METRICS, METRICS, GroupMetrics, mean_metric, predicted_classes, scores
from model.network import build_head
from model.train_data import TrainData, device
from model.train_kernels import keras_forward, training_forward, update_function

PRECISIONS = ("float32", "mixed")
Scores = tuple[dict[str, dict[str, float]], dict[str, GroupMetrics]]  # per-head metrics, per-group ones
# Where an epoch's step may stop: after the batch draw, after the gradients, or after the update (a real
# step). bench/search_train.py times the first two to split an epoch; training always runs to "update".
STAGES = ("draw", "gradients", "update")

EpochCallback = Callable[[int, dict[str, dict[str, float]]], None]
Forward = Callable[[tf.Tensor], dict[str, tf.Tensor]]


@dataclass(frozen=True)
class TrainOptions:
    """How the training graph is compiled; None picks what bench/search_train.py measured best."""

    jit_compile: bool | None = None  # XLA for the whole epoch; auto: on with a GPU, off on CPU (11x slower)
    xla_update: bool | None = None  # XLA for the optimizer update alone; auto: on (moot under jit_compile)
    precision: str | None = None  # "float32" | "mixed" (bfloat16 compute, float32 weights); auto: mixed
    fast_dropout: bool | None = None  # masks from 16-bit random slices (model.train_kernels); auto: on
    fused_update: bool | None = None  # plain Adam as ResourceApplyAdam (others: xla_update); auto: on

    def resolved(self) -> TrainOptions:
        """The options with every None replaced by the default for the device in use."""
        if self.precision not in (None, *PRECISIONS):
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        gpu = bool(tf.config.list_logical_devices("GPU"))
        jit = gpu if self.jit_compile is None else self.jit_compile
        return TrainOptions(
            jit_compile=jit,
            xla_update=_default(self.xla_update, True),
            precision=self.precision or "mixed",
            fast_dropout=_default(self.fast_dropout, True),
            fused_update=_default(self.fused_update, True),
        )


def _default(value: bool | None, default: bool) -> bool:
    return default if value is None else value


@dataclass
class TrainResult:
    """A trained head with its best epoch's weights and validation metrics."""

    model: keras.Model
    epochs_run: int
    metrics: dict[str, dict[str, float]]  # best epoch's, per head: METRICS and GROUP_METRICS
    best_epoch: int  # 0-based
    groups: dict[str, GroupMetrics]  # best epoch's per-group metrics, per head


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
    mean over the heads of the metric ``rank_by`` (one of ``model.metrics.METRICS`` or
    ``GROUP_METRICS``); training stops early after ``patience`` epochs without a better one. Seeds
    Keras' global RNGs with ``seed``: same seed and config give the same head on CPU.
    """
    if epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}")
    if rank_by not in (*METRICS, *GROUP_METRICS):
        allowed = ", ".join((*METRICS, *GROUP_METRICS))
        raise ConfigError(f"epochs are ranked by one of {allowed}, got {rank_by!r}")
    head = compile_head(config, data, seed=seed, epochs=epochs, options=options)
    best: tuple[float, int, Scores, list[np.ndarray]] | None = None
    for epoch in range(epochs):
        head.run_epoch(tf.constant([seed, epoch], tf.int64))
        scored = validation_scores(head.forward, data)
        if on_epoch is not None:
            on_epoch(epoch, scored[0])
        value = mean_metric(scored[0], rank_by)
        if best is None or value > best[0]:
            best = (value, epoch, scored, head.model.get_weights())
        elif patience is not None and epoch - best[1] >= patience:
            break
    assert best is not None
    _, best_epoch, (metrics, groups), weights = best
    if best_epoch != epoch:
        head.model.set_weights(weights)
    return TrainResult(head.model, epoch + 1, metrics, best_epoch, groups)


def epoch_function(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    config: HeadConfig,
    data: TrainData,
    *,
    options: TrainOptions,
    until: str = "update",
    weights: Mapping[str, np.ndarray] | None = None,
) -> Callable[[tf.Tensor], tf.Tensor]:
    """One epoch as a ``tf.function`` of a (2,) int64 seed, returning the mean batch loss.

    ``weights``: the age and race loss weights per class; None: ``loss_class_weights`` (balanced).

    The seed fixes the epoch's shuffle and, per sample, which of the V views it is drawn from. Full batches
    run in a graph loop; a last partial batch is one more step of static shape (so XLA can compile both).
    ``until`` (one of STAGES) cuts every step short after that stage, keeping its work (for timing).
    """
    if until not in STAGES:
        raise ConfigError(f"until must be one of {', '.join(STAGES)}, got {until!r}")
    class_weighting = dict(weights) if weights is not None else loss_class_weights(data.train_labels, config)
    losses = head_losses(class_weighting, label_smoothing=config.label_smoothing)
    head_weights = dict(zip(HEADS, config.loss_weights, strict=True))
    views, count, dim = (int(size) for size in data.views.shape)
    batch = min(config.batch_size, count)
    full, rest = divmod(count, batch)
    with tf.device(device()):
        flat = tf.reshape(data.views, [views * count, dim])
        targets = tf.constant(data.train_labels, tf.int32)
    variables = model.trainable_variables
    # The cheaper dropout masks walk a chain of layers; a head with per-head branches is not one.
    chain = options.fast_dropout and not config.branches
    forward = training_forward(model) if chain else keras_forward(model)
    update = update_function(
        optimizer, variables, fused=bool(options.fused_update), xla=bool(options.xla_update)
    )

    def step(rows: tf.Tensor, index: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        labels = tf.gather(targets, rows)
        inputs = tf.gather(flat, tf.gather(index, rows))
        if until == "draw":
            return _after([labels, inputs], tf.constant(0.0))
        with tf.GradientTape() as tape:
            outputs = forward(inputs, seed)
            loss = tf.add_n(
                [
                    head_weights[head] * losses[head](labels[:, column], outputs[head])
                    for column, head in enumerate(HEADS)
                ]
            )
        gradients = tape.gradient(loss, variables)
        if until == "gradients":
            return _after(gradients, loss)
        update(gradients)
        return loss

    @tf.function(jit_compile=bool(options.jit_compile))
    def run_epoch(seed: tf.Tensor) -> tf.Tensor:
        shuffle_seed, view_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        mask_seed = tf.random.experimental.stateless_fold_in(seed, 3)  # fast_dropout's, per step below
        order = tf.argsort(tf.random.stateless_uniform([count], shuffle_seed))
        index = drawn_views(view_seed, count, views, config.augment_prob) * count + tf.range(count)
        batches = tf.reshape(order[: full * batch], [full, batch])
        total = tf.constant(0.0)
        for number in tf.range(full):
            total += step(batches[number], index, _fold(mask_seed, number))
        if rest:
            total += step(order[full * batch :], index, _fold(mask_seed, full))
        return total / (full + (1 if rest else 0))

    return run_epoch


def loss_class_weights(train_labels: np.ndarray, config: HeadConfig) -> dict[str, np.ndarray]:
    """The age and race loss weights a head of ``config`` trains with on ``train_labels`` (N, 3): per
    class in vocabulary order, balanced to the power of its class-weight strength."""
    return {
        head: class_weights(train_labels[:, column], len(VOCABULARIES[head]), config.class_weight_strength)
        for column, head in enumerate(HEADS[:2])
    }


def drawn_views(seed: tf.Tensor, count: int, views: int, augment_prob: float | None) -> tf.Tensor:
    """(count,) int32: the view each sample is drawn from this epoch (0 = clean, 1.. augmented).

    ``augment_prob`` None: every view alike; else an augmented view (uniform among them) with that
    probability, the clean one otherwise.
    """
    if augment_prob is None or views == 1:
        return tf.random.stateless_uniform([count], seed, minval=0, maxval=views, dtype=tf.int32)
    which, pick = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    augmented = tf.random.stateless_uniform([count], which) < augment_prob
    view = tf.random.stateless_uniform([count], pick, minval=1, maxval=views, dtype=tf.int32)
    return tf.where(augmented, view, tf.zeros_like(view))


def _fold(seed: tf.Tensor, number: tf.Tensor | int) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(seed, number)


def _after(work: Sequence[tf.Tensor], value: tf.Tensor) -> tf.Tensor:
    """``value`` plus 0 × one element of each of ``work``: keeps a cut step's work from being pruned.

    A data dependency, because Grappler drops the backward pass behind mere control dependencies.
    """
    touched = tf.add_n([tf.cast(tf.reshape(tensor, [-1])[0], value.dtype) for tensor in work])
    return value + 0.0 * touched


def validation_scores(forward: Forward, data: TrainData) -> Scores:
    """Per-head and per-group metrics of one forward pass over the whole validation split."""
    predicted = predicted_classes(
        {head: value.numpy() for head, value in forward(data.val_embeddings).items()}
    )
    return scores(data.val_labels.astype(np.int64), predicted)


def compile_head(
    config: HeadConfig,
    data: TrainData,
    *,
    seed: int,
    epochs: int = 1,
    options: TrainOptions | None = None,
    until: str = "update",
    weights: Mapping[str, np.ndarray] | None = None,
) -> CompiledHead:
    """A fresh head for ``config`` (Keras' global RNGs seeded with ``seed``) with its compiled epoch.

    ``epochs`` is the length of a cosine learning-rate schedule; ``until`` cuts the epoch's steps short
    (see `epoch_function`); only "update" trains. ``weights`` replaces the balanced loss weights (e.g. to
    replay another weighting).
    """
    options = (options or TrainOptions()).resolved()
    keras.utils.set_random_seed(seed)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16" if options.precision == "mixed" else "float32")
    try:
        with tf.device(device()):
            model = build_head(config, data.dim, statistics=data.statistics)
            steps = -(-int(data.views.shape[1]) // min(config.batch_size, int(data.views.shape[1])))
            optimizer = build_optimizer(config, decay_steps=epochs * steps)
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
            options=options,
            until=until,
            weights=weights,
        ),
        forward=tf.function(lambda embeddings: model(embeddings, training=False)),
    )
