from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from support import FIXTURE, HPO, Hpo

from data.images import decode_error
from data.labels import AGE, GENDER, RACE
from model.bases.vggface import PREPROCESSING

pytestmark = pytest.mark.slow

# 8 val images in two shards of 4, batches of 4: small enough for VGG16 on two CPU cores.
ARGS = ("--weights", "random:0", "--splits", "val", "--limit", "8", "--batch-size", "4", "--shard-size", "4")


def embed_args(cache: Path, *extra: str, root: Path = FIXTURE) -> tuple[str, ...]:
    return ("embed", "--dataset", str(root), "--cache", str(cache), *ARGS, *extra)


def cache_bytes(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def copy_fixture(tmp_path: Path) -> Path:
    root = tmp_path / "fairface"
    shutil.copytree(FIXTURE, root)
    return root


@pytest.fixture(scope="module")
def reference(
    tmp_path_factory: pytest.TempPathFactory, hpo: Hpo
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A cache of the first 8 val images built by one uninterrupted `hpo embed`, and that run."""
    path = tmp_path_factory.mktemp("reference") / "cache"
    result = hpo(*embed_args(path))
    assert result.returncode == 0, result.stderr
    return path, result


def test_embed_cache_readable_with_plain_numpy(
    reference: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    path, result = reference
    embeddings = np.load(path / "val" / "view-0.npy", mmap_mode="r", allow_pickle=False)
    assert embeddings.shape == (8, 512) and embeddings.dtype == np.float32
    assert np.isfinite(embeddings).all()
    assert (path / "val" / "files.txt").read_text() == "".join(f"val/{i}.jpg\n" for i in range(1, 9))
    labels = np.load(path / "val" / "labels.npy", allow_pickle=False)
    assert labels[:3].tolist() == [
        [AGE.index("3-9"), RACE.index("East Asian"), GENDER.index("Male")],
        [AGE.index("50-59"), RACE.index("East Asian"), GENDER.index("Female")],
        [AGE.index("30-39"), RACE.index("White"), GENDER.index("Male")],
    ]
    manifest = json.loads((path / "manifest.json").read_text())
    fingerprint = manifest["fingerprint"]
    assert (fingerprint["base"], fingerprint["weights"], fingerprint["dtype"]) == (
        "vggface",
        "random:0",
        "float32",
    )
    assert (fingerprint["input_size"], fingerprint["pooling"], fingerprint["dim"]) == (224, "avg", 512)
    assert fingerprint["preprocessing"] == json.loads(json.dumps(PREPROCESSING))
    assert (fingerprint["split"], fingerprint["splits"], fingerprint["limit"]) == (
        {"name": "paper", "seed": 42},
        ["val"],
        8,
    )
    assert sorted(fingerprint["labels_sha256"]) == ["fairface_label_train.csv", "fairface_label_val.csv"]
    assert manifest["weights_path"] is None  # random:0 weights are read from nowhere
    assert (manifest["complete"], manifest["splits"], manifest["skipped"]) == (
        True,
        {"val": {"count": 8, "views": 1, "skipped": 0}},
        [],
    )
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"embedded 8 images in \d+\.\d s \(\d+\.\d images/s\)", lines[0])
    assert lines[1:] == [
        "  val   view 0: 8 images",
        "skipped 0 images",
        f"cache complete: {path} (val 8 x 1 view(s); dim 512)",
    ]
    # Not a terminal: a progress line per 10 % step (here per 4-image batch), and nothing else.
    assert [line.split("  ")[0] for line in result.stderr.splitlines()] == [
        "embed: 4/8 images",
        "embed: 8/8 images",
    ]


def test_embed_killed_after_first_shard_resumes_byte_identical(
    tmp_path: Path,
    hpo: Hpo,
    hpo_env: dict[str, str],
    reference: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    cache = tmp_path / "cache"
    first_record = cache / "shards" / "val" / "view-0" / "000000000.json"
    process = subprocess.Popen(
        [str(HPO), *embed_args(cache)], env=hpo_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 180
    while not first_record.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    assert first_record.exists() and not (cache / "manifest.json").exists()
    done = len(list(first_record.parent.glob("*.json")))
    result = hpo(*embed_args(cache))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"embedded {8 - 4 * done} images in ")
    assert cache_bytes(cache) == cache_bytes(reference[0])


def test_embed_two_shard_parts_equal_one_run(
    tmp_path: Path, hpo: Hpo, reference: tuple[Path, subprocess.CompletedProcess[str]]
) -> None:
    cache = tmp_path / "cache"
    first = hpo(*embed_args(cache, "--shard", "0/2"))
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-1] == (
        f"cache incomplete: {cache}: 1 shard(s) remain; run `hpo embed` with the same settings and "
        "--shard 1/2 to finish it (the last part to finish writes the manifest)."
    )
    second = hpo(*embed_args(cache, "--shard", "1/2"))
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[-1] == f"cache complete: {cache} (val 8 x 1 view(s); dim 512)"
    assert cache_bytes(cache) == cache_bytes(reference[0])


def test_embed_existing_cache_other_weights_refused(
    hpo: Hpo, reference: tuple[Path, subprocess.CompletedProcess[str]]
) -> None:
    path = reference[0]
    before = cache_bytes(path)
    result = hpo(*embed_args(path, "--weights", "random:1"))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f'hpo: error: the cache at {path} was built with other settings -- weights: cache has "random:0", '
        f'this command asks for "random:1". Use another --cache directory, or delete {path} to rebuild it.'
    ]
    assert cache_bytes(path) == before


def test_embed_corrupt_image_skipped_then_fatal_with_strict(tmp_path: Path, hpo: Hpo) -> None:
    root = copy_fixture(tmp_path)
    (root / "val" / "1.jpg").write_bytes(b"\xff\xd8 truncated")
    reason = str(decode_error(root / "val" / "1.jpg"))
    strict = hpo(*embed_args(tmp_path / "strict", "--limit", "2", "--strict", root=root))
    assert (strict.returncode, strict.stdout) == (2, "")
    assert strict.stderr.splitlines() == [
        # The reason's own period gives way to the ";".
        f"hpo: error: image val/1.jpg (fairface_label_val.csv line 2) cannot be decoded: {reason[:-1]}; "
        "replace or remove it, or run without --strict to skip it."
    ]
    assert not (tmp_path / "strict").exists()
    result = hpo(*embed_args(tmp_path / "cache", "--limit", "2", root=root))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:4] == [
        "  val   view 0: 1 images",
        "skipped 1 undecodable image(s), listed in the manifest:",
        f"  val: val/1.jpg: {reason}",
    ]
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["skipped"] == [{"split": "val", "file": "val/1.jpg", "reason": reason}]
    assert (tmp_path / "cache" / "val" / "files.txt").read_text() == "val/2.jpg\n"


def write_h5_with_unknown_layer(path: Path) -> Path:
    """A Keras-2 layout weights file holding one layer (fc8) that the VGG16 base does not have."""
    with h5py.File(path, "w") as file:
        file.attrs["layer_names"] = np.array([b"fc8"])
        group = file.create_group("fc8")
        group.attrs["weight_names"] = np.array([b"fc8/kernel:0", b"fc8/bias:0"])
        group.create_dataset("fc8/kernel:0", data=np.zeros((4, 2), np.float32))
        group.create_dataset("fc8/bias:0", data=np.zeros((2,), np.float32))
    return path


def break_input(case: str, tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    """A FairFace root and extra flags with one thing wrong."""
    root = copy_fixture(tmp_path)
    val_csv = root / "fairface_label_val.csv"
    if case == "missing root":
        return tmp_path / "nowhere", ()
    if case == "malformed csv":
        val_csv.write_text(val_csv.read_text() + "val/99.jpg,20-29\n")
    if case == "unknown label":
        val_csv.write_text(val_csv.read_text().replace("val/1.jpg,3-9,", "val/1.jpg,100+,"))
    if case == "missing image":
        (root / "val" / "3.jpg").unlink()
    if case == "unwritable cache":
        (tmp_path / "taken").write_text("a file, not a directory")
        return root, ("--cache", str(tmp_path / "taken" / "cache"))
    if case == "missing weights":
        return root, ("--weights", str(tmp_path / "absent.h5"))
    if case == "truncated weights":
        whole = write_h5_with_unknown_layer(tmp_path / "whole.h5").read_bytes()
        (tmp_path / "cut.h5").write_bytes(whole[: len(whole) // 2])
        return root, ("--weights", str(tmp_path / "cut.h5"))
    if case == "unknown layer":
        return root, ("--weights", str(write_h5_with_unknown_layer(tmp_path / "fc8.h5")))
    return root, ()


BAD_INPUTS = {
    "missing root": r"FairFace root .*/nowhere does not exist or is not a directory",
    "malformed csv": r"fairface_label_val\.csv line 18: malformed row with 2 field\(s\), the header has 5",
    "unknown label": r"fairface_label_val\.csv line 2: unknown age label '100\+'",
    "missing image": r"image val/3\.jpg \(fairface_label_val\.csv line 4\) is missing under",
    "unwritable cache": r"cannot create cache directory .*/taken/cache: .*/taken is a file",
    "missing weights": r"weights file .*/absent\.h5 does not exist",
    "truncated weights": r".*/cut\.h5 is not a readable HDF5 weights file",
    "unknown layer": r".*/fc8\.h5 has weights for layer\(s\) \['fc8'\] that the VGG16 base does not have",
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_embed_bad_input_one_line_exit_2_no_cache(case: str, tmp_path: Path, hpo: Hpo) -> None:
    cache = tmp_path / "cache"
    root, extra = break_input(case, tmp_path / "input")
    result = hpo(*embed_args(cache, "--limit", "4", *extra, root=root))
    assert (result.returncode, result.stdout) == (2, "")
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpo: error: "), result.stderr
    assert re.search(BAD_INPUTS[case], lines[0]), lines[0]
    assert not cache.exists()
    assert not (tmp_path / "input" / "taken" / "cache").exists()


def test_embed_second_writer_refused_while_the_first_finishes_the_cache(
    tmp_path: Path, hpo: Hpo, hpo_env: dict[str, str]
) -> None:
    cache = tmp_path / "cache"
    # All 56 fixture faces: the first run is still embedding when the second has started.
    args = [
        "embed",
        "--dataset",
        str(FIXTURE),
        "--cache",
        str(cache),
        "--weights",
        "random:0",
        "--split",
        "official",
    ]
    first = subprocess.Popen(
        [str(HPO), *args], env=hpo_env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        lock = cache / ".embed-0-of-1.lock"
        deadline = time.monotonic() + 120
        while not (lock.is_file() and lock.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        second = hpo(*args)
        out, _ = first.communicate(timeout=600)
    finally:
        first.kill()
    assert (second.returncode, second.stdout) == (2, "")
    assert second.stderr.splitlines() == [
        f"hpo: error: the cache at {cache} is being written by another `hpo embed` (pid {first.pid} on "
        f"{socket.gethostname()}) as --shard 0/1; wait for it to finish, or give each machine its own "
        "--shard i/N."
    ]
    assert first.returncode == 0 and out.splitlines()[-1].startswith(f"cache complete: {cache} ")
    assert sorted(p.name for p in cache.iterdir()) == ["manifest.json", "train", "val"]  # no shards/, no lock
