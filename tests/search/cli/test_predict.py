from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest
from support import FIXTURE, RunHpo

from data.images import image_batches
from data.labels import AGE, GENDER, RACE
from model.bases import resolve_base
from model.export import load_export
from model.head import HeadConfig, LayerSpec
from model.network import build_head

CONFIG = HeadConfig(layers=(LayerSpec(16, "relu", 0.0),))
FACES = ["val/1.jpg", "val/2.jpg", "val/3.jpg"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, save_random_base_export: Callable[..., Path]) -> Path:
    keras.utils.set_random_seed(1)
    head = build_head(CONFIG, 512)
    kernel, bias = head.get_layer("dense_0").get_weights()
    head.get_layer("dense_0").set_weights([kernel / 300.0, bias])  # probabilities away from 0 and 1
    out = tmp_path_factory.mktemp("export") / "model"
    fingerprint = resolve_base("vggface", "random:0").description
    return save_random_base_export(head, CONFIG, out, cache_fingerprint=fingerprint, study={})


@pytest.fixture(scope="module")
def expected(model_dir: Path) -> dict[str, np.ndarray]:
    """The model's own outputs on FACES, computed here without the command."""
    model = load_export(model_dir).model
    images = np.concatenate([batch.numpy() for _, batch in image_batches(FIXTURE, FACES, batch_size=8)])
    return {name: np.asarray(value) for name, value in model.predict(images, verbose=0).items()}


@pytest.fixture
def faces(tmp_path: Path) -> list[str]:
    for name in FACES:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(FIXTURE / name, tmp_path / name)
    return [str(tmp_path / name) for name in FACES]


def test_predict_prints_top_label_per_head(
    run_hpo: RunHpo, model_dir: Path, expected: dict[str, np.ndarray], faces: list[str]
) -> None:
    code, out, err = run_hpo("predict", "--model", str(model_dir), *faces)
    assert (code, err) == (0, "")
    lines = []
    for i, face in enumerate(faces):
        age, race, male = expected["age"][i], expected["race"][i], float(expected["gender"][i, 0])
        gender, p = ("Male", male) if male >= 0.5 else ("Female", 1.0 - male)
        lines += [
            face,
            f"  age:    {AGE[age.argmax()]} ({age.max():.3f})",
            f"  race:   {RACE[race.argmax()]} ({race.max():.3f})",
            f"  gender: {gender} ({p:.3f})",
        ]
    assert out == "\n".join(lines) + "\n"


def test_predict_json_top_k(
    run_hpo: RunHpo, model_dir: Path, expected: dict[str, np.ndarray], faces: list[str]
) -> None:
    code, out, _ = run_hpo("predict", "--model", str(model_dir), "--json", "--top-k", "3", *faces)
    assert code == 0
    rows = json.loads(out)
    assert [row["image"] for row in rows] == faces
    for i, row in enumerate(rows):
        assert set(row) == {"image", "age", "race", "gender"}
        order = np.argsort(-expected["age"][i], kind="stable")[:3]
        assert [pick["label"] for pick in row["age"]] == [AGE[c] for c in order]
        assert [pick["probability"] for pick in row["age"]] == pytest.approx(
            expected["age"][i][order], abs=1e-6
        )
        assert len(row["race"]) == 3
        # Gender has two labels: top-3 gives both, most probable first, summing to 1.
        assert sorted(pick["label"] for pick in row["gender"]) == list(GENDER)
        male = float(expected["gender"][i, 0])
        assert {p["label"]: p["probability"] for p in row["gender"]} == pytest.approx(
            {"Male": male, "Female": 1.0 - male}, abs=1e-6
        )


def test_predict_names_unreadable_files_and_prints_the_rest(
    run_hpo: RunHpo, model_dir: Path, faces: list[str], tmp_path: Path
) -> None:
    notes = tmp_path / "notes.jpg"
    notes.write_text("this is not an image")
    missing = tmp_path / "missing.jpg"
    code, out, err = run_hpo(
        "predict", "--model", str(model_dir), "--json", faces[0], str(notes), str(missing), faces[1]
    )
    assert code == 2
    assert [row["image"] for row in json.loads(out)] == [faces[0], faces[1]]
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"hpo: error: cannot label {notes}: ")
    assert lines[1].startswith(f"hpo: error: cannot label {missing}: ")
    assert lines[1] == f"hpo: error: cannot label {missing}: no such file"


def test_predict_model_dir_missing_a_file(
    run_hpo: RunHpo, model_dir: Path, faces: list[str], tmp_path: Path
) -> None:
    copy = tmp_path / "broken"
    shutil.copytree(model_dir, copy, copy_function=lambda src, dst: Path(dst).hardlink_to(src))
    (copy / "model.keras").unlink()
    code, out, err = run_hpo("predict", "--model", str(copy), faces[0])
    assert (code, out) == (2, "")
    assert err == (
        f"hpo: error: model directory {copy} is missing model.keras (listed in its model_card.json); "
        "copy the whole directory or export the model again.\n"
    )
