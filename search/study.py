"""A study: create it once (with the paper's head as trial 0), open it, compare it, find its trials.

What a study records lives in :mod:`search.records`. The sampler and pruner are not stored by Optuna;
workers rebuild them from the recorded settings.
"""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime
from pathlib import Path

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from data.cache import Cache, fingerprint_differences
from data.errors import CacheError
from search.errors import StudyError
from search.records import (
    CACHE_ATTR,
    CODE_ATTR,
    CREATED_ATTR,
    PAPER_POINT,
    POINT_ATTR,
    SETTINGS_ATTR,
    SPACE_ATTR,
    SPACE_SHA_ATTR,
    StudyRecord,
    StudySettings,
    code_version,
    read_record,
)
from search.settings import Settings
from search.space import Space
from search.stopflag import StopFlag
from search.storage import ResilientStorage, open_storage, render_url


def create_study(
    storage: ResilientStorage, name: str, *, space: Space, cache: Cache, settings: StudySettings
) -> tuple[optuna.Study, bool]:
    """Create study ``name``, or find it already created with the same space, cache and settings.

    Returns (study, created). A new study gets its provenance and, when the space has a ``paper``
    point, that head enqueued as trial 0 -- here only, never by workers. An existing study made with
    another space, cache or settings is refused with a StudyError listing each difference.
    """
    if name in _study_names(storage):
        study = open_study(storage, name)
        differences = compare_study(read_record(study), space=space, cache=cache, settings=settings)
        if differences:
            raise StudyError(
                f"study {name!r} already exists with other settings -- {'; '.join(differences)}. "
                "Choose another --study name, or run the existing study as it is."
            )
        return study, False
    study = optuna.create_study(storage=storage, study_name=name, directions=settings.goal.directions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # set_metric_names is experimental
        study.set_metric_names(settings.goal.metric_names)
    if PAPER_POINT in space.points:
        study.enqueue_trial(
            space.params_of(space.named_point(PAPER_POINT)), user_attrs={POINT_ATTR: PAPER_POINT}
        )
    attrs = {
        SETTINGS_ATTR: settings.to_dict(),
        SPACE_ATTR: space.text,
        SPACE_SHA_ATTR: space.sha256,
        CACHE_ATTR: cache.fingerprint,
        CODE_ATTR: code_version(),
    }
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    # Written last: a study whose creation was interrupted lacks it and is reported as such.
    study.set_user_attr(CREATED_ATTR, datetime.now(UTC).isoformat(timespec="seconds"))
    return study, True


def compare_study(record: StudyRecord, *, space: Space, cache: Cache, settings: StudySettings) -> list[str]:
    """Each way the study's record differs from this space, cache and settings, as readable phrases."""
    differences = []
    if record.space.sha256 != space.sha256:
        differences.append(
            f"space: the study has {record.space.name!r} (sha256 {record.space.sha256[:12]}), "
            f"this command gives {space.name!r} (sha256 {space.sha256[:12]})"
        )
    for key, had, given in fingerprint_differences(record.cache_fingerprint, cache.fingerprint, exact=True):
        differences.append(
            f"cache {key}: the study has {json.dumps(had)}, {cache.path} has {json.dumps(given)}"
        )
    had_settings, given_settings = record.settings.to_dict(), settings.to_dict()
    for key, had in had_settings.items():
        if had != given_settings[key]:
            differences.append(f"{key}: the study has {had!r}, this command gives {given_settings[key]!r}")
    return differences


def check_cache(study: optuna.Study, cache: Cache) -> None:
    """Refuse a cache whose fingerprint is not the one the study was created with."""
    recorded = study.user_attrs.get(CACHE_ATTR, {})
    differences = fingerprint_differences(cache.fingerprint, recorded, exact=True)
    if differences:
        listed = "; ".join(
            f"{key}: the cache has {json.dumps(had)}, the study was created with {json.dumps(want)}"
            for key, had, want in differences
        )
        raise CacheError(
            f"the cache at {cache.path} does not match study {study.study_name!r} -- {listed}. Point "
            "--cache (HPO_CACHE) at the cache the study was created with."
        )


def _study_names(storage: ResilientStorage) -> list[str]:
    return sorted(summary.study_name for summary in storage.get_all_studies())


def open_study(
    storage: ResilientStorage,
    name: str,
    *,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Load study ``name``; StudyError listing the studies that exist when there is none of that name."""
    names = _study_names(storage)
    if name not in names:
        listed = ", ".join(repr(n) for n in names) if names else "none"
        raise StudyError(
            f"no study {name!r} in {render_url(storage.url)}; the studies there: {listed}. Create it with "
            "`hpo study create`, or pass --study (HPO_STUDY) with one of these."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)


def open_storage_for(
    url: str, record: StudyRecord | None = None, *, wait: float = 0.0, stop: StopFlag | None = None
) -> ResilientStorage:
    """The database of an existing study (never created here), with the heartbeat the study's settings
    ask for (none without a record); ``wait``: seconds to wait for a server not reachable yet (Stopped
    if ``stop`` is set meanwhile)."""
    if record is None:
        return open_storage(url, create=False, wait=wait, stop=stop)
    return open_storage(
        url,
        heartbeat_interval=record.settings.heartbeat_interval,
        grace_period=record.settings.grace_period,
        create=False,
        wait=wait,
        stop=stop,
    )


def complete_trial(study: optuna.Study, number: int, *, flag: str | None = None) -> FrozenTrial:
    """Trial ``number`` of the study, which must be COMPLETE; StudyError saying its state otherwise.

    ``flag`` (e.g. ``"--trial"``) is the option the number came from, named first in the message.
    """
    found = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    if not found or found[0].state != TrialState.COMPLETE:
        state = found[0].state.name if found else "not in the study"
        given = f"{flag} {number}: " if flag else ""
        raise StudyError(
            f"{given}trial {number} of study {study.study_name!r} is {state}; "
            "pick a COMPLETE trial (`hpo status` lists them)."
        )
    return found[0]


def create_from(
    settings: Settings, space_file: Path | None, study_settings: StudySettings
) -> tuple[optuna.Study, bool, Space]:
    """`hpo study create`: the study ``settings.study`` on the cache, with the space file (None: the
    packaged default); (study, created, space), as `create_study` decides."""
    from data.cache import open_cache
    from search.space import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(space_file)
    cache = open_cache(settings.cache_dir)
    storage = open_storage(settings.storage_url)
    study, created = create_study(storage, settings.study, space=space, cache=cache, settings=study_settings)
    return study, created, space
