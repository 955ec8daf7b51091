"""Data side of bench/quality.py: a FairFace root of the shared sample's images, and its dlib-resnet cache.

The shared sample (../shared/fairface) holds the complete label CSVs but only train/1..8000.jpg and
val/1..2000.jpg. ``prepare_root`` writes label files with just the rows whose image is there and links
the image folders, so ``hpo embed --split paper`` cuts the 8,000 train images 80/20 into train (the search
trains on it) and test (held out), and the 2,000 val images are the validation set the search scores on.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from data.fairface import TRAIN_CSV, VAL_CSV
from data.labels import HEADS, VOCABULARIES
from model.metrics import head_metrics, predicted_classes

if TYPE_CHECKING:
    import keras

IMAGE_FOLDERS = ("train", "val")


def prepare_root(shared: Path, root: Path) -> dict[str, int]:
    """Write ``root``: the label CSVs cut to the rows with an image in ``shared``; links to its folders.

    Returns the number of rows kept per label file. Rewriting is idempotent (same bytes each time).
    """
    root.mkdir(parents=True, exist_ok=True)
    for folder in IMAGE_FOLDERS:
        link = root / folder
        if not link.is_symlink():
            link.symlink_to((shared / folder).resolve(), target_is_directory=True)
    return {name: _write_present_rows(shared, shared / name, root / name) for name in (TRAIN_CSV, VAL_CSV)}


def _write_present_rows(shared: Path, source: Path, target: Path) -> int:
    with source.open(newline="", encoding="utf-8-sig") as stream:
        reader = csv.reader(stream)
        header = next(reader)
        column = header.index("file")
        rows = [row for row in reader if (shared / row[column]).is_file()]
    text_rows = [header, *rows]
    partial = target.with_suffix(".tmp")
    with partial.open("w", newline="", encoding="utf-8") as stream:
        csv.writer(stream, lineterminator="\n").writerows(text_rows)
    partial.replace(target)
    return len(rows)


AUGMENT_VIEWS = 2  # augmented embeddings per train image, beside the clean one (the paper's augmentation)


def embed_command(root: Path, cache: Path) -> list[str]:
    """The ``hpo embed`` call that builds (or resumes, or leaves as it is) the bench's cache."""
    hpo = Path(sys.executable).with_name("hpo")
    return [
        str(hpo), "embed", "--dataset", str(root), "--cache", str(cache),
        "--base", "dlib-resnet", "--split", "paper", "--augment-views", str(AUGMENT_VIEWS),
    ]  # fmt: skip


def build_cache(root: Path, cache: Path) -> None:
    """Run ``hpo embed`` (its progress goes to this terminal); a finished cache returns at once."""
    print("$ " + " ".join(embed_command(root, cache)), flush=True)
    subprocess.run(embed_command(root, cache), check=True)


def head_predictions(model: keras.Model, embeddings: np.ndarray) -> dict[str, np.ndarray]:
    """Predicted class indices per head of a head model (model.metrics.predicted_classes)."""
    classes = predicted_classes(model(embeddings, training=False))
    return {head: classes[:, column] for column, head in enumerate(HEADS)}


def scores(predicted: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, dict[str, float]]:
    """Accuracy, balanced accuracy and macro-F1 per head against (N, 3) labels."""
    return {
        head: head_metrics(labels[:, column], predicted[head], len(VOCABULARIES[head]))
        for column, head in enumerate(HEADS)
    }
