"""The one error hierarchy of face-hpo: its base, and the errors of the data layer.

Every error a user can cause is an :class:`HpoError`; the CLI prints its message as one line and exits 2.
Messages say what was wrong, the value seen, and what to do. The model and search layers define their
own subclasses (``model.errors``, ``search.errors``).
"""

from __future__ import annotations


class HpoError(Exception):
    """A user-facing error: bad input, bad configuration, or an unusable resource."""


class DatasetError(HpoError):
    """The FairFace root, a label file, a label value or an image is missing or malformed."""


class CacheError(HpoError):
    """The embedding cache is missing, incomplete, unwritable or built with other settings."""


class ConfigError(HpoError):
    """A setting, a search-space file or a command-line value is invalid."""
