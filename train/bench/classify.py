"""Step time and optimizer-state size of each --trainable mode of train.classify.

    python -m train.bench.classify [--preset 124M] [--batch-size 8] [--max-length 120]

prints one row per mode (head, last-block, lora, all): trainable parameters, optimizer-state
numbers and MB, the median step time over --repeats timed steps after a warm-up, and the
first call (compile) apart. The data is sms-spam from the cache; weights are random (the
shapes, not the values, set the cost).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax
import numpy as np

from gptjax.config import PRESETS
from gptjax.model.params import count_params
from gptjax.options import parse, run_cli
from gptjax.tasks.classify import Classify
from gptjax.tasks.classify import Options as ClassifyOptions
from gptjax.training.finetune import MODES
from gptjax.training.steps import OptimConfig, init_state, make_optimizer, make_train_step, split
from train.bench.suite import timed


@dataclass(frozen=True)
class Options:
    preset: Literal[*PRESETS] = "124M"
    """model size"""
    batch_size: int = 8
    """batch size B"""
    max_length: int = 120
    """tokens per text (the book's sms-spam training maximum)"""
    repeats: int = 5
    """timed steps per mode"""
    modes: tuple[Literal[*MODES], ...] = MODES
    """--trainable modes to compare"""


def bench_mode(opts: Options, mode: str) -> dict:
    copts = ClassifyOptions(
        preset=opts.preset,
        trainable=mode,
        max_length=opts.max_length,
        batch_size=opts.batch_size,
        out="/tmp/unused",
    )
    task = Classify(copts)
    oc = OptimConfig(lr=5e-5, grad_clip=None)
    optimizer = make_optimizer(oc)
    state = init_state(task.init_params(), optimizer, jax.random.key(0), task.trainable)
    step = jax.jit(
        make_train_step(task.loss_fn, optimizer, oc, trainable=task.trainable), donate_argnums=0
    )
    batches = iter(
        [
            task.train.batch(np.arange(i * opts.batch_size, (i + 1) * opts.batch_size))
            for i in range(opts.repeats + 1)
        ]
    )
    box = [state]

    def run():
        box[0], metrics = step(box[0], next(batches))
        return metrics

    timing = timed(run, opts.repeats)
    trained, _ = split(box[0].params, task.trainable)
    opt_numbers = count_params(box[0].opt_state)
    return {
        "mode": mode,
        "trainable": count_params(trained),
        "opt_state": opt_numbers,
        "opt_mb": opt_numbers * 4 / 2**20,
        "step_s": timing.median_s,
        "first_s": timing.first_s,
    }


def main(argv=None) -> None:
    opts = parse(Options, argv, __doc__)
    print(
        f"{opts.preset}, B {opts.batch_size}, T {opts.max_length}, fp32, "
        f"{jax.devices()[0].device_kind}; median of {opts.repeats} steps"
    )
    print(f"{'mode':<11}{'trainable':>13}{'opt state':>13}{'MB':>9}{'step s':>9}{'first s':>9}")
    for mode in opts.modes:
        r = bench_mode(opts, mode)
        print(
            f"{r['mode']:<11}{r['trainable']:>13,}{r['opt_state']:>13,}{r['opt_mb']:>9.1f}"
            f"{r['step_s']:>9.3f}{r['first_s']:>9.1f}"
        )


if __name__ == "__main__":
    run_cli(main)
