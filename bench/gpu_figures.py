"""The figures of bench/gpu.sh (issue 13, item 3): one run, every figure in one results file.

Parts, in this order, each skipped (and recorded as skipped) when the deadline leaves too little time;
the results file is rewritten after each part, so a run cut short keeps what it measured:
- embed: N real FairFace val images through `hpo embed`'s pipeline and the bare forward pass of the
  same encoder, float32 and bfloat16 (bench/embed.py): images/s and pipeline ÷ forward;
- trials: the paper head and a wide-space head on bench/synthetic.py's 512-d rows: first call (tracing
  and compilation), warm epoch and validation pass, a whole `train_head` trial, and the base's forward
  time per image ÷ a cached epoch's time per image (a lower bound of "the paper's way" ÷ cached: the
  paper's way also runs the head step);
- workers: a study created by `hpo study create` (fixed head, random sampler, no pruning) on a
  synthetic cache written to disk; then K = 1, 2, 4 worker processes on one GPU (on CPU when there is
  none), each running the project's worker loop `search.worker.run_worker`, on the same budget:
  trials/hour (first trial's start to last trial's end) and the Optuna + storage share of a trial,
  (Σ trial wall - Σ time inside `train_head` less its epoch callbacks) ÷ Σ trial wall.

    .venv/bin/python bench/gpu_figures.py --out bench/results/gpu-HOST-DATE.json
    .venv/bin/python bench/gpu_figures.py --quick --out /tmp/figures.json    # CPU smoke test, ~2 min
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from search.tfquiet import import_tensorflow_quietly

import_tensorflow_quietly()

import tensorflow as tf  # noqa: E402
from embed import bench_dtype, cosines  # noqa: E402
from gpu_workers import worker_figures, write_synthetic_cache  # noqa: E402
from roofline import timed  # noqa: E402
from search_train_roofline import timed_heads  # noqa: E402
from synthetic import FAIRFACE_VAL_ROWS, synthetic_data  # noqa: E402

from data.fairface import load_tables  # noqa: E402
from model.head import HeadConfig  # noqa: E402
from model.train import TrainOptions, compile_head, train_head, validation_scores  # noqa: E402
from model.train_data import TrainData  # noqa: E402

Figures = dict[str, Any]


def machine_figures(quick: bool) -> Figures:
    """Host, devices, versions and the load average at the start."""
    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        smi = ""
    return {
        "host": socket.gethostname(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": quick,
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "gpus": gpus,
        "nvidia_smi": smi,
        "tensorflow": tf.__version__,
        "train_options": str(TrainOptions().resolved()),
        "load_average_start": list(os.getloadavg()),
    }


def embed_figures(args: argparse.Namespace, out: Path) -> Figures:
    """Pipeline and bare-forward images/s per dtype, pipeline ÷ forward, and the dtypes' cosine."""
    table = load_tables(args.dataset, "paper", ["val"], args.images)["val"]
    options = argparse.Namespace(
        dataset=args.dataset, batch_size=32, rounds=2, weights="random:0", images=len(table)
    )
    rates = {dtype: bench_dtype(options, table, dtype, out) for dtype in ("float32", "bfloat16")}
    similarity = cosines(rates["float32"].embeddings, rates["bfloat16"].embeddings)
    figures: Figures = {"images": len(table), "cosine_min_bfloat16_vs_float32": float(similarity.min())}
    for dtype, rate in rates.items():
        figures[dtype] = {
            "forward_images_per_s": rate.forward,
            "pipeline_images_per_s": rate.pipeline,
            "pipeline_over_forward": rate.pipeline / rate.forward,
        }
    return figures


def trial_figures(args: argparse.Namespace, embed: Figures | None) -> Figures:
    """First call, warm epoch, validation and a whole trial of the paper head and a wide head."""
    data = synthetic_data(args.rows, 512, args.val_rows)
    heads = dict(timed_heads())
    figures: Figures = {"rows": args.rows, "val_rows": args.val_rows, "epochs": args.trial_epochs}
    for name, label in (("paper", "paper b256"), ("wide", "3x2048 relu b512")):
        figures[name] = {"head": label, **time_trial(heads[label], data, args.trial_epochs)}
        per_image = figures[name]["epoch_s"] / args.rows
        figures[name]["cached_epoch_ms_per_image"] = 1e3 * per_image
        for dtype, rates in (embed or {}).items():
            if isinstance(rates, dict):
                forward = 1.0 / rates["forward_images_per_s"]
                figures[name][f"base_{dtype}_forward_over_cached_epoch"] = forward / per_image
    return figures


def time_trial(config: HeadConfig, data: TrainData, epochs: int) -> Figures:
    """Seconds of the first epoch call, the faster of two warm ones, validation and a whole trial."""
    head = compile_head(config, data, seed=0)

    def epoch(number: int) -> float:
        return timed(lambda: head.run_epoch(tf.constant([0, number], tf.int64)).numpy())[0]

    first = epoch(0)
    warm = min(epoch(1), epoch(2))
    validation = min(timed(lambda: validation_scores(head.forward, data))[0] for _ in range(2))
    trial, _ = timed(lambda: train_head(config, data, epochs=epochs, seed=0, patience=None))
    return {"first_call_s": first, "epoch_s": warm, "validation_s": validation, "trial_s": trial}


def markdown(results: Figures) -> str:
    """The results as a flat two-column table, one row per figure."""
    rows = ["| figure | value |", "|---|---|"]

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else key, item)
        else:
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            rows.append(f"| {prefix} | {shown} |")

    walk("", results)
    return "\n".join(rows) + "\n"


def write(results: Figures, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(results), encoding="utf-8")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    root = Path(os.environ.get("FAIRFACE_ROOT", Path(__file__).resolve().parents[2] / "shared/fairface"))
    parser.add_argument("--out", type=Path, required=True, help="results JSON (a .md is written beside it)")
    parser.add_argument("--dataset", type=Path, default=root, help="FairFace root with val images")
    parser.add_argument("--images", type=int, default=256, help="real images to embed")
    parser.add_argument("--rows", type=int, default=78_000, help="synthetic train rows")
    parser.add_argument("--val-rows", type=int, default=FAIRFACE_VAL_ROWS, help="synthetic val rows")
    parser.add_argument("--trial-epochs", type=int, default=3, help="epochs of each timed trial")
    parser.add_argument("--budget", type=int, default=6, help="trials of each worker run")
    parser.add_argument("--worker-epochs", type=int, default=2, help="epochs of each worker trial")
    parser.add_argument("--workers", default="1,2,4", help="worker processes per GPU, comma-separated")
    parser.add_argument("--storage", default=None, help="study storage URL [default: SQLite in a temp dir]")
    parser.add_argument("--deadline-s", type=float, default=540.0, help="skip parts that would end later")
    parser.add_argument("--setup-s", type=float, default=0.0, help="seconds the venv build took (recorded)")
    parser.add_argument("--quick", action="store_true", help="a few rows and images: CPU smoke test")
    args = parser.parse_args()
    if args.quick:
        args.images, args.rows, args.val_rows, args.trial_epochs = 16, 1_024, 256, 1
        args.budget, args.worker_epochs = 4, 1
    return args


# Seconds each part needs at least, as a share of the deadline: a part starts only if they remain.
PART_SHARE = {"embed": 0.10, "trials": 0.15, "workers": 0.40}


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    results: Figures = {"machine": machine_figures(args.quick), "seconds": {"setup": args.setup_s}}
    results["skipped"] = []
    write(results, args.out)
    with tempfile.TemporaryDirectory(prefix="gpu-figures-") as scratch:
        work = Path(scratch)
        for part in ("embed", "trials", "workers"):
            left = args.deadline_s - (time.monotonic() - started)
            if left < PART_SHARE[part] * args.deadline_s:
                results["skipped"].append(part)
                continue
            begun = time.perf_counter()
            if part == "embed":
                results["embed"] = embed_figures(args, work)
            elif part == "trials":
                results["trials"] = trial_figures(args, results.get("embed"))
            else:
                cache = write_synthetic_cache(work / "cache", args.rows, args.val_rows)
                results["workers"] = worker_figures(args, cache, work, deadline=started + args.deadline_s)
            results["seconds"][part] = time.perf_counter() - begun
            print(f"gpu_figures: {part} done in {results['seconds'][part]:.0f} s", flush=True)
            write(results, args.out)
    results["seconds"]["total"] = time.monotonic() - started
    results["machine"]["load_average_end"] = list(os.getloadavg())
    write(results, args.out)
    print(f"gpu_figures: wrote {args.out} and {args.out.with_suffix('.md')}", flush=True)


if __name__ == "__main__":
    multiprocessing.set_start_method("spawn")
    main()
