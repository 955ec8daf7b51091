from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from data.cache import open_cache
from data.errors import StudyError
from search.artifacts import load_best_head
from search.space import load_space
from search.storage import open_storage, render_url
from search.study import (
    CACHE_ATTR,
    CODE_ATTR,
    SETTINGS_ATTR,
    SPACE_ATTR,
    SPACE_SHA_ATTR,
    code_version,
    metric_names,
)

RunHpo = Callable[..., tuple[int, str, str]]  # the `run_hpo` fixture: `hpo ARGS` in-process


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def create_args(url: str, name: str, space: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "study", "create", "--storage", url, "--study", name, "--space", str(space), "--cache", str(cache),
        "--budget", "4", "--epochs", "2", "--heartbeat-interval", "1", "--grace-period", "3", *extra,
    ]  # fmt: skip


def test_create_study_records_provenance_and_paper_trial(
    run_hpo: RunHpo,
    pg_url: str,
    study_name: str,
    tiny_space: Path,
    tiny_cache: Path,
    paper_params: dict[str, object],
) -> None:
    code, out, err = run_hpo(*create_args(pg_url, study_name, tiny_space, tiny_cache))
    assert (code, err) == (0, "")
    space = load_space(tiny_space)
    assert out == (
        f"created study {study_name!r} in {pg_url}: space 'tiny' (sha256 {space.sha256[:12]}), budget 4, "
        "objective balanced_accuracy, tpe sampler, hyperband pruner, 2 epochs; trial 0 = the space's "
        "'paper' point.\n"
    )
    study = optuna.load_study(study_name=study_name, storage=pg_url)
    assert study.metric_names == ["mean balanced accuracy (val)"]  # the dashboard's axis label
    [trial] = study.get_trials()
    assert (trial.number, trial.state, trial.user_attrs) == (0, TrialState.WAITING, {"point": "paper"})
    assert trial.system_attrs["fixed_params"] == paper_params
    attrs = study.user_attrs
    assert attrs[SETTINGS_ATTR] == {
        "budget": 4, "objective": "balanced_accuracy", "sampler": "tpe", "pruner": "hyperband", "epochs": 2,
        "patience": 5, "seed": 0, "heartbeat_interval": 1, "grace_period": 3,
    }  # fmt: skip
    assert (attrs[SPACE_ATTR], attrs[SPACE_SHA_ATTR]) == (space.text, space.sha256)
    assert attrs[CACHE_ATTR] == open_cache(tiny_cache).fingerprint
    assert {key: attrs[CODE_ATTR][key] for key in ("package", "git_commit")} == {
        key: code_version()[key] for key in ("package", "git_commit")
    }
    assert attrs[CODE_ATTR]["package"] == "0.1.0"


def test_create_study_same_arguments_is_noop(
    run_hpo: RunHpo, pg_url: str, study_name: str, tiny_space: Path, tiny_cache: Path
) -> None:
    args = create_args(pg_url, study_name, tiny_space, tiny_cache)
    assert run_hpo(*args)[0] == 0
    code, out, err = run_hpo(*args)
    assert (code, err) == (0, "")
    assert out == (
        f"study {study_name!r} already exists in {pg_url} with this space, cache and settings; "
        "nothing to do.\n"
    )
    assert len(optuna.load_study(study_name=study_name, storage=pg_url).get_trials()) == 1


def test_create_study_other_space_refused(
    run_hpo: RunHpo,
    tmp_path: Path,
    pg_url: str,
    study_name: str,
    tiny_space: Path,
    tiny_cache: Path,
) -> None:
    assert run_hpo(*create_args(pg_url, study_name, tiny_space, tiny_cache))[0] == 0
    wider = tmp_path / "wider.toml"
    wider.write_text(tiny_space.read_text().replace("high = 32", "high = 64"), encoding="utf-8")
    code, out, err = run_hpo(*create_args(pg_url, study_name, wider, tiny_cache))
    old, new = load_space(tiny_space).sha256[:12], load_space(wider).sha256[:12]
    assert (code, out) == (2, "")
    assert err == (
        f"hpo: error: study {study_name!r} already exists with other settings -- space: the study has 'tiny' "
        f"(sha256 {old}), this command gives 'tiny' (sha256 {new}). Choose another --study name, or run the "
        "existing study as it is.\n"
    )


def test_create_study_other_cache_and_settings_refused(
    run_hpo: RunHpo,
    pg_url: str,
    study_name: str,
    tiny_space: Path,
    tiny_cache: Path,
    other_cache: Path,
) -> None:
    assert run_hpo(*create_args(pg_url, study_name, tiny_space, tiny_cache))[0] == 0
    code, _, err = run_hpo(*create_args(pg_url, study_name, tiny_space, other_cache, "--budget", "9"))
    assert code == 2
    assert err == (
        f"hpo: error: study {study_name!r} already exists with other settings -- cache weights: the study "
        f'has "synthetic:0", {other_cache} has "synthetic:1"; budget: the study has 4, this command gives 9. '
        "Choose another --study name, or run the existing study as it is.\n"
    )


def test_create_study_unreachable_database_names_host_not_password(
    run_hpo: RunHpo, study_name: str, tiny_space: Path, tiny_cache: Path
) -> None:
    url = "postgresql+psycopg2://hpo:s3cret@127.0.0.1:1/hpo"
    code, out, err = run_hpo(*create_args(url, study_name, tiny_space, tiny_cache))
    assert (code, out) == (2, "")
    assert err.startswith(
        "hpo: error: cannot reach the study database at 127.0.0.1:1 "
        '(postgresql+psycopg2://hpo:***@127.0.0.1:1/hpo): connection to server at "127.0.0.1", port 1 failed'
    )
    assert err.endswith("check that the server runs and the URL (HPO_STORAGE / --storage).\n")
    assert "s3cret" not in err and err.count("\n") == 1


def test_create_study_invalid_space_file(
    run_hpo: RunHpo, tmp_path: Path, pg_url: str, study_name: str, tiny_cache: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("format_version = 1\nname = 'bad'\n", encoding="utf-8")
    code, out, err = run_hpo(*create_args(pg_url, study_name, bad, tiny_cache))
    assert (code, out) == (2, "")
    assert err.startswith(f"hpo: error: space file {bad}: ")
    assert err.count("\n") == 1


def test_create_study_cache_missing_or_incomplete(
    run_hpo: RunHpo,
    tmp_path: Path,
    pg_url: str,
    study_name: str,
    tiny_space: Path,
    tiny_cache: Path,
) -> None:
    missing = tmp_path / "nothing"
    code, _, err = run_hpo(*create_args(pg_url, study_name, tiny_space, missing))
    assert (code, err) == (
        2,
        f"hpo: error: no embedding cache at {missing} (no manifest.json); build one with "
        f"`hpo embed --cache {missing}`.\n",
    )
    partial = tmp_path / "partial"
    (partial / "shards").mkdir(parents=True)
    shutil.copy(tiny_cache / "manifest.json", partial / "shards" / "build.json")
    code, _, err = run_hpo(*create_args(pg_url, study_name, tiny_space, partial))
    assert (code, err) == (
        2,
        f"hpo: error: the cache at {partial} is incomplete (0 of 0 shards embedded); run `hpo embed` again "
        "with the same settings to finish it.\n",
    )
    assert study_name not in optuna.get_all_study_names(pg_url)


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


def test_open_storage_not_a_url() -> None:
    with pytest.raises(
        StudyError, match=r"^the storage URL \(HPO_STORAGE / --storage\) is not a database URL"
    ):
        open_storage("postgres:/nothing:pw@")


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
    assert lines[-2:] == ["workers    1 live", "           host:1/3  trial 3  " + lines[-1].split("  ")[-1]]


def test_load_best_head_without_stored_head(
    run_hpo: RunHpo,
    tmp_path: Path,
    pg_url: str,
    study_name: str,
    tiny_space: Path,
    tiny_cache: Path,
) -> None:
    assert run_hpo(*create_args(pg_url, study_name, tiny_space, tiny_cache))[0] == 0
    study = optuna.load_study(study_name=study_name, storage=pg_url)
    message = f"study '{study_name}' has no COMPLETE trial yet; run `hpo worker` first."
    with pytest.raises(StudyError, match=f"^{re.escape(message)}$"):
        load_best_head(study, tmp_path)
    trial = study.ask()
    load_space(tiny_space).suggest(trial)
    study.tell(trial, 0.5)
    with pytest.raises(StudyError, match=r"^trial 0 has no stored head; use --retrain$"):
        load_best_head(study, tmp_path)
    with pytest.raises(
        StudyError, match=f"^trial 7 of study '{study_name}' is not in the study; pick a COMPLETE"
    ):
        load_best_head(study, tmp_path, trial=7)


def test_metric_names_pareto_names_each_head() -> None:
    assert metric_names("pareto") == [
        "age balanced accuracy (val)",
        "race balanced accuracy (val)",
        "gender balanced accuracy (val)",
    ]
    assert metric_names("accuracy") == ["mean accuracy (val)"]
