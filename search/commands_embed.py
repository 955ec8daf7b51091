"""`hpo embed`: run the frozen VGG-Face base over FairFace once and store the embeddings in the cache."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

import click

from data.errors import ConfigError
from data.fairface import SPLIT_NAMES
from search.settings import resolve_settings

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf

    from data.embed import EmbedReport
    from data.fairface import Table
    from model.vggface import WeightsSource

PAPER_SPLIT_SEED = 42  # the authors' shuffle seed; the official split has no randomness
SKIPPED_SHOWN = 10


@click.command()
@click.option("--dataset", type=click.Path(path_type=Path), help="FairFace root [env HPO_DATASET].")
@click.option(
    "--cache", type=click.Path(path_type=Path), help="Cache directory [env HPO_CACHE; <workdir>/cache]."
)
@click.option(
    "--split",
    "split_name",
    type=click.Choice(SPLIT_NAMES),
    default="paper",
    show_default=True,
    help="paper: the authors' train/test cut of the train CSV, official val; official: the two CSVs.",
)
@click.option(
    "--splits", help="Comma-separated splits to embed [default: all of the split's: train,val(,test)]."
)
@click.option(
    "--augment-views",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Augmented embeddings stored per train image, next to the clean one.",
)
@click.option("--augment-seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--weights", help="Weights file, 'vggface' or random:SEED [env HPO_WEIGHTS; vggface].")
@click.option(
    "--dtype",
    type=click.Choice(["float32", "bfloat16"]),
    default="float32",
    show_default=True,
    help="Compute dtype of the convolutions; recorded in the fingerprint.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), help="Embed only the first N rows of each split.")
@click.option(
    "--shard",
    "part",
    default="0/1",
    show_default=True,
    help="i/N: embed only part i of N, for several machines sharing one cache directory.",
)
@click.option(
    "--shard-size",
    type=click.IntRange(min=1),
    default=2048,
    show_default=True,
    help="Rows per shard, the unit of resume and of --shard.",
)
@click.option("--strict", is_flag=True, help="Fail on an undecodable image instead of skipping it.")
@click.option("--workdir", type=click.Path(path_type=Path), help="Work directory [env HPO_WORKDIR; ./work].")
def embed(
    dataset: Path | None,
    cache: Path | None,
    split_name: str,
    splits: str | None,
    augment_views: int,
    augment_seed: int,
    weights: str | None,
    dtype: str,
    batch_size: int,
    limit: int | None,
    part: str,
    shard_size: int,
    strict: bool,
    workdir: Path | None,
) -> None:
    """Embed FairFace images with the frozen base into the cache (once; resumable).

    \b
    Example:
      hpo embed --dataset ~/fairface --cache work/cache --augment-views 4

    A killed run resumes where it stopped; a finished cache is left as it is.
    """
    flags = {"dataset": dataset, "cache": cache, "weights": weights, "workdir": workdir}
    settings = resolve_settings(flags, os.environ)
    if settings.dataset is None:
        raise ConfigError("no FairFace root given; pass --dataset ROOT or set HPO_DATASET.")
    root, shard_part = settings.dataset, parse_part(part)
    tables = load_tables(root, split_name, splits, limit)
    import_tensorflow_quietly()

    from data.embed import EmbedOptions, cache_fingerprint, plan_embedding, run_embedding
    from model.vggface import resolve_weights

    options = EmbedOptions(
        augment_views=augment_views,
        augment_seed=augment_seed,
        batch_size=batch_size,
        shard_size=shard_size,
        part=shard_part,
        strict=strict,
    )
    source = resolve_weights(settings.weights)
    fingerprint = cache_fingerprint(
        root,
        base=base_description(source, dtype),
        split=split_name,
        split_seed=PAPER_SPLIT_SEED if split_name == "paper" else None,
        splits=list(tables),
        limit=limit,
        options=options,
    )
    plan = plan_embedding(tables, settings.cache_dir, fingerprint, options)
    encode = base_encoder(source, dtype)
    progress = ProgressLine(sys.stderr)
    started = time.monotonic()
    report = run_embedding(plan, root, encode, on_progress=progress)
    progress.close()
    click.echo(summary(report, settings.cache_dir, time.monotonic() - started, options.part))


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up notices (oneDNN, CPU features) kept off stderr.

    They are written to file descriptor 2 while the libraries load, before any log level applies,
    and would bury the one-line errors and the summary.
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_tables(root: Path, split_name: str, splits: str | None, limit: int | None) -> dict[str, Table]:
    """The tables to embed, in split order, cut to ``limit`` rows, with every image present."""
    from data.fairface import check_images, load_split

    available = load_split(root, split=split_name, seed=PAPER_SPLIT_SEED)
    wanted = (
        list(available) if splits is None else [name.strip() for name in splits.split(",") if name.strip()]
    )
    unknown = [name for name in wanted if name not in available]
    if unknown or not wanted:
        raise ConfigError(
            f"--splits {splits!r}: the {split_name} split has {', '.join(available)}; "
            f"choose among them, e.g. --splits {','.join(available)}."
        )
    tables = {name: available[name] for name in available if name in wanted}
    if limit is not None:
        tables = {name: table.take(limit) for name, table in tables.items()}
    for table in tables.values():
        check_images(root, table)
    return tables


def parse_part(text: str) -> tuple[int, int]:
    """``"i/N"`` -> (i, N), with 0 <= i < N."""
    index, _, parts = text.partition("/")
    if not (index.isdigit() and parts.isdigit()) or not 0 <= int(index) < int(parts):
        raise ConfigError(
            f"--shard {text!r}: expected i/N with 0 <= i < N, e.g. --shard 0/2 and --shard 1/2."
        )
    return int(index), int(parts)


def base_description(source: WeightsSource, dtype: str) -> dict[str, object]:
    """The fingerprint's account of the VGG-Face base: weights, preprocessing, pooling, dtype, dim."""
    from model.vggface import BASE_DIM, INPUT_SHAPE, PREPROCESSING

    return {
        "base": "vggface",
        "weights": source.identity,
        "input_size": INPUT_SHAPE[0],
        "preprocessing": PREPROCESSING,
        "pooling": "avg",
        "dtype": dtype,
        "dim": BASE_DIM,
    }


def base_encoder(source: WeightsSource, dtype: str) -> Callable[[tf.Tensor], np.ndarray]:
    """The base as one compiled call: uint8 [B, 224, 224, 3] -> (B, 512) float32 numpy."""
    import tensorflow as tf

    from model.vggface import INPUT_SHAPE, build_base

    model = build_base(source, dtype=dtype)

    # A tf.function call runs about twice as fast as model.predict on small batches here; the fixed
    # signature keeps the last, shorter batch of a shard from retracing.
    @tf.function(input_signature=[tf.TensorSpec([None, *INPUT_SHAPE], tf.uint8)])
    def forward(images: tf.Tensor) -> tf.Tensor:
        return model(tf.cast(images, tf.float32), training=False)

    return lambda images: forward(images).numpy()


class ProgressLine:
    """images/s and ETA on ``stream``: redrawn in place on a terminal, else a line every ~10 %."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream, self.tty = stream, stream.isatty()
        self.started, self.shown, self.drawn = time.monotonic(), -1, False

    def __call__(self, done: int, total: int) -> None:
        step = 10 * done // max(total, 1)
        if not self.tty and step == self.shown:
            return
        self.shown = step
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 else float("inf")
        text = f"embed: {done}/{total} images  {rate:.1f} images/s  ETA {_duration(eta)}"
        self.stream.write(f"\r{text:<70}" if self.tty else f"{text}\n")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        """End the in-place line so what follows starts on a fresh one."""
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def summary(report: EmbedReport, cache_dir: Path, seconds: float, part: tuple[int, int]) -> str:
    """The end-of-run account: images per split and view, skipped files, time, rate, and the cache."""
    images = sum(count for views in report.embedded.values() for count in views.values())
    lines = [f"embedded {images} images in {seconds:.1f} s ({images / max(seconds, 1e-9):.1f} images/s)"]
    lines += [
        f"  {split:<5} view {view}: {count} images"
        for split, views in report.embedded.items()
        for view, count in sorted(views.items())
    ]
    if report.skipped:
        lines.append(f"skipped {len(report.skipped)} undecodable image(s), listed in the manifest:")
        lines += [f"  {e['split']}: {e['file']}: {e['reason']}" for e in report.skipped[:SKIPPED_SHOWN]]
        if len(report.skipped) > SKIPPED_SHOWN:
            lines.append(f"  ... and {len(report.skipped) - SKIPPED_SHOWN} more")
    else:
        lines.append("skipped 0 images")
    lines.append(_cache_state(report, cache_dir, part))
    return "\n".join(lines)


def _cache_state(report: EmbedReport, cache_dir: Path, part: tuple[int, int]) -> str:
    if report.cache is not None:
        counts: Mapping[str, dict[str, int]] = report.cache.manifest["splits"]
        held = ", ".join(f"{split} {c['count']} x {c['views']} view(s)" for split, c in counts.items())
        skipped = len(report.cache.manifest["skipped"])
        listed = f"; {skipped} skipped image(s) listed in manifest.json" if skipped else ""
        return f"cache complete: {cache_dir} ({held}; dim {report.cache.dim}{listed})"
    parts = part[1]
    missing = sorted({shard.number % parts for shard in report.remaining})
    runs = " and ".join(f"--shard {index}/{parts}" for index in missing)
    return (
        f"cache incomplete: {cache_dir}: {len(report.remaining)} shard(s) remain; run `hpo embed` with the "
        f"same settings and {runs} to finish it (the last part to finish writes the manifest)."
    )
