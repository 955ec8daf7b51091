"""Which stored heads the workers keep: the ``keep_heads`` best (ties count), or a Pareto study's front."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial

from search.artifacts import head_removed, kept_heads, load_best_head, remove_outranked_heads
from search.cli import main
from search.errors import StudyError
from search.records import ARTIFACT_ATTR, MAX_GAP_ATTR, SETTINGS_ATTR, StudySettings, read_record
from search.study import open_storage_for, open_study
from search.worker import StopFlag, WorkerSpec, run_worker


def fake_study(
    artifacts: Path, values: Sequence[Sequence[float]], settings: StudySettings, gaps: Sequence[float] = ()
) -> optuna.Study:
    """An in-memory study whose trial i has ``values[i]`` and a stored "head" file ``head-i``."""
    study = optuna.create_study(directions=["maximize"] * len(values[0]))
    study.set_user_attr(SETTINGS_ATTR, settings.to_dict())
    artifacts.mkdir(exist_ok=True)
    for number, trial_values in enumerate(values):
        (artifacts / f"head-{number}").write_bytes(b"a head")
        attrs = {ARTIFACT_ATTR: f"head-{number}", MAX_GAP_ATTR: gaps[number] if gaps else 0.1}
        study.add_trial(
            create_trial(
                values=list(trial_values),
                params={"x": 0.5},
                distributions={"x": FloatDistribution(0, 1)},
                user_attrs=attrs,
            )
        )
    return study


def left(artifacts: Path) -> list[str]:
    return sorted(path.name for path in artifacts.iterdir())


def test_heads_outranked_by_keep_heads_better_trials_are_removed_once(tmp_path: Path) -> None:
    settings = StudySettings(keep_heads=2)
    study = fake_study(tmp_path, [[0.5], [0.7], [0.6], [0.6], [0.9]], settings)
    assert [t.number for t in kept_heads(study, settings)] == [1, 4]
    assert remove_outranked_heads(study, settings, tmp_path) == [0, 2, 3]
    assert left(tmp_path) == ["head-1", "head-4"]
    assert remove_outranked_heads(study, settings, tmp_path) == []  # already gone: skipped, not an error
    assert [head_removed(study, t, settings) for t in study.trials] == [True, False, True, True, False]


def test_ties_keep_their_heads(tmp_path: Path) -> None:
    settings = StudySettings(keep_heads=2)
    study = fake_study(tmp_path, [[0.8], [0.8], [0.8], [0.7]], settings)
    assert remove_outranked_heads(study, settings, tmp_path) == [3]
    assert left(tmp_path) == ["head-0", "head-1", "head-2"]


def test_pareto_study_keeps_the_front(tmp_path: Path) -> None:
    settings = StudySettings(objective="pareto", keep_heads=1)
    values = [[0.5, 0.5, 0.5], [0.6, 0.4, 0.5], [0.6, 0.6, 0.6], [0.4, 0.7, 0.1]]
    study = fake_study(tmp_path, values, settings)
    assert remove_outranked_heads(study, settings, tmp_path) == [0, 1]  # both dominated by trial 2
    assert left(tmp_path) == ["head-2", "head-3"]


def test_infeasible_trials_neither_outrank_nor_keep(tmp_path: Path) -> None:
    settings = StudySettings(keep_heads=1, max_gap=0.2)
    study = fake_study(tmp_path, [[0.6], [0.9], [0.5]], settings, gaps=[0.1, 0.3, 0.1])
    assert [t.number for t in kept_heads(study, settings)] == [0]
    assert remove_outranked_heads(study, settings, tmp_path) == [1, 2]


@pytest.mark.slow
def test_worker_keeps_only_the_best_heads_and_says_how_to_get_a_removed_one(
    tiny_cache: Path, tiny_space: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    where = ["--storage", url, "--study", "k", "--cache", str(tiny_cache), "--space", str(tiny_space)]
    main(
        ["study", "create", *where, "--budget", "4", "--epochs", "1", "--pruner", "none", "--keep-heads", "1"]
    )
    artifacts = tmp_path / "artifacts"
    assert run_worker(WorkerSpec(url, "k", tiny_cache, artifacts), StopFlag()) == 4
    study = open_study(open_storage_for(url), "k")
    settings = read_record(study).settings
    kept = kept_heads(study, settings)
    stored = [t for t in study.trials if t.user_attrs.get(ARTIFACT_ATTR)]
    assert len(left(artifacts)) == len(kept) >= 1  # one, or more on a tie for the best
    _, _, best = load_best_head(study, artifacts)
    assert best.number in {t.number for t in kept}
    removed = [t for t in stored if t.number not in {k.number for k in kept}]
    assert removed  # on this cache a later trial beats trial 0 (the space's paper point), which had stored
    for trial in removed:
        with pytest.raises(StudyError, match=f"trial {trial.number} was removed .* use --retrain"):
            load_best_head(study, artifacts, trial.number)
