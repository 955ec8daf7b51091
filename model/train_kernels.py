"""The forward and update functions of a head's training step, and their cheaper kernels (issue 13).

`keras_forward` and Keras' optimizer (`update_function`, optionally under XLA) are the plain path;
bench/search_train.py measured these two faster on CPU and `search.train` uses them by default:

- `training_forward`: the head's forward pass in training mode with Dropout masks made from 16-bit
  slices of uint32 random words. Keras' Dropout draws a bfloat16 uniform per activation, which cost
  more than the forward matmuls; the same keep probability from half as many generator words, without
  the float conversion, costs 0.43 of that (CPU-s, the paper head's five masks at batch 256). Every
  other layer is the model's own, called as the model calls it; the exported model keeps Keras' Dropout.
- `fused_adam`: plain Keras Adam as TensorFlow's ResourceApplyAdam, one multithreaded kernel per weight
  with Keras' arithmetic (m += (g - m)(1 - β₁), v += (g² - v)(1 - β₂), θ -= α m / (√v + ε)); each
  weight's update can start as soon as its gradient exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from data.labels import HEADS

TrainingForward = Callable[[tf.Tensor, tf.Tensor], dict[str, tf.Tensor]]
Update = Callable[[list[tf.Tensor]], None]


def training_forward(model: keras.Model) -> TrainingForward:
    """``(inputs, seed) -> outputs`` of a `model.head.build_head` model in training mode.

    The model is a chain of hidden layers (Dense, LeakyReLU, Dropout) feeding the three output layers;
    the masks of its Dropout layers come from the (2,) int32/int64 ``seed``, one fold per layer.
    """
    outputs = [model.get_layer(head) for head in HEADS]
    hidden = [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer) and layer.name not in HEADS
    ]

    def forward(inputs: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        x = inputs
        for number, layer in enumerate(hidden):
            if isinstance(layer, keras.layers.Dropout):
                x = dropout(x, layer.rate, tf.random.experimental.stateless_fold_in(seed, number))
            else:
                x = layer(x, training=True)
        return {layer.name: layer(x, training=True) for layer in outputs}

    return forward


def keras_forward(model: keras.Model) -> TrainingForward:
    """``(inputs, seed) -> outputs``: the model's own call in training mode (``seed`` unused)."""

    def forward(inputs: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        return model(inputs, training=True)  # Keras' Dropout draws its masks from its own seed state

    return forward


def dropout(x: tf.Tensor, rate: float, seed: tf.Tensor) -> tf.Tensor:
    """``x`` with each element zeroed with probability ``rate`` (to 2⁻¹⁶), the rest scaled by 1/(1 - rate)."""
    if rate <= 0.0:
        return x
    size = tf.size(x)
    words = tf.random.stateless_uniform([(size + 1) // 2], seed, minval=None, maxval=None, dtype=tf.uint32)
    halves = tf.reshape(tf.bitcast(words, tf.uint16), [-1])[:size]
    keep = tf.reshape(halves, tf.shape(x)) >= tf.constant(round(rate * 65536), tf.uint16)
    scale = tf.where(keep, tf.constant(1.0 / (1.0 - rate), x.dtype), tf.zeros([], x.dtype))
    return x * scale


def update_function(
    optimizer: keras.optimizers.Optimizer, variables: Sequence[keras.Variable], *, fused: bool, xla: bool
) -> Update:
    """The step's update: `fused_adam` when ``fused`` and it applies, else Keras' (under XLA if ``xla``)."""
    update = fused_adam(optimizer, variables) if fused else None
    if update is not None:
        return update

    def apply(gradients: list[tf.Tensor]) -> None:
        optimizer.apply(gradients, variables)

    # XLA fuses the optimizer's many elementwise passes over every weight into one while the matmuls
    # stay on oneDNN (bench/README.md).
    return tf.function(apply, jit_compile=True) if xla else apply


def fused_adam(optimizer: keras.optimizers.Optimizer, variables: Sequence[keras.Variable]) -> Update | None:
    """The update of a plain Keras Adam as ResourceApplyAdam per weight; None for any other optimizer.

    Plain: no AMSGrad, weight decay, clipping, EMA, gradient accumulation, loss scaling or schedule,
    and no weight constraints; `build_optimizer` makes Adam so.
    """
    if not _plain_adam(optimizer) or any(variable.constraint is not None for variable in variables):
        return None
    slots = [
        (
            optimizer._momentums[optimizer._get_variable_index(variable)],
            optimizer._velocities[optimizer._get_variable_index(variable)],
        )
        for variable in variables
    ]

    def update(gradients: list[tf.Tensor]) -> None:
        step = tf.cast(optimizer.iterations + 1, tf.float32)
        beta_1, beta_2 = tf.constant(optimizer.beta_1, tf.float32), tf.constant(optimizer.beta_2, tf.float32)
        learning_rate = tf.cast(optimizer.learning_rate, tf.float32)
        for variable, (m, v), gradient in zip(variables, slots, gradients, strict=True):
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle,
                m=m.handle,
                v=v.handle,
                beta1_power=tf.pow(beta_1, step),
                beta2_power=tf.pow(beta_2, step),
                lr=learning_rate,
                beta1=beta_1,
                beta2=beta_2,
                epsilon=tf.constant(optimizer.epsilon, tf.float32),
                grad=gradient,
            )
        optimizer.iterations.assign_add(1)

    return update


def _plain_adam(optimizer: keras.optimizers.Optimizer) -> bool:
    return (
        type(optimizer) is keras.optimizers.Adam
        and not optimizer.amsgrad
        and optimizer.weight_decay is None
        and optimizer.clipnorm is None
        and optimizer.clipvalue is None
        and optimizer.global_clipnorm is None
        and not optimizer.use_ema
        and not optimizer.gradient_accumulation_steps
        and optimizer.loss_scale_factor is None
        and not isinstance(optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule)
    )
