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
# 3. A few steps of GRPO on generated arithmetic problems in GSM8K's format, with rewards in
#    TRL's form, two updates a rollout, and each reward and the clip fraction plotted.
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

from gptjax.data import IGNORE, arithmetic, bpe, chat, gsm8k, instruct, tokenizer
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
# ## GRPO on arithmetic, in GSM8K's format
# The generated problems are GSM8K records (`question`, and an `answer` ending "#### N"), so they
# run through the same path and rewards as GSM8K itself. Rewards are TRL's reward functions:
# called once per batch with the prompts, the completions and the records' other fields
# (`answer=[...]`), returning one float (or None) per completion.

# %%
records = arithmetic.records(3, seed=0, max_operand=9)
print(records[0])
answers = ["7 * 8 = 56\n#### 56", "54", "I think #### 56 or so"]
print(gsm8k.correct(answers, answer=["7 * 8 = 56\n#### 56"] * 3), gsm8k.formatted(answers))

# %% [markdown]
# `train.rl` first finetunes the tiny model on the worked answers (with a 320-token tokenizer of
# the task's text, so its steps are fast), then samples 8 answers to each prompt, scores them
# (right answer 1, the "#### N" format 0.2), normalises the rewards within each group and takes
# two clipped policy-gradient updates on each rollout (`--num-iterations 2`): on the second the
# policy has moved from the one that sampled, and the clip acts. Ten steps show the workings;
# the rise of the reward takes the recipes' hundred (README, "RL from verifiable rewards").

# %%
out = work / "rl"
rl.main(
    [
        *("--preset", "tiny", "--data", "arithmetic:n=600,max_operand=9", "--val-prompts", "32"),
        *("--sft-steps", "100", "--sft-tokenizer", "320", "--max-steps", "10", "--lr", "3e-4"),
        *("--reward", "gptjax.data.gsm8k:correct", "--reward", "gptjax.data.gsm8k:formatted"),
        *("--reward-weights", "1", "0.2", "--num-iterations", "2", "--batch-size", "16"),
        *("--group", "8", "--max-new-tokens", "16", "--eval-every", "5", "--out", str(out)),
        "--no-progress",
    ]
)

# %%
records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
frame = pd.DataFrame(records).set_index("step")
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
frame[["rewards/correct", "rewards/formatted"]].plot(ax=left, title="mean of each reward")
frame["val_reward"].dropna().plot(ax=left, style="o-", label="held out (greedy, weighted sum)")
left.legend()
frame["clip_fraction"].plot(ax=right, title="clip_fraction (0 on each rollout's first update)")
plt.show()
