"""The VGG-Face base: keras-vggface's VGG16 (layer names and all) in Keras 3, preprocessing inside.

The model takes RGB images on the 0-255 scale and does VGG-Face's own preprocessing (keras-vggface
``version=1``: RGB -> BGR, minus the channel means) with built-in layers only, so a saved ``.keras``
file loads in safe mode with no custom objects. Its weights come from :mod:`model.bases.vggface_h5`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
from numpy.typing import ArrayLike

from data.errors import ConfigError
from model.bases.base import Base, Encoder, KerasEncoder
from model.bases.vggface_h5 import (
    LayerWeights,
    WeightsSource,
    random_weights,
    read_h5_weights,
    resolve_weights,
)

NAME = "vggface"
BASE_DIM = 512
INPUT_SHAPE = (224, 224, 3)
BGR_MEANS = (93.5940, 104.7624, 129.1863)  # B, G, R on the 0-255 scale: keras-vggface version=1
PREPROCESSING: dict[str, object] = {
    "name": "vggface-v1",
    "input": "RGB uint8 or float on the 0-255 scale, 224x224",
    "channel_order": "BGR",
    "mean_bgr": list(BGR_MEANS),
    "scale": 1.0,
}
DTYPES = ("float32", "bfloat16")

# (filters, convolutions) per block; block b has conv{b}_1.. and ends in pool{b}.
_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def conv_shapes() -> dict[str, list[tuple[int, ...]]]:
    """Each convolution's name -> [kernel HWIO shape, bias shape], in network order."""
    shapes: dict[str, list[tuple[int, ...]]] = {}
    channels = INPUT_SHAPE[-1]
    for block, (filters, convs) in enumerate(_BLOCKS, start=1):
        for index in range(1, convs + 1):
            shapes[f"conv{block}_{index}"] = [(3, 3, channels, filters), (filters,)]
            channels = filters
    return shapes


def preprocess_numpy(images: ArrayLike) -> np.ndarray:
    """VGG-Face preprocessing in numpy, the reference for the in-model layers: RGB -> BGR minus the means."""
    array = np.asarray(images, dtype=np.float32)
    if array.shape[-1] != 3:
        raise ValueError(f"images must end in 3 RGB channels, got shape {array.shape}")
    return array[..., ::-1] - np.asarray(BGR_MEANS, dtype=np.float32)


def build_base(source: WeightsSource, *, dtype: str = "float32") -> keras.Model:
    """The VGG-Face base with ``source``'s weights: (None, 224, 224, 3) RGB 0-255 -> (None, 512) float32.

    ``dtype="bfloat16"`` runs the convolutions and pools under a mixed_bfloat16 policy; preprocessing
    and the global average pooling stay float32. The weights are read and checked before the model is
    built, so a bad file fails fast. Example: ``build_base(resolve_weights("random:0"))``.
    """
    if dtype not in DTYPES:
        raise ConfigError(f"base dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
    weights = _source_weights(source)
    model = _vgg16("mixed_bfloat16" if dtype == "bfloat16" else "float32")
    for layer, values in weights.items():
        model.get_layer(layer).set_weights(values)
    return model


def _source_weights(source: WeightsSource) -> LayerWeights:
    if source.path is not None:
        return read_h5_weights(source.path, conv_shapes())
    assert source.seed is not None  # WeightsSource holds exactly one of path and seed
    return random_weights(source.seed, conv_shapes())


def _vgg16(policy: str) -> keras.Model:
    image = keras.Input(shape=INPUT_SHAPE, dtype="float32", name="image")
    x = _preprocess(image)
    for block, (filters, convs) in enumerate(_BLOCKS, start=1):
        for index in range(1, convs + 1):
            conv = keras.layers.Conv2D(
                filters, 3, padding="same", activation="relu", name=f"conv{block}_{index}", dtype=policy
            )
            x = conv(x)
        x = keras.layers.MaxPooling2D(2, strides=2, name=f"pool{block}", dtype=policy)(x)
    # float32 pooling: the mean of 7x7 bfloat16 activations is taken in float32.
    embedding = keras.layers.GlobalAveragePooling2D(name="avg_pool", dtype="float32")(x)
    return keras.Model(image, embedding, name="vggface_vgg16")


def _preprocess(image: keras.KerasTensor) -> keras.KerasTensor:
    # Rescaling(1.0) casts uint8 input to float32; the frozen 1x1 convolution permutes RGB -> BGR
    # (each output channel takes one input channel with weight 1, so it is exact) and subtracts the means.
    x = keras.layers.Rescaling(1.0, name="vggface_cast", dtype="float32")(image)
    permute = keras.layers.Conv2D(3, 1, name="vggface_preprocess", dtype="float32", trainable=False)
    x = permute(x)
    kernel = np.zeros((1, 1, 3, 3), dtype=np.float32)
    for bgr in range(3):
        kernel[0, 0, 2 - bgr, bgr] = 1.0
    permute.set_weights([kernel, -np.asarray(BGR_MEANS, dtype=np.float32)])
    return x


@dataclass(frozen=True)
class VggFaceBase(Base):
    """The VGG-Face VGG16: a Keras model, 512-d average-pooled features."""

    source: WeightsSource | None = field(default=None, repr=False)

    @property
    def weights_path(self) -> str | None:
        path = self.source.path if self.source is not None else None
        return None if path is None else str(path.resolve())

    def build_model(self) -> keras.Model:
        assert self.source is not None  # set by resolve
        return build_base(self.source, dtype=self.dtype)

    def make_encoder(self, *, workers: int | None = None) -> Encoder:
        return KerasEncoder(self.build_model())


def resolve(weights: str | None, dtype: str) -> Base:
    """The registry's entry: the base with ``weights`` (default ``vggface``, the Keras cache) found."""
    if dtype not in DTYPES:
        raise ConfigError(f"the vggface base computes in {' or '.join(DTYPES)}, got dtype {dtype!r}.")
    source = resolve_weights(weights if weights is not None else "vggface")
    return VggFaceBase(
        name=NAME,
        dim=BASE_DIM,
        is_keras=True,
        weights=source.identity,
        dtype=dtype,
        preprocessing=PREPROCESSING,
        pooling="avg",
        source=source,
    )
