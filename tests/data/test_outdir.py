from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from data.errors import ConfigError
from data.outdir import check_new_dir, staged_dir, sweep_staged


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    return int(process.stdout)


def test_check_new_dir_accepts_empty_or_creatable_and_makes_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    check_new_dir(tmp_path / "empty", flag="--out")
    check_new_dir(tmp_path / "a" / "b", flag="--out")
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]


def test_check_new_dir_refuses_file_full_dir_and_path_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    with pytest.raises(ConfigError, match=r"^--out .*/f is a file, not a directory; pass a new directory\.$"):
        check_new_dir(tmp_path / "f", flag="--out")
    with pytest.raises(ConfigError, match=r"^--out .*/d exists and is not empty; choose a new directory"):
        check_new_dir(tmp_path / "d", flag="--out")
    with pytest.raises(ConfigError, match=r"^cannot create --out .*/f/x/y: .*/f is a file; pass a path"):
        check_new_dir(tmp_path / "f" / "x" / "y", flag="--out")


def test_staged_dir_appears_whole_at_the_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with staged_dir(out) as staged:
        (staged / "model").mkdir(parents=True)
        assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (out / "model").is_dir()


def test_staged_dir_removed_on_error_and_on_sigterm(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), staged_dir(out) as staged:
        (staged / "part").mkdir(parents=True)
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), staged_dir(out) as staged:
        (staged / "part").mkdir(parents=True)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
        time.sleep(10)  # cut short: the handler raises as the signal arrives
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == previous


def test_staged_dir_failing_removes_the_parents_it_needed_and_only_those(tmp_path: Path) -> None:
    (tmp_path / "exports").mkdir()
    out = tmp_path / "exports" / "runs" / "today" / "best"
    with pytest.raises(RuntimeError), staged_dir(out) as staged:
        (staged / "part").mkdir(parents=True)
        raise RuntimeError("disk full")
    assert [p.name for p in tmp_path.iterdir()] == ["exports"]
    assert list((tmp_path / "exports").iterdir()) == []
    with staged_dir(out) as staged:
        (staged / "model").mkdir(parents=True)
    assert (out / "model").is_dir()


def test_sweep_removes_only_dead_processes_partials_of_this_host(tmp_path: Path) -> None:
    host, dead = socket.gethostname(), dead_pid()
    names = {
        "dead": f".out.partial-{host}-{dead}",
        "legacy dead": f".out.partial-{dead}",  # from before partials named their host
        "alive": f".out.partial-{host}-{os.getpid()}",
        "other host": f".out.partial-elsewhere-{dead}",
        "other export": f".other.partial-{host}-{dead}",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
    removed = sweep_staged(tmp_path / "out")
    assert sorted(p.name for p in removed) == sorted([names["dead"], names["legacy dead"]])
    left = {names[key] for key in ("alive", "other host", "other export")}
    assert {p.name for p in tmp_path.iterdir()} == left


def test_staged_dir_reports_what_it_swept(tmp_path: Path) -> None:
    stale = tmp_path / f".out.partial-{socket.gethostname()}-{dead_pid()}"
    (stale / "model.keras").parent.mkdir(parents=True)
    (stale / "model.keras").write_bytes(b"half")
    steps: list[str] = []
    with staged_dir(tmp_path / "out", on_step=steps.append) as staged:
        staged.mkdir()
    assert steps == [f"removed {stale}, left by a process that was killed"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
