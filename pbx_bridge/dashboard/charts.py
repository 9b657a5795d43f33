"""Bar charts as plain SVG geometry, so the pages need no script and no outside asset."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class Bar:
    label: str
    value_text: str
    x: float
    y: float
    width: float
    height: float
    label_x: float
    label_y: float
    value_x: float
    value_y: float


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    css: str
    width: int
    height: int
    vertical: bool
    bars: list[Bar]


LABEL_WIDTH = 150
ROW_HEIGHT = 22
PLOT_WIDTH = 260


def horizontal_chart(chart_id: str, title: str, css: str, items: list[tuple[str, float | Decimal | None]], value_format: str = "{:g}") -> Chart:
    """Lay out one bar per item, scaled to the largest value. Items without a value get no bar."""
    values = [float(value) for _, value in items if value is not None]
    maximum = max(values, default=0.0) or 1.0
    bars = []
    for index, (label, value) in enumerate(items):
        top = 6 + index * ROW_HEIGHT
        length = PLOT_WIDTH * float(value) / maximum if value is not None else 0.0
        bars.append(
            Bar(
                label=_shorten(label, 22),
                value_text=value_format.format(value) if value is not None else "—",
                x=LABEL_WIDTH,
                y=top,
                width=round(length, 1),
                height=ROW_HEIGHT - 6,
                label_x=4,
                label_y=top + 12,
                value_x=round(LABEL_WIDTH + length + 4, 1),
                value_y=top + 12,
            )
        )
    return Chart(chart_id, title, css, LABEL_WIDTH + PLOT_WIDTH + 60, 12 + len(items) * ROW_HEIGHT, False, bars)


def vertical_chart(chart_id: str, title: str, css: str, items: list[tuple[str, int]]) -> Chart:
    """Lay out one column per item, such as the days of a period, with labels under the columns."""
    plot_height = 140
    column = max(12, min(40, 640 // max(len(items), 1)))
    maximum = max((value for _, value in items), default=0) or 1
    bars = []
    for index, (label, value) in enumerate(items):
        height = plot_height * value / maximum
        left = 10 + index * column
        bars.append(
            Bar(
                label=label if len(items) <= 16 or index % max(len(items) // 12, 1) == 0 else "",
                value_text=str(value),
                x=left,
                y=round(20 + plot_height - height, 1),
                width=column - 3,
                height=round(height, 1),
                label_x=left + column / 2,
                label_y=20 + plot_height + 14,
                value_x=left + column / 2,
                value_y=round(16 + plot_height - height, 1),
            )
        )
    return Chart(chart_id, title, css, 20 + len(items) * column, plot_height + 44, True, bars)


def _shorten(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"
