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
# # 9. Inside a GPT
#
# *Beyond the book: the experiments of mechanistic interpretability, on a model small enough to
# train on a laptop in seconds.*
#
# Every activation of a gptjax model passes a named point (TransformerLens's names:
# `blocks.1.attn.hook_pattern`, `blocks.0.hook_resid_post`, ...). `gptjax.probe.run_with_cache`
# reads them, `run_with_hooks` replaces them; both are pure functions, so `jit`, `vmap` and
# `grad` apply. Here:
#
# 1. a 2-layer model trained on sequences that repeat themselves, where induction pays: the
#    induction heads forming, and the loss on the repeated half falling with them (Olsson et
#    al., 2022);
# 2. the logit lens: what the residual stream predicts after each block;
# 3. activation patching on one prompt, as a heatmap;
# 4. a small sparse autoencoder on the residual stream, and the tokens that light up a few of
#    its latents.

# %%
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
import pandas as pd
from IPython.display import Image

from gptjax import GPTConfig, heap, init_params
from gptjax.probe import analyses, run_with_cache, run_with_hooks
from gptjax.probe import sae as sparse
from gptjax.training import OptimConfig, init_state, lm_loss, make_optimizer, make_train_step
from gptjax.training.cross_entropy import target_logprobs

heap.keep()  # XLA's step buffers reused on a CPU (README: CPU heap)
work = Path(tempfile.mkdtemp())

# %% [markdown]
# ## 1. Induction heads forming
# Each training row is a few random tokens (a period of 6 to 16, of 64 tokens) repeated to
# fill 32 positions. A token cannot be predicted the first time it is seen (log 64 = 4.16 nats);
# after one period it can, by a circuit that finds the earlier copy of the current token and
# copies the token after it: an induction head. Since the period varies from row to row, no
# fixed offset will do, and the circuit needs two layers (a head that looks one token back,
# read by a head in the next layer). Held out: rows of 16 random tokens then the same 16 again,
# the standard test, on which an induction head of layer 1 attends from each token of the
# repeat to the token after its first copy.

# %%
V, HALF = 64, 16
cfg = GPTConfig(
    vocab_size=V, context_length=2 * HALF, emb_dim=64, n_heads=4, n_layers=2, drop_rate=0.0
)


def periodic(seed: int, rows: int = 32, periods=(6, 17)) -> dict:
    rng = np.random.default_rng(seed)
    period = rng.integers(*periods, size=rows)
    base = rng.integers(0, V, (rows, 2 * HALF + 1))
    t = np.arange(2 * HALF + 1)
    ids = np.take_along_axis(base, t[None, :] % period[:, None], 1).astype(np.int32)
    return {"inputs": ids[:, :-1], "targets": ids[:, 1:]}


repeated = lambda seed, rows=32: periodic(seed, rows, periods=(HALF, HALF + 1))
oc = OptimConfig(lr=1e-3, warmup_steps=20, weight_decay=0.0)
optimizer = make_optimizer(oc)
state = init_state(init_params(cfg, jax.random.key(0)), optimizer, jax.random.key(1))
step = jax.jit(make_train_step(lm_loss(cfg), optimizer, oc))
held_out = repeated(10_000, rows=64)  # 16 random tokens, then the same 16 again


@jax.jit
def watch(params):
    """Each head's induction score, and the loss on each half of held-out rows."""
    scores = analyses.induction_scores(cfg, params, jax.random.key(5), batch=16, half=HALF)
    logits = run_with_hooks(cfg, params, held_out["inputs"], {})
    nll = -target_logprobs(logits, held_out["targets"])  # [B, T]
    return scores, nll[:, : HALF - 1].mean(), nll[:, HALF:].mean()


history = []
for i in range(1, 401):
    state, metrics = step(state, periodic(i))
    if i % 20 == 0:
        scores, first, second = watch(state.params)
        history.append({"step": i, "first half": float(first), "repeated half": float(second)})
        history[-1] |= {f"L{a}H{h}": float(scores[a, h]) for a in range(2) for h in range(4)}
frame = pd.DataFrame(history).set_index("step")

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
frame[[c for c in frame if c.startswith("L")]].plot(ax=left, title="induction score per head")
frame[["first half", "repeated half"]].plot(ax=right, title="held-out loss (nats per token)")
plt.show()
frame.iloc[4::5].round(2)

# %% [markdown]
# ## 2. The logit lens
# The residual stream read through the final LayerNorm and the unembedding after each block
# (`analyses.logit_lens`): how likely the right next token is, in each half, at each depth. The
# repeated half is only predictable after block 1, where the induction heads write.

# %%
params = state.params
lens = analyses.logit_lens(cfg, params, held_out["inputs"])  # [L+1, B, T, V]
right = jnp.take_along_axis(jax.nn.softmax(lens, -1), held_out["targets"][None, ..., None], -1)
right = right[..., 0]  # [L+1, B, T]
pd.DataFrame(
    {
        "first half": np.asarray(right[:, :, : HALF - 1].mean((1, 2))),
        "repeated half": np.asarray(right[:, :, HALF:].mean((1, 2))),
    },
    index=["embeddings", "after block 0", "after block 1"],
).round(3)

# %% [markdown]
# ## 3. Activation patching
# Two prompts that differ in one token of the first half. In the clean one the model predicts
# the repeat of that token's successor; in the corrupt one it cannot. Patching the clean
# residual stream into the corrupt run, one (layer, position) at a time, shows where the
# information that fixes the prediction lives: before block 0, at the changed token's position;
# before block 1, at the position after it, where a layer-0 head has written "the token before
# me was this": the key the induction head matches the current token against.

# %%
clean = repeated(20_000, rows=1)["inputs"]
corrupt = clean.copy()
corrupt[0, 5] = (clean[0, 5] + 1) % V
where, answer = HALF + 5, int(clean[0, 6])  # predict token 6 again from the repeat of token 5
metric = lambda logits: jax.nn.log_softmax(logits[0, where])[answer]
grid = jax.jit(lambda p: analyses.patch_positions(cfg, p, clean, corrupt, metric))(params)
png = analyses.heatmap(
    grid,
    work / "patching.png",
    xlabel="position",
    ylabel="block input",
    title=f"log p(token {answer} at position {where}) with the clean stream patched in",
    xticks=[str(t) for t in range(2 * HALF)],
    yticks=["block 0", "block 1"],
)
Image(str(png))

# %% [markdown]
# ## 4. A sparse autoencoder on the residual stream
# A TopK SAE (`gptjax.probe.sae`, SAELens's math) with 256 latents, 8 active a token, trained
# on `blocks.0.hook_resid_post` over fresh rows. `python -m train.sae` trains one on any hook
# point of any checkpoint through the training loop, and writes it in SAELens's format.

# %%
hook = "blocks.0.hook_resid_post"
acts = jax.jit(lambda tokens: run_with_cache(cfg, params, tokens, [hook])[1][hook])
sae_cfg = sparse.SAEConfig(d_in=64, d_sae=256, architecture="topk", k=8)
sae = sparse.init_sae(sae_cfg, jax.random.key(3))
adam = optax.adam(2e-3)
opt_state = adam.init(sae)


@jax.jit
def sae_step(sae, opt_state, x):
    def loss(p):
        total, n, sums = sparse.loss_sums(sae_cfg, p, x)
        return total / n, sums["mse"] / n

    (_, mse), grads = jax.value_and_grad(loss, has_aux=True)(sae)
    updates, opt_state = adam.update(grads, opt_state)
    return optax.apply_updates(sae, updates), opt_state, mse


for i in range(200):
    x = acts(periodic(30_000 + i)["inputs"]).reshape(-1, 64)
    sae, opt_state, mse = sae_step(sae, opt_state, x)
x = acts(held_out["inputs"]).reshape(-1, 64)
z = sparse.encode(sae_cfg, sae, x)
explained = 1 - jnp.sum((sparse.decode(sae, z) - x) ** 2) / jnp.sum((x - x.mean(0)) ** 2)
print(f"explained variance {float(explained):.3f}, L0 {float((z > 0).sum(-1).mean()):.1f}")

# %% [markdown]
# The held-out tokens that light up the four most used latents most, with their position:
# block 0's stream holds the current token, its position and what a layer-0 head read of the
# token before it.

# %%
tokens = held_out["inputs"].reshape(-1)
position = np.tile(np.arange(2 * HALF), len(held_out["inputs"]))
rows = []
for latent in np.argsort(-np.asarray((z > 0).sum(0)))[:4]:
    top = np.argsort(-np.asarray(z[:, latent]))[:6]
    rows.append(
        {
            "latent": int(latent),
            "fires on (share of tokens)": round(float((z[:, latent] > 0).mean()), 3),
            "top tokens (id @ position)": ", ".join(f"{tokens[t]}@{position[t]}" for t in top),
        }
    )
pd.DataFrame(rows)
