"""The cache directory before anything is written: may this run write there, and is it this base's?"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from data.cache import MANIFEST, check_fingerprint, read_build, read_json
from data.errors import CacheError


def check_cache_dir(cache_dir: Path, build: Mapping[str, Any]) -> bool:
    """Whether existing ``cache_dir`` is a finished cache of ``build``; CacheError if it cannot be used."""
    if not cache_dir.is_dir():
        raise CacheError(
            f"cache path {cache_dir} exists and is not a directory; pass a directory to --cache."
        )
    fingerprint = build["fingerprint"]
    manifest = read_json(cache_dir / MANIFEST)
    if manifest is not None:
        check_fingerprint(cache_dir, manifest.get("fingerprint", {}), fingerprint, holder="cache", exact=True)
        if manifest.get("complete") is True:
            return True
    partial = read_build(cache_dir)
    if partial is not None:
        check_fingerprint(cache_dir, partial["fingerprint"], fingerprint, holder="partial cache", exact=True)
        layout = {key: build[key] for key in ("shard_size", "batch_size")}
        check_fingerprint(cache_dir, partial, layout, holder="partial cache")
    elif manifest is None and any(cache_dir.iterdir()):
        raise CacheError(
            f"{cache_dir} is not empty and holds no embedding cache; pass a new or empty --cache directory."
        )
    if not os.access(cache_dir, os.W_OK | os.X_OK):
        raise CacheError(
            f"cache directory {cache_dir} is not writable; fix its permissions or use another --cache."
        )
    return False


def check_parent(cache_dir: Path) -> None:
    """Raise CacheError unless ``cache_dir`` (not there yet) can be made when the first shard is written."""
    ancestor = cache_dir.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if ancestor == cache_dir.absolute():
        return
    if not ancestor.is_dir():
        raise CacheError(
            f"cannot create cache directory {cache_dir}: {ancestor} is a file; use another --cache."
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise CacheError(
            f"cannot create cache directory {cache_dir}: {ancestor} is not writable; use another --cache."
        )


def check_cache_base(cache_dir: Path, base_name: str) -> None:
    """Refuse, before any weights are looked for, a cache (finished or partial) made with another base."""
    if not cache_dir.is_dir():
        return
    recorded = read_json(cache_dir / MANIFEST) or read_build(cache_dir)
    if recorded is None:
        return
    built_with = recorded.get("fingerprint", {}).get("base")
    if built_with != base_name:
        raise CacheError(
            f"the cache at {cache_dir} was built with base {built_with}, this command asks for {base_name}; "
            f"pass --base {built_with} to use it, or another --cache directory for a {base_name} cache."
        )
