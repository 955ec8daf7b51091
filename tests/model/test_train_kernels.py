from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from model.fitting import build_optimizer
from model.head import HeadConfig, LayerSpec
from model.network import build_head
from model.train_kernels import dropout, fused_adam, training_forward

SEED = tf.constant([3, 4], tf.int64)


def test_dropout_keeps_one_minus_rate_scaled_by_its_inverse() -> None:
    x = tf.ones([512, 1000], tf.bfloat16)
    out = dropout(x, 0.3, SEED).numpy().astype(np.float32)
    kept = out != 0
    assert abs(kept.mean() - 0.7) < 0.003  # 512,000 draws: sd 0.0006
    assert np.all(out[kept] == np.float32(tf.constant(1 / 0.7, tf.bfloat16).numpy()))


def test_dropout_same_seed_same_mask_other_seed_differs() -> None:
    x = tf.ones([64, 33], tf.float32)  # an odd element count: the last word is half used
    first, again = dropout(x, 0.5, SEED).numpy(), dropout(x, 0.5, SEED).numpy()
    other = dropout(x, 0.5, tf.constant([3, 5], tf.int64)).numpy()
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_dropout_rate_zero_returns_the_input() -> None:
    x = tf.random.normal([4, 8])
    assert dropout(x, 0.0, SEED) is x


def test_training_forward_without_dropout_equals_the_model_call() -> None:
    keras.utils.set_random_seed(0)
    model = build_head(HeadConfig(layers=(LayerSpec(16, "leaky_relu"), LayerSpec(8, "gelu"))), 12)
    x = tf.random.normal([5, 12])
    ours, keras_outputs = training_forward(model)(x, SEED), model(x, training=True)
    for head, value in keras_outputs.items():
        np.testing.assert_array_equal(ours[head].numpy(), value.numpy())


def test_training_forward_with_dropout_draws_masks_from_the_seed() -> None:
    keras.utils.set_random_seed(0)
    model = build_head(HeadConfig(layers=(LayerSpec(64, "relu", 0.5),)), 12)
    forward, x = training_forward(model), tf.random.normal([32, 12])
    inference = model(x, training=False)["age"].numpy()
    first, again = forward(x, SEED)["age"].numpy(), forward(x, SEED)["age"].numpy()
    assert np.array_equal(first, again)
    assert not np.allclose(first, inference)


def _adam_pair(config: HeadConfig) -> tuple[list[keras.Model], list[keras.optimizers.Optimizer]]:
    models, optimizers = [], []
    for _ in range(2):
        keras.utils.set_random_seed(0)
        models.append(build_head(config, 12))
        optimizers.append(build_optimizer(config))
        optimizers[-1].build(models[-1].trainable_variables)
    return models, optimizers


def test_fused_adam_matches_keras_adam_over_steps() -> None:
    (ours, theirs), (fused_optimizer, keras_optimizer) = _adam_pair(
        HeadConfig(layers=(LayerSpec(16, "relu"),), learning_rate=0.01)
    )
    update = fused_adam(fused_optimizer, ours.trainable_variables)
    assert update is not None
    rng = np.random.default_rng(0)
    for _ in range(3):
        gradients = [tf.constant(rng.standard_normal(v.shape), tf.float32) for v in ours.trainable_variables]
        tf.function(update)(gradients)
        keras_optimizer.apply(gradients, theirs.trainable_variables)
    for a, b in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # float32 rounding of 0.01-sized steps
    assert int(fused_optimizer.iterations.numpy()) == 3


@pytest.mark.parametrize(
    "optimizer",
    [keras.optimizers.AdamW(), keras.optimizers.Adam(amsgrad=True), keras.optimizers.Adam(clipnorm=1.0)],
    ids=["adamw", "amsgrad", "clipnorm"],
)
def test_fused_adam_declines_anything_but_plain_adam(optimizer: keras.optimizers.Optimizer) -> None:
    model = build_head(HeadConfig(layers=(LayerSpec(4, "relu"),)), 3)
    optimizer.build(model.trainable_variables)
    assert fused_adam(optimizer, model.trainable_variables) is None
