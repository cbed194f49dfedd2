"""A rollout that serves several updates, and survives a stop between two of them.

GRPO takes mu optimizer updates on each rollout (`--num-iterations`), each over the rollout's
rows in M minibatches (`--minibatches`): U = mu * M steps of the training loop share one
rollout, sampled at the first of them (its `start`). Update k of a rollout is iteration
k // M over minibatch k % M of a shuffle of the rows drawn from (seed, start, iteration).

Each rollout is written to OUT/rollouts/<start>.npz (one file per process on several) when it
is made, atomically. A run resumed from a checkpoint between two of its updates reads it back,
so its steps equal an uninterrupted run's bit for bit (the sampling policy's params are gone by
then). Files older than what a kept checkpoint could need are removed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

Made = tuple[dict[str, np.ndarray], dict[str, float]]  # (rows, figures)


class Rollouts:
    def __init__(self, folder: Path, iterations: int, minibatches: int, seed: int, window: int):
        """`window`: steps back from the newest rollout whose files are kept (what the oldest
        kept checkpoint may need)."""
        if iterations < 1 or minibatches < 1:
            raise ValueError(
                f"--num-iterations {iterations} and --minibatches {minibatches}: each must be >= 1"
            )
        self.folder, self.iterations, self.minibatches = Path(folder), iterations, minibatches
        self.seed, self.window = seed, window
        self.start: int | None = None
        self.made: Made | None = None

    @property
    def updates(self) -> int:
        """Optimizer steps one rollout serves."""
        return self.iterations * self.minibatches

    def batch(self, step: int, make: Callable[[], Made]) -> Made:
        """The rows step `step` trains on and its rollout's figures; `make()` samples a rollout
        with the current params, called at the first step of each (or, resuming between two
        of its updates, only when its file is gone: said on stderr)."""
        start = step - step % self.updates
        if self.start != start:
            self.made = self.read(start) if step != start else None
            if self.made is None:
                if step != start:
                    print(
                        f"rollouts: {self.path(start)} is gone; sampling the rest of rollout "
                        f"{start} with the params of step {step} (no longer bitwise equal to "
                        "an uninterrupted run)",
                        file=sys.stderr,
                    )
                self.made = make()
                if self.updates > 1:  # a rollout of one update is never read back
                    self.write(start, *self.made)
            self.start = start
        rows, figures = self.made
        return {k: v[self.rows(start, step)] for k, v in rows.items()}, figures

    def rows(self, start: int, step: int) -> np.ndarray:
        """The rollout rows of update `step - start`."""
        iteration, m = divmod(step - start, self.minibatches)
        n = len(next(iter(self.made[0].values())))
        if self.minibatches == 1:
            return np.arange(n)
        order = np.random.default_rng([self.seed, start, iteration]).permutation(n)
        size = n // self.minibatches
        return np.sort(order[m * size : (m + 1) * size])

    def path(self, start: int) -> Path:
        own = f"-{jax.process_index()}" if jax.process_count() > 1 else ""
        return self.folder / f"{start}{own}.npz"

    def write(self, start: int, rows: dict, figures: dict) -> None:
        """Write the rollout (tmp then rename: never half a file) and drop stale ones."""
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.path(start)
        tmp = final.with_name(final.name + ".tmp.npz")
        np.savez(tmp, **rows, _figures=np.asarray(json.dumps(figures)))
        os.replace(tmp, final)
        for old in self.folder.glob("*.npz"):
            step = old.name.split(".")[0].split("-")[0]
            if step.isdigit() and int(step) < start - self.window:
                old.unlink(missing_ok=True)

    def read(self, start: int) -> Made | None:
        path = self.path(start)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as f:
            rows = {k: f[k] for k in f.files if k != "_figures"}
            return rows, json.loads(str(f["_figures"]))
