from __future__ import annotations

import subprocess

from support import HPO


def test_hpo_help_lists_every_command() -> None:
    result = subprocess.run([HPO, "--help"], capture_output=True, text=True, check=True)
    for command in ("embed", "study", "worker", "status", "export-best", "evaluate", "predict", "demo"):
        assert f"  {command} " in result.stdout


def test_hpo_unknown_environment_variable_is_one_line_and_exit_2() -> None:
    result = subprocess.run(
        [HPO, "status"], capture_output=True, text=True, env={"HPO_STUDDY": "x", "PATH": "/usr/bin"}
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "hpo: error: unknown environment variable HPO_STUDDY; face-hpo reads only HPO_WORKDIR, "
        "HPO_DATASET, HPO_CACHE, HPO_WEIGHTS, HPO_STORAGE, HPO_STUDY, HPO_ARTIFACTS."
    ]


def test_hpo_usage_error_exits_2() -> None:
    result = subprocess.run([HPO, "no-such-command"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "No such command 'no-such-command'" in result.stderr
