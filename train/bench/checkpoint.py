"""What checksums add to saving and restoring a training checkpoint.

    python -m train.bench.checkpoint [--preset 124M] [--repeats 3]

prints, for a train state of the preset (params + AdamW moments): the bytes saved, the median
time to save (and wait until it is on disk) and to restore a checkpoint with checksums, and the
median time of the checksum work alone (crc32c of every array, the same on save and restore),
so "without" = "with" minus that.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Literal

import jax

from gptjax.config import PRESETS, GPTConfig
from gptjax.model.params import init_params
from gptjax.options import parse, run_cli
from gptjax.store.checksum import checksums
from gptjax.store.run import RunCheckpoints
from gptjax.training.steps import OptimConfig, init_state, make_optimizer
from train.bench.suite import timed


@dataclass(frozen=True)
class Options:
    preset: Literal[*PRESETS] = "124M"
    """model size"""
    repeats: int = 3
    """timed saves and restores"""


def main(argv=None) -> None:
    opts = parse(Options, argv, __doc__)
    cfg = GPTConfig.preset(opts.preset)
    state = init_state(
        init_params(cfg, jax.random.key(0)), make_optimizer(OptimConfig()), jax.random.key(1)
    )
    train = {"opt_state": state.opt_state, "step": state.step, "rng": state.rng}
    size = sum(x.nbytes for x in jax.tree.leaves(state))
    abstract = jax.eval_shape(lambda: state)
    steps = iter(range(1, opts.repeats + 1))  # each save a step of its own
    with tempfile.TemporaryDirectory() as tmp:
        ckpts = RunCheckpoints(tmp, keep=opts.repeats)
        both = lambda: {**checksums(state.params, "p"), **checksums(train, "t")}
        sums = timed(both, opts.repeats)
        saves = timed(lambda: (ckpts.save(next(steps), state, {}), ckpts.wait()), opts.repeats, 0)
        restores = timed(lambda: ckpts.restore(ckpts.latest_step(), abstract), opts.repeats, 0)
        ckpts.close()
    print(f"{opts.preset} train state: {size / 2**30:.2f} GiB; median of {opts.repeats}")
    print(f"save + wait (with checksums): {saves.median_s:.2f} s")
    print(f"restore (with checksums):     {restores.median_s:.2f} s")
    print(f"checksums alone:              {sums.median_s:.2f} s  (added to each save and restore)")


if __name__ == "__main__":
    run_cli(main)
