"""Plots of a run from its metrics.jsonl: losses (or accuracies) against tokens or examples seen."""

from __future__ import annotations

import json
from pathlib import Path

from gptjax.files import atomic_file


def plot_metrics(metrics_file: Path, out: Path, x: str, panels: list[tuple[str, dict[str, str]]]):
    """Write `out` (PNG): one panel per (y label, {metric key: label}) that has data, side by
    side, each key against `x`; keys logged every step are drawn as lines, those logged at
    evaluations as points. Replaced atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics_file.read_text().splitlines() if line]
    panels = [(y, s) for y, s in panels if any(k in r for r in records for k in s)] or panels[:1]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
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
    fig.tight_layout()
    with atomic_file(out) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return out


def plot_losses(metrics_file: Path, out: Path) -> Path:
    """The pretraining plot: train and validation loss against tokens seen."""
    series = {"train_loss": "train loss", "val_loss": "val loss"}
    return plot_metrics(metrics_file, out, "tokens_seen", [("cross entropy", series)])
