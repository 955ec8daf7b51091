from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from model.charts import CELL, TITLE_FONT_SIZE, cell_color, cell_origin, row_normalised
from model.paper import PAPER
from model.report import (
    CHART_AXES,
    MISSING_IMAGES,
    NOT_HELD,
    Coverage,
    evaluation_report,
    report_markdown,
    write_report,
)

# Six faces, columns age, race, gender (vocabulary indices).
LABELS = np.array([[3, 0, 1], [3, 0, 0], [4, 1, 1], [4, 1, 1], [4, 5, 0], [8, 6, 0]])
PREDICTIONS = np.array([[3, 0, 1], [4, 0, 1], [3, 1, 1], [4, 2, 1], [4, 5, 0], [3, 6, 0]])
SOURCE = {"model": "export", "split": "test", "from": "cache"}


def test_evaluation_report_matches_hand_counts() -> None:
    report = evaluation_report(LABELS, PREDICTIONS, source=SOURCE)
    assert report["count"] == 6
    assert report["source"] == SOURCE
    age = report["heads"]["age"]  # type: ignore[index]
    # True 20-29 (3): predicted 20-29, 30-39. True 30-39 (4): 20-29, 30-39, 30-39. True 70+ (8): 20-29.
    expected = np.zeros((9, 9), dtype=int)
    expected[3, 3], expected[3, 4], expected[4, 3], expected[4, 4], expected[8, 3] = 1, 1, 1, 2, 1
    assert age["confusion_matrix"] == expected.tolist()
    assert age["accuracy"] == 3 / 6
    assert age["balanced_accuracy"] == (1 / 2 + 2 / 3 + 0) / 3
    assert age["classes"]["20-29"] == {"precision": 1 / 3, "recall": 1 / 2, "f1": 0.4, "support": 2}
    assert age["classes"]["30-39"] == {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}
    gender = report["heads"]["gender"]  # type: ignore[index]
    assert gender["confusion_matrix"] == [[2, 1], [0, 3]]
    assert gender["classes"]["Female"] == {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3}


def test_evaluation_report_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match=r"must both be \(N, 3\), got \(6, 3\) and \(5, 3\)"):
        evaluation_report(LABELS, PREDICTIONS[:5], source=SOURCE)


def test_row_normalised_empty_row_stays_zero() -> None:
    fractions = row_normalised(np.array([[1, 3], [0, 0]]))
    assert fractions.tolist() == [[0.25, 0.75], [0.0, 0.0]]


def test_write_report_writes_json_markdown_and_cell_colours(tmp_path: Path) -> None:
    report = evaluation_report(LABELS, PREDICTIONS, source=SOURCE)
    written = write_report(report, tmp_path / "report")
    names = [path.name for path in written]
    assert names == [
        "report.json",
        "report.md",
        "confusion_age.png",
        "confusion_race.png",
        "confusion_gender.png",
        "groups.png",
    ]
    assert json.loads((tmp_path / "report" / "report.json").read_text()) == report
    gender = Image.open(tmp_path / "report" / "confusion_gender.png").convert("RGB")
    # A cell's corner (away from its text) holds the colour of its row-normalised value.
    for (row, column), fraction in {(0, 0): 2 / 3, (0, 1): 1 / 3, (1, 0): 0.0, (1, 1): 1.0}.items():
        x, y = cell_origin(row, column)
        assert gender.getpixel((x + 2, y + 2)) == cell_color(fraction)
    age = Image.open(tmp_path / "report" / "confusion_age.png")
    assert age.width > 9 * CELL and age.height > 9 * CELL


def test_cell_color_ends_are_light_and_dark() -> None:
    assert cell_color(0.0) == (247, 251, 255)
    assert cell_color(1.0) == (8, 48, 107)


def test_report_markdown_puts_paper_beside_model() -> None:
    markdown = report_markdown(evaluation_report(LABELS, PREDICTIONS, source=SOURCE))
    lines = markdown.splitlines()
    # Precision, recall, F1 and support, the paper's beside ours: the paper's support and the one
    # per-class paper figure held (30-39 recall 0.03); the rest are —, and the report says why.
    assert "| class | precision (paper) | precision | recall (paper) | recall | F1 (paper) | F1 " in markdown
    assert "| 30-39 | — | 0.67 | 0.03 | 0.67 | — | 0.67 | 3,827 | 3 |" in lines
    assert "| 20-29 | — | 0.33 | — | 0.50 | — | 0.40 | 5,220 | 2 |" in lines
    assert "| Male | — | 0.75 | — | 1.00 | — | 0.86 | 9,186 | 3 |" in lines
    assert NOT_HELD in lines
    assert "| accuracy | 45.3% | 50.0% |" in lines
    assert "| balanced accuracy | — | 38.9% |" in lines
    assert "| accuracy | 55.0% | 83.3% |" in lines
    assert "| accuracy | 85.6% | 83.3% |" in lines
    assert lines.count("| test images | 17,349 | 6 |") == 3
    assert "## gender (paper: Table V)" in lines
    assert "![gender confusion matrix](confusion_gender.png)" in lines
    assert "- from: `cache`" in lines


def test_paper_supports_sum_to_the_test_split() -> None:
    assert {head: sum(paper.support.values()) for head, paper in PAPER.items()} == {
        "age": 17349,
        "race": 17349,
        "gender": 17349,
    }


def test_report_groups_equal_a_hand_count_and_absent_groups_are_not_zero(tmp_path: Path) -> None:
    report = evaluation_report(LABELS, PREDICTIONS, source=SOURCE)
    age = report["groups"]["age"]  # type: ignore[index]
    # Age within each race group: White rows 0-1 (recall of 20-29: 1/2), Black rows 2-3 (30-39: 1/2),
    # Indian row 4 (right), Middle Eastern row 5 (wrong); no Latino, East or Southeast Asian rows.
    assert age["by_group"] == {"White": 0.5, "Black": 0.5, "Indian": 1.0, "Middle Eastern": 0.0}
    assert age["absent"] == ["Latino_Hispanic", "East Asian", "Southeast Asian"]
    assert (age["group_min_name"], age["group_min"], age["difference"]) == ("Middle Eastern", 0.0, 1.0)
    markdown = report_markdown(report)
    assert "worst group **Middle Eastern** 0.0%; largest gap 100.0% (best 100.0%)" in markdown
    assert "| Latino_Hispanic | 0 | absent |" in markdown and "| Indian | 1 | 100.0% |" in markdown
    write_report(report, tmp_path)
    chart = Image.open(tmp_path / "groups.png").convert("RGB")
    assert (203, 24, 29) in {colour for _, colour in chart.getcolors(maxcolors=1 << 16)}  # the worst group


def _ink_width(image: Image.Image, box: tuple[int, int, int, int]) -> int:
    """Width of the dark pixels' bounding box inside ``box`` of ``image``."""
    dark = image.crop(box).convert("L").point(lambda value: 255 if value < 128 else 0)
    bbox = dark.getbbox()
    assert bbox is not None
    return bbox[2] - bbox[0]


def test_chart_titles_are_whole_and_name_the_axes(tmp_path: Path) -> None:
    write_report(evaluation_report(LABELS, PREDICTIONS, source=SOURCE), tmp_path)
    font = ImageFont.load_default(size=TITLE_FONT_SIZE)
    for head, table in (("age", "Table III"), ("race", "Table IV"), ("gender", "Table V")):
        image = Image.open(tmp_path / f"confusion_{head}.png").convert("RGB")
        _, top = cell_origin(0, 0)
        for number, line in enumerate([f"{head} ({table}), n = 6", CHART_AXES]):
            # The line drawn alone on a wide canvas: a cut title would be narrower in the chart.
            alone = Image.new("RGB", (2000, 40), "white")
            ImageDraw.Draw(alone).text((10, 10), line, fill="black", font=font)
            band = (0, 4 + number * 20, image.width, 24 + number * 20)
            assert band[3] < top
            assert _ink_width(image, band) == _ink_width(alone, (0, 0, 2000, 40)), (head, line)


def test_coverage_sentence_states_present_of_total() -> None:
    coverage = Coverage("test", 17349, [f"train/{n}.jpg" for n in range(17349 - 1606)])
    assert coverage.sentence() == "1,606 of 17,349 test images present, 9.3 %"
    assert Coverage.from_dict(coverage.to_dict()) == Coverage("test", 17349, tuple(coverage.missing))


def test_write_report_keeps_missing_images_in_their_own_file(tmp_path: Path) -> None:
    coverage = Coverage("test", 8, ["train/7.jpg", "train/9.jpg"])
    report = evaluation_report(LABELS, PREDICTIONS, source=SOURCE, coverage=coverage)
    written = write_report(report, tmp_path)
    assert tmp_path / MISSING_IMAGES in written
    assert (tmp_path / MISSING_IMAGES).read_text() == "train/7.jpg\ntrain/9.jpg\n"
    stored = json.loads((tmp_path / "report.json").read_text())
    assert stored["coverage"] == {
        "split": "test",
        "total": 8,
        "present": 6,
        "fraction": 0.75,
        "missing": MISSING_IMAGES,
    }
    lines = (tmp_path / "report.md").read_text().splitlines()
    assert (
        f"- coverage: 6 of 8 test images present, 75.0 %; the 2 missing are listed in {MISSING_IMAGES}"
        in lines
    )
