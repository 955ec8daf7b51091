"""`hpo export-best --ensemble K`: greedy selection over the stored heads, exported as one model."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from support import FIXTURE, REPO, RunHpo

from data.cache import open_cache
from data.labels import HEADS
from search.artifacts import load_best_head
from search.cli import main
from search.ensemble import candidate_trials, select_stored_heads
from search.records import read_record
from search.study import open_storage_for, open_study
from search.worker import StopFlag, WorkerSpec, run_worker

pytestmark = pytest.mark.slow

FRESH_PROCESS = """
import sys, numpy as np, keras
from model.export import load_export
exported = load_export(__import__("pathlib").Path(sys.argv[1]))
outputs = exported.head.predict_on_batch(np.load(sys.argv[2]))
np.savez(sys.argv[3], **{name: np.asarray(outputs[name]) for name in ("age", "race", "gender")})
"""


@dataclass(frozen=True)
class Searched:
    url: str
    cache: Path
    artifacts: Path

    def args(self, out: Path, *extra: str) -> list[str]:
        where = [
            "--storage",
            self.url,
            "--study",
            "e",
            "--cache",
            str(self.cache),
            "--artifacts",
            str(self.artifacts),
        ]
        return ["export-best", *where, "--weights", "random:0", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, tiny_space: Path) -> Searched:
    """A finished four-trial study on random:0 embeddings of 6 fixture faces per split; every head stored."""
    root = tmp_path_factory.mktemp("ensemble")
    cache = root / "cache"
    main(["embed", "--dataset", str(FIXTURE), "--cache", str(cache), "--weights", "random:0", "--limit", "6"])
    url = f"sqlite:///{root / 'study.db'}"
    where = ["--storage", url, "--study", "e", "--cache", str(cache), "--space", str(tiny_space)]
    main(
        ["study", "create", *where, "--budget", "4", "--epochs", "2", "--pruner", "none", "--keep-heads", "4"]
    )
    assert run_worker(WorkerSpec(url, "e", cache, root / "artifacts"), StopFlag()) == 4
    return Searched(url, cache, root / "artifacts")


def test_every_trial_among_keep_heads_best_stores_its_head(searched: Searched) -> None:
    study = open_study(open_storage_for(searched.url), "e")
    assert len(candidate_trials(study, read_record(study))) == 4


def test_select_stored_heads_is_deterministic(searched: Searched) -> None:
    study = open_study(open_storage_for(searched.url), "e")
    record, cache = read_record(study), open_cache(searched.cache)
    first = select_stored_heads(study, record, cache, searched.artifacts, 5)
    again = select_stored_heads(study, record, cache, searched.artifacts, 5)
    assert [(m.trial.number, m.weight) for m in first.members] == [
        (m.trial.number, m.weight) for m in again.members
    ]
    assert first.value == again.value and first.candidates == 4
    assert sum(member.weight for member in first.members) == pytest.approx(1.0)


def test_export_best_ensemble_equals_the_weighted_average_of_its_members(
    run_hpo: RunHpo, searched: Searched, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    code, _, err = run_hpo(*searched.args(out, "--ensemble", "3"))
    assert code == 0, err
    card = json.loads((out / "model_card.json").read_text())
    ensemble = card["study"]["ensemble"]
    members = ensemble["members"]
    assert (ensemble["size"], ensemble["candidates"]) == (3, 4)
    assert f"from the 4 stored: trial (weight) {members[0]['trial']} ({members[0]['weight']:.2f})" in err
    assert sum(member["weight"] for member in members) == pytest.approx(1.0)
    cache = open_cache(searched.cache)
    embeddings = np.asarray(cache.embeddings("val"), np.float32)
    np.save(tmp_path / "val.npy", embeddings)
    fresh = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(out), str(tmp_path / "val.npy"), str(tmp_path / "out.npz")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    exported = np.load(tmp_path / "out.npz")
    study = open_study(open_storage_for(searched.url), "e")
    average = {head: 0.0 for head in HEADS}
    for member in members:
        head, _, _ = load_best_head(study, searched.artifacts, member["trial"])
        outputs = head.predict_on_batch(embeddings)
        average = {name: average[name] + member["weight"] * np.asarray(outputs[name]) for name in HEADS}
    for name in HEADS:
        np.testing.assert_allclose(exported[name], average[name], rtol=1e-5, atol=1e-6)


def test_export_best_ensemble_larger_than_the_stored_heads_says_how_many_it_used(
    run_hpo: RunHpo, searched: Searched, tmp_path: Path
) -> None:
    code, _, err = run_hpo(*searched.args(tmp_path / "export", "--ensemble", "10"))
    assert code == 0, err
    assert "from the 4 stored" in err


def test_export_best_ensemble_with_trial_is_refused(
    run_hpo: RunHpo, searched: Searched, tmp_path: Path
) -> None:
    code, _, err = run_hpo(*searched.args(tmp_path / "export", "--ensemble", "2", "--trial", "0"))
    assert (code, err) == (
        2,
        "hpo: error: --ensemble picks its own heads; it cannot be combined with --trial or --retrain.\n",
    )
