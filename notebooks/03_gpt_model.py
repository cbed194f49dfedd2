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
# # 3. The GPT model
#
# *Mirrors chapter 4 of "Build a Large Language Model (From Scratch)": implementing a GPT model
# from scratch to generate text.*
#
# `gptjax.model.gpt` reads top to bottom like the paper: LayerNorm, GELU, the feed-forward
# network, the transformer block with its shortcut connections, then the model. This notebook:
#
# 1. sizes every GPT-2 preset with `jax.eval_shape`: parameter counts and memory, computed from
#    shapes alone, so 1558M costs nothing to "build";
# 2. plots what LayerNorm, GELU and shortcut connections do;
# 3. runs the model and generates text, greedy and sampled (from random weights: gibberish, as
#    in the book, until chapter 5 trains it).

# %%
import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from gptjax import GPT, GPTConfig, count_params, generate, init_params
from gptjax.config import PRESETS
from gptjax.data import tokenizer
from gptjax.model.gpt import Block, LayerNorm, gelu
from gptjax.model.params import abstract_params

# %% [markdown]
# ## Every preset, without allocating it
#
# `abstract_params(cfg)` is `jax.eval_shape` of the initialiser: it traces the model and
# returns a tree of `ShapeDtypeStruct`s, with no memory behind them. GPT-2 ties its output head
# to the token embedding `wte`; the book's chapter-4 model has a separate head, which adds
# V × D parameters. Training with AdamW keeps, per parameter, the weight, its gradient and two
# moments: 16 bytes in float32.

# %%
rows = []
for name in PRESETS:
    cfg = GPTConfig.preset(name)
    n = count_params(abstract_params(cfg))
    head = cfg.vocab_size * cfg.emb_dim
    rows.append(
        {
            "preset": name,
            "layers L": cfg.n_layers,
            "width D": cfg.emb_dim,
            "heads N": cfg.n_heads,
            "context": cfg.context_length,
            "parameters (tied head)": f"{n:,}",
            "untied head (the book)": f"{n + head:,}",
            "float32 weights": f"{4 * n / 2**20:,.0f} MiB",
            "bfloat16 weights": f"{2 * n / 2**20:,.0f} MiB",
            "AdamW training state": f"{16 * n / 2**30:,.2f} GiB",
        }
    )
pd.DataFrame(rows).set_index("preset")

# %% [markdown]
# The book's chapter-4 model is 124M without the query/key/value biases (OpenAI's checkpoints
# have them) and with an untied head; gptjax builds it with two fields of `GPTConfig`:

# %%
book = GPTConfig.preset("124M", qkv_bias=False, tie_embeddings=False)
print(f"the book's GPTModel: {count_params(abstract_params(book)):,} parameters")

# %% [markdown]
# Where the parameters of 124M sit:

# %%
shapes = abstract_params(GPTConfig.preset("124M"))
parts = {
    "token embedding wte [V, D]": count_params(shapes["wte"]),
    "position embedding wpe [C, D]": count_params(shapes["wpe"]),
    "12 blocks: attention": sum(count_params(shapes[f"h_{i}"]["attn"]) for i in range(12)),
    "12 blocks: feed-forward": sum(count_params(shapes[f"h_{i}"]["mlp"]) for i in range(12)),
    "LayerNorms": sum(count_params(shapes[f"h_{i}"][f"ln_{j}"]) for i in range(12) for j in (1, 2))
    + count_params(shapes["ln_f"]),
}
pd.Series(parts, name="parameters").map("{:,}".format).to_frame()

# %% [markdown]
# ## LayerNorm, GELU and shortcut connections
#
# **LayerNorm** rescales each token's vector to mean 0 and variance 1 over its D features, then
# applies a learned scale and shift (initially 1 and 0):

# %%
inputs = jax.random.normal(jax.random.key(123), (2, 5))
layer = nn.Dense(6)
batch = jax.nn.relu(layer.apply(layer.init(jax.random.key(1), inputs), inputs))  # the book's
ln = LayerNorm()
normed = ln.apply(ln.init(jax.random.key(0), batch), batch)
pd.DataFrame(
    {
        "mean before": batch.mean(-1).round(4),
        "var before": batch.var(-1).round(4),
        "mean after": normed.mean(-1).round(6),
        "var after": normed.var(-1).round(4),
    },
    index=["row 0", "row 1"],
)

# %%
fig, (before, after) = plt.subplots(1, 2, figsize=(9, 3))
for row, marker in ((0, "o-"), (1, "s-")):
    before.plot(range(6), batch[row], marker, label=f"row {row}")
    after.plot(range(6), normed[row], marker, label=f"row {row}")
for ax, title in ((before, "before LayerNorm"), (after, "after: mean 0, variance 1 per row")):
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("feature (D = 6)")
    ax.set_ylabel("value")
    ax.set_title(title)
    ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# **GELU** is GPT-2's activation: smooth, and slightly negative for small negative inputs, so
# a neuron with a negative input still passes a gradient, unlike ReLU.

# %%
z = jnp.linspace(-3, 3, 200)
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(z, gelu(z), label="GELU (gptjax.model.gpt.gelu)")
ax.plot(z, jax.nn.relu(z), "--", label="ReLU")
ax.set_xlabel("input x")
ax.set_ylabel("activation")
ax.set_title("GELU against ReLU")
ax.legend()
ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# **Shortcut connections** add a layer's input to its output (x + f(x)). The book's experiment:
# five small GELU layers, a target of 0, and the mean absolute gradient of each layer's
# weights. Without shortcuts the gradient shrinks on its way back to the first layers; with
# them it reaches every layer. Every gptjax `Block` has two shortcuts, around attention and
# around the feed-forward network.


# %%
class DeepNet(nn.Module):
    shortcut: bool

    @nn.compact
    def __call__(self, x):
        for width in (3, 3, 3, 3, 1):
            y = gelu(nn.Dense(width)(x))
            x = x + y if self.shortcut and y.shape == x.shape else y
        return x


sample = jnp.array([[1.0, 0.0, -1.0]])
grads = {}
for shortcut in (False, True):
    net = DeepNet(shortcut)
    net_params = net.init(jax.random.key(123), sample)
    loss = lambda params: jnp.mean(net.apply(params, sample) ** 2)  # noqa: B023
    g = jax.jit(jax.grad(loss))(net_params)["params"]
    grads[shortcut] = [float(jnp.abs(g[f"Dense_{i}"]["kernel"]).mean()) for i in range(5)]

fig, ax = plt.subplots(figsize=(6, 3))
layer = np.arange(1, 6)
ax.bar(layer - 0.2, grads[False], 0.4, label="without shortcuts")
ax.bar(layer + 0.2, grads[True], 0.4, label="with shortcuts")
ax.set_yscale("log")
ax.set_xlabel("layer (1 = nearest the input)")
ax.set_ylabel("mean |gradient| of the weights")
ax.set_title("Shortcut connections carry the gradient back")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## A transformer block, then the model
#
# A `Block` keeps the shape of its input: [B, T, D] in, [B, T, D] out. The model embeds the
# tokens, runs L blocks, normalises with `ln_f` and multiplies by the (tied) token embedding to
# get one logit per vocabulary entry: [B, T] ids in, [B, T, V] logits out.

# %%
cfg = GPTConfig.preset("124M")
block = Block(cfg)
h = jax.random.uniform(jax.random.key(0), (2, 4, cfg.emb_dim))
block_params = jax.jit(block.init)(jax.random.key(1), h)
out, _ = jax.jit(block.apply)(block_params, h)
print(f"block: input {h.shape} -> output {out.shape}; {count_params(block_params):,} parameters")

enc = tokenizer.gpt2()
prompts = ["Every effort moves you", "Every day holds a"]
tokens = jnp.array([enc.encode_ordinary(p) for p in prompts])  # [B, T]
tiny = GPTConfig.preset("tiny")
params = init_params(tiny, jax.random.key(123))
logits = jax.jit(GPT(tiny).apply)({"params": params}, tokens)
print(
    f"tiny GPT ({count_params(params):,} parameters): tokens {tokens.shape} -> logits "
    f"{logits.shape}"
)

# %% [markdown]
# ## Generating text
#
# `generate` is one jitted function: a prefill of the prompt, then a `lax.while_loop` that
# appends one token per step from a KV cache. Greedy decoding takes the most likely token;
# sampling draws from softmax(logits / temperature). The weights are random, so the words are
# too.

# %%
start = tokens[:1]
greedy = generate(tiny, params, start, max_new_tokens=8)
sampled = generate(
    tiny, params, start, max_new_tokens=8, temperature=1.0, top_k=50, rng=jax.random.key(7)
)
for label, out in (("greedy", greedy), ("sampled (T 1.0, top-k 50)", sampled)):
    print(f"{label:>26}: {enc.decode(out[0].tolist())!r}")
