"""The report's pictures, drawn with Pillow: confusion matrices like the paper's Figures 1-3.

Pillow is already a dependency for image decoding, so evaluation adds no plotting library to the images,
and the pixels are deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Picture geometry, in pixels. The title takes up to TITLE_LINES lines above the grid, from the left edge;
# the picture is widened when a line is wider than the grid (a two-class matrix is only 128 px wide).
CELL = 64
TITLE_FONT_SIZE = 14
TITLE_LINES = 2
_LINE = 20  # title line height
_MARGIN = 10
_LEFT, _TOP, _BOTTOM, _RIGHT = 170, _MARGIN + TITLE_LINES * _LINE + 8, 150, 24
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
    """A row-normalised confusion matrix with counts: rows true class, columns predicted class.

    ``title`` has at most TITLE_LINES lines (``\n``-separated); each is drawn whole.
    """
    k = len(labels)
    lines = title.split("\n")
    if len(lines) > TITLE_LINES:
        raise ValueError(f"a title has at most {TITLE_LINES} lines, got {len(lines)}: {title!r}")
    fractions = row_normalised(matrix)
    font, small = ImageFont.load_default(size=TITLE_FONT_SIZE), ImageFont.load_default(size=11)
    title_width = max(math.ceil(font.getlength(line)) for line in lines) + 2 * _MARGIN
    image = Image.new(
        "RGB", (max(_LEFT + k * CELL + _RIGHT, title_width), _TOP + k * CELL + _BOTTOM), "white"
    )
    draw = ImageDraw.Draw(image)
    for number, line in enumerate(lines):
        draw.text((_MARGIN, _MARGIN + number * _LINE), line, fill="black", font=font)
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
