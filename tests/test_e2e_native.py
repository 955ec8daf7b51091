"""The compose topology, natively: PostgreSQL, the embed and study-init one-shots, two workers and
optuna-dashboard as processes on the fixture's real images; then headless Chromium renders the study page.

The screenshot is kept at work/e2e/dashboard.png (git-ignored), where CI keeps it in the workspace.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import FIXTURE, REPO, tiny_space_text

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SCREENSHOT = REPO / "work" / "e2e" / "dashboard.png"
CHROMIUM = Path("/usr/bin/chromium")
BIN = Path(sys.executable).parent
BUDGET = 8
EMBED_FLAGS = ("--dtype", "bfloat16", "--batch-size", "4", "--limit", "8")  # 8 rows per split
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--window-size=1400,900",
    "--virtual-time-budget=15000",  # lets the single-page app fetch the API and draw before the capture
)

METRIC_ATTRS = {
    f"{head}_{metric}"
    for head in ("age", "race", "gender")
    for metric in ("accuracy", "balanced_accuracy", "macro_f1", "group_min", "difference")
}
# The per-group user attributes the dashboard shows beside the metrics (by_group is a JSON object).
GROUP_ATTRS = {f"{head}_{name}" for head in ("age", "race", "gender") for name in ("by_group", "worst_group")}

# One hidden layer of 16-64 units, with its own "paper" point: each trial trains in a few seconds.
SPACE = tiny_space_text("e2e", units=(16, 64, 16), batch_sizes=(4, 8))
PAPER_PARAMS = {
    "n_layers": "1",
    "units_0": "48",
    "activation_0": "tanh",
    "dropout_0": "0.1",
    "learning_rate": "0.002",
    "batch_size": "4",
    "class_weight_strength": "1.0",
    "optimizer": "adam",
}


@dataclass(frozen=True)
class Topology:
    """The running dashboard and the study the workers filled."""

    dashboard: str  # base URL
    study: str
    study_id: int
    detail: dict[str, Any]  # GET /api/studies/<id> once every trial had finished


def _env(settings: dict[str, str]) -> dict[str, str]:
    """This shell's environment with the service's HPO_* settings in place of any of its own."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HPO_")}
    return env | {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"} | settings


@pytest.fixture(scope="module")
def database(fresh_database: Callable[[str], AbstractContextManager[str]]) -> Iterator[str]:
    """A fresh PostgreSQL database ``hpo_e2e_<random>``, dropped at the end."""
    with fresh_database("hpo_e2e") as url:
        yield url


def _hpo(args: list[str], settings: dict[str, str]) -> None:
    done = subprocess.run(
        [str(BIN / "hpo"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(settings),
        check=False,
    )
    assert done.returncode == 0, f"hpo {args[0]} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"


def _start(
    argv: list[str], settings: dict[str, str], log: Path, started: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    # Its own session, so the teardown can end the process and every child it spawned.
    with log.open("wb") as output:
        process = subprocess.Popen(
            argv, stdout=output, stderr=subprocess.STDOUT, env=_env(settings), start_new_session=True
        )
    started.append(process)
    return process


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        # The whole group: a child outlives a parent killed alone. Gone already: nothing to do.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _finished_study(dashboard: str, study: str, *, timeout: float) -> tuple[int, dict[str, Any]]:
    """Poll the dashboard's API until it lists ``study`` with every trial finished."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            listed = {
                s["study_name"]: s["study_id"] for s in _get(f"{dashboard}/api/studies")["study_summaries"]
            }
            if study in listed:
                detail = _get(f"{dashboard}/api/studies/{listed[study]}")
                states = [trial["state"] for trial in detail["trials"]]
                if len(states) >= BUDGET and set(states) <= {"Complete", "Pruned"}:
                    return listed[study], detail
        except (urllib.error.URLError, ConnectionError):
            pass  # the dashboard is still starting
        assert time.monotonic() < deadline, f"the dashboard did not show {BUDGET} finished trials of {study}"
        time.sleep(1.0)


@pytest.fixture(scope="module")
def topology(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    """embed -> study-init -> dashboard + two workers, as the compose services run them."""
    work = tmp_path_factory.mktemp("e2e")
    space = work / "space.toml"
    space.write_text(SPACE, encoding="utf-8")
    study = f"e2e-{secrets.token_hex(3)}"
    cache, artifacts = str(work / "cache"), str(work / "artifacts")
    search = {"HPO_STORAGE": database, "HPO_STUDY": study, "HPO_CACHE": cache, "HPO_ARTIFACTS": artifacts}
    images = {"HPO_DATASET": str(FIXTURE), "HPO_CACHE": cache, "HPO_WEIGHTS": "random:0"}
    _hpo(["embed", "--augment-views", "1", *EMBED_FLAGS], images)
    _hpo(["study", "create", "--space", str(space), "--budget", str(BUDGET), "--epochs", "2"], search)
    port = _free_port()
    dashboard = f"http://127.0.0.1:{port}"
    server = [str(BIN / "optuna-dashboard"), database, "--host", "127.0.0.1", "--port", str(port)]
    started: list[subprocess.Popen[bytes]] = []
    try:
        _start([*server, "--artifact-dir", artifacts], {}, work / "dashboard.log", started)
        # As two machines' workers: each with its own index, so their samplers draw differently.
        workers = [
            _start(
                [str(BIN / "hpo"), "worker", "--gpus", "all", "--first-index", str(index)],
                search,
                work / f"worker-{index}.log",
                started,
            )
            for index in range(2)
        ]
        for index, worker in enumerate(workers):
            code = worker.wait(timeout=150)
            log = (work / f"worker-{index}.log").read_text(errors="replace")
            assert code == 0, f"worker {index} exited {code}:\n{log}"
        study_id, detail = _finished_study(dashboard, study, timeout=30)
        yield Topology(dashboard, study, study_id, detail)
    finally:
        _stop(started)


def _attrs(trial: dict[str, Any]) -> dict[str, str]:
    return {attr["key"]: attr["value"] for attr in trial["user_attrs"]}


def test_dashboard_api_lists_trials_with_per_head_attributes(topology: Topology) -> None:
    trials = topology.detail["trials"]
    # Each worker starts a trial while fewer than BUDGET are finished or running: one may overshoot.
    assert BUDGET <= len(trials) <= BUDGET + 1
    assert [t["number"] for t in trials] == list(range(len(trials)))
    assert {p["name"]: p["param_external_value"] for p in trials[0]["params"]} == PAPER_PARAMS
    complete = [t for t in trials if t["state"] == "Complete"]
    assert complete
    for trial in complete:
        attrs = _attrs(trial)
        assert set(attrs) >= METRIC_ATTRS
        assert all(0.0 <= float(attrs[key]) <= 1.0 for key in METRIC_ATTRS)
    # "<host>:<pid>/<index>": both workers ran trials of the one study.
    assert {_attrs(t)["worker"].rpartition("/")[2] for t in trials} == {"0", "1"}
    best = topology.detail["best_trials"][0]
    assert _attrs(best)["head_artifact_id"] == best["artifacts"][0]["artifact_id"]
    assert {a["key"] for a in topology.detail["union_user_attrs"]} >= METRIC_ATTRS | GROUP_ATTRS | {"max_gap"}


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)


def test_dashboard_page_renders_study_in_chromium(topology: Topology, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does) to see the dashboard page"
        )
    page = f"{topology.dashboard}/dashboard/studies/{topology.study_id}"
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    shot = _chromium(tmp_path / "profile", f"--screenshot={SCREENSHOT}", page)
    assert shot.returncode == 0, shot.stderr
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = _chromium(tmp_path / "profile", "--dump-dom", page)
    assert dom.returncode == 0, dom.stderr
    # The app bar's title is rendered by the single-page app from the API: proof the page drew the study.
    assert f">{topology.study} (id={topology.study_id})<" in dom.stdout
