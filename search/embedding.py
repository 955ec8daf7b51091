"""The embed flow: a FairFace root through a registered base into the embedding cache (`hpo embed`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from data.cachedir import check_cache_base, claim_cache_dir
from data.embed import EmbedOptions, EmbedReport, Progress, cache_fingerprint, plan_embedding, run_embedding
from data.errors import ConfigError
from data.fairface import PAPER_SPLIT_SEED, load_tables
from model.bases import resolve_base
from search.settings import Settings
from search.tfquiet import import_tensorflow_quietly


@dataclass(frozen=True)
class EmbedRun:
    """What an embed run did, and the encoder's own account of it (e.g. faces not found)."""

    report: EmbedReport
    notes: list[str]


def embed_dataset(
    settings: Settings,
    *,
    base_name: str,
    dtype: str,
    split: str,
    splits: Sequence[str] | None,
    limit: int | None,
    options: EmbedOptions,
    on_progress: Progress | None = None,
) -> EmbedRun:
    """Embed ``settings.dataset`` with the base into ``settings.cache_dir``; resumes a partial cache.

    Checks, before any weights are looked for or any image is read, that the cache is not another
    base's and that every image of the chosen splits exists.
    """
    if settings.dataset is None:
        raise ConfigError("no FairFace root given; pass --dataset ROOT or set HPO_DATASET.")
    root = settings.dataset
    check_cache_base(settings.cache_dir, base_name)
    tables = load_tables(root, split, splits, limit)
    import_tensorflow_quietly()
    base = resolve_base(base_name, settings.weights, dtype=dtype)
    fingerprint = cache_fingerprint(
        root,
        base=base.description,
        split=split,
        split_seed=PAPER_SPLIT_SEED if split == "paper" else None,
        splits=list(tables),
        limit=limit,
        options=options,
    )
    plan_embedding(
        tables, settings.cache_dir, fingerprint, options, weights_path=base.weights_path
    )  # refuses a bad cache, writes nothing
    with claim_cache_dir(settings.cache_dir, options.part):
        # Planned again under the lock: a writer that held it may have finished shards, or the cache.
        plan = plan_embedding(
            tables, settings.cache_dir, fingerprint, options, weights_path=base.weights_path
        )
        encode = base.make_encoder()
        try:
            report = run_embedding(plan, root, encode, on_progress=on_progress, counts=encode.stats)
        finally:
            encode.close()
    return EmbedRun(report, encode.notes() if report.embedded else [])
