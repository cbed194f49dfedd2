"""The loss plot of a run: train and validation loss against tokens seen, from metrics.jsonl."""

from __future__ import annotations

import json
import os
from pathlib import Path


def plot_losses(metrics_file: Path, out: Path) -> Path:
    """Write `out` (PNG) from the records in `metrics_file`; replaced atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics_file.read_text().splitlines() if line]
    train = [(r["tokens_seen"], r["train_loss"]) for r in records]
    val = [(r["tokens_seen"], r["val_loss"]) for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", lw=1)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="val loss")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("cross entropy")
    ax.legend()
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out)
    return out
