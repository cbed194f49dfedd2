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
# # 7. Functional JAX: what pure functions buy
#
# *Mirrors appendix A of "Build a Large Language Model (From Scratch)" (introduction to
# PyTorch) and appendix E (LoRA), told the JAX way.*
#
# In gptjax the parameters are a plain nested dict and every step is a pure function of its
# inputs. That is what lets JAX's transformations apply to the whole model:
#
# 1. `jax.vmap` over seeds: four models trained at once by one compiled step;
# 2. `jax.grad` of any scalar: here, how much each input position moves one prediction;
# 3. LoRA as a transform of the parameter tree (with B = 0 it is the base model, exactly);
# 4. `jax.eval_shape`: GPT-2 1558M's memory, worked out without allocating a byte;
# 5. sharding a batch over eight devices (forced CPU devices here): the step of one device.

# %%
import os

# Eight CPU devices for section 5; set before JAX starts.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
)

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gptjax import GPT, GPTConfig, count_params, heap, init_params, lora
from gptjax.data import tokenizer
from gptjax.data.cache import fetch
from gptjax.data.sliding import sliding_windows
from gptjax.training import OptimConfig, init_state, lm_loss, make_optimizer, make_train_step

# On a CPU, XLA's step buffers reused instead of mapped afresh every call (README: CPU heap):
# importing gptjax changes nothing in this process until it asks, before any computation.
heap.keep()
print(heap.describe())

# The book's word-level tokenizer (notebook 1) keeps the vocabulary, and so the output layer,
# small: four models train in seconds on a CPU.
text = fetch("the-verdict.txt").read_text(encoding="utf-8")
words = tokenizer.SimpleTokenizer.from_text(text)
windows, targets = sliding_windows(words.encode(text), 32, 32)
V = len(words.str_to_int)
cfg = GPTConfig(vocab_size=V, context_length=32, emb_dim=64, n_heads=2, n_layers=2, drop_rate=0.0)
n = count_params(init_params(cfg, jax.random.key(0)))
print(f"{len(windows)} windows of 32 words; a GPT of {n:,} parameters over {V:,} words")

# %% [markdown]
# ## 1. `vmap` over seeds
#
# `init_params` maps a key to a parameter tree, so `jax.vmap(init_params)` maps four keys to
# four trees stacked on a leading axis. The train step maps (state, batch) to a new state, so
# `jax.vmap` of it trains the four models side by side on the same batches, in one program.

# %%
keys = jax.random.split(jax.random.key(0), 4)
oc = OptimConfig(lr=2e-3)
optimizer = make_optimizer(oc)
params = jax.vmap(lambda k: init_params(cfg, k))(keys)
states = jax.vmap(lambda p, k: init_state(p, optimizer, k))(params, keys)
print("wte of the four models:", params["wte"]["embedding"].shape)

step = jax.jit(jax.vmap(make_train_step(lm_loss(cfg), optimizer, oc), in_axes=(0, None)))
curves = []
for i in range(20):
    rows = np.random.default_rng(i).choice(len(windows), 8, replace=False)
    states, metrics = step(states, {"inputs": windows[rows], "targets": targets[rows]})
    curves.append(np.asarray(metrics["loss"]))  # [4]: one loss per seed
curves = np.stack(curves)

fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(np.arange(1, 21), curves, label=[f"seed {s}" for s in range(4)])
ax.set_xlabel("step (one vmapped step trains all four)")
ax.set_ylabel("train loss (nats per token)")
ax.set_title("Four seeds, one compiled train step")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. `grad` of any scalar
#
# Any scalar computed from the parameters can be differentiated. Take the log-probability the
# first model gives the true token after position 12 of a window, and differentiate it with
# respect to the position embeddings `wpe`: row s of the gradient says how much position s of
# the input moves that one prediction. Positions after 12 get a gradient of exactly zero: the
# model is causal, and `grad` proves it.

# %%
first = jax.tree.map(lambda x: x[0], states.params)
x, y, t = windows[:1], targets[:1], 12


def log_prob(params):
    logits = GPT(cfg).apply({"params": params}, x)
    return jax.nn.log_softmax(logits[0, t])[y[0, t]]


g = jax.jit(jax.grad(log_prob))(first)["wpe"]["embedding"]  # [C, D], like wpe
influence = jnp.linalg.norm(g, axis=-1)
assert float(jnp.abs(g[t + 1 :]).max()) == 0.0
fig, ax = plt.subplots(figsize=(6, 3))
ax.bar(range(cfg.context_length), influence)
ax.axvline(t + 0.5, color="grey", ls=":")
ax.set_xlabel("input position s")
ax.set_ylabel("|d log p(target at 12) / d wpe[s]|")
ax.set_title("Only positions 0..12 move the prediction at 12 (13..31: exactly 0)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. LoRA as a tree transform
#
# `lora.init` builds a second tree holding, for each targeted Dense kernel W [in, out], a pair
# A [in, r] and B [r, out] with B = 0; `lora.merge` returns the tree with W + (alpha / r) A B.
# The model code never changes. With B = 0 the merged model is the base model bit for bit;
# training moves only A and B.

# %%
lcfg = lora.LoRAConfig(rank=4, alpha=8)
adapters = lora.init(lcfg, first, jax.random.key(1))
print("adapters of block 0:", jax.tree.map(jnp.shape, adapters["h_0"]))
apply = jax.jit(GPT(cfg).apply)
base_logits = apply({"params": first}, x)
merged_logits = apply({"params": lora.merge(lcfg, first, adapters)}, x)
print("B = 0: max |merged - base| =", float(jnp.abs(merged_logits - base_logits).max()))
nudged = jax.tree.map(lambda a: a + 0.01, adapters)  # B != 0 now
moved = apply({"params": lora.merge(lcfg, first, nudged)}, x)
print("B != 0: max |merged - base| =", float(jnp.abs(moved - base_logits).max()))
print(f"adapter parameters {lora.count(adapters):,} of {count_params(first):,} in the model")

# %% [markdown]
# ## 4. `eval_shape`: GPT-2 1558M without the memory
#
# `jax.eval_shape` runs a function on shapes only. The whole training state of GPT-2 1558M
# (parameters and AdamW moments) and the logits of one full-context forward pass, sized in
# milliseconds:

# %%
xl = GPTConfig.preset("1558M")
abstract = jax.eval_shape(
    lambda: init_state(init_params(xl, jax.random.key(0)), optimizer, jax.random.key(0))
)
logits = jax.eval_shape(
    lambda p: GPT(xl).apply({"params": p}, jnp.zeros((1, xl.context_length), jnp.int32)),
    abstract.params,
)
size = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
pd.DataFrame(
    {
        "what": ["parameters", "AdamW moments", "logits of one 1024-token row"],
        "shape or count": [
            f"{count_params(abstract.params):,}",
            "2 per parameter",
            str(logits.shape),
        ],
        "float32 bytes": [
            f"{size(abstract.params) / 2**30:.2f} GiB",
            f"{size(abstract.opt_state) / 2**30:.2f} GiB",
            f"{size(logits) / 2**20:.0f} MiB",
        ],
    }
)

# %% [markdown]
# ## 5. Sharding a batch over devices
#
# A `Mesh` names the devices' axis ("data"); a `NamedSharding` with `PartitionSpec("data")`
# splits an array's first axis across it. Given a sharded batch and replicated parameters,
# `jax.jit` of the unchanged train step runs data-parallel: XLA inserts the gradient
# all-reduce. The loss equals the single-device step's, and the updated parameters differ only
# by float32 rounding: the eight devices add up the gradient in another order.

# %%
devices = jax.devices("cpu")
mesh = Mesh(np.array(devices), ("data",))
batch = {"inputs": windows[:8], "targets": targets[:8]}
sharded = jax.device_put(batch, NamedSharding(mesh, PartitionSpec("data")))
print(f"{len(devices)} devices; the [8, 32] batch, row by row:")
jax.debug.visualize_array_sharding(sharded["inputs"])

one_state = init_state(first, optimizer, jax.random.key(2))
train_step = jax.jit(make_train_step(lm_loss(cfg), optimizer, oc))
replicated = jax.device_put(one_state, NamedSharding(mesh, PartitionSpec()))
new_sharded, m_sharded = train_step(replicated, sharded)
new_single, m_single = train_step(
    jax.device_put(one_state, devices[0]), jax.device_put(batch, devices[0])
)
gap = lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max())
diff = jax.tree.map(gap, new_sharded.params, new_single.params)
print(f"loss on 8 devices {float(m_sharded['loss']):.6f}, on one {float(m_single['loss']):.6f}")
print(f"largest parameter difference after the step: {max(jax.tree.leaves(diff)):.1e}")
