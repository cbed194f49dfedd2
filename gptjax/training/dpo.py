"""Direct Preference Optimization (Rafailov et al., 2023; the book's chapter-7 bonus).

The policy is pushed to raise the log-probability of the chosen response over the rejected one,
relative to a frozen reference model, without a reward model:
loss = -log sigmoid(beta ((pi_c - ref_c) - (pi_r - ref_r))).

Shapes: B pairs, T tokens, V vocabulary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gptjax.config import GPTConfig
from gptjax.model.gpt import GPT
from gptjax.training.cross_entropy import target_logprobs


def sequence_logprob(logits, targets, mask, *, average: bool = True) -> jax.Array:
    """logits [B, T, V], targets [B, T] (the token each position predicts), mask [B, T] bool ->
    [B]: log-softmax of logits[b, t] at targets[b, t] over the positions where mask is true,
    averaged (the book) or summed (`average=False`: the DPO paper, TRL)."""
    mask = mask.astype(jnp.float32)
    total = jnp.sum(target_logprobs(logits, targets) * mask, axis=-1)
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
    losses, chosen, rejected = dpo_terms(
        policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta
    )
    return jnp.mean(losses), chosen, rejected


def pair_logprobs(
    cfg: GPTConfig,
    params,
    batch,
    *,
    average: bool = True,
    dtype=jnp.float32,
    rng=None,
    kernels=None,
) -> tuple[jax.Array, jax.Array]:
    """Log-probabilities of a batch of preference pairs (`data.preference.Pairs.batch`:
    "chosen", "rejected" [B, T] and their response masks) under `params`: ([B], [B]), from one
    forward pass over the 2B sequences; dropout on with `rng`. `average`: see
    `sequence_logprob`; `kernels`: the policy (`gptjax.kernels`; None: resolved)."""
    tokens = jnp.concatenate([batch["chosen"], batch["rejected"]])  # [2B, T]
    mask = jnp.concatenate([batch["chosen_mask"], batch["rejected_mask"]])
    rngs = {"dropout": rng} if rng is not None else {}
    logits = GPT(cfg, dtype, kernels).apply(
        {"params": params}, tokens[:, :-1], deterministic=rng is None, rngs=rngs
    )
    lp = sequence_logprob(logits, tokens[:, 1:], mask[:, 1:], average=average)
    return jnp.split(lp, 2)
