"""A one-minute tour on CPU: tokenize The Verdict, train the `tiny` GPT for a few steps, and
generate with the KV cache before and after, reporting speed.

    python -m gptjax.demo            (or: make demo)

prints the data size, a sample from the random model, the loss falling every 20 steps, a sample
from the trained model, and the tokens/s of training and generation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jax
import numpy as np

from gptjax import GPTConfig, count_params, generate, init_params, tokenizer
from gptjax.cache import fetch
from gptjax.data import batches, sliding_windows
from gptjax.options import option, parse, run_cli
from gptjax.training import OptimConfig, init_state, make_optimizer, make_train_step


@dataclass(frozen=True)
class Options:
    steps: int = option(100, "training steps")
    batch_size: int = option(8, "sequences per step")
    context_length: int = option(64, "tokens per sequence")
    lr: float = option(1e-3, "peak learning rate")
    prompt: str = option("Every effort moves you", "text to continue")
    seed: int = option(0, "random seed")


def sample(cfg, params, enc, prompt: str, n: int = 30) -> str:
    start = time.perf_counter()
    ids = generate(cfg, params, [enc.encode(prompt)], max_new_tokens=n)
    text = enc.decode(np.asarray(ids[0]).tolist())
    return f"{text!r}  ({n / (time.perf_counter() - start):.0f} tok/s incl. compile)"


def main(argv=None) -> None:
    opts = parse(Options, argv, description=__doc__.split("\n\n")[0])
    enc = tokenizer.gpt2()
    ids = enc.encode(fetch("the-verdict.txt").read_text())
    cfg = GPTConfig.preset("tiny", context_length=opts.context_length, drop_rate=0.0)
    inputs, targets = sliding_windows(ids, cfg.context_length, cfg.context_length)
    print(f"the-verdict: {len(ids):,} tokens -> {len(inputs)} windows of {cfg.context_length}")

    oc = OptimConfig(lr=opts.lr, warmup_steps=10, decay_steps=opts.steps, weight_decay=0.1)
    optimizer = make_optimizer(oc)
    params = init_params(cfg, jax.random.key(opts.seed))
    print(f"tiny GPT: {count_params(params):,} parameters")
    print("random weights:", sample(cfg, params, enc, opts.prompt))

    state = init_state(params, optimizer, jax.random.key(opts.seed + 1))
    train_step = jax.jit(make_train_step(cfg, optimizer, oc), donate_argnums=0)
    step, tokens, start = 0, 0, time.perf_counter()
    while step < opts.steps:
        for batch in batches(inputs, targets, opts.batch_size, shuffle=True, epoch=step):
            state, metrics = train_step(state, batch)
            step, tokens = step + 1, tokens + batch["inputs"].size
            if step % 20 == 0 or step == 1:
                print(f"step {step:4d}  loss {float(metrics['loss']):.3f}")
            if step == opts.steps:
                break
    seconds = time.perf_counter() - start
    print(f"trained {step} steps: {tokens / seconds:,.0f} tokens/s incl. compile")
    print("after training:", sample(cfg, state.params, enc, opts.prompt))


if __name__ == "__main__":
    run_cli(main)
