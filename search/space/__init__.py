"""The search space as data: a TOML file of parameter ranges and named points, parsed into a `Space`.

The ranges live in the file only (`default.toml` here is the paper's neighbourhood, with the format
explained in its comments); the objective holds no ranges of its own.
"""

from search.space.parse import FORMAT_VERSION, default_space_path, load_space, parse_space
from search.space.types import PER_LAYER, Choice, Param, Range, Space

__all__ = [
    "FORMAT_VERSION",
    "PER_LAYER",
    "Choice",
    "Param",
    "Range",
    "Space",
    "default_space_path",
    "load_space",
    "parse_space",
]
