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
# # 6. Instruction tuning and DPO
#
# *Mirrors chapter 7 of "Build a Large Language Model (From Scratch)": finetuning to follow
# instructions, and its bonus on preference tuning with DPO.*
#
# 1. The Alpaca prompt template the book formats its 1,100 instructions with.
# 2. The book's collate function (`gptjax.data.instruct.collate`): padding, the end-of-text
#    target, and the `-100` targets the loss ignores, drawn as a table.
# 3. A few instruction-tuning steps of the tiny GPT with the library's train step.
# 4. Direct Preference Optimization: the tuned model against a frozen copy of itself on chosen
#    and rejected answers, and the reward margin growing.
#
# The full runs: `gptjax instruct --config train/recipes/instruct.toml` and
# `gptjax dpo --config train/recipes/dpo.toml`.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from gptjax import GPTConfig, generate, heap, init_params
from gptjax.data import IGNORE, instruct, tokenizer
from gptjax.data.preference import encode_pairs
from gptjax.inference.generation import completion
from gptjax.training import OptimConfig, init_state, lm_loss, make_optimizer, make_train_step
from gptjax.training.dpo import dpo_terms, pair_logprobs

# On a CPU, XLA's step buffers reused instead of mapped afresh every call (README: CPU heap):
# importing gptjax changes nothing in this process until it asks, before any computation.
heap.keep()
print(heap.describe())

# %% [markdown]
# ## The Alpaca template

# %%
entries = instruct.load_entries("instruction-data")
parts = instruct.split(entries)
print({name: len(part) for name, part in parts.items()})
print(instruct.training_text(entries[50]))

# %% [markdown]
# ## Collating a batch
#
# The book's three toy sequences. Each gets one end-of-text token (50256) appended, which the
# model must learn to emit; all are padded with 50256 to one length; targets are the inputs
# shifted left by one; every target after a sequence's first end-of-text is `-100`, which the
# loss skips. With `prompt_lengths` the targets inside the prompt are skipped too, so only the
# response is learned.

# %%
toy = [[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]]


def draw(batch):
    """A collated batch as a table: 'pad' for padding inputs, 'skip' for ignored targets."""

    def word(v, kind):
        if v == tokenizer.EOT_ID:
            return "pad" if kind == "in" else "eot"
        return "skip" if v == IGNORE else str(v)

    cols = range(batch["inputs"].shape[1])
    rows = {}
    for b in range(len(toy)):
        rows[f"row {b} inputs"] = [word(int(v), "in") for v in batch["inputs"][b]]
        rows[f"row {b} targets"] = [word(int(v), "out") for v in batch["targets"][b]]
    return pd.DataFrame(rows, index=[f"t={t}" for t in cols]).T


draw(instruct.collate(toy))

# %%
draw(instruct.collate(toy, prompt_lengths=[3, 1, 2]))  # the first 2, 0 and 1 targets skipped

# %% [markdown]
# ## Instruction tuning, a few steps
#
# A small GPT (2 layers, D = 64) from scratch on the training records (the book tunes GPT-2
# 355M), sequences cut to 64 tokens here. `instruct.Sequences` collates each batch and pads it
# to a bucket length (64, 128, 256, ...: one step program per bucket, not one per batch
# length). The loss is the ordinary language-model loss (`lm_loss`), which skips the `-100`
# targets.

# %%
enc = tokenizer.gpt2()
cfg = GPTConfig(context_length=128, emb_dim=64, n_heads=2, n_layers=2, drop_rate=0.0)
L = 128
seqs = instruct.Sequences(
    [enc.encode_ordinary(instruct.training_text(e)) for e in parts["train"]], 64
)
oc = OptimConfig(lr=1e-3, warmup_steps=5)
optimizer = make_optimizer(oc)
state = init_state(init_params(cfg, jax.random.key(123)), optimizer, jax.random.key(0))
train_step = jax.jit(make_train_step(lm_loss(cfg), optimizer, oc))
B, steps, losses = 4, 12, []
for i in range(steps):
    batch = seqs.batch(seqs.rows(0, i, B, seed=0, shuffle=True))
    state, metrics = train_step(state, batch)
    losses.append(float(metrics["loss"]))
print(f"loss: step 1 {losses[0]:.2f} -> step {steps} {losses[-1]:.2f}")

entry = parts["validation"][0]
prompt = enc.encode_ordinary(instruct.format_prompt(entry) + instruct.RESPONSE)
out = generate(cfg, state.params, jnp.array([prompt]), max_new_tokens=20, eos_id=tokenizer.EOT_ID)
print(instruct.format_prompt(entry))
print("model: ", repr(enc.decode(completion(out[0], 20, tokenizer.EOT_ID))))
print("wanted:", entry["output"])

# %% [markdown]
# Twelve steps from scratch learn which tokens are common in these records (spaces, newlines,
# punctuation), not answers: the book starts from GPT-2 355M's weights and trains two epochs.
# The mechanics are the same. Next, preferences.
#
# ## DPO: preferring the chosen answer
#
# Each preference record has a `chosen` and a `rejected` response. DPO raises the policy's
# log-probability of the chosen response relative to a frozen reference (here: the model just
# tuned), and lowers the rejected one's:
#
# loss = -log sigmoid(beta · ((pi_chosen - ref_chosen) - (pi_rejected - ref_rejected)))
#
# beta times each bracket is that response's implicit *reward*; the *reward margin* is chosen
# minus rejected reward. It starts at 0 (policy = reference, loss ln 2 = 0.693) and grows as
# the policy learns the preferences.

# %%
prefs = instruct.split(instruct.load_entries("instruction-data-with-preference"))
pairs = {name: encode_pairs(prefs[name][:8], enc, L) for name in ("train", "validation")}
reference = state.params
ref_step = jax.jit(lambda p, b: jnp.stack(pair_logprobs(cfg, p, b), axis=1))
for data in pairs.values():
    rows = np.arange(len(data))
    data.ref[rows] = np.asarray(ref_step(reference, data.batch(rows)))
beta = 0.1


def dpo_loss_fn(params, batch, rng, train):
    """(summed DPO loss, pairs): the LossFn `make_train_step` takes."""
    chosen, rejected = pair_logprobs(cfg, params, batch)
    losses, _, _ = dpo_terms(chosen, rejected, batch["ref_chosen"], batch["ref_rejected"], beta)
    return jnp.sum(losses), jnp.float32(len(losses))


@jax.jit
def margins(params, batch):
    """Mean DPO loss and reward margin of a batch of pairs."""
    chosen, rejected = pair_logprobs(cfg, params, batch)
    losses, cr, rr = dpo_terms(chosen, rejected, batch["ref_chosen"], batch["ref_rejected"], beta)
    return jnp.mean(losses), jnp.mean(cr - rr)


dpo_oc = OptimConfig(lr=1e-3, weight_decay=0.01)
dpo_opt = make_optimizer(dpo_oc)
dpo_state = init_state(reference, dpo_opt, jax.random.key(1))
dpo_step = jax.jit(make_train_step(dpo_loss_fn, dpo_opt, dpo_oc))
everything = {name: data.batch(np.arange(len(data))) for name, data in pairs.items()}
history = []
for i in range(9):
    if i % 4 == 0:
        row = {"step": i}
        for name, batch in everything.items():
            loss, margin = margins(dpo_state.params, batch)
            row |= {f"{name} loss": float(loss), f"{name} margin": float(margin)}
        history.append(row)
    if i < 8:
        batch = pairs["train"].batch(pairs["train"].rows(i // 2, i % 2, 4, seed=0, shuffle=True))
        dpo_state, _ = dpo_step(dpo_state, batch)
history = pd.DataFrame(history).set_index("step")
history.round(3)

# %%
fig, (ax_loss, ax_margin) = plt.subplots(1, 2, figsize=(9, 3.3))
for name, style in (("train", "o-"), ("validation", "s--")):
    ax_loss.plot(history.index, history[f"{name} loss"], style, label=name)
    ax_margin.plot(history.index, history[f"{name} margin"], style, label=name)
ax_loss.axhline(np.log(2), color="grey", ls=":", label="ln 2 (policy = reference)")
ax_loss.set_ylabel("DPO loss")
ax_margin.set_ylabel("reward margin (chosen - rejected)")
for ax in (ax_loss, ax_margin):
    ax.set_xlabel("DPO step")
    ax.legend(fontsize=8)
fig.suptitle("DPO on 8 preference pairs: the margin grows from 0")
fig.tight_layout()
plt.show()
