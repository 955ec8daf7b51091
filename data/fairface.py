"""FairFace label files, the splits the search uses, and the check that their images exist.

A FairFace root holds ``fairface_label_train.csv``, ``fairface_label_val.csv`` and the images at the
relative paths of their ``file`` column (``train/1.jpg``). Labels become int8 indices into the
vocabularies of :mod:`data.labels`, columns in ``HEADS`` order (age, race, gender).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.errors import ConfigError, DatasetError
from data.labels import HEADS, VOCABULARIES

TRAIN_CSV = "fairface_label_train.csv"
VAL_CSV = "fairface_label_val.csv"
SPLITS = ("train", "val", "test")
SPLIT_NAMES = ("paper", "official")
# The authors kept 80 % of the shuffled train CSV for training; the rest (17,349 rows) is their test set.
PAPER_TRAIN_FRACTION = 0.8
PAPER_SPLIT_SEED = 42  # the authors' shuffle seed; the official split has no randomness
REQUIRED_COLUMNS = ("file", "age", "gender", "race")
ROOT_CONTENTS = (
    f"a FairFace root holds {TRAIN_CSV}, {VAL_CSV} and the images at the paths of their 'file' column "
    "(train/1.jpg, val/1.jpg, ...)"
)


@dataclass(frozen=True, eq=False)
class Table:
    """One split's rows, in label-CSV order."""

    csv: Path  # the label file the rows came from
    rows: np.ndarray  # (N,) int64: 0-based data-row numbers in that CSV (line = row + 2)
    files: tuple[str, ...]  # relative image paths, e.g. "train/1.jpg"
    labels: np.ndarray  # (N, 3) int8, columns age, race, gender (vocabulary indices)

    def __post_init__(self) -> None:
        # Frozen means frozen: a split shared by several consumers must not be edited in place.
        self.rows.setflags(write=False)
        self.labels.setflags(write=False)

    def __len__(self) -> int:
        return len(self.files)

    def take(self, n: int) -> Table:
        """The first ``n`` rows (all of them when ``n`` is at least the table's length)."""
        if n < 0:
            raise ConfigError(f"a row limit must be >= 0, got {n}; pass a non-negative --limit")
        return self._subset(np.arange(min(n, len(self))))

    def line(self, position: int) -> int:
        """The 1-based line of the label file that holds the row at ``position``."""
        return int(self.rows[position]) + 2

    def _subset(self, positions: np.ndarray) -> Table:
        return Table(
            csv=self.csv,
            rows=self.rows[positions],
            files=tuple(self.files[i] for i in positions.tolist()),
            labels=self.labels[positions],
        )


def read_labels(csv_path: Path) -> Table:
    """Read and validate a FairFace label file; any problem is a DatasetError naming the file and line."""
    try:
        # utf-8-sig: a label file saved by a spreadsheet starts with a byte-order mark.
        with csv_path.open(newline="", encoding="utf-8-sig") as stream:
            return _parse_labels(csv_path, stream)
    except FileNotFoundError:
        raise DatasetError(f"label file {csv_path} does not exist; {ROOT_CONTENTS}") from None
    except UnicodeDecodeError as error:
        raise DatasetError(
            f"label file {csv_path} is not UTF-8 text ({error.reason}); use the official FairFace label files"
        ) from None
    except OSError as error:
        raise DatasetError(f"label file {csv_path} cannot be read: {error.strerror}") from None


def _parse_labels(csv_path: Path, stream: Iterable[str]) -> Table:
    reader = csv.reader(stream, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise DatasetError(
                f"label file {csv_path} is empty; it needs a header line with columns {_cols()}"
            )
        positions = _column_positions(csv_path, header)
        files, labels = _parse_rows(csv_path, reader, positions, len(header))
    except csv.Error as error:
        raise DatasetError(f"{csv_path} line {reader.line_num}: malformed CSV ({error})") from None
    if not files:
        raise DatasetError(f"label file {csv_path} has a header but no data rows")
    return Table(
        csv=csv_path,
        rows=np.arange(len(files), dtype=np.int64),
        files=tuple(files),
        labels=np.array(labels, dtype=np.int8).reshape(len(files), len(HEADS)),
    )


def _cols() -> str:
    return ", ".join(REQUIRED_COLUMNS)


def _column_positions(csv_path: Path, header: list[str]) -> dict[str, int]:
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise DatasetError(
            f"{csv_path} line 1: missing column(s) {', '.join(missing)}; the header is {','.join(header)!r}, "
            f"a FairFace label file needs columns {_cols()}"
        )
    return {name: header.index(name) for name in REQUIRED_COLUMNS}


def _parse_rows(
    csv_path: Path, reader: Iterable[list[str]], positions: dict[str, int], width: int
) -> tuple[list[str], list[tuple[int, ...]]]:
    codes = [{value: code for code, value in enumerate(VOCABULARIES[head])} for head in HEADS]
    label_columns = [positions[head] for head in HEADS]
    file_column = positions["file"]
    first_line: dict[str, int] = {}
    files: list[str] = []
    labels: list[tuple[int, ...]] = []
    for line, record in enumerate(reader, start=2):
        if len(record) != width:
            raise DatasetError(
                f"{csv_path} line {line}: malformed row with {len(record)} field(s), the header has {width}"
            )
        name = record[file_column]
        _check_file_name(csv_path, line, name, first_line)
        try:
            labels.append(tuple(code[record[col]] for code, col in zip(codes, label_columns, strict=True)))
        except KeyError:
            raise _unknown_label(csv_path, line, record, label_columns) from None
        files.append(name)
    return files, labels


def _check_file_name(csv_path: Path, line: int, name: str, first_line: dict[str, int]) -> None:
    # Paths are joined to the root later: an absolute path or ".." would read outside it.
    if not name or name.startswith("/") or ".." in name.split("/"):
        raise DatasetError(
            f"{csv_path} line {line}: file {name!r} is not a relative path inside the root (like train/1.jpg)"
        )
    if name in first_line:
        raise DatasetError(
            f"{csv_path} line {line}: file {name!r} is listed again (first on line {first_line[name]})"
        )
    first_line[name] = line


def _unknown_label(csv_path: Path, line: int, record: list[str], label_columns: list[int]) -> DatasetError:
    for head, column in zip(HEADS, label_columns, strict=True):
        vocabulary = VOCABULARIES[head]
        if record[column] not in vocabulary:
            return DatasetError(
                f"{csv_path} line {line}: unknown {head} label {record[column]!r}; "
                f"allowed: {', '.join(vocabulary)}"
            )
    raise AssertionError("_unknown_label called on a row whose labels are all known")


def load_split(root: Path, *, split: str = "paper", seed: int = PAPER_SPLIT_SEED) -> dict[str, Table]:
    """The tables of a split, keyed by train/val(/test), each in CSV order.

    ``paper``: the authors' split -- the train CSV shuffled as pandas ``df.sample(frac=1,
    random_state=seed)``, then ``.sample(frac=0.8, random_state=seed)`` of that is train and the
    remaining rows are test; the official val CSV is val. ``official``: train CSV = train, val CSV = val.
    """
    if split not in SPLIT_NAMES:
        raise ConfigError(f"unknown split {split!r}; valid splits: {', '.join(SPLIT_NAMES)}")
    train = read_labels(_label_file(root, TRAIN_CSV))
    val = read_labels(_label_file(root, VAL_CSV))
    if split == "official":
        return {"train": train, "val": val}
    train_positions, test_positions = paper_positions(len(train), seed)
    return {"train": train._subset(train_positions), "val": val, "test": train._subset(test_positions)}


def load_tables(
    root: Path, split: str, splits: Sequence[str] | None = None, limit: int | None = None
) -> dict[str, Table]:
    """The tables of ``split`` named in ``splits`` (all when None), in split order, cut to ``limit`` rows,
    each image checked present: what ``hpo embed`` embeds."""
    available = load_split(root, split=split)
    wanted = list(available) if splits is None else list(splits)
    unknown = [name for name in wanted if name not in available]
    if unknown or not wanted:
        listed = ",".join(wanted)
        raise ConfigError(
            f"--splits {listed!r}: the {split} split has {', '.join(available)}; "
            f"choose among them, e.g. --splits {','.join(available)}."
        )
    tables = {name: available[name] for name in available if name in wanted}
    if limit is not None:
        tables = {name: table.take(limit) for name, table in tables.items()}
    for table in tables.values():
        check_images(root, table)
    return tables


def paper_positions(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted row positions of the paper's train and test parts of an n-row train CSV."""
    in_train = np.zeros(n, dtype=bool)
    in_train[paper_train_order(n, seed)] = True
    return np.flatnonzero(in_train), np.flatnonzero(~in_train)


def paper_train_order(n: int, seed: int) -> np.ndarray:
    """Row positions of the paper's train part in the order the authors' shuffled frame held them."""
    # pandas' sample(replace=False) is RandomState(seed).choice(n, size, replace=False), which is
    # permutation(n)[:size]; the second sample draws positions within the already shuffled frame.
    shuffled = np.random.RandomState(seed).choice(n, size=n, replace=False)
    kept = np.random.RandomState(seed).choice(n, size=round(PAPER_TRAIN_FRACTION * n), replace=False)
    result: np.ndarray = shuffled[kept]
    return result


def labels_sha256(root: Path) -> dict[str, str]:
    """The sha256 (hex) of each label file of the root, keyed by file name."""
    digests = {}
    for name in (TRAIN_CSV, VAL_CSV):
        with _label_file(root, name).open("rb") as stream:
            digests[name] = hashlib.file_digest(stream, "sha256").hexdigest()
    return digests


def check_images(root: Path, table: Table) -> None:
    """Raise a DatasetError naming the first image of ``table`` missing under ``root``."""
    _require_root(root)
    for position, name in enumerate(table.files):
        if not (root / name).is_file():
            raise DatasetError(
                f"image {name} ({table.csv.name} line {table.line(position)}) is missing under {root}; "
                "copy the FairFace images there or use a root that has them"
            )


def _require_root(root: Path) -> None:
    if not root.is_dir():
        raise DatasetError(f"FairFace root {root} does not exist or is not a directory; {ROOT_CONTENTS}")


def _label_file(root: Path, name: str) -> Path:
    _require_root(root)
    path = root / name
    if not path.is_file():
        raise DatasetError(f"{path} is missing; {ROOT_CONTENTS}")
    return path
