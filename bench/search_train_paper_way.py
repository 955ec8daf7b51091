"""Part (b) of bench/search_train.py: an epoch over real FairFace images the paper's way (decode, frozen
VGG16 base, head step per image per epoch) against a trial on their cached embeddings, per image."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from roofline import timed

from data.fairface import check_images, read_labels
from data.images import image_batches
from data.labels import HEADS, VOCABULARIES
from model.bases.vggface import build_base
from model.bases.vggface_h5 import resolve_weights
from model.fitting import class_weights, head_losses
from model.network import build_head
from model.paper import PAPER_HEAD
from model.train_data import TrainData

CachedEpoch = Callable[[TrainData], tuple[float, float, float]]


def paper_epoch_seconds(
    root: Path, files: tuple[str, ...], labels: np.ndarray, base_dtype: str
) -> tuple[float, float]:
    """(wall, CPU) seconds of a warm epoch the paper's way: decode, frozen base, head step per image."""
    base = build_base(resolve_weights("random:0"), dtype=base_dtype)
    keras.utils.set_random_seed(0)
    head = build_head(PAPER_HEAD, 512)
    weights = {h: class_weights(labels[:, c], len(VOCABULARIES[h])) for c, h in enumerate(HEADS[:2])}
    losses = head_losses(weights)
    optimizer = keras.optimizers.Adam(1e-3)
    targets = tf.constant(labels, tf.int32)

    @tf.function
    def step(index: tf.Tensor, images: tf.Tensor) -> None:
        features = base(images, training=False)
        y = tf.gather(targets, index)
        with tf.GradientTape() as tape:
            out = head(features, training=True)
            loss = tf.add_n([losses[h](y[:, c], out[h]) for c, h in enumerate(HEADS)])
        variables = head.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))

    def epoch() -> None:
        for index, images in image_batches(root, files, batch_size=32):
            step(index, images)

    epoch()  # traces and warms up
    return timed(epoch)


def bench_b(
    args: argparse.Namespace, full_scale: tuple[float, float] | None, cached_epoch: CachedEpoch
) -> None:
    """Item 7b: per-image (wall, CPU) seconds of an epoch, the paper's way vs cached embeddings.

    ``cached_epoch(data)`` times one epoch of a trial on cached embeddings: (first call, wall, CPU).
    """
    table = read_labels(args.dataset / "fairface_label_val.csv").take(args.images)
    check_images(args.dataset, table)
    count, labels = len(table), table.labels
    print(f"(b) {count} real FairFace val images ({table.files[0]} ..), base random:0 weights", flush=True)
    base = build_base(resolve_weights("random:0"))
    batches = image_batches(args.dataset, table.files, batch_size=32)
    embeddings = np.concatenate([base(images, training=False).numpy() for _, images in batches])
    data = TrainData.from_arrays(embeddings[None], labels, embeddings, labels)
    _, wall, cpu = cached_epoch(data)
    cached = {"these images": (wall / count, cpu / count)}
    if full_scale is not None:
        cached["full-split scale (a)"] = full_scale
    for scale, (wall, cpu) in cached.items():
        print(f"  cached trial, {scale}: {wall * 1e3:.3f} ms/image, {cpu * 1e3:.3f} CPU-ms/image")
    for dtype in ("float32", "bfloat16"):
        wall, cpu = (
            seconds / count for seconds in paper_epoch_seconds(args.dataset, table.files, labels, dtype)
        )
        ratios = "; ".join(
            f"{scale}: {wall / cached_wall:.0f}x ({cpu / cached_cpu:.0f}x in CPU-s)"
            for scale, (cached_wall, cached_cpu) in cached.items()
        )
        print(
            f"  paper's way, base {dtype}: {wall * 1e3:.1f} ms/image, {cpu * 1e3:.1f} CPU-ms/image -> "
            f"cached cheaper by {ratios}",
            flush=True,
        )
