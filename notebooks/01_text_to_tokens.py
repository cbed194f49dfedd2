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
# # 1. Text to tokens
#
# *Mirrors chapter 2 of "Build a Large Language Model (From Scratch)": working with text data.*
#
# A language model reads numbers, not text. This notebook turns a short story into the numbers
# a GPT is trained on, with gptjax's own pieces:
#
# 1. the book's word-level `SimpleTokenizer` against GPT-2's byte-pair encoding (BPE) on the
#    same text;
# 2. sliding windows: how one stream of token ids becomes (input, target) pairs;
# 3. token and position embeddings, the first layer of the model, with their shapes.
#
# The Verdict and GPT-2's BPE files come from the gptjax cache (`GPTJAX_CACHE`, default
# `~/.cache/gptjax`), which downloads them on first use and checks their sha256.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from gptjax import GPTConfig, init_params
from gptjax.data import tokenizer
from gptjax.data.cache import fetch
from gptjax.data.sliding import sliding_windows

text = fetch("the-verdict.txt").read_text(encoding="utf-8")
print(f"The Verdict: {len(text):,} characters")
print(text[:99])

# %% [markdown]
# ## The book's tokenizer: one id per word
#
# `SimpleTokenizer` splits on whitespace and punctuation and numbers every distinct word of the
# story, plus two special tokens: `<|endoftext|>` between documents and `<|unk|>` for any word
# it has not seen.

# %%
simple = tokenizer.SimpleTokenizer.from_text(text)
sentence = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of the palace."
ids = simple.encode(sentence)
print(f"vocabulary: {len(simple.str_to_int):,} entries")
print("ids:    ", ids)
print("decoded:", simple.decode(ids))

# %% [markdown]
# "Hello" and "palace" are not in the story, so they come back as `<|unk|>`: the text is lost.
#
# ## GPT-2's byte-pair encoding: never an unknown word
#
# BPE starts from the 256 bytes and merges frequent pairs into 50,000 larger pieces. A word it
# has never seen is spelled from smaller pieces, down to single bytes if need be, so every text
# round-trips exactly.

# %%
enc = tokenizer.gpt2()
bpe_ids = tokenizer.encode(enc, sentence + " Akwirw ier")
pieces = [enc.decode_single_token_bytes(i).decode("utf-8", "replace") for i in bpe_ids]
print(f"vocabulary: {enc.n_vocab:,} entries")
print("ids:    ", bpe_ids)
print("pieces: ", "|".join(pieces))
print("decoded:", enc.decode(bpe_ids))

# %% [markdown]
# The leading space belongs to the piece (`' like'`), `<|endoftext|>` is the single id 50256,
# and the made-up "Akwirw ier" is spelled from several sub-word pieces. Over the whole story:

# %%
words = sorted(set(simple.split(text)))
per_word = np.array([len(enc.encode_ordinary(" " + w)) for w in words])
pd.DataFrame(
    {
        "tokenizer": ["SimpleTokenizer (the book)", "GPT-2 BPE"],
        "vocabulary": [len(simple.str_to_int), enc.n_vocab],
        "tokens in The Verdict": [len(simple.encode(text)), len(enc.encode_ordinary(text))],
        "unknown words possible": ["yes (<|unk|>)", "no (bytes)"],
    }
)

# %%
counts = np.bincount(np.minimum(per_word, 4), minlength=5)[1:]
fig, ax = plt.subplots(figsize=(6, 3))
ax.bar(["1", "2", "3", "4 or more"], counts, color="tab:blue")
ax.set_ylim(0, 1.15 * counts.max())
for x, c in enumerate(counts):
    ax.annotate(f"{c}", (x, c), ha="center", va="bottom")
ax.set_xlabel("BPE tokens for the word (with its leading space)")
ax.set_ylabel("distinct words in The Verdict")
ax.set_title("Most words are one GPT-2 token; rare ones split into pieces")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Sliding windows: next-token prediction as (input, target) pairs
#
# A GPT learns to predict each next token. `sliding_windows` cuts the id stream into windows of
# `max_length` tokens; the targets are the same window shifted one token to the right. The
# `stride` is how far each window starts after the previous one: stride = max_length gives
# windows that do not overlap (no token is a target twice per epoch).

# %%
ids = enc.encode_ordinary(text)
inputs, targets = sliding_windows(ids[50:], max_length=4, stride=4)
print(
    f"{len(ids):,} tokens -> {len(inputs)} windows of 4: inputs {inputs.shape}, targets "
    f"{targets.shape}"
)
show = lambda row: " | ".join(repr(enc.decode([int(i)])) for i in row)
pd.DataFrame({"inputs": [show(r) for r in inputs[:4]], "targets": [show(r) for r in targets[:4]]})

# %% [markdown]
# Each window holds four training examples at once, one per position: the model sees the
# context on the left and must predict the token on the right.

# %%
x, y = inputs[0], targets[0]
pd.DataFrame(
    {
        "context": [enc.decode(x[: t + 1].tolist()) for t in range(4)],
        "next token to predict": [enc.decode([int(y[t])]) for t in range(4)],
    }
)

# %% [markdown]
# ## Token and position embeddings
#
# The model's first layer looks each id up in `wte` [V, D] (one learned vector per token) and
# each position in `wpe` [T, D] (one per position: attention alone cannot tell order), then adds
# them. Here D = 256 and windows of 4 tokens, as in the book, with the embeddings of a freshly
# initialised gptjax model (OpenAI's names `wte` and `wpe`).

# %%
cfg = GPTConfig(context_length=4, emb_dim=256, n_heads=4, n_layers=1)
params = init_params(cfg, jax.random.key(123))
wte, wpe = params["wte"]["embedding"], params["wpe"]["embedding"]
batch, _ = sliding_windows(ids, max_length=4, stride=4)
batch = jnp.asarray(batch[:8])  # [B, T]
token_emb = wte[batch]  # [B, T, D]
pos_emb = wpe[jnp.arange(4)]  # [T, D], broadcast over the batch
x = token_emb + pos_emb
pd.DataFrame(
    {
        "array": ["wte", "wpe", "token ids", "token embeddings", "position embeddings", "input"],
        "shape": [wte.shape, wpe.shape, batch.shape, token_emb.shape, pos_emb.shape, x.shape],
        "letters": ["[V, D]", "[C, D]", "[B, T]", "[B, T, D]", "[T, D]", "[B, T, D]"],
    }
)
