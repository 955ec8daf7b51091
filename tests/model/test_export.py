from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest
from support import FIXTURE

from data.cache import Cache, open_cache
from data.errors import CacheError, ConfigError
from data.images import DECODER
from model.bases import resolve_base
from model.export import (
    CARD,
    ExportedModel,
    check_cache_matches,
    compute_dtypes,
    load_export,
    read_card,
)
from model.head import HeadConfig, LayerSpec
from model.metrics import predicted_classes
from model.network import build_head
from model.predict import Predictor, class_probabilities, head_outputs, image_outputs
from search.cli import main

CONFIG = HeadConfig(layers=(LayerSpec(32, "relu", 0.2), LayerSpec(16, "tanh", 0.0)))
# Outputs of one model, run twice in different processes on different batch sizes, agree to this.
ATOL = 1e-5
CARD_KEYS = {
    "format_version",
    "created",
    "code_version",
    "kind",
    "base",
    "input",
    "outputs",
    "vocabularies",
    "preprocessing",
    "decoder",
    "signatures",
    "compute_dtype",
    "class_weights",
    "parts",
    "weights",
    "head_config",
    "study",
    "validation_metrics",
    "cache_fingerprint",
    "files",
}

# Loads the export in a fresh interpreter, safe mode, and runs both model.keras and the SavedModel.
FRESH_PROCESS = """
import sys
import numpy as np, keras, tensorflow as tf
from pathlib import Path
from data.images import image_batches
export, root, out, *files = sys.argv[1:]
model = keras.saving.load_model(Path(export) / "model.keras", safe_mode=True)
images = np.concatenate([batch.numpy() for _, batch in image_batches(Path(root), files, batch_size=3)])
serve = tf.saved_model.load(str(Path(export) / "saved_model")).signatures["serving_default"]
keras_out = model.predict(images, batch_size=5, verbose=0)
saved_out = serve(image=tf.constant(images))
arrays = {"keras_" + k: v for k, v in keras_out.items()}
arrays.update({"saved_" + k: v.numpy() for k, v in saved_out.items()})
np.savez(out, **arrays)
"""

# In a fresh interpreter: the SavedModel's two signatures on the same files, the uint8 one fed by the
# pipeline's decoder (what `hpo evaluate --dataset` runs), the bytes one fed the files as they are.
FRESH_BYTES = """
import sys
import numpy as np, tensorflow as tf
from pathlib import Path
from data.images import image_batches
export, out, *paths = sys.argv[1:]
loaded = tf.saved_model.load(str(Path(export) / "saved_model"))
images = np.concatenate([batch.numpy() for _, batch in image_batches(Path(), paths, batch_size=8)])
pixels = loaded.signatures["serving_default"](image=tf.constant(images))
encoded = loaded.signatures["serve_bytes"](image_bytes=tf.constant([Path(p).read_bytes() for p in paths]))
arrays = {"pixels_" + k: v.numpy() for k, v in pixels.items()}
arrays.update({"bytes_" + k: v.numpy() for k, v in encoded.items()})
np.savez(out, **arrays)
"""


def small_head() -> keras.Model:
    """A seeded head whose first layer is scaled to the random base's large embeddings (~60 ± 70), so its
    probabilities are spread out instead of saturated at 0 and 1 and a mismatch would show."""
    keras.utils.set_random_seed(0)
    head = build_head(CONFIG, 512)
    kernel, bias = head.get_layer("dense_0").get_weights()
    head.get_layer("dense_0").set_weights([kernel / 300.0, bias])
    return head


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    path = tmp_path_factory.mktemp("cache") / "cache"
    where = ["--dataset", str(FIXTURE), "--cache", str(path)]
    main(["embed", *where, "--weights", "random:0", "--splits", "test", "--limit", "8", "--batch-size", "4"])
    return open_cache(path)


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory, cache: Cache, save_random_base_export: Callable[..., Path]
) -> ExportedModel:
    out = save_random_base_export(
        small_head(),
        CONFIG,
        tmp_path_factory.mktemp("export") / "model",
        cache_fingerprint=cache.fingerprint,
        study={"name": None, "trial": None, "objective": None, "value": None, "retrained": False},
        validation_metrics={"age": {"accuracy": 0.5}},
    )
    return load_export(out)


def test_join_model_takes_uint8_image_and_names_outputs(exported: ExportedModel) -> None:
    model = exported.model
    assert [(t.name, t.dtype, t.shape) for t in model.inputs] == [("image", "uint8", (None, 224, 224, 3))]
    assert {name: tuple(t.shape) for name, t in model.output.items()} == {
        "age": (None, 9),
        "race": (None, 7),
        "gender": (None, 1),
    }
    assert exported.head.input_shape == (None, 512)


def test_export_in_fresh_process_equals_head_on_cached_embeddings(
    exported: ExportedModel, cache: Cache, tmp_path: Path
) -> None:
    files = list(cache.files("test"))
    out = tmp_path / "outputs.npz"
    command = [sys.executable, "-c", FRESH_PROCESS, str(exported.path), str(FIXTURE), str(out), *files]
    run = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stderr[-3000:]
    fresh = np.load(out)
    reference = head_outputs(exported.head, cache.embeddings("test"))
    for head in ("age", "race", "gender"):
        assert fresh[f"keras_{head}"].shape == reference[head].shape == (8, fresh[f"keras_{head}"].shape[1])
        np.testing.assert_allclose(fresh[f"keras_{head}"], reference[head], rtol=0, atol=ATOL)
        np.testing.assert_allclose(fresh[f"saved_{head}"], reference[head], rtol=0, atol=ATOL)
    # The probabilities are not saturated, so the comparison means something.
    assert 0.05 < float(reference["age"].max(axis=1).min()) < 0.95


def test_model_card_holds_every_field(exported: ExportedModel, cache: Cache) -> None:
    card = exported.card
    assert set(card) == CARD_KEYS
    assert card["cache_fingerprint"] == cache.fingerprint
    assert card["weights"] == cache.fingerprint["weights"] == "random:0"
    assert HeadConfig.from_dict(card["head_config"]) == CONFIG
    assert card["vocabularies"]["age"][4] == "30-39"
    assert card["input"] == {
        "name": "image",
        "shape": [None, 224, 224, 3],
        "dtype": "uint8",
        "color": "RGB",
        "range": "0-255",
    }
    assert (card["kind"], card["base"]) == ("keras", resolve_base("vggface", "random:0").description)
    assert card["parts"] == {"base": "vggface_vgg16", "head": "head"}
    assert card["preprocessing"]["mean_bgr"] == [93.594, 104.7624, 129.1863]
    assert card["decoder"] == dict(DECODER)
    assert card["signatures"]["serve_bytes"]["input"] == {
        "name": "image_bytes",
        "dtype": "string",
        "shape": [None],
    }
    assert card["signatures"]["serve_bytes"]["decoder"] == dict(DECODER)
    assert card["compute_dtype"] == {
        "base": "float32",
        "head_hidden": ["float32"],
        "head_outputs": ["float32"],
    }
    assert card["class_weights"] is None  # this test export says nothing of its training
    assert {"model_card.json", "model.keras", "saved_model/saved_model.pb"} <= set(card["files"])
    assert all((exported.path / name).is_file() for name in card["files"])


def test_read_card_names_the_missing_file(exported: ExportedModel, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(exported.path, copy, copy_function=lambda src, dst: Path(dst).hardlink_to(src))
    (copy / "saved_model" / "saved_model.pb").unlink()
    with pytest.raises(ConfigError, match=r"copy is missing saved_model/saved_model\.pb \(listed in its"):
        read_card(copy)
    (copy / CARD).unlink()
    with pytest.raises(ConfigError, match=r"copy has no model_card\.json; pass a directory written by"):
        read_card(copy)
    with pytest.raises(ConfigError, match=r"nowhere does not exist"):
        read_card(tmp_path / "nowhere")


def test_read_card_refuses_another_format_version(tmp_path: Path) -> None:
    (tmp_path / CARD).write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ConfigError, match="has format version 99; this face-hpo reads version 1"):
        read_card(tmp_path)


def test_check_cache_matches_refuses_other_weights(exported: ExportedModel, cache: Cache) -> None:
    check_cache_matches(exported.card, cache)
    other = {**exported.card, "weights": "random:1"}
    with pytest.raises(
        CacheError, match="embedded with base weights 'random:0', but the model uses 'random:1'"
    ):
        check_cache_matches(other, cache)


def test_check_cache_matches_refuses_another_base(exported: ExportedModel, cache: Cache) -> None:
    made_with = {**exported.card["cache_fingerprint"], "base": "dlib-resnet"}
    with pytest.raises(
        CacheError,
        match=r"was embedded with the vggface base, but the model's head was trained on dlib-resnet "
        r"embeddings; .* Use --dataset, or a cache embedded with --base dlib-resnet\.$",
    ):
        check_cache_matches({**exported.card, "cache_fingerprint": made_with}, cache)


def test_read_card_refuses_an_unknown_kind(exported: ExportedModel, tmp_path: Path) -> None:
    (tmp_path / CARD).write_text(json.dumps({**exported.card, "kind": "onnx", "files": []}))
    with pytest.raises(ConfigError, match=r"has kind 'onnx'; this face-hpo reads keras or head\+predictor"):
        read_card(tmp_path)


def test_image_outputs_leaves_out_undecodable_files(exported: ExportedModel, tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("not an image")
    shutil.copy(FIXTURE / "val" / "1.jpg", tmp_path / "face.jpg")
    indices, outputs = image_outputs(Predictor(exported), tmp_path, ["notes.jpg", "face.jpg"])
    assert indices.tolist() == [1]
    assert outputs["age"].shape == (1, 9) and outputs["gender"].shape == (1, 1)


def test_predicted_classes_and_probabilities_of_gender() -> None:
    outputs = {
        "age": np.array([[0.1, 0.9] + [0.0] * 7, [0.6, 0.4] + [0.0] * 7]),
        "race": np.array([[0.0] * 6 + [1.0], [1.0] + [0.0] * 6]),
        "gender": np.array([[0.5], [0.2]]),
    }
    assert predicted_classes(outputs).tolist() == [[1, 6, 1], [0, 0, 0]]
    assert class_probabilities(outputs)["gender"].tolist() == [[0.5, 0.5], [0.8, 0.2]]


@pytest.mark.slow
def test_saved_model_bytes_signature_equals_uint8_signature_in_fresh_process(
    exported: ExportedModel, tmp_path: Path
) -> None:
    from PIL import Image

    # A fixture JPEG as it is (224 x 224), the same face re-encoded at another size (resized in the
    # graph) and as a PNG.
    face = FIXTURE / "val" / "1.jpg"
    with Image.open(face) as image:
        image.resize((300, 260)).save(tmp_path / "wide.jpg", quality=90)
        image.save(tmp_path / "face.png")
    paths = [str(face), str(tmp_path / "wide.jpg"), str(tmp_path / "face.png")]
    out = tmp_path / "outputs.npz"
    command = [sys.executable, "-c", FRESH_BYTES, str(exported.path), str(out), *paths]
    run = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stderr[-3000:]
    fresh = np.load(out)
    for head in ("age", "race", "gender"):
        assert (
            fresh[f"bytes_{head}"].shape
            == fresh[f"pixels_{head}"].shape
            == (3, fresh[f"bytes_{head}"].shape[1])
        )
        np.testing.assert_allclose(fresh[f"bytes_{head}"], fresh[f"pixels_{head}"], rtol=0, atol=ATOL)
    # The three inputs give three different outputs, so equality is not one output repeated.
    assert len({tuple(np.round(row, 6)) for row in fresh["bytes_age"]}) == 3


def test_compute_dtypes_name_a_mixed_precision_head_after_saving(tmp_path: Path) -> None:
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        head = build_head(CONFIG, 16)
    finally:
        keras.config.set_dtype_policy(previous)
    head.save(tmp_path / "head.keras")
    loaded = keras.saving.load_model(tmp_path / "head.keras", safe_mode=True)
    assert compute_dtypes("float32", loaded) == {
        "base": "float32",
        "head_hidden": ["mixed_bfloat16"],
        "head_outputs": ["float32"],
    }
