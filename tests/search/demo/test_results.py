"""The demo's closing table."""

from __future__ import annotations

from search.demo.results import Row, format_table, paper_row


def test_format_table_aligns_percentages_and_marks_missing_figures() -> None:
    figures = {"age": 0.4, "race": 0.5, "gender": 0.8}
    rows = [
        Row(
            "Table II head (trial 0)",
            "dlib-resnet",
            400,
            400,
            figures,
            {"age": 0.3, "race": 0.5, "gender": 0.81},
        ),
        paper_row(),
    ]
    assert format_table(rows) == [
        "| head                            | base        |  train |   test | age acc | age bal | race acc "
        "| race bal | gender acc | gender bal | mean bal |",
        "|---------------------------------|-------------|-------:|-------:|--------:|--------:|---------:"
        "|---------:|-----------:|-----------:|---------:|",
        "| Table II head (trial 0)         | dlib-resnet |    400 |    400 |    40.0 |    30.0 |     50.0 "
        "|     50.0 |       80.0 |       81.0 |     53.7 |",
        "| paper, Tables III-V (published) | VGG-Face    | 69,395 | 17,349 |    45.3 |       — |     55.0 "
        "|        — |       85.6 |          — |        — |",
    ]
