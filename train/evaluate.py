"""Loss estimates over a few batches of train and validation windows, with dropout off."""

from __future__ import annotations

import jax
import numpy as np

from gptjax import parallel
from gptjax.config import GPTConfig
from gptjax.corpus import Windows
from gptjax.training import IGNORE, make_eval_step, perplexity


class Evaluator:
    """Mean token loss over the first `n_batches` batches of B windows of each split.

    A short last batch is padded with ignored targets, so any split size and device count work.
    """

    def __init__(self, cfg: GPTConfig, mesh, B: int, n_batches: int, dtype):
        self.mesh, self.B, self.n_batches = mesh, B, n_batches
        self.step = jax.jit(make_eval_step(cfg, dtype=dtype))

    def loss(self, params, windows: Windows) -> float:
        rows = np.arange(min(len(windows), self.B * self.n_batches))
        total, count = 0.0, 0.0
        for chunk in np.array_split(rows, -(-len(rows) // self.B)):
            batch = windows.batch(chunk)
            pad = self.B - len(chunk)
            batch = {k: np.pad(v, ((0, pad), (0, 0)), constant_values=0) for k, v in batch.items()}
            batch["targets"][len(chunk) :] = IGNORE
            local = {k: v[parallel.local_rows(self.B)] for k, v in batch.items()}
            m = self.step(params, parallel.global_batch(self.mesh, local, self.B))
            total, count = total + float(m["loss_sum"]), count + float(m["tokens"])
        return total / count

    def __call__(self, params, train: Windows, val: Windows) -> dict:
        val_loss = self.loss(params, val)
        return {
            "eval_train_loss": self.loss(params, train),
            "val_loss": val_loss,
            "val_perplexity": perplexity(val_loss),
        }
