# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. Pretraining
#
# *Mirrors chapter 5 of "Build a Large Language Model (From Scratch)": pretraining on unlabeled
# data.*
#
# 1. A short run of the tiny GPT on The Verdict through the library's own pure
#    `train_step(state, batch) -> (state, metrics)` (`gptjax.training.make_train_step`), the
#    same step `gptjax pretrain` runs, and its loss curve.
# 2. Temperature and top-k: how they reshape the next-token distribution, and what they do to
#    the trained model's text.
# 3. Loading OpenAI's weights with the converter.
#
# The full-scale commands: `gptjax pretrain --config train/recipes/book-ch5.toml` (the book's
# run) and `make demo` (this run, longer).

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from gptjax import GPTConfig, count_params, generate, heap, init_params
from gptjax.data import tokenizer
from gptjax.data.cache import cache_dir, fetch
from gptjax.data.sliding import batches, sliding_windows, train_val_split
from gptjax.inference.generation import Sampling, filter_logits
from gptjax.store import Model
from gptjax.store.names import rows
from gptjax.training import (
    OptimConfig,
    init_state,
    lm_loss,
    make_eval_step,
    make_optimizer,
    make_train_step,
)

# On a CPU, XLA's step buffers reused instead of mapped afresh every call (README: CPU heap):
# importing gptjax changes nothing in this process until it asks, before any computation.
heap.keep()
print(heap.describe())

# %% [markdown]
# ## Data: The Verdict in windows
#
# 90% of the story trains, 10% validates. Windows of 64 tokens with stride 64 (the book uses
# 256 with GPT-2 124M; the tiny preset and shorter windows keep this run to seconds on a CPU).

# %%
enc = tokenizer.gpt2()
text = fetch("the-verdict.txt").read_text(encoding="utf-8")
train_text, val_text = train_val_split(text, 0.9)
T = 64
train = sliding_windows(enc.encode_ordinary(train_text), T, T)
val = sliding_windows(enc.encode_ordinary(val_text), T, T)
print(f"train windows {train[0].shape}, validation windows {val[0].shape}")

# %% [markdown]
# ## The train step
#
# `make_train_step(loss_fn, optimizer, oc)` returns a pure function; `jax.jit` compiles it
# once. The state is a `TrainState` NamedTuple of plain pytrees (params, AdamW state, step,
# rng), so nothing is mutated: each step returns a new state.

# %%
cfg = GPTConfig.preset("tiny", context_length=T)
oc = OptimConfig(lr=1e-3, warmup_steps=5, weight_decay=0.1)
optimizer = make_optimizer(oc)
state = init_state(init_params(cfg, jax.random.key(123)), optimizer, jax.random.key(0))
train_step = jax.jit(make_train_step(lm_loss(cfg), optimizer, oc))
eval_step = jax.jit(make_eval_step(cfg))
print(f"tiny GPT: {count_params(state.params):,} parameters")


def mean_loss(params, windows, B=8):
    """Mean token cross entropy over all full batches of `windows`."""
    sums = [eval_step(params, b) for b in batches(*windows, B)]
    return float(sum(s["loss"] for s in sums) / sum(s["tokens"] for s in sums))


# %%
B, epochs = 8, 4
log = []
for epoch in range(epochs):
    for batch in batches(*train, B, shuffle=True, seed=0, epoch=epoch):
        state, metrics = train_step(state, batch)
        log.append({"step": int(state.step), "train_loss": float(metrics["loss"])})
    log[-1]["val"] = mean_loss(state.params, val)
    print(
        f"epoch {epoch + 1}: step {int(state.step)}, last train loss {log[-1]['train_loss']:.3f}, "
        f"val {log[-1]['val']:.3f}"
    )
history = pd.DataFrame(log)

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.5))
ax.plot(history["step"], history["train_loss"], label="train loss (each step's batch)")
evals = history.dropna()
ax.plot(evals["step"], evals["val"], "s-", label="validation loss (each epoch)")
ax.axhline(np.log(cfg.vocab_size), color="grey", ls=":", label="ln V: a uniform guess")
ax.set_xlabel("optimizer step")
ax.set_ylabel("cross entropy (nats per token)")
ax.set_title(f"Tiny GPT on The Verdict, {epochs} epochs ({B * T * int(state.step):,} tokens seen)")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# From 10.8 (a uniform guess over 50,257 tokens) the loss falls fast at first: the model learns
# which tokens are common. The validation loss soon falls more slowly than the training loss:
# a 4,600-token story is far too little data even for the tiny model, which starts to
# memorise it. Train longer (`make demo`: 160 steps) and the gap widens as in the book's
# figure 5.12.
#
# ## Temperature and top-k
#
# The book's nine-word toy vocabulary and the logits a model gave for the word after "every
# effort moves you". Dividing the logits by a temperature below 1 sharpens the distribution
# toward the top word; above 1 flattens it. Top-k keeps only the k largest logits. Both are
# gptjax's `filter_logits`, the function `generate` samples from.

# %%
vocab = ["closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you"]
logits = jnp.array([[4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]])
fig, ax = plt.subplots(figsize=(7, 3.2))
settings = [(1.0, None), (0.1, None), (5.0, None), (1.0, 3)]
for i, (temp, k) in enumerate(settings):
    probs = jax.nn.softmax(filter_logits(logits, Sampling(False, k), temp, None))[0]
    label = f"temperature {temp}" + (f", top-k {k}" if k else "")
    ax.bar(np.arange(9) + (i - 1.5) * 0.2, probs, 0.2, label=label)
ax.set_xticks(range(9), vocab, rotation=30)
ax.set_xlabel("next word")
ax.set_ylabel("probability")
ax.set_title("How temperature and top-k reshape one next-token distribution")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# The same settings on the model just trained, for the book's prompt. Greedy decoding repeats
# the likeliest token of a model this young (a comma); sampling gives other tokens a chance, and
# higher temperatures wander further.

# %%
prompt = jnp.array([enc.encode_ordinary("Every effort moves you")])
samples = []
for temp, k in [(0.0, None), (1.0, 25), (1.5, None)]:
    out = generate(
        cfg,
        state.params,
        prompt,
        max_new_tokens=15,
        temperature=temp,
        top_k=k,
        rng=jax.random.key(123),
    )
    samples.append({"temperature": temp, "top-k": k or "-", "text": enc.decode(out[0].tolist())})
pd.DataFrame(samples)

# %% [markdown]
# ## Loading OpenAI's GPT-2 weights
#
# OpenAI published GPT-2 as TensorFlow checkpoints. gptjax reads them without TensorFlow
# (`gptjax.store.openai`), and its parameter names are OpenAI's, so loading is a name map: a Dense
# kernel [in, out] is OpenAI's conv1d weight [1, in, out] without its leading 1.
#
# `gptjax convert download 124M` fetches the 124M files (500 MB) into the cache. Where they are
# present, the next cell loads them and continues the book's prompt; elsewhere it says so.

# %%
folder = cache_dir() / "models" / "124M"
if (folder / "hparams.json").is_file():
    gpt2 = Model.open(folder)
    gpt2_cfg, gpt2_params = gpt2.cfg, gpt2.params
    out = generate(
        gpt2_cfg,
        gpt2_params,
        prompt,
        max_new_tokens=15,
        top_k=25,
        temperature=1.0,
        rng=jax.random.key(123),
    )
    print(f"GPT-2 124M ({count_params(gpt2_params):,} parameters):", enc.decode(out[0].tolist()))
else:
    print(
        f"skipped: no GPT-2 124M weights in {folder} (`gptjax convert download 124M` fetches them)"
    )

# %% [markdown]
# The converter itself, on a checkpoint in exactly OpenAI's on-disk format (written by
# TensorFlow's own `Saver`) but tiny: two layers, D = 32, a vocabulary of 64. Its raw weights
# were saved beside it, so the converted tree can be checked against them. A few rows of the
# name map, with the Hugging Face names too:

# %%
tiny_openai = "../tests/fixtures/openai-tiny"
small = Model.open(tiny_openai)
small_cfg, small_params = small.cfg, small.params
reference = np.load(f"{tiny_openai}/reference.npz")
kernel = small_params["h_1"]["attn"]["c_attn"]["kernel"]
np.testing.assert_array_equal(kernel, reference["model.h1.attn.c_attn.w"][0])
print(f"{small_cfg}\nh_1/attn/c_attn/kernel {kernel.shape} equals OpenAI's [1, in, out] weight")
pd.DataFrame(rows(small_cfg)[2:9], columns=["gptjax", "Hugging Face", "OpenAI"])
