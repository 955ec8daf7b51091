"""The embedding cache: a directory of memory-mappable arrays described by a fingerprinted manifest.

A finished cache holds ``manifest.json`` and per split ``files.txt``, ``labels.npy`` (N, 3) int8 and
``view-<v>.npy`` (N, D) float32 (view 0 clean, views 1..K augmented). While ``hpo embed`` runs, finished
shards collect under ``shards/``: each an array plus a JSON record, each renamed into place whole, the
record last, so a shard whose record exists is done. Shards cover fixed row ranges, which is what makes a
resumed or multi-machine build identical to one made in one go.
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

from data.errors import CacheError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARDS = "shards"
BUILD = "build.json"  # inside shards/: the fingerprint and shard layout every shard there was made with


@dataclass(frozen=True)
class Cache:
    """A finished cache, opened read-only; arrays are memory-mapped."""

    path: Path
    manifest: dict[str, Any]
    fingerprint: dict[str, Any]
    dim: int
    splits: tuple[str, ...]

    def embeddings(self, split: str, view: int = 0) -> np.ndarray:
        """The (N, D) float32 embeddings of ``split`` in ``view`` (0 = clean), memory-mapped."""
        if not 0 <= view < self.views(split):
            raise CacheError(
                f"split {split!r} of the cache at {self.path} has no view {view}; "
                f"it holds views 0..{self.views(split) - 1}."
            )
        return np.load(self.path / split / f"view-{view}.npy", mmap_mode="r", allow_pickle=False)

    def views(self, split: str) -> int:
        """Number of stored views of ``split``: 1 clean + K augmented."""
        return int(self._split(split)["views"])

    def labels(self, split: str) -> np.ndarray:
        """The (N, 3) int8 labels of ``split``, columns age, race, gender."""
        self._split(split)
        return np.load(self.path / split / "labels.npy", allow_pickle=False)

    def files(self, split: str) -> tuple[str, ...]:
        """The N relative image paths of ``split``, in row order of its arrays (CSV order)."""
        self._split(split)
        return tuple((self.path / split / "files.txt").read_text(encoding="utf-8").splitlines())

    def _split(self, split: str) -> Mapping[str, Any]:
        if split not in self.splits:
            raise CacheError(
                f"the cache at {self.path} has no split {split!r}; it holds {', '.join(self.splits)}."
            )
        return self.manifest["splits"][split]


def open_cache(path: Path, *, expect: Mapping[str, object] | None = None) -> Cache:
    """Open the finished cache at ``path``; with ``expect``, refuse it unless those fingerprint keys match."""
    manifest = read_json(path / MANIFEST)
    if manifest is None:
        if (path / SHARDS / BUILD).is_file():
            done, total = count_done_shards(path)
            raise CacheError(
                f"the cache at {path} is incomplete ({done} of {total} shards embedded); run "
                "`hpo embed` again with the same settings to finish it."
            )
        raise CacheError(
            f"no embedding cache at {path} (no {MANIFEST}); build one with `hpo embed --cache {path}`."
        )
    version = manifest.get("format_version")
    if version != FORMAT_VERSION or manifest.get("complete") is not True:
        raise CacheError(
            f"the cache at {path} has format version {version!r}, complete={manifest.get('complete')!r}; "
            f"this face-hpo reads complete caches of version {FORMAT_VERSION}: rebuild it with `hpo embed`."
        )
    if expect is not None:
        check_fingerprint(path, manifest["fingerprint"], expect, holder="cache")
    for split, entry in manifest["splits"].items():
        names = ["files.txt", "labels.npy", *(f"view-{view}.npy" for view in range(entry["views"]))]
        missing = [f"{split}/{name}" for name in names if not (path / split / name).is_file()]
        if missing:
            raise CacheError(
                f"the cache at {path} lacks {', '.join(missing)}; delete it and rebuild it with `hpo embed`."
            )
    return Cache(
        path=path,
        manifest=manifest,
        fingerprint=manifest["fingerprint"],
        dim=int(manifest["dim"]),
        splits=tuple(manifest["splits"]),
    )


def fingerprint_differences(
    have: Mapping[str, object], want: Mapping[str, object], *, exact: bool = False
) -> list[tuple[str, object, object]]:
    """(dotted key, value had, value wanted) for each key of ``want`` (``exact``: of either) that differs."""
    flat_have, flat_want = _flatten(_as_json(have)), _flatten(_as_json(want))
    keys = list(flat_want) + [key for key in flat_have if exact and key not in flat_want]
    # Another base explains every other difference (weights, preprocessing, dim): name it first.
    keys.sort(key=lambda key: key != "base")
    return [
        (key, flat_have.get(key), flat_want.get(key))
        for key in keys
        if flat_have.get(key) != flat_want.get(key)
    ]


def check_fingerprint(
    path: Path, have: Mapping[str, object], want: Mapping[str, object], *, holder: str, exact: bool = False
) -> None:
    """Raise :class:`CacheError` listing each differing key when ``have`` does not match ``want``."""
    differences = fingerprint_differences(have, want, exact=exact)
    if not differences:
        return
    listed = "; ".join(
        f"{key}: {holder} has {json.dumps(old)}, this command asks for {json.dumps(new)}"
        for key, old, new in differences
    )
    raise CacheError(
        f"the {holder} at {path} was built with other settings -- {listed}. Use another --cache "
        f"directory, or delete {path} to rebuild it."
    )


def _as_json(value: Mapping[str, object]) -> dict[str, object]:
    # What the manifest would hold: tuples become lists, so a fresh value compares equal to a stored one.
    return json.loads(json.dumps(value))


def _flatten(mapping: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# --- writing ---------------------------------------------------------------------------------------------


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
) -> dict[str, Any]:
    """What every shard of a cache under construction must share: stored as ``shards/build.json``.

    Batch size is part of it because batches start at each shard's first row: with the same batches,
    TensorFlow on CPU returns the same bits, which a resumed build relies on.
    """
    record = {"fingerprint": fingerprint, "counts": counts, "views": views, "shard_size": shard_size}
    record |= {"batch_size": batch_size, "shards": len(shard_grid(record))}
    return _as_json(record)


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


def read_build(cache_dir: Path) -> dict[str, Any] | None:
    """The build record of the partial cache at ``cache_dir``, or None when no shard was started."""
    return read_json(cache_dir / SHARDS / BUILD)


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


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when there is no such file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise CacheError(f"cannot read {path}: {error.strerror}; check its permissions.") from error
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise CacheError(
            f"{path} is not valid JSON ({error.msg}, line {error.lineno}); delete the cache "
            "directory and rebuild it with `hpo embed`."
        ) from error
    if not isinstance(value, dict):
        raise CacheError(f"{path} holds a JSON {type(value).__name__}, not an object; delete the cache.")
    return value


def count_done_shards(cache_dir: Path) -> tuple[int, int]:
    """(finished shards, all shards) of the partial cache at ``cache_dir``."""
    build = read_build(cache_dir) or {}
    done = sum(1 for _ in (cache_dir / SHARDS).glob("*/view-*/*.json"))
    return done, int(build.get("shards", 0))


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
    into the manifest's ``splits.<split>.encoder_stats``: one object of counts per view.
    """
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
    record = read_json(cache_dir / SHARDS / shard.stem.with_suffix(".json"))
    if record is None:
        raise CacheError(
            f"shard {shard.stem} of the cache at {cache_dir} is missing; run `hpo embed` again with the "
            "same settings."
        )
    return record


def _join_arrays(cache_dir: Path, path: Path, shards: Sequence[Shard], shape: tuple[int, int]) -> None:
    # Streamed: header first, then each shard's rows, so a 70k x 512 split never sits in memory twice.
    # The bytes equal np.save of the concatenated array.
    header = {"descr": np.dtype(np.float32).str, "fortran_order": False, "shape": shape}

    def write(handle: IO[bytes]) -> None:
        np.lib.format.write_array_header_1_0(handle, header)
        rows = 0
        for shard in shards:
            part = cache_dir / SHARDS / shard.stem.with_suffix(".npy")
            array = np.load(part, allow_pickle=False)
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
