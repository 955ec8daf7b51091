"""What several test modules share: where things are, the `hpo` executable, and small file makers.

On pytest's ``pythonpath`` (pyproject.toml), so a test module imports it as ``from support import ...``;
fixtures stay in the conftest files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from data.shards import build_record, finalize, shard_grid, write_shard

REPO = Path(__file__).resolve().parents[2]
# 56 real FairFace crops with their label rows (FairFace, Kärkkäinen & Joo, CC BY 4.0).
FIXTURE = REPO / "tests" / "fixtures" / "fairface"
# The real FairFace sample beside the checkout (full label files, 10,000 images), or $FAIRFACE_ROOT.
SHARED_FAIRFACE = Path(os.environ.get("FAIRFACE_ROOT", REPO.parent / "shared" / "fairface"))
HPO = Path(sys.executable).with_name("hpo")  # the installed console script

RunHpo = Callable[..., tuple[int, str, str]]  # the `run_hpo` fixture: `hpo ARGS` in-process
Hpo = Callable[..., "subprocess.CompletedProcess[str]"]  # the `hpo` fixture: `hpo ARGS` in a subprocess


def hpo_env() -> dict[str, str]:
    """The environment for `hpo` subprocesses: no HPO_* settings leaking in, TensorFlow quiet and on one
    thread pool thread (several workers share the test machine's few cores)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HPO_")}
    quiet = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    return env | quiet | {"PYTHONUNBUFFERED": "1"}


DIM = 16


def tiny_space_text(
    name: str = "tiny", *, units: tuple[int, int, int] = (8, 32, 8), batch_sizes: tuple[int, int] = (16, 32)
) -> str:
    """A space of one hidden layer (``units`` = low, high, step): a trial trains in about a second. Its
    "paper" point is the widest-but-one layer at the smaller batch size."""
    low, high, step = units
    return f"""\
format_version = 1
name = "{name}"

[params.n_layers]
low = 1
high = 1

[params.units]
low = {low}
high = {high}
step = {step}

[params.activation]
choices = ["relu", "tanh"]

[params.dropout]
low = 0.0
high = 0.2
step = 0.1

[params.learning_rate]
low = 1e-3
high = 1e-2
log = true

[params.batch_size]
choices = [{batch_sizes[0]}, {batch_sizes[1]}]

[params.class_weight_strength]
low = 0.0
high = 1.0
step = 0.5

[params.optimizer]
choices = ["adam"]

[points.paper]
layers = [{{ units = {high - step}, activation = "tanh", dropout = 0.1 }}]
learning_rate = 0.002
batch_size = {batch_sizes[0]}
class_weight_strength = 1.0
optimizer = "adam"
"""


TINY_SPACE = tiny_space_text()
PAPER_PARAMS = {
    "n_layers": 1,
    "units_0": 24,
    "activation_0": "tanh",
    "dropout_0": 0.1,
    "learning_rate": 0.002,
    "batch_size": 16,
    "class_weight_strength": 1.0,
    "optimizer": "adam",
}


def write_tiny_cache(path: Path, *, seed: int, train: int = 96, val: int = 48) -> Path:
    """A finished cache of random embeddings whose labels depend on them (so training has signal)."""
    rng = np.random.default_rng(seed)
    counts, views = {"train": train, "val": val}, {"train": 2, "val": 1}
    fingerprint = {"weights": f"synthetic:{seed}", "dim": DIM, "split": "synthetic"}
    build = build_record(fingerprint, counts=counts, views=views, shard_size=64, batch_size=16)
    clean = {split: rng.standard_normal((n, DIM)).astype(np.float32) for split, n in counts.items()}
    projection = rng.standard_normal((DIM, 3))
    labels = {}
    for split, x in clean.items():
        scores = x @ projection
        labels[split] = np.stack(
            [np.digitize(scores[:, 0], [-1, 0, 1]), np.digitize(scores[:, 1], [-0.5, 0.5]), scores[:, 2] > 0],
            axis=1,
        ).astype(np.int8)
    for shard in shard_grid(build):
        rows = list(range(shard.start, shard.stop))
        noise = 0.1 * shard.view * rng.standard_normal((len(rows), DIM)).astype(np.float32)
        files = [f"{shard.split}/{row + 1}.jpg" for row in rows]
        record = {"files": files, "rows": rows, "skipped": []}
        write_shard(path, build, shard, clean[shard.split][rows] + noise, record)
    finalize(path, build, labels)
    return path


def create_args(url: str, name: str, space: Path, cache: Path, *extra: str) -> list[str]:
    """`hpo study create` arguments for a 4-trial, 2-epoch study with a fast heartbeat."""
    return [
        "study", "create", "--storage", url, "--study", name, "--space", str(space), "--cache", str(cache),
        "--budget", "4", "--epochs", "2", "--heartbeat-interval", "1", "--grace-period", "3", *extra,
    ]  # fmt: skip
