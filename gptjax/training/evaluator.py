"""Sums of an eval step's metrics over a few batches (or all) of a dataset, with dropout off."""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from gptjax.data import IGNORE
from gptjax.training import parallel

COUNTED = ("targets", "labels", "valid")  # the keys whose IGNORE rows count for nothing


class Evaluator:
    """`sums(params, data, n_batches)`: the eval step's outputs summed over the first n_batches
    batches of B rows of `data` (anything with `len` and `batch(rows)`, e.g. `Windows`); all of
    it when n_batches is None.

    A short last batch is filled with rows whose `targets`, `labels` or `valid` are IGNORE
    (everything else 0), which every eval step counts as nothing, so any split size and device
    count work with one compiled step.
    """

    def __init__(self, eval_step: Callable[..., dict], mesh, B: int, n_batches: int):
        self.mesh, self.B, self.n_batches = mesh, B, n_batches
        self.step = jax.jit(eval_step)

    def sums(self, params, data, n_batches: int | None = -1) -> dict[str, float]:
        n_batches = self.n_batches if n_batches == -1 else n_batches
        n = len(data) if n_batches is None else min(len(data), self.B * n_batches)
        outs = []
        for chunk in np.array_split(np.arange(n), -(-n // self.B)):
            pad = self.B - len(chunk)
            batch = {
                k: np.pad(
                    v,
                    [(0, pad)] + [(0, 0)] * (v.ndim - 1),
                    constant_values=IGNORE if k in COUNTED else 0,
                )
                for k, v in data.batch(chunk).items()
            }
            local = {k: v[parallel.local_rows(self.B)] for k, v in batch.items()}
            outs.append(self.step(params, parallel.global_batch(self.mesh, local, self.B)))
        totals: dict = {}
        for m in jax.device_get(outs):  # one fetch at the end: the steps run back to back
            for k, v in m.items():  # a scalar, or an array summed element by element
                v = np.asarray(v, np.float64)
                totals[k] = totals.get(k, 0.0) + (float(v) if v.ndim == 0 else v)
        return totals
