"""The stop a worker honours: SIGTERM (``docker compose stop``) or Ctrl-C ends the current trial.

Light on purpose (no TensorFlow, no Optuna): a process installs it first thing, so a stop that comes
while it still imports or waits for its database is a stop, not a kill.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

_logger = logging.getLogger("hpo.worker")


class Stopped(Exception):
    """A stop was asked for before the work began (e.g. while waiting for the database): exit 0."""


class StopFlag:
    """Set by the first SIGTERM/SIGINT: the worker ends its trial and exits; a second one aborts at once."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def install(self, *, interrupt: bool = True) -> None:
        """Handle SIGTERM, and SIGINT unless ``interrupt`` is false, in this (main) thread.

        A launcher's child ignores SIGINT: a terminal's Ctrl-C reaches the whole process group, and the
        launcher forwards it as one SIGTERM, which would otherwise be the child's second signal.
        """
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle if interrupt else signal.SIG_IGN)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._event.is_set():
            # Optuna fails the running trial on KeyboardInterrupt, so nothing stays RUNNING.
            raise KeyboardInterrupt
        _logger.info("%s: ending the current trial, then exiting", signal.Signals(signum).name)
        self._event.set()

    def set(self) -> None:
        """Ask the worker to stop, as a signal would."""
        self._event.set()

    def is_set(self) -> bool:
        """Whether a stop was asked for."""
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early when a stop is asked for."""
        return self._event.wait(seconds)

    def sleep(self, seconds: float) -> None:
        """Sleep up to ``seconds``; raise Stopped if a stop is (or was already) asked for."""
        if self._event.wait(seconds):
            raise Stopped
