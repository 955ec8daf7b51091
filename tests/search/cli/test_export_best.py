from __future__ import annotations

import hashlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pytest
from support import FIXTURE, HPO, RunHpo

from data.cache import open_cache
from data.labels import HEADS, VOCABULARIES
from model.errors import WeightsError
from model.export import load_export
from model.predict import head_outputs
from search.artifacts import load_best_head
from search.cli import main
from search.export_best import cache_base
from search.study import open_storage_for, open_study
from search.worker import StopFlag, WorkerSpec, run_worker

METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


@dataclass(frozen=True)
class Searched:
    """A finished two-trial study on real (random:0) embeddings of 4 fixture faces per split."""

    url: str
    cache: Path
    artifacts: Path
    space: Path

    def args(self, study: str, out: Path, *extra: str, weights: bool = True) -> list[str]:
        where = ["--storage", self.url, "--study", study, "--cache", str(self.cache)]
        base = [*(["--weights", "random:0"] if weights else []), "--artifacts", str(self.artifacts)]
        return ["export-best", *where, *base, "--out", str(out), *extra]


def create_study(
    searched: Searched, name: str, *extra: str, capsys: pytest.CaptureFixture[str] | None = None
) -> optuna.Study:
    where = ["--storage", searched.url, "--study", name, "--cache", str(searched.cache)]
    main(
        ["study", "create", *where, "--space", str(searched.space), "--budget", "2", "--epochs", "2", *extra]
    )
    if capsys is not None:
        capsys.readouterr()  # the command's summary line
    return open_study(open_storage_for(searched.url), name)


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, tiny_space: Path) -> Searched:
    root = tmp_path_factory.mktemp("search")
    cache = root / "cache"
    main(["embed", "--dataset", str(FIXTURE), "--cache", str(cache), "--weights", "random:0", "--limit", "4"])
    searched = Searched(
        url=f"sqlite:///{root / 'study.db'}", cache=cache, artifacts=root / "artifacts", space=tiny_space
    )
    create_study(searched, "s")
    # The worker's own loop, in this process: trial 0 (the space's paper point) and one sampled trial.
    assert run_worker(WorkerSpec(searched.url, "s", cache, searched.artifacts), StopFlag()) == 2
    return searched


def dead_pid() -> int:
    """The pid of a process that has exited."""
    return int(
        subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout
    )


def stored_outputs(searched: Searched, trial: int | None = None) -> dict[str, np.ndarray]:
    """The worker-stored head's outputs on the cache's test embeddings."""
    head, _, _ = load_best_head(open_study(open_storage_for(searched.url), "s"), searched.artifacts, trial)
    return head_outputs(head, open_cache(searched.cache).embeddings("test"))


def test_export_best_exports_the_stored_head_with_card_and_report(
    run_hpo: RunHpo, searched: Searched, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    # What an export killed with SIGKILL leaves: its partial directory, named by its host and (dead) pid.
    stale = tmp_path / f".export.partial-{socket.gethostname()}-{dead_pid()}"
    stale.mkdir()
    (stale / "model.keras").write_bytes(b"half a model")
    code, stdout, err = run_hpo(*searched.args("s", out))
    assert code == 0, err
    assert stdout == f"{out}\n"
    assert err.startswith("hpo export-best: exporting the stored head of trial ")
    assert f"hpo export-best: removed {stale}, left by a process that was killed\n" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no partial directory left behind
    best = open_study(open_storage_for(searched.url), "s").best_trial
    exported = load_export(out)
    card = exported.card
    assert card["study"]["name"] == "s"
    assert (card["study"]["trial"], card["study"]["value"]) == (best.number, best.value)
    assert (card["study"]["objective"], card["study"]["retrained"]) == ("balanced_accuracy", False)
    assert card["head_config"] == best.user_attrs["head_config"]
    assert card["validation_metrics"] == {h: {m: best.user_attrs[f"{h}_{m}"] for m in METRICS} for h in HEADS}
    assert card["cache_fingerprint"] == open_cache(searched.cache).fingerprint
    assert card["weights"] == "random:0"
    assert (card["kind"], card["base"]["base"], card["base"]["dim"]) == ("keras", "vggface", 512)
    assert card["base"] == {key: card["cache_fingerprint"][key] for key in card["base"]}
    assert set(card["code_version"]) == {"package", "git_commit", "git_dirty"}
    assert {"report/report.json", "report/confusion_age.png", "saved_model/saved_model.pb"} <= set(
        card["files"]
    )
    report = json.loads((out / "report" / "report.json").read_text())
    assert (report["count"], report["source"]["split"], report["source"]["from"]) == (4, "test", "cache")
    # The exported model's head is the searched head itself.
    reproduced = head_outputs(exported.head, open_cache(searched.cache).embeddings("test"))
    for head, values in stored_outputs(searched).items():
        np.testing.assert_array_equal(reproduced[head], values)


def test_export_best_retrain_rebuilds_the_trial_head(
    run_hpo: RunHpo, searched: Searched, tmp_path: Path
) -> None:
    best = open_study(open_storage_for(searched.url), "s").best_trial
    out = tmp_path / "retrained"
    code, _, err = run_hpo(*searched.args("s", out, "--trial", str(best.number), "--retrain"))
    assert code == 0, err
    assert f"retraining the head of trial {best.number} (2 epochs)" in err
    card = load_export(out).card
    assert (card["study"]["trial"], card["study"]["retrained"], card["study"]["seed"]) == (
        best.number,
        True,
        best.number,  # the study's seed 0 + trial number, as the worker trained it
    )
    assert card["head_config"] == best.user_attrs["head_config"]
    # Same config, seed and data on CPU: the retrained head matches the one the worker stored.
    assert card["validation_metrics"] == {h: {m: best.user_attrs[f"{h}_{m}"] for m in METRICS} for h in HEADS}
    reproduced = head_outputs(load_export(out).head, open_cache(searched.cache).embeddings("test"))
    for head, values in stored_outputs(searched, best.number).items():
        np.testing.assert_allclose(reproduced[head], values, rtol=0, atol=1e-6)


def test_export_best_study_without_complete_trial(
    run_hpo: RunHpo, capsys: pytest.CaptureFixture[str], searched: Searched, tmp_path: Path
) -> None:
    create_study(searched, "empty", capsys=capsys)
    code, stdout, err = run_hpo(*searched.args("empty", tmp_path / "out"))
    assert (code, stdout) == (2, "")
    assert err == "hpo: error: study 'empty' has no COMPLETE trial yet; run `hpo worker` first.\n"
    assert not (tmp_path / "out").exists()


def test_export_best_trial_without_stored_head_suggests_retrain(
    run_hpo: RunHpo, capsys: pytest.CaptureFixture[str], searched: Searched, tmp_path: Path
) -> None:
    study = create_study(searched, "nohead", "--seed", "5", capsys=capsys)
    config = {"layers": [{"units": 8, "activation": "relu", "dropout": 0.0}]}
    study.add_trial(optuna.trial.create_trial(value=0.9, user_attrs={"head_config": config}))
    code, _, err = run_hpo(*searched.args("nohead", tmp_path / "out"))
    assert code == 2
    assert err == (
        "hpo: error: trial 1 of study 'nohead' has no stored head (workers store only the head of each new "
        "best trial); add --retrain to rebuild it from its parameters with seed 6.\n"
    )


@pytest.mark.slow
def test_export_best_sigterm_removes_its_partial_export(
    hpo_env: dict[str, str], searched: Searched, tmp_path: Path
) -> None:
    command = [str(HPO), *searched.args("s", tmp_path / "export")]
    process = subprocess.Popen(
        command, env=hpo_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".export.partial-*/*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert (process.returncode, err.splitlines()[-1]) == (130, "hpo: aborted"), err
    assert list(tmp_path.iterdir()) == []


def test_export_best_refuses_weights_other_than_the_cache(
    run_hpo: RunHpo, searched: Searched, tmp_path: Path
) -> None:
    args = searched.args("s", tmp_path / "out")
    args[args.index("random:0")] = "random:1"
    code, _, err = run_hpo(*args)
    assert code == 2
    assert err == (
        f"hpo: error: the cache at {searched.cache} was embedded with other vggface settings: weights "
        "'random:0' (asked: 'random:1'). Pass the --weights (HPO_WEIGHTS) it was embedded with, or embed a "
        "new cache.\n"
    )


def test_export_best_pareto_study_lists_its_front(
    run_hpo: RunHpo, capsys: pytest.CaptureFixture[str], searched: Searched, tmp_path: Path
) -> None:
    study = create_study(searched, "pareto", "--objective", "pareto", capsys=capsys)
    for values in ([0.5, 0.2, 0.9], [0.3, 0.6, 0.8], [0.2, 0.1, 0.5]):  # the third is dominated
        study.add_trial(optuna.trial.create_trial(values=values))
    code, stdout, err = run_hpo(*searched.args("pareto", tmp_path / "out"))
    assert code == 2
    # Trial 0 is the space's paper point, queued but not run.
    assert stdout.splitlines() == [
        "Pareto front (trial: validation balanced accuracy of age, race, gender):",
        "  1: 0.5000, 0.2000, 0.9000",
        "  2: 0.3000, 0.6000, 0.8000",
    ]
    assert err == (
        "hpo: error: study 'pareto' is a three-objective (Pareto) study with no single best trial; pick one "
        "of its Pareto-front trials 1, 2 with --trial N.\n"
    )
    code, _, err = run_hpo(*searched.args("pareto", tmp_path / "out", "--trial", "0"))
    assert (code, err) == (
        2,
        "hpo: error: --trial 0: trial 0 of study 'pareto' is WAITING; pick a COMPLETE "
        "trial (`hpo status` lists them).\n",
    )


def test_export_best_refuses_a_non_empty_out(run_hpo: RunHpo, searched: Searched, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    code, _, err = run_hpo(*searched.args("s", tmp_path))
    assert code == 2
    assert (
        err == f"hpo: error: --out {tmp_path} exists and is not empty; choose a new directory or delete it.\n"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_export_best_needs_only_the_study_on_a_random_cache(
    run_hpo: RunHpo, searched: Searched, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    code, stdout, err = run_hpo(*searched.args("s", out, weights=False))
    assert code == 0, err
    assert stdout == f"{out}\n"
    card = load_export(out).card
    assert card["weights"] == "random:0"
    # The card records the loss weights: balanced on the cache's train labels (class-weight strength of
    # the exported trial), per class in vocabulary order; gender unweighted.
    labels = open_cache(searched.cache).labels("train")
    strength = card["head_config"]["class_weight_strength"]
    counts = np.bincount(labels[:, 0], minlength=9)
    balanced = [(len(labels) / (9 * n)) ** strength if n else 1.0 for n in counts]
    age = dict(zip(VOCABULARIES["age"], balanced, strict=True))
    assert card["class_weights"]["age"] == pytest.approx(age, rel=1e-6)
    assert list(card["class_weights"]["race"]) == list(VOCABULARIES["race"])
    assert card["class_weights"]["gender"] == "unweighted binary cross-entropy"
    assert card["compute_dtype"]["head_outputs"] == ["float32"]


def _recorded_cache(searched: Searched, tmp_path: Path, weights: Path) -> Path:
    """A copy of the searched cache whose manifest says it was embedded from the file ``weights``."""
    copy = tmp_path / "cache"
    shutil.copytree(searched.cache, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["fingerprint"]["weights"] = "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()
    manifest["weights_path"] = str(weights)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_cache_base_takes_the_recorded_weights_file_while_its_sha256_matches(
    searched: Searched, tmp_path: Path
) -> None:
    weights = tmp_path / "rcmalli_vggface_tf_notop_vgg16.h5"
    weights.write_bytes(b"the weights embedded with")  # resolving reads only its sha256
    cache = open_cache(_recorded_cache(searched, tmp_path, weights))
    recorded = cache.fingerprint["weights"]
    base = cache_base(cache, None)
    assert (base.weights, base.weights_path) == (recorded, str(weights))
    weights.write_bytes(b"other weights under the same name")
    fix = "Pass --weights PATH (or set HPO_WEIGHTS) to the weights with that sha256."
    with pytest.raises(WeightsError) as changed:
        cache_base(cache, None)
    assert str(changed.value) == (
        f"cannot find the base weights the cache at {cache.path} was embedded with ({recorded}): its "
        f"manifest records them at {weights}, which now holds other weights. {fix}"
    )
    weights.unlink()
    with pytest.raises(WeightsError) as gone:
        cache_base(cache, None)
    assert str(gone.value) == (
        f"cannot find the base weights the cache at {cache.path} was embedded with ({recorded}): its "
        f"manifest records them at {weights}, which no longer exists. {fix}"
    )
