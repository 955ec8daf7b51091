"""Benchmark of a trial's training path (issue 3, items 7a and 7b): ratios measured side by side in one run.

(a) One epoch of the paper's head (Table II) on N x 512 fixed-seed random vectors, labels drawn with the
    FairFace train class frequencies, through `model.train`'s epoch function, for each precision/XLA
    variant: achieved matmul FLOP/s / FLOP/s of a 4096 x 4096 float32 matmul timed in the same run (before
    and after; the faster one is the reference). FLOPs counted = 2 N (3 S - d0 u0), S = sum of in x out
    over the Dense layers, d0 u0 = the first layer's (forward, weight gradients, input gradients except into
    the embeddings); the approximation 6 N S is printed beside it. The same epoch vs a naive `model.fit`
    on numpy arrays (batch 256, same head, same losses, Keras' own defaults). The default variant runs
    on all N rows, the others on slices (whole-epoch XLA on a small one: it is ~10x slower on CPU);
    FLOP/s hardly depends on N. CPU-second figures beside the wall-clock ones hold up when other
    processes load the machine.
(b) One epoch over the same real FairFace images: the paper's way (JPEG decode + frozen VGG16 base forward
    + head step, per image per epoch, base in float32 as the authors ran it and in bfloat16) vs a trial on
    their cached embeddings, per image: on those images alone, and at full-split scale from (a).

    .venv/bin/python bench/search_train.py --dataset ../shared/fairface
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from data.fairface import check_images, read_labels
from data.images import image_batches
from data.labels import HEADS, VOCABULARIES
from model.bases.vggface import build_base
from model.bases.vggface_h5 import resolve_weights
from model.fitting import class_weights, head_losses
from model.head import HeadConfig
from model.network import build_head
from model.paper import PAPER_HEAD
from model.train import TrainData, TrainOptions, compile_head

# Class counts of the full FairFace train CSV (../shared/fairface/README.md), vocabulary order.
TRAIN_COUNTS = {
    "age": (1792, 10408, 9103, 25598, 19250, 10744, 6228, 2779, 842),
    "race": (16527, 12233, 13367, 12287, 10795, 12319, 9216),
    "gender": (40758, 45986),
}


def matmul_rate(dtype: tf.DType = tf.float32, size: int = 4096) -> tuple[float, float]:
    """(FLOP/s, FLOP per CPU-second) of a warm size x size matmul, best of 5."""
    a = tf.cast(tf.random.stateless_normal([size, size], [1, 2]), dtype)
    product = tf.function(lambda x: tf.reduce_sum(tf.cast(tf.matmul(x, x)[:1, :1], tf.float32)))
    product(a).numpy()
    walls, cpus = zip(*(timed(lambda: product(a).numpy()) for _ in range(5)), strict=True)
    return 2 * size**3 / min(walls), 2 * size**3 / min(cpus)


def head_flops(config: HeadConfig, dim: int, samples: int) -> tuple[float, float]:
    """(counted, approximate) matmul FLOPs of one epoch: 2N(3S - d0 u0) and 6NS."""
    widths = [dim, *(layer.units for layer in config.layers)]
    total = sum(a * b for a, b in itertools.pairwise(widths))
    total += widths[-1] * sum(len(VOCABULARIES[head]) if head != "gender" else 1 for head in HEADS)
    return 2.0 * samples * (3 * total - widths[0] * widths[1]), 6.0 * samples * total


def synthetic_data(samples: int, dim: int, seed: int = 0) -> TrainData:
    """Random vectors with labels drawn per FairFace class frequencies; a small val split."""
    rng = np.random.default_rng(seed)
    labels = np.stack(
        [rng.choice(len(c), size=samples, p=np.array(c) / sum(c)) for c in TRAIN_COUNTS.values()], axis=1
    ).astype(np.int8)
    x = rng.standard_normal((1, samples, dim), dtype=np.float32)
    return TrainData.from_arrays(x, labels, x[0, :512], labels[:512])


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(call: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of ``call``: CPU time is what the run got of a machine others may load too."""
    wall, cpu = time.perf_counter(), _cpu_seconds()
    call()
    return time.perf_counter() - wall, _cpu_seconds() - cpu


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


def variants(args: argparse.Namespace) -> list[tuple[TrainOptions, int]]:
    """(options, rows) of each variant of (a): the default on all rows first."""
    default = TrainOptions().resolved()
    others = [
        TrainOptions(jit_compile=jit, xla_update=update, precision=precision)
        for jit, update in ((False, True), (False, False), (True, True))
        for precision in ("mixed", "float32")
    ]
    rows = {False: args.variant_samples, True: args.xla_samples}
    chosen = [(o, rows[bool(o.jit_compile)]) for o in others if o != default and args.variants == "all"]
    return [(default, args.samples), *chosen]


def bench_a(args: argparse.Namespace) -> tuple[float, float]:
    """Item 7a; returns (wall, CPU) seconds per sample of the default variant's epoch (for 7b)."""
    before, before_cpu = matmul_rate()
    print(
        f"(a) matmul 4096^2 float32: {before / 1e9:.1f} GFLOP/s, {before_cpu / 1e9:.1f} GFLOP per CPU-s; "
        f"bfloat16: {matmul_rate(tf.bfloat16)[0] / 1e9:.1f} GFLOP/s",
        flush=True,
    )
    results = []
    for options, rows in variants(args):
        first, wall, cpu = epoch_seconds(synthetic_data(rows, 512), options)
        counted, approx = head_flops(PAPER_HEAD, 512, rows)
        results.append((options, rows, wall, cpu, counted, approx))
        print(
            f"  {_name(options)} N={rows}: epoch {wall:.2f} s, {cpu:.2f} CPU-s (first call {first:.2f} s): "
            f"{counted / wall / 1e9:.1f} GFLOP/s counted, {approx / wall / 1e9:.1f} with 6NS",
            flush=True,
        )
    after, after_cpu = matmul_rate()
    reference, reference_cpu = max(before, after), max(before_cpu, after_cpu)
    print(
        f"  matmul float32 after: {after / 1e9:.1f} GFLOP/s; reference {reference / 1e9:.1f} GFLOP/s, "
        f"{reference_cpu / 1e9:.1f} GFLOP per CPU-s"
    )
    for options, _, wall, cpu, counted, approx in results:
        print(
            f"  ratio {_name(options)}: {counted / wall / reference:.3f} "
            f"(6NS: {approx / wall / reference:.3f}); per CPU-s: {counted / cpu / reference_cpu:.3f}"
        )
    _, rows, wall, cpu, counted, _ = results[0]
    fit, fit_cpu = naive_fit_seconds(synthetic_data(rows, 512))
    print(
        f"  naive model.fit epoch N={rows}: {fit:.2f} s, {fit_cpu:.2f} CPU-s ({counted / fit / 1e9:.1f} "
        f"GFLOP/s) -> default path {fit / wall:.2f}x faster ({fit_cpu / cpu:.2f}x in CPU-s)",
        flush=True,
    )
    return wall / rows, cpu / rows


def _name(options: TrainOptions) -> str:
    xla = "epoch" if options.jit_compile else "update" if options.xla_update else "none"
    default = "  <- default" if options == TrainOptions().resolved() else ""
    return f"{options.precision:7s} xla={xla:6s}{default}"


def paper_epoch_seconds(
    root: Path, files: tuple[str, ...], labels: np.ndarray, base_dtype: str
) -> tuple[float, float]:
    """(wall, CPU) seconds of a warm epoch the paper's way: decode, frozen base, head step per image."""
    base = build_base(resolve_weights("random:0"), dtype=base_dtype)
    keras.utils.set_random_seed(0)
    head = build_head(PAPER_HEAD, 512)
    weights = {h: class_weights(labels[:, c], len(VOCABULARIES[h])) for c, h in enumerate(HEADS[:2])}
    losses = head_losses(weights)
    optimizer = keras.optimizers.Adam(1e-3)
    targets = tf.constant(labels, tf.int32)

    @tf.function
    def step(index: tf.Tensor, images: tf.Tensor) -> None:
        features = base(images, training=False)
        y = tf.gather(targets, index)
        with tf.GradientTape() as tape:
            out = head(features, training=True)
            loss = tf.add_n([losses[h](y[:, c], out[h]) for c, h in enumerate(HEADS)])
        variables = head.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))

    def epoch() -> None:
        for index, images in image_batches(root, files, batch_size=32):
            step(index, images)

    epoch()  # traces and warms up
    return timed(epoch)


def bench_b(args: argparse.Namespace, full_scale: tuple[float, float] | None) -> None:
    """Item 7b: per-image (wall, CPU) seconds of an epoch, the paper's way vs cached embeddings."""
    table = read_labels(args.dataset / "fairface_label_val.csv").take(args.images)
    check_images(args.dataset, table)
    count, labels = len(table), table.labels
    print(f"(b) {count} real FairFace val images ({table.files[0]} ..), base random:0 weights", flush=True)
    base = build_base(resolve_weights("random:0"))
    batches = image_batches(args.dataset, table.files, batch_size=32)
    embeddings = np.concatenate([base(images, training=False).numpy() for _, images in batches])
    data = TrainData.from_arrays(embeddings[None], labels, embeddings, labels)
    _, wall, cpu = epoch_seconds(data, TrainOptions())
    cached = {"these images": (wall / count, cpu / count)}
    if full_scale is not None:
        cached["full-split scale (a)"] = full_scale
    for scale, (wall, cpu) in cached.items():
        print(f"  cached trial, {scale}: {wall * 1e3:.3f} ms/image, {cpu * 1e3:.3f} CPU-ms/image")
    for dtype in ("float32", "bfloat16"):
        wall, cpu = (
            seconds / count for seconds in paper_epoch_seconds(args.dataset, table.files, labels, dtype)
        )
        ratios = "; ".join(
            f"{scale}: {wall / cached_wall:.0f}x ({cpu / cached_cpu:.0f}x in CPU-s)"
            for scale, (cached_wall, cached_cpu) in cached.items()
        )
        print(
            f"  paper's way, base {dtype}: {wall * 1e3:.1f} ms/image, {cpu * 1e3:.1f} CPU-ms/image -> "
            f"cached cheaper by {ratios}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    default_root = Path(
        os.environ.get("FAIRFACE_ROOT", Path(__file__).resolve().parents[2] / "shared/fairface")
    )
    parser.add_argument("--dataset", type=Path, default=default_root, help="FairFace root for (b)")
    parser.add_argument("--samples", type=int, default=78_000, help="rows of the (a) epoch")
    parser.add_argument("--variant-samples", type=int, default=19_500, help="rows of the other variants")
    parser.add_argument("--xla-samples", type=int, default=1_280, help="rows of the whole-epoch XLA variants")
    parser.add_argument("--images", type=int, default=64, help="real images of (b)")
    parser.add_argument("--variants", choices=("all", "default"), default="all", help="variants of (a)")
    parser.add_argument("--parts", default="a,b", help="comma-separated parts to run: a, b or a,b")
    args = parser.parse_args()
    gpus = tf.config.list_logical_devices("GPU")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"GPU: {[g.name for g in gpus] or 'none'}; TensorFlow {tf.__version__}, Keras {keras.__version__}; "
        f"load average {os.getloadavg()[0]:.2f}; default {TrainOptions().resolved()}",
        flush=True,
    )
    started = time.perf_counter()
    parts = set(args.parts.split(","))
    per_sample = bench_a(args) if "a" in parts else None
    if "b" in parts:
        bench_b(args, per_sample)
    print(f"total {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
