"""The demo's steps: the commands it runs and how it runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.demo.layout import DemoLayout, DemoOptions
from search.demo.steps import export_steps, run_step


def test_export_steps_retrain_trial_0_only_when_its_head_was_not_stored(tmp_path: Path) -> None:
    layout = DemoLayout(tmp_path, tmp_path / "cache")
    where = ["--workdir", str(tmp_path), "--study", "demo", "--cache", str(tmp_path / "cache")]
    out = ["--out", str(tmp_path / "export-paper")]
    stored = export_steps(layout, DemoOptions(), paper_head_stored=True)[1][1]
    assert stored == ["export-best", *where, "--trial", "0", *out]
    retrained = export_steps(layout, DemoOptions(weights="dlib"), paper_head_stored=False)[1][1]
    assert retrained == ["export-best", *where, "--weights", "dlib", "--trial", "0", "--retrain", *out]


def test_demo_step_ignores_modules_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A step is `python -P -m search.cli`: a model.py (or data/) where the user stands is not imported.
    (tmp_path / "model.py").write_text("raise SystemExit('the wrong model module was imported')\n")
    (tmp_path / "search.py").write_text("raise SystemExit('the wrong search module was imported')\n")
    monkeypatch.chdir(tmp_path)
    lines: list[str] = []
    assert run_step(["study", "--help"], lines.append) == 0
    assert lines == []
