"""Benchmark of `hpo embed`: the whole pipeline against the bare forward pass, on one machine in one run.

The pipeline is data/embed end to end (JPEG decode in tf.data -> preprocessing and VGG16 forward ->
shard written -> cache finalized) over the first N val images of a FairFace root. The bare forward pass
is the same compiled encoder on the same images already decoded in memory, in the same batches. Their
ratio says how much the pipeline loses to I/O (goal: >= 0.9). The two are timed in alternating
rounds over parts of the images, so a change in machine load during the run weighs on both.
With several dtypes, the cosine between their embeddings of the same images is reported.

    .venv/bin/python bench/embed.py --dataset ../shared/fairface --images 256 --dtype float32,bfloat16
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.fairface import load_tables
from search.tfquiet import import_tensorflow_quietly

import_tensorflow_quietly()

import tensorflow as tf  # noqa: E402

from data.embed import EmbedOptions, cache_fingerprint, plan_embedding, run_embedding  # noqa: E402
from data.fairface import Table  # noqa: E402
from data.images import image_batches  # noqa: E402
from model.bases import resolve_base  # noqa: E402

Encoder = Callable[[tf.Tensor], np.ndarray]


def decoded_batches(root: Path, table: Table, batch_size: int) -> list[tf.Tensor]:
    """The table's images, decoded once, in the batches the pipeline will use."""
    return [images for _, images in image_batches(root, table.files, batch_size=batch_size)]


def decode_rate(root: Path, table: Table, batch_size: int) -> float:
    """images/s of the tf.data decode alone (second pass: the first one pays for tracing)."""
    for _ in range(2):
        started = time.perf_counter()
        count = sum(
            int(index.shape[0]) for index, _ in image_batches(root, table.files, batch_size=batch_size)
        )
        seconds = time.perf_counter() - started
    return count / seconds


def forward_seconds(encode: Encoder, batches: Sequence[tf.Tensor]) -> float:
    """Seconds the encoder takes over in-memory batches."""
    started = time.perf_counter()
    for images in batches:
        encode(images)
    return time.perf_counter() - started


def pipeline_seconds(
    root: Path, table: Table, encode: Encoder, base: dict[str, object], batch_size: int, cache: Path
) -> float:
    """Seconds data/embed takes from the table's JPEG files to a finished cache at ``cache``."""
    options = EmbedOptions(batch_size=batch_size)
    tables = {"val": table}
    fingerprint = cache_fingerprint(
        root, base=base, split="paper", split_seed=42, splits=["val"], limit=len(table), options=options
    )
    started = time.perf_counter()
    run_embedding(plan_embedding(tables, cache, fingerprint, options), root, encode)
    return time.perf_counter() - started


def chunks(table: Table, rounds: int) -> list[Table]:
    """``table`` cut into ``rounds`` consecutive parts."""
    bounds = np.linspace(0, len(table), rounds + 1).astype(int)
    return [
        Table(table.csv, table.rows[a:b], table.files[a:b], table.labels[a:b])
        for a, b in itertools.pairwise(bounds.tolist())
    ]


@dataclass(frozen=True)
class DtypeRates:
    """One dtype's measured images/s, forward (in memory) and pipeline (decode -> write), and embeddings."""

    forward: float
    pipeline: float
    embeddings: np.ndarray


def bench_dtype(args: argparse.Namespace, table: Table, dtype: str, out: Path) -> DtypeRates:
    """Print the forward and pipeline rates of one dtype and return them with its embeddings.

    The images are split into rounds; each round times the forward pass and the pipeline on its part,
    in alternating order, so a change of machine load during the run weighs on both alike.
    """
    described = resolve_base("vggface", args.weights, dtype=dtype)
    encode = described.make_encoder()
    parts = chunks(table, args.rounds)
    batches = [decoded_batches(args.dataset, part, args.batch_size) for part in parts]
    encode(batches[0][0])  # trace and warm up outside the timings
    base = described.description
    forward = pipeline = 0.0
    ratios = []
    for round_, (part, part_batches) in enumerate(zip(parts, batches, strict=True)):
        times: dict[str, float] = {}
        for step in ("forward", "pipeline") if round_ % 2 == 0 else ("pipeline", "forward"):
            if step == "forward":
                times[step] = forward_seconds(encode, part_batches)
            else:
                cache = out / f"{dtype}-{round_}"
                times[step] = pipeline_seconds(args.dataset, part, encode, base, args.batch_size, cache)
        forward, pipeline = forward + times["forward"], pipeline + times["pipeline"]
        ratios.append(times["forward"] / times["pipeline"])
    print(
        f"{dtype:<9} forward (in memory) {len(table) / forward:6.2f} images/s   pipeline (decode->write) "
        f"{len(table) / pipeline:6.2f} images/s   ratio {forward / pipeline:.3f} "
        f"(rounds: {', '.join(f'{ratio:.3f}' for ratio in ratios)})"
    )
    embeddings = np.concatenate(
        [np.load(out / f"{dtype}-{r}" / "val" / "view-0.npy", allow_pickle=False) for r in range(args.rounds)]
    )
    return DtypeRates(len(table) / forward, len(table) / pipeline, embeddings)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", type=Path, default=Path("../shared/fairface"), help="FairFace root")
    parser.add_argument("--images", type=int, default=256, help="first N val images")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4, help="alternating forward/pipeline rounds")
    parser.add_argument(
        "--weights", default="random:0", help="path | vggface | random:SEED (speed is the same)"
    )
    parser.add_argument("--dtype", default="float32", help="comma-separated: float32, bfloat16 or both")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and print one line per measurement."""
    args = parse_args(argv)
    tables = load_tables(args.dataset, "paper", ["val"], args.images)
    dtypes = [dtype.strip() for dtype in args.dtype.split(",")]
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores (load {load}), TensorFlow {tf.__version__}"
    print(f"{machine}; {len(tables['val'])} val images, batch {args.batch_size}, weights {args.weights}")
    print(f"decode only (tf.data) {decode_rate(args.dataset, tables['val'], args.batch_size):.0f} images/s")
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as out:
        rates = {dtype: bench_dtype(args, tables["val"], dtype, Path(out)) for dtype in dtypes}
    print(f"load average at the end: {', '.join(f'{value:.1f}' for value in os.getloadavg())}")
    for dtype in dtypes[1:]:
        similarity = cosines(rates[dtypes[0]].embeddings, rates[dtype].embeddings)
        print(f"cosine {dtype} vs {dtypes[0]}: min {similarity.min():.6f}, mean {similarity.mean():.6f}")


if __name__ == "__main__":
    main()
