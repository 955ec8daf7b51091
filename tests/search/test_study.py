from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from support import RunHpo, create_args

from data.cache import open_cache
from data.shards import build_record, write_json
from search.artifacts import load_best_head
from search.errors import StudyError
from search.records import CACHE_ATTR, CODE_ATTR, SETTINGS_ATTR, SPACE_ATTR, SPACE_SHA_ATTR, code_version
from search.space import load_space
from search.storage import open_storage


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


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
        "patience": 5, "seed": 0, "heartbeat_interval": 1, "grace_period": 3, "max_gap": None,
        "keep_heads": 10,
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
    build = build_record({"w": 1}, counts={"train": 4}, views={"train": 1}, shard_size=2, batch_size=2)
    write_json(partial / "shards" / "build.json", build)
    code, _, err = run_hpo(*create_args(pg_url, study_name, tiny_space, partial))
    assert (code, err) == (
        2,
        f"hpo: error: the cache at {partial} is incomplete (0 of 2 shards embedded); run `hpo embed` again "
        "with the same settings to finish it.\n",
    )
    assert study_name not in optuna.get_all_study_names(pg_url)


def test_open_storage_not_a_url() -> None:
    with pytest.raises(
        StudyError, match=r"^the storage URL \(HPO_STORAGE / --storage\) is not a database URL"
    ):
        open_storage("postgres:/nothing:pw@")


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
