"""The evaluation report of an exported model: per-head metrics, confusion matrices and the paper beside them.

Writes ``report.json``, ``report.md`` and ``confusion_<head>.png`` (row-normalised, with counts, like the
paper's Figures 1–3). The pictures are drawn with Pillow, already a dependency for image decoding, so
evaluation adds no plotting library to the images and the pixels are deterministic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from data.cache import Cache
from data.errors import CacheError, ConfigError, DatasetError
from data.fairface import load_split
from data.labels import HEADS, VOCABULARIES
from model.bases import DEFAULT_BASE
from model.export import (
    ExportedModel,
    Predictor,
    check_cache_matches,
    head_outputs,
    image_outputs,
    predicted_classes,
)
from model.metrics import classification_report

REPORT_FORMAT_VERSION = 1
REPORT_JSON = "report.json"
REPORT_MARKDOWN = "report.md"


@dataclass(frozen=True)
class PaperHead:
    """What the paper's Table III, IV or V gives for one head, as far as this project holds it."""

    table: str
    accuracy: float  # support-weighted recall of the table, as DESIGN.md quotes it
    support: Mapping[str, int]  # the table's Support column = the `paper` split's test counts
    # Only the per-class figures DESIGN.md quotes.
    recall: Mapping[str, float] = field(default_factory=dict)


# Only numbers this project actually has: the paper's per-class precision/recall/F1 are not in the repository,
# so those cells stay empty instead of being reconstructed.
PAPER: Mapping[str, PaperHead] = {
    "age": PaperHead(
        table="Table III",
        accuracy=0.453,
        support={
            "0-2": 371,
            "3-9": 2084,
            "10-19": 1836,
            "20-29": 5220,
            "30-39": 3827,
            "40-49": 2077,
            "50-59": 1232,
            "60-69": 553,
            "more than 70": 149,
        },
        recall={"30-39": 0.03},
    ),
    "race": PaperHead(
        table="Table IV",
        accuracy=0.550,
        support={
            "White": 3310,
            "Black": 2373,
            "Latino_Hispanic": 2709,
            "East Asian": 2499,
            "Southeast Asian": 2186,
            "Indian": 2456,
            "Middle Eastern": 1816,
        },
    ),
    "gender": PaperHead(table="Table V", accuracy=0.856, support={"Female": 8163, "Male": 9186}),
}


def evaluation_report(
    labels: np.ndarray, predictions: np.ndarray, *, source: Mapping[str, object]
) -> dict[str, object]:
    """The report of ``predictions`` against ``labels`` (both (N, 3) class indices, columns in HEADS order).

    ``source`` says what was evaluated (model, split, images or cache) and is copied into the report.
    """
    if labels.shape != predictions.shape or labels.ndim != 2 or labels.shape[1] != len(HEADS):
        raise ValueError(
            f"labels and predictions must both be (N, 3), got {labels.shape} and {predictions.shape}."
        )
    heads = {
        head: classification_report(labels[:, column], predictions[:, column], VOCABULARIES[head])
        for column, head in enumerate(HEADS)
    }
    return {
        "format_version": REPORT_FORMAT_VERSION,
        "source": dict(source),
        "count": len(labels),
        "heads": heads,
    }


def evaluate_cache(exported: ExportedModel, cache: Cache, split: str) -> dict[str, object]:
    """The report of ``exported`` on a cache split, through the model's head (the fast path).

    The cache must have been embedded by this model's base (see `check_cache_matches`).
    """
    check_cache_matches(exported.card, cache)
    labels = cache.labels(split).astype(np.int64)
    if len(labels) == 0:
        raise CacheError(f"split {split!r} of the cache at {cache.path} is empty; evaluate another split.")
    outputs = head_outputs(exported.head, cache.embeddings(split, 0))
    source = {**_model_source(exported), "split": split, "from": "cache", "cache": str(cache.path)}
    return evaluation_report(labels, predicted_classes(outputs), source=source)


def evaluate_images(
    exported: ExportedModel,
    root: Path,
    split: str,
    *,
    weights: str | None = None,
    batch_size: int = 32,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, object]:
    """The report of ``exported`` on a split of the FairFace root ``root``, images through the full model.

    The split is cut as the model's cache was (the scheme and seed in its card's cache fingerprint), so
    ``test`` is the same test set the export was evaluated on. Undecodable images are left out and listed.
    ``weights`` finds the base of a head+predictor export (see :class:`Predictor`).
    """
    scheme = exported.card["cache_fingerprint"]["split"]
    # The official split has no seed; load_split ignores it there.
    tables = load_split(root, split=scheme["name"], seed=scheme["seed"] or 0)
    if split not in tables:
        raise ConfigError(
            f"--split-name {split!r}: the model's {scheme['name']!r} split has {', '.join(tables)}; pick one."
        )
    table = tables[split]
    with Predictor(exported, weights=weights) as predict:
        found, outputs = image_outputs(
            predict, root, table.files, batch_size=batch_size, on_progress=on_progress
        )
    if len(found) == 0:
        raise DatasetError(
            f"none of the {len(table)} images of split {split!r} under {root} could be decoded."
        )
    skipped = sorted(set(range(len(table))) - set(found.tolist()))
    source = {
        **_model_source(exported),
        "split": split,
        "from": "images",
        "dataset": str(root),
        "skipped": [table.files[i] for i in skipped],
    }
    return evaluation_report(table.labels[found].astype(np.int64), predicted_classes(outputs), source=source)


def _model_source(exported: ExportedModel) -> dict[str, object]:
    study = exported.card["study"]
    return {
        "model": str(exported.path),
        "study": study.get("name"),
        "trial": study.get("trial"),
        "base": exported.card["cache_fingerprint"].get("base", DEFAULT_BASE),
        "weights": exported.card["weights"],
    }


def write_report(report: Mapping[str, object], out: Path) -> list[Path]:
    """Write the JSON, the Markdown and one confusion-matrix PNG per head into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / REPORT_JSON, out / REPORT_MARKDOWN]
    written[0].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    written[1].write_text(report_markdown(report), encoding="utf-8")
    heads: Mapping[str, Mapping[str, object]] = report["heads"]  # type: ignore[assignment]
    for head, result in heads.items():
        path = out / f"confusion_{head}.png"
        matrix = np.asarray(result["confusion_matrix"], dtype=np.int64)
        title = f"{head}: rows true, columns predicted; n = {int(matrix.sum()):,}"
        confusion_image(matrix, VOCABULARIES[head], title=title).save(path)
        written.append(path)
    return written


def report_markdown(report: Mapping[str, object]) -> str:
    """The report as Markdown: the source, then per head the paper beside this model and the picture."""
    source: Mapping[str, object] = report["source"]  # type: ignore[assignment]
    lines = ["# Evaluation report", ""]
    lines += [f"- {key}: `{value}`" for key, value in source.items()]
    lines += [f"- images evaluated: {report['count']:,}", ""]
    heads: Mapping[str, Mapping[str, Any]] = report["heads"]  # type: ignore[assignment]
    for head, result in heads.items():
        paper = PAPER[head]
        lines += [f"## {head} (paper: {paper.table})", "", *_summary_table(paper, result), ""]
        lines += [*_class_table(paper, result), "", f"![{head} confusion matrix](confusion_{head}.png)", ""]
    lines += [
        "Paper figures: the overall accuracies and test supports of Tables III–V and the 30-39 recall,",
        "as quoted in DESIGN.md; the paper's other per-class figures are not held here and are left as —.",
        "",
    ]
    return "\n".join(lines)


def _summary_table(paper: PaperHead, result: Mapping[str, Any]) -> list[str]:
    return [
        "| | paper | this model |",
        "|---|---:|---:|",
        f"| accuracy | {paper.accuracy:.1%} | {result['accuracy']:.1%} |",
        f"| balanced accuracy | — | {result['balanced_accuracy']:.1%} |",
        f"| macro-F1 | — | {result['macro_f1']:.1%} |",
        f"| test images | {sum(paper.support.values()):,} | {result['support']:,} |",
    ]


def _class_table(paper: PaperHead, result: Mapping[str, Any]) -> list[str]:
    rows = [
        "| class | support (paper) | support | recall (paper) | recall | precision | F1 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, figures in result["classes"].items():
        paper_recall = f"{paper.recall[name]:.2f}" if name in paper.recall else "—"
        rows.append(
            f"| {name} | {paper.support[name]:,} | {figures['support']:,} | {paper_recall} "
            f"| {figures['recall']:.2f} | {figures['precision']:.2f} | {figures['f1']:.2f} |"
        )
    return rows


# Picture geometry, in pixels.
CELL = 64
_LEFT, _TOP, _BOTTOM, _RIGHT = 170, 44, 150, 24
# matplotlib's "Blues" colour map, its nine stops interpolated linearly (what its 256-entry table samples).
_BLUES = np.array(
    [
        [247, 251, 255],
        [222, 235, 247],
        [198, 219, 239],
        [158, 202, 225],
        [107, 174, 214],
        [66, 146, 198],
        [33, 113, 181],
        [8, 81, 156],
        [8, 48, 107],
    ],
    dtype=np.float64,
)


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its total (the class's recall on the diagonal); rows with no sample stay 0."""
    totals = matrix.sum(axis=1, keepdims=True).astype(np.float64)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)


def cell_color(fraction: float) -> tuple[int, int, int]:
    """The fill of a cell whose row-normalised value is ``fraction`` (0 light, 1 dark blue)."""
    stops = np.linspace(0.0, 1.0, len(_BLUES))
    r, g, b = (round(float(np.interp(fraction, stops, _BLUES[:, channel]))) for channel in range(3))
    return r, g, b


def cell_origin(row: int, column: int) -> tuple[int, int]:
    """Top-left pixel of cell (row = true class, column = predicted class) in a confusion picture."""
    return _LEFT + column * CELL, _TOP + row * CELL


def confusion_image(matrix: np.ndarray, labels: Sequence[str], *, title: str) -> Image.Image:
    """A row-normalised confusion matrix with counts: rows true class, columns predicted class."""
    k = len(labels)
    fractions = row_normalised(matrix)
    image = Image.new("RGB", (_LEFT + k * CELL + _RIGHT, _TOP + k * CELL + _BOTTOM), "white")
    draw = ImageDraw.Draw(image)
    font, small = ImageFont.load_default(size=14), ImageFont.load_default(size=11)
    draw.text((_LEFT, 12), title, fill="black", font=font)
    for row in range(k):
        for column in range(k):
            x, y = cell_origin(row, column)
            fill = cell_color(float(fractions[row, column]))
            draw.rectangle((x, y, x + CELL - 1, y + CELL - 1), fill=fill)
            ink = "white" if fractions[row, column] > 0.5 else "black"
            draw.text(
                (x + CELL / 2, y + CELL / 2 - 7), f"{fractions[row, column]:.2f}", ink, font, anchor="mm"
            )
            draw.text((x + CELL / 2, y + CELL / 2 + 9), f"({matrix[row, column]:,})", ink, small, anchor="mm")
    for i, label in enumerate(labels):
        draw.text((_LEFT - 8, _TOP + i * CELL + CELL / 2), label, fill="black", font=font, anchor="rm")
        _draw_vertical(image, label, font, (_LEFT + i * CELL + CELL / 2, _TOP + k * CELL + 6))
    draw.text((_LEFT + k * CELL / 2, image.height - 8), "predicted", fill="black", font=font, anchor="md")
    draw.text((8, _TOP + k * CELL / 2), "true", fill="black", font=font, anchor="lm")
    return image


def _draw_vertical(
    image: Image.Image,
    text: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    top_center: tuple[float, int],
) -> None:
    # Column labels ("more than 70", "Southeast Asian") are wider than a cell: draw them turned 90°.
    _, _, right, bottom = font.getbbox(text)
    strip = Image.new("L", (math.ceil(right) + 2, math.ceil(bottom) + 2), 0)
    ImageDraw.Draw(strip).text((0, 0), text, fill=255, font=font)
    turned = strip.rotate(90, expand=True)
    x = int(top_center[0] - turned.width / 2)
    image.paste((0, 0, 0), (x, top_center[1]), turned)
