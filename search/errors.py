"""The errors of the search layer."""

from __future__ import annotations

from data.errors import HpoError


class StudyError(HpoError):
    """The study storage is unreachable, or the study is missing or does not match what was asked."""
