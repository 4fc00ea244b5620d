"""The report's charts as PNG data URIs: matplotlib's object API on the Agg canvas, so no global pyplot state,
no display and no backend switch leak into the caller's process."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

WIDTH = 6.4  # inches; at DPI this is about the width of the report's text column
DPI = 100
COLORS = ("#3b6ea5", "#d1803a", "#5a9e6f", "#b5545c", "#7f6aa8", "#8c8c8c", "#c2a83e", "#4fa3b5")


def plain(text: object) -> str:
    """``text`` shown literally: a ``$`` in a user's title must not switch matplotlib into math mode."""
    return str(text).replace("$", r"\$")


def png_data_uri(fig: Figure) -> str:
    """Render ``fig`` as a base64 PNG data URI (no Software metadata: the same figure gives the same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(height: float, ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(WIDTH, height))
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=8)
        ax.grid(axis="y", color="#e5e5e5", linewidth=0.6)
        ax.set_axisbelow(True)
    return fig, axes


def grouped_bars(
    groups: Sequence[str],
    series: dict[str, Sequence[float | None]],
    ylabel: str,
    hlines: dict[str, float] | None = None,
    ylim: tuple[float, float] | None = None,
    marks: dict[str, Sequence[float | None]] | None = None,
    colors: Sequence[str] | None = None,
) -> str:
    """Vertical bars: one group per metric (x), one bar per series within it. ``hlines`` are labelled references
    across the plot; ``marks`` labelled references per group (chance level of each label, say). ``None`` values
    leave a gap."""
    fig, (ax,) = _figure(2.8)
    n = max(len(series), 1)
    width = 0.8 / n
    for j, (name, values) in enumerate(series.items()):
        xs = [i + (j - (n - 1) / 2) * width for i in range(len(groups))]
        pairs = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None]
        if pairs:
            ax.bar(
                [x for x, _ in pairs],
                [v for _, v in pairs],
                width * 0.92,
                label=plain(name),
                color=colors[j] if colors else COLORS[j % 8],
            )
    for k, (label, y) in enumerate((hlines or {}).items()):
        ax.axhline(y, color="#555555", linestyle=(0, (4, 2 + k)), linewidth=0.9, label=plain(label))
    for label, ys in (marks or {}).items():
        segments = [(i, y) for i, y in enumerate(ys) if y is not None]
        for n_drawn, (i, y) in enumerate(segments):
            ax.hlines(y, i - 0.45, i + 0.45, color="#222222", linewidth=1.4, label=label if n_drawn == 0 else None)
    ax.set_xticks(range(len(groups)), [plain(g) for g in groups], fontsize=8)
    ax.set_ylabel(ylabel, fontsize=9)
    if ylim is not None:
        ax.set_ylim(*ylim)
    n_legend = n + len(hlines or {}) + len(marks or {})
    ax.legend(fontsize=8, frameon=False, ncols=min(n_legend, 4), loc="upper center", bbox_to_anchor=(0.5, -0.12))
    return png_data_uri(fig)


def horizontal_bars(
    labels: Sequence[str],
    values: Sequence[float],
    xlabel: str,
    colors: Sequence[str] | None = None,
    vlines: dict[str, float] | None = None,
    xlim: tuple[float, float] | None = None,
) -> str:
    """One horizontal bar per row (top to bottom in the given order), value printed beside it; ``vlines`` are
    labelled references."""
    fig, (ax,) = _figure(0.6 + 0.28 * max(len(labels), 1))
    ax.grid(False)
    ax.grid(axis="x", color="#e5e5e5", linewidth=0.6)
    ys = list(range(len(labels)))[::-1]
    ax.barh(ys, list(values), 0.7, color=list(colors) if colors else COLORS[0])
    for y, v in zip(ys, values, strict=True):
        ax.text(v, y, f" {v:.3f}", va="center", fontsize=7)
    for label, x in (vlines or {}).items():
        ax.axvline(x, color="#555555", linestyle=(0, (4, 3)), linewidth=0.9)
        ax.annotate(
            plain(label),
            (x, 1),
            xycoords=("data", "axes fraction"),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
            color="#555555",
        )
    ax.set_yticks(ys, [plain(label) for label in labels], fontsize=8)
    ax.set_xlabel(xlabel, fontsize=9)
    if xlim is not None:
        ax.set_xlim(*xlim)
    return png_data_uri(fig)


_LABEL_BOX = {"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.4}  # legible over a reference line


@dataclass(frozen=True)
class Stack:
    """One bar of :func:`stacked_bars`: its label, its segments (colour key, length) left to right, the text printed
    at its end, and whether the label is set in bold."""

    label: str
    segments: Sequence[tuple[str, float]]
    value: str
    bold: bool = False


def stacked_bars(
    groups: Sequence[tuple[str, Sequence[Stack]]],
    colors: dict[str, tuple[str, str]],
    xlabel: str,
    vlines: dict[str, float] | None = None,
) -> str:
    """Horizontal stacked bars, top to bottom, under an italic title per group. ``colors`` maps a segment's key to
    (colour, legend name), in legend order; only keys some bar uses get an entry. ``vlines`` are labelled
    references, in the legend too. A bar of negative length runs left of zero."""
    shown = [(title, rows) for title, rows in groups if rows]
    slots = sum(len(rows) + 1 for _, rows in shown)
    fig, (ax,) = _figure(0.9 + 0.22 * max(slots, 1))
    ax.grid(False)
    ax.grid(axis="x", color="#e5e5e5", linewidth=0.6)
    ticks: list[float] = []
    labels: list[tuple[str, str]] = []  # (text, style): group title, bold row or plain row
    totals: list[float] = []
    used: set[str] = set()
    y = float(slots - 1)
    for title, rows in shown:
        ticks.append(y)
        labels.append((title, "group"))
        y -= 1
        for row in rows:
            left = 0.0
            for key, length in row.segments:
                color = colors.get(key, ("#b5b5b5", key))[0]
                ax.barh(y, length, 0.72, left=left, color=color, edgecolor="white", linewidth=0.6)
                left += length
                used.add(key)
            totals.append(left)
            ha, text = ("left", f" {row.value}") if left >= 0 else ("right", f"{row.value} ")
            ax.text(left, y, text, va="center", ha=ha, fontsize=7, zorder=3, bbox=_LABEL_BOX)
            ticks.append(y)
            labels.append((plain(row.label), "bold" if row.bold else ""))
            y -= 1
    ax.axvline(0, color="#999999", linewidth=0.8)
    styles = ((0, (4, 2)), (0, (1, 1.5)), (0, (6, 2, 1, 2)))
    handles = [Patch(color=c, label=plain(name)) for key, (c, name) in colors.items() if key in used]
    for k, (label, x) in enumerate((vlines or {}).items()):
        ax.axvline(x, color="#333333", linestyle=styles[k % 3], linewidth=1.0)
        handles.append(Line2D([], [], color="#333333", linestyle=styles[k % 3], linewidth=1.0, label=plain(label)))
    ax.set_yticks(ticks, [text for text, _ in labels], fontsize=8)
    for tick, (_, style) in zip(ax.get_yticklabels(), labels, strict=True):
        if style == "group":
            tick.set_fontstyle("italic")
            tick.set_color("#646b73")
        elif style == "bold":
            tick.set_fontweight("bold")
    ax.tick_params(axis="y", length=0)
    ax.set_ylim(-0.7, slots - 0.3)
    ends = [0.0, *totals, *(vlines or {}).values()]
    lo, hi = min(ends), max(ends)
    span = (hi - lo) or 0.1
    ax.set_xlim(lo - 0.12 * span if lo < 0 else 0.0, hi + 0.14 * span)
    ax.set_xlabel(xlabel, fontsize=9)
    if handles:
        ncols = min(len(handles), 4)
        ax.legend(handles=handles, fontsize=7, frameon=False, ncols=ncols, loc="lower center", bbox_to_anchor=(0.5, 1))
    return png_data_uri(fig)


def line_panels(panels: Sequence[tuple[str, dict[str, Sequence[tuple[float, float]]]]], xlabel: str) -> str:
    """Side-by-side line plots: each panel is (title, {series name: [(x, y), …]})."""
    fig, axes = _figure(2.6, max(len(panels), 1))
    for ax, (title, series) in zip(axes, panels, strict=False):
        ax.grid(True, color="#e5e5e5", linewidth=0.6)
        for j, (name, points) in enumerate(series.items()):
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(
                    xs,
                    ys,
                    marker="o",
                    markersize=3,
                    linewidth=1.4,
                    label=plain(name),
                    color=COLORS[j % 8],
                )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return png_data_uri(fig)


def few_shot_curves(series: dict[str, Sequence[tuple[int, float]]], colors: Sequence[str], chance: float | None) -> str:
    """Accuracy against labels per class (log axis), one line per feature source, chance as a dashed line."""
    fig, (ax,) = _figure(2.8)
    ax.grid(True, color="#e5e5e5", linewidth=0.6)
    for j, (name, points) in enumerate(series.items()):
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.4, label=plain(name), color=colors[j % len(colors)])
    if chance is not None:
        ax.axhline(chance, color="#555555", linestyle=(0, (4, 3)), linewidth=0.9, label="chance")
    ax.set_xscale("log")
    ticks = sorted({x for points in series.values() for x, _ in points})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("labelled images per class", fontsize=9)
    ax.set_ylabel("accuracy", fontsize=9)
    ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return png_data_uri(fig)
