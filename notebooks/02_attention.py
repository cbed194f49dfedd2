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
# # 2. Attention in four steps
#
# *Mirrors chapter 3 of "Build a Large Language Model (From Scratch)": coding attention
# mechanisms.*
#
# Attention lets each token's new vector be a weighted mix of the vectors of the tokens it may
# see. `gptjax.model.attention` builds it in four steps, each adding one idea:
#
# | step | gptjax | adds |
# |---|---|---|
# | (a) | `simple_attention` | weights = softmax of plain dot products |
# | (b) | `SelfAttention` | trainable query, key and value projections, 1/sqrt(H) scaling |
# | (c) | `CausalAttention` | a mask: position t sees only positions <= t; dropout |
# | (d) | `MultiHeadAttention` | N heads from one fused projection, output projection, KV cache |
#
# Step (d) is the model's own `attn` layer. Each step is checked against the next here (the
# same checks are tests in `tests/test_attention.py`), and the weights are drawn as heat maps.

# %%
import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from gptjax.model.attention import (
    CausalAttention,
    KVCache,
    MultiHeadAttention,
    SelfAttention,
    causal_mask,
    masked_softmax,
    simple_attention,
)

# The book's six 3-d "embeddings" of "Your journey starts with one step": x [T, D].
words = ["Your", "journey", "starts", "with", "one", "step"]
x = jnp.array(
    [
        [0.43, 0.15, 0.89],
        [0.55, 0.87, 0.66],
        [0.57, 0.85, 0.64],
        [0.22, 0.58, 0.33],
        [0.77, 0.25, 0.10],
        [0.05, 0.80, 0.55],
    ]
)
T, D = x.shape

# %% [markdown]
# ## (a) Simple attention: no weights to learn
#
# The score of query t for key s is the dot product x_t · x_s; softmax over s turns the scores
# of a row into weights summing to 1; the context vector is the weighted sum of the inputs.

# %%
scores = x @ x.T  # [T, S]
weights = jax.nn.softmax(scores, axis=-1)
context = weights @ x  # [T, D]
print("weights of 'journey':", np.round(weights[1], 4))
print("context of 'journey':", np.round(context[1], 4))
np.testing.assert_allclose(simple_attention(x), context, rtol=1e-6)
print("simple_attention(x) equals the three lines above")

# %% [markdown]
# ## (b) Self-attention: trainable projections
#
# Queries, keys and values are now learned projections of the inputs (`W_query`, `W_key`,
# `W_value`), and scores are divided by sqrt(H) so the softmax does not saturate as the head
# width H grows. With W_q = W_k = D^(1/4) I and W_v = I it is exactly step (a):

# %%
eye = jnp.eye(D)
reduce_to_a = {
    "W_query": {"kernel": eye * D**0.25},
    "W_key": {"kernel": eye * D**0.25},
    "W_value": {"kernel": eye},
}
out = SelfAttention(d_out=D).apply({"params": reduce_to_a}, x[None])[0]
np.testing.assert_allclose(out, simple_attention(x), rtol=1e-5, atol=1e-6)
print("(b) with identity projections equals (a)")

self_attn = SelfAttention(d_out=2)
p = self_attn.init(jax.random.key(789), x[None])
print("context vectors with learned-from-random 2-d projections:\n", self_attn.apply(p, x[None])[0])

# %% [markdown]
# ## (c) Causal attention: no peeking at the future
#
# To predict token t + 1 the model must not read it. A mask sets the scores above the diagonal
# to minus infinity before the softmax, so those weights are exactly zero and each row still
# sums to 1. Row t of causal attention is therefore self-attention over the prefix x_0 .. x_t.

# %%
causal = CausalAttention(d_out=2)
causal_out = causal.apply(p, x[None])[0]  # the same projections as (b)
for t in range(T):
    prefix = self_attn.apply(p, x[None, : t + 1])[0]
    np.testing.assert_allclose(causal_out[t], prefix[t], rtol=1e-5, atol=1e-6)
print("row t of (c) equals (b) over the first t + 1 tokens, for every t")

# The weights themselves, from the module's own projections and gptjax's mask and softmax.
proj = lambda name: x @ p["params"][name]["kernel"]
q, k = proj("W_query"), proj("W_key")
mask = causal_mask(T, T)
causal_weights = masked_softmax(q @ k.T / jnp.sqrt(2.0), mask)

# %%
fig, (ax_mask, ax_w) = plt.subplots(1, 2, figsize=(9, 3.8))
ax_mask.imshow(mask, cmap="Greys_r", vmin=0, vmax=1)
ax_mask.set_title("causal mask (white: may attend)")
ax_w.set_title("causal attention weights")
im = ax_w.imshow(causal_weights, cmap="viridis", vmin=0, vmax=1)
for (t, s), w in np.ndenumerate(np.asarray(causal_weights)):
    if s <= t:
        ax_w.text(s, t, f"{w:.2f}", ha="center", va="center", fontsize=8, color="w")
for ax in (ax_mask, ax_w):
    ax.set_xticks(range(T), words, rotation=45)
    ax.set_yticks(range(T), words)
    ax.set_xlabel("key (position s)")
    ax.set_ylabel("query (position t)")
fig.colorbar(im, ax=ax_w, label="weight")
fig.tight_layout()
plt.show()

# %% [markdown]
# Dropout on the weights (training only) zeroes some of them and scales the rest by
# 1 / (1 - rate), so the expected mix is unchanged:

# %%
dropout = nn.Dropout(0.5, deterministic=False)
dropped = dropout.apply({}, causal_weights, rngs={"dropout": jax.random.key(0)})
print(np.round(dropped, 2))

# %% [markdown]
# ## (d) Multi-head attention, as in GPT-2
#
# N heads each attend with their own H = D / N wide slices of the projections; their outputs
# are concatenated and mixed by an output projection `c_proj`. GPT-2 computes q, k and v with
# one fused matrix `c_attn` [D, 3D]. One head whose `c_attn` holds (c)'s three matrices and
# whose `c_proj` is the identity is exactly step (c):

# %%
causal_3 = CausalAttention(d_out=D)
p3 = causal_3.init(jax.random.key(1), x[None])["params"]
fused = jnp.concatenate([p3[n]["kernel"] for n in ("W_query", "W_key", "W_value")], axis=1)
one_head = {"c_attn": {"kernel": fused}, "c_proj": {"kernel": eye, "bias": jnp.zeros(D)}}
mha1 = MultiHeadAttention(n_heads=1, qkv_bias=False)
out, _ = mha1.apply({"params": one_head}, x[None])
np.testing.assert_allclose(out, causal_3.apply({"params": p3}, x[None]), rtol=1e-5, atol=1e-6)
print("(d) with one head and c_proj = I equals (c)")

# %% [markdown]
# ### The KV cache
#
# When generating, token t's keys and values never change once computed. `MultiHeadAttention`
# writes them into a `KVCache` [B, S, N, H] and each new token attends to the cache: one token
# of work per step instead of the whole sequence. Decoding the last three words one at a time
# from a cache gives the same outputs as attending over the whole sentence at once:

# %%
mha = MultiHeadAttention(n_heads=3)  # three heads of width 1
params = mha.init(jax.random.key(2), x[None])
full, _ = mha.apply(params, x[None])
cache = KVCache.zeros(1, T, 3, 1)
_, cache = mha.apply(params, x[None, :3], cache=cache, pos=0)  # prefill "Your journey starts"
steps = []
for t in range(3, T):
    o, cache = mha.apply(params, x[None, t : t + 1], cache=cache, pos=t)
    steps.append(o)
np.testing.assert_allclose(jnp.concatenate(steps, 1), full[:, 3:], rtol=1e-5, atol=1e-6)
print("cached decoding of 'with one step' equals full attention; cache k:", cache.k.shape)
