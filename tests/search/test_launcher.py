from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import optuna
import pytest

from data.cache import open_cache
from data.errors import ConfigError
from search.launcher import describe_slots, launch, plan_slots, worker_slots
from search.records import StudySettings
from search.space import load_space
from search.storage import open_storage
from search.study import create_study
from search.worker import WorkerSpec


def test_worker_slots_per_gpu_and_cpu() -> None:
    assert worker_slots("all", per_gpu=2, n_workers=None, available=["0", "1"]) == ["0", "0", "1", "1"]
    assert worker_slots("1", per_gpu=1, n_workers=None, available=["0", "1"]) == ["1"]
    assert worker_slots("all", per_gpu=3, n_workers=None, available=[]) == ["", "", ""]
    assert worker_slots("none", per_gpu=1, n_workers=4, available=["0"]) == ["", "", "", ""]
    with pytest.raises(ConfigError, match=r"^--gpus 0,2 names GPU 2, but this machine has GPUs 0, 1 "):
        worker_slots("0,2", per_gpu=1, n_workers=None, available=["0", "1"])
    with pytest.raises(ConfigError, match=r"^--gpus must be all, none or a list of GPU indices"):
        worker_slots("first", per_gpu=1, n_workers=None, available=["0"])


def test_describe_slots_counts_processes_per_device() -> None:
    assert describe_slots(["0", "0", "1"]) == "3 worker process(es): 2 on GPU 0, 1 on GPU 1"
    assert describe_slots(["", ""]) == "2 worker process(es): 2 on CPU"


def test_plan_slots_cpu_workers_need_no_gpu_listing() -> None:
    assert plan_slots("none", per_gpu=2, n_workers=None) == ["", ""]
    assert plan_slots("all", per_gpu=1, n_workers=3) == ["", "", ""]


@pytest.fixture
def done_study(tmp_path: Path, tiny_space: Path, tiny_cache: Path) -> WorkerSpec:
    """A SQLite study whose budget of one trial is already met: workers start, find nothing to do, exit."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study, _ = create_study(
        open_storage(url),
        "done",
        space=load_space(tiny_space),
        cache=open_cache(tiny_cache),
        settings=StudySettings(budget=1, epochs=1),
    )
    trial = study.ask()
    load_space(tiny_space).suggest(trial)
    study.tell(trial, 0.5)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 1
    return WorkerSpec(url, "done", tiny_cache, tmp_path / "artifacts")


@pytest.mark.slow
def test_launch_two_children_exit_zero_when_the_budget_is_met(done_study: WorkerSpec) -> None:
    assert launch(done_study, ["", ""]) == 0


@pytest.mark.slow
def test_launch_names_each_child_that_failed_and_exits_2(
    done_study: WorkerSpec, capfd: pytest.CaptureFixture[str]
) -> None:
    missing = dataclasses.replace(done_study, study_name="no-such-study")
    assert launch(missing, ["", ""], first_index=4) == 2
    err = capfd.readouterr().err
    assert re.findall(r"^hpo: (hpo-worker-\d) exited 2$", err, flags=re.M) == ["hpo-worker-4", "hpo-worker-5"]
    assert err.count("hpo: error: no study 'no-such-study'") == 2
