"""The head as a Keras model, built from a `HeadConfig` with Keras' built-in layers only.

Built-in layers only, so every head the search can draw saves as ``.keras`` and loads in Keras safe mode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from data.errors import ConfigError
from data.labels import HEADS, VOCABULARIES
from model.head import HeadConfig, LayerSpec

if TYPE_CHECKING:
    import keras

# What the authors' code ran: it writes `Dense(..., activation="leaky_relu")`, which their pinned Keras 2.7
# resolves to `tf.nn.leaky_relu` with its default slope 0.2 (not the 0.3 of the `LeakyReLU()` layer,
# which their code never uses). docs/paper.md has the references.
LEAKY_RELU_SLOPE = 0.2


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def build_head(config: HeadConfig, input_dim: int, *, statistics: np.ndarray | None = None) -> keras.Model:
    """The head as a Keras model: (None, input_dim) float32 -> {"age", "race", "gender"} probabilities.

    ``statistics`` (2, input_dim): the train split's per-feature mean and variance, for
    ``input_norm="standardize"``. Built-in layers only, so a saved model loads in Keras safe mode. The
    output layers run in float32 even under a mixed-precision policy, so softmax/sigmoid and the losses
    never see bfloat16.
    """
    import keras

    valid = isinstance(input_dim, int) and not isinstance(input_dim, bool) and input_dim > 0
    _require(valid, f"input_dim must be an integer > 0, got {input_dim!r}")
    inputs = keras.Input(shape=(input_dim,), dtype="float32", name="embedding")
    x = _input_norm(inputs, config.input_norm, statistics)
    for index, layer in enumerate(config.layers):
        x = _hidden_block(x, layer, f"{index}", config.batch_norm)
    trunk = x
    outputs = {}
    for position, head in enumerate(HEADS):
        x = trunk
        for index, layer in enumerate(config.branches[position] if config.branches else ()):
            x = _hidden_block(x, layer, f"{head}_{index}", config.batch_norm)
        units = len(VOCABULARIES[head]) if head != "gender" else 1
        activation = "sigmoid" if head == "gender" else "softmax"
        outputs[head] = keras.layers.Dense(units, activation=activation, dtype="float32", name=head)(x)
    return keras.Model(inputs=inputs, outputs=outputs, name="head")


def _input_norm(x: keras.KerasTensor, norm: str, statistics: np.ndarray | None) -> keras.KerasTensor:
    import keras

    if norm == "l2":
        return keras.layers.UnitNormalization(name="input_l2", dtype="float32")(x)
    if norm == "standardize":
        _require(statistics is not None, "input_norm standardize needs the train split's statistics")
        assert statistics is not None
        mean, variance = (np.asarray(row, np.float32) for row in statistics)
        layer = keras.layers.Normalization(mean=mean, variance=variance, name="input_standardize")
        return layer(x)
    return x


def _hidden_block(x: keras.KerasTensor, layer: LayerSpec, suffix: str, batch_norm: bool) -> keras.KerasTensor:
    import keras

    inline = None if layer.activation == "leaky_relu" or batch_norm else layer.activation
    x = keras.layers.Dense(layer.units, activation=inline, name=f"dense_{suffix}")(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name=f"batch_norm_{suffix}")(x)
    if layer.activation == "leaky_relu":
        x = keras.layers.LeakyReLU(negative_slope=LEAKY_RELU_SLOPE, name=f"leaky_relu_{suffix}")(x)
    elif batch_norm:
        x = keras.layers.Activation(layer.activation, name=f"{layer.activation}_{suffix}")(x)
    if layer.dropout > 0.0:
        x = keras.layers.Dropout(layer.dropout, name=f"dropout_{suffix}")(x)
    return x
