"""`hpo demo`: its bad inputs (one line, exit 2, nothing written), its reset, and one smallest full run."""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from support import FIXTURE, Hpo

from search.demo import DemoLayout, layout_for, reset_outputs, run_step

SMALLEST = ("--limit", "8", "--budget", "2", "--epochs", "1")  # 24 images, a trial per worker


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something listens on, as a running server would."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])


def test_demo_port_taken_exits_2_naming_a_free_port(hpo: Hpo, tmp_path: Path, taken_port: int) -> None:
    done = hpo("demo", "--workdir", str(tmp_path), "--port", str(taken_port))
    assert done.returncode == 2
    assert done.stdout == ""
    match = re.fullmatch(
        rf"hpo: error: port {taken_port} on 127\.0\.0\.1 is taken, so the dashboard could not listen there; "
        r"pass --port (\d+) \(with make: make demo DEMO_ARGS='--port \1'\)\.\n",
        done.stderr,
    )
    assert match is not None, done.stderr
    assert int(match[1]) > taken_port
    assert list(tmp_path.iterdir()) == []


def test_demo_workdir_under_a_file_exits_2(hpo: Hpo, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n", encoding="utf-8")
    done = hpo("demo", "--workdir", str(blocker), "--port", str(_free_port()))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        f"hpo: error: work directory {blocker}/demo is not writable (Not a directory); pass --workdir DIR "
        "(or set HPO_WORKDIR=DIR) with a directory you can write to.\n"
    )


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root writes into a read-only directory; the file case covers it"
)
def test_demo_read_only_workdir_exits_2(hpo: Hpo, tmp_path: Path) -> None:
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    done = hpo("demo", "--workdir", str(read_only), "--port", str(_free_port()))
    assert done.returncode == 2
    assert done.stderr == (
        f"hpo: error: work directory {read_only}/demo is not writable (Permission denied); pass "
        "--workdir DIR (or set HPO_WORKDIR=DIR) with a directory you can write to.\n"
    )


def test_demo_failing_step_exits_with_its_code(hpo: Hpo, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-root"
    done = hpo("demo", "--workdir", str(tmp_path), "--dataset", str(missing), "--port", str(_free_port()))
    assert done.returncode == 2
    child, demo = done.stderr.splitlines()
    assert child.startswith(f"hpo: error: FairFace root {missing} does not exist or is not a directory; ")
    embed = layout_for(tmp_path / "demo", missing, 100)
    assert demo == (
        f"hpo demo: step 1 `hpo embed --dataset {missing} --cache {embed.cache} --weights random:0 "
        "--dtype bfloat16 --batch-size 16 --limit 100` failed with exit code 2; its message is above."
    )


def test_layout_for_names_the_cache_for_dataset_and_limit(tmp_path: Path) -> None:
    first = layout_for(tmp_path, FIXTURE, 100)
    assert first.cache.parent == tmp_path / "caches"
    assert first.cache.name.startswith("fairface-") and first.cache.name.endswith("-limit100")
    assert layout_for(tmp_path, FIXTURE, 100) == first
    assert layout_for(tmp_path, FIXTURE, 8).cache != first.cache
    assert layout_for(tmp_path, tmp_path / "fairface", 100).cache != first.cache


def test_reset_outputs_keeps_only_the_cache(tmp_path: Path) -> None:
    layout = DemoLayout(tmp_path, tmp_path / "caches" / "c")
    for folder in (layout.cache, layout.artifacts, layout.export / "report", layout.report):
        folder.mkdir(parents=True)
        (folder / "x").write_text("x", encoding="utf-8")
    layout.database.write_text("db", encoding="utf-8")
    tmp_path.joinpath("study.db-journal").write_text("j", encoding="utf-8")
    assert reset_outputs(layout) == ["study.db", "artifacts", "export", "report"]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "caches",
        "caches/c",
        "caches/c/x",
    ]


def test_demo_smallest_run_writes_every_output(hpo: Hpo, tmp_path: Path) -> None:
    port = _free_port()
    where = ["--workdir", str(tmp_path), "--dataset", str(FIXTURE), "--port", str(port)]
    done = hpo("demo", *where, *SMALLEST, timeout=300)
    assert done.returncode == 0, done.stderr
    demo = tmp_path / "demo"
    layout = layout_for(demo, FIXTURE, 8)
    lines = done.stdout.splitlines()
    assert (
        lines[0] == f"hpo demo: dataset: {FIXTURE} (from --dataset / HPO_DATASET), at most 8 rows per split"
    )
    dashboard = Path(sys.executable).with_name("optuna-dashboard")
    assert lines[lines.index("open the dashboard on the study:") + 1].endswith(
        f"{dashboard.name} sqlite:///{demo}/study.db --artifact-dir {demo}/artifacts --port {port}"
    )
    assert '"complete": true' in (layout.cache / "manifest.json").read_text(encoding="utf-8")
    study = optuna.load_study(study_name="demo", storage=layout.storage_url)
    assert len(study.trials) == 2
    assert {t.state for t in study.trials} <= {
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
    }
    assert len(list(layout.artifacts.rglob("*"))) >= 1
    for name in ("model.keras", "saved_model/saved_model.pb", "model_card.json", "report/report.md"):
        assert (layout.export / name).is_file(), name
    for report in (layout.export / "report", layout.report):
        assert sorted(p.name for p in report.glob("*.png")) == [
            "confusion_age.png",
            "confusion_gender.png",
            "confusion_race.png",
        ]
        assert all(str(png) in done.stdout for png in report.glob("*.png"))
    assert (layout.report / "report.json").is_file()


def test_demo_step_ignores_modules_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A step is `python -P -m search.cli`: a model.py (or data/) where the user stands is not imported.
    (tmp_path / "model.py").write_text("raise SystemExit('the wrong model module was imported')\n")
    (tmp_path / "search.py").write_text("raise SystemExit('the wrong search module was imported')\n")
    monkeypatch.chdir(tmp_path)
    lines: list[str] = []
    assert run_step(["study", "--help"], lines.append) == 0
    assert lines == []
