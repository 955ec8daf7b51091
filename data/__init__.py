"""FairFace reading, the paper's split, augmentation and the embedding cache. Never imports Optuna."""

from data.errors import CacheError, ConfigError, DatasetError, HpoError, StudyError, WeightsError
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
    "StudyError",
    "WeightsError",
]
