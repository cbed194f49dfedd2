"""HellaSwag: pick the ending of a sentence, scored as build-nanogpt and llm.c score it.

Each example has a context and four endings. Every ending is appended to the context (tokens of
`ctx`, then of " " + ending) and the model's cross-entropy on the ending's tokens decides:
`acc` picks the ending with the least summed loss, `acc_norm` the least mean loss per token.
OpenAI's weights score acc_norm 0.2955 (124M) to 0.4893 (1558M) this way on the validation
file (10,042 examples). Shapes: B examples, K = 4 endings, L tokens per row, V vocabulary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from gptjax.config import GPTConfig
from gptjax.data import (
    IGNORE,  # the label of a padding example: counts nothing
    tokenizer,
)
from gptjax.data.cache import fetch
from gptjax.data.lengths import LEAST, padded_length
from gptjax.model.gpt import GPT
from gptjax.training import parallel
from gptjax.training.cross_entropy import target_logprobs
from gptjax.training.evaluator import Evaluator

K = 4


def load(path: str | Path, limit: int | None = None) -> list[dict]:
    """The first `limit` (or all) examples of a HellaSwag .jsonl: {ctx, endings, label}."""
    path, out = Path(path), []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if limit is not None and len(out) >= limit:
                break
            if line.strip():
                out.append(_example(line, f"{path}:{n}"))
    if not out:
        raise ValueError(f"{path}: no HellaSwag examples")
    return out


def _example(line: str, where: str) -> dict:
    try:
        r = json.loads(line)
        ctx, endings, label = r["ctx"], r["endings"], int(r["label"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{where}: not a HellaSwag example (ctx, endings, label): {e}") from None
    if not (isinstance(endings, list) and len(endings) == K and 0 <= label < K):
        raise ValueError(f"{where}: expected {K} endings and a label in 0..{K - 1}")
    return {"ctx": ctx, "endings": endings, "label": label}


def render(example: dict, enc, max_len: int) -> tuple[list[list[int]], list[list[int]]]:
    """K token rows (context + ending) and K masks (1 on the ending's tokens). A row longer than
    max_len loses context tokens from the front, keeping at least one (an ending longer than
    that loses its tail)."""
    ctx = enc.encode(example["ctx"])
    rows, masks = [], []
    for ending in example["endings"]:
        end = enc.encode(" " + ending)[: max_len - 1]
        row = ctx[-(max_len - len(end)) :] + end
        rows.append(row)
        masks.append([0] * (len(row) - len(end)) + [1] * len(end))
    return rows, masks


@dataclass
class Examples:
    """Rendered examples as a dataset of fixed-shape batches: `batch(rows)` ->
    {"tokens", "mask": int32 [B, K, L], "labels": int32 [B]}."""

    tokens: np.ndarray  # [n, K, L], right-padded with 0
    mask: np.ndarray  # [n, K, L]
    labels: np.ndarray  # [n]

    @classmethod
    def build(cls, examples: list[dict], enc, max_len: int) -> Examples:
        rendered = [render(e, enc, max_len) for e in examples]
        L = max(len(r) for rows, _ in rendered for r in rows)
        L = padded_length(L, max_len, least=LEAST)  # the same program for similar files
        tokens = np.zeros((len(examples), K, L), np.int32)
        mask = np.zeros_like(tokens)
        for i, (rows, masks) in enumerate(rendered):
            for k, (r, m) in enumerate(zip(rows, masks, strict=True)):
                tokens[i, k, : len(r)], mask[i, k, : len(m)] = r, m
        return cls(tokens, mask, np.array([e["label"] for e in examples], np.int32))

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {"tokens": self.tokens[rows], "mask": self.mask[rows], "labels": self.labels[rows]}


def ending_losses(cfg: GPTConfig, params, tokens, mask, dtype=jnp.float32):
    """tokens, mask [B, K, L] -> (summed, mean) cross-entropy of each ending, each [B, K]."""
    B, _, L = tokens.shape
    logits = GPT(cfg, dtype).apply({"params": params}, tokens.reshape(B * K, L))[:, :-1]
    target = tokens.reshape(B * K, L)[:, 1:]
    nll = -target_logprobs(logits, target)  # [B*K, L-1]
    m = mask.reshape(B * K, L)[:, 1:].astype(jnp.float32)  # position t predicts token t+1
    summed = (nll * m).sum(-1)
    mean = summed / jnp.maximum(m.sum(-1), 1.0)
    return summed.reshape(B, K), mean.reshape(B, K)


def make_score_step(cfg: GPTConfig, dtype=jnp.float32):
    """An eval step (for `training.evaluator.Evaluator`): a batch -> counts of correct picks."""

    def step(params, batch) -> dict:
        summed, mean = ending_losses(cfg, params, batch["tokens"], batch["mask"], dtype)
        valid = batch["labels"] != IGNORE
        hit = lambda loss: jnp.sum((jnp.argmin(loss, axis=-1) == batch["labels"]) & valid)
        return {"correct": hit(summed), "correct_norm": hit(mean), "examples": jnp.sum(valid)}

    return step


def accuracies(sums: dict) -> dict[str, float]:
    """The step's summed counts -> {"acc", "acc_norm"}."""
    n = max(sums["examples"], 1)
    return {"acc": sums["correct"] / n, "acc_norm": sums["correct_norm"] / n}


class HellaSwag:
    """Scores one model on a HellaSwag file: `scores(params)` -> {"acc", "acc_norm"}."""

    def __init__(self, cfg, data: str | None, limit: int | None, batch_size: int, dtype, enc=None):
        path = data or fetch("hellaswag_val.jsonl")
        examples = load(path, limit)
        enc = enc or tokenizer.gpt2()
        self.data = Examples.build(examples, enc, cfg.context_length)
        step = make_score_step(cfg, parallel.compute_dtype(dtype))
        self.evaluator = Evaluator(step, parallel.make_mesh(), batch_size, None)

    def scores(self, params) -> dict[str, float]:
        return accuracies(self.evaluator.sums(params, self.data, None))
