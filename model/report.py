"""The evaluation report of an exported model: per-head metrics, confusion matrices and the paper beside them.

Writes ``report.json``, ``report.md`` and ``confusion_<head>.png`` (row-normalised, with counts, like the
paper's Figures 1–3, drawn by :mod:`model.charts`); for an evaluation on images, what share of the
split's images the dataset held, and ``missing_images.txt`` listing the others.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data.labels import HEADS, VOCABULARIES
from model.charts import confusion_image
from model.group_report import GROUPS_PNG, group_chart, group_markdown
from model.metrics import classification_report, group_metrics
from model.paper import PAPER, PaperHead

REPORT_FORMAT_VERSION = 1
REPORT_JSON = "report.json"
REPORT_MARKDOWN = "report.md"
MISSING_IMAGES = "missing_images.txt"
CHART_AXES = "rows: true class, normalised per row; columns: predicted class"
NOT_HELD = (
    "The paper's figures held here are Tables III–V's supports and overall accuracies and Table III's "
    "30-39 recall (0.03); their other per-class precision, recall and F1 are not held (no citable copy "
    "of those cells was found) and show —. The paper reports no balanced accuracy, and without its "
    "per-class recalls none is computed for it."
)


@dataclass(frozen=True)
class Coverage:
    """How many of a split's images a dataset held: the others are ``missing`` (relative paths)."""

    split: str
    total: int
    missing: Sequence[str]

    @property
    def present(self) -> int:
        return self.total - len(self.missing)

    @property
    def fraction(self) -> float:
        return self.present / self.total if self.total else 0.0

    def sentence(self) -> str:
        """E.g. ``1,606 of 17,349 test images present, 9.3 %``."""
        return f"{self.present:,} of {self.total:,} {self.split} images present, {100 * self.fraction:.1f} %"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Coverage:
        """The coverage a report holds (``to_dict``'s output)."""
        return cls(str(data["split"]), int(data["total"]), tuple(data["missing"]))

    def to_dict(self) -> dict[str, object]:
        return {
            "split": self.split,
            "total": self.total,
            "present": self.present,
            "fraction": self.fraction,
            "missing": list(self.missing),
        }


def evaluation_report(
    labels: np.ndarray,
    predictions: np.ndarray,
    *,
    source: Mapping[str, object],
    coverage: Coverage | None = None,
) -> dict[str, object]:
    """The report of ``predictions`` against ``labels`` (both (N, 3) class indices, columns in HEADS order).

    ``source`` says what was evaluated (model, split, images or cache) and is copied into the report;
    ``coverage``, for images, how many of the split's images there were.
    """
    if labels.shape != predictions.shape or labels.ndim != 2 or labels.shape[1] != len(HEADS):
        raise ValueError(
            f"labels and predictions must both be (N, 3), got {labels.shape} and {predictions.shape}."
        )
    heads = {
        head: classification_report(labels[:, column], predictions[:, column], VOCABULARIES[head])
        for column, head in enumerate(HEADS)
    }
    report: dict[str, object] = {
        "format_version": REPORT_FORMAT_VERSION,
        "source": dict(source),
        "count": len(labels),
        "heads": heads,
        "groups": group_metrics(labels.astype(np.int64), predictions.astype(np.int64)),
    }
    if coverage is not None:
        report["coverage"] = coverage.to_dict()
    return report


def write_report(report: Mapping[str, object], out: Path) -> list[Path]:
    """Write the JSON, the Markdown and one confusion-matrix PNG per head into ``out``; return their paths.

    A report with coverage also gets ``missing_images.txt`` (one relative path a line); report.json
    names that file instead of holding the list.
    """
    out.mkdir(parents=True, exist_ok=True)
    written = [out / REPORT_JSON, out / REPORT_MARKDOWN]
    stored = dict(report)
    if "coverage" in report:
        coverage: Mapping[str, Any] = report["coverage"]  # type: ignore[assignment]
        stored["coverage"] = {**coverage, "missing": MISSING_IMAGES}
        written.append(out / MISSING_IMAGES)
        written[-1].write_text("".join(f"{name}\n" for name in coverage["missing"]), encoding="utf-8")
    written[0].write_text(json.dumps(stored, indent=2) + "\n", encoding="utf-8")
    written[1].write_text(report_markdown(report), encoding="utf-8")
    heads: Mapping[str, Mapping[str, object]] = report["heads"]  # type: ignore[assignment]
    for head, result in heads.items():
        path = out / f"confusion_{head}.png"
        matrix = np.asarray(result["confusion_matrix"], dtype=np.int64)
        title = f"{head} ({PAPER[head].table}), n = {int(matrix.sum()):,}\n{CHART_AXES}"
        confusion_image(matrix, VOCABULARIES[head], title=title).save(path)
        written.append(path)
    groups: Mapping[str, Mapping[str, Any]] = report["groups"]  # type: ignore[assignment]
    group_chart(groups).save(out / GROUPS_PNG)
    return [*written, out / GROUPS_PNG]


def report_markdown(report: Mapping[str, object]) -> str:
    """The report as Markdown: the source, then per head the paper beside this model and the picture."""
    source: Mapping[str, object] = report["source"]  # type: ignore[assignment]
    lines = ["# Evaluation report", ""]
    lines += [f"- {key}: `{value}`" for key, value in source.items()]
    lines += [f"- images evaluated: {report['count']:,}", *_coverage_lines(report), ""]
    heads: Mapping[str, Mapping[str, Any]] = report["heads"]  # type: ignore[assignment]
    for head, result in heads.items():
        paper = PAPER[head]
        lines += [f"## {head} (paper: {paper.table})", "", *_summary_table(paper, result), ""]
        lines += [*_class_table(paper, result), "", f"![{head} confusion matrix](confusion_{head}.png)", ""]
        lines += [f"Confusion matrix: {CHART_AXES}; counts in brackets.", ""]
    lines += group_markdown(report["groups"])  # type: ignore[arg-type]
    return "\n".join([*lines, NOT_HELD, ""])


def _coverage_lines(report: Mapping[str, object]) -> list[str]:
    if "coverage" not in report:
        return []
    coverage: Mapping[str, Any] = report["coverage"]  # type: ignore[assignment]
    held = Coverage.from_dict(coverage)
    line = f"- coverage: {held.sentence()}"
    if held.missing:
        line += f"; the {len(held.missing):,} missing are listed in {MISSING_IMAGES}"
    return [line]


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
        "| class | precision (paper) | precision | recall (paper) | recall | F1 (paper) | F1 "
        "| support (paper) | support |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    held = {"precision": paper.precision, "recall": paper.recall, "f1": paper.f1}
    for name, figures in result["classes"].items():
        cells = [
            f"{_paper_figure(held[metric], name)} | {figures[metric]:.2f}"
            for metric in ("precision", "recall", "f1")
        ]
        rows.append(f"| {name} | {' | '.join(cells)} | {paper.support[name]:,} | {figures['support']:,} |")
    return rows


def _paper_figure(figures: Mapping[str, float], name: str) -> str:
    return f"{figures[name]:.2f}" if name in figures else "—"
