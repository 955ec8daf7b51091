"""What the commands print besides their results: progress lines and step messages on stderr."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO

import click


class ProgressLine:
    """images/s and ETA on ``stream``: redrawn in place on a terminal, else a line every ~10 %."""

    def __init__(self, stream: IO[str], *, label: str = "embed") -> None:
        self.stream, self.tty, self.label = stream, stream.isatty(), label
        self.started, self.shown, self.drawn = time.monotonic(), -1, False

    def __call__(self, done: int, total: int) -> None:
        step = 10 * done // max(total, 1)
        if not self.tty and step == self.shown:
            return
        self.shown = step
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 else float("inf")
        text = f"{self.label}: {done}/{total} images  {rate:.1f} images/s  ETA {duration(eta)}"
        self.stream.write(f"\r{text:<70}" if self.tty else f"{text}\n")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        """End the in-place line so what follows starts on a fresh one."""
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def duration(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``; ``?`` for an unknown (infinite) time."""
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def step_printer(command: str) -> Callable[[str], None]:
    """A function printing ``hpo <command>: <message>`` on stderr, for a flow's ``on_step``."""

    def echo(message: str) -> None:
        click.echo(f"hpo {command}: {message}", err=True)

    return echo


def echo_err(line: str) -> None:
    """One line on stderr."""
    click.echo(line, err=True)
