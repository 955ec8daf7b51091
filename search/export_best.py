"""The export flow: a study's chosen head + the cache's base -> the model, its card and its test report.

Keras bases (vggface) give one joined model; other bases (dlib-resnet) give the head alone, which
`model.export.Predictor` chains after the base (card kind ``head+predictor``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial

from data.cache import Cache, open_cache
from data.errors import ConfigError
from data.outdir import check_new_dir, staged_dir
from model.bases import Base, resolve_base
from model.errors import WeightsError
from model.head import HeadConfig
from search.artifacts import best_trial, load_best_head
from search.ensemble import build_ensemble
from search.errors import StudyError
from search.records import (
    ARTIFACT_ATTR,
    StudyRecord,
    code_version,
    read_record,
    trial_config,
    trial_metrics,
    trial_seed,
)
from search.settings import Settings
from search.study import check_cache, complete_trial, open_storage_for, open_study

if TYPE_CHECKING:
    import keras

REPORT_DIR = "report"
TEST_SPLIT = "test"


class ParetoTrialRequired(StudyError):
    """A three-objective study has no single best trial: the user must pick one of ``front``."""

    def __init__(self, study: optuna.Study) -> None:
        self.front = sorted(study.best_trials, key=lambda t: t.number)
        numbers = ", ".join(str(t.number) for t in self.front)
        super().__init__(
            f"study {study.study_name!r} is a three-objective (Pareto) study with no single best trial; "
            f"pick one of its Pareto-front trials {numbers} with --trial N."
        )


@dataclass(frozen=True)
class ChosenHead:
    """The head to export and where it came from."""

    model: keras.Model
    config: HeadConfig
    trial: FrozenTrial
    validation_metrics: dict[str, dict[str, float]]
    retrained: bool
    ensemble: dict[str, Any] | None = None  # members and weights, when the head averages stored heads


def export_best(
    settings: Settings,
    out: Path,
    *,
    trial: int | None = None,
    retrain: bool = False,
    ensemble: int | None = None,
    on_step: Callable[[str], None] = lambda message: None,
) -> Path:
    """Export the study's best (or ``trial``'s) head with the cache's base into ``out``; return ``out``.

    ``ensemble`` K: instead, the average of the stored heads greedy selection picks in K rounds (see
    `search.ensemble`). Refuses, before any work: an ``out`` that is not empty, a cache that is not the
    study's, base weights that are not the ones the cache was embedded with. ``out`` appears whole or not
    at all.
    """
    if ensemble is not None and (trial is not None or retrain):
        raise ConfigError("--ensemble picks its own heads; it cannot be combined with --trial or --retrain.")
    check_new_dir(out, flag="--out")
    study = open_study(open_storage_for(settings.storage_url), settings.study)
    record = read_record(study)
    cache = open_cache(settings.cache_dir)
    check_cache(study, cache)
    base = cache_base(cache, settings.weights)
    if ensemble is not None:
        built = build_ensemble(study, record, cache, settings.artifact_dir, ensemble, on_step)
        head = ChosenHead(
            built.model,
            built.first.config,
            built.first.trial,
            built.validation_metrics,
            retrained=False,
            ensemble=built.section,
        )
    else:
        head = single_head(study, record, cache, settings.artifact_dir, trial, retrain, on_step)
    # Written beside ``out`` and renamed into place, so an interrupted export leaves no half model behind.
    with staged_dir(out, on_step=on_step) as partial:
        _write_export(partial, head, base, cache, study, record, on_step)
    return out


def single_head(
    study: optuna.Study,
    record: StudyRecord,
    cache: Cache,
    artifact_dir: Path,
    trial: int | None,
    retrain: bool,
    on_step: Callable[[str], None],
) -> ChosenHead:
    """The best (or ``trial``'s) head: as its worker stored it, or retrained from its config."""
    chosen = choose_trial(study, trial)
    if retrain:
        on_step(f"retraining the head of trial {chosen.number} ({record.settings.epochs} epochs)")
        head = retrain_head(chosen, cache, record)
    else:
        require_stored_head(study, chosen, record)
        head = stored_head(study, chosen, artifact_dir)
        on_step(f"exporting the stored head of trial {chosen.number}")  # once loaded: an error stays one line
    return head


def cache_base(cache: Cache, weights: str | None) -> Base:
    """The base the cache was embedded with, found with ``weights``; refused unless it makes those embeddings.

    With ``weights`` None they come from the cache's manifest: ``random:SEED`` as its fingerprint records
    it, else the file (or dlib directory) at its recorded ``weights_path`` when its sha256 still matches.
    It computes in the cache's dtype, so the export reproduces the embeddings the head was searched on.
    """
    if weights is not None:
        return _matching_base(cache, weights)
    recorded = str(cache.fingerprint["weights"])
    if recorded.startswith("random:"):
        return _matching_base(cache, recorded)
    path = cache.manifest.get("weights_path")
    try:
        # No path: a cache embedded before face-hpo recorded one; the base's default weights may be them.
        return _matching_base(cache, path)
    except WeightsError as error:
        raise WeightsError(_weights_not_found(cache, path, error)) from error


def _matching_base(cache: Cache, weights: str | None) -> Base:
    base = resolve_base(str(cache.fingerprint["base"]), weights, dtype=str(cache.fingerprint["dtype"]))
    base.check_matches(cache.fingerprint, holder=f"the cache at {cache.path}")
    return base


def _weights_not_found(cache: Cache, path: str | None, error: WeightsError) -> str:
    recorded = cache.fingerprint["weights"]
    if path is None:
        where = f"its manifest records no weights path, and the base's default weights are not them ({error})"
    elif not Path(path).exists():
        where = f"its manifest records them at {path}, which no longer exists"
    else:
        where = f"its manifest records them at {path}, which now holds other weights"
    return (
        f"cannot find the base weights the cache at {cache.path} was embedded with ({recorded}): {where}. "
        f"Pass --weights PATH (or set HPO_WEIGHTS) to the weights with that sha256."
    )


def choose_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    """Trial ``number`` (which must be COMPLETE), else the best trial; a Pareto study needs ``number``."""
    if number is None:
        if len(study.directions) > 1:
            if not study.best_trials:
                raise StudyError(
                    f"study {study.study_name!r} has no COMPLETE trial yet; run `hpo worker` first."
                )
            raise ParetoTrialRequired(study)
        return best_trial(study)
    return complete_trial(study, number, flag="--trial")


def require_stored_head(study: optuna.Study, trial: FrozenTrial, record: StudyRecord) -> None:
    """Refuse a trial whose head the workers did not store (they store only new-best trials' heads)."""
    if not trial.user_attrs.get(ARTIFACT_ATTR):
        raise StudyError(
            f"trial {trial.number} of study {study.study_name!r} has no stored head (workers store only the "
            "head of each new best trial); add --retrain to rebuild it from its parameters with seed "
            f"{trial_seed(record.settings, trial.number)}."
        )


def stored_head(study: optuna.Study, trial: FrozenTrial, artifact_dir: Path) -> ChosenHead:
    """The head the worker stored for ``trial``, with the validation metrics the trial recorded."""
    model, config, _ = load_best_head(study, artifact_dir, trial.number)
    metrics = {
        head: {m: float(v) for m, v in values.items()} for head, values in trial_metrics(trial).items()
    }
    return ChosenHead(model, config, trial, metrics, retrained=False)


def retrain_head(trial: FrozenTrial, cache: Cache, record: StudyRecord) -> ChosenHead:
    """Train ``trial``'s head again from its config, as its worker did: same epochs, patience and seed.

    The arguments are exactly those `search.objective.TrialRunner` passes, so on CPU the head is the same.
    """
    from model.metrics import METRICS
    from model.train import train_head
    from model.train_data import TrainData

    config = trial_config(trial)
    result = train_head(
        config,
        TrainData.from_cache(cache),
        epochs=record.settings.epochs,
        seed=trial_seed(record.settings, trial.number),
        patience=record.settings.patience or None,
        rank_by=record.settings.goal.rank_by,
    )
    metrics = {head: {m: float(values[m]) for m in METRICS} for head, values in result.metrics.items()}
    return ChosenHead(result.model, config, trial, metrics, retrained=True)


def _write_export(
    out: Path,
    head: ChosenHead,
    base: Base,
    cache: Cache,
    study: optuna.Study,
    record: StudyRecord,
    on_step: Callable[[str], None],
) -> None:
    import keras

    from model import export
    from model.evaluate import evaluate_cache
    from model.report import write_report
    from model.train import loss_class_weights

    if base.is_keras:
        on_step("joining base and head, saving model.keras and the SavedModel")
        kind, model = export.KERAS_KIND, export.join_model(base.build_model(), head.model)
        export.save_model(model, out)
    else:
        on_step(f"saving the head as {export.HEAD_FILE}; the {base.name} base runs before it when predicting")
        kind, model = export.HEAD_KIND, head.model
        export.save_head(model, out)
    card = export.model_card(
        model,
        kind=kind,
        base=base.description,
        head_config=head.config,
        cache_fingerprint=cache.fingerprint,
        study=_study_section(study, head, record),
        validation_metrics=head.validation_metrics,
        code_version=code_version(),
        # What the head's loss weighted each class by: the cache's train labels, as the worker saw them.
        class_weights=loss_class_weights(cache.labels("train"), head.config)
        if "train" in cache.splits
        else None,
    )
    if TEST_SPLIT in cache.splits:
        on_step(f"evaluating on the cache's {TEST_SPLIT} split ({len(cache.files(TEST_SPLIT)):,} images)")
        # The report describes the saved file: evaluate the model loaded back from it.
        saved = keras.saving.load_model(out / export.MODEL_FILES[kind], safe_mode=True)
        report = evaluate_cache(export.ExportedModel(out, saved, card), cache, TEST_SPLIT)
        write_report(report, out / REPORT_DIR)
    else:
        on_step(
            f"the cache has no {TEST_SPLIT} split: no report; run `hpo evaluate --dataset ROOT` on the export"
        )
    export.write_card(out, card)


def _study_section(study: optuna.Study, head: ChosenHead, record: StudyRecord) -> dict[str, Any]:
    trial = head.trial
    return {
        "name": study.study_name,
        "trial": trial.number,
        "objective": record.settings.objective,
        "value": trial.values[0] if len(trial.values) == 1 else list(trial.values),
        "retrained": head.retrained,
        "ensemble": head.ensemble,
        "seed": trial_seed(record.settings, trial.number),
        "settings": record.settings.to_dict(),
        "space_sha256": record.space.sha256,
        "code_version": record.code_version,
    }
