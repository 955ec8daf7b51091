"""Fixtures of the search tests: a fresh PostgreSQL database per test run, a tiny cache, a tiny space, and
`hpo` run in a subprocess or in this process."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest

from data.cache import build_record, finalize, shard_grid, write_shard
from search.cli import main

HPO = Path(sys.executable).with_name("hpo")
DIM = 16

# One hidden layer of 8-32 units: a trial trains in about a second. Its "paper" point is small too.
TINY_SPACE = """\
format_version = 1
name = "tiny"

[params.n_layers]
low = 1
high = 1

[params.units]
low = 8
high = 32
step = 8

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
choices = [16, 32]

[params.class_weight_strength]
low = 0.0
high = 1.0
step = 0.5

[params.optimizer]
choices = ["adam"]

[points.paper]
layers = [{ units = 24, activation = "tanh", dropout = 0.1 }]
learning_rate = 0.002
batch_size = 16
class_weight_strength = 1.0
optimizer = "adam"
"""
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


@pytest.fixture(scope="session")
def pg_url(fresh_database: Callable[[str], AbstractContextManager[str]]) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test run, dropped at the end."""
    with fresh_database("hpo_test") as url:
        yield url


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


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 96 + 48 row cache of 16-d embeddings (two training views)."""
    return write_tiny_cache(tmp_path_factory.mktemp("cache"), seed=0)


@pytest.fixture(scope="session")
def other_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache like `tiny_cache` but with another fingerprint."""
    return write_tiny_cache(tmp_path_factory.mktemp("other-cache"), seed=1)


@pytest.fixture(scope="session")
def tiny_space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny space file."""
    path = tmp_path_factory.mktemp("space") / "tiny.toml"
    path.write_text(TINY_SPACE, encoding="utf-8")
    return path


@pytest.fixture
def study_name(request: pytest.FixtureRequest) -> str:
    """A study name unique to the test."""
    return f"{request.node.name[:40]}-{secrets.token_hex(3)}"


def _hpo_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("HPO_")}
    # One TensorFlow thread pool thread each: several workers share the test machine's few cores.
    quiet = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    return env | quiet | {"PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="session")
def hpo_env() -> dict[str, str]:
    """The environment for `hpo` subprocesses: no HPO_* settings leaking in, TensorFlow quiet."""
    return _hpo_env()


@pytest.fixture(scope="session")
def hpo() -> Callable[..., subprocess.CompletedProcess[str]]:
    """`hpo(*args, timeout=120)`: run the real `hpo` executable to completion in a subprocess."""

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(HPO), *args], capture_output=True, text=True, timeout=timeout, env=_hpo_env(), check=False
        )

    return run


@pytest.fixture(scope="session")
def paper_params() -> dict[str, object]:
    """The Optuna params of the tiny space's "paper" point."""
    return dict(PAPER_PARAMS)


@pytest.fixture
def run_hpo(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """`run_hpo(*args)`: run the `hpo` entry point in this process, to (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        try:
            main(list(args))
            code = 0
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run
