"""The demo flow: the whole service on one machine, with SQLite, a random base and a few real images.

Each step runs the real ``hpo`` command in its own process, as the compose services do, and its command
line is shown so the user can rerun any step by hand. A rerun reuses the finished embedding cache and
starts the ``demo`` study afresh: the previous study database, stored heads, export and report are
deleted first (they all live in the demo directory, which the demo owns).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from data.errors import ConfigError

STUDY = "demo"
WEIGHTS = "random:0"
PORT_HOST = "127.0.0.1"  # where optuna-dashboard listens by default
REPO_ROOT = Path(__file__).resolve().parents[1]  # the demo runs from a checkout (`make demo`)
SHARED_FAIRFACE = REPO_ROOT.parent / "shared" / "fairface"
FIXTURE_FAIRFACE = REPO_ROOT / "tests" / "fixtures" / "fairface"
LABEL_FILE = "fairface_label_train.csv"
WEIGHTS_NOTE = (
    f"note: the base has random weights ({WEIGHTS}), so the demo's accuracies mean nothing. Real runs need "
    "the VGG-Face weights file rcmalli_vggface_tf_notop_vgg16.h5: hpo embed --weights PATH (or HPO_WEIGHTS)."
)


@dataclass(frozen=True)
class DemoOptions:
    """How big the demo is: small enough to finish in a few minutes on two CPU cores."""

    limit: int = 100  # rows per split of a full FairFace root (the fixture has fewer)
    budget: int = 8  # trials, across both workers
    epochs: int = 5
    workers: int = 2
    port: int = 8080  # the dashboard's, checked free before any work starts
    batch_size: int = 16  # images per base forward pass


@dataclass(frozen=True)
class Dataset:
    """The FairFace root the demo embeds, and how to name it to the user."""

    root: Path
    description: str


@dataclass(frozen=True)
class DemoLayout:
    """Where each output goes, all under the demo directory."""

    root: Path
    cache: Path

    @property
    def database(self) -> Path:
        return self.root / "study.db"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def storage_url(self) -> str:
        return f"sqlite:///{self.database.resolve()}"


def choose_dataset(given: Path | None) -> Dataset:
    """``given`` (--dataset / HPO_DATASET), else ../shared/fairface beside the checkout, else its fixture."""
    if given is not None:
        return Dataset(given, f"{given} (from --dataset / HPO_DATASET)")
    if (SHARED_FAIRFACE / LABEL_FILE).is_file():
        return Dataset(SHARED_FAIRFACE, f"the real FairFace images in {_shown(SHARED_FAIRFACE)}")
    if (FIXTURE_FAIRFACE / LABEL_FILE).is_file():
        return Dataset(
            FIXTURE_FAIRFACE,
            f"the repository's fixture {_shown(FIXTURE_FAIRFACE)} (a few real FairFace images, CC BY 4.0)",
        )
    raise ConfigError(
        f"no FairFace images found: neither {SHARED_FAIRFACE} nor the checkout's fixture {FIXTURE_FAIRFACE} "
        "exists (the demo runs from a git checkout); pass --dataset ROOT or set HPO_DATASET."
    )


def layout_for(demo_dir: Path, dataset: Path, limit: int) -> DemoLayout:
    """The demo's paths; the cache is named for its dataset and limit, so switching keeps both caches."""
    key = hashlib.sha256(str(dataset.resolve()).encode()).hexdigest()[:8]
    return DemoLayout(demo_dir, demo_dir / "caches" / f"{dataset.resolve().name}-{key}-limit{limit}")


def check_writable(directory: Path) -> None:
    """Create ``directory`` and a file in it, or raise ConfigError saying why it is not writable."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(
            f"work directory {directory} is not writable ({reason}); pass --workdir DIR "
            "(or set HPO_WORKDIR=DIR) with a directory you can write to."
        ) from None


def check_port(port: int) -> None:
    """Raise ConfigError, naming a free port to use instead, when ``port`` cannot be listened on."""
    if not _port_free(port):
        spare = next((p for p in range(port + 1, min(port + 100, 65536)) if _port_free(p)), None)
        instead = f"--port {spare}" if spare is not None else "--port N with a free port"
        raise ConfigError(
            f"port {port} on {PORT_HOST} is taken, so the dashboard could not listen there; pass "
            f"{instead} (with make: make demo DEMO_ARGS='{instead}')."
        )


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the dashboard's server does, so a port left in TIME_WAIT still counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((PORT_HOST, port))
        except OSError:
            return False
    return True


def reset_outputs(layout: DemoLayout) -> list[str]:
    """Delete the previous run's study, heads, export and report (the cache stays); the names removed."""
    removed = []
    for path in (layout.database, layout.artifacts, layout.export, layout.report):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(path.name)
    for suffix in ("-journal", "-wal", "-shm"):
        layout.database.with_name(layout.database.name + suffix).unlink(missing_ok=True)
    return removed


def demo_steps(layout: DemoLayout, dataset: Path, options: DemoOptions) -> list[tuple[str, list[str]]]:
    """(title, ``hpo`` arguments) of each step, in order."""
    cache, export = str(layout.cache), str(layout.export)
    where = ["--workdir", str(layout.root), "--study", STUDY, "--cache", cache]
    embed = ["embed", "--dataset", str(dataset), "--cache", cache, "--weights", WEIGHTS]
    embed += ["--dtype", "bfloat16", "--batch-size", str(options.batch_size), "--limit", str(options.limit)]
    search = ["--budget", str(options.budget), "--epochs", str(options.epochs)]
    evaluate = ["evaluate", "--model", export, "--cache", cache, "--split-name", "val"]
    return [
        ("embed the images with the frozen base (reused when already complete)", embed),
        ("create the study (the paper's head is trial 0)", ["study", "create", *where, *search]),
        (
            f"search with {options.workers} worker process(es)",
            ["worker", *where, "--n-workers", str(options.workers)],
        ),
        ("show the study", ["status", "--workdir", str(layout.root), "--study", STUDY]),
        (
            "export the best head on the base, with its test report",
            ["export-best", *where, "--weights", WEIGHTS, "--out", export],
        ),
        ("evaluate the export on the validation split", [*evaluate, "--out", str(layout.report)]),
    ]


class StepFailed(Exception):
    """An ``hpo`` step exited non-zero; it has already said why on stderr."""

    def __init__(self, number: int, args: Sequence[str], code: int) -> None:
        super().__init__(
            f"step {number} `{display(args)}` failed with exit code {code}; its message is above."
        )
        self.code = code


def run_steps(
    steps: Sequence[tuple[str, list[str]]], echo: Callable[[str], None], echo_err: Callable[[str], None]
) -> str:
    """Run each step, announcing it with its command line; the time they took all together."""
    started = time.monotonic()
    for number, (title, args) in enumerate(steps, start=1):
        echo(f"\n[{number}/{len(steps)}] {title}  ({elapsed(started)})\n$ {display(args)}")
        code = run_step(args, echo_err)
        if code != 0:
            raise StepFailed(number, args, code)
    return elapsed(started)


def display(args: Sequence[str]) -> str:
    """The step as the user would type it."""
    return "hpo " + shlex.join(args)


def run_step(args: Sequence[str], echo: Callable[[str], None]) -> int:
    """Run ``hpo args`` in a child process, its stdout as is, its stderr through ``echo``.

    Each step imports TensorFlow quietly itself (search.tfquiet), so its stderr holds only its own lines.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("HPO_")}
    # Every setting is a flag; an HPO_* variable of the shell must not redirect a step elsewhere.
    env |= {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    # -P: the working directory is not put on the import path, so a model.py or data/ there is not
    # imported instead of face-hpo's own packages.
    command = [sys.executable, "-P", "-m", "search.cli", *args]
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, bufsize=1) as child:
        assert child.stderr is not None
        for line in child.stderr:
            echo(line.rstrip("\n"))
    return child.returncode


def outputs_summary(layout: DemoLayout, options: DemoOptions) -> list[str]:
    """Where each output went and how to open the dashboard on the study."""
    pngs = [
        *sorted(layout.export.glob("report/confusion_*.png")),
        *sorted(layout.report.glob("confusion_*.png")),
    ]
    return [
        "outputs:",
        f"  embedding cache    {_shown(layout.cache)}",
        f"  study database     {_shown(layout.database)}  (study {STUDY!r})",
        f"  best-trial heads   {_shown(layout.artifacts)}",
        f"  exported model     {_shown(layout.export)}  (model.keras, saved_model/, model_card.json)",
        f"  test report        {_shown(layout.export / 'report' / 'report.md')}",
        f"  validation report  {_shown(layout.report / 'report.md')}",
        "  confusion matrices " + f"\n{'':21}".join(_shown(png) for png in pngs),
        "open the dashboard on the study:",
        f"  {_program('optuna-dashboard')} {layout.storage_url} --artifact-dir {layout.artifacts.resolve()} "
        f"--port {options.port}",
        f"  then browse http://{PORT_HOST}:{options.port}/dashboard",
        f"predict with the export:  {_program('hpo')} predict --model {_shown(layout.export)} IMAGE.jpg",
    ]


def _program(name: str) -> str:
    """How to call an installed program: its path in this environment, which may not be on PATH."""
    path = Path(sys.executable).with_name(name)
    return _shown(path) if path.exists() else name


def _shown(path: Path) -> str:
    """``path`` relative to the current directory when inside it, else absolute."""
    absolute = path.resolve()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def elapsed(started: float) -> str:
    """Minutes and seconds since ``started`` (a ``time.monotonic()`` reading)."""
    minutes, seconds = divmod(round(time.monotonic() - started), 60)
    return f"{minutes}:{seconds:02d}"


def run_demo(
    workdir: Path,
    dataset: Path | None,
    options: DemoOptions,
    echo: Callable[[str], None],
    echo_err: Callable[[str], None],
) -> None:
    """`hpo demo`: every step in ``workdir/demo`` on ``dataset`` (see `choose_dataset`), with a summary of
    where each output went; StepFailed when a step fails (it has said why on stderr)."""
    check_port(options.port)
    check_writable(workdir / "demo")
    chosen = choose_dataset(dataset)
    layout = layout_for(workdir / "demo", chosen.root, options.limit)
    echo(f"hpo demo: dataset: {chosen.description}, at most {options.limit} rows per split")
    echo(WEIGHTS_NOTE)
    removed = reset_outputs(layout)
    if removed:
        echo(f"hpo demo: starting afresh: removed the last run's {', '.join(removed)}; the cache is kept")
    took = run_steps(demo_steps(layout, chosen.root, options), echo, echo_err)
    echo(f"\nhpo demo: finished in {took} on {chosen.description}")
    for line in outputs_summary(layout, options):
        echo(line)
    echo(WEIGHTS_NOTE)
