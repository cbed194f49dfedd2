"""The training core: a train state of plain pytrees and pure, jitted train and eval steps.

Shapes: B batch, T tokens, V vocabulary, K gradient-accumulation micro-batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gptjax.config import GPTConfig
from gptjax.model import GPT

IGNORE = -100  # target label that counts for nothing, as in PyTorch's cross_entropy


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: jax.Array  # int32 scalar: updates applied so far
    rng: jax.Array  # base key; step s uses fold_in(rng, s)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup, cosine decay to min_lr_ratio * lr, global-norm clipping."""

    lr: float = 4e-4
    weight_decay: float = 0.1
    warmup_steps: int = 0
    decay_steps: int = 0  # 0: constant lr after warmup
    min_lr_ratio: float = 0.1
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    grad_clip: float | None = 1.0


def lr_schedule(oc: OptimConfig) -> optax.Schedule:
    warmup = optax.linear_schedule(0.0, oc.lr, oc.warmup_steps) if oc.warmup_steps else None
    if oc.decay_steps > oc.warmup_steps:
        decay = optax.cosine_decay_schedule(
            oc.lr, oc.decay_steps - oc.warmup_steps, alpha=oc.min_lr_ratio
        )
    else:
        decay = optax.constant_schedule(oc.lr)
    if warmup is None:
        return decay
    return optax.join_schedules([warmup, decay], [oc.warmup_steps])


def make_optimizer(oc: OptimConfig) -> optax.GradientTransformation:
    """AdamW that decays only >= 2-D weights (matrices and embeddings, not biases or norms)."""
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
    adamw = optax.adamw(
        lr_schedule(oc), b1=oc.b1, b2=oc.b2, eps=oc.eps, weight_decay=oc.weight_decay,
        mask=decay_mask,
    )  # fmt: skip
    clip = [optax.clip_by_global_norm(oc.grad_clip)] if oc.grad_clip else []
    return optax.chain(*clip, adamw)


def init_state(params, optimizer: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32), rng)


def cross_entropy_sum(logits, targets) -> tuple[jax.Array, jax.Array]:
    """logits [B, T, V] float32, targets [B, T] -> (summed loss, count of counted targets)."""
    counted = targets != IGNORE
    safe = jnp.where(counted, targets, 0)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    return jnp.sum(nll * counted), jnp.sum(counted).astype(jnp.float32)


def perplexity(mean_loss: float) -> float:
    """exp(mean token cross entropy): the effective number of equally likely next tokens."""
    return float(jnp.exp(jnp.float32(mean_loss)))


def loss_sum(params, cfg: GPTConfig, batch, rng, *, train: bool, dtype=jnp.float32):
    """(summed token loss, token count) of one batch {"inputs", "targets"}: [B, T] each."""
    rngs = {"dropout": rng} if train else {}
    logits = GPT(cfg, dtype).apply(
        {"params": params}, batch["inputs"], deterministic=not train, rngs=rngs
    )
    return cross_entropy_sum(logits, batch["targets"])


def _grads(params, cfg, batch, rng, grad_accum, dtype):
    """Gradient of the summed loss over K micro-batches, plus the loss sum and token count."""
    grad_fn = jax.value_and_grad(
        lambda p, b, r: loss_sum(p, cfg, b, r, train=True, dtype=dtype), has_aux=True
    )

    def micro(carry, xs):
        k, mb = xs
        (s, n), g = grad_fn(params, mb, jax.random.fold_in(rng, k))
        return jax.tree.map(jnp.add, carry, (g, s, n)), None

    split = lambda x: x.reshape(grad_accum, x.shape[0] // grad_accum, *x.shape[1:])
    zeros = (jax.tree.map(jnp.zeros_like, params), jnp.float32(0), jnp.float32(0))
    micro_batches = jax.tree.map(split, batch)
    (g, s, n), _ = jax.lax.scan(micro, zeros, (jnp.arange(grad_accum), micro_batches))
    return g, s, n


def make_train_step(
    cfg: GPTConfig, optimizer, oc: OptimConfig, *, grad_accum=1, dtype=None, axis_name=None
):
    """train_step(state, batch) -> (state, metrics): one AdamW update on the token-mean loss.

    With grad_accum = K the batch [B, T] is split into K micro-batches of [B/K, T] whose summed
    gradients are divided by the total count of counted tokens, so the update equals that of one
    batch of B. Metrics: loss, grad_norm, lr, tokens (counted tokens in this batch).

    Under `jax.pmap(..., axis_name=axis_name)` each device holds a slice of the batch; the
    summed gradients, losses and counts are `psum`med over devices before the mean, so the
    update equals the single-device one. (Under jit with sharded inputs XLA does this itself.)
    """
    dtype = dtype or jnp.float32
    schedule = lr_schedule(oc)

    def train_step(state: TrainState, batch) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(state.rng, state.step)
        if axis_name is not None:  # distinct dropout masks per device
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
        g, s, n = _grads(state.params, cfg, batch, rng, grad_accum, dtype)
        if axis_name is not None:
            g, s, n = jax.lax.psum((g, s, n), axis_name)
        grads = jax.tree.map(lambda x: x / jnp.maximum(n, 1.0), g)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": s / jnp.maximum(n, 1.0),
            "grad_norm": optax.tree.norm(grads),
            "lr": schedule(state.step),
            "tokens": n,
        }
        return TrainState(params, opt_state, state.step + 1, state.rng), metrics

    return train_step


def make_eval_step(cfg: GPTConfig, *, dtype=None):
    """eval_step(params, batch) -> {"loss_sum", "tokens"} with dropout off."""
    dtype = dtype or jnp.float32

    def eval_step(params, batch) -> dict:
        s, n = loss_sum(params, cfg, batch, None, train=False, dtype=dtype)
        return {"loss_sum": s, "tokens": n}

    return eval_step
