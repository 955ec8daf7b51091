from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from support import REPO, Hpo

pytestmark = pytest.mark.slow


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter with no TF_CPP_MIN_LOG_LEVEL set (TensorFlow's default)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )


def test_import_tensorflow_quietly_leaves_stderr_empty() -> None:
    code = (
        "from search.tfquiet import import_tensorflow_quietly\n"
        "import_tensorflow_quietly()\n"
        "import keras, tensorflow as tf\n"
        "print(float(tf.reduce_sum(tf.ones(3))))\n"
    )
    result = run_python(code)
    assert (result.stdout, result.stderr) == ("3.0\n", "")


def test_hpo_help_does_not_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "from search.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules, file=sys.stderr)\n"
    )
    assert run_python(code).stderr == "False False\n"


@pytest.mark.parametrize(
    "args",
    [
        ("predict", "--model", "nowhere", "face.jpg"),
        ("evaluate", "--model", "nowhere", "--out", "unused"),
        ("export-best", "--study", "nope", "--out", "unused"),
    ],
    ids=lambda args: args[0],
)
def test_tensorflow_command_user_error_is_one_line(args: tuple[str, ...], hpo: Hpo, tmp_path: Path) -> None:
    result = hpo(*args, "--workdir", str(tmp_path)) if args[0] == "export-best" else hpo(*args)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpo: error: "), result.stderr


def test_worker_bad_study_is_one_line_before_any_process_starts(hpo: Hpo, tmp_path: Path) -> None:
    optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    result = hpo("worker", "--study", "nope", "--n-workers", "2", "--workdir", str(tmp_path))
    assert result.returncode == 2
    # Checked in the launcher: no "2 worker process(es)" line, and not one error per process.
    assert result.stderr.splitlines() == [
        f"hpo: error: no study 'nope' in sqlite:///{tmp_path / 'study.db'}; the studies there: none. "
        "Create it with `hpo study create`, or pass --study (HPO_STUDY) with one of these."
    ]
