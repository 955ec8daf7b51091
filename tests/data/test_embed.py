from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import FIXTURE

from data.augment import AUGMENTATION
from data.cache import SHARDS, open_cache
from data.embed import EmbedOptions, EmbedReport, cache_fingerprint, plan_embedding, run_embedding
from data.errors import CacheError, ConfigError, DatasetError
from data.fairface import Table, load_split
from data.images import decode_error

DIM = 8
OPTIONS = EmbedOptions(batch_size=3, shard_size=4)


def tiny_encoder(calls: list[int] | None = None) -> Callable[[tf.Tensor], np.ndarray]:
    """A real (tiny, seeded) Keras base: strided conv + average pooling -> 8-d, as one tf.function."""
    model = keras.Sequential(
        [
            keras.Input((224, 224, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(
                DIM, 8, strides=8, kernel_initializer=keras.initializers.GlorotUniform(seed=0)
            ),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )

    @tf.function(input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.uint8)])
    def forward(images: tf.Tensor) -> tf.Tensor:
        return model(tf.cast(images, tf.float32), training=False)

    def encode(images: tf.Tensor) -> np.ndarray:
        if calls is not None:
            calls.append(int(images.shape[0]))
        return forward(images).numpy()

    return encode


ENCODE = tiny_encoder()


def dies_in_second_shard(
    encode: Callable[[tf.Tensor], np.ndarray], calls: list[int]
) -> Callable[[tf.Tensor], np.ndarray]:
    """``encode`` (which appends to ``calls``), interrupted as the second shard starts."""

    def encode_until_interrupted(images: tf.Tensor) -> np.ndarray:
        if len(calls) == 2:  # shard 0 (rows 0-3) took two batches of 3 and 1
            raise KeyboardInterrupt
        return encode(images)

    return encode_until_interrupted


def tables(root: Path = FIXTURE, train: int = 6, val: int = 5) -> dict[str, Table]:
    split = load_split(root, split="official")
    return {"train": split["train"].take(train), "val": split["val"].take(val)}


def fingerprint(
    root: Path = FIXTURE, options: EmbedOptions = OPTIONS, weights: str = "random:0"
) -> dict[str, object]:
    base = {
        "base": "tiny",
        "weights": weights,
        "input_size": 224,
        "preprocessing": {"scale": 1 / 255},
        "pooling": "avg",
        "dtype": "float32",
        "dim": DIM,
    }
    splits = ["train", "val"]
    return cache_fingerprint(
        root, base=base, split="official", split_seed=None, splits=splits, limit=6, options=options
    )


def embed(
    cache: Path,
    options: EmbedOptions = OPTIONS,
    root: Path = FIXTURE,
    encode: Callable[[tf.Tensor], np.ndarray] = ENCODE,
) -> EmbedReport:
    """Plan and run one `hpo embed`-like pass; returns the report."""
    split_tables = tables(root)
    plan = plan_embedding(split_tables, cache, fingerprint(root, options), options)
    return run_embedding(plan, root, encode)


def cache_bytes(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def one_go(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The files of a cache built in one uninterrupted run."""
    path = tmp_path_factory.mktemp("one-go") / "cache"
    embed(path)
    return cache_bytes(path)


def test_run_embedding_records_the_weights_path_beside_the_fingerprint(tmp_path: Path) -> None:
    options = EmbedOptions(batch_size=4, shard_size=4)
    plan = plan_embedding(
        tables(), tmp_path / "cache", fingerprint(options=options), options, weights_path="/w/vgg.h5"
    )
    run_embedding(plan, FIXTURE, ENCODE)
    cache = open_cache(tmp_path / "cache")
    assert cache.manifest["weights_path"] == "/w/vgg.h5"
    assert "weights_path" not in cache.fingerprint  # where the file lies is not what the cache holds


def test_run_embedding_arrays_files_labels_in_csv_order(tmp_path: Path) -> None:
    report = embed(tmp_path / "cache")
    cache = open_cache(tmp_path / "cache")
    assert report.cache is not None and report.remaining == ()
    assert report.embedded == {"train": {0: 6}, "val": {0: 5}}
    expected = tables()
    for split, table in expected.items():
        array = np.load(tmp_path / "cache" / split / "view-0.npy", mmap_mode="r", allow_pickle=False)
        assert array.shape == (len(table), DIM) and array.dtype == np.float32
        assert np.isfinite(array).all()
        assert cache.files(split) == table.files
        np.testing.assert_array_equal(cache.labels(split), table.labels)
    assert cache.files("train") == (
        "train/1.jpg",
        "train/2.jpg",
        "train/3.jpg",
        "train/4.jpg",
        "train/5.jpg",
        "train/6.jpg",
    )
    images = np.stack(
        [tf.io.decode_jpeg(tf.io.read_file(str(FIXTURE / f))).numpy() for f in cache.files("val")]
    )
    np.testing.assert_allclose(cache.embeddings("val"), ENCODE(tf.constant(images)), rtol=1e-6, atol=1e-6)
    assert cache.manifest["fingerprint"]["augmentation"] == {"views": 0, "seed": None, "settings": None}
    assert cache.manifest["layout"] == {"shard_size": 4, "batch_size": 3}


def test_run_embedding_two_parts_equal_one_go(tmp_path: Path, one_go: dict[str, bytes]) -> None:
    first = embed(tmp_path / "cache", EmbedOptions(batch_size=3, shard_size=4, part=(0, 2)))
    assert first.cache is None
    assert [shard.number % 2 for shard in first.remaining] == [1, 1]
    second = embed(tmp_path / "cache", EmbedOptions(batch_size=3, shard_size=4, part=(1, 2)))
    assert second.cache is not None and second.remaining == ()
    assert cache_bytes(tmp_path / "cache") == one_go


def test_run_embedding_interrupted_resumes_to_same_bytes(tmp_path: Path, one_go: dict[str, bytes]) -> None:
    calls: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        embed(tmp_path / "cache", encode=dies_in_second_shard(tiny_encoder(calls), calls))
    assert sorted(p.name for p in (tmp_path / "cache" / SHARDS / "train" / "view-0").iterdir()) == [
        "000000000.json",
        "000000000.npy",
    ]
    with pytest.raises(CacheError, match=r"is incomplete \(1 of 4 shards embedded\)"):
        open_cache(tmp_path / "cache")
    calls.clear()
    report = embed(tmp_path / "cache", encode=tiny_encoder(calls))
    assert report.embedded == {"train": {0: 2}, "val": {0: 5}}
    assert calls == [2, 3, 1, 1]  # train rows 4-5; val rows 0-3 (3 + 1) and 4
    assert cache_bytes(tmp_path / "cache") == one_go


def test_run_embedding_counts_per_shard_sum_to_one_go_after_resume(tmp_path: Path) -> None:
    calls: list[int] = []
    inner = tiny_encoder(calls)

    def counts() -> dict[str, int]:  # running totals, as the dlib encoder keeps its faces found
        return {"images": sum(calls), "batches": len(calls)}

    plan = plan_embedding(tables(), tmp_path / "cache", fingerprint(), OPTIONS)
    with pytest.raises(KeyboardInterrupt):
        run_embedding(plan, FIXTURE, dies_in_second_shard(inner, calls), counts=counts)
    calls.clear()  # a new run, a new encoder: its counts start again at 0
    plan = plan_embedding(tables(), tmp_path / "cache", fingerprint(), OPTIONS)
    report = run_embedding(plan, FIXTURE, inner, counts=counts)
    assert report.cache is not None
    splits = report.cache.manifest["splits"]
    # Shards of 4 rows in batches of 3: train rows 0-3 (3 + 1) and 4-5; val rows 0-3 (3 + 1) and 4.
    assert splits["train"]["encoder_stats"] == [{"images": 6, "batches": 3}]
    assert splits["val"]["encoder_stats"] == [{"images": 5, "batches": 3}]


def test_run_embedding_complete_cache_does_no_work(tmp_path: Path, one_go: dict[str, bytes]) -> None:
    embed(tmp_path / "cache")
    calls: list[int] = []
    report = embed(tmp_path / "cache", encode=tiny_encoder(calls))
    assert (calls, report.embedded, report.cache is not None) == ([], {}, True)
    assert cache_bytes(tmp_path / "cache") == one_go


def test_run_embedding_augmented_views_differ_and_repeat(tmp_path: Path) -> None:
    options = EmbedOptions(augment_views=2, augment_seed=7, batch_size=3, shard_size=4)
    embed(tmp_path / "a", options)
    embed(tmp_path / "b", options, encode=tiny_encoder())
    assert cache_bytes(tmp_path / "a") == cache_bytes(tmp_path / "b")
    cache = open_cache(tmp_path / "a")
    assert (cache.views("train"), cache.views("val")) == (3, 1)
    views = [np.asarray(cache.embeddings("train", v)) for v in range(3)]
    assert all(view.shape == (6, DIM) for view in views)
    assert not np.array_equal(views[0], views[1]) and not np.array_equal(views[1], views[2])
    assert cache.fingerprint["augmentation"] == {"views": 2, "seed": 7, "settings": dict(AUGMENTATION)}


def test_run_embedding_corrupt_image_skipped_and_listed(tmp_path: Path) -> None:
    root = tmp_path / "fairface"
    shutil.copytree(FIXTURE, root)
    (root / "val" / "2.jpg").write_bytes(b"not a jpeg")
    report = embed(tmp_path / "cache", root=root)
    reason = decode_error(root / "val" / "2.jpg")
    assert reason
    assert report.skipped == [{"split": "val", "file": "val/2.jpg", "reason": reason}]
    cache = open_cache(tmp_path / "cache")
    assert cache.files("val") == ("val/1.jpg", "val/3.jpg", "val/4.jpg", "val/5.jpg")
    np.testing.assert_array_equal(cache.labels("val"), tables(root)["val"].labels[[0, 2, 3, 4]])
    assert cache.embeddings("val").shape == (4, DIM)
    assert cache.manifest["skipped"] == [{"split": "val", "file": "val/2.jpg", "reason": reason}]
    assert cache.manifest["splits"]["val"] == {"count": 4, "views": 1, "skipped": 1}


def test_run_embedding_strict_corrupt_image_fails_and_leaves_no_cache(tmp_path: Path) -> None:
    root = tmp_path / "fairface"
    shutil.copytree(FIXTURE, root)
    (root / "train" / "2.jpg").write_bytes(b"not a jpeg")
    options = EmbedOptions(batch_size=3, shard_size=4, strict=True)
    with pytest.raises(
        DatasetError, match=r"^image train/2.jpg \(fairface_label_train.csv line 3\) cannot be decoded"
    ):
        embed(tmp_path / "cache", options, root=root)
    assert not (tmp_path / "cache").exists()


def test_plan_embedding_partial_cache_other_settings_refused(tmp_path: Path) -> None:
    embed(tmp_path / "cache", EmbedOptions(batch_size=3, shard_size=4, part=(0, 2)))
    other = fingerprint(weights="random:1")
    with pytest.raises(
        CacheError, match=r'weights: partial cache has "random:0", this command asks for "random:1"'
    ):
        plan_embedding(tables(), tmp_path / "cache", other, OPTIONS)
    with pytest.raises(CacheError, match=r"batch_size: partial cache has 3, this command asks for 4\."):
        plan_embedding(tables(), tmp_path / "cache", fingerprint(), EmbedOptions(batch_size=4, shard_size=4))


def test_plan_embedding_unusable_cache_paths_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(CacheError, match=r"cannot create cache directory .*/file/cache: .*/file is a file"):
        plan_embedding(tables(), tmp_path / "file" / "cache", fingerprint(), OPTIONS)
    with pytest.raises(CacheError, match=r"exists and is not a directory"):
        plan_embedding(tables(), tmp_path / "file", fingerprint(), OPTIONS)
    with pytest.raises(CacheError, match=r"is not empty and holds no embedding cache"):
        plan_embedding(tables(), tmp_path / "busy", fingerprint(), OPTIONS)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["busy", "file", "notes.txt"]


def test_run_embedding_failure_in_first_shard_removes_new_dir(tmp_path: Path) -> None:
    def broken(images: tf.Tensor) -> np.ndarray:
        raise RuntimeError("device lost")

    with pytest.raises(RuntimeError, match="device lost"):
        embed(tmp_path / "new" / "cache", encode=broken)
    assert not (tmp_path / "new" / "cache").exists()


def test_plan_embedding_augment_views_without_train_refused() -> None:
    only_val = {"val": tables()["val"]}
    options = EmbedOptions(augment_views=1)
    with pytest.raises(
        ConfigError, match=r"--augment-views 1 augments the train split, which is not being embedded"
    ):
        plan_embedding(only_val, Path("unused"), fingerprint(options=options), options)
