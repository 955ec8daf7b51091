"""The errors of the search layer."""

from __future__ import annotations

from data.errors import HpoError


class StudyError(HpoError):
    """The study storage is unreachable, or the study is missing or does not match what was asked."""


class SetupError(StudyError):
    """Something a worker's trials rely on besides the head itself (the artifact store, the cache, the
    database) failed. Not the head's fault: the worker stops rather than fail trial after trial.

    ``trial`` is the number of the trial it broke, if one was running (the worker queues it again).
    """

    def __init__(self, message: str, *, trial: int | None = None) -> None:
        super().__init__(message)
        self.trial = trial
