"""The embedding cache, write side: shards renamed into place atomically, then joined into the finished cache.

While ``hpo embed`` runs, finished shards collect under ``shards/``: each an array plus a JSON record, each
renamed into place whole, the record last, so a shard whose record exists is done. Shards cover fixed row
ranges, which is what makes a resumed or multi-machine build identical to one made in one go.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from data.cache import (
    BUILD,
    FORMAT_VERSION,
    MANIFEST,
    SHARDS,
    Cache,
    as_json,
    open_cache,
    read_json,
)
from data.errors import CacheError


@dataclass(frozen=True)
class Shard:
    """A fixed row range of one split in one view: the unit that is embedded, written and resumed."""

    number: int  # position in the cache's shard grid; `--shard i/N` embeds the shards with number % N == i
    split: str
    view: int
    start: int
    stop: int

    @property
    def stem(self) -> Path:
        return Path(self.split) / f"view-{self.view}" / f"{self.start:09d}"


def build_record(
    fingerprint: Mapping[str, object],
    *,
    counts: Mapping[str, int],
    views: Mapping[str, int],
    shard_size: int,
    batch_size: int,
    weights_path: str | None = None,
) -> dict[str, Any]:
    """What every shard of a cache under construction must share: stored as ``shards/build.json``.

    Batch size is part of it because batches start at each shard's first row: with the same batches,
    TensorFlow on CPU returns the same bits, which a resumed build relies on. ``weights_path`` (where
    the base's weights were read) is only carried into the manifest; no check compares it.
    """
    record = {"fingerprint": fingerprint, "counts": counts, "views": views, "shard_size": shard_size}
    record |= {"batch_size": batch_size, "shards": len(shard_grid(record)), "weights_path": weights_path}
    return as_json(record)


def shard_grid(build: Mapping[str, Any]) -> tuple[Shard, ...]:
    """All shards of a cache: per split (in manifest order), per view, consecutive row ranges."""
    counts, size = build["counts"], build["shard_size"]
    ranges = [
        (split, view, start)
        for split, n in counts.items()
        for view in range(build["views"][split])
        for start in range(0, n, size)
    ]
    return tuple(
        Shard(number, split, view, start, min(start + size, counts[split]))
        for number, (split, view, start) in enumerate(ranges)
    )


def write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` through a temporary file in its directory, fsync'd, then renamed over it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        # os.open (not mkstemp) so the file gets the usual umask-based mode, readable by other users.
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_json(path: Path, value: object) -> None:
    """Write ``value`` as indented JSON, atomically."""
    text = json.dumps(value, indent=2) + "\n"
    write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def shard_done(cache_dir: Path, shard: Shard) -> bool:
    """Whether ``shard`` is finished: its record, written after its array, exists."""
    return (cache_dir / SHARDS / shard.stem.with_suffix(".json")).is_file()


def write_shard(
    cache_dir: Path,
    build: Mapping[str, object],
    shard: Shard,
    embeddings: np.ndarray,
    record: Mapping[str, object],
) -> None:
    """Store a finished shard: its array, then its record (which marks it done).

    ``record`` holds ``files`` (the embedded images, in order), ``rows`` (their positions in the split)
    and ``skipped`` (``{"file", "reason"}`` for each image that could not be decoded).
    """
    shards = cache_dir / SHARDS
    if not (shards / BUILD).is_file():
        shards.mkdir(parents=True, exist_ok=True)
        write_json(shards / BUILD, build)
    stem = shards / shard.stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(stem.with_suffix(".npy"), lambda handle: np.save(handle, embeddings, allow_pickle=False))
    write_json(stem.with_suffix(".json"), record)


def finalize(cache_dir: Path, build: Mapping[str, Any], labels: Mapping[str, np.ndarray]) -> Cache:
    """Join all shards into the finished layout, write the manifest, remove the shards; return the cache.

    Shard records with ``encoder_stats`` (the encoder's counts for that shard) are summed per split
    into the manifest's ``splits.<split>.encoder_stats``: one object of counts per view. With
    ``--shard i/N`` the part that finishes last finalizes; two finishing together may race, and the
    loser finds the shards gone and the manifest written: it opens the finished cache.
    """
    try:
        return _join(cache_dir, build, labels)
    except (FileNotFoundError, CacheError) as error:
        if (cache_dir / MANIFEST).is_file():
            return open_cache(cache_dir, expect=build["fingerprint"])
        if isinstance(error, FileNotFoundError):
            raise CacheError(
                f"shard file {error.filename} disappeared while the cache was being finalized; delete "
                f"{cache_dir / SHARDS} and run `hpo embed` again."
            ) from error
        raise


def _join(cache_dir: Path, build: Mapping[str, Any], labels: Mapping[str, np.ndarray]) -> Cache:
    dim = int(build["fingerprint"]["dim"])
    grid = shard_grid(build)
    splits: dict[str, dict[str, Any]] = {}
    skipped: list[dict[str, str]] = []
    for split, views in build["views"].items():
        shards = [[shard for shard in grid if shard.split == split and shard.view == v] for v in range(views)]
        records = [[_read_record(cache_dir, shard) for shard in view] for view in shards]
        files = [name for record in records[0] for name in record["files"]]
        if any([name for record in view for name in record["files"]] != files for view in records):
            raise CacheError(
                f"the views of split {split!r} in {cache_dir / SHARDS} disagree on which images were "
                f"decodable; delete {cache_dir} and rebuild it."
            )
        (cache_dir / split).mkdir(exist_ok=True)
        for view in range(views):
            _join_arrays(cache_dir, cache_dir / split / f"view-{view}.npy", shards[view], (len(files), dim))
        rows = [row for record in records[0] for row in record["rows"]]
        _write_split_index(cache_dir / split, files, labels[split][rows])
        missing = [{"split": split, **entry} for record in records[0] for entry in record["skipped"]]
        splits[split] = {"count": len(files), "views": views, "skipped": len(missing)}
        counted = [_summed(record.get("encoder_stats", {}) for record in view) for view in records]
        if any(counted):
            splits[split]["encoder_stats"] = counted
        skipped += missing
    manifest = {
        "format_version": FORMAT_VERSION,
        "complete": True,
        "fingerprint": build["fingerprint"],
        # Outside the fingerprint: a moved weights file is the same weights (the fingerprint's sha256).
        "weights_path": build.get("weights_path"),
        "dim": dim,
        "layout": {key: build[key] for key in ("shard_size", "batch_size")},
        "splits": splits,
        "skipped": skipped,
    }
    write_json(cache_dir / MANIFEST, manifest)
    remove_shards(cache_dir)
    return open_cache(cache_dir)


def _summed(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for entry in counts:
        for key, value in entry.items():
            total[key] = total.get(key, 0) + int(value)
    return total


def remove_shards(cache_dir: Path) -> None:
    """Delete the shard directory and any temporary files an interrupted write left behind."""
    shutil.rmtree(cache_dir / SHARDS, ignore_errors=True)
    for leftover in [*cache_dir.glob(".*.tmp"), *cache_dir.glob("*/.*.tmp")]:
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


def _write_split_index(directory: Path, files: Sequence[str], labels: np.ndarray) -> None:
    text = "".join(f"{name}\n" for name in files).encode("utf-8")
    write_atomic(directory / "files.txt", lambda handle: handle.write(text))
    write_atomic(directory / "labels.npy", lambda handle: np.save(handle, labels, allow_pickle=False))


def _read_record(cache_dir: Path, shard: Shard) -> dict[str, Any]:
    path = cache_dir / SHARDS / shard.stem.with_suffix(".json")
    record = read_json(path)
    if record is None:
        raise CacheError(
            f"shard {shard.stem} of the cache at {cache_dir} is missing; run `hpo embed` again with the "
            "same settings."
        )
    files, rows, skipped = (record.get(key) for key in ("files", "rows", "skipped"))
    if not (isinstance(files, list) and isinstance(rows, list) and isinstance(skipped, list)):
        raise _damaged_shard(cache_dir, shard, f"{path.name} lacks its files, rows or skipped lists")
    if len(files) != len(rows):
        raise _damaged_shard(cache_dir, shard, f"{path.name} lists {len(files)} files for {len(rows)} rows")
    return record


def _damaged_shard(cache_dir: Path, shard: Shard, problem: str) -> CacheError:
    stem = cache_dir / SHARDS / shard.stem
    return CacheError(
        f"shard {shard.stem} of the cache at {cache_dir} is damaged ({problem}); delete "
        f"{stem}.json and {stem}.npy, then run `hpo embed` again to recompute it."
    )


def _join_arrays(cache_dir: Path, path: Path, shards: Sequence[Shard], shape: tuple[int, int]) -> None:
    # Streamed: header first, then each shard's rows, so a 70k x 512 split never sits in memory twice.
    # The bytes equal np.save of the concatenated array.
    header = {"descr": np.dtype(np.float32).str, "fortran_order": False, "shape": shape}

    def write(handle: IO[bytes]) -> None:
        np.lib.format.write_array_header_1_0(handle, header)
        rows = 0
        for shard in shards:
            part = cache_dir / SHARDS / shard.stem.with_suffix(".npy")
            try:
                array = np.load(part, allow_pickle=False)
            except (ValueError, EOFError) as error:  # truncated or overwritten; a missing one is caught above
                raise _damaged_shard(
                    cache_dir, shard, f"{part.name} is not a readable array: {error}"
                ) from None
            if array.dtype != np.float32 or array.ndim != 2 or array.shape[1] != shape[1]:
                raise CacheError(
                    f"shard {part} holds a {array.dtype} array of shape {array.shape}, expected (rows, "
                    f"{shape[1]}) float32; delete it and run `hpo embed` again."
                )
            handle.write(np.ascontiguousarray(array).tobytes())
            rows += array.shape[0]
        if rows != shape[0]:
            raise CacheError(
                f"{path.parent.name}'s shards hold {rows} rows for {shape[0]} files; rebuild the cache."
            )

    write_atomic(path, write)
