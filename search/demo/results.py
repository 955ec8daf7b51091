"""What the demo prints at the end: the test-split table beside the paper, and where each output went."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data.cache import open_cache
from data.labels import HEADS
from model import paper
from search.demo.layout import PORT_HOST, STUDY, DemoLayout, shown
from search.demo.steps import dashboard_command

REPORT = Path("report") / "report.json"  # where `hpo export-best` writes an export's test report


@dataclass(frozen=True)
class Row:
    """One line of the closing table: a head, what it stood on, and its figures per head."""

    label: str
    base: str
    train: int  # images the head was trained on
    test: int  # images it was scored on
    accuracy: Mapping[str, float]  # head -> fraction
    balanced: Mapping[str, float] | None  # head -> fraction; None where the source gives none


def report_row(label: str, report: Mapping[str, Any], train: int) -> Row:
    """A row from a test report of `hpo export-best` (``report.json``)."""
    source, heads = report["source"], report["heads"]
    weights = str(source.get("weights", ""))
    base = str(source["base"]) + (f" {weights}" if weights.startswith("random:") else "")
    return Row(
        label=f"{label} (trial {source['trial']})",
        base=base,
        train=train,
        test=int(report["count"]),
        accuracy={head: float(heads[head]["accuracy"]) for head in HEADS},
        balanced={head: float(heads[head]["balanced_accuracy"]) for head in HEADS},
    )


def paper_row() -> Row:
    """The paper's published figures: accuracies of its Tables III-V (it gives no balanced accuracy)."""
    return Row(
        label="paper, Tables III-V (published)",
        base=paper.BASE,
        train=paper.TRAIN_IMAGES,
        test=sum(paper.PAPER["age"].support.values()),
        accuracy={head: paper.PAPER[head].accuracy for head in HEADS},
        balanced=None,
    )


def format_table(rows: Sequence[Row]) -> list[str]:
    """The rows as an aligned Markdown table, figures in percent, "—" where there is none."""
    header = ["head", "base", "train", "test"]
    header += [f"{head} {kind}" for head in HEADS for kind in ("acc", "bal")] + ["mean bal"]
    cells = [header, *(_cells(row) for row in rows)]
    widths = [max(len(line[column]) for line in cells) for column in range(len(header))]
    left = 2  # head and base read left-aligned, the numbers right-aligned

    def line(values: Sequence[str]) -> str:
        padded = [
            v.ljust(w) if i < left else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if i >= left else "-") for i, w in enumerate(widths)) + "|"
    return [line(header), rule, *(line(values) for values in cells[1:])]


def _cells(row: Row) -> list[str]:
    values = [row.label, row.base, f"{row.train:,}", f"{row.test:,}"]
    for head in HEADS:
        values += [_percent(row.accuracy[head]), _percent(row.balanced[head] if row.balanced else None)]
    mean = sum(row.balanced.values()) / len(HEADS) if row.balanced else None
    return [*values, _percent(mean)]


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def results_table(layout: DemoLayout) -> list[str]:
    """The closing table: trial 0 (the paper's Table II head) and the best head, both trained in this
    demo's study and scored on its held-out test split, and the paper's published figures."""
    cache = open_cache(layout.cache)
    train, val = len(cache.files("train")), len(cache.files("val"))
    views = cache.views("train") - 1
    best = _read(layout.export)
    rows = [
        report_row("Table II head", _read(layout.paper_export), train),
        report_row("best searched head", best, train),
        paper_row(),
    ]
    augmented = f", each also as {views} augmented view(s)" if views else ""
    won = ["no searched head beat the Table II head on validation: the best trial is trial 0."]
    return [
        f"results on the held-out test split, in % (acc: accuracy; bal: balanced accuracy, the mean recall "
        f"over classes; the search scored on the {val:,} validation images only):",
        *format_table(rows),
        f"train: the images each head was trained on{augmented}; both heads of this demo trained for the "
        "same epochs in the same study. The paper gives no balanced accuracy.",
        *(won if best["source"]["trial"] == 0 else []),
    ]


def _read(export: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((export / REPORT).read_text(encoding="utf-8"))
    return report


def outputs_summary(layout: DemoLayout, port: int) -> list[str]:
    """Where each output went, and how to open the dashboard on the study."""
    program, *arguments = dashboard_command(layout, port)
    reports = [
        (layout.export / "report", "test split, best head"),
        (layout.paper_export / "report", "test split, Table II head"),
    ]
    return [
        "outputs:",
        f"  embedding cache    {shown(layout.cache)}",
        f"  study database     {shown(layout.database)}  (study {STUDY!r})",
        f"  best-trial heads   {shown(layout.artifacts)}",
        f"  best export        {shown(layout.export)}  (model card and model)",
        f"  trial 0's export   {shown(layout.paper_export)}  (the paper's Table II head)",
        *(
            f"  {'reports' if i == 0 else '':<18} {shown(folder / 'report.md')}  ({what})"
            for i, (folder, what) in enumerate(reports)
        ),
        f"{'':21}each with report.json, confusion_{{{','.join(HEADS)}}}.png and groups.png beside it",
        "open the dashboard on the study (hpo demo --dashboard serves it after the flow):",
        f"  {shlex.join([_shown_program(program), *arguments])}",
        f"  then browse http://{PORT_HOST}:{port}/dashboard",
        f"evaluate it on another split:  {_shown_program('hpo')} evaluate --model {shown(layout.export)} "
        f"--cache {shown(layout.cache)} --split-name val --out {shown(layout.root / 'report-val')}",
        f"predict with the export:  {_shown_program('hpo')} predict --model {shown(layout.export)} IMAGE.jpg",
    ]


def _shown_program(name: str) -> str:
    """How to call an installed program: its path in this environment, which may not be on PATH."""
    path = Path(sys.executable).with_name(Path(name).name)
    return shown(path) if path.exists() else Path(name).name
