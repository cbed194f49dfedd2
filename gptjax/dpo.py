"""Direct Preference Optimization (Rafailov et al., 2023; the book's chapter-7 bonus).

The policy is pushed to raise the log-probability of the chosen response over the rejected one,
relative to a frozen reference model, without a reward model:
loss = -log sigmoid(beta ((pi_c - ref_c) - (pi_r - ref_r))).

Shapes: B pairs, T tokens, V vocabulary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gptjax.corpus import Shuffled
from gptjax.instruct import bucket
from gptjax.tokenizer import EOT_ID


def sequence_logprob(logits, targets, mask, *, average: bool = True) -> jax.Array:
    """logits [B, T, V], targets [B, T] (the token each position predicts), mask [B, T] bool ->
    [B]: log-softmax of logits[b, t] at targets[b, t] over the positions where mask is true,
    averaged (the book) or summed (`average=False`: the DPO paper, TRL)."""
    mask = mask.astype(jnp.float32)
    safe = jnp.where(mask > 0, targets, 0)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0] * mask
    total = jnp.sum(picked, axis=-1)
    return total / jnp.maximum(jnp.sum(mask, axis=-1), 1.0) if average else total


def dpo_terms(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float = 0.1):
    """Per pair: (losses [B] = -log sigmoid(chosen - rejected), chosen rewards [B] =
    beta (pi_c - ref_c), rejected rewards [B] = beta (pi_r - ref_r))."""
    chosen = beta * (policy_chosen - ref_chosen)
    rejected = beta * (policy_rejected - ref_rejected)
    return -jax.nn.log_sigmoid(chosen - rejected), chosen, rejected


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float = 0.1):
    """[B] log-probabilities each -> (loss: the batch mean of -log sigmoid(beta (margin)),
    chosen_rewards [B] = beta (pi_c - ref_c), rejected_rewards [B] = beta (pi_r - ref_r))."""
    losses, chosen, rejected = dpo_terms(policy_chosen, policy_rejected, ref_chosen, ref_rejected,
                                         beta)  # fmt: skip
    return jnp.mean(losses), chosen, rejected


class Pairs(Shuffled):
    """Preference pairs as a training dataset: chosen and rejected token sequences with their
    response masks (the prompt and padding out), padded to a bucket length, and the reference
    model's log-probabilities of each (`ref`, filled once before training)."""

    def __init__(self, chosen: list, rejected: list, prompt_lengths: list, max_length: int):
        self.chosen, self.rejected, self.prompts = chosen, rejected, prompt_lengths
        self.max_length = max_length
        self.ref = np.zeros((len(chosen), 2), np.float32)  # [n, (chosen, rejected)]

    def __len__(self) -> int:
        return len(self.chosen)

    def batch(self, rows) -> dict[str, np.ndarray]:
        """{"chosen", "rejected"}: int32 [B, T]; {"chosen_mask", "rejected_mask"}: bool [B, T]
        (True on the response tokens); {"ref_chosen", "ref_rejected"}: float32 [B]; "valid"."""
        longest = max(len(s[r]) for s in (self.chosen, self.rejected) for r in rows)
        T = bucket(min(longest + 1, self.max_length), self.max_length)
        out = {"valid": np.ones(len(rows), np.int32), "ref_chosen": self.ref[rows, 0],
               "ref_rejected": self.ref[rows, 1]}  # fmt: skip
        for key, seqs in (("chosen", self.chosen), ("rejected", self.rejected)):
            tokens = np.full((len(rows), T), EOT_ID, np.int32)
            mask = np.zeros((len(rows), T), bool)
            for b, r in enumerate(rows):
                seq = seqs[r][:T]
                tokens[b, : len(seq)] = seq
                # As the book: the prompt and the two tokens after it ("\n\n###") are masked.
                mask[b, min(self.prompts[r] + 2, len(seq)) : len(seq)] = True
            out[key], out[f"{key}_mask"] = tokens, mask
        return out
