"""The evaluation report of an exported model: per-head metrics, confusion matrices and the paper beside them.

Writes ``report.json``, ``report.md`` and ``confusion_<head>.png`` (row-normalised, with counts, like the
paper's Figures 1–3, drawn by :mod:`model.charts`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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
        "groups": group_metrics(labels.astype(np.int64), predictions.astype(np.int64)),
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
    groups: Mapping[str, Mapping[str, Any]] = report["groups"]  # type: ignore[assignment]
    group_chart(groups).save(out / GROUPS_PNG)
    return [*written, out / GROUPS_PNG]


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
    lines += group_markdown(report["groups"])  # type: ignore[arg-type]
    lines += [
        "Paper figures: the overall accuracies and test supports of the paper's Tables III–V and its 30-39",
        "recall; the paper's other per-class figures are not held here and are left as —.",
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
