"""GPT-2 as a text classifier (the book's chapter 6): the LM head gives way to a C-way `score`.

Parameters are GPT's tree (`wte`, `wpe`, `h_i`, `ln_f`) plus `score/kernel` [D, C] without a
bias, as Hugging Face's `GPT2ForSequenceClassification`, so a pretrained GPT-2 becomes a
classifier by adding one matrix. Shapes: B batch, T tokens, D model width, C classes.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gptjax.config import GPTConfig
from gptjax.data.textdata import pad
from gptjax.data.tokenizer import EOT_ID
from gptjax.kernels import Kernels
from gptjax.model.gpt import trunk

POOLINGS = ("last-non-pad", "last")


class GPTClassifier(nn.Module):
    """tokens [B, T] int -> logits [B, C] float32, read at one position per row. `pooling="last-non-
    pad"`: each row's last token that is not `pad_id`; pads are hidden from attention and do not
    advance positions, so right- and left-padded rows give the logits of the row alone (as HF's
    classifier with an attention mask and position ids). `pooling="last"`: the final position
    with pads treated as ordinary tokens, as in the book's main text.
    """

    cfg: GPTConfig
    num_classes: int
    pad_id: int = EOT_ID
    pooling: str = "last-non-pad"
    dtype: Any = jnp.float32
    kernels: Kernels | None = None  # what runs at each hot spot (None: resolved for dtype)

    @nn.compact
    def __call__(self, tokens: jax.Array, *, deterministic: bool = True) -> jax.Array:
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; expected one of {POOLINGS}")
        real = tokens != self.pad_id  # [B, T]
        pooled = self.pooling == "last-non-pad"
        mask = real if pooled else None
        x, _, _ = trunk(
            self.cfg,
            self.dtype,
            tokens,
            deterministic=deterministic,
            mask=mask,
            kernels=self.kernels,
        )
        T = tokens.shape[1]
        # The rightmost real token (HF's rule); a row of pads only reads position 0.
        last = jnp.max(jnp.where(real, jnp.arange(T), 0), axis=1) if pooled else T - 1
        h = x[jnp.arange(x.shape[0]), last]  # [B, D]
        score = nn.Dense(
            self.num_classes,
            use_bias=False,
            dtype=self.dtype,
            name="score",
            kernel_init=nn.initializers.normal(0.02),
        )
        return score(h).astype(jnp.float32)


def init_classifier(
    cfg: GPTConfig, num_classes: int, rng: jax.Array, base: dict | None = None
) -> dict:
    """Classifier params: `base` (a GPT's params; its LM head is dropped) or fresh ones from
    `rng`, plus a new `score/kernel` [D, C] drawn from N(0, 0.02)."""
    if base is None:
        return _initializer(cfg, num_classes)(rng)
    kernel = 0.02 * jax.random.normal(rng, (cfg.emb_dim, num_classes), jnp.float32)
    body = {k: v for k, v in base.items() if k != "lm_head"}
    return {**body, "score": {"kernel": kernel}}


@functools.cache
def _initializer(cfg: GPTConfig, num_classes: int):
    """A fresh classifier's init compiled once (op by op it takes seconds, as `init_params`)."""
    tokens = lambda: jnp.zeros((1, min(8, cfg.context_length)), jnp.int32)
    return jax.jit(lambda rng: GPTClassifier(cfg, num_classes).init(rng, tokens())["params"])


class Predictor:
    """Class probabilities for token lists, `batch_size` rows per call of one compiled program.

    head: the classifier's `labels`, `pad_id` and `max_length` (texts keep their first
    max_length tokens and are padded to it, as in training).
    """

    def __init__(self, module: GPTClassifier, params, head: dict, batch_size: int = 32):
        self.head, self.batch_size = head, batch_size
        self._apply = jax.jit(lambda ids: jax.nn.softmax(module.apply({"params": params}, ids)))

    def __call__(self, token_lists: list[list[int]]) -> np.ndarray:
        """n token lists -> probabilities [n, C] float32."""
        B, pad_id = self.batch_size, self.head["pad_id"]
        out = []
        for start in range(0, len(token_lists), B):
            ids = pad(token_lists[start : start + B], self.head["max_length"], pad_id)
            # Pad the batch itself to B rows, so one compiled program serves every chunk.
            ids = np.pad(ids, ((0, B - len(ids)), (0, 0)), constant_values=pad_id)
            out.append(np.asarray(self._apply(ids))[: len(token_lists) - start])
        return np.concatenate(out) if out else np.zeros((0, len(self.head["labels"])), np.float32)
