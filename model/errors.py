"""The errors of the model layer."""

from __future__ import annotations

from data.errors import HpoError


class WeightsError(HpoError):
    """The base's weights cannot be found, read or matched to the base's layers."""
