"""`hpo embed`: run a frozen base (VGG-Face or dlib's ResNet) over FairFace once and cache the embeddings."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import click

from data.errors import ConfigError
from data.fairface import SPLIT_NAMES
from model.bases import BASE_NAMES, DEFAULT_BASE
from search.cli.options import (
    batch_size_option,
    cache_option,
    dataset_option,
    pass_settings,
    weights_option,
    workdir_option,
)
from search.cli.output import ProgressLine
from search.settings import Settings

if TYPE_CHECKING:
    from data.embed import EmbedReport

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
    help="Augmented embeddings stored per train image, next to the clean one: JPEG quality 27-41 and "
    "coarse dropout, as the authors' imgaug settings drew. Each view is one more base pass over the train "
    "images, so the default stays 0 (cheap); the paper augmented every train image afresh each epoch "
    "(plus rotation, shift, zoom and flip, not done here), and docker compose embeds 4 (AUGMENT_VIEWS).",
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
@pass_settings
def embed(
    settings: Settings,
    split_name: str,
    splits: str | None,
    augment_views: int,
    augment_seed: int,
    base_name: str,
    dtype: str,
    batch_size: int,
    limit: int | None,
    part: str,
    shard_size: int,
    strict: bool,
) -> None:
    """Embed FairFace images with the frozen base into the cache (once; resumable).

    \b
    Examples:
      hpo embed --dataset ~/fairface --cache work/cache --augment-views 4
      hpo embed --dataset ~/fairface --cache work/dlib-cache --base dlib-resnet

    A killed run resumes where it stopped; a finished cache is left as it is.
    """
    from data.embed import EmbedOptions
    from search.embedding import embed_dataset

    options = EmbedOptions(
        augment_views=augment_views,
        augment_seed=augment_seed,
        batch_size=batch_size,
        shard_size=shard_size,
        part=parse_part(part),
        strict=strict,
    )
    wanted = None if splits is None else [name.strip() for name in splits.split(",") if name.strip()]
    progress = ProgressLine(sys.stderr)
    started = time.monotonic()
    run = embed_dataset(
        settings,
        base_name=base_name,
        dtype=dtype,
        split=split_name,
        splits=wanted,
        limit=limit,
        options=options,
        on_progress=progress,
    )
    progress.close()
    click.echo(summary(run.report, settings.cache_dir, time.monotonic() - started, options.part))
    for line in run.notes:
        click.echo(line)


def parse_part(text: str) -> tuple[int, int]:
    """``"i/N"`` -> (i, N), with 0 <= i < N."""
    index, _, parts = text.partition("/")
    if not (index.isdigit() and parts.isdigit()) or not 0 <= int(index) < int(parts):
        raise ConfigError(
            f"--shard {text!r}: expected i/N with 0 <= i < N, e.g. --shard 0/2 and --shard 1/2."
        )
    return int(index), int(parts)


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
