"""A cache's train views and validation embeddings as device tensors: what every trial of a worker reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from data.cache import Cache
from data.errors import CacheError
from data.labels import HEADS


@dataclass(frozen=True)
class TrainData:
    """A cache's train views and val embeddings as device tensors, built once per worker."""

    views: tf.Tensor  # (V, N, D) float32, view 0 clean, views 1.. augmented
    train_labels: np.ndarray  # (N, 3) int8, columns in HEADS order
    val_embeddings: tf.Tensor  # (M, D) float32
    val_labels: np.ndarray  # (M, 3) int8
    statistics: np.ndarray  # (2, D) float32: the clean train view's per-feature mean and variance

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
        with tf.device(device()):
            return cls(
                views=tf.identity(tf.constant(stacked, tf.float32)),
                train_labels=np.asarray(train_labels, np.int8),
                val_embeddings=tf.identity(tf.constant(val_embeddings, tf.float32)),
                val_labels=np.asarray(val_labels, np.int8),
                statistics=np.stack([stacked[0].mean(axis=0), stacked[0].var(axis=0)]).astype(np.float32),
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


def device() -> str:
    """Where trials run: the first GPU when there is one, else the CPU."""
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
