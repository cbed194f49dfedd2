"""Plots of a run from its metrics.jsonl: losses (or accuracies) against tokens or examples seen;
and curves of several runs on one chart (`plot_curves`)."""

from __future__ import annotations

import json
from pathlib import Path

from gptjax.files import atomic_file


def plot_metrics(metrics_file: Path, out: Path, x: str, panels: list[tuple[str, dict[str, str]]]):
    """Write `out` (PNG): one panel per (y label, {metric key: label}) that has data, side by
    side, each key against `x`; keys logged every step are drawn as lines, those logged at
    evaluations as points. Replaced atomically."""
    records = [json.loads(line) for line in metrics_file.read_text().splitlines() if line]
    panels = [(y, s) for y, s in panels if any(k in r for r in records for k in s)] or panels[:1]
    fig = _figure((6 * len(panels), 4))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (ylabel, series) in zip(axes[0], panels, strict=True):
        for key, label in series.items():
            points = [(r[x], r[key]) for r in records if key in r]
            if points:
                every_step = len(points) == len(records)
                ax.plot(
                    *zip(*points, strict=True),
                    "-" if every_step else "o-",
                    label=label,
                    lw=1 if every_step else 1.5,
                )
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel(ylabel)
        ax.legend()
    return _save(fig, out)


def plot_curves(
    curves: dict[str, list[tuple[float, float]]],
    out: Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    hline: float | None = None,
) -> Path:
    """Write `out` (PNG): one line per {label: [(x, y), ...]} on one chart, with a dashed
    horizontal line at `hline` (a target). Replaced atomically."""
    fig = _figure((7, 4.5))
    ax = fig.subplots()
    for label, points in curves.items():
        if points:
            ax.plot(*zip(*points, strict=True), "o-", ms=3, lw=1.5, label=label)
    if hline is not None:
        ax.axhline(hline, color="gray", ls="--", lw=1, label=f"target {hline:.3f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return _save(fig, out)


def plot_heatmap(
    values,
    out: Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    xticks=None,
    yticks=None,
) -> Path:
    """Write `out` (PNG): values [R, C] as a heatmap centred on 0 (red above, blue below),
    with a colour bar; `xticks` / `yticks` label the columns / rows. Replaced atomically."""
    import numpy as np

    values = np.asarray(values, np.float64)
    R, C = values.shape
    fig = _figure((max(4.0, 0.45 * C + 2), max(3.0, 0.4 * R + 1.5)))
    ax = fig.subplots()
    top = float(np.nanmax(np.abs(values))) or 1.0
    image = ax.imshow(values, cmap="RdBu_r", vmin=-top, vmax=top, aspect="auto")
    fig.colorbar(image, ax=ax)
    if xticks is not None:
        ax.set_xticks(range(C), list(xticks), rotation=60, fontsize=7)
    if yticks is not None:
        ax.set_yticks(range(R), list(yticks), fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(fig, out)


def _figure(size):
    """A figure of its own, outside pyplot: no global backend is chosen or changed, so plotting a
    run inside a notebook leaves the notebook's inline figures alone."""
    from matplotlib.figure import Figure

    return Figure(figsize=size)


def _save(fig, out: Path) -> Path:
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp:
        fig.savefig(tmp, dpi=100)
    return out
