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
# # 8. Your own tokenizer, chat, and RL from verifiable rewards
#
# *Beyond the book: the steps nanochat takes from a base model to a chat model.*
#
# 1. A byte-level BPE trained on your own text, loaded by tiktoken (and by transformers from the
#    same folder), and how well it compresses text beside GPT-2's.
# 2. ChatML: a conversation as tokens, and the mask that puts the loss on the assistant only.
# 3. A few steps of GRPO on generated arithmetic problems, with the reward plotted.
#
# The full runs: `gptjax tokenizer --data DIR --vocab-size 8192 --out runs/tok`,
# `gptjax instruct --template chatml --data chats.jsonl ...` and
# `gptjax rl --config train/recipes/rl-arithmetic-tiny.toml`.

# %%
import json
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from gptjax.data import IGNORE, arithmetic, bpe, chat, instruct, tokenizer
from gptjax.data.cache import fetch
from train import rl

work = Path(tempfile.mkdtemp())

# %% [markdown]
# ## A tokenizer of your own
# Hugging Face `tokenizers` learns the merges under GPT-2's pre-tokenizer rules; gptjax writes
# them in tiktoken's format (fast encoding) and as a `tokenizer.json` (for transformers).

# %%
text = fetch("the-verdict.txt").read_text()
train_text, held_out = text[:17000], text[17000:]
for size in (300, 1000, 3000):
    enc = bpe.train([train_text], size)
    print(f"{enc.n_vocab:5} tokens: {bpe.bytes_per_token(enc, held_out):.2f} bytes/token held out")
print(f"GPT-2 (50257): {bpe.bytes_per_token(tokenizer.gpt2(), held_out):.2f} bytes/token held out")

# %%
folder = bpe.save(enc, work / "tok")
mine = bpe.load(folder)
ids = mine.encode("I had always thought Jack Gisburn rather a cheap genius")
print(sorted(p.name for p in folder.iterdir()))
print(ids, [mine.decode([i]) for i in ids])

# %% [markdown]
# ## Chat in ChatML
# `<|im_start|>` and `<|im_end|>` join the vocabulary as special tokens (a model's embeddings grow
# to hold them). Only the assistant's words and its `<|im_end|>` are targets.

# %%
messages = [
    {"role": "system", "content": "Answer with a number."},
    {"role": "user", "content": "What is 7 * 8?"},
    {"role": "assistant", "content": "7 * 8 = 56"},
]
enc = chat.chat_encoding(tokenizer.gpt2())
print(chat.render(messages))
ids, mask = chat.encode_with_mask(enc, messages)
batch = instruct.collate([ids], masks=[mask], pad_id=enc.eot_token)
targets = batch["targets"][0]
table = pd.DataFrame(
    {
        "input": [enc.decode([i]) for i in batch["inputs"][0]],
        "target": [enc.decode([t]) if t != IGNORE else "(ignored)" for t in targets],
    }
)
table.iloc[16:]  # from the user's turn on

# %% [markdown]
# ## GRPO on arithmetic
# `train.rl` first finetunes the tiny model on worked answers (with a 320-token tokenizer of
# the task's text, so its steps are fast), then samples 8 answers to each prompt, rewards the
# right ones (`arithmetic.reward`), normalises the rewards within each group and takes a clipped
# policy-gradient step.

# %%
print(arithmetic.problems(3, seed=0, max_operand=9))
print(arithmetic.reward("What is 7 * 8?", "7 * 8 = 56"), arithmetic.reward("What is 7 * 8?", "54"))

# %%
out = work / "rl"
rl.main(
    [
        *("--preset", "tiny", "--max-operand", "9", "--sft-steps", "120", "--sft-tokenizer", "320"),
        *("--max-steps", "20", "--batch-size", "16", "--group", "8", "--lr", "3e-4"),
        *("--max-new-tokens", "10", "--eval-every", "10", "--out", str(out), "--no-progress"),
    ]
)

# %%
records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
frame = pd.DataFrame(records).set_index("step")
ax = frame["reward"].plot(label="sampled (mean of 128 answers)", figsize=(7, 3.5))
frame["val_reward"].dropna().plot(ax=ax, style="o-", label="held out (greedy)")
ax.set_ylabel("reward")
ax.legend()
plt.show()
