"""Bad inputs across every command: each is exit code 2, one line on stderr naming the thing and the fix,
no traceback, and no file left behind that was not there before.

Each case builds its input in its own directory (the command's working directory), then runs `hpo` in
this process, or in a fresh one where TensorFlow's C++ output or a fresh Keras home matters. That
directory and the shared world (cache, study, export) are listed before and after the command: the
lists must be equal.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support import FIXTURE, HPO, TINY_SPACE, RunHpo, hpo_env, write_tiny_cache

from data.cache import open_cache
from data.cachedir import claim_cache_dir
from search.artifacts import load_best_head
from search.cli import main
from search.study import open_storage_for, open_study
from search.worker import StopFlag, WorkerSpec, run_worker

pytestmark = pytest.mark.slow

FACE = FIXTURE / "train" / "1.jpg"
TRUNCATED_JPEG = 3000  # bytes kept of a ~10 kB fixture JPEG: its header decodes, its scan data ends early
OFFLINE = "http://127.0.0.1:1"  # a proxy that refuses: downloads fail even where the network is up


@dataclass(frozen=True)
class World:
    """What the cases share, built once: a real random:0 cache of 4 fixture faces per split, a finished
    two-trial study on it with its stored heads, an export of its best head, and a synthetic cache."""

    root: Path
    cache: Path
    url: str
    artifacts: Path
    export: Path
    space: Path
    other_cache: Path  # synthetic, with another fingerprint

    def study(self, *extra: str) -> list[str]:
        """The settings flags that point a command at the world's study, cache and stored heads."""
        where = ["--storage", self.url, "--study", "s", "--cache", str(self.cache)]
        return [*where, "--artifacts", str(self.artifacts), *extra]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, save_random_base_export: Callable[..., Path]) -> World:
    root = tmp_path_factory.mktemp("world")
    cache, space = root / "cache", root / "tiny.toml"
    space.write_text(TINY_SPACE, encoding="utf-8")
    main(["embed", "--dataset", str(FIXTURE), "--cache", str(cache), "--weights", "random:0", "--limit", "4"])
    url, artifacts = f"sqlite:///{root / 'study.db'}", root / "artifacts"
    where = ["--storage", url, "--study", "s", "--cache", str(cache), "--space", str(space)]
    main(["study", "create", *where, "--budget", "2", "--epochs", "2"])
    run_worker(WorkerSpec(url, "s", cache, artifacts), StopFlag())
    head, config, trial = load_best_head(open_study(open_storage_for(url), "s"), artifacts)
    fingerprint = open_cache(cache).fingerprint
    study = {"name": "s", "trial": trial.number}
    export = save_random_base_export(
        head, config, root / "export", cache_fingerprint=fingerprint, study=study
    )
    other = write_tiny_cache(root / "other-cache", seed=1)
    return World(root, cache, url, artifacts, export, space, other)


@dataclass(frozen=True)
class Case:
    """``make(world, here)`` builds the input in ``here`` and returns the `hpo` arguments; the error line
    must contain each of ``says``, formatted with ``here`` and ``w`` (the world)."""

    id: str
    make: Callable[[World, Path], list[str]]
    says: tuple[str, ...]
    fresh: bool = False  # in a new process: TensorFlow's C++ output reaches its stderr there
    env: Mapping[str, str] = field(default_factory=dict)  # values formatted with ``here``


# --- what the cases build ---


def file_at(path: Path, text: str = "x") -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def full_dir(path: Path) -> Path:
    """A directory holding one unrelated file."""
    path.mkdir()
    file_at(path / "notes.txt")
    return path


def truncated(path: Path, size: int) -> Path:
    with path.open("r+b") as handle:
        handle.truncate(size)
    return path


def edit_json(path: Path, edit: Callable[[dict[str, object]], dict[str, object]]) -> None:
    path.write_text(json.dumps(edit(json.loads(path.read_text(encoding="utf-8")))), encoding="utf-8")


def without(mapping: dict[str, object], key: str) -> dict[str, object]:
    return {k: v for k, v in mapping.items() if k != key}


def fairface(here: Path, damage: Callable[[Path], object] = lambda root: None) -> Path:
    """A FairFace root in ``here``: the fixture's label files and its first 4 train and val images,
    then ``damage(root)``."""
    root = here / "fairface"
    root.mkdir()
    for csv in ("fairface_label_train.csv", "fairface_label_val.csv"):
        shutil.copy(FIXTURE / csv, root / csv)
    for split in ("train", "val"):
        (root / split).mkdir()
        for n in range(1, 5):
            shutil.copy(FIXTURE / split / f"{n}.jpg", root / split / f"{n}.jpg")
    damage(root)
    return root


def train_csv_lines(root: Path, edit: Callable[[list[str]], list[str]]) -> None:
    csv = root / "fairface_label_train.csv"
    csv.write_text("\n".join(edit(csv.read_text(encoding="utf-8").splitlines())) + "\n", encoding="utf-8")


def cache_copy(w: World, here: Path, damage: Callable[[Path], object]) -> Path:
    """A copy of the world's cache in ``here``, then ``damage(copy)``."""
    cache = Path(shutil.copytree(w.cache, here / "cache"))
    damage(cache)
    return cache


def export_copy(w: World, here: Path, damage: Callable[[Path], object]) -> Path:
    export = Path(shutil.copytree(w.export, here / "export"))
    damage(export)
    return export


def damaged_build(cache: Path) -> Path:
    """A partial cache whose shards/build.json is an empty object."""
    (cache / "shards").mkdir(parents=True)
    file_at(cache / "shards" / "build.json", "{}")
    return cache


def other_weights(cache: Path) -> None:
    """Make the cache's fingerprint say it was embedded with other weights."""
    manifest = json.loads((cache / "manifest.json").read_text(encoding="utf-8"))
    manifest["fingerprint"]["weights"] = "random:9"
    file_at(cache / "manifest.json", json.dumps(manifest))


def lambda_model(export: Path) -> None:
    """Replace the export's model.keras by one holding a Python lambda (which Keras safe mode refuses)."""
    import keras

    image = keras.Input((224, 224, 3), dtype="uint8", name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Lambda(lambda t: t / 255)(image))
    keras.Model(image, {"age": keras.layers.Dense(9, name="age")(pooled)}).save(export / "model.keras")


def damaged_artifacts(w: World, here: Path) -> Path:
    """A copy of the artifact store with every stored head cut short."""
    store = Path(shutil.copytree(w.artifacts, here / "artifacts"))
    for head in [path for path in store.rglob("*") if path.is_file()]:
        truncated(head, 100)
    return store


def keras_home(here: Path) -> Path:
    """A Keras home holding Keras's own keras.json (which importing Keras would write), nothing else."""
    home = here / "keras"
    home.mkdir()
    config = {
        "floatx": "float32",
        "epsilon": 1e-07,
        "backend": "tensorflow",
        "image_data_format": "channels_last",
    }
    file_at(home / "keras.json", json.dumps(config))
    return home


HELD: list[contextlib.AbstractContextManager[None]] = []  # locks `held_lock` took, released after the case


def held_lock(w: World, here: Path) -> list[str]:
    """`hpo embed` on a cache directory whose lock this (test) process holds, as a running embed would."""
    lock = claim_cache_dir(here / "cache", (0, 1))
    lock.__enter__()
    HELD.append(lock)
    return embed(FIXTURE, here / "cache", "--limit", "2")


# --- the commands ---


def embed(root: Path, cache: Path, *extra: str, weights: str = "random:0") -> list[str]:
    return ["embed", "--dataset", str(root), "--cache", str(cache), "--weights", weights, *extra]


def create(w: World, cache: Path, here: Path, *extra: str, space: Path | None = None) -> list[str]:
    where = ["--storage", f"sqlite:///{here / 'study.db'}", "--cache", str(cache)]
    return ["study", "create", *where, "--space", str(space or w.space), *extra]


def export_best(w: World, out: Path, *extra: str) -> list[str]:
    return ["export-best", *w.study("--weights", "random:0", "--out", str(out)), *extra]


def evaluate(model: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    return ["evaluate", "--model", str(model), "--cache", str(cache), "--out", str(out), *extra]


CASES = [
    # dataset
    Case(
        "dataset-missing",
        lambda w, here: embed(here / "nowhere", here / "c"),
        ("FairFace root {here}/nowhere does not exist", "fairface_label_train.csv"),
    ),
    Case(
        "dataset-not-given",
        lambda w, here: ["embed", "--cache", str(here / "c")],
        ("no FairFace root given", "--dataset ROOT", "HPO_DATASET"),
    ),
    Case(
        "dataset-label-file-missing",
        lambda w, here: embed(
            fairface(here, lambda root: (root / "fairface_label_val.csv").unlink()), here / "c"
        ),
        ("fairface_label_val.csv", "missing"),
    ),
    Case(
        "dataset-unknown-label",
        lambda w, here: embed(
            fairface(
                here,
                lambda root: train_csv_lines(
                    root, lambda rows: [rows[0], rows[1].replace("50-59", "50-60"), *rows[2:]]
                ),
            ),
            here / "c",
        ),
        ("fairface_label_train.csv", "line 2", "50-60"),
    ),
    Case(
        "dataset-missing-column",
        lambda w, here: embed(
            fairface(
                here, lambda root: train_csv_lines(root, lambda rows: [row.rsplit(",", 2)[0] for row in rows])
            ),
            here / "c",
        ),
        ("fairface_label_train.csv", "race"),
    ),
    Case(
        "dataset-image-missing",
        lambda w, here: embed(
            fairface(here, lambda root: (root / "train" / "2.jpg").unlink()),
            here / "c",
            "--split",
            "official",
            "--limit",
            "4",
        ),
        ("train/2.jpg", "fairface_label_train.csv"),
    ),
    # images
    Case(
        "image-truncated-embed-strict",
        lambda w, here: embed(
            fairface(here, lambda root: truncated(root / "train" / "1.jpg", TRUNCATED_JPEG)),
            here / "c",
            "--split",
            "official",
            "--limit",
            "2",
            "--strict",
        ),
        ("image train/1.jpg (fairface_label_train.csv line 2) cannot be decoded", "run without --strict"),
        fresh=True,
    ),
    Case(
        "image-truncated-predict",
        lambda w, here: [
            "predict",
            "--model",
            str(w.export),
            str(truncated(Path(shutil.copy(FACE, here / "face.jpg")), TRUNCATED_JPEG)),
        ],
        ("cannot label {here}/face.jpg", "Invalid JPEG data"),
        fresh=True,
    ),
    Case(
        "image-missing-predict",
        lambda w, here: ["predict", "--model", str(w.export), str(here / "nope.jpg")],
        ("cannot label {here}/nope.jpg: no such file",),
    ),
    # weights
    Case(
        "weights-file-missing",
        lambda w, here: embed(FIXTURE, here / "c", "--limit", "2", weights=str(here / "w.h5")),
        ("weights file {here}/w.h5 does not exist", "--weights PATH"),
    ),
    Case(
        "weights-bad-seed",
        lambda w, here: embed(FIXTURE, here / "c", weights="random:x"),
        ("weights 'random:x'", "non-negative integer"),
    ),
    Case(
        "weights-not-hdf5",
        lambda w, here: embed(FIXTURE, here / "c", "--limit", "2", weights=str(file_at(here / "w.h5"))),
        ("{here}/w.h5 is not a readable HDF5 weights file", "--weights PATH"),
    ),
    Case(
        "weights-vggface-offline",
        lambda w, here: embed(FIXTURE, keras_home(here).parent / "c", "--limit", "2", weights="vggface"),
        ("not in the Keras cache ({here}/keras/models/vggface", "No network?", "--weights PATH"),
        fresh=True,
        env={"KERAS_HOME": "{here}/keras", "https_proxy": OFFLINE, "HTTPS_PROXY": OFFLINE},
    ),
    Case(
        "weights-other-than-the-cache",
        lambda w, here: ["export-best", *w.study("--weights", "random:1", "--out", str(here / "out"))],
        (
            "the cache at {w.cache} was embedded with other vggface settings",
            "Pass the --weights (HPO_WEIGHTS) it was",
        ),
    ),
    # cache
    Case(
        "cache-array-truncated",
        lambda w, here: create(
            w, cache_copy(w, here, lambda cache: truncated(cache / "train" / "view-0.npy", 1000)), here
        ),
        (
            "the cache at {here}/cache is damaged: train/view-0.npy has 1000 bytes",
            "rebuild it with `hpo embed`",
        ),
    ),
    Case(
        "cache-manifest-without-splits",
        lambda w, here: create(
            w,
            cache_copy(
                w, here, lambda cache: edit_json(cache / "manifest.json", lambda m: without(m, "splits"))
            ),
            here,
        ),
        ("the cache at {here}/cache is damaged: its manifest.json has no 'splits' object", "rebuild it"),
    ),
    Case(
        "cache-manifest-not-json",
        lambda w, here: create(
            w, cache_copy(w, here, lambda cache: file_at(cache / "manifest.json", "{")), here
        ),
        ("{here}/cache/manifest.json is not valid JSON", "rebuild it"),
    ),
    Case(
        "cache-missing",
        lambda w, here: create(w, here / "nothing", here),
        ("no embedding cache at {here}/nothing", "hpo embed --cache"),
    ),
    Case(
        "cache-build-record-damaged",
        lambda w, here: create(w, damaged_build(here / "partial"), here),
        ("{here}/partial/shards/build.json is damaged", "run `hpo embed` again"),
    ),
    Case(
        "cache-path-is-a-file",
        lambda w, here: embed(FIXTURE, file_at(here / "f"), "--limit", "2"),
        ("cache path {here}/f exists and is not a directory", "--cache"),
    ),
    Case(
        "cache-dir-not-a-cache",
        lambda w, here: embed(FIXTURE, full_dir(here / "d"), "--limit", "2"),
        ("{here}/d is not empty and holds no embedding cache", "new or empty --cache"),
    ),
    Case(
        "cache-other-settings",
        lambda w, here: embed(FIXTURE, cache_copy(w, here, lambda cache: None), "--limit", "3"),
        ("limit: cache has 4, this command asks for 3", "another --cache"),
    ),
    Case(
        "cache-locked-by-another-embed",
        held_lock,
        (f"{{here}}/cache is being written by another `hpo embed` (pid {os.getpid()}", "own --shard i/N"),
    ),
    Case(
        "cache-of-another-study",
        lambda w, here: ["worker", *w.study("--cache", str(w.other_cache))],
        ("does not match study 's'", "--cache (HPO_CACHE)"),
    ),
    # flags
    Case(
        "flag-shard-out-of-range",
        lambda w, here: embed(FIXTURE, here / "c", "--shard", "2/2"),
        ("--shard '2/2'", "0 <= i < N"),
    ),
    Case(
        "flag-budget-zero",
        lambda w, here: create(w, w.cache, here, "--budget", "0"),
        ("'--budget': 0 is not in the range", "See `hpo study create --help`"),
    ),
    Case(
        "flag-unknown-option",
        lambda w, here: ["embed", "--bogus"],
        ("No such option '--bogus'", "See `hpo embed --help`"),
    ),
    Case(
        "flag-missing-out",
        lambda w, here: ["export-best", *w.study()],
        ("Missing option '--out'", "See `hpo export-best --help`"),
    ),
    Case(
        "flag-gpus-missing-gpu",
        lambda w, here: ["worker", *w.study("--gpus", "3")],
        ("--gpus 3 names GPU 3", "pass GPUs it lists"),
    ),
    Case(
        "flag-per-gpu-zero",
        lambda w, here: ["worker", *w.study("--per-gpu", "0")],
        ("--per-gpu must be at least 1, got 0",),
    ),
    Case(
        "flag-unknown-split",
        lambda w, here: embed(FIXTURE, here / "c", "--splits", "train,bogus"),
        ("bogus", "train"),
    ),
    Case(
        "flag-evaluate-dataset-and-cache",
        lambda w, here: evaluate(w.export, w.cache, here / "r", "--dataset", str(FIXTURE)),
        ("give one of --dataset and --cache, not both",),
    ),
    # storage
    Case(
        "storage-sqlite-file-missing",
        lambda w, here: ["status", "--storage", f"sqlite:///{here}/nofile.db"],
        ("no study database at SQLite file {here}/nofile.db", "hpo study create"),
    ),
    Case(
        "storage-list-sqlite-file-missing",
        lambda w, here: ["study", "list", "--storage", f"sqlite:///{here}/nofile.db"],
        ("no study database at SQLite file {here}/nofile.db",),
    ),
    Case(
        "storage-not-a-url",
        lambda w, here: ["status", "--storage", "nonsense"],
        ("not a database URL", "sqlite:///PATH"),
    ),
    Case(
        "storage-unreachable-password-hidden",
        lambda w, here: [
            *create(w, w.cache, here),
            "--storage",
            "postgresql+psycopg2://hpo:s3cret@127.0.0.1:1/hpo",
        ],
        ("cannot reach the study database at 127.0.0.1:1", "hpo:***@", "check that the server runs"),
    ),
    Case(
        "storage-no-such-study",
        lambda w, here: ["status", "--storage", w.url, "--study", "nope"],
        ("no study 'nope'", "the studies there: 's'", "hpo study create"),
    ),
    Case(
        "storage-workdir-missing",
        lambda w, here: ["study", "create", "--workdir", str(here / "nowhere"), "--cache", str(w.cache)],
        ("{here}/nowhere does not exist", "--workdir"),
    ),
    Case(
        "storage-worker-without-database",
        lambda w, here: ["worker", "--workdir", str(here), "--cache", str(w.cache)],
        ("no study database at SQLite file {here}/study.db",),
    ),
    # space TOML
    Case(
        "space-missing",
        lambda w, here: create(w, w.cache, here, space=here / "none.toml"),
        ("space file not found: {here}/none.toml", "existing TOML file"),
    ),
    Case(
        "space-invalid-toml",
        lambda w, here: create(w, w.cache, here, space=file_at(here / "s.toml", "name = [")),
        ("space file {here}/s.toml: invalid TOML",),
    ),
    Case(
        "space-low-above-high",
        lambda w, here: create(
            w, w.cache, here, space=file_at(here / "s.toml", TINY_SPACE.replace("low = 8", "low = 64"))
        ),
        ("space file {here}/s.toml", "low = 64 is greater than high = 32"),
    ),
    # export
    Case(
        "export-out-under-a-file",
        lambda w, here: export_best(w, file_at(here / "f") / "exp"),
        ("cannot create --out {here}/f/exp: {here}/f is a file",),
    ),
    Case(
        "export-out-is-a-file",
        lambda w, here: export_best(w, file_at(here / "f")),
        ("--out {here}/f is a file, not a directory",),
    ),
    Case(
        "export-out-not-empty",
        lambda w, here: export_best(w, full_dir(here / "d")),
        ("--out {here}/d exists and is not empty", "choose a new directory"),
    ),
    Case(
        "export-trial-not-in-study",
        lambda w, here: export_best(w, here / "o", "--trial", "99"),
        ("--trial 99: trial 99 of study 's' is not in the study", "hpo status"),
    ),
    Case(
        "export-head-not-in-artifacts",
        lambda w, here: export_best(w, here / "o", "--artifacts", str(here / "none")),
        ("is not in {here}/none", "--retrain"),
    ),
    Case(
        "export-stored-head-damaged",
        lambda w, here: export_best(w, here / "o", "--artifacts", str(damaged_artifacts(w, here))),
        ("the stored head of trial", "is not a .keras archive", "add --retrain"),
    ),
    # predict
    Case(
        "predict-model-without-card",
        lambda w, here: ["predict", "--model", str(here), str(FACE)],
        ("model directory {here} has no model_card.json", "hpo export-best --out"),
    ),
    Case(
        "predict-lambda-model",
        lambda w, here: ["predict", "--model", str(export_copy(w, here, lambda_model)), str(FACE)],
        ("model file {here}/export/model.keras holds Python code", "safe mode"),
    ),
    # evaluate
    Case(
        "evaluate-model-truncated",
        lambda w, here: evaluate(
            export_copy(w, here, lambda export: truncated(export / "model.keras", 5000)), w.cache, here / "r"
        ),
        ("model file {here}/export/model.keras is not a .keras archive", "export the model again"),
    ),
    Case(
        "evaluate-out-not-empty",
        lambda w, here: evaluate(w.export, w.cache, w.root),
        ("--out {w.root} exists and is not empty",),
    ),
    Case(
        "evaluate-cache-other-weights",
        lambda w, here: evaluate(w.export, cache_copy(w, here, other_weights), here / "r"),
        ("the cache at {here}/cache was embedded with base weights 'random:9'", "Use --dataset"),
    ),
    Case(
        "evaluate-card-damaged",
        lambda w, here: evaluate(
            export_copy(
                w,
                here,
                lambda export: edit_json(
                    export / "model_card.json", lambda card: without(card, "cache_fingerprint")
                ),
            ),
            w.cache,
            here / "r",
        ),
        ("{here}/export/model_card.json is damaged: it lacks cache_fingerprint", "export the model again"),
    ),
    Case(
        "evaluate-split-not-in-cache",
        lambda w, here: evaluate(w.export, w.cache, here / "r", "--split-name", "nope"),
        ("has no split 'nope'",),
    ),
    # worker
    Case(
        "worker-artifacts-is-a-file",
        lambda w, here: ["worker", *w.study("--artifacts", str(file_at(here / "f")))],
        ("artifact store {here}/f is a file", "--artifacts (HPO_ARTIFACTS)"),
    ),
    Case(
        "worker-cache-truncated",
        lambda w, here: [
            "worker",
            *w.study(
                "--cache",
                str(cache_copy(w, here, lambda cache: truncated(cache / "val" / "view-0.npy", 100))),
            ),
        ],
        ("the cache at {here}/cache is damaged: val/view-0.npy", "rebuild it"),
    ),
    # environment
    Case(
        "env-unknown-variable",
        lambda w, here: ["status", "--storage", w.url, "--study", "s"],
        ("unknown environment variable HPO_STOARGE", "HPO_STORAGE"),
        env={"HPO_STOARGE": "x"},
    ),
    Case(
        "env-storage-not-a-url",
        lambda w, here: ["status"],
        ("not a database URL",),
        env={"HPO_STORAGE": "nonsense"},
    ),
]


def listing(*roots: Path) -> set[str]:
    """Every file and directory under ``roots``."""
    return {str(path) for root in roots for path in root.rglob("*")}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No HPO_* variable of the test run reaches a case; a lock a case held is released after it."""
    for key in [key for key in os.environ if key.startswith("HPO_")]:
        monkeypatch.delenv(key)
    yield
    while HELD:
        HELD.pop().__exit__(None, None, None)


def run_case(
    case: Case, args: list[str], here: Path, run_hpo: RunHpo, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    env = {key: value.format(here=here) for key, value in case.env.items()}
    if case.fresh:
        command = [str(HPO), *args]
        done = subprocess.run(
            command, cwd=here, env=hpo_env() | env, capture_output=True, text=True, timeout=300
        )
        return done.returncode, done.stdout, done.stderr
    monkeypatch.chdir(here)  # a default path (./work) would land in the listed directory
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return run_hpo(*args)


def test_bad_inputs_are_forty_or_more_named_once() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) >= 40 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(
    case: Case, world: World, tmp_path: Path, run_hpo: RunHpo, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = case.make(world, tmp_path)
    before = listing(tmp_path, world.root)
    code, out, err = run_case(case, args, tmp_path, run_hpo, monkeypatch)
    assert "Traceback" not in out + err, err
    lines = err.splitlines()
    assert (code, len(lines)) == (2, 1), err
    assert lines[0].startswith("hpo: error: "), err
    for phrase in case.says:
        assert phrase.format(here=tmp_path, w=world) in lines[0], lines[0]
    assert listing(tmp_path, world.root) == before
