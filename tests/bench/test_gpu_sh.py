"""bench/gpu.sh in its CPU quick mode, on this test's interpreter (no venv build), in a temp dir."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DTYPE_FIGURES = ("forward_images_per_s", "pipeline_images_per_s", "pipeline_over_forward")
TRIAL_FIGURES = (
    "first_call_s",
    "epoch_s",
    "validation_s",
    "trial_s",
    "cached_epoch_ms_per_image",
    "base_float32_forward_over_cached_epoch",
    "base_bfloat16_forward_over_cached_epoch",
)
WORKER_FIGURES = (
    "trials",
    "trials_per_hour",
    "trial_wall_mean_s",
    "train_head_mean_s",
    "optuna_storage_share",
)
EXPECTED = (
    [f"seconds.{part}" for part in ("setup", "embed", "trials", "workers", "total")]
    + ["embed.images", "embed.cosine_min_bfloat16_vs_float32"]
    + [f"embed.{dtype}.{figure}" for dtype in ("float32", "bfloat16") for figure in DTYPE_FIGURES]
    + [f"trials.{head}.{figure}" for head in ("paper", "wide") for figure in TRIAL_FIGURES]
    + [f"workers.per_gpu_{k}.{figure}" for k in (1, 2, 4) for figure in WORKER_FIGURES]
)


def _figure(results: dict, dotted: str) -> object:
    value: object = results
    for key in dotted.split("."):
        assert isinstance(value, dict) and key in value, f"{dotted} missing from the results"
        value = value[key]
    return value


@pytest.mark.slow
def test_gpu_sh_quick_writes_every_figure_as_a_number(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HPO_", "GPU_BENCH_"))}
    env |= {
        "GPU_BENCH_PYTHON": sys.executable,
        "GPU_BENCH_QUICK": "1",
        "GPU_BENCH_OUT": str(tmp_path / "results"),
        "FAIRFACE_ROOT": str(ROOT / "tests/fixtures/fairface"),
    }
    subprocess.run(["bash", str(ROOT / "bench/gpu.sh")], cwd=tmp_path, env=env, check=True, timeout=600)
    [path] = (tmp_path / "results").glob("gpu-*.json")
    results = json.loads(path.read_text(encoding="utf-8"))
    assert results["skipped"] == [] and results["workers"]["skipped"] == []
    for dotted in EXPECTED:
        value = _figure(results, dotted)
        assert isinstance(value, int | float) and not isinstance(value, bool), f"{dotted} = {value!r}"
        assert math.isfinite(value) and value >= 0, f"{dotted} = {value!r}"
    assert results["embed"]["images"] == 16
    assert all(results["workers"][f"per_gpu_{k}"]["trials"] == 4 for k in (1, 2, 4))
    assert 0 < results["workers"]["per_gpu_1"]["optuna_storage_share"] < 1
    assert path.with_suffix(".md").read_text(encoding="utf-8").startswith("| figure | value |")
