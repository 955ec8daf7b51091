"""Directories a command writes: checked before any work, and written whole or not at all.

The checks run where the path enters, before anything is read, computed or created. A directory written
with :func:`staged_dir` is built in a hidden sibling and renamed into place, so a reader never sees half
of it; the sibling is removed on an error, Ctrl-C or SIGTERM, and a later run removes those of processes
that were killed outright. Parent directories made for it go too when it fails.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from data.errors import ConfigError


def creation_problem(path: Path) -> str | None:
    """Why directory ``path`` (not there yet) cannot be created, as a phrase, or None when it can.

    Its nearest existing ancestor must be a directory this process may write into.
    """
    ancestor = path  # as given, so the message names the path the user typed
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is a file"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{ancestor} is not writable"
    return None


def check_new_dir(path: Path, *, flag: str) -> None:
    """Raise ConfigError unless ``path`` (given as ``flag``) is an empty directory or can be created."""
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{flag} {path} is a file, not a directory; pass a new directory.")
        if any(path.iterdir()):
            raise ConfigError(f"{flag} {path} exists and is not empty; choose a new directory or delete it.")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(
                f"{flag} {path} is not writable; fix its permissions or pass another directory."
            )
        return
    problem = creation_problem(path)
    if problem is not None:
        raise ConfigError(
            f"cannot create {flag} {path}: {problem}; pass a path where a directory can be made."
        )


def absent_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, innermost first: what making it will create."""
    return [path for path in (folder, *folder.parents) if not path.exists()]


def remove_empty(folders: list[Path]) -> None:
    """Remove each of ``folders`` (innermost first) that is empty; one that is not stays."""
    for folder in folders:
        with contextlib.suppress(OSError):  # not empty: someone else's files are there now
            folder.rmdir()


@contextlib.contextmanager
def staged_dir(out: Path, *, on_step: Callable[[str], None] = lambda message: None) -> Iterator[Path]:
    """Yield a new hidden directory beside ``out`` (empty or absent) to write into; renamed to ``out`` at
    the end. Stale ones of killed processes are removed first, each named to ``on_step``."""
    for stale in sweep_staged(out):
        on_step(f"removed {stale}, left by a process that was killed")
    staged = out.with_name(f"{_staged_prefix(out)}{socket.gethostname()}-{os.getpid()}")
    missing = absent_folders(out.parent)
    try:
        with _sigterm_interrupts():
            yield staged
            if out.exists():
                out.rmdir()  # only an empty directory may be replaced
            staged.rename(out)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
        if not out.exists():  # a failed write leaves the tree as it found it
            remove_empty(missing)


def sweep_staged(out: Path) -> list[Path]:
    """Remove the staged directories beside ``out`` left by processes of this host that are gone."""
    host, prefix, removed = socket.gethostname(), _staged_prefix(out), []
    for staged in sorted(out.parent.glob(f"{glob.escape(prefix)}*")):
        owner, _, pid = staged.name.removeprefix(prefix).rpartition("-")
        # No host in the name: written by face-hpo before it named hosts, so on this one.
        if owner in (host, "") and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(staged, ignore_errors=True)
            removed.append(staged)
    return removed


def _staged_prefix(out: Path) -> str:
    return f".{out.name}.partial-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    # SIGTERM's default kills the process without unwinding; as KeyboardInterrupt, `finally` blocks run.
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set signal handlers
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
