"""Small inline SVG charts: bars, histograms and a scatter plot, with no dependencies.

Each function returns one ``<svg>`` element as a string, sized by its ``viewBox`` so the
page can scale it; every label is escaped. Nothing is loaded from elsewhere.
"""

from __future__ import annotations

import math
from html import escape

WIDTH, HEIGHT = 520, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 28, 44
BAR = "#4C78A8"
MARK = "#E45756"


def _frame(title: str, body: list[str], width: int = WIDTH, height: int = HEIGHT) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {width} '
            f'{height}" role="img" aria-label="{escape(title)}">'
            f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" class="plot-title">'
            f'{escape(title)}</text>{"".join(body)}</svg>')


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / max(1, ticks)
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def _format(value: float) -> str:
    if abs(value) >= 10_000:
        return f"{value / 1000:.0f}k"
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:.2g}"


def _y_axis(maximum: float, height: int, x0: int, x1: int) -> tuple[list[str], float]:
    top = maximum if maximum > 0 else 1
    step = _nice_step(top)
    top = math.ceil(top / step) * step
    parts = []
    value = 0.0
    while value <= top + step / 2:
        y = height - BOTTOM - (height - TOP - BOTTOM) * value / top
        parts.append(f'<line x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{_format(value)}</text>')
        value += step
    return parts, top


def bar_chart(bars: list[tuple[str, int]], title: str, x_label: str, y_label: str) -> str:
    """Vertical bars, one per ``(label, count)`` in the given order."""
    if not bars:
        return _frame(title, ['<text x="50%" y="50%" text-anchor="middle">no data</text>'])
    body, top = _y_axis(max(count for _, count in bars), HEIGHT, LEFT, WIDTH - RIGHT)
    slot = (WIDTH - LEFT - RIGHT) / len(bars)
    every = max(1, math.ceil(len(bars) / 20))
    for index, (label, count) in enumerate(bars):
        height = (HEIGHT - TOP - BOTTOM) * count / top
        x = LEFT + index * slot
        body.append(f'<rect x="{x + slot * 0.1:.1f}" y="{HEIGHT - BOTTOM - height:.1f}" '
                    f'width="{slot * 0.8:.1f}" height="{height:.1f}" fill="{BAR}">'
                    f'<title>{escape(label)}: {count}</title></rect>')
        if index % every == 0:
            body.append(f'<text x="{x + slot / 2:.1f}" y="{HEIGHT - BOTTOM + 14}" '
                        f'text-anchor="middle">{escape(label)}</text>')
    body.append(_axis_labels(x_label, y_label))
    return _frame(title, body)


def horizontal_bars(bars: list[tuple[str, int]], title: str, x_label: str) -> str:
    """Horizontal bars with their labels on the left (for long labels such as answers)."""
    if not bars:
        return _frame(title, ['<text x="50%" y="50%" text-anchor="middle">no data</text>'])
    row = 18
    height = TOP + BOTTOM + row * len(bars)
    left = 200
    maximum = max(count for _, count in bars) or 1
    body = []
    for index, (label, count) in enumerate(bars):
        y = TOP + index * row
        width = (WIDTH - left - RIGHT - 40) * count / maximum
        short = label if len(label) <= 30 else label[:29] + "\u2026"
        body.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{escape(short)}'
                    f'<title>{escape(label)}</title></text>'
                    f'<rect x="{left}" y="{y + 3}" width="{width:.1f}" height="{row - 6}" '
                    f'fill="{BAR}"><title>{escape(label)}: {count}</title></rect>'
                    f'<text x="{left + width + 4:.1f}" y="{y + 13}">{count}</text>')
    body.append(f'<text x="{(left + WIDTH) / 2:.0f}" y="{height - 12}" text-anchor="middle" '
                f'class="axis-label">{escape(x_label)}</text>')
    return _frame(title, body, height=height)


def histogram(values: list[float], title: str, x_label: str, *, bins: int = 30,
              marker: float | None = None, marker_label: str = "") -> str:
    """A histogram of ``values``, with an optional vertical marker (such as a budget)."""
    if not values:
        return _frame(title, ['<text x="50%" y="50%" text-anchor="middle">no data</text>'])
    low = min(values)
    high = max(max(values), marker if marker is not None else low)
    if high == low:
        high = low + 1
    width = (high - low) / bins
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, int((value - low) / width))] += 1
    body, top = _y_axis(max(counts), HEIGHT, LEFT, WIDTH - RIGHT)
    plot_width = WIDTH - LEFT - RIGHT
    for index, count in enumerate(counts):
        if not count:
            continue
        height = (HEIGHT - TOP - BOTTOM) * count / top
        x = LEFT + plot_width * index / bins
        start = low + index * width
        body.append(f'<rect x="{x:.1f}" y="{HEIGHT - BOTTOM - height:.1f}" '
                    f'width="{plot_width / bins * 0.95:.1f}" height="{height:.1f}" '
                    f'fill="{BAR}"><title>{_format(start)}-{_format(start + width)}: '
                    f'{count}</title></rect>')
    for fraction in (0, 0.5, 1):
        x = LEFT + plot_width * fraction
        body.append(f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle">'
                    f'{_format(low + (high - low) * fraction)}</text>')
    if marker is not None:
        x = LEFT + plot_width * (marker - low) / (high - low)
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" '
                    f'stroke="{MARK}" stroke-width="2" class="marker"/>'
                    f'<text x="{x - 4:.1f}" y="{TOP + 12}" text-anchor="end" fill="{MARK}">'
                    f'{escape(marker_label)}</text>')
    body.append(_axis_labels(x_label, "records"))
    return _frame(title, body)


def scatter(points: list[tuple[float, float]], title: str, x_label: str, y_label: str) -> str:
    """Points on linear axes starting at 0 (same scale on both, so shapes look right)."""
    if not points:
        return _frame(title, ['<text x="50%" y="50%" text-anchor="middle">no data</text>'])
    maximum = max(max(x for x, _ in points), max(y for _, y in points))
    body, top = _y_axis(maximum, HEIGHT, LEFT, WIDTH - RIGHT)
    side = HEIGHT - TOP - BOTTOM
    for x, y in points:
        cx = LEFT + side * x / top
        cy = HEIGHT - BOTTOM - side * y / top
        body.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="{BAR}" '
                    f'fill-opacity="0.5"><title>{x:.0f}x{y:.0f}</title></circle>')
    for fraction in (0, 0.5, 1):
        body.append(f'<text x="{LEFT + side * fraction:.1f}" y="{HEIGHT - BOTTOM + 14}" '
                    f'text-anchor="middle">{_format(top * fraction)}</text>')
    body.append(f'<text x="{LEFT + side / 2:.0f}" y="{HEIGHT - 8}" text-anchor="middle" '
                f'class="axis-label">{escape(x_label)}</text>'
                f'<text x="14" y="{HEIGHT / 2:.0f}" text-anchor="middle" class="axis-label" '
                f'transform="rotate(-90 14 {HEIGHT / 2:.0f})">{escape(y_label)}</text>')
    return _frame(title, body)


def _axis_labels(x_label: str, y_label: str) -> str:
    return (f'<text x="{(LEFT + WIDTH) / 2:.0f}" y="{HEIGHT - 8}" text-anchor="middle" '
            f'class="axis-label">{escape(x_label)}</text>'
            f'<text x="14" y="{HEIGHT / 2:.0f}" text-anchor="middle" class="axis-label" '
            f'transform="rotate(-90 14 {HEIGHT / 2:.0f})">{escape(y_label)}</text>')
