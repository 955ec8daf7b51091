"""The cache directory before anything is written: may this run write there, is it this base's, and is
another run writing the same shards?

Writers take an advisory lock (``fcntl.flock``) per part: ``.embed-<i>-of-<N>.lock`` in the cache
directory, holding the writer's pid and host. Parts i/N of one N write disjoint shards and run side by
side; a second writer of a part, or a writer with another N (whose shards overlap), is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from data.cache import MANIFEST, check_fingerprint, read_build, read_json
from data.errors import CacheError
from data.outdir import creation_problem


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
    elif manifest is None and any(not _LOCK.fullmatch(entry.name) for entry in cache_dir.iterdir()):
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
    problem = creation_problem(cache_dir)
    if problem is not None:
        raise CacheError(f"cannot create cache directory {cache_dir}: {problem}; use another --cache.")


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


_LOCK = re.compile(r"\.embed-(\d+)-of-(\d+)\.lock")


@contextlib.contextmanager
def claim_cache_dir(cache_dir: Path, part: tuple[int, int]) -> Iterator[None]:
    """Hold the lock of part ``part`` = (i, N) of the cache at ``cache_dir`` (made if missing) inside.

    CacheError, naming the holder's pid, when another writer holds this part or one of another N. A
    directory made here is removed again when the run fails before anything but its lock is in it.
    """
    created = not cache_dir.exists()
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _part_lock(cache_dir, part) as lock:
        try:
            yield
        except BaseException:
            # Anything else there (a shard, another part's lock) is not this run's to delete.
            if created and [entry.name for entry in cache_dir.iterdir()] == [lock.name]:
                shutil.rmtree(cache_dir, ignore_errors=True)
            raise


@contextlib.contextmanager
def _part_lock(cache_dir: Path, part: tuple[int, int]) -> Iterator[Path]:
    index, parts = part
    path = cache_dir / f".embed-{index}-of-{parts}.lock"
    fd = _lock(path)
    if fd is None:
        raise CacheError(
            f"the cache at {cache_dir} is being written by another `hpo embed` ({_holder(path)}) as "
            f"--shard {index}/{parts}; wait for it to finish, or give each machine its own --shard i/N."
        )
    try:
        for other in cache_dir.iterdir():
            found = _LOCK.fullmatch(other.name)
            if found and int(found[2]) != parts and _held(other):
                raise CacheError(
                    f"the cache at {cache_dir} is being written by `hpo embed` ({_holder(other)}) as "
                    f"--shard {found[1]}/{found[2]}, whose shards overlap --shard {index}/{parts}; all "
                    f"parts of one cache must use the same N: run the missing parts as i/{found[2]}."
                )
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # while still holding it; a writer that opened it meanwhile notices (_lock)
        os.close(fd)


def _lock(path: Path) -> int | None:
    """A descriptor of ``path`` holding its exclusive lock, or None when another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            return fd
        os.close(fd)  # its holder removed the file after we opened it: lock the file there now


def _held(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False  # left by a writer that was killed


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError):
        text = path.read_text(encoding="utf-8").strip()
        if text:
            return text
    return "pid not recorded yet"
