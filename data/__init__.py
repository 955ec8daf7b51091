"""FairFace -> embedding cache: labels, the paper's split, decoding, augmentation, the cache. Knows no Keras
model and never imports Optuna, ``model`` or ``search``."""

from data.errors import CacheError, ConfigError, DatasetError, HpoError
from data.labels import AGE, GENDER, HEADS, RACE, VOCABULARIES

__all__ = [
    "AGE",
    "GENDER",
    "HEADS",
    "RACE",
    "VOCABULARIES",
    "CacheError",
    "ConfigError",
    "DatasetError",
    "HpoError",
]
