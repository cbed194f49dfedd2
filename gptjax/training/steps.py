"""The training core: a train state of plain pytrees and pure, jitted train and eval steps.

Shapes: B batch, T tokens, V vocabulary, K gradient-accumulation micro-batches.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from gptjax.config import GPTConfig
from gptjax.data.tokenizer import EOT_ID
from gptjax.kernels import Kernels, resolve
from gptjax.model.gpt import GPT
from gptjax.model.params import output_head
from gptjax.training.cross_entropy import cross_entropy_sum, sliced_cross_entropy_sum

# loss_fn(params, batch, rng, train) -> (summed loss, count of what was summed)
# (params, batch, rng, train) -> (loss sum, count) or (loss sum, count, {name: sum}): the sums
# (named to make_train_step) are figures the step logs, each divided by the count as the loss is
# (RL's KL, clip fraction)
LossFn = Callable[[Any, dict, Any, bool], tuple]


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: jax.Array  # int32 scalar: updates applied so far
    rng: jax.Array  # base key; step s uses fold_in(rng, s)


OPTIMIZERS = ("adamw", "muon")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup, cosine decay to min_lr_ratio * lr, global-norm clipping.

    `optimizer="muon"`: Muon (optax.contrib.muon) on the blocks' 2-D matrices at `muon_lr`
    with Nesterov momentum `muon_momentum`, AdamW at `lr` on everything else; both follow the
    same warmup and decay."""

    lr: float = 4e-4
    weight_decay: float = 0.1
    warmup_steps: int = 0
    decay_steps: int = 0  # 0: constant lr after warmup
    min_lr_ratio: float = 0.1
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    grad_clip: float | None = 1.0
    optimizer: str = "adamw"
    muon_lr: float = 0.02
    muon_momentum: float = 0.95

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; expected one of: {', '.join(OPTIMIZERS)}"
            )


def lr_schedule(oc: OptimConfig) -> optax.Schedule:
    """lr after `count` updates: warmup step s (from 1) trains at lr * s / warmup, so the first
    step is not wasted at 0 (build-nanogpt's `it + 1`); then cosine decay to min_lr_ratio * lr
    at decay_steps (or constant lr). optax's own schedules, joined."""
    W = oc.warmup_steps
    if oc.decay_steps > W:
        decay = optax.cosine_decay_schedule(oc.lr, oc.decay_steps - W, alpha=oc.min_lr_ratio)
    else:
        decay = optax.constant_schedule(oc.lr)
    if not W:
        return decay
    warmup = optax.linear_schedule(oc.lr / W, oc.lr, W - 1)  # lr / W at count 0, lr at W - 1
    return optax.join_schedules([warmup, decay], [W])


def make_optimizer(oc: OptimConfig) -> optax.GradientTransformation:
    """AdamW that decays only >= 2-D weights (matrices and embeddings, not biases or norms);
    with `oc.optimizer == "muon"`, optax's Muon on the hidden matrices (`muon_labels`) and that
    AdamW on the rest, split by `optax.partition`."""
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
    adamw = optax.adamw(
        lr_schedule(oc),
        b1=oc.b1,
        b2=oc.b2,
        eps=oc.eps,
        weight_decay=oc.weight_decay,
        mask=decay_mask,
    )
    clip = [clip_by_global_norm(oc.grad_clip)] if oc.grad_clip else []
    if oc.optimizer == "adamw":
        return optax.chain(*clip, adamw)
    muon = optax.contrib.muon(
        lr_schedule(dataclasses.replace(oc, lr=oc.muon_lr)),
        beta=oc.muon_momentum,
        weight_decay=oc.weight_decay,
    )
    return optax.chain(*clip, optax.partition({"muon": muon, "adamw": adamw}, muon_labels))


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformationExtraArgs:
    """optax's clip_by_global_norm as one scalar factor, min(1, max_norm / norm), that XLA
    folds into Adam's passes over each gradient (optax's select of two tensors, and a division,
    each cost a pass of their own on CPU). `update(..., grad_norm=)` takes a norm the caller
    already has (the train step's, from the summed gradients, so their mean is never written
    out); without it the norm of `updates`."""

    def update(updates, state, params=None, *, grad_norm=None, **extra_args):
        norm = optax.tree.norm(updates) if grad_norm is None else grad_norm
        factor = jnp.minimum(1.0, max_norm / norm)
        return jax.tree.map(lambda t: t * factor.astype(t.dtype), updates), state

    return optax.GradientTransformationExtraArgs(optax.init_empty_state, update)


def muon_labels(params) -> Any:
    """Each leaf's optimizer: Muon for the 2-D matrices inside the blocks (`h_*` anywhere on the
    path: attention, MLP, and their LoRA factors under `lora/`), AdamW for embeddings, the
    output head, a classifier's score, norms and biases, which Muon's orthogonalised updates do
    not suit (Jordan et al., 2024)."""

    def label(path, p):
        block = any(str(getattr(k, "key", "")).startswith("h_") for k in path)
        return "muon" if p.ndim == 2 and block else "adamw"

    return jax.tree_util.tree_map_with_path(label, params)


Trainable = Callable[[str], bool]  # "h_11/attn/c_attn/kernel" -> does this leaf train?


def split(params: dict, trainable: Trainable | None) -> tuple[dict, dict]:
    """(trained, frozen): two nested dicts holding the leaves whose "a/b/c" path does / does not
    satisfy `trainable` (None: everything trains). Empty branches are left out of both."""
    if trainable is None:
        return params, {}
    flat = traverse_util.flatten_dict(params, sep="/")
    trained = {path: leaf for path, leaf in flat.items() if trainable(path)}
    frozen = {path: leaf for path, leaf in flat.items() if path not in trained}
    return tuple(traverse_util.unflatten_dict(t, sep="/") for t in (trained, frozen))


def join(a: dict, b: dict) -> dict:
    """The union of two nested dicts with disjoint leaves (the inverse of `split`)."""
    flat = traverse_util.flatten_dict(a) | traverse_util.flatten_dict(b)
    return traverse_util.unflatten_dict(flat)


def init_state(
    params, optimizer: optax.GradientTransformation, rng: jax.Array, trainable=None
) -> TrainState:
    """Step 0: the optimizer state covers only the trainable leaves of `params`."""
    trained, _ = split(params, trainable)
    return TrainState(params, optimizer.init(trained), jnp.zeros((), jnp.int32), rng)


def perplexity(mean_loss: float) -> float:
    """exp(mean token cross entropy): the effective number of equally likely next tokens."""
    return float(jnp.exp(jnp.float32(mean_loss)))


def loss_sum(
    params,
    cfg: GPTConfig,
    batch,
    rng,
    *,
    train: bool,
    dtype=jnp.float32,
    ce_chunks: int = 1,
    doc_mask: bool = False,
    eot: int = EOT_ID,
    kernels: Kernels | None = None,
    remat: str = "none",
):
    """(summed token loss, token count) of one batch {"inputs", "targets"}: [B, T] each.
    `ce_chunks`, `doc_mask`, `kernels`, `remat`: see `lm_loss`; `eot`: the tokenizer's
    <|endoftext|> (documents' boundaries for `doc_mask`)."""
    T = batch["inputs"].shape[1]
    if T % ce_chunks:
        raise ValueError(f"ce_chunks {ce_chunks} must divide the sequence length {T}")
    kernels = kernels or resolve(dtype=dtype)
    model = GPT(cfg, dtype, kernels, remat, padded_logits=True)
    rngs = {"dropout": rng} if train else {}
    segments = documents(batch["inputs"], eot) if doc_mask else None
    run = lambda head: model.apply(
        {"params": params},
        batch["inputs"],
        deterministic=not train,
        rngs=rngs,
        head=head,
        segments=segments,
    )
    if ce_chunks == 1:
        return cross_entropy_sum(run(True), batch["targets"])
    head = output_head(cfg, params)
    return sliced_cross_entropy_sum(
        run(False), head, batch["targets"], dtype, ce_chunks, cfg.logit_softcap, kernels.head
    )


def documents(tokens: jax.Array, eot: int = EOT_ID) -> jax.Array:
    """tokens [B, T] -> segments [B, T] int32: the number of `<|endoftext|>` tokens up to and
    including each position. Each `<|endoftext|>` opens a segment, as the speedrun's BOS does:
    it predicts the next document's first token from nothing earlier, and that document's
    tokens all see it. Computed on the device from the tokens: no mask travels with the batch."""
    return jnp.cumsum(tokens == eot, axis=1, dtype=jnp.int32)


def lm_loss(cfg: GPTConfig, dtype=None, **compute) -> LossFn:
    """The language-model loss of `cfg` as a LossFn for `make_train_step`. `compute` (all
    optional, none changes the result beyond rounding): `kernels` (what runs at each hot spot,
    a `gptjax.kernels.Kernels`; None: resolved for `dtype`), `remat` (a key of `model.REMAT`),
    `ce_chunks` (slices of T the cross entropy is computed in, see
    `cross_entropy.sliced_cross_entropy_sum`). `doc_mask`
    (which does change it): each token attends only within its own document (`documents`)."""
    dtype = dtype or jnp.float32
    return lambda params, batch, rng, train: loss_sum(
        params, cfg, batch, rng, train=train, dtype=dtype, **compute
    )


def _grads(trained, frozen, loss_fn: LossFn, batch, rng, grad_accum, sums=()):
    """Gradient of the summed loss w.r.t. `trained` over K micro-batches, plus the loss sum,
    count and the loss's other sums (those named in `sums`). `frozen` enters as a constant,
    so XLA computes no backward pass below the lowest trainable layer."""

    def summed(t, b, r):
        s, n, *more = loss_fn(join(t, frozen), b, r, True)
        return s, (n, more[0] if more else {})

    grad_fn = jax.value_and_grad(summed, has_aux=True)

    def micro(carry, xs):
        k, mb = xs
        (s, (n, extra)), g = grad_fn(trained, mb, jax.random.fold_in(rng, k))
        return jax.tree.map(jnp.add, carry, (g, s, n, extra)), None

    split_k = lambda x: x.reshape(grad_accum, x.shape[0] // grad_accum, *x.shape[1:])
    zero = jnp.float32(0)
    zeros = (jax.tree.map(jnp.zeros_like, trained), zero, zero, dict.fromkeys(sums, zero))
    micro_batches = jax.tree.map(split_k, batch)
    (g, s, n, extra), _ = jax.lax.scan(micro, zeros, (jnp.arange(grad_accum), micro_batches))
    return g, s, n, extra


def make_train_step(
    loss_fn: LossFn,
    optimizer,
    oc: OptimConfig,
    *,
    grad_accum=1,
    axis_name=None,
    trainable=None,
    sums: tuple[str, ...] = (),
):
    """train_step(state, batch) -> (state, metrics): one AdamW update on the mean loss.

    `loss_fn(params, batch, rng, train) -> (loss_sum, count)` (e.g. `lm_loss(cfg)`); the update
    follows loss_sum / count. With `trainable` (a path predicate, see `split`) only those leaves
    get gradients and updates; the others pass through bit for bit. With grad_accum = K the
    batch [B, ...] is split into K micro-batches of B/K whose summed gradients are divided by
    the total count, so the update equals that of one batch of B. Metrics: loss, grad_norm, lr,
    tokens (the count in this batch), and each of the loss's other sums named in `sums` (a
    loss_fn returning (sum, count, {name: sum})) over the count.

    Under `jax.pmap(..., axis_name=axis_name)` each device holds a slice of the batch; the
    summed gradients, losses and counts are `psum`med over devices before the mean, so the
    update equals the single-device one. (Under jit with sharded inputs XLA does this itself.)
    """
    schedule = lr_schedule(oc)
    optimizer = optax.with_extra_args_support(optimizer)  # it is given the grad norm

    def train_step(state: TrainState, batch) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(state.rng, state.step)
        if axis_name is not None:  # distinct dropout masks per device
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
        trained, frozen = split(state.params, trainable)
        g, s, n, extra = _grads(trained, frozen, loss_fn, batch, rng, grad_accum, sums)
        if axis_name is not None:
            g, s, n, extra = jax.lax.psum((g, s, n, extra), axis_name)
        # products by one scalar, not divisions: XLA fuses them into the optimizer's passes
        inv = 1.0 / jnp.maximum(n, 1.0)
        grads = jax.tree.map(lambda x: x * inv, g)
        grad_norm = optax.tree.norm(g) * inv
        updates, opt_state = optimizer.update(grads, state.opt_state, trained, grad_norm=grad_norm)
        params = join(optax.apply_updates(trained, updates), frozen)
        metrics = {
            "loss": s * inv,
            "grad_norm": grad_norm,
            "lr": schedule(state.step),
            "tokens": n,
        } | {k: v * inv for k, v in extra.items()}
        return TrainState(params, opt_state, state.step + 1, state.rng), metrics

    return train_step


def make_eval_step(cfg: GPTConfig, *, dtype=None, token_bytes=None, **compute):
    """eval_step(params, batch) -> {"loss" (summed), "tokens"} with dropout off (`compute`: see
    `lm_loss`). With `token_bytes` (int [V]: each token's bytes of text, 0 for special tokens)
    also "bytes_per_token", the targets' bytes (summed: divided by "tokens" it is the mean), for
    bits per byte (`bits_per_byte`)."""
    dtype = dtype or jnp.float32
    table = None if token_bytes is None else jnp.asarray(token_bytes, jnp.float32)

    def eval_step(params, batch) -> dict:
        s, n = loss_sum(params, cfg, batch, None, train=False, dtype=dtype, **compute)
        out = {"loss": s, "tokens": n}
        if table is not None:
            t = batch["targets"]
            real = (t >= 0) & (t < table.shape[0])
            out["bytes_per_token"] = jnp.sum(jnp.where(real, table[jnp.where(real, t, 0)], 0.0))
        return out

    return eval_step


def bits_per_byte(mean_loss: float, bytes_per_token: float) -> float:
    """Validation bits per byte: the nats of every target (document ends included) over the
    bytes of text they stand for, in bits. Unlike the loss per token it does not depend on the
    tokenizer, so runs with different tokenizers compare."""
    return float(mean_loss / math.log(2) / max(bytes_per_token, 1e-9))
