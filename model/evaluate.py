"""Evaluating an export on one split: its head on cached embeddings, or the whole model on images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from data.cache import Cache, open_cache
from data.errors import CacheError, ConfigError, DatasetError
from data.fairface import load_split
from model.export import ExportedModel, check_cache_matches, load_export
from model.metrics import predicted_classes
from model.predict import Predictor, head_outputs, image_outputs
from model.report import evaluation_report

Progress = Callable[[int, int], None]


def evaluate_export(
    model_dir: Path,
    split: str,
    *,
    dataset: Path | None = None,
    cache_dir: Path | None = None,
    weights: str | None = None,
    batch_size: int = 32,
    on_progress: Progress | None = None,
) -> dict[str, object]:
    """The report of the export at ``model_dir`` on ``split``: of the images under ``dataset`` through the
    whole model when it is given, else of the embeddings in the cache at ``cache_dir`` through its head."""
    exported = load_export(model_dir)
    if dataset is not None:
        return evaluate_images(
            exported, dataset, split, weights=weights, batch_size=batch_size, on_progress=on_progress
        )
    if cache_dir is None:
        raise ConfigError("give --dataset (images) or --cache (embeddings) to evaluate on.")
    return evaluate_cache(exported, open_cache(cache_dir), split)


def evaluate_cache(exported: ExportedModel, cache: Cache, split: str) -> dict[str, object]:
    """The report of ``exported`` on a cache split, through the model's head (the fast path).

    The cache must have been embedded by this model's base (see `check_cache_matches`).
    """
    check_cache_matches(exported.card, cache)
    labels = cache.labels(split).astype(np.int64)
    if len(labels) == 0:
        raise CacheError(f"split {split!r} of the cache at {cache.path} is empty; evaluate another split.")
    outputs = head_outputs(exported.head, cache.embeddings(split, 0))
    source = {**_model_source(exported), "split": split, "from": "cache", "cache": str(cache.path)}
    return evaluation_report(labels, predicted_classes(outputs), source=source)


def evaluate_images(
    exported: ExportedModel,
    root: Path,
    split: str,
    *,
    weights: str | None = None,
    batch_size: int = 32,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, object]:
    """The report of ``exported`` on a split of the FairFace root ``root``, images through the full model.

    The split is cut as the model's cache was (the scheme and seed in its card's cache fingerprint), so
    ``test`` is the same test set the export was evaluated on. Undecodable images are left out and listed.
    ``weights`` finds the base of a head+predictor export (see :class:`Predictor`).
    """
    scheme = exported.card["cache_fingerprint"]["split"]
    # The official split has no seed; load_split ignores it there.
    tables = load_split(root, split=scheme["name"], seed=scheme["seed"] or 0)
    if split not in tables:
        raise ConfigError(
            f"--split-name {split!r}: the model's {scheme['name']!r} split has {', '.join(tables)}; pick one."
        )
    table = tables[split]
    with Predictor(exported, weights=weights) as predict:
        found, outputs = image_outputs(
            predict, root, table.files, batch_size=batch_size, on_progress=on_progress
        )
    if len(found) == 0:
        raise DatasetError(
            f"none of the {len(table)} images of split {split!r} under {root} could be decoded."
        )
    skipped = sorted(set(range(len(table))) - set(found.tolist()))
    source = {
        **_model_source(exported),
        "split": split,
        "from": "images",
        "dataset": str(root),
        "skipped": [table.files[i] for i in skipped],
    }
    return evaluation_report(table.labels[found].astype(np.int64), predicted_classes(outputs), source=source)


def _model_source(exported: ExportedModel) -> dict[str, object]:
    study = exported.card["study"]
    return {
        "model": str(exported.path),
        "study": study.get("name"),
        "trial": study.get("trial"),
        "base": exported.card["cache_fingerprint"]["base"],
        "weights": exported.card["weights"],
    }
