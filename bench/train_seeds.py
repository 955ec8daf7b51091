"""Seed noise of a trial's metrics, for a change to the training path (issue 13): same seeds, both paths.

The paper head (Table II) trained on bench/synthetic.py's data with training seeds 0..k-1, through
`train_head` with each option set (by default the previous default path and today's), interleaved
seed by seed in one process. A change keeps "the same results" when, seed for seed, its validation
metrics differ from the previous path's by no more than the previous path's own seed-to-seed spread,
and the means differ by less than their standard error would allow.

    .venv/bin/python bench/train_seeds.py --seeds 5 --epochs 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from roofline import cpu_seconds
from synthetic import synthetic_data

from data.labels import HEADS
from model.metrics import mean_metric
from model.paper import PAPER_HEAD
from model.train import TrainOptions, train_head

PATHS = {
    "previous": TrainOptions(fast_dropout=False, fused_update=False),  # Keras Dropout, XLA Adam update
    "default": TrainOptions(),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="training seeds 0..k-1")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--samples", type=int, default=19_500, help="train rows")
    parser.add_argument("--val-samples", type=int, default=4_000, help="val rows")
    parser.add_argument("--paths", default="previous,default", help=f"comma-separated: {', '.join(PATHS)}")
    args = parser.parse_args()
    data = synthetic_data(args.samples, 512, args.val_samples)
    paths = args.paths.split(",")
    print(f"load average {_load()}; {args.samples} train, {args.val_samples} val rows, {args.epochs} epochs")
    values: dict[str, list[float]] = {path: [] for path in paths}
    seconds: dict[str, list[float]] = {path: [] for path in paths}
    for seed in range(args.seeds):
        for path in paths:
            wall, cpu = time.perf_counter(), cpu_seconds()
            result = train_head(
                PAPER_HEAD, data, epochs=args.epochs, seed=seed, patience=None, options=PATHS[path]
            )
            wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
            value = mean_metric(result.metrics, "balanced_accuracy")
            assert isinstance(value, float)
            values[path].append(value)
            seconds[path].append(cpu)
            per_head = " ".join(f"{h} {result.metrics[h]['balanced_accuracy']:.4f}" for h in HEADS)
            print(
                f"seed {seed} {path:8s}: mean balanced accuracy {value:.4f} ({per_head}), best epoch "
                f"{result.best_epoch}; {wall:.1f} s, {cpu:.1f} CPU-s",
                flush=True,
            )
    for path in paths:
        v = values[path]
        print(
            f"{path:8s}: mean {statistics.mean(v):.4f}, sd {statistics.stdev(v):.4f}, range "
            f"{min(v):.4f}-{max(v):.4f}; {statistics.mean(seconds[path]):.1f} CPU-s per trial"
        )
    if len(paths) == 2:
        a, b = (values[path] for path in paths)
        diffs = [y - x for x, y in zip(a, b, strict=True)]
        error = (statistics.variance(a) / len(a) + statistics.variance(b) / len(b)) ** 0.5
        print(
            f"{paths[1]} - {paths[0]}: mean {statistics.mean(diffs):+.4f} (standard error of the difference "
            f"of means {error:.4f}); per seed {', '.join(f'{d:+.4f}' for d in diffs)}; CPU-s per trial "
            f"{statistics.mean(seconds[paths[1]]) / statistics.mean(seconds[paths[0]]):.3f}x"
        )
    print(f"load average {_load()}; {time.process_time():.0f} CPU-s in all")


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
