"""What checksums add to saving and restoring a training checkpoint.

    python -m train.bench.checkpoint [--preset 124M] [--repeats 3]

prints, for a train state of the preset (params + AdamW moments): the bytes saved, the median
time to save (and wait until it is on disk) and to restore a checkpoint with checksums, and the
median time of the checksum work alone (crc32c of every array, the same on save and restore),
so "without" = "with" minus that.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from typing import Literal

import jax
import numpy as np

from gptjax.config import PRESETS, GPTConfig
from gptjax.model.params import init_params
from gptjax.options import parse, run_cli
from gptjax.store.checksum import checksums
from gptjax.store.run import RunCheckpoints
from gptjax.training.steps import OptimConfig, init_state, make_optimizer


@dataclass(frozen=True)
class Options:
    preset: Literal[*PRESETS] = "124M"
    """model size"""
    repeats: int = 3
    """timed saves and restores"""


def timed(fn) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0


def main(argv=None) -> None:
    opts = parse(Options, argv, __doc__)
    cfg = GPTConfig.preset(opts.preset)
    state = init_state(
        init_params(cfg, jax.random.key(0)), make_optimizer(OptimConfig()), jax.random.key(1)
    )
    train = {"opt_state": state.opt_state, "step": state.step, "rng": state.rng}
    size = sum(x.nbytes for x in jax.tree.leaves(state))
    abstract = jax.eval_shape(lambda: state)
    sums, saves, restores = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        ckpts = RunCheckpoints(tmp, keep=2)
        for n in range(1, opts.repeats + 1):
            sums.append(timed(lambda: {**checksums(state.params, "p"), **checksums(train, "t")}))
            saves.append(timed(lambda s=n: (ckpts.save(s, state, {}), ckpts.wait())))
            restores.append(timed(lambda s=n: ckpts.restore(s, abstract)))
        ckpts.close()
    med = lambda xs: float(np.median(xs))
    print(f"{opts.preset} train state: {size / 2**30:.2f} GiB; median of {opts.repeats}")
    print(f"save + wait (with checksums): {med(saves):.2f} s")
    print(f"restore (with checksums):     {med(restores):.2f} s")
    print(f"checksums alone:              {med(sums):.2f} s  (added to each save and restore)")


if __name__ == "__main__":
    run_cli(main)
