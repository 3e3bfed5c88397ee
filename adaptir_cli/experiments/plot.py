"""The SVG plot of experiments: PSNR on the first test set against trainable parameters (log x axis).

One panel per experiment, one labelled point per run, one colour per method, and the "none" run
(the frozen base, no tuning) as a horizontal dashed line. Written by hand: a plot is a few dozen
elements, not worth a plotting library as a dependency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape

# Methods in the order the legend shows them; others follow alphabetically.
_METHOD_ORDER = ("adaptir", "lora", "adapter", "adaptformer", "ssf", "full")
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
_NONE_COLOUR = "#555555"
_WIDTH, _HEIGHT = 720, 420  # one panel
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 170, 44, 56  # margins around the plotting area


def method_colours(methods: Sequence[str]) -> dict[str, str]:
    ordered = [m for m in _METHOD_ORDER if m in methods] + sorted(set(methods) - set(_METHOD_ORDER) - {"none"})
    return {method: _PALETTE[index % len(_PALETTE)] for index, method in enumerate(ordered)}


def plot_svg(experiments: Sequence[Sequence[dict[str, Any]]]) -> str:
    """One SVG document with a panel per experiment (a list of run results each)."""
    panels = [_panel(results, index * _HEIGHT) for index, results in enumerate(experiments)]
    height = _HEIGHT * len(experiments)
    return "\n".join([
        (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
         f'viewBox="0 0 {_WIDTH} {height}" font-family="sans-serif" font-size="12">'),
        f'<rect width="{_WIDTH}" height="{height}" fill="white"/>',
        *panels,
        "</svg>",
    ]) + "\n"


def _first_psnr(run: dict[str, Any]) -> float | None:
    if not run["datasets"]:
        return None
    dataset = run["datasets"][0]
    value = dataset["psnr"][dataset.get("channel", "y")]
    return float(value) if isinstance(value, (int, float)) else None


def _panel(results: Sequence[dict[str, Any]], top: float) -> str:
    first = results[0]
    dataset = first["datasets"][0]["name"] if first["datasets"] else "-"
    channel = (first["datasets"][0].get("channel", "y") if first["datasets"] else "y").upper()
    points = [(run, run["trainable_parameters"], _first_psnr(run)) for run in results if run["method"] != "none"]
    points = [(run, count, psnr) for run, count, psnr in points if count > 0 and psnr is not None]
    lines = [(run, _first_psnr(run)) for run in results if run["method"] == "none" and _first_psnr(run) is not None]
    title = f"{first['experiment']}: {dataset} PSNR ({channel}) against trainable parameters"
    out = [f'<g transform="translate(0,{top:g})">',
           f'<text x="{_WIDTH / 2:g}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>']
    if not points and not lines:
        out += [f'<text x="{_WIDTH / 2:g}" y="{_HEIGHT / 2:g}" text-anchor="middle">no scores to plot</text>', "</g>"]
        return "\n".join(out)

    counts = [count for _, count, _ in points] or [1]
    low, high = math.floor(math.log10(min(counts))), math.ceil(math.log10(max(counts)))
    if high <= low:
        high = low + 1
    values = [psnr for _, _, psnr in points] + [psnr for _, psnr in lines]
    margin = 0.05 * (max(values) - min(values))  # keep points off the frame
    y_ticks = _nice_ticks(min(values) - margin, max(values) + margin)
    y_low, y_high = y_ticks[0], y_ticks[-1]
    x0, x1, y0, y1 = _LEFT, _WIDTH - _RIGHT, _HEIGHT - _BOTTOM, _TOP

    def x(count: float) -> float:
        return x0 + (math.log10(count) - low) / (high - low) * (x1 - x0)

    def y(psnr: float) -> float:
        return y0 - (psnr - y_low) / (y_high - y_low) * (y0 - y1)

    out.append(f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="none" stroke="#333"/>')
    for power in range(low, high + 1):
        px = x(10**power)
        out.append(f'<line x1="{px:.1f}" y1="{y1}" x2="{px:.1f}" y2="{y0}" stroke="#ddd"/>')
        out.append(f'<text x="{px:.1f}" y="{y0 + 18}" text-anchor="middle">{_count_label(10**power)}</text>')
    for tick in y_ticks:
        py = y(tick)
        out.append(f'<line x1="{x0}" y1="{py:.1f}" x2="{x1}" y2="{py:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{x0 - 6}" y="{py + 4:.1f}" text-anchor="end">{tick:g}</text>')
    out.append(f'<text x="{(x0 + x1) / 2:g}" y="{y0 + 40}" text-anchor="middle">trainable parameters (log scale)</text>')
    out.append(f'<text x="18" y="{(y0 + y1) / 2:g}" text-anchor="middle" '
               f'transform="rotate(-90 18 {(y0 + y1) / 2:g})">PSNR (dB)</text>')

    for run, psnr in lines:
        py = y(psnr)
        out.append(f'<line x1="{x0}" y1="{py:.1f}" x2="{x1}" y2="{py:.1f}" stroke="{_NONE_COLOUR}" '
                   f'stroke-dasharray="6 4" stroke-width="1.5"/>')
        out.append(f'<text x="{x0 + 6}" y="{py - 5:.1f}" fill="{_NONE_COLOUR}">{escape(run["label"])} '
                   f'({psnr:.2f} dB)</text>')
    colours = method_colours([run["method"] for run, _, _ in points])
    for run, count, psnr in points:
        px, py = x(count), y(psnr)
        out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="5" fill="{colours[run["method"]]}">'
                   f'<title>{escape(run["label"])}: {count:,} parameters, {psnr:.2f} dB</title></circle>')
        # Labels of points on the right go to their left, clear of the legend.
        right = px > x0 + 0.7 * (x1 - x0)
        anchor = ' text-anchor="end"' if right else ""
        out.append(f'<text x="{px - 8 if right else px + 8:.1f}" y="{py - 6:.1f}"{anchor}>{escape(run["label"])}</text>')

    legend_y = y1 + 6
    for method, colour in colours.items():
        out.append(f'<circle cx="{x1 + 20}" cy="{legend_y:g}" r="5" fill="{colour}"/>')
        out.append(f'<text x="{x1 + 32}" y="{legend_y + 4:g}">{escape(method)}</text>')
        legend_y += 20
    if lines:
        out.append(f'<line x1="{x1 + 12}" y1="{legend_y:g}" x2="{x1 + 28}" y2="{legend_y:g}" stroke="{_NONE_COLOUR}" '
                   'stroke-dasharray="4 3" stroke-width="1.5"/>')
        out.append(f'<text x="{x1 + 32}" y="{legend_y + 4:g}">none (no tuning)</text>')
    out.append("</g>")
    return "\n".join(out)


def _nice_ticks(low: float, high: float) -> list[float]:
    """About five round ticks covering [low, high] (a flat range gets +-0.5 dB around it)."""
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    raw = (high - low) / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(low / step) * step
    ticks = [start]
    while ticks[-1] < high - 1e-9:
        ticks.append(ticks[-1] + step)
    return [round(t, 6) for t in ticks]


def _count_label(count: float) -> str:
    for suffix, factor in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= factor:
            return f"{count / factor:g}{suffix}"
    return f"{count:g}"
