from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from support import FIXTURE, RunHpo

from data.cache import Cache, open_cache
from data.labels import HEADS, VOCABULARIES
from model.export import load_export
from model.head import HeadConfig, LayerSpec
from model.network import build_head
from search.cli import main

CONFIG = HeadConfig(layers=(LayerSpec(16, "relu", 0.0),))
REPORT_FILES = [
    "report.json",
    "report.md",
    "confusion_age.png",
    "confusion_race.png",
    "confusion_gender.png",
    "groups.png",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    """The paper split's test part of the fixture root (its 8 rows), embedded by `hpo embed`."""
    path = tmp_path_factory.mktemp("cache") / "cache"
    main(
        [
            "embed",
            "--dataset",
            str(FIXTURE),
            "--cache",
            str(path),
            "--weights",
            "random:0",
            "--splits",
            "test",
        ]
    )
    return open_cache(path)


@pytest.fixture(scope="module")
def model_dir(
    tmp_path_factory: pytest.TempPathFactory, cache: Cache, save_random_base_export: Callable[..., Path]
) -> Path:
    keras.utils.set_random_seed(2)
    head = build_head(CONFIG, 512)
    # The random base's embeddings of different faces are much alike: standardise the first layer on them
    # so that the head's predictions differ from face to face and the counts below are not one column.
    embeddings = np.asarray(cache.embeddings("test"))
    kernel, _ = head.get_layer("dense_0").get_weights()
    mean, scale = embeddings.mean(axis=0) @ kernel, (embeddings @ kernel).std(axis=0) + 1e-6
    head.get_layer("dense_0").set_weights([kernel / scale, -mean / scale])
    out = tmp_path_factory.mktemp("export") / "model"
    return save_random_base_export(
        head, CONFIG, out, cache_fingerprint=cache.fingerprint, study={"name": "s", "trial": 3}
    )


def hand_report(model_dir: Path, cache: Cache) -> dict[str, dict[str, Any]]:
    """Per head, the confusion matrix and figures counted one sample at a time."""
    outputs = load_export(model_dir).head.predict(np.asarray(cache.embeddings("test")), verbose=0)
    labels = cache.labels("test")
    predicted = {
        "age": outputs["age"].argmax(axis=1),
        "race": outputs["race"].argmax(axis=1),
        "gender": (outputs["gender"][:, 0] >= 0.5).astype(int),
    }
    report: dict[str, dict[str, Any]] = {}
    for column, head in enumerate(HEADS):
        k = len(VOCABULARIES[head])
        matrix = [[0] * k for _ in range(k)]
        for true, guess in zip(labels[:, column], predicted[head], strict=True):
            matrix[int(true)][int(guess)] += 1
        hits = sum(matrix[i][i] for i in range(k))
        present = [i for i in range(k) if sum(matrix[i]) > 0]
        recall = {VOCABULARIES[head][i]: matrix[i][i] / sum(matrix[i]) for i in present}
        report[head] = {
            "confusion_matrix": matrix,
            "accuracy": hits / len(labels),
            "balanced_accuracy": sum(recall.values()) / len(present),
            "recall": recall,
        }
    return report


def test_evaluate_cache_report_equals_hand_count(
    run_hpo: RunHpo, model_dir: Path, cache: Cache, tmp_path: Path
) -> None:
    code, out, err = run_hpo(
        "evaluate",
        "--model",
        str(model_dir),
        "--cache",
        str(cache.path),
        "--out",
        str(tmp_path / "eval"),
    )
    assert code == 0, err
    assert out.splitlines() == [str(tmp_path / "eval" / name) for name in REPORT_FILES]
    assert err.startswith("8 images: age accuracy ")
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["count"] == 8
    assert report["source"] == {
        "model": str(model_dir),
        "study": "s",
        "trial": 3,
        "base": "vggface",
        "weights": "random:0",
        "split": "test",
        "from": "cache",
        "cache": str(cache.path),
    }
    expected_heads = hand_report(model_dir, cache)
    # Every head predicts more than one class here, so the counts are a real test.
    assert all(np.count_nonzero(np.sum(e["confusion_matrix"], axis=0)) > 1 for e in expected_heads.values())
    for head, expected in expected_heads.items():
        got = report["heads"][head]
        assert got["confusion_matrix"] == expected["confusion_matrix"]
        assert got["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
        assert got["balanced_accuracy"] == pytest.approx(expected["balanced_accuracy"], abs=1e-12)
        recall = {name: got["classes"][name]["recall"] for name in expected["recall"]}
        assert recall == pytest.approx(expected["recall"], abs=1e-12)


def test_evaluate_images_agree_with_cache(
    run_hpo: RunHpo, model_dir: Path, cache: Cache, tmp_path: Path
) -> None:
    for source in (["--cache", str(cache.path)], ["--dataset", str(FIXTURE)]):
        code, _, err = run_hpo(
            "evaluate", "--model", str(model_dir), *source, "--out", str(tmp_path / source[0][2:])
        )
        assert code == 0, err
    from_cache = json.loads((tmp_path / "cache" / "report.json").read_text())
    from_images = json.loads((tmp_path / "dataset" / "report.json").read_text())
    assert from_images["source"]["from"] == "images" and from_images["source"]["skipped"] == []
    assert from_images["heads"] == from_cache["heads"]
    assert from_images["count"] == from_cache["count"] == 8


def test_evaluate_refuses_cache_of_other_weights(
    run_hpo: RunHpo, model_dir: Path, cache: Cache, tmp_path: Path
) -> None:
    other = tmp_path / "other-cache"
    shutil.copytree(cache.path, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["fingerprint"]["weights"] = "sha256:" + "ab" * 32
    (other / "manifest.json").write_text(json.dumps(manifest))
    code, out, err = run_hpo(
        "evaluate", "--model", str(model_dir), "--cache", str(other), "--out", str(tmp_path / "eval")
    )
    assert (code, out) == (2, "")
    assert err == (
        f"hpo: error: the cache at {other} was embedded with base weights 'sha256:{'ab' * 32}', but the "
        "model uses 'random:0'; its embeddings do not fit this model's head. Use --dataset, or a cache built "
        "with those weights.\n"
    )
    assert not (tmp_path / "eval").exists()


def test_evaluate_refuses_both_sources(run_hpo: RunHpo, model_dir: Path, cache: Cache) -> None:
    code, _, err = run_hpo(
        "evaluate",
        "--model",
        str(model_dir),
        "--cache",
        str(cache.path),
        "--dataset",
        str(FIXTURE),
        "--out",
        "unused",
    )
    assert code == 2
    assert (
        err
        == "hpo: error: give one of --dataset and --cache, not both: they are two ways to the same report.\n"
    )


def test_evaluate_model_dir_missing_its_card(run_hpo: RunHpo, cache: Cache, tmp_path: Path) -> None:
    code, _, err = run_hpo(
        "evaluate",
        "--model",
        str(tmp_path),
        "--cache",
        str(cache.path),
        "--out",
        str(tmp_path / "eval"),
    )
    assert code == 2
    assert err == (
        f"hpo: error: model directory {tmp_path} has no model_card.json; pass a directory written by "
        "`hpo export-best --out`.\n"
    )


def test_evaluate_partial_dataset_refused_then_allowed(
    run_hpo: RunHpo, model_dir: Path, cache: Cache, tmp_path: Path
) -> None:
    root = tmp_path / "fairface"
    shutil.copytree(FIXTURE, root)
    gone = sorted(cache.files("test"))[:3]
    for name in gone:
        (root / name).unlink()
    evaluate = ["evaluate", "--model", str(model_dir), "--dataset", str(root)]
    code, out, err = run_hpo(*evaluate, "--out", str(tmp_path / "refused"))
    assert (code, out) == (2, "")
    first = next(name for name in cache.files("test") if name in gone)  # in the split's row order
    assert err == (
        f"hpo: error: 5 of 8 test images present, 62.5 % under {root} (first missing: {first}); a report "
        "to set beside the paper's needs at least 99 %. Pass --allow-partial to evaluate the 5 present, "
        "or --dataset a FairFace root that holds the whole split.\n"
    )
    assert not (tmp_path / "refused").exists()
    code, out, err = run_hpo(*evaluate, "--allow-partial", "--out", str(tmp_path / "eval"))
    assert code == 0, err
    assert "coverage: 5 of 8 test images present, 62.5 %\n" in err
    assert str(tmp_path / "eval" / "missing_images.txt") in out.splitlines()
    listed = (tmp_path / "eval" / "missing_images.txt").read_text().splitlines()
    assert sorted(listed) == gone
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["count"] == 5
    assert report["coverage"] == {
        "split": "test",
        "total": 8,
        "present": 5,
        "fraction": 5 / 8,
        "missing": "missing_images.txt",
    }
    assert "- coverage: 5 of 8 test images present, 62.5 %" in (tmp_path / "eval" / "report.md").read_text()
