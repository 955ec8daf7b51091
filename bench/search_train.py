"""Benchmark of a trial's training path (issues 3 and 13): ratios measured side by side in one run.

Peaks first and last (bench/roofline.py): warm square matmuls in float32 and bfloat16 (best of several
sizes) and the streaming bandwidth (x + y, or XLA's 2x + y, over 256 MiB arrays); the better of the
two measurements is each ratio's reference.
(r) Each head's epoch (training + validation) vs its roofline, and the split of the epoch into input
    draw, forward + backward, optimizer update and validation (bench/search_train_roofline.py): the
    paper head at batch 128-1024 and three heads of a wide space.
(a) One epoch of the paper's head (Table II) on N x 512 fixed-seed synthetic vectors (bench/synthetic.py)
    through `model.train`'s epoch function, for each precision/XLA variant: achieved matmul FLOP/s ÷ the
    float32 matmul peak and the epoch's roofline ÷ its time. FLOPs counted = 2 N (3 S - d0 u0), S = sum of
    in x out over the Dense layers, d0 u0 = the first layer's (forward, weight gradients, input gradients
    except into the embeddings). The same epoch vs a naive `model.fit` on numpy arrays (batch 256, same
    head, same losses, Keras' own defaults). The default variant runs on all N rows, the others on slices
    (whole-epoch XLA on a small one: it is ~10x slower on CPU). CPU-second figures beside the wall-clock
    ones hold up when other processes load the machine.
(b) One epoch over the same real FairFace images: the paper's way (JPEG decode + frozen VGG16 base forward
    + head step, per image per epoch, base in float32 as the authors ran it and in bfloat16) vs a trial on
    their cached embeddings, per image: on those images alone, and at full-split scale from (a).

    .venv/bin/python bench/search_train.py --dataset ../shared/fairface
    .venv/bin/python bench/search_train.py --quick          # a few rows of each part, for a smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import platform
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf
from roofline import Peaks, Rate, epoch_roofline, measure_peaks, step_cost, timed
from search_train_paper_way import bench_b
from search_train_roofline import DIM, HeadTiming, report, time_head, timed_heads
from synthetic import FAIRFACE_VAL_ROWS, synthetic_data

from data.labels import HEADS, VOCABULARIES
from model.fitting import class_weights, head_losses
from model.network import build_head
from model.paper import PAPER_HEAD
from model.train import TrainOptions, compile_head
from model.train_data import TrainData

Variant = tuple[TrainOptions, int, float, float, float]  # options, rows, first call, wall, CPU seconds


def epoch_seconds(data: TrainData, options: TrainOptions) -> tuple[float, float, float]:
    """(first call incl. tracing, second epoch wall, its CPU) seconds of the paper head's epoch function."""
    head = compile_head(PAPER_HEAD, data, seed=0, options=options)
    first, _ = timed(lambda: head.run_epoch(tf.constant([0, 0], tf.int64)).numpy())
    return first, *timed(lambda: head.run_epoch(tf.constant([0, 1], tf.int64)).numpy())


def naive_fit_seconds(data: TrainData) -> tuple[float, float]:
    """One epoch of Keras `model.fit` on numpy arrays, batch 256, after a warm-up fit that traces it."""
    keras.utils.set_random_seed(0)
    model = build_head(PAPER_HEAD, data.dim)
    labels = data.train_labels
    weights = {h: class_weights(labels[:, c], len(VOCABULARIES[h])) for c, h in enumerate(HEADS[:2])}
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=head_losses(weights))
    x = data.views[0].numpy()
    y = {"age": labels[:, 0], "race": labels[:, 1], "gender": labels[:, 2].astype(np.float32)}
    warm = {head: value[:1024] for head, value in y.items()}
    model.fit(x[:1024], warm, batch_size=256, epochs=1, verbose=0)
    print(f"  naive fit: Keras resolved jit_compile={model.jit_compile}", flush=True)
    return timed(lambda: model.fit(x, y, batch_size=256, epochs=1, verbose=0, shuffle=True))


PREVIOUS = TrainOptions(fast_dropout=False, fused_update=False)  # the default before issue 13


def variants(args: argparse.Namespace) -> list[tuple[TrainOptions, int]]:
    """(options, rows) of each variant of (a): today's and the previous default on all rows first."""
    chosen = [TrainOptions(), PREVIOUS]
    if args.variants == "all":
        chosen += [
            TrainOptions(fused_update=False),  # fast dropout, XLA update
            TrainOptions(fast_dropout=False),  # Keras dropout, fused Adam
            TrainOptions(fast_dropout=False, fused_update=False, xla_update=False),  # as Keras does it
            TrainOptions(precision="float32"),
            dataclasses.replace(PREVIOUS, precision="float32"),
            TrainOptions(jit_compile=True),
            TrainOptions(jit_compile=True, precision="float32"),
        ]
    resolved = [options.resolved() for options in chosen]
    rows = [args.samples] * 2 + [
        args.xla_samples if o.jit_compile else args.variant_samples for o in resolved[2:]
    ]
    return list(zip(resolved, rows, strict=True))


def bench_a(args: argparse.Namespace) -> list[Variant]:
    """Item 7a's epochs, default variant first; prints the naive `fit` comparison (ratios: `report_a`)."""
    results = []
    for options, rows in variants(args):
        first, wall, cpu = epoch_seconds(synthetic_data(rows, DIM), options)
        results.append((options, rows, first, wall, cpu))
        print(
            f"(a) {_name(options)} N={rows}: epoch {wall:.2f} s, {cpu:.2f} CPU-s (first call {first:.2f} s)",
            flush=True,
        )
    _, rows, _, wall, cpu = results[0]
    fit, fit_cpu = naive_fit_seconds(synthetic_data(rows, DIM))
    print(
        f"  naive model.fit epoch N={rows}: {fit:.2f} s, {fit_cpu:.2f} CPU-s -> default path "
        f"{fit / wall:.2f}x faster ({fit_cpu / cpu:.2f}x in CPU-s)",
        flush=True,
    )
    return results


def report_a(results: list[Variant], peaks: Peaks) -> list[str]:
    """Per variant: FLOP/s ÷ the float32 matmul peak, and its training roofline ÷ its epoch time."""
    matmul = peaks.matmul["float32"]
    lines = ["(a) ratios: FLOP/s ÷ float32 matmul peak | training roofline ÷ epoch time, wall and per CPU-s"]
    _, _, _, previous_wall, previous_cpu = results[1]
    lines.append(
        f"  default ÷ previous default, same N: {results[0][3] / previous_wall:.3f} of the wall time, "
        f"{results[0][4] / previous_cpu:.3f} of the CPU-s"
    )
    for options, rows, _, wall, cpu in results:
        flops = step_cost(PAPER_HEAD, DIM, rows, "mixed").flops  # a batch of N: the epoch's
        roof = [
            epoch_roofline(PAPER_HEAD, DIM, rows, 0, str(options.precision), peaks, cpu=on_cpu)["train"]
            for on_cpu in (False, True)
        ]
        lines.append(
            f"  {_name(options)} N={rows}: {flops / wall / 1e9:.1f} GFLOP/s = "
            f"{flops / wall / matmul.wall:.3f} (per CPU-s {flops / cpu / matmul.cpu:.3f}) | "
            f"roofline {roof[0] / wall:.3f} "
            f"(per CPU-s {roof[1] / cpu:.3f})"
        )
    return lines


def bench_r(args: argparse.Namespace) -> list[HeadTiming]:
    """Part (r): every timed head's epoch split on the same synthetic data, per path, head by head."""
    data = synthetic_data(args.samples, DIM, args.val_samples)
    paths = {"default": TrainOptions().resolved(), "previous": PREVIOUS.resolved()}
    timings = []
    for (name, config), path in itertools.product(timed_heads(), args.r_paths.split(",")):
        label = name if path == "default" else f"{name} [prev]"
        timing = time_head(label, config, data, paths[path], args.rounds)
        timings.append(timing)
        parts = ", ".join(
            f"{name} {wall:.2f} s/{cpu:.2f} CPU-s" for name, (wall, cpu) in timing.parts.items()
        )
        print(f"(r) {label}: {parts}; first call {timing.first_call:.2f} s", flush=True)
    return timings


def _name(options: TrainOptions) -> str:
    update = "fused" if options.fused_update else "xla" if options.xla_update else "keras"
    dropout = "fast" if options.fast_dropout else "keras"
    epoch = " whole-epoch XLA" if options.jit_compile else ""
    mark = "  <- default" if options == TrainOptions().resolved() else ""
    mark = "  <- previous default" if options == PREVIOUS.resolved() else mark
    return f"{options.precision:7s} update={update:5s} dropout={dropout:5s}{epoch}{mark}"


def print_peaks(when: str, peaks: Peaks) -> None:
    rates = ", ".join(f"{name} {rate.wall / 1e9:.0f} GFLOP/s" for name, rate in peaks.matmul.items())
    per_cpu = ", ".join(f"{rate.cpu / 1e9:.0f}" for rate in peaks.matmul.values())
    print(
        f"peaks {when}: matmul {rates} ({per_cpu} GFLOP per CPU-s); stream {peaks.bandwidth.wall / 1e9:.1f} "
        f"GB/s ({peaks.bandwidth.cpu / 1e9:.1f} GB per CPU-s); load average {_load()}",
        flush=True,
    )


def _best(a: Peaks, b: Peaks) -> Peaks:
    def best(x: Rate, y: Rate) -> Rate:
        return Rate(max(x.wall, y.wall), max(x.cpu, y.cpu))

    matmul = {name: best(rate, b.matmul[name]) for name, rate in a.matmul.items()}
    return Peaks(matmul=matmul, bandwidth=best(a.bandwidth, b.bandwidth))


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    default_root = Path(
        os.environ.get("FAIRFACE_ROOT", Path(__file__).resolve().parents[2] / "shared/fairface")
    )
    parser.add_argument("--dataset", type=Path, default=default_root, help="FairFace root for (b)")
    parser.add_argument("--samples", type=int, default=78_000, help="train rows of the (r) and (a) epochs")
    parser.add_argument("--val-samples", type=int, default=FAIRFACE_VAL_ROWS, help="val rows of (r)")
    parser.add_argument("--variant-samples", type=int, default=19_500, help="rows of the other variants")
    parser.add_argument("--xla-samples", type=int, default=1_280, help="rows of the whole-epoch XLA variants")
    parser.add_argument("--images", type=int, default=64, help="real images of (b)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="warm calls of each (r) stage; the fastest counts"
    )
    parser.add_argument("--variants", choices=("all", "default"), default="all", help="variants of (a)")
    parser.add_argument("--parts", default="r,a,b", help="comma-separated parts to run: r, a, b")
    parser.add_argument(
        "--r-paths", default="default", help="(r)'s paths: default, previous (the default before issue 13)"
    )
    parser.add_argument("--quick", action="store_true", help="few rows and images, small peaks: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.val_samples, args.variant_samples, args.xla_samples = 2_048, 512, 1_024, 256
        args.images, args.rounds, args.variants = 8, 1, "default"
    return args


def main() -> None:
    args = parse_args()
    gpus = tf.config.list_logical_devices("GPU")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"GPU: {[g.name for g in gpus] or 'none'}; TensorFlow {tf.__version__}, Keras {keras.__version__}; "
        f"default {TrainOptions().resolved()}",
        flush=True,
    )
    started = time.perf_counter()
    parts = set(args.parts.split(","))
    before = measure_peaks(args.quick)
    print_peaks("before", before)
    timings = bench_r(args) if "r" in parts else []
    variants_a = bench_a(args) if "a" in parts else []
    if "b" in parts:
        full_scale = None
        if variants_a:
            _, rows, _, wall, cpu = variants_a[0]
            full_scale = (wall / rows, cpu / rows)
        bench_b(args, full_scale, lambda data: epoch_seconds(data, TrainOptions()))
    after = measure_peaks(args.quick)
    print_peaks("after", after)
    peaks = _best(before, after)
    print_peaks("reference (the better of each)", peaks)
    if variants_a:
        print("\n".join(report_a(variants_a, peaks)))
    if timings:
        precision = str(TrainOptions().resolved().precision)
        print("\n".join(report(timings, peaks, args.samples, args.val_samples, precision)))
    print(f"total {time.perf_counter() - started:.0f} s; load average {_load()}")


if __name__ == "__main__":
    main()
