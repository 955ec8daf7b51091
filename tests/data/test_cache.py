from __future__ import annotations

import io
import json
from pathlib import Path
from typing import IO

import numpy as np
import pytest

from data.cache import SHARDS, check_fingerprint, count_done_shards, fingerprint_differences, open_cache
from data.errors import CacheError
from data.shards import build_record, finalize, shard_done, shard_grid, write_atomic, write_shard

DIM = 4
FINGERPRINT = {
    "format_version": 1,
    "weights": "random:0",
    "dim": DIM,
    "augmentation": {"views": 1, "seed": 3, "settings": {"jpeg_quality": (25, 40)}},
    "limit": None,
}
COUNTS = {"train": 5, "val": 3}
VIEWS = {"train": 2, "val": 1}
LABELS = {
    "train": np.arange(15, dtype=np.int8).reshape(5, 3),
    "val": np.arange(100, 109, dtype=np.int8).reshape(3, 3),
}


def embeddings_of(split: str, view: int, rows: list[int]) -> np.ndarray:
    """Distinct, recognisable rows: value = 1000 * view + 10 * row + column (+ 0.5 for val)."""
    offset = 0.5 if split == "val" else 0.0
    return np.array(
        [[1000 * view + 10 * row + column + offset for column in range(DIM)] for row in rows], np.float32
    )


def write_all_shards(path: Path, *, skip: tuple[str, int] | None = None) -> dict[str, object]:
    """Write every shard of a 5 + 3 row cache (shards of 2 rows); ``skip`` = (split, row) undecodable."""
    build = build_record(FINGERPRINT, counts=COUNTS, views=VIEWS, shard_size=2, batch_size=2)
    for shard in shard_grid(build):
        rows = [r for r in range(shard.start, shard.stop) if (shard.split, r) != skip]
        gone = [r for r in range(shard.start, shard.stop) if (shard.split, r) == skip]
        record = {
            "files": [f"{shard.split}/{r + 1}.jpg" for r in rows],
            "rows": rows,
            "skipped": [{"file": f"{shard.split}/{r + 1}.jpg", "reason": "bad"} for r in gone],
        }
        write_shard(path, build, shard, embeddings_of(shard.split, shard.view, rows), record)
    return build


def test_shard_grid_fixed_ranges_per_split_and_view() -> None:
    build = build_record(FINGERPRINT, counts=COUNTS, views=VIEWS, shard_size=2, batch_size=2)
    grid = shard_grid(build)
    assert [(s.number, s.split, s.view, s.start, s.stop) for s in grid] == [
        (0, "train", 0, 0, 2),
        (1, "train", 0, 2, 4),
        (2, "train", 0, 4, 5),
        (3, "train", 1, 0, 2),
        (4, "train", 1, 2, 4),
        (5, "train", 1, 4, 5),
        (6, "val", 0, 0, 2),
        (7, "val", 0, 2, 3),
    ]
    assert build["shards"] == 8


def test_finalize_round_trip_plain_numpy(tmp_path: Path) -> None:
    build = write_all_shards(tmp_path)
    cache = finalize(tmp_path, build, LABELS)
    assert not (tmp_path / SHARDS).exists()
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "manifest.json",
        "train",
        "train/files.txt",
        "train/labels.npy",
        "train/view-0.npy",
        "train/view-1.npy",
        "val",
        "val/files.txt",
        "val/labels.npy",
        "val/view-0.npy",
    ]
    view1 = np.load(tmp_path / "train" / "view-1.npy", mmap_mode="r", allow_pickle=False)
    assert isinstance(view1, np.memmap)
    np.testing.assert_array_equal(view1, embeddings_of("train", 1, [0, 1, 2, 3, 4]))
    np.testing.assert_array_equal(cache.embeddings("val"), embeddings_of("val", 0, [0, 1, 2]))
    np.testing.assert_array_equal(np.load(tmp_path / "val" / "labels.npy", allow_pickle=False), LABELS["val"])
    assert (tmp_path / "train" / "files.txt").read_text() == "".join(f"train/{i}.jpg\n" for i in range(1, 6))
    assert cache.files("train") == tuple(f"train/{i}.jpg" for i in range(1, 6))
    assert (cache.splits, cache.dim, cache.views("train"), cache.views("val")) == (
        ("train", "val"),
        DIM,
        2,
        1,
    )
    assert cache.fingerprint["augmentation"]["settings"]["jpeg_quality"] == [25, 40]
    assert cache.manifest["splits"] == {
        "train": {"count": 5, "views": 2, "skipped": 0},
        "val": {"count": 3, "views": 1, "skipped": 0},
    }


def test_finalize_arrays_equal_np_save_of_concatenation(tmp_path: Path) -> None:
    finalize(tmp_path, write_all_shards(tmp_path), LABELS)
    expected = io.BytesIO()
    np.save(expected, embeddings_of("train", 0, [0, 1, 2, 3, 4]))
    assert (tmp_path / "train" / "view-0.npy").read_bytes() == expected.getvalue()


def test_finalize_skipped_row_left_out_and_listed(tmp_path: Path) -> None:
    cache = finalize(tmp_path, write_all_shards(tmp_path, skip=("train", 2)), LABELS)
    assert cache.files("train") == ("train/1.jpg", "train/2.jpg", "train/4.jpg", "train/5.jpg")
    np.testing.assert_array_equal(cache.labels("train"), LABELS["train"][[0, 1, 3, 4]])
    np.testing.assert_array_equal(cache.embeddings("train", 1), embeddings_of("train", 1, [0, 1, 3, 4]))
    assert cache.manifest["skipped"] == [{"split": "train", "file": "train/3.jpg", "reason": "bad"}]
    assert cache.manifest["splits"]["train"] == {"count": 4, "views": 2, "skipped": 1}


def test_open_cache_missing_says_how_to_build(tmp_path: Path) -> None:
    with pytest.raises(
        CacheError, match=r"no embedding cache at .* \(no manifest.json\); build one with `hpo embed"
    ):
        open_cache(tmp_path)


def test_open_cache_incomplete_counts_shards(tmp_path: Path) -> None:
    build = build_record(FINGERPRINT, counts=COUNTS, views=VIEWS, shard_size=2, batch_size=2)
    shard = shard_grid(build)[0]
    write_shard(
        tmp_path, build, shard, embeddings_of("train", 0, [0, 1]), {"files": [], "rows": [], "skipped": []}
    )
    assert shard_done(tmp_path, shard)
    assert not shard_done(tmp_path, shard_grid(build)[1])
    assert count_done_shards(tmp_path) == (1, 8)
    with pytest.raises(CacheError, match=r"is incomplete \(1 of 8 shards embedded\); run `hpo embed` again"):
        open_cache(tmp_path)


def test_open_cache_expect_lists_every_differing_key(tmp_path: Path) -> None:
    finalize(tmp_path, write_all_shards(tmp_path), LABELS)
    expect = {"weights": "random:1", "dim": DIM, "augmentation": {"views": 2, "seed": 3}}
    with pytest.raises(CacheError) as error:
        open_cache(tmp_path, expect=expect)
    assert str(error.value) == (
        f'the cache at {tmp_path} was built with other settings -- weights: cache has "random:0", '
        'this command asks for "random:1"; augmentation.views: cache has 1, this command asks for 2. '
        f"Use another --cache directory, or delete {tmp_path} to rebuild it."
    )
    assert open_cache(tmp_path, expect={"weights": "random:0", "augmentation": {"seed": 3}}).dim == DIM


def test_fingerprint_differences_tuples_equal_lists_exact_reports_extra_keys() -> None:
    stored = json.loads(json.dumps(FINGERPRINT))
    assert fingerprint_differences(stored, FINGERPRINT, exact=True) == []
    assert fingerprint_differences({**stored, "old": 1}, FINGERPRINT) == []
    assert fingerprint_differences({**stored, "old": 1}, FINGERPRINT, exact=True) == [("old", 1, None)]
    with pytest.raises(CacheError, match=r"limit: partial cache has null, this command asks for 8\."):
        check_fingerprint(Path("c"), stored, {**FINGERPRINT, "limit": 8}, holder="partial cache")


def test_fingerprint_differences_names_the_base_first() -> None:
    stored = {**FINGERPRINT, "base": "dlib-resnet", "dim": 128}
    wanted = {**FINGERPRINT, "weights": "random:1", "base": "vggface"}
    assert fingerprint_differences(stored, wanted) == [
        ("base", "dlib-resnet", "vggface"),
        ("weights", "random:0", "random:1"),
        ("dim", 128, DIM),
    ]


def test_finalize_sums_encoder_stats_of_shards_per_split_and_view(tmp_path: Path) -> None:
    build = write_all_shards(tmp_path)
    for record_path in sorted((tmp_path / SHARDS).glob("*/view-*/*.json")):
        record = json.loads(record_path.read_text())
        view = int(record_path.parent.name.removeprefix("view-"))
        record["encoder_stats"] = {"found": len(record["rows"]), "views": view}
        record_path.write_text(json.dumps(record))
    splits = finalize(tmp_path, build, LABELS).manifest["splits"]
    assert splits["train"]["encoder_stats"] == [{"found": 5, "views": 0}, {"found": 5, "views": 3}]
    assert splits["val"]["encoder_stats"] == [{"found": 3, "views": 0}]


def test_cache_unknown_split_or_view_refused(tmp_path: Path) -> None:
    cache = finalize(tmp_path, write_all_shards(tmp_path), LABELS)
    with pytest.raises(CacheError, match=r"has no split 'test'; it holds train, val\."):
        cache.embeddings("test")
    with pytest.raises(CacheError, match=r"split 'val' .* has no view 1; it holds views 0\.\.0\."):
        cache.embeddings("val", 1)


def test_open_cache_other_format_version_refused(tmp_path: Path) -> None:
    finalize(tmp_path, write_all_shards(tmp_path), LABELS)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "format_version": 0}))
    with pytest.raises(CacheError, match=r"has format version 0, complete=True; this face-hpo reads"):
        open_cache(tmp_path)


def test_write_atomic_failure_leaves_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def fail(handle: IO[bytes]) -> None:
        handle.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, fail)
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]
    assert target.read_bytes() == b"old"


def test_open_cache_missing_array_named(tmp_path: Path) -> None:
    finalize(tmp_path, write_all_shards(tmp_path), LABELS)
    (tmp_path / "train" / "view-1.npy").unlink()
    with pytest.raises(
        CacheError, match=r"lacks train/view-1\.npy; delete it and rebuild it with `hpo embed`\."
    ):
        open_cache(tmp_path)


def test_open_cache_checks_arrays_and_index_against_the_manifest(tmp_path: Path) -> None:
    finalize(tmp_path, write_all_shards(tmp_path), LABELS)
    view = tmp_path / "train" / "view-1.npy"
    whole = view.read_bytes()
    view.write_bytes(whole[:-4])
    with pytest.raises(
        CacheError,
        match=r"is damaged: train/view-1\.npy has 204 bytes where its float32 \(5, 4\) array needs 208 "
        r"\(truncated or overwritten\); delete .* and rebuild it with `hpo embed`\.$",
    ):
        open_cache(tmp_path)
    np.save(view, np.zeros((5, 4), np.float64))
    with pytest.raises(
        CacheError, match=r"view-1\.npy holds a float64 array of shape \(5, 4\), the manifest"
    ):
        open_cache(tmp_path)
    view.write_bytes(whole)
    (tmp_path / "val" / "files.txt").write_text("val/1.jpg\n")
    with pytest.raises(CacheError, match=r"val/files\.txt lists 1 images where the manifest counts 3"):
        open_cache(tmp_path)


def test_finalize_damaged_shard_named_with_the_fix(tmp_path: Path) -> None:
    build = write_all_shards(tmp_path)
    shard = shard_grid(build)[1]
    (tmp_path / SHARDS / shard.stem.with_suffix(".npy")).write_bytes(b"\x93NUMPY")
    with pytest.raises(
        CacheError, match=rf"shard {shard.stem} of the cache at .* is damaged \(.*\); delete .*json"
    ):
        finalize(tmp_path, build, LABELS)
