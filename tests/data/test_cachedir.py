from __future__ import annotations

import os
from pathlib import Path

import pytest

from data.cachedir import check_cache_dir, claim_cache_dir
from data.errors import CacheError
from data.shards import build_record

BUILD = build_record({"w": 1}, counts={"train": 4}, views={"train": 1}, shard_size=2, batch_size=2)


def test_claim_refuses_a_second_writer_of_the_part_naming_the_holder(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    holder = rf"\(pid {os.getpid()} on [^)]+\)"
    refused = rf"^the cache at {cache} is being written by another `hpo embed` {holder} as --shard 0/1; "
    with claim_cache_dir(cache, (0, 1)):
        assert (cache / ".embed-0-of-1.lock").read_text().startswith(f"pid {os.getpid()} on ")
        with (
            pytest.raises(CacheError, match=refused + "wait for it to finish"),
            claim_cache_dir(cache, (0, 1)),
        ):
            pass
    assert [p.name for p in cache.iterdir()] == []  # the lock file goes with its holder


def test_claim_parts_of_one_n_side_by_side_other_n_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    overlap = (
        r"as --shard [01]/2, whose shards overlap --shard 0/3; all parts of one cache must use the same N"
    )
    with claim_cache_dir(cache, (0, 2)), claim_cache_dir(cache, (1, 2)):
        refused = pytest.raises(CacheError, match=overlap)
        with refused, claim_cache_dir(cache, (0, 3)):
            pass


def test_claim_lock_left_by_a_killed_writer_blocks_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / ".embed-0-of-1.lock").write_text("pid 1 on gone\n")  # its holder died: nobody holds it
    (cache / ".embed-0-of-2.lock").write_text("pid 1 on gone\n")
    assert check_cache_dir(cache, BUILD) is False  # an empty cache directory, as far as writing goes
    with claim_cache_dir(cache, (0, 1)):
        pass


def test_claim_removes_the_directory_it_made_when_the_run_fails_before_writing(tmp_path: Path) -> None:
    cache = tmp_path / "new"
    with pytest.raises(RuntimeError), claim_cache_dir(cache, (0, 1)):
        raise RuntimeError("no weights")
    assert not cache.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(RuntimeError), claim_cache_dir(existing, (0, 1)):
        raise RuntimeError("no weights")
    assert existing.is_dir()
