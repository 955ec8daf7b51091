"""Evaluating an export on one split: its head on cached embeddings, or the whole model on images.

On images, a report set beside the paper's must cover its test set: a dataset holding fewer than
``MIN_COVERAGE`` of the split's images is refused unless the caller allows a partial evaluation.
"""

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
from model.report import Coverage, evaluation_report

Progress = Callable[[int, int], None]
# With 1 % of the images missing, an accuracy on the rest is within 1 point of the whole split's,
# whatever the missing images would have scored.
MIN_COVERAGE = 0.99


def evaluate_export(
    model_dir: Path,
    split: str,
    *,
    dataset: Path | None = None,
    cache_dir: Path | None = None,
    weights: str | None = None,
    batch_size: int = 32,
    on_progress: Progress | None = None,
    allow_partial: bool = False,
) -> dict[str, object]:
    """The report of the export at ``model_dir`` on ``split``: of the images under ``dataset`` through the
    whole model when it is given, else of the embeddings in the cache at ``cache_dir`` through its head.

    ``allow_partial`` lets a dataset holding under ``MIN_COVERAGE`` of the split's images be evaluated.
    """
    exported = load_export(model_dir)
    if dataset is not None:
        return evaluate_images(
            exported,
            dataset,
            split,
            weights=weights,
            batch_size=batch_size,
            on_progress=on_progress,
            min_coverage=0.0 if allow_partial else MIN_COVERAGE,
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
    min_coverage: float = MIN_COVERAGE,
) -> dict[str, object]:
    """The report of ``exported`` on a split of the FairFace root ``root``, images through the full model.

    The split is cut as the model's cache was (the scheme and seed in its card's cache fingerprint), so
    ``test`` is the same test set the export was evaluated on. Images not under ``root`` are counted in
    the report's coverage and listed; under ``min_coverage`` of them present, a DatasetError. Images that
    are there but do not decode are left out and listed as skipped. ``weights`` finds the base of a
    head+predictor export (see :class:`Predictor`).
    """
    scheme = exported.card["cache_fingerprint"]["split"]
    # The official split has no seed; load_split ignores it there.
    tables = load_split(root, split=scheme["name"], seed=scheme["seed"] or 0)
    if split not in tables:
        raise ConfigError(
            f"--split-name {split!r}: the model's {scheme['name']!r} split has {', '.join(tables)}; pick one."
        )
    table = tables[split]
    there = [(root / name).is_file() for name in table.files]
    present = np.flatnonzero(there)
    missing = [name for name, ok in zip(table.files, there, strict=True) if not ok]
    coverage = Coverage(split, len(table), missing)
    check_coverage(coverage, root, min_coverage)
    files = [table.files[i] for i in present]
    with Predictor(exported, weights=weights) as predict:
        found, outputs = image_outputs(predict, root, files, batch_size=batch_size, on_progress=on_progress)
    if len(found) == 0:
        raise DatasetError(
            f"none of the {len(files)} images of split {split!r} under {root} could be decoded."
        )
    source = {
        **_model_source(exported),
        "split": split,
        "from": "images",
        "dataset": str(root),
        "skipped": [files[i] for i in sorted(set(range(len(files))) - set(found.tolist()))],
    }
    labels = table.labels[present[found]].astype(np.int64)
    return evaluation_report(labels, predicted_classes(outputs), source=source, coverage=coverage)


def check_coverage(coverage: Coverage, root: Path, min_coverage: float) -> None:
    """Refuse (DatasetError) an evaluation on under ``min_coverage`` of the split's images, or on none."""
    if coverage.present == 0:
        raise DatasetError(
            f"none of the {coverage.total:,} {coverage.split} images is under {root} (first: "
            f"{coverage.missing[0]}); pass --dataset a FairFace root that holds them."
        )
    if coverage.fraction >= min_coverage:
        return
    raise DatasetError(
        f"{coverage.sentence()} under {root} (first missing: {coverage.missing[0]}); a report to set "
        f"beside the paper's needs at least {100 * min_coverage:.0f} %. Pass --allow-partial to evaluate "
        f"the {coverage.present:,} present, or --dataset a FairFace root that holds the whole split."
    )


def _model_source(exported: ExportedModel) -> dict[str, object]:
    study = exported.card["study"]
    return {
        "model": str(exported.path),
        "study": study.get("name"),
        "trial": study.get("trial"),
        "base": exported.card["cache_fingerprint"]["base"],
        "weights": exported.card["weights"],
    }
