"""The report's per-group part: each head's balanced accuracy within each race (or gender) group.

Fairlearn's words: ``by_group``, the worst group (``group_min``) and the largest gap (``difference``).
A group with no rows in the evaluated split is listed as absent, never as 0. The bar chart is drawn with
Pillow, as the confusion matrices are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PIL import Image, ImageDraw, ImageFont

GROUPS_PNG = "groups.png"
# Bar chart geometry, in pixels.
_LABEL, _BAR, _ROW, _GAP, _TOP = 200, 420, 22, 34, 40


def group_markdown(groups: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Markdown lines: per head a table of groups (rows, balanced accuracy), its worst group and gap."""
    lines = ["## Per group (balanced accuracy within each group)", ""]
    for head, group in groups.items():
        lines += [
            f"### {head}, by {group['sensitive']}",
            "",
            f"worst group **{group['group_min_name']}** {group['group_min']:.1%}; largest gap "
            f"{group['difference']:.1%} (best {group['group_max']:.1%})",
            "",
            f"| {group['sensitive']} | rows | balanced accuracy |",
            "|---|---:|---:|",
        ]
        for name, rows in group["counts"].items():
            value = group["by_group"].get(name)
            shown = "absent" if value is None else f"{value:.1%}"
            lines.append(f"| {name} | {rows:,} | {shown} |")
        lines.append("")
    lines += [f"![per-group balanced accuracy]({GROUPS_PNG})", ""]
    return lines


def group_chart(groups: Mapping[str, Mapping[str, Any]]) -> Image.Image:
    """One horizontal bar per group and head (0-100 % balanced accuracy); the worst group's bar in red."""
    rows = sum(len(group["counts"]) for group in groups.values())
    height = _TOP + rows * _ROW + len(groups) * _GAP + 20
    image = Image.new("RGB", (_LABEL + _BAR + 80, height), "white")
    draw = ImageDraw.Draw(image)
    font, bold = ImageFont.load_default(size=13), ImageFont.load_default(size=15)
    draw.text((10, 10), "Balanced accuracy per group (absent: no rows)", fill="black", font=bold)
    y = _TOP
    for head, group in groups.items():
        draw.text((10, y + 6), f"{head} by {group['sensitive']}", fill="black", font=bold)
        y += _GAP - 8
        for name in group["counts"]:
            value = group["by_group"].get(name)
            draw.text((_LABEL - 8, y + _ROW / 2), name, fill="black", font=font, anchor="rm")
            if value is None:
                draw.text((_LABEL + 4, y + _ROW / 2), "absent", fill="gray", font=font, anchor="lm")
            else:
                colour = (203, 24, 29) if name == group["group_min_name"] else (33, 113, 181)
                draw.rectangle((_LABEL, y + 3, _LABEL + round(_BAR * value), y + _ROW - 3), fill=colour)
                right = _LABEL + round(_BAR * value) + 6
                draw.text((right, y + _ROW / 2), f"{value:.1%}", fill="black", font=font, anchor="lm")
            y += _ROW
        y += 8
    return image
