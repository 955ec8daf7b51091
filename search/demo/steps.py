"""The demo's steps: each a real ``hpo`` command in its own process, shown as the user would type it."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from model.bases import KERAS_BASE
from search.demo.layout import PORT_HOST, STUDY, DemoLayout, DemoOptions

Step = tuple[str, list[str]]  # (title, `hpo` arguments)


def search_steps(layout: DemoLayout, dataset: Path, options: DemoOptions) -> list[Step]:
    """Embed, create the study, search, show it: the steps before the exports."""
    cache = str(layout.cache)
    where = ["--workdir", str(layout.root), "--study", STUDY, "--cache", cache]
    embed = ["embed", "--dataset", str(dataset), "--cache", cache, "--base", options.base]
    embed += [*_weights(options), "--limit", str(options.limit)]
    embed += ["--augment-views", str(options.augment_views), "--batch-size", str(options.batch_size)]
    if options.base == KERAS_BASE:
        embed += ["--dtype", "bfloat16"]  # VGG16 on CPU: twice the float32 rate
    # No pruner: a pruned trial 0 would leave the closing table without the Table II head, and each trial
    # must train as long as the others for the comparison to be fair.
    study = ["study", "create", *where, "--budget", str(options.budget), "--epochs", str(options.epochs)]
    study += ["--patience", str(options.patience)]
    return [
        ("embed the images with the frozen base (reused when already complete)", embed),
        ("create the study (the paper's Table II head is trial 0)", [*study, "--pruner", "none"]),
        (
            f"search with {options.workers} worker process(es)",
            ["worker", *where, "--n-workers", str(options.workers)],
        ),
        ("show the study", ["status", "--workdir", str(layout.root), "--study", STUDY]),
    ]


def export_steps(layout: DemoLayout, options: DemoOptions, *, paper_head_stored: bool) -> list[Step]:
    """Export the best head and trial 0's, each with its report on the held-out test split.

    Workers store only the heads of new-best trials, so trial 0's is retrained from its parameters and
    seed (the same head on CPU) when it was not stored.
    """
    where = ["--workdir", str(layout.root), "--study", STUDY, "--cache", str(layout.cache)]
    where += _weights(options)
    paper = ["export-best", *where, "--trial", "0", *([] if paper_head_stored else ["--retrain"])]
    return [
        ("export the best head with its test report", ["export-best", *where, "--out", str(layout.export)]),
        (
            "export trial 0, the paper's Table II head, with its test report",
            [*paper, "--out", str(layout.paper_export)],
        ),
    ]


def _weights(options: DemoOptions) -> list[str]:
    return [] if options.weights is None else ["--weights", options.weights]


def paper_head_stored(layout: DemoLayout) -> bool:
    """Whether the workers stored trial 0's head (they store each new best trial's)."""
    from search.records import ARTIFACT_ATTR
    from search.study import open_storage_for, open_study

    study = open_study(open_storage_for(layout.storage_url), STUDY)
    return any(t.number == 0 and t.user_attrs.get(ARTIFACT_ATTR) for t in study.get_trials(deepcopy=False))


class StepFailed(Exception):
    """An ``hpo`` step (or the dashboard) exited non-zero; it has already said why on stderr."""

    def __init__(self, what: str, code: int) -> None:
        super().__init__(f"{what} failed with exit code {code}; its message is above.")
        self.code = code


class StepRunner:
    """Runs steps one after the other, numbered across calls and timed from the first."""

    def __init__(self, total: int, echo: Callable[[str], None], echo_err: Callable[[str], None]) -> None:
        self.total, self.echo, self.echo_err = total, echo, echo_err
        self.done = 0
        self.started = time.monotonic()

    def run(self, steps: Sequence[Step]) -> None:
        """Run each step, announcing it with its command line; StepFailed at the first that fails."""
        for title, args in steps:
            self.done += 1
            self.echo(f"\n[{self.done}/{self.total}] {title}  ({elapsed(self.started)})\n$ {display(args)}")
            code = run_step(args, self.echo_err)
            if code != 0:
                raise StepFailed(f"step {self.done} `{display(args)}`", code)


def display(args: Sequence[str]) -> str:
    """The step as the user would type it."""
    return "hpo " + shlex.join(args)


def run_step(args: Sequence[str], echo: Callable[[str], None]) -> int:
    """Run ``hpo args`` in a child process, its stdout as is, its stderr through ``echo``.

    Each step imports TensorFlow quietly itself (search.tfquiet), so its stderr holds only its own lines.
    """
    # -P: the working directory is not put on the import path, so a model.py or data/ there is not
    # imported instead of face-hpo's own packages.
    command = [sys.executable, "-P", "-m", "search.cli", *args]
    with subprocess.Popen(command, env=_child_env(), stderr=subprocess.PIPE, text=True, bufsize=1) as child:
        assert child.stderr is not None
        for line in child.stderr:
            echo(line.rstrip("\n"))
    return child.returncode


def _child_env() -> dict[str, str]:
    # Every setting is a flag; an HPO_* variable of the shell must not redirect a step elsewhere.
    env = {key: value for key, value in os.environ.items() if not key.startswith("HPO_")}
    return env | {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def dashboard_command(layout: DemoLayout, port: int) -> list[str]:
    """optuna-dashboard on the demo's study and stored heads, on loopback only."""
    program = Path(sys.executable).with_name("optuna-dashboard")
    return [
        str(program) if program.exists() else "optuna-dashboard",
        layout.storage_url,
        "--artifact-dir",
        str(layout.artifacts.resolve()),
        "--host",
        PORT_HOST,
        "--port",
        str(port),
    ]


def serve_dashboard(layout: DemoLayout, port: int, echo: Callable[[str], None]) -> None:
    """Serve optuna-dashboard on the study until Ctrl-C (then return); StepFailed if it exits by itself."""
    command = dashboard_command(layout, port)
    echo(f"\n$ {shlex.join(command)}\ndashboard: http://{PORT_HOST}:{port}/dashboard  (Ctrl-C stops it)")
    # The server ignores SIGINT (an ignored signal stays ignored across exec), so a terminal's Ctrl-C,
    # which reaches the whole process group, stops the demo, which then ends the server quietly: the
    # server itself answers SIGINT with a traceback.
    with subprocess.Popen(command, env=_child_env(), preexec_fn=_ignore_sigint) as server:
        try:
            code = server.wait()
        except KeyboardInterrupt:
            server.terminate()
            server.wait()
            echo("hpo demo: dashboard stopped")
            return
    raise StepFailed("the dashboard", code)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def elapsed(started: float) -> str:
    """Minutes and seconds since ``started`` (a ``time.monotonic()`` reading)."""
    minutes, seconds = divmod(round(time.monotonic() - started), 60)
    return f"{minutes}:{seconds:02d}"
