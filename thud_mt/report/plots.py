"""The report's figures: the failure heatmap (models x categories) and the stacked prediction bars.

Drawn with matplotlib's Agg backend (no display needed), constrained layout,
120 dpi, and written atomically so a killed run never leaves half a PNG.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: reports are written on machines with no display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from thud_mt.report.categories import CATEGORY_NAMES
from thud_mt.report.predictions import NO_ANSWER, PANELS, UNREADABLE, Tally, by_panel

DPI = 120
# Answer colours mean the same in every panel: the audio-driven answers cool, the picture-driven warm.
ANSWER_COLORS = {
    "yes": "#4c72b0",
    "no": "#dd8452",
    "synchronized": "#55a868",
    "audio delayed": "#4c72b0",
    "audio early": "#8172b3",
    "original's sound": "#dd8452",
    "donor's sound": "#4c72b0",
    "another sound": "#937860",
    "no sound": "#8c8c8c",
    UNREADABLE: "#d0d0d0",
    NO_ANSWER: "#222222",
}


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, dpi=DPI, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def plot_failure_heatmap(categories: Mapping[str, Mapping[str, int]], cases: Mapping[str, int], path: Path) -> Path:
    """Share of each model's cases per failure category; cells show the share and the count.

    ``categories``: model -> category -> count; ``cases``: model -> all its cases (passes included).
    Only categories some model has are columns, in the taxonomy's order.
    """
    models = list(categories)
    used = [c for c in CATEGORY_NAMES if any(categories[m].get(c, 0) for m in models)]
    fig = plt.figure(
        figsize=(max(6.5, 1.15 * len(used) + 3.5), max(4.0, 0.75 * len(models) + 3.0)), layout="constrained"
    )
    ax = fig.add_subplot()
    ax.set_title("Failure categories by model (share of the model's cases)")
    if not used:
        ax.text(0.5, 0.5, "no failures: every case passed", ha="center", va="center", fontsize=13)
        ax.set_axis_off()
        return _save(fig, path)
    counts = np.array([[categories[m].get(c, 0) for c in used] for m in models], dtype=float)
    totals = np.array([max(cases[m], 1) for m in models], dtype=float)[:, None]
    shares = counts / totals
    image = ax.imshow(shares, cmap="Reds", vmin=0.0, vmax=max(float(shares.max()), 0.05), aspect="auto")
    ax.set_xticks(range(len(used)), labels=used, rotation=35, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(len(models)), labels=[f"{m} (n={cases[m]})" for m in models])
    ax.set_xlabel("failure category")
    ax.set_ylabel("model")
    threshold = 0.6 * image.norm.vmax
    for i in range(len(models)):
        for j in range(len(used)):
            if counts[i, j]:
                color = "white" if shares[i, j] > threshold else "black"
                text = f"{shares[i, j]:.0%}\n({int(counts[i, j])})"
                ax.text(j, i, text, ha="center", va="center", fontsize=9, color=color)
    bar = fig.colorbar(image, ax=ax, shrink=0.9)
    bar.set_label("share of the model's cases")
    bar.ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    return _save(fig, path)


def plot_predictions(tallies: Sequence[Tally], path: Path) -> Path:
    """One panel per question kind: a horizontal stacked bar of answer shares per condition and model."""
    panels = by_panel(tallies)
    if not panels:
        fig = plt.figure(figsize=(7, 4), layout="constrained")
        fig.suptitle("What the models answered")
        fig.text(0.5, 0.5, "no presence, sync, match or source questions in these results", ha="center")
        return _save(fig, path)
    rows = max(len(t) for t in panels.values())
    ncols = 2 if len(panels) > 1 else 1
    nrows = -(-len(panels) // ncols)
    fig = plt.figure(figsize=(7.5 * ncols, nrows * max(3.5, 0.42 * rows + 2.2)), layout="constrained")
    fig.suptitle("What the models answered, on the original and after each audio edit")
    panel_by_probe = {p.probe: p for p in PANELS}
    for k, (probe, group) in enumerate(panels.items()):
        _draw_panel(
            fig.add_subplot(nrows, ncols, k + 1), panel_by_probe[probe].title, group, panel_by_probe[probe].answers
        )
    return _save(fig, path)


def _draw_panel(ax: plt.Axes, title: str, group: Sequence[Tally], answers: Sequence[str]) -> None:
    shown = [a for a in answers if any(t.counts.get(a, 0) for t in group)]
    labels = [f"{t.condition} · {t.model}" for t in group]
    y = np.arange(len(group))[::-1]  # first row on top
    left = np.zeros(len(group))
    for answer in shown:
        share = np.array([t.counts.get(answer, 0) / max(t.n, 1) for t in group])
        ax.barh(y, share, left=left, color=ANSWER_COLORS.get(answer), label=answer, edgecolor="white", height=0.75)
        for yi, lo, s in zip(y, left, share, strict=True):
            if s >= 0.08:
                dark = ANSWER_COLORS.get(answer, "#888888") in ("#222222", "#4c72b0", "#8172b3", "#937860")
                ax.text(
                    lo + s / 2, yi, f"{s:.0%}", ha="center", va="center", fontsize=8, color="white" if dark else "black"
                )
        left += share
    for yi, t in zip(y, group, strict=True):
        ax.text(1.01, yi, f"n={t.n}", va="center", fontsize=8)
    ax.set_yticks(y, labels=labels, fontsize=9)
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_xlabel("share of answers")
    ax.set_ylabel("condition · model")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=min(len(shown), 4), fontsize=8, frameon=False)
