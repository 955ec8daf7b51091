from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from support import FIXTURE, REPO

from data.errors import ConfigError, DatasetError
from data.fairface import (
    TRAIN_CSV,
    VAL_CSV,
    Table,
    check_images,
    labels_sha256,
    load_split,
    read_labels,
)
from data.labels import AGE, GENDER, HEADS, RACE, VOCABULARIES

HEADER = "file,age,gender,race,service_test\n"

# Class counts of the paper's 17,349-image test split (Support columns of its Tables III-V).
PAPER_TEST_COUNTS = {
    "age": {"0-2": 371, "3-9": 2084, "10-19": 1836, "20-29": 5220, "30-39": 3827, "40-49": 2077,
            "50-59": 1232, "60-69": 553, "more than 70": 149},
    "race": {"Black": 2373, "East Asian": 2499, "Indian": 2456, "Latino_Hispanic": 2709,
             "Middle Eastern": 1816, "Southeast Asian": 2186, "White": 3310},
    "gender": {"Female": 8163, "Male": 9186},
}  # fmt: skip
FULL_TRAIN_COUNTS = {
    "age": {"0-2": 1792, "3-9": 10408, "10-19": 9103, "20-29": 25598, "30-39": 19250, "40-49": 10744,
            "50-59": 6228, "60-69": 2779, "more than 70": 842},
    "race": {"White": 16527, "Latino_Hispanic": 13367, "Indian": 12319, "East Asian": 12287,
             "Black": 12233, "Southeast Asian": 10795, "Middle Eastern": 9216},
    "gender": {"Male": 45986, "Female": 40758},
}  # fmt: skip


def shared_root() -> Path:
    root = Path(os.environ.get("FAIRFACE_ROOT", REPO.parent / "shared" / "fairface"))
    if not (root / TRAIN_CSV).is_file() or not (root / VAL_CSV).is_file():
        pytest.skip(f"the full FairFace label files are not at {root}; set FAIRFACE_ROOT to a FairFace root")
    return root


def class_counts(table: Table) -> dict[str, dict[str, int]]:
    return {
        head: {VOCABULARIES[head][code]: n for code, n in Counter(table.labels[:, column].tolist()).items()}
        for column, head in enumerate(HEADS)
    }


def write_labels(tmp_path: Path, text: str) -> Path:
    path = tmp_path / TRAIN_CSV
    path.write_text(text, encoding="utf-8")
    return path


def fixture_lines() -> list[str]:
    return (FIXTURE / TRAIN_CSV).read_text(encoding="utf-8").splitlines(keepends=True)


def test_read_labels_fixture_rows_and_codes() -> None:
    table = read_labels(FIXTURE / TRAIN_CSV)
    assert len(table) == 40
    assert table.csv == FIXTURE / TRAIN_CSV
    assert table.files[:2] == ("train/1.jpg", "train/2.jpg")
    assert table.rows.dtype == np.int64 and table.rows.tolist() == list(range(40))
    assert table.labels.dtype == np.int8 and table.labels.shape == (40, 3)
    # train/1.jpg,50-59,Male,East Asian and train/2.jpg,30-39,Female,Indian
    assert table.labels[0].tolist() == [AGE.index("50-59"), RACE.index("East Asian"), GENDER.index("Male")]
    assert table.labels[1].tolist() == [AGE.index("30-39"), RACE.index("Indian"), GENDER.index("Female")]
    assert table.line(39) == 41


def test_read_labels_full_train_class_counts() -> None:
    table = read_labels(shared_root() / TRAIN_CSV)
    assert len(table) == 86_744
    assert class_counts(table) == FULL_TRAIN_COUNTS


def test_load_split_paper_reproduces_authors_test_set() -> None:
    root = shared_root()
    full = read_labels(root / TRAIN_CSV)
    splits = load_split(root)
    assert list(splits) == ["train", "val", "test"]
    train, val, test = splits["train"], splits["val"], splits["test"]
    assert (len(train), len(val), len(test)) == (69_395, 10_954, 17_349)
    assert class_counts(test) == PAPER_TEST_COUNTS
    assert np.all(np.diff(train.rows) > 0) and np.all(np.diff(test.rows) > 0)
    assert np.intersect1d(train.rows, test.rows).size == 0
    assert np.union1d(train.rows, test.rows).tolist() == list(range(86_744))
    assert train.files == tuple(full.files[row] for row in train.rows.tolist())
    assert np.array_equal(test.labels, full.labels[test.rows])
    assert train.csv == test.csv == root / TRAIN_CSV and val.csv == root / VAL_CSV
    assert val.rows.tolist() == list(range(10_954))


def test_load_split_other_seed_moves_the_test_set() -> None:
    splits = load_split(shared_root(), seed=7)
    assert len(splits["test"]) == 17_349
    assert class_counts(splits["test"]) != PAPER_TEST_COUNTS


def test_load_split_official_has_no_test() -> None:
    splits = load_split(FIXTURE, split="official")
    assert list(splits) == ["train", "val"]
    assert (len(splits["train"]), len(splits["val"])) == (40, 16)


def test_load_split_paper_on_fixture_is_a_partition() -> None:
    splits = load_split(FIXTURE)
    assert (len(splits["train"]), len(splits["test"])) == (32, 8)
    assert sorted(splits["train"].rows.tolist() + splits["test"].rows.tolist()) == list(range(40))


def test_load_split_unknown_name() -> None:
    with pytest.raises(ConfigError, match=r"unknown split 'random'; valid splits: paper, official"):
        load_split(FIXTURE, split="random")


def test_load_split_missing_root(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    pattern = (
        rf"FairFace root {re.escape(str(root))} does not exist.*a FairFace root holds {TRAIN_CSV}, {VAL_CSV}"
    )
    with pytest.raises(DatasetError, match=pattern):
        load_split(root)


def test_load_split_missing_val_csv(tmp_path: Path) -> None:
    shutil.copy(FIXTURE / TRAIN_CSV, tmp_path / TRAIN_CSV)
    with pytest.raises(
        DatasetError, match=rf"{re.escape(str(tmp_path / VAL_CSV))} is missing; a FairFace root"
    ):
        load_split(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"label file .*fairface_label_train.csv is empty; it needs a header line with columns "
             r"file, age, gender, race"),
        (HEADER, r"fairface_label_train.csv has a header but no data rows"),
        ("file,age,gender\ntrain/1.jpg,3-9,Male\n",
         r"fairface_label_train.csv line 1: missing column\(s\) race; the header is 'file,age,gender'"),
        (HEADER + "train/1.jpg,3-9,Male,Black,False\ntrain/2.jpg,3-9,Male\n",
         r"fairface_label_train.csv line 3: malformed row with 3 field\(s\), the header has 5"),
        (HEADER + "train/1.jpg,3-9,Male,Black,False\n\n",
         r"fairface_label_train.csv line 3: malformed row with 0 field\(s\)"),
        (HEADER + 'train/1.jpg,"3-9"x,Male,Black,False\n', r"fairface_label_train.csv line 2: malformed CSV"),
        (HEADER + "train/1.jpg,3-9,Male,Black,False\ntrain/1.jpg,3-9,Male,Black,False\n",
         r"line 3: file 'train/1.jpg' is listed again \(first on line 2\)"),
        (HEADER + "../secret.jpg,3-9,Male,Black,False\n",
         r"line 2: file '../secret.jpg' is not a relative path inside the root"),
        (HEADER + "train/1.jpg,3-9,male,Black,False\n",
         r"line 2: unknown gender label 'male'; allowed: Female, Male"),
    ],
)  # fmt: skip
def test_read_labels_bad_input(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        read_labels(write_labels(tmp_path, text))


def test_read_labels_unknown_age_names_line_value_and_vocabulary(tmp_path: Path) -> None:
    lines = fixture_lines()
    lines[4] = lines[4].replace("20-29", "25-29")  # train/4.jpg, line 5
    path = write_labels(tmp_path, "".join(lines))
    allowed = "0-2, 3-9, 10-19, 20-29, 30-39, 40-49, 50-59, 60-69, more than 70"
    pattern = rf"{re.escape(str(path))} line 5: unknown age label '25-29'; allowed: {allowed}$"
    with pytest.raises(DatasetError, match=pattern):
        read_labels(path)


def test_read_labels_unknown_race(tmp_path: Path) -> None:
    lines = fixture_lines()
    lines[10] = lines[10].rstrip("\n").rsplit(",", 2)[0] + ",Martian,False\n"
    with pytest.raises(DatasetError, match=r"line 11: unknown race label 'Martian'; allowed: White, Black, "):
        read_labels(write_labels(tmp_path, "".join(lines)))


def test_read_labels_accepts_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / TRAIN_CSV
    path.write_bytes(b"\xef\xbb\xbf" + (FIXTURE / TRAIN_CSV).read_bytes())
    assert read_labels(path).files == read_labels(FIXTURE / TRAIN_CSV).files


def test_read_labels_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.csv"
    with pytest.raises(DatasetError, match=rf"label file {re.escape(str(path))} does not exist"):
        read_labels(path)


def test_read_labels_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / TRAIN_CSV
    path.write_bytes(HEADER.encode() + b"train/1.jpg,3-9,Male,\xff\xfe,False\n")
    with pytest.raises(DatasetError, match=r"is not UTF-8 text"):
        read_labels(path)


def test_table_take_and_read_only() -> None:
    table = read_labels(FIXTURE / TRAIN_CSV)
    first = table.take(3)
    assert first.files == ("train/1.jpg", "train/2.jpg", "train/3.jpg")
    assert first.rows.tolist() == [0, 1, 2]
    assert np.array_equal(first.labels, table.labels[:3])
    assert len(table.take(100)) == 40
    with pytest.raises(ConfigError, match=r"a row limit must be >= 0, got -1"):
        table.take(-1)
    with pytest.raises(ValueError, match="read-only"):
        table.labels[0, 0] = 1


def test_labels_sha256_hashes_both_files() -> None:
    expected = {
        name: hashlib.sha256((FIXTURE / name).read_bytes()).hexdigest() for name in (TRAIN_CSV, VAL_CSV)
    }
    assert labels_sha256(FIXTURE) == expected


def test_check_images_fixture_complete() -> None:
    for table in load_split(FIXTURE).values():
        check_images(FIXTURE, table)


def test_check_images_names_first_missing_image(tmp_path: Path) -> None:
    root = tmp_path / "fairface"
    shutil.copytree(FIXTURE, root)
    (root / "train" / "7.jpg").unlink()
    (root / "train" / "9.jpg").unlink()
    expected = f"image train/7.jpg ({TRAIN_CSV} line 8) is missing under {root}"
    with pytest.raises(DatasetError, match=re.escape(expected)):
        check_images(root, read_labels(root / TRAIN_CSV))
