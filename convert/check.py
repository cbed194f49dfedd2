"""Confirm a conversion in one command: loss on The Verdict with the book's 90/10 split, and a
greedy sample. With OpenAI's 124M weights expect about 3.76 (train) / 3.56 (val); 1558M about
3.31 / 3.12."""

from __future__ import annotations

import jax
import numpy as np

from gptjax import generate
from gptjax.data.cache import fetch
from gptjax.data.sliding import batches, sliding_windows, train_val_split
from gptjax.store import Model
from gptjax.training.steps import make_eval_step


def mean_loss(eval_step, params, ids, T: int, drop_last: bool) -> float:
    """Token-mean loss over windows of T (stride T) in batches of 2, as the book's loaders."""
    x, y = sliding_windows(ids, T, T)
    total = count = 0.0
    for b in batches(x, y, 2, drop_last=drop_last):
        m = eval_step(params, b)
        total, count = total + float(m["loss"]), count + float(m["tokens"])
    return total / count


def check(model_dir: str, context_length: int = 256, prompt: str = "Every effort moves you"):
    model = Model.open(model_dir)
    enc, cfg = model.encoding(), model.cfg
    params = jax.device_put(model.params)
    T = min(context_length, cfg.context_length)
    train_text, val_text = train_val_split(fetch("the-verdict.txt").read_text(), 0.9)
    eval_step = jax.jit(make_eval_step(cfg))
    train = mean_loss(eval_step, params, enc.encode(train_text), T, drop_last=True)
    val = mean_loss(eval_step, params, enc.encode(val_text), T, drop_last=False)
    print(f"the-verdict loss (context {T}): train {train:.3f}, val {val:.3f}")
    n = min(25, cfg.context_length - 1)
    ids = generate(cfg, params, [enc.encode(prompt)], max_new_tokens=n)
    print(f"greedy sample: {enc.decode(np.asarray(ids[0]).tolist())!r}")
    return train, val
