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
# # 5. Classification: spam or not
#
# *Mirrors chapter 6 of "Build a Large Language Model (From Scratch)": finetuning for
# classification.*
#
# A GPT becomes a classifier by swapping its output head for a small `score` matrix [D, C] and
# reading the logits at the last real token of each text (`gptjax.GPTClassifier`). This
# notebook:
#
# 1. loads the SMS Spam Collection split exactly as the book does (`gptjax.data.textdata`);
# 2. compares the trainable modes of `gptjax classify --trainable` side by side: how many
#    parameters each trains and how many bytes its AdamW state takes, for GPT-2 124M;
# 3. trains a small classifier for one epoch with the library's train step and draws the
#    test set's confusion matrix.
#
# The full run: `gptjax classify --config train/recipes/spam-last-block.toml` (GPT-2 124M
# weights, 95%+ test accuracy as in the book).

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from gptjax import GPTClassifier, GPTConfig, count_params, heap, init_classifier
from gptjax.data import textdata, tokenizer
from gptjax.model.lora import LoRAConfig
from gptjax.training import OptimConfig, init_state, make_optimizer, make_train_step
from gptjax.training.cross_entropy import cross_entropy_sum
from gptjax.training.finetune import MODES, trainable_paths, with_adapters
from gptjax.training.steps import split

# On a CPU, XLA's step buffers reused instead of mapped afresh every call (README: CPU heap):
# importing gptjax changes nothing in this process until it asks, before any computation.
heap.keep()
print(heap.describe())

# %% [markdown]
# ## The data
#
# The book balances the classes (747 spam, 747 of the 4,825 ham) and splits 70/10/20. Each text
# is encoded with GPT-2's BPE and padded with `<|endoftext|>` to the longest training text.

# %%
names, splits = textdata.load("sms-spam")
enc = tokenizer.gpt2()
L = max(len(enc.encode_ordinary(t)) for t in splits["train"].texts)
data = {s: textdata.encode(sp.texts, enc, L) for s, sp in splits.items()}
pd.DataFrame(
    {
        s: {"texts": len(sp.texts), "spam": int(sp.labels.sum()), "tokens [n, L]": data[s].shape}
        for s, sp in splits.items()
    }
)

# %% [markdown]
# ## What trains: four modes
#
# `head` trains only the new `score` matrix; `last-block` also the last transformer block and
# the final LayerNorm (the book's choice); `all` everything; `lora` low-rank adapters on every
# attention and feed-forward matrix plus the head. Counted for GPT-2 124M from shapes alone
# (`jax.eval_shape`), so nothing is allocated. AdamW keeps two float32 moments per trained
# parameter: that is the optimizer's memory.

# %%
big = GPTConfig.preset("124M")
lcfg = LoRAConfig(rank=16, alpha=16)
optimizer = make_optimizer(OptimConfig(lr=5e-5))
table = []
for mode in MODES:
    adapters = lcfg if mode == "lora" else None
    params = jax.eval_shape(
        lambda adapters=adapters: with_adapters(
            init_classifier(big, 2, jax.random.key(0)), adapters, jax.random.key(1)
        )
    )
    trained, _ = split(params, trainable_paths(mode, big, adapters))
    opt_state = jax.eval_shape(optimizer.init, trained)
    model = params["model"] if mode == "lora" else params
    adam_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(opt_state))
    table.append(
        {
            "--trainable": mode,
            "trained parameters": f"{count_params(trained):,}",
            "share of the model": f"{count_params(trained) / count_params(model):.2%}",
            "AdamW state": f"{adam_bytes / 2**20:,.1f} MiB",
        }
    )
pd.DataFrame(table).set_index("--trainable")

# %% [markdown]
# ## Training the tiny classifier
#
# No GPT-2 weights here, so a small GPT (2 layers, D = 64) trains from scratch
# (`--trainable all`). The loss is the cross entropy of the classifier's logits [B, C] against
# the labels [B]; the step is the same `make_train_step` as pretraining, given a different loss
# function.

# %%
cfg = GPTConfig(context_length=128, emb_dim=64, n_heads=2, n_layers=2, drop_rate=0.0)
model = GPTClassifier(cfg, num_classes=len(names))


def loss_fn(params, batch, rng, train):
    """(summed cross entropy, examples): the LossFn `make_train_step` takes."""
    return cross_entropy_sum(model.apply({"params": params}, batch["inputs"]), batch["labels"])


oc = OptimConfig(lr=5e-4, weight_decay=0.1)
optimizer = make_optimizer(oc)
state = init_state(init_classifier(cfg, 2, jax.random.key(123)), optimizer, jax.random.key(0))
train_step = jax.jit(make_train_step(loss_fn, optimizer, oc))
predict = jax.jit(lambda params, x: jnp.argmax(model.apply({"params": params}, x), -1))


def predictions(params, split_name, rows=64):
    """Predicted classes of a split, `rows` texts per call of one compiled program."""
    x = data[split_name]
    x = np.pad(x, ((0, -len(x) % rows), (0, 0)), constant_values=tokenizer.EOT_ID)
    out = [predict(params, x[i : i + rows]) for i in range(0, len(x), rows)]
    return np.concatenate(out)[: len(data[split_name])]


def accuracy(params, split_name):
    return float(np.mean(predictions(params, split_name) == splits[split_name].labels))


B, log = 16, []
order = np.random.default_rng(0).permutation(len(data["train"]))
for step, start in enumerate(range(0, len(order) - B + 1, B), 1):
    idx = order[start : start + B]
    batch = {"inputs": data["train"][idx], "labels": splits["train"].labels[idx]}
    state, metrics = train_step(state, batch)
    if step % 13 == 0:
        log.append(
            {
                "step": step,
                "train loss": float(metrics["loss"]),
                "val acc": accuracy(state.params, "validation"),
            }
        )
pd.DataFrame(log).set_index("step").round(3)

# %% [markdown]
# ## The confusion matrix on the test set
#
# Rows are the true classes, columns the predicted ones; the diagonal is what the classifier
# got right.

# %%
pred = predictions(state.params, "test")
true = splits["test"].labels
confusion = np.zeros((2, 2), int)
np.add.at(confusion, (true, pred), 1)
fig, ax = plt.subplots(figsize=(5, 4))
im = ax.imshow(confusion, cmap="Blues")
for (i, j), n in np.ndenumerate(confusion):
    ax.text(j, i, n, ha="center", va="center", color="w" if n > confusion.max() / 2 else "k")
ax.set_xticks([0, 1], names)
ax.set_yticks([0, 1], names)
ax.set_xlabel("predicted label")
ax.set_ylabel("true label")
ax.set_title(f"Test set: {np.mean(pred == true):.1%} accurate\n({len(true)} texts)")
fig.colorbar(im, ax=ax, label="texts")
fig.tight_layout()
plt.show()
