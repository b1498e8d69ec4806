"""Small server-rendered SVG charts (no JavaScript, no library).

Every label goes through format_html, so the markup is built from escaped text and numbers.
"""

from collections.abc import Sequence
from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

BASE_COLOR = "#8a94a6"
CAND_COLOR = "#2f5bd3"


def _pct(value: float) -> str:
    return f"{value * 100:.0f}%"


def pass_rate_chart(
    rows: Sequence[tuple[str, dict[str, Any] | None, dict[str, Any] | None]],
) -> SafeString:
    """Horizontal bars of pass rate per run set, baseline vs candidate, with interval whiskers.

    `rows` is [(label, baseline_arm, candidate_arm)] where an arm is {"rate", "ci", "passed", "n"}.
    """
    rows = [r for r in rows if r[1] or r[2]]
    if not rows:
        return SafeString("")
    left, width, bar_h, gap = 128, 320, 11, 14
    row_h = bar_h * 2 + 4 + gap
    height = 24 + row_h * len(rows)
    parts: list[SafeString] = []
    for tick in (0, 0.25, 0.5, 0.75, 1):
        x = left + tick * width
        parts.append(
            format_html(
                '<line x1="{}" y1="14" x2="{}" y2="{}" class="grid"/><text x="{}" y="10" class="tick" text-anchor="middle">{}</text>',
                x,
                x,
                height - gap + 4,
                x,
                _pct(tick),
            )
        )
    for index, (label, base, cand) in enumerate(rows):
        y0 = 20 + index * row_h
        parts.append(
            format_html('<text x="0" y="{}" class="label">{}</text>', y0 + bar_h + 3, label)
        )
        for offset, arm, color, name in (
            (0, base, BASE_COLOR, "baseline"),
            (bar_h + 4, cand, CAND_COLOR, "candidate"),
        ):
            if not arm:
                continue
            y = y0 + offset
            if not arm.get("n"):
                parts.append(
                    format_html(
                        '<text x="{}" y="{}" class="tick no-data">{}: no graded runs</text>',
                        left + 4,
                        y + bar_h - 2,
                        name,
                    )
                )
                continue
            rate = float(arm.get("rate") or 0)
            parts.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}" rx="2"><title>{} {} ({}/{})</title></rect>',
                    left,
                    y,
                    max(rate * width, 1),
                    bar_h,
                    color,
                    name,
                    _pct(rate),
                    arm.get("passed", "?"),
                    arm.get("n", "?"),
                )
            )
            ci = arm.get("ci") or []
            if len(ci) == 2 and ci[0] is not None and ci[1] is not None:
                x1, x2 = left + float(ci[0]) * width, left + float(ci[1]) * width
                mid = y + bar_h / 2
                parts.append(
                    format_html(
                        '<line x1="{}" y1="{}" x2="{}" y2="{}" class="ci"/><line x1="{}" y1="{}" x2="{}" y2="{}" class="ci"/><line x1="{}" y1="{}" x2="{}" y2="{}" class="ci"/>',
                        x1,
                        mid,
                        x2,
                        mid,
                        x1,
                        y + 2,
                        x1,
                        y + bar_h - 2,
                        x2,
                        y + 2,
                        x2,
                        y + bar_h - 2,
                    )
                )
            parts.append(
                format_html(
                    '<text x="{}" y="{}" class="value">{}</text>',
                    left + width + 8,
                    y + bar_h - 1,
                    _pct(rate),
                )
            )
    body = format_html_join("", "{}", ((p,) for p in parts))
    return format_html(
        '<svg class="chart" viewBox="0 0 {} {}" width="{}" height="{}" role="img" aria-label="Pass rate, baseline (grey) and candidate (blue), with 95% intervals">{}</svg>',
        left + width + 48,
        height,
        left + width + 48,
        height,
        body,
    )


def version_pass_rate_chart(points: Sequence[dict[str, Any]]) -> SafeString:
    """Vertical bars: production pass rate per config version (oldest first), with run counts."""
    points = [p for p in points if p.get("n")]
    if not points:
        return SafeString("")
    bar_w, gap, top, chart_h = 34, 14, 16, 120
    axis = 40  # room for the "100%" tick label left of the axis
    width = axis + 6 + len(points) * (bar_w + gap)
    parts: list[SafeString] = []
    for tick in (0, 0.5, 1):
        y = top + chart_h - tick * chart_h
        parts.append(
            format_html(
                '<line x1="{}" y1="{}" x2="{}" y2="{}" class="grid"/><text x="{}" y="{}" class="tick" text-anchor="end">{}</text>',
                axis,
                y,
                width,
                y,
                axis - 4,
                y + 4,
                _pct(tick),
            )
        )
    for index, point in enumerate(points):
        rate = point["passed"] / point["n"]
        x = axis + 6 + index * (bar_w + gap)
        h = max(rate * chart_h, 1)
        color = CAND_COLOR if point.get("current") else BASE_COLOR
        parts.append(
            format_html(
                '<rect x="{}" y="{}" width="{}" height="{}" fill="{}" rx="2"><title>v{}: {} of {} runs passed</title></rect>'
                '<text x="{}" y="{}" class="value" text-anchor="middle">{}</text>'
                '<text x="{}" y="{}" class="label" text-anchor="middle">v{}</text>',
                x,
                top + chart_h - h,
                bar_w,
                h,
                color,
                point["number"],
                point["passed"],
                point["n"],
                x + bar_w / 2,
                top + chart_h - h - 3,
                _pct(rate),
                x + bar_w / 2,
                top + chart_h + 14,
                point["number"],
            )
        )
    body = format_html_join("", "{}", ((p,) for p in parts))
    return format_html(
        '<svg class="chart" viewBox="0 0 {} {}" width="{}" height="{}" role="img" aria-label="Production pass rate by config version">{}</svg>',
        width,
        top + chart_h + 22,
        width,
        top + chart_h + 22,
        body,
    )
