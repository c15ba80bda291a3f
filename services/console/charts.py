"""Server-rendered SVG charts for the Today page: no script, no library, nothing fetched.

Readable without colour: every bar carries its number, the three parts of a bar differ by
pattern as well as shade (solid, hatched, dotted) and the legend shows the patterns; the two
rates differ by line (solid, dashed) and marker (circle, square) and every point carries its
percentage; each chart has a title and description for screen readers, and the page repeats
the numbers in a table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from markupsafe import Markup, escape

# The three parts of a week's bar: (label, states, fill).
SERIES = (
    ("introduced", ("introduced",), "url(#roac-solid)"),
    ("in progress (asked, accepted)", ("asked", "accepted"), "url(#roac-hatch)"),
    (
        "ended without (declined, expired, failed)",
        ("declined", "expired", "failed"),
        "url(#roac-dots)",
    ),
)

_PATTERNS = """
<defs>
  <pattern id="roac-solid" width="6" height="6" patternUnits="userSpaceOnUse">
    <rect width="6" height="6" fill="#1f4e79"/>
  </pattern>
  <pattern id="roac-hatch" width="6" height="6" patternUnits="userSpaceOnUse"
           patternTransform="rotate(45)">
    <rect width="6" height="6" fill="#ffffff"/>
    <line x1="0" y1="0" x2="0" y2="6" stroke="#1f4e79" stroke-width="3"/>
  </pattern>
  <pattern id="roac-dots" width="6" height="6" patternUnits="userSpaceOnUse">
    <rect width="6" height="6" fill="#ffffff"/>
    <circle cx="3" cy="3" r="1.4" fill="#555555"/>
  </pattern>
</defs>
"""


def _text(value: str) -> str:
    """`value` escaped, as plain text to join with markup (a Markup would escape the markup)."""
    return str(escape(value))


def week_label(week: Any) -> str:
    text = str(week)  # 2026-11-30
    return text[5:] if len(text) >= 10 else text


def intros_per_week(weeks: Sequence[dict[str, Any]], of: str = "") -> Markup:
    """Stacked bars: introductions created each week, by what became of them (`of`: which
    pool, said in the title)."""
    width, height, left, bottom, top = 720, 260, 40, 40, 30
    plot_h = height - bottom - top
    slot = (width - left - 10) / max(len(weeks), 1)
    peak = max([w.get("total", 0) for w in weeks] + [1])
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height + 60}" role="img" '
        'aria-labelledby="chart-weeks-title chart-weeks-desc" xmlns="http://www.w3.org/2000/svg">',
        '<title id="chart-weeks-title">'
        + _text(f"Introductions per week, last {len(weeks)} weeks{of}")
        + "</title>",
        '<desc id="chart-weeks-desc">'
        + _text(
            "; ".join(
                f"week of {w['week']}: {w.get('total', 0)} in all, "
                f"{w.get('introduced', 0)} introduced"
                for w in weeks
            )
        )
        + "</desc>",
        _PATTERNS,
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 5}" y2="{top + plot_h}" '
        'stroke="#333333"/>',
    ]
    for index, week in enumerate(weeks):
        x = left + index * slot + slot * 0.15
        bar_w = slot * 0.7
        y = top + plot_h
        for _label, states, fill in SERIES:
            value = sum(int(week.get(s, 0)) for s in states)
            if not value:
                continue
            h = plot_h * value / peak
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{fill}" stroke="#1f4e79"/>'
            )
        parts.append(
            f'<text x="{x + bar_w / 2:.1f}" y="{y - 5:.1f}" text-anchor="middle" '
            f'font-size="13">{int(week.get("total", 0))}</text>'
        )
        parts.append(
            f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h + 18}" text-anchor="middle" '
            f'font-size="12">{escape(week_label(week["week"]))}</text>'
        )
    legend_y = height + 15
    for index, (label, _states, fill) in enumerate(SERIES):
        lx = left + (0, 120, 360)[index]
        parts.append(
            f'<rect x="{lx}" y="{legend_y}" width="16" height="16" fill="{fill}" stroke="#1f4e79"/>'
        )
        parts.append(
            f'<text x="{lx + 22}" y="{legend_y + 13}" font-size="12">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text inside is escaped or a number


# The rates chart's two lines: (key, label, colour, dash pattern, marker). They differ by dash
# and marker shape as well as by colour, and each point carries its percentage.
RATE_SERIES = (
    ("acceptance", "acceptance rate", "#1f4e79", "", "circle"),
    ("met", "“we met” rate", "#7a3b00", "6 4", "square"),
)


def _marker(shape: str, x: float, y: float, colour: str) -> str:
    if shape == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}"/>'
    return f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" fill="{colour}"/>'


def _rate_text(rate: float | None) -> str:
    return "no answers yet" if rate is None else f"{rate:.0%}"


def rates_per_week(
    weeks: Sequence[dict[str, Any]],
    acceptance: Sequence[float | None],
    met: Sequence[float | None],
    of: str = "",
) -> Markup:
    """Two lines over the weeks, the acceptance rate (solid, circles, labels above) and the
    "we met" rate (dashed, squares, labels below), each point labelled with its percentage."""
    width, height, left, bottom, top = 720, 250, 40, 70, 25
    plot_h = height - bottom - top
    slot = (width - left - 10) / max(len(weeks), 1)
    values = {"acceptance": acceptance, "met": met}
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        'aria-labelledby="chart-rate-title chart-rate-desc" xmlns="http://www.w3.org/2000/svg">',
        '<title id="chart-rate-title">'
        + _text(f"Acceptance and “we met” rates per week{of}")
        + "</title>",
        '<desc id="chart-rate-desc">'
        + _text(
            "; ".join(
                f"week of {w['week']}: acceptance {_rate_text(a)}, we met {_rate_text(m)}"
                for w, a, m in zip(weeks, acceptance, met, strict=True)
            )
        )
        + "</desc>",
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 5}" y2="{top + plot_h}" '
        'stroke="#333333"/>',
        f'<text x="{left - 5}" y="{top + 4}" text-anchor="end" font-size="11">100%</text>',
        f'<text x="{left - 5}" y="{top + plot_h + 4}" text-anchor="end" font-size="11">0%</text>',
    ]
    for index, week in enumerate(weeks):
        x = left + index * slot + slot / 2
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 18}" text-anchor="middle" '
            f'font-size="12">{escape(week_label(week["week"]))}</text>'
        )
    for key, _label, colour, dash, shape in RATE_SERIES:
        points = []
        for index, rate in enumerate(values[key]):
            if rate is None:
                continue
            x = left + index * slot + slot / 2
            y = top + plot_h * (1 - rate)
            points.append(f"{x:.1f},{y:.1f}")
            label_y = y - 8 if key == "acceptance" else y + 17
            parts.append(
                _marker(shape, x, y, colour) + f'<text x="{x:.1f}" y="{label_y:.1f}" '
                f'text-anchor="middle" font-size="12" fill="{colour}">{rate:.0%}</text>'
            )
        if len(points) > 1:
            dashes = f' stroke-dasharray="{dash}"' if dash else ""
            parts.insert(
                6,
                f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" '
                f'stroke-width="2"{dashes}/>',
            )
    legend_y = height - 22
    for index, (_key, label, colour, dash, shape) in enumerate(RATE_SERIES):
        lx = left + index * 220
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<line x1="{lx}" y1="{legend_y}" x2="{lx + 30}" y2="{legend_y}" stroke="{colour}" '
            f'stroke-width="2"{dashes}/>'
            + _marker(shape, lx + 15, legend_y, colour)
            + f'<text x="{lx + 38}" y="{legend_y + 4}" font-size="12">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text inside is escaped or a number
