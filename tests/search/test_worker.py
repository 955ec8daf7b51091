from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from support import HPO, Hpo

from search.cli import main
from search.errors import SetupError
from search.objective import TrialRunner
from search.records import StudyRecord
from search.storage import ResilientStorage
from search.study import open_storage_for, open_study
from search.worker import StopFlag, WorkerSpec, prepare, run_trials

pytestmark = pytest.mark.slow

HEADS_METRICS = [
    f"{head}_{metric}"
    for head in ("age", "race", "gender")
    for metric in (
        "accuracy", "balanced_accuracy", "macro_f1",
        "by_group", "group_min", "worst_group", "difference", "absent_groups",
    )
]  # fmt: skip
Start = Callable[..., subprocess.Popen[str]]


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def start_workers(hpo_env: dict[str, str], pg_url: str, tiny_cache: Path, tmp_path: Path) -> Iterator[Start]:
    """`start_workers(study, *args)`: `hpo worker` in its own process group, killed at teardown if alive."""
    started: list[subprocess.Popen[str]] = []

    def start(study: str, *args: str) -> subprocess.Popen[str]:
        command = [str(HPO), "worker", "--storage", pg_url, "--study", study, "--cache", str(tiny_cache)]
        command += ["--artifacts", str(tmp_path / "artifacts"), *args]
        process = subprocess.Popen(
            command,
            env=hpo_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def create(
    url: str,
    name: str,
    space: Path,
    cache: Path,
    *extra: str,
    budget: int,
    epochs: int,
    pruner: str,
    grace: int = 3,
) -> None:
    main([
        "study", "create", "--storage", url, "--study", name, "--space", str(space), "--cache", str(cache),
        "--budget", str(budget), "--epochs", str(epochs), "--pruner", pruner, "--patience", "0",
        "--heartbeat-interval", "1", "--grace-period", str(grace), *extra,
    ])  # fmt: skip


def in_process(
    url: str, name: str, cache_dir: Path, artifacts: Path
) -> tuple[StudyRecord, ResilientStorage, TrialRunner]:
    """What `run_worker` sets up before its trial loop, for a test that drives `run_trials` itself."""
    from model.train_data import TrainData

    record, cache = prepare(WorkerSpec(url, name, cache_dir, artifacts))
    runner = TrialRunner(record.space, TrainData.from_cache(cache), record.settings, artifacts, worker="test")
    return record, open_storage_for(url, record), runner


def trials(url: str, name: str) -> list[FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials()


def count(found: list[FrozenTrial], *states: TrialState) -> int:
    return sum(1 for t in found if t.state in states)


def finish(process: subprocess.Popen[str], timeout: float = 150) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def wait_for(condition: Callable[[], object], timeout: float = 90) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout} s")


def training_trial(url: str, name: str, *, before_epoch: int = 10**6) -> FrozenTrial | None:
    """A RUNNING trial that has reported an epoch but not ``before_epoch`` epochs (so it is mid-training)."""
    running = [
        t
        for t in trials(url, name)
        if t.state == TrialState.RUNNING and 0 < len(t.intermediate_values) < before_epoch
    ]
    return running[0] if running else None


def test_worker_three_processes_finish_budget(
    pg_url: str,
    study_name: str,
    tiny_space: Path,
    tiny_cache: Path,
    tmp_path: Path,
    paper_params: dict[str, object],
    start_workers: Start,
) -> None:
    create(pg_url, study_name, tiny_space, tiny_cache, budget=6, epochs=2, pruner="median")
    code, err = finish(start_workers(study_name, "--n-workers", "3"))
    assert code == 0, err
    found = trials(pg_url, study_name)
    assert 6 <= count(found, TrialState.COMPLETE, TrialState.PRUNED) <= 8
    assert count(found, TrialState.RUNNING, TrialState.FAIL) == 0
    assert found[0].params == paper_params and found[0].user_attrs["point"] == "paper"
    complete = [t for t in found if t.state == TrialState.COMPLETE]
    for trial in complete:
        assert sorted(trial.user_attrs) == sorted(
            [*HEADS_METRICS, "epochs_run", "head_config", "max_gap", "worker"]
            + (["head_artifact_id"] if "head_artifact_id" in trial.user_attrs else [])
            + (["point"] if trial.number == 0 else [])
        )
        assert trial.user_attrs["epochs_run"] == 2

    import numpy as np
    import tensorflow as tf

    from data.cache import open_cache
    from data.labels import VOCABULARIES
    from model.head import HeadConfig
    from model.metrics import head_metrics
    from search.artifacts import load_best_head

    study = optuna.load_study(study_name=study_name, storage=pg_url)
    head, config, best = load_best_head(study, tmp_path / "artifacts")
    top = max(t.value for t in complete if t.value is not None)
    assert (best.value, best.number) == (top, min(t.number for t in complete if t.value == top))
    assert config == HeadConfig.from_dict(best.user_attrs["head_config"])
    # The stored head is the winning head itself: it scores exactly what its trial recorded.
    cache = open_cache(tiny_cache)
    # Scored as training scored it (a tf.function: graph rewrites change bfloat16 rounding).
    outputs = tf.function(lambda x: head(x, training=False))(tf.constant(cache.embeddings("val")))
    predicted = {
        "age": np.argmax(outputs["age"], axis=1),
        "race": np.argmax(outputs["race"], axis=1),
        "gender": (np.asarray(outputs["gender"])[:, 0] >= 0.5).astype(np.int64),
    }
    for column, name in enumerate(("age", "race", "gender")):
        metrics = head_metrics(cache.labels("val")[:, column], predicted[name], len(VOCABULARIES[name]))
        assert metrics == {metric: best.user_attrs[f"{name}_{metric}"] for metric in metrics}


def test_worker_killed_trial_failed_by_heartbeat_and_retried(
    pg_url: str, study_name: str, tiny_space: Path, tiny_cache: Path, start_workers: Start
) -> None:
    create(pg_url, study_name, tiny_space, tiny_cache, budget=5, epochs=30, pruner="none")
    launcher = start_workers(study_name, "--n-workers", "2")
    victim = wait_for(lambda: training_trial(pg_url, study_name, before_epoch=15))
    assert isinstance(victim, FrozenTrial)
    os.kill(int(victim.user_attrs["worker"].split(":")[1].split("/")[0]), signal.SIGKILL)
    code, err = finish(launcher)
    assert code == 1 and "was killed by SIGKILL" in err, err
    found = trials(pg_url, study_name)
    assert found[victim.number].state == TrialState.FAIL
    [retry] = [t for t in found if t.system_attrs.get("failed_trial") == victim.number]
    assert (retry.state, retry.params) == (TrialState.COMPLETE, victim.params)
    assert 5 <= count(found, TrialState.COMPLETE) <= 6
    assert count(found, TrialState.RUNNING, TrialState.WAITING) == 0


def test_worker_carries_on_through_postgres_restart(
    pg_url: str, study_name: str, tiny_space: Path, tiny_cache: Path, start_workers: Start
) -> None:
    clusters = sorted(Path("/etc/postgresql").glob("*/main"))
    if not clusters:
        pytest.skip("no local PostgreSQL cluster under /etc/postgresql to restart")
    version = clusters[-1].parent.name
    # A grace period longer than the restart: no trial may be failed as stale, so none is recomputed.
    create(pg_url, study_name, tiny_space, tiny_cache, budget=6, epochs=2, pruner="none", grace=10)
    launcher = start_workers(study_name, "--n-workers", "2")
    wait_for(
        lambda: (
            count(trials(pg_url, study_name), TrialState.COMPLETE) >= 2 and training_trial(pg_url, study_name)
        )
    )
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True)
    code, err = finish(launcher)
    assert code == 0, err
    found = trials(pg_url, study_name)
    assert count(found, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING) == 0, err
    assert 6 <= count(found, TrialState.COMPLETE) <= 7
    assert all(t.value is not None and "age_accuracy" in t.user_attrs for t in found)


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_worker_stopped_mid_trial_exits_zero_and_leaves_nothing_running(
    pg_url: str, study_name: str, tiny_space: Path, tiny_cache: Path, start_workers: Start, how: str
) -> None:
    create(pg_url, study_name, tiny_space, tiny_cache, budget=50, epochs=30, pruner="none")
    launcher = start_workers(study_name, "--n-workers", "2")
    wait_for(lambda: training_trial(pg_url, study_name, before_epoch=15))
    if how == "sigterm":
        launcher.send_signal(signal.SIGTERM)
    else:
        # A terminal's Ctrl-C reaches the launcher and its children at once; the launcher forwards one
        # SIGTERM, which a child must not take as a second signal (that aborts its trial: exit 130).
        os.killpg(launcher.pid, signal.SIGINT)
    code, err = finish(launcher, timeout=60)
    assert code == 0, err
    # A clean stop is reported, not raised: one INFO line per cut-short trial, no Optuna traceback.
    assert "Traceback" not in err and "failed with" not in err and "exited" not in err, err
    assert 1 <= err.count("; queued again") <= 2, err
    found = trials(pg_url, study_name)
    assert count(found, TrialState.RUNNING) == 0
    failed = [t for t in found if t.state == TrialState.FAIL]
    requeued = [t for t in found if t.state == TrialState.WAITING]
    assert 1 <= len(failed) <= 2
    # Each trial the stop cut short is queued again with its parameters.
    assert {t.system_attrs["failed_trial"]: t.params for t in requeued} == {
        t.number: t.params for t in failed
    }


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def test_worker_sigterm_while_its_processes_start_exits_zero(
    pg_url: str, study_name: str, tiny_space: Path, tiny_cache: Path, start_workers: Start
) -> None:
    create(pg_url, study_name, tiny_space, tiny_cache, budget=50, epochs=30, pruner="none")
    launcher = start_workers(study_name, "--n-workers", "2")
    # The children still import TensorFlow (seconds) when the stop comes.
    wait_for(lambda: len(_children(launcher.pid)) >= 2, timeout=120)
    launcher.send_signal(signal.SIGTERM)
    code, err = finish(launcher, timeout=60)
    assert code == 0, err
    assert "killed" not in err and "exited" not in err, err
    # No trial began: the queued paper point still waits.
    assert [t.state for t in trials(pg_url, study_name)] == [TrialState.WAITING]


def test_worker_refuses_cache_of_another_study(
    hpo: Callable[..., subprocess.CompletedProcess[str]],
    pg_url: str,
    study_name: str,
    tiny_space: Path,
    tiny_cache: Path,
    other_cache: Path,
    tmp_path: Path,
) -> None:
    create(pg_url, study_name, tiny_space, tiny_cache, budget=2, epochs=1, pruner="none")
    args = ["--storage", pg_url, "--study", study_name, "--artifacts", str(tmp_path), "--gpus", "none"]
    result = hpo("worker", *args, "--cache", str(other_cache))
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"hpo: error: the cache at {other_cache} does not match study {study_name!r} -- weights: the cache "
        'has "synthetic:1", the study was created with "synthetic:0". Point --cache (HPO_CACHE) at the cache '
        "the study was created with."
    )
    result = hpo("worker", *args, "--cache", str(tmp_path / "absent"))
    assert (result.returncode, result.stderr.splitlines()[-1]) == (
        2,
        f"hpo: error: no embedding cache at {tmp_path / 'absent'} (no manifest.json); build one with "
        f"`hpo embed --cache {tmp_path / 'absent'}`.",
    )


def test_worker_gpus_naming_missing_gpu(
    hpo: Callable[..., subprocess.CompletedProcess[str]], pg_url: str, study_name: str
) -> None:
    result = hpo("worker", "--storage", pg_url, "--study", study_name, "--gpus", "3")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "hpo: error: --gpus 3 names GPU 3, but this machine has no GPU (nvidia-smi -L); pass GPUs it lists, "
        "all, or none.\n"
    )


def test_worker_fair_objective_with_max_gap_records_groups_and_constraints(
    pg_url: str, study_name: str, tiny_space: Path, tiny_cache: Path, start_workers: Start, hpo: Hpo
) -> None:
    extra = ("--objective", "fair", "--max-gap", "0.9")
    create(pg_url, study_name, tiny_space, tiny_cache, *extra, budget=4, epochs=2, pruner="none")
    code, err = finish(start_workers(study_name, "--n-workers", "2"))
    assert code == 0, err
    complete = [t for t in trials(pg_url, study_name) if t.state == TrialState.COMPLETE]
    assert len(complete) >= 4 and len({t.user_attrs["worker"] for t in complete}) >= 1
    for trial in complete:
        attrs = trial.user_attrs
        worst = [attrs[f"{head}_group_min"] for head in ("age", "race", "gender")]
        assert trial.values[0] == pytest.approx(sum(worst) / 3)  # the fair objective
        assert attrs["age_group_min"] == min(attrs["age_by_group"].values())
        # The tiny cache's race labels use 3 of the 7 groups: the other 4 are absent, never scored 0.
        assert attrs["age_absent_groups"] == ["East Asian", "Southeast Asian", "Indian", "Middle Eastern"]
        assert set(attrs["age_by_group"]) == {"White", "Black", "Latino_Hispanic"}
        assert attrs["max_gap"] == max(attrs[f"{head}_difference"] for head in ("age", "race", "gender"))
    sampled = [t for t in complete if t.number > 0]
    assert all(
        t.system_attrs["constraints"] == [pytest.approx(t.user_attrs["max_gap"] - 0.9)] for t in sampled
    )
    status = hpo("status", "--storage", pg_url, "--study", study_name)
    assert status.returncode == 0, status.stderr
    assert "worst      age " in status.stdout and "search     fair," in status.stdout


def test_worker_setup_failure_in_a_trial_stops_it_without_burning_the_budget(
    pg_url: str, study_name: str, tiny_space: Path, tiny_cache: Path, tmp_path: Path
) -> None:
    create(pg_url, study_name, tiny_space, tiny_cache, budget=4, epochs=1, pruner="none")
    store = tmp_path / "artifacts"
    record, storage, runner = in_process(pg_url, study_name, tiny_cache, store)
    # The store became a file after the start-up check, before the first best head was stored.
    store.write_text("not a directory")
    with pytest.raises(SetupError, match=rf"^cannot store the head of trial 0 in artifact store {store}: "):
        run_trials(
            open_study(storage, study_name), storage, runner, settings=record.settings, stop=StopFlag()
        )
    found = trials(pg_url, study_name)
    # The trial it broke is queued again with its parameters; nothing counts against the budget.
    assert [t.state for t in found] == [TrialState.FAIL, TrialState.WAITING]
    assert found[1].params == found[0].params and found[1].system_attrs["failed_trial"] == 0


class Forwarder:
    """A TCP port that forwards to PostgreSQL once `open()` is called; until then nothing listens there."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.server: socket.socket | None = None

    def open(self) -> None:
        self.server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self.server is not None
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:  # closed
                return
            upstream = socket.create_connection(("127.0.0.1", 5432))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


@contextlib.contextmanager
def awaiting_database(
    hpo_env: dict[str, str], port: int, pg_url: str, study: str, cache: Path, artifacts: Path
) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """`hpo worker` on PostgreSQL at ``port``, once it has said that nothing answers there and it waits;
    yields it and its stderr lines so far (complete once it has exited)."""
    url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{port}")
    command = [str(HPO), "worker", "--storage", url, "--study", study, "--cache", str(cache)]
    command += ["--artifacts", str(artifacts), "--gpus", "none"]
    process = subprocess.Popen(command, env=hpo_env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr or ()), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("unreachable" in line for line in lines), timeout=120)
        yield process, lines
        reader.join(timeout=10)
    finally:
        process.kill()


def test_worker_started_while_the_database_is_down_waits_for_it(
    hpo_env: dict[str, str], pg_url: str, study_name: str, tiny_space: Path, tiny_cache: Path, tmp_path: Path
) -> None:
    create(pg_url, study_name, tiny_space, tiny_cache, budget=2, epochs=1, pruner="none")
    forwarder = Forwarder()
    try:
        with awaiting_database(
            hpo_env, forwarder.port, pg_url, study_name, tiny_cache, tmp_path / "artifacts"
        ) as (process, lines):
            # The worker has found no database and waits (rather than exiting 2); then it comes up.
            assert process.poll() is None, "".join(lines)
            forwarder.open()
            code = process.wait(timeout=150)
    finally:
        forwarder.close()
    err = "".join(lines)
    assert code == 0, err
    assert f"study database at 127.0.0.1:{forwarder.port} unreachable" in err
    assert "waiting up to 600 s for it" in err
    assert count(trials(pg_url, study_name), TrialState.COMPLETE) == 2


def test_worker_stopped_while_it_waits_for_the_database_exits_zero(
    hpo_env: dict[str, str], pg_url: str, study_name: str, tiny_space: Path, tiny_cache: Path, tmp_path: Path
) -> None:
    create(pg_url, study_name, tiny_space, tiny_cache, budget=2, epochs=1, pruner="none")
    port = Forwarder().port  # nothing listens there
    with awaiting_database(hpo_env, port, pg_url, study_name, tiny_cache, tmp_path / "artifacts") as (
        process,
        lines,
    ):
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)  # not the 600 s the wait would last
    err = "".join(lines)
    assert code == 0, err
    stopped = "hpo worker: stopped while waiting for the study database; no trial ran"
    assert err.splitlines()[-1] == stopped, err
    assert not (tmp_path / "artifacts").exists()


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return True


def test_the_queued_paper_point_trains_in_full_where_every_other_trial_is_pruned(
    pg_url: str, study_name: str, tiny_space: Path, tiny_cache: Path, tmp_path: Path
) -> None:
    create(pg_url, study_name, tiny_space, tiny_cache, budget=3, epochs=3, pruner="hyperband")
    record, storage, runner = in_process(pg_url, study_name, tiny_cache, tmp_path / "artifacts")
    study = open_study(storage, study_name, pruner=AlwaysPrune())
    assert run_trials(study, storage, runner, settings=record.settings, stop=StopFlag()) == 3
    found = trials(pg_url, study_name)
    assert [t.state for t in found] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.PRUNED]
    assert found[0].user_attrs["point"] == "paper" and len(found[0].intermediate_values) == 3
