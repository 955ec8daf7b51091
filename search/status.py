"""The state of a study, as plain data (for ``--json``) and as a readable table."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from model.metrics import METRICS
from search.artifacts import best_trial
from search.errors import StudyError
from search.records import (
    ARTIFACT_ATTR,
    EPOCHS_ATTR,
    MAX_GAP_ATTR,
    POINT_ATTR,
    SETTINGS_ATTR,
    WORKER_ATTR,
    StudyRecord,
    StudySettings,
    trial_groups,
    trial_metrics,
)
from search.settings import Settings
from search.storage import ResilientStorage, render_url


def study_status(study: optuna.Study, storage: ResilientStorage, record: StudyRecord) -> dict[str, Any]:
    """Counts by state, progress against the budget, the best trial, throughput and live workers."""
    settings = record.settings
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    finished = counts[TrialState.COMPLETE.name] + counts[TrialState.PRUNED.name]
    rate = _trials_per_hour(trials)
    remaining = max(settings.budget - finished, 0)
    return {
        "study": study.study_name,
        "storage": render_url(storage.url),
        "settings": settings.to_dict(),
        "space": {"name": record.space.name, "sha256": record.space.sha256},
        "code_version": record.code_version,
        "counts": {state.name: counts[state.name] for state in TrialState},
        "budget": settings.budget,
        "finished": finished,
        "progress": min(finished / settings.budget, 1.0),
        "trials_per_hour": rate,
        "eta_hours": remaining / rate if rate and remaining else (0.0 if not remaining else None),
        "best": _best(study, settings) if counts[TrialState.COMPLETE.name] else None,
        "points": _points(trials),
        "live_workers": _live_workers(study, storage, settings.grace_period, trials),
    }


def _trials_per_hour(trials: list[FrozenTrial]) -> float | None:
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.datetime_complete]
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    if not done or not starts:
        return None
    hours = (
        max(t.datetime_complete for t in done if t.datetime_complete) - min(starts)
    ).total_seconds() / 3600
    return len(done) / hours if hours > 0 else None


def _best(study: optuna.Study, settings: StudySettings) -> dict[str, Any] | None:
    try:
        trial = best_trial(study, settings)
    except StudyError:  # no COMPLETE trial meets max_gap yet
        return None
    return {
        "trial": trial.number,
        "values": trial.values,
        "params": trial.params,
        "metrics": trial_metrics(trial),
        "epochs_run": trial.user_attrs.get(EPOCHS_ATTR),
        "head_stored": bool(trial.user_attrs.get(ARTIFACT_ATTR)),
        "pareto_front": [t.number for t in study.best_trials] if len(study.directions) > 1 else None,
        "groups": trial_groups(trial),
        "max_gap": trial.user_attrs.get(MAX_GAP_ATTR),
    }


def _points(trials: list[FrozenTrial]) -> list[dict[str, Any]]:
    """The queued named points (trial 0: the paper's head): what the best is to be compared with."""
    return [
        {"point": t.user_attrs[POINT_ATTR], "trial": t.number, "state": t.state.name, "values": t.values}
        for t in trials
        if t.user_attrs.get(POINT_ATTR)
    ]


def _live_workers(
    study: optuna.Study, storage: ResilientStorage, grace_period: int, trials: list[FrozenTrial]
) -> list[dict[str, Any]]:
    """RUNNING trials whose heartbeat is fresher than the grace period, with the worker that runs each."""
    ages = storage.heartbeat_ages(storage.get_study_id_from_name(study.study_name))
    by_number = {t.number: t for t in trials}
    live = []
    for number, age in sorted(ages.items()):
        if age is not None and age > grace_period:
            continue
        trial = by_number.get(number)
        worker = trial.user_attrs.get(WORKER_ATTR) if trial else None
        started = trial.datetime_start if trial else None
        running_s = (datetime.now() - started).total_seconds() if started else None
        live.append({"worker": worker, "trial": number, "heartbeat_age_s": age, "running_s": running_s})
    return live


def render_status(status: dict[str, Any]) -> str:
    """The status as aligned text lines."""
    settings = status["settings"]
    counts = "  ".join(f"{name} {n}" for name, n in status["counts"].items() if n)
    rate = status["trials_per_hour"]
    eta = status["eta_hours"]
    lines = [
        f"study      {status['study']}  ({status['storage']})",
        f"search     {settings['objective']}, {settings['sampler']} sampler, {settings['pruner']} pruner, "
        f"{settings['epochs']} epochs, space {status['space']['name']} ({status['space']['sha256'][:12]})",
        f"progress   {status['finished']}/{status['budget']} finished ({status['progress']:.0%})",
        f"trials     {counts or 'none'}",
        f"rate       {'-' if rate is None else f'{rate:.1f} trials/hour'}"
        f"{'' if not eta else f', about {eta:.1f} h to go'}",
    ]
    lines += _render_best(status["best"])
    lines += _render_points(status["points"], status["best"])
    workers = status["live_workers"]
    lines.append(f"workers    {len(workers)} live")
    for live in workers:
        age = live["heartbeat_age_s"]
        beat = "no heartbeat yet" if age is None else f"heartbeat {age:.0f} s ago"
        lines.append(f"           {live['worker'] or '?'}  trial {live['trial']}  {beat}")
    return "\n".join(lines)


def _render_best(best: dict[str, Any] | None) -> list[str]:
    if best is None:
        return ["best       none yet"]
    values = ", ".join(f"{v:.4f}" for v in best["values"])
    stored = "head stored" if best["head_stored"] else "no stored head"
    lines = [f"best       trial {best['trial']}: {values}  ({best['epochs_run']} epochs, {stored})"]
    lines.append(f"           {'head':<8}{'accuracy':>10}{'balanced':>10}{'macro F1':>10}")
    for head, metrics in best["metrics"].items():
        cells = "".join("         -" if metrics[m] is None else f"{metrics[m]:>10.4f}" for m in METRICS)
        lines.append(f"           {head:<8}{cells}")
    params = ", ".join(f"{name}={value}" for name, value in best["params"].items())
    lines.append(f"params     {params}")
    if best["pareto_front"] is not None:
        lines.append(f"front      trials {', '.join(str(n) for n in best['pareto_front'])}")
    worst = [
        f"{head} {group['worst_group']} {group['group_min']:.4f} (gap {group['difference']:.4f})"
        for head, group in best["groups"].items()
    ]
    if worst:
        lines.append(f"worst      {'; '.join(worst)}")
    return lines


def _render_points(points: list[dict[str, Any]], best: dict[str, Any] | None) -> list[str]:
    lines = []
    for point in points:
        values = point["values"]
        shown = point["state"] if values is None else ", ".join(f"{v:.4f}" for v in values)
        line = f"{point['point']:<11}trial {point['trial']}: {shown}"
        if values is not None and point["state"] != TrialState.COMPLETE.name:
            line += f" ({point['state']})"  # e.g. pruned by a version that did not spare it
        if values is not None and best is not None and len(values) == 1 and best["trial"] != point["trial"]:
            line += f"  (the best is {best['values'][0] - values[0]:+.4f})"
        lines.append(line)
    return lines


def study_summaries(storage_url: str) -> list[dict[str, Any]]:
    """One row per study in the database (by name): objective, budget, finished and running trials."""
    from search.storage import open_storage
    from search.study import open_study
    from search.worker import progress

    storage = open_storage(storage_url, create=False)
    rows = []
    for summary in sorted(storage.get_all_studies(), key=lambda s: s.study_name):
        recorded = summary.user_attrs.get(SETTINGS_ATTR, {})
        done, running = progress(open_study(storage, summary.study_name))
        row = {"study": summary.study_name, "objective": recorded.get("objective", "?")}
        rows.append(row | {"budget": recorded.get("budget", "?"), "finished": done, "running": running})
    return rows


def status_of(settings: Settings) -> dict[str, Any]:
    """`hpo status`: the status of study ``settings.study`` (see `study_status`)."""
    from search.records import read_record
    from search.storage import open_storage
    from search.study import open_study

    storage = open_storage(settings.storage_url, create=False)
    study = open_study(storage, settings.study)
    return study_status(study, storage, read_record(study))
