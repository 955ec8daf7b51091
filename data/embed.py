"""Embedding FairFace splits into a cache: plan the shards, run the encoder over them, finalize.

The encoder is passed in (uint8 image batch -> (B, D) float32), so this module knows no model: the
command builds the base, and a second base can plug in later. Batches always start at a shard's first
row, so a shard is computed from the same batches whichever run, machine part or resume does it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data.cache import FORMAT_VERSION, Cache, count_done_shards, open_cache
from data.cachedir import check_cache_dir, check_parent
from data.errors import ConfigError, DatasetError, HpoError
from data.fairface import Table, labels_sha256
from data.shards import Shard, build_record, finalize, remove_shards, shard_done, shard_grid, write_shard

EncodeFn = Callable[[Any], np.ndarray]  # uint8 [B, H, W, 3] images -> (B, D) float32
Progress = Callable[[int, int], None]  # (images done, images to do) in this run
Counts = Callable[[], Mapping[str, int]]  # the encoder's running counts, e.g. faces found and missed
# The one list of what a base states about itself (its description); the cache fingerprint holds them
# all, beside the data's own keys.
BASE_KEYS = ("base", "weights", "input_size", "preprocessing", "pooling", "dtype", "dim")


@dataclass(frozen=True)
class EmbedOptions:
    """How to embed; everything here except ``part`` and ``strict`` must match for shards to be reused."""

    augment_views: int = 0  # K augmented views per train image, stored next to the clean view 0
    augment_seed: int = 0
    batch_size: int = 32
    shard_size: int = 2048  # rows per shard: the unit of resume and of `--shard i/N`
    part: tuple[int, int] = (0, 1)  # (i, N): embed the shards whose number % N == i
    strict: bool = False  # an undecodable image fails the run instead of being skipped

    def __post_init__(self) -> None:
        index, parts = self.part
        if not 0 <= index < parts:
            raise ConfigError(
                f"--shard {index}/{parts}: the part must be in 0..N-1 (e.g. --shard 0/{max(parts, 2)})."
            )
        if self.batch_size < 1 or self.shard_size < 1:
            raise ConfigError(
                f"batch size and shard size must be >= 1, got {self.batch_size}, {self.shard_size}."
            )
        if self.augment_views < 0:
            raise ConfigError(f"--augment-views must be >= 0, got {self.augment_views}.")


@dataclass(frozen=True)
class EmbedPlan:
    """What a run will do, decided before anything is written."""

    cache_dir: Path
    tables: Mapping[str, Table]  # the rows to embed, per split
    options: EmbedOptions
    build: dict[str, Any]  # the build record all shards share (fingerprint + shard layout)
    todo: tuple[Shard, ...]  # this part's unfinished shards
    complete: bool  # the cache is already finished: nothing to do
    creates_dir: bool  # the cache directory does not exist yet

    @property
    def images(self) -> int:
        """Images this run will embed (all views)."""
        return sum(shard.stop - shard.start for shard in self.todo)

    @property
    def dim(self) -> int:
        return int(self.build["fingerprint"]["dim"])


@dataclass
class EmbedReport:
    """What a run did, and where the cache stands."""

    embedded: dict[str, dict[int, int]] = field(default_factory=dict)  # split -> view -> images this run
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"split", "file", "reason"} this run
    remaining: tuple[Shard, ...] = ()  # shards no run has finished yet
    cache: Cache | None = None  # the finished cache, once every shard is done


def cache_fingerprint(
    root: Path,
    *,
    base: Mapping[str, object],
    split: str,
    split_seed: int | None,
    splits: Sequence[str],
    limit: int | None,
    options: EmbedOptions,
) -> dict[str, object]:
    """Everything a cache's contents depend on; ``base`` holds the keys in BASE_KEYS."""
    from data.augment import AUGMENTATION  # with TensorFlow, which a base's description does not need

    missing = [key for key in BASE_KEYS if key not in base]
    if missing:
        raise ValueError(f"the base description lacks {missing}; it needs {BASE_KEYS}")
    views = options.augment_views
    return {
        "format_version": FORMAT_VERSION,
        **{key: base[key] for key in BASE_KEYS},
        "augmentation": {
            "views": views,
            "seed": options.augment_seed if views else None,
            "settings": dict(AUGMENTATION) if views else None,
        },
        "labels_sha256": labels_sha256(root),
        "split": {"name": split, "seed": split_seed},
        "splits": list(splits),
        "limit": limit,
    }


def plan_embedding(
    tables: Mapping[str, Table],
    cache_dir: Path,
    fingerprint: Mapping[str, object],
    options: EmbedOptions,
    *,
    weights_path: str | None = None,
) -> EmbedPlan:
    """Check the cache directory against what is asked and list this part's shards; writes nothing.

    ``weights_path`` (the base's ``weights_path``) goes into the manifest, so `hpo export-best` can find
    the weights again without being told.
    """
    if options.augment_views and "train" not in tables:
        raise ConfigError(
            f"--augment-views {options.augment_views} augments the train split, which is not being embedded "
            f"(splits: {', '.join(tables)}); add train to --splits or drop --augment-views."
        )
    views = {split: 1 + options.augment_views if split == "train" else 1 for split in tables}
    counts = {split: len(table) for split, table in tables.items()}
    build = build_record(
        fingerprint,
        counts=counts,
        views=views,
        shard_size=options.shard_size,
        batch_size=options.batch_size,
        weights_path=weights_path,
    )
    creates_dir = not cache_dir.exists()
    if creates_dir:
        check_parent(cache_dir)
    complete = False if creates_dir else check_cache_dir(cache_dir, build)
    index, parts = options.part
    todo = tuple(
        shard
        for shard in shard_grid(build)
        if shard.number % parts == index and not complete and not shard_done(cache_dir, shard)
    )
    return EmbedPlan(cache_dir, tables, options, build, todo, complete, creates_dir)


def run_embedding(
    plan: EmbedPlan,
    root: Path,
    encode: EncodeFn,
    on_progress: Progress | None = None,
    *,
    counts: Counts | None = None,
) -> EmbedReport:
    """Embed the plan's shards from the images under ``root``; finalize once no shard is missing.

    ``counts`` (e.g. the dlib encoder's faces found and missed) is read around each shard: the
    shard's own share goes into its record, and the manifest sums them per split and view.
    """
    report = EmbedReport()
    if plan.complete:
        remove_shards(plan.cache_dir)  # left behind if a run was killed right after writing the manifest
        report.cache = open_cache(plan.cache_dir)
        return report
    progress = _Counter(plan.images, on_progress)
    try:
        for shard in plan.todo:
            table = plan.tables[shard.split]
            before = dict(counts()) if counts is not None else {}
            parts, record = _embed_shard(shard, root, table, encode, plan.options, progress)
            after = dict(counts()) if counts is not None else {}
            if after:
                record["encoder_stats"] = {key: value - before.get(key, 0) for key, value in after.items()}
            embeddings = np.concatenate(parts) if parts else np.zeros((0, plan.dim), np.float32)
            write_shard(plan.cache_dir, plan.build, shard, embeddings, record)
            _account(report, shard, record)
    except BaseException:
        # Nothing usable made (by this or, with --shard, another part): leave no directory behind.
        if plan.creates_dir and count_done_shards(plan.cache_dir)[0] == 0:
            shutil.rmtree(plan.cache_dir, ignore_errors=True)
        raise
    report.remaining = tuple(s for s in shard_grid(plan.build) if not shard_done(plan.cache_dir, s))
    if not report.remaining:
        labels = {split: table.labels for split, table in plan.tables.items()}
        report.cache = finalize(plan.cache_dir, plan.build, labels)
    return report


@dataclass
class _Counter:
    total: int
    callback: Progress | None
    done: int = 0

    def add(self, images: int) -> None:
        self.done += images
        if self.callback is not None:
            self.callback(self.done, self.total)


def _embed_shard(
    shard: Shard, root: Path, table: Table, encode: EncodeFn, options: EmbedOptions, progress: _Counter
) -> tuple[list[np.ndarray], dict[str, Any]]:
    import tensorflow as tf

    from data.images import image_batches

    files = table.files[shard.start : shard.stop]
    seed = (options.augment_seed, shard.view) if shard.view else None
    # tf.data's autotuner thread starves while the forward pass holds every core, and deleting a shard's
    # iterator waits for it: measured here 0.7-6 s per shard. Decoding is ~300x faster than the forward
    # pass, so the fixed parallelism it falls back to (one thread per core) loses nothing.
    no_autotune = tf.data.Options()
    no_autotune.autotune.enabled = False
    batches = image_batches(
        root, files, batch_size=options.batch_size, augment_seed=seed, index_offset=shard.start
    ).with_options(no_autotune)
    rows: list[int] = []
    skipped: list[int] = []
    parts: list[np.ndarray] = []
    for index, images in batches:
        positions = index.numpy().tolist()
        # The pipeline keeps order and drops what it cannot decode: a gap in the positions is a skip.
        skipped += _gaps(rows[-1] + 1 if rows else shard.start, positions)
        _refuse_skips(root, table, skipped, options.strict)
        parts.append(_checked(encode(images), table, positions))
        rows += positions
        progress.add(len(positions))
    skipped += range(rows[-1] + 1 if rows else shard.start, shard.stop)
    _refuse_skips(root, table, skipped, options.strict)
    progress.add(len(skipped))
    record = {
        "split": shard.split,
        "view": shard.view,
        "start": shard.start,
        "stop": shard.stop,
        "files": [table.files[p] for p in rows],
        "rows": rows,
        "skipped": [{"file": table.files[p], "reason": _reason(root / table.files[p])} for p in skipped],
    }
    return parts, record


def _gaps(start: int, positions: Sequence[int]) -> list[int]:
    present = set(positions)
    return [position for position in range(start, positions[-1]) if position not in present]


def _refuse_skips(root: Path, table: Table, skipped: Sequence[int], strict: bool) -> None:
    if skipped and strict:
        name = table.files[skipped[0]]
        raise DatasetError(
            f"image {name} ({table.csv.name} line {table.line(skipped[0])}) cannot be decoded: "
            f"{_reason(root / name).rstrip('.')}; replace or remove it, or run without --strict to skip it."
        )


def _checked(embeddings: object, table: Table, positions: list[int]) -> np.ndarray:
    array = np.asarray(embeddings)
    if array.dtype != np.float32 or array.ndim != 2 or array.shape[0] != len(positions):
        raise ValueError(f"the encoder returned {array.dtype} {array.shape} for {len(positions)} images")
    if not np.isfinite(array).all():
        bad = table.files[positions[int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])]]
        raise HpoError(
            f"the base produced non-finite embeddings (first for {bad}); its weights are likely corrupt, "
            "check the --weights file."
        )
    return array


def _reason(path: Path) -> str:
    from data.images import decode_error

    return decode_error(path) or "dropped by the image pipeline"


def _account(report: EmbedReport, shard: Shard, record: Mapping[str, Any]) -> None:
    views = report.embedded.setdefault(shard.split, {})
    views[shard.view] = views.get(shard.view, 0) + len(record["files"])
    report.skipped += [{"split": shard.split, **entry} for entry in record["skipped"]]
