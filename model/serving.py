"""The exported SavedModel's serving signatures: decoded uint8 images, or the encoded files themselves.

``serving_default`` (alias of ``serve``) takes ``image``, uint8 (N, 224, 224, 3) RGB. ``serve_bytes`` takes
``image_bytes``, a string (N,) tensor of encoded JPEG/PNG files -- what TF Serving's REST API hands over
from ``{"b64": ...}`` -- and decodes them inside the graph with :func:`data.images.decode_image`, the
decoder the embedding cache was made with. So a client that sends the file gets the outputs
``hpo evaluate --dataset`` computes, without having to reproduce the decoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from data.images import DECODER, decode_image

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

IMAGE_SIGNATURE = "serve"  # also "serving_default": the first endpoint is TF Serving's default
BYTES_SIGNATURE = "serve_bytes"
IMAGE_INPUT = "image"
BYTES_INPUT = "image_bytes"  # TF Serving's REST API base64-decodes {"b64": ...} values into it


def write_saved_model(model: keras.Model, path: Path) -> None:
    """Write ``model`` (uint8 image -> outputs) as a SavedModel at ``path`` with both signatures."""
    import tensorflow as tf
    from keras.export import ExportArchive

    size = int(model.input_shape[1])
    archive = ExportArchive()
    image_spec = tf.TensorSpec((None, size, size, 3), tf.uint8, name=IMAGE_INPUT)
    archive.track_and_add_endpoint(IMAGE_SIGNATURE, model, [image_spec])

    def serve_bytes(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        images = tf.map_fn(
            lambda contents: decode_image(contents, size),
            image_bytes,
            fn_output_signature=tf.TensorSpec((size, size, 3), tf.uint8),
        )
        outputs: dict[str, tf.Tensor] = model(images, training=False)
        return outputs

    bytes_spec = tf.TensorSpec((None,), tf.string, name=BYTES_INPUT)
    archive.add_endpoint(BYTES_SIGNATURE, serve_bytes, input_signature=[bytes_spec])
    archive.write_out(str(path), verbose=False)


def signatures_card(size: int) -> dict[str, object]:
    """What a model card says about the SavedModel's signatures and the decoder they rely on."""
    return {
        "serving_default": {
            "alias_of": IMAGE_SIGNATURE,
            "input": {"name": IMAGE_INPUT, "dtype": "uint8", "shape": [None, size, size, 3]},
        },
        BYTES_SIGNATURE: {
            "input": {"name": BYTES_INPUT, "dtype": "string", "shape": [None]},
            "decoder": dict(DECODER),
        },
    }
