"""GRPO (Shao et al., 2024), the policy gradient of RL from verifiable rewards: each prompt's
group of sampled completions is scored, each completion's advantage is its reward normalised
within the group (no value model), and the policy follows PPO's clipped objective on the
completion tokens, optionally held near a reference model by a KL penalty.

    A = (r - mean_group(r)) / (std_group(r) + eps)
    loss_t = -min(rho_t A, clip(rho_t, 1 - e, 1 + e_high) A) + beta KL_t
    rho_t = p(y_t) / p_old(y_t)
    KL_t = exp(ref_t - logp_t) - (ref_t - logp_t) - 1          (the k3 estimator, >= 0)

averaged over every completion token of the batch (DAPO's token-level mean; e_high > e is
DAPO's asymmetric clip). A rollout may serve several updates (mu iterations over M minibatches):
p_old is then the sampling policy's, computed once; with one update it is the policy itself.

Shapes: P prompts, G completions per prompt, B = P * G rows, T tokens (prompt + completion).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gptjax.config import GPTConfig
from gptjax.data.corpus import Shuffled
from gptjax.data.lengths import padded_length
from gptjax.model.gpt import GPT
from gptjax.training.cross_entropy import target_logprobs


def group_advantages(rewards: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """rewards [P, G] -> advantages [P, G]: each reward minus its group's mean, over the group's
    standard deviation (population, as GRPO); a group whose rewards are all equal gets 0."""
    rewards = np.asarray(rewards, np.float64)
    mean = rewards.mean(axis=1, keepdims=True)
    std = rewards.std(axis=1, keepdims=True)
    return ((rewards - mean) / (std + eps)).astype(np.float32)


def token_logprobs(
    cfg: GPTConfig, params, tokens, *, dtype=jnp.float32, rng=None, kernels=None
) -> jax.Array:
    """tokens [B, T] -> [B, T-1]: log p(tokens[:, t+1] | tokens[:, :t+1]); dropout with `rng`;
    `kernels`: the policy (`gptjax.kernels`; None: resolved)."""
    rngs = {"dropout": rng} if rng is not None else {}
    logits = GPT(cfg, dtype, kernels).apply(
        {"params": params}, tokens[:, :-1], deterministic=rng is None, rngs=rngs
    )
    return target_logprobs(logits, tokens[:, 1:])


def clipped_loss(
    logp,
    old_logp,
    advantages,
    mask,
    *,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    kl_beta: float = 0.0,
    ref_logp=None,
):
    """logp, old_logp, ref_logp, mask [B, T-1] (mask: the completion's tokens), advantages [B]
    -> (loss summed over the masked tokens, their count, {name: sum over them}) with the
    figures a step logs, each a sum the step divides by the count: `kl` (with `ref_logp`),
    `clip_fraction` (tokens whose ratio was clipped: outside [1 - epsilon, 1 + epsilon_high] on
    the side the advantage pushes it) and `ratio` (the mean probability ratio).

    `old_logp` None: the policy that sampled is this one (one update per rollout), so the
    ratio is exactly 1 and nothing is clipped; the gradient is the plain policy gradient."""
    mask = mask.astype(jnp.float32)
    high = epsilon if epsilon_high is None else epsilon_high
    if old_logp is None:
        old_logp = jax.lax.stop_gradient(logp)
    ratio = jnp.exp(logp - old_logp)
    A = advantages[:, None]
    clipped = jnp.clip(ratio, 1.0 - epsilon, 1.0 + high)
    per_token = -jnp.minimum(ratio * A, clipped * A)
    # TRL's count: the clipped term was the smaller one, so the token's gradient is zero
    was_clipped = ((ratio < 1.0 - epsilon) & (A < 0)) | ((ratio > 1.0 + high) & (A > 0))
    sums = {
        "clip_fraction": jnp.sum(was_clipped * mask),
        "ratio": jnp.sum(jax.lax.stop_gradient(ratio) * mask),
    }
    if ref_logp is not None:
        d = ref_logp - logp
        kl = jnp.exp(d) - d - 1.0
        per_token = per_token + kl_beta * kl
        sums["kl"] = jnp.sum(jax.lax.stop_gradient(kl) * mask)
    return jnp.sum(per_token * mask), jnp.sum(mask), sums


def pack(prompts, completions, pad_id: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of prompt + completion, right-padded to a power-of-two length (at least 16, at most
    `limit`) -> (tokens [B, T] int32, mask [B, T-1] bool: True where the target is a
    completion token)."""
    longest = max(len(p) + len(c) for p, c in zip(prompts, completions, strict=True))
    T = padded_length(longest, limit, least=16)
    tokens = np.full((len(prompts), T), pad_id, np.int32)
    mask = np.zeros((len(prompts), T - 1), bool)
    for b, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        tokens[b, : len(p) + len(c)] = p + c
        mask[b, len(p) - 1 : len(p) + len(c) - 1] = True
    return tokens, mask


class PromptRows(Shuffled):
    """The dataset RL draws from: prompt indices, which a rollout turns into completions."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def batch(self, rows) -> dict[str, np.ndarray]:
        return {"row": np.asarray(rows, np.int32)}
