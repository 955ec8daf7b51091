"""The embedding cache, read side: memory-mappable arrays described by a fingerprinted manifest.

A finished cache holds ``manifest.json`` and per split ``files.txt``, ``labels.npy`` (N, 3) int8 and
``view-<v>.npy`` (N, D) float32 (view 0 clean, views 1..K augmented). While ``hpo embed`` runs, finished
shards collect under ``shards/`` (the write side, :mod:`data.shards`), each renamed into place whole.
This module opens finished caches, compares fingerprints and reads the state of a partial cache.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data.errors import CacheError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARDS = "shards"
BUILD = "build.json"  # inside shards/: the fingerprint and shard layout every shard there was made with
# What a build record holds, with its JSON type (see data.shards.build_record).
_BUILD_KINDS = {"fingerprint": dict, "counts": dict, "views": dict, "shard_size": int, "batch_size": int}
_BUILD_KINDS |= {"shards": int}


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
    problem = manifest_problem(manifest)
    if problem is not None:
        raise CacheError(
            f"the cache at {path} is damaged: its {MANIFEST} {problem}; delete {path} and rebuild it with "
            "`hpo embed`."
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
        damaged = split_problem(path / split, entry, int(manifest["dim"]))
        if damaged is not None:
            raise CacheError(
                f"the cache at {path} is damaged: {split}/{damaged}; delete {path} and rebuild it with "
                "`hpo embed`."
            )
    return Cache(
        path=path,
        manifest=manifest,
        fingerprint=manifest["fingerprint"],
        dim=int(manifest["dim"]),
        splits=tuple(manifest["splits"]),
    )


def manifest_problem(manifest: Mapping[str, Any]) -> str | None:
    """What a finished cache's manifest lacks that readers use (as a phrase), or None when nothing."""
    if not isinstance(manifest.get("fingerprint"), dict):
        return "has no 'fingerprint' object"
    if not _is_count(manifest.get("dim")) or manifest["dim"] < 1:
        return f"has 'dim' {manifest.get('dim')!r}, not a positive integer"
    splits = manifest.get("splits")
    if not isinstance(splits, dict) or not splits:
        return "has no 'splits' object"
    for split, entry in splits.items():
        if not (isinstance(entry, dict) and _is_count(entry.get("count")) and _is_count(entry.get("views"))):
            return f"has split {split!r} as {json.dumps(entry)}, not an object with a count and views"
        if entry["views"] < 1:
            return f"has split {split!r} with {entry['views']} views"
    if not isinstance(manifest.get("skipped", []), list):
        return "has 'skipped' that is not a list"
    return None


def split_problem(directory: Path, entry: Mapping[str, int], dim: int) -> str | None:
    """Which array or index of a split directory does not hold what its manifest entry says, or None.

    Reads only the ``.npy`` headers and sizes, so a truncated or rewritten array is found before it is
    memory-mapped (numpy's mmap of a short file fails deep inside a worker).
    """
    count = entry["count"]
    expected: dict[str, tuple[tuple[int, int], np.dtype[Any]]] = {
        "labels.npy": ((count, 3), np.dtype(np.int8))
    }
    expected |= {f"view-{view}.npy": ((count, dim), np.dtype(np.float32)) for view in range(entry["views"])}
    for name, (shape, dtype) in expected.items():
        problem = npy_problem(directory / name, shape, dtype)
        if problem is not None:
            return f"{name} {problem}"
    lines = len((directory / "files.txt").read_bytes().splitlines())
    if lines != count:
        return f"files.txt lists {lines} images where the manifest counts {count}"
    return None


def npy_problem(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
    """Why ``path`` is not a whole ``.npy`` file of a ``dtype`` array of ``shape`` (a phrase), or None."""
    try:
        with path.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            found_shape, _, found_dtype = read_header(handle)
            offset = handle.tell()
    except (ValueError, OSError) as error:
        return f"is not a readable .npy array ({error})"
    if found_shape != shape or found_dtype != dtype:
        return f"holds a {found_dtype} array of shape {found_shape}, the manifest says {dtype} {shape}"
    size, needed = path.stat().st_size, offset + int(np.prod(shape)) * dtype.itemsize
    if size != needed:
        return f"has {size} bytes where its {dtype} {shape} array needs {needed} (truncated or overwritten)"
    return None


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def fingerprint_differences(
    have: Mapping[str, object], want: Mapping[str, object], *, exact: bool = False
) -> list[tuple[str, object, object]]:
    """(dotted key, value had, value wanted) for each key of ``want`` (``exact``: of either) that differs."""
    flat_have, flat_want = _flatten(as_json(have)), _flatten(as_json(want))
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


def as_json(value: Mapping[str, object]) -> dict[str, object]:
    """``value`` as the manifest would hold it: tuples become lists, so fresh and stored values compare."""
    return json.loads(json.dumps(value))


def _flatten(mapping: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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


def read_build(cache_dir: Path) -> dict[str, Any] | None:
    """The build record of the partial cache at ``cache_dir``, or None when no shard was started."""
    build = read_json(cache_dir / SHARDS / BUILD)
    if build is None:
        return None
    wrong = [key for key, kind in _BUILD_KINDS.items() if not isinstance(build.get(key), kind)]
    if wrong:
        raise CacheError(
            f"{cache_dir / SHARDS / BUILD} is damaged (no valid {', '.join(wrong)}); delete "
            f"{cache_dir / SHARDS} and run `hpo embed` again."
        )
    return build


def count_done_shards(cache_dir: Path) -> tuple[int, int]:
    """(finished shards, all shards) of the partial cache at ``cache_dir``."""
    build = read_build(cache_dir) or {}
    done = sum(1 for _ in (cache_dir / SHARDS).glob("*/view-*/*.json"))
    return done, int(build.get("shards", 0))
