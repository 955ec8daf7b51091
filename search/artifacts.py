"""The heads of best trials, kept as Optuna artifacts so the export ships the winning head itself.

A head is saved as a Keras file (``.keras``: no pickles, loads in safe mode) into a
``FileSystemArtifactStore``; the trial records the artifact id and its head config as user attributes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial, TrialState

from data.outdir import creation_problem
from model.head import HeadConfig
from search.errors import SetupError, StudyError
from search.records import ARTIFACT_ATTR, MAX_GAP_ATTR, SETTINGS_ATTR, StudySettings, trial_config
from search.study import complete_trial

if TYPE_CHECKING:
    import keras


def artifact_store(artifact_dir: Path) -> FileSystemArtifactStore:
    """The file-system store under ``artifact_dir`` (created if missing)."""
    artifact_dir.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(artifact_dir)


def check_artifact_store(artifact_dir: Path) -> None:
    """Refuse, before any trial, an artifact directory no head could be stored in; creates nothing.

    Otherwise each trial that is a new best would train, then fail to store its head.
    """
    fix = "pass --artifacts (HPO_ARTIFACTS) a directory every worker can write."
    if artifact_dir.exists():
        if not artifact_dir.is_dir():
            raise SetupError(f"artifact store {artifact_dir} is a file, not a directory; {fix}")
        if not os.access(artifact_dir, os.W_OK | os.X_OK):
            raise SetupError(f"artifact store {artifact_dir} is not writable; {fix}")
        return
    problem = creation_problem(artifact_dir)
    if problem is not None:
        raise SetupError(f"cannot create artifact store {artifact_dir}: {problem}; {fix}")


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    # All of face-hpo's objectives are maximized.
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


def _feasible_finished(study: optuna.Study, settings: StudySettings) -> list[FrozenTrial]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [t for t in complete if settings.feasible(t)]


def _outranked(values: Sequence[float], finished: Sequence[FrozenTrial], settings: StudySettings) -> bool:
    # At least keep_heads finished trials are strictly better (ties count for the trial), or, in a Pareto
    # study, one dominates it. Trials only ever get added, so an outranked trial stays outranked.
    if len(values) > 1:
        return any(_dominates(t.values, values) for t in finished)
    return sum(1 for t in finished if t.values[0] > values[0]) >= settings.keep_heads


def deserves_head(study: optuna.Study, values: Sequence[float], settings: StudySettings, gap: float) -> bool:
    """Whether a trial with ``values`` and max per-group ``gap`` keeps its head: it is feasible and ranks
    among the ``settings.keep_heads`` best feasible trials finished so far (ties count), or, in a Pareto
    study, no feasible finished trial dominates it.

    Checked before the trial is told, against the trials finished so far: any trial that ends up among
    the best was among them when it checked, so the best trials always have their heads.
    """
    if settings.max_gap is not None and gap > settings.max_gap:
        return False
    return not _outranked(values, _feasible_finished(study, settings), settings)


def head_removed(study: optuna.Study, trial: FrozenTrial, settings: StudySettings) -> bool:
    """Whether ``trial``'s stored head is one `remove_outranked_heads` deletes (or has deleted)."""
    return trial.number not in {t.number for t in kept_heads(study, settings)}


def kept_heads(study: optuna.Study, settings: StudySettings) -> list[FrozenTrial]:
    """The COMPLETE trials with a stored head that still rank among the ``keep_heads`` best feasible
    trials (ties count), or, in a Pareto study, that no feasible trial dominates; in trial order."""
    finished = _feasible_finished(study, settings)
    return [
        t
        for t in finished
        if t.user_attrs.get(ARTIFACT_ATTR) and not _outranked(t.values, finished, settings)
    ]


def remove_outranked_heads(study: optuna.Study, settings: StudySettings, artifact_dir: Path) -> list[int]:
    """Delete the stored heads of the trials that no longer rank among the ``keep_heads`` best (or, in a
    Pareto study, that a later trial dominates); the numbers of the trials whose head was deleted.

    The artifact store then holds about ``keep_heads`` heads however long the study runs (more only on
    ties), and every head an ensemble or `best_trial` can pick is still there. A head another worker
    removed first is skipped. The trial keeps its artifact id: its head is gone, its parameters are not
    (``export-best --trial N --retrain`` trains it again).
    """
    kept = {t.number for t in kept_heads(study, settings)}
    store = artifact_store(artifact_dir)
    removed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        artifact_id = trial.user_attrs.get(ARTIFACT_ATTR)
        if not artifact_id or trial.number in kept:
            continue
        try:
            store.remove(artifact_id)
        except ArtifactNotFound:
            continue
        removed.append(trial.number)
    return removed


def store_head(trial: optuna.Trial, model: keras.Model, artifact_dir: Path) -> str:
    """Save ``model`` as a ``.keras`` artifact of ``trial``; record and return the artifact id.

    A file-system failure (the store gone, unwritable or full) is a SetupError naming the store.
    """
    try:
        with tempfile.TemporaryDirectory(prefix="hpo-head-") as scratch:
            path = Path(scratch) / f"head-trial-{trial.number}.keras"
            model.save(path)
            artifact_id = upload_artifact(
                artifact_store=artifact_store(artifact_dir), file_path=str(path), study_or_trial=trial
            )
    except OSError as error:
        raise SetupError(
            f"cannot store the head of trial {trial.number} in artifact store {artifact_dir}: "
            f"{error.strerror or error}; fix it or pass --artifacts (HPO_ARTIFACTS) another directory, "
            "then start the worker again (the trial is queued again).",
            trial=trial.number,
        ) from error
    trial.set_user_attr(ARTIFACT_ATTR, artifact_id)
    return artifact_id


def best_trial(study: optuna.Study, settings: StudySettings | None = None) -> FrozenTrial:
    """The study's best feasible COMPLETE trial, the lowest-numbered among ties (the database orders ties
    at will). ``settings`` default to those recorded on the study.

    For a Pareto study: the feasible front's trial of highest mean value. Every trial this returns has a
    stored head when workers wrote one (see `deserves_head`).
    """
    settings = settings or StudySettings.from_dict(study.user_attrs[SETTINGS_ATTR])
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise StudyError(f"study {study.study_name!r} has no COMPLETE trial yet; run `hpo worker` first.")
    feasible = [t for t in complete if settings.feasible(t)]
    if not feasible:
        raise StudyError(
            f"none of the {len(complete)} COMPLETE trials of study {study.study_name!r} meets its max_gap "
            f"{settings.max_gap} (the smallest gap so far is "
            f"{min(t.user_attrs.get(MAX_GAP_ATTR, 1.0) for t in complete):.3f}); let the workers run on."
        )
    if len(study.directions) > 1:
        front = [t for t in feasible if not any(_dominates(o.values, t.values) for o in feasible)]
        return max(front, key=lambda t: (sum(t.values) / len(t.values), -t.number))
    best = max(t.values[0] for t in feasible)
    return min((t for t in feasible if t.values[0] == best), key=lambda t: t.number)


def load_best_head(
    study: optuna.Study, artifact_dir: Path, trial: int | None = None
) -> tuple[keras.Model, HeadConfig, FrozenTrial]:
    """The stored head of trial number ``trial`` (default: `best_trial`), its config and the trial.

    Raises StudyError when the trial is not COMPLETE or has no stored head (then retrain it from its
    ``head_config`` instead), or when the artifact file is missing from ``artifact_dir``.
    """
    chosen = best_trial(study) if trial is None else complete_trial(study, trial)
    artifact_id = chosen.user_attrs.get(ARTIFACT_ATTR)
    if not artifact_id:
        raise StudyError(f"trial {chosen.number} has no stored head; use --retrain")
    config = trial_config(chosen)
    with tempfile.TemporaryDirectory(prefix="hpo-head-") as scratch:
        path = Path(scratch) / "head.keras"
        try:
            download_artifact(
                artifact_store=FileSystemArtifactStore(artifact_dir),
                file_path=str(path),
                artifact_id=artifact_id,
            )
        except ArtifactNotFound:
            settings = StudySettings.from_dict(study.user_attrs[SETTINGS_ATTR])
            if head_removed(study, chosen, settings):
                raise StudyError(
                    f"the head of trial {chosen.number} was removed when it fell out of the study's "
                    f"{settings.keep_heads} best (--keep-heads); use --retrain to train it again"
                ) from None
            raise StudyError(
                f"the head of trial {chosen.number} (artifact {artifact_id}) is not in {artifact_dir}; "
                "point --artifacts (HPO_ARTIFACTS) at the directory the workers wrote, or use --retrain"
            ) from None
        from model.loading import load_keras_file

        what, shown = (
            f"the stored head of trial {chosen.number}",
            f"(artifact {artifact_id} in {artifact_dir})",
        )
        fix = "add --retrain to train it again from its parameters."
        model = load_keras_file(path, what=what, fix=fix, compile=False, shown=shown)
    return model, config, chosen
