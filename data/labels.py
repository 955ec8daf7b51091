"""FairFace label vocabularies, in the fixed order every array and model output of face-hpo uses."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

AGE: tuple[str, ...] = (
    "0-2",
    "3-9",
    "10-19",
    "20-29",
    "30-39",
    "40-49",
    "50-59",
    "60-69",
    "more than 70",
)
RACE: tuple[str, ...] = (
    "White",
    "Black",
    "Latino_Hispanic",
    "East Asian",
    "Southeast Asian",
    "Indian",
    "Middle Eastern",
)
# The gender output is one sigmoid unit: P(Male).
GENDER: tuple[str, ...] = ("Female", "Male")

# Head name -> vocabulary; the order of the keys is the order of the columns of a cache's label array.
VOCABULARIES: Mapping[str, tuple[str, ...]] = MappingProxyType({"age": AGE, "race": RACE, "gender": GENDER})
HEADS: tuple[str, ...] = tuple(VOCABULARIES)
