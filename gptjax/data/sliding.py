"""Sliding-window language-modelling data: token ids -> (inputs, targets) windows, split, batches.

Shapes: N windows, B batch, T = max_length tokens per window.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from gptjax.data.corpus import Windows, epoch_order


def sliding_windows(ids, max_length: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids [n] -> inputs, targets: int32 [N, T] with targets[i] = inputs[i] shifted by one.

    Windows start at 0, stride, 2*stride, ... while a full window and its next token fit.
    """
    windows = Windows(np.asarray(ids), max_length, stride, name="text")
    b = windows.batch(np.arange(len(windows)))
    return b["inputs"], b["targets"]


def train_val_split(seq: Sequence, train_ratio: float) -> tuple[Sequence, Sequence]:
    """The first `train_ratio` of a text or token sequence for training, the rest for validation."""
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f"train_ratio must be in (0, 1), got {train_ratio}")
    cut = int(train_ratio * len(seq))
    return seq[:cut], seq[cut:]


def num_batches(n: int, batch_size: int, drop_last: bool = True) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def batches(
    inputs: np.ndarray,
    targets: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    drop_last: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield {"inputs", "targets"} batches of [B, T]; the order is a function of (seed, epoch)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(inputs)
    order = epoch_order(n, seed, epoch) if shuffle else np.arange(n)
    for b in range(num_batches(n, batch_size, drop_last)):
        idx = order[b * batch_size : (b + 1) * batch_size]
        yield {"inputs": inputs[idx], "targets": targets[idx]}
