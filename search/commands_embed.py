"""`hpo embed`: run a frozen base (VGG-Face or dlib's ResNet) over FairFace once and cache the embeddings."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

import click

from data.cache import MANIFEST, read_build, read_json
from data.errors import CacheError, ConfigError
from data.fairface import SPLIT_NAMES
from model.bases import BASE_NAMES, DEFAULT_BASE, resolve_base
from search.options import batch_size_option, cache_option, dataset_option, weights_option, workdir_option
from search.settings import resolve_settings
from search.tfquiet import import_tensorflow_quietly

if TYPE_CHECKING:
    from data.embed import EmbedReport
    from data.fairface import Table

PAPER_SPLIT_SEED = 42  # the authors' shuffle seed; the official split has no randomness
SKIPPED_SHOWN = 10


@click.command()
@dataset_option()
@cache_option("Cache directory.")
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
@click.option(
    "--base",
    "base_name",
    type=click.Choice(BASE_NAMES),
    default=DEFAULT_BASE,
    show_default=True,
    help="The frozen base: vggface (512-d) or dlib-resnet (128-d; needs the dlib extra).",
)
@weights_option(
    "vggface: weights file, 'vggface' (its default) or random:SEED; dlib-resnet: 'dlib' (its default) or "
    "a directory of its model files."
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "bfloat16"]),
    default="float32",
    show_default=True,
    help="Compute dtype of the convolutions (vggface only); recorded in the fingerprint.",
)
@batch_size_option()
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
@workdir_option()
def embed(
    dataset: Path | None,
    cache: Path | None,
    split_name: str,
    splits: str | None,
    augment_views: int,
    augment_seed: int,
    base_name: str,
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
    Examples:
      hpo embed --dataset ~/fairface --cache work/cache --augment-views 4
      hpo embed --dataset ~/fairface --cache work/dlib-cache --base dlib-resnet

    A killed run resumes where it stopped; a finished cache is left as it is.
    """
    flags = {"dataset": dataset, "cache": cache, "weights": weights, "workdir": workdir}
    settings = resolve_settings(flags, os.environ)
    if settings.dataset is None:
        raise ConfigError("no FairFace root given; pass --dataset ROOT or set HPO_DATASET.")
    root, shard_part = settings.dataset, parse_part(part)
    check_cache_base(settings.cache_dir, base_name)
    tables = load_tables(root, split_name, splits, limit)
    import_tensorflow_quietly()

    from data.embed import EmbedOptions, cache_fingerprint, plan_embedding, run_embedding

    options = EmbedOptions(
        augment_views=augment_views,
        augment_seed=augment_seed,
        batch_size=batch_size,
        shard_size=shard_size,
        part=shard_part,
        strict=strict,
    )
    base = resolve_base(base_name, settings.weights, dtype=dtype)
    fingerprint = cache_fingerprint(
        root,
        base=base.description,
        split=split_name,
        split_seed=PAPER_SPLIT_SEED if split_name == "paper" else None,
        splits=list(tables),
        limit=limit,
        options=options,
    )
    plan = plan_embedding(tables, settings.cache_dir, fingerprint, options)
    encode = base.make_encoder()
    progress = ProgressLine(sys.stderr)
    started = time.monotonic()
    try:
        report = run_embedding(plan, root, encode, on_progress=progress, counts=encode.stats)
    finally:
        encode.close()
    progress.close()
    click.echo(summary(report, settings.cache_dir, time.monotonic() - started, options.part))
    if report.embedded:
        # The encoder's own account of this run (the manifest holds the whole cache's counts).
        for line in encode.notes():
            click.echo(line)


def check_cache_base(cache_dir: Path, base_name: str) -> None:
    """Refuse, before any weights are looked for, a cache (finished or partial) made with another base."""
    if not cache_dir.is_dir():
        return
    recorded = read_json(cache_dir / MANIFEST) or read_build(cache_dir)
    if recorded is None:
        return
    # Caches made before bases had names were all VGG-Face.
    built_with = recorded.get("fingerprint", {}).get("base", DEFAULT_BASE)
    if built_with != base_name:
        raise CacheError(
            f"the cache at {cache_dir} was built with base {built_with}, this command asks for {base_name}; "
            f"pass --base {built_with} to use it, or another --cache directory for a {base_name} cache."
        )


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
