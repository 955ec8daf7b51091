from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from support import RunHpo, create_args

from data.cache import open_cache
from search.records import StudySettings, read_record
from search.space import load_space
from search.status import render_status, study_status, study_summaries
from search.storage import open_storage, render_url
from search.study import create_study


def test_status_study_not_found_lists_studies(
    run_hpo: RunHpo, pg_url: str, study_name: str, tiny_space: Path, tiny_cache: Path
) -> None:
    assert run_hpo(*create_args(pg_url, study_name, tiny_space, tiny_cache))[0] == 0
    code, out, err = run_hpo("status", "--storage", pg_url, "--study", "no-such-study")
    names = ", ".join(repr(n) for n in sorted(optuna.get_all_study_names(pg_url)))
    assert study_name in names
    assert (code, out) == (2, "")
    assert err == (
        f"hpo: error: no study 'no-such-study' in {render_url(pg_url)}; the studies there: {names}. "
        "Create it with `hpo study create`, or pass --study (HPO_STUDY) with one of these.\n"
    )


def test_study_list_shows_progress(
    run_hpo: RunHpo, pg_url: str, study_name: str, tiny_space: Path, tiny_cache: Path
) -> None:
    assert run_hpo(*create_args(pg_url, study_name, tiny_space, tiny_cache))[0] == 0
    code, out, _ = run_hpo("study", "list", "--storage", pg_url)
    assert code == 0
    assert f"{study_name}\tbalanced_accuracy\t0/4 finished\t0 running\n" in out


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_status_json_and_table(
    run_hpo: RunHpo, pg_url: str, study_name: str, tiny_space: Path, tiny_cache: Path
) -> None:
    assert run_hpo(*create_args(pg_url, study_name, tiny_space, tiny_cache))[0] == 0
    storage = open_storage(pg_url, heartbeat_interval=1, grace_period=3)
    study = optuna.load_study(study_name=study_name, storage=storage)
    space = load_space(tiny_space)
    for value in (0.5, 0.75, None, None):
        trial = study.ask()
        space.suggest(trial)
        trial.set_user_attr("worker", f"host:1/{trial.number}")
        for head, accuracy in (("age", 0.25), ("race", 0.5), ("gender", 0.75)):
            for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
                trial.set_user_attr(f"{head}_{metric}", accuracy)
        trial.set_user_attr("epochs_run", 2)
        if value is not None:
            study.tell(trial, value)
        elif trial.number == 2:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            storage.record_heartbeat(trial._trial_id)
    code, out, _ = run_hpo("status", "--storage", pg_url, "--study", study_name, "--json")
    report = json.loads(out)
    assert code == 0
    assert report["counts"] == {"RUNNING": 1, "COMPLETE": 2, "PRUNED": 1, "FAIL": 0, "WAITING": 0}
    assert (report["budget"], report["finished"], report["progress"]) == (4, 3, 0.75)
    assert report["best"]["trial"] == 1 and report["best"]["values"] == [0.75]
    assert report["best"]["metrics"]["race"] == {"accuracy": 0.5, "balanced_accuracy": 0.5, "macro_f1": 0.5}
    assert report["best"]["head_stored"] is False
    assert report["points"] == [{"point": "paper", "trial": 0, "state": "COMPLETE", "values": [0.5]}]
    assert report["trials_per_hour"] > 0
    [live] = report["live_workers"]
    assert (live["worker"], live["trial"]) == ("host:1/3", 3)
    assert 0 <= live["heartbeat_age_s"] < 3
    code, out, _ = run_hpo("status", "--storage", pg_url, "--study", study_name)
    lines = out.splitlines()
    assert code == 0
    assert lines[2] == "progress   3/4 finished (75%)"
    assert lines[3] == "trials     RUNNING 1  COMPLETE 2  PRUNED 1"
    assert lines[5] == "best       trial 1: 0.7500  (2 epochs, no stored head)"
    assert lines[6:10] == [
        "           head      accuracy  balanced  macro F1",
        "           age         0.2500    0.2500    0.2500",
        "           race        0.5000    0.5000    0.5000",
        "           gender      0.7500    0.7500    0.7500",
    ]
    assert "paper      trial 0: 0.5000  (the best is +0.2500)" in lines
    assert lines[-2:] == ["workers    1 live", "           host:1/3  trial 3  " + lines[-1].split("  ")[-1]]


def test_status_of_a_pareto_study_lists_its_front(tmp_path: Path, tiny_space: Path, tiny_cache: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    settings = StudySettings(budget=3, objective="pareto", epochs=2)
    study, _ = create_study(
        storage, "front", space=load_space(tiny_space), cache=open_cache(tiny_cache), settings=settings
    )
    space = load_space(tiny_space)
    for values in ((0.5, 0.5, 0.5), (0.6, 0.4, 0.5), (0.4, 0.4, 0.4)):
        trial = study.ask()
        space.suggest(trial)
        study.tell(trial, values)
    status = study_status(study, storage, read_record(study))
    assert status["best"]["pareto_front"] == [0, 1]
    assert status["best"]["trial"] == 0  # the front's trial of highest mean value
    assert (status["finished"], status["eta_hours"]) == (3, 0.0)
    assert "front      trials 0, 1" in render_status(status).splitlines()
    assert study_summaries(storage.url) == [
        {"study": "front", "objective": "pareto", "budget": 3, "finished": 3, "running": 0}
    ]


def test_status_of_an_empty_study_has_no_best_and_no_rate(
    tmp_path: Path, tiny_space: Path, tiny_cache: Path
) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study, _ = create_study(
        storage,
        "empty",
        space=load_space(tiny_space),
        cache=open_cache(tiny_cache),
        settings=StudySettings(budget=2),
    )
    status = study_status(study, storage, read_record(study))
    assert (status["best"], status["trials_per_hour"], status["eta_hours"]) == (None, None, None)
    assert status["counts"]["WAITING"] == 1  # the paper's head, queued by create_study
    lines = render_status(status).splitlines()
    assert lines[4:8] == [
        "rate       -",
        "best       none yet",
        "paper      trial 0: WAITING",
        "workers    0 live",
    ]
