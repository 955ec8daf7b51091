"""The one error hierarchy of face-hpo.

Every error a user can cause is an :class:`HpoError`; the CLI prints its message as one line and exits 2.
Messages say what was wrong, the value seen, and what to do.
"""

from __future__ import annotations


class HpoError(Exception):
    """A user-facing error: bad input, bad configuration, or an unusable resource."""


class DatasetError(HpoError):
    """The FairFace root, a label file, a label value or an image is missing or malformed."""


class CacheError(HpoError):
    """The embedding cache is missing, incomplete, unwritable or built with other settings."""


class WeightsError(HpoError):
    """The base's weights cannot be found, read or matched to the base's layers."""


class ConfigError(HpoError):
    """A setting, a search-space file or a command-line value is invalid."""


class StudyError(HpoError):
    """The study storage is unreachable, or the study is missing or does not match what was asked."""
