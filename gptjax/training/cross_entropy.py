"""Cross entropy of the language model: whole, or through the output head over slices of T with
the gradients made in the same pass.

The language-model loss ends in logits [B, T, V] float32: 50,257 columns per token, the largest
array of a GPT-2 step. `sliced_cross_entropy_sum` never holds more than one slice of them,
[B, T/K, V']. A backward pass that recomputed each slice's logits would pay a fourth head-sized
matmul; instead, while a slice's logits are at hand, its gradients are made right away (d logits
= softmax - one_hot, from `cross_entropy_sum`'s own VJP, then d x and d head): three matmuls, as
the unsliced loss, and the backward pass only scales them by the incoming cotangent. On CPU the
slices also keep the vocabulary-wide elementwise work in cache (the tiny preset's train step
runs about 1.25x faster in 4 slices).

Shapes: B batch, T tokens, D width, V vocabulary (V' padded to a multiple of 128), K slices.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from gptjax.data import IGNORE
from gptjax.kernels import cpu
from gptjax.model.head import mask_padding, padded_head, padded_vocab, softcap


def target_logprobs(logits, targets) -> jax.Array:
    """logits [..., V], targets [...] -> float32 [...]: the log-probability of each target
    (0 where the target is IGNORE). Every loss and score of a target token goes through here."""
    counted = targets != IGNORE
    safe = jnp.where(counted, targets, 0)
    logits = logits.astype(jnp.float32)
    # The target's logit minus logsumexp, not log_softmax: no second [..., V] array, and its
    # gradient is one softmax (about 1.6x faster forward+backward over GPT-2's 50,257 columns).
    picked = jnp.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
    return jnp.where(counted, picked - jax.nn.logsumexp(logits, axis=-1), 0.0)


def cross_entropy_sum(logits, targets) -> tuple[jax.Array, jax.Array]:
    """logits [..., V], targets [...] -> (summed loss, count of counted targets)."""
    counted = jnp.sum(targets != IGNORE).astype(jnp.float32)
    return -jnp.sum(target_logprobs(logits, targets)), counted


def _slice_pass(x, w, V, targets, dtype, cap, want_dx: bool, want_dw: bool, head: str):
    """One slice: x [B, t, D], w [V', D] (`model.padded_head`) -> (loss sum, count,
    d x [B, t, D] or None, d w [V', D] float32 or None) for a cotangent of 1 on the loss sum.
    `cap`: the logits' soft cap (None: none), inside the VJP so d logits passes through it.
    `head` (`Kernels.head`): a CPU head's weight gradient is the CPU kernel's product."""
    logits = jnp.einsum("btd,vd->btv", x, w, preferred_element_type=jnp.float32)
    loss = lambda z: cross_entropy_sum(mask_padding(softcap(z, cap), V), targets)
    (s, n), back = jax.vjp(loss, logits)
    if not (want_dx or want_dw):
        return s, n, None, None
    d = back((jnp.float32(1), jnp.float32(0)))[0].astype(dtype)  # softmax - one_hot, counted
    dx = jnp.einsum("btv,vd->btd", d, w, preferred_element_type=jnp.float32) if want_dx else None
    weight_grad = cpu.rows_contracted if head.startswith("cpu") else _rows_contracted
    dw = weight_grad(d, x) if want_dw else None  # [V', D]
    return s, n, None if dx is None else dx.astype(x.dtype), dw


def _rows_contracted(a: jax.Array, b: jax.Array) -> jax.Array:
    """a [..., P], b [..., Q] -> a^T b [P, Q] float32, summed over the leading axes."""
    return jnp.einsum("...p,...q->pq", a, b, preferred_element_type=jnp.float32)


def _all_slices(x, head, targets, dtype, slices: int, cap, impl, want_dx=False, want_dw=False):
    """`_slice_pass` over the slices of T in turn (a scan): (loss sum, count, d x, d head)."""
    B, T = x.shape[:2]
    V, w = head.shape[0], padded_head(head, dtype)
    per = lambda a: a.reshape(B, slices, T // slices, *a.shape[2:]).swapaxes(0, 1)

    def body(carry, xt):
        s, n, dx, dw = _slice_pass(xt[0], w, V, xt[1], dtype, cap, want_dx, want_dw, impl)
        carry = (carry[0] + s, carry[1] + n, carry[2] + dw if want_dw else carry[2])
        return carry, dx

    zero = jnp.float32(0)
    dw0 = jnp.zeros(w.shape, jnp.float32) if want_dw else zero
    (s, n, dw), dx = jax.lax.scan(body, (zero, zero, dw0), (per(x), per(targets)))
    dx = dx.swapaxes(0, 1).reshape(x.shape) if want_dx else None
    return s, n, dx, dw[:V].astype(head.dtype) if want_dw else None


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def sliced_cross_entropy_sum(x, head, targets, dtype, slices: int, cap=None, impl="padded"):
    """(summed loss, count of counted targets) of the logits of x [B, T, D] through the output
    head [V, D] (computed in `dtype`, float32 logits over V' columns, soft-capped at `cap`),
    over `slices` slices of T; `impl`: the policy's head (`Kernels.head`). Equals
    `cross_entropy_sum(model.lm_logits(x, head, dtype, padded=True, cap=cap), targets)`."""
    return _all_slices(x, head, targets, dtype, slices, cap, impl)[:2]


def _forward(x, head, targets, dtype, slices, cap, impl):
    # symbolic zeros: each argument comes as (value, perturbed); a frozen head (LoRA) or input
    # gets no gradient computed at all.
    s, n, dx, dw = _all_slices(
        x.value,
        head.value,
        targets.value,
        dtype,
        slices,
        cap,
        impl,
        want_dx=x.perturbed,
        want_dw=head.perturbed,
    )
    return (s, n), (dx, dw)


def _backward(dtype, slices, cap, impl, grads, cotangent):
    dx, dw = grads
    g = cotangent[0]  # the count's cotangent is ignored: it is a count
    if isinstance(g, SymbolicZero):
        return None, None, None
    scale = lambda d: None if d is None else d * g.astype(d.dtype)
    return scale(dx), scale(dw), None


sliced_cross_entropy_sum.defvjp(_forward, _backward, symbolic_zeros=True)


def ce_chunks_for(rows: int, T: int, V: int, D: int, budget: int) -> int:
    """The fewest slices of T (a divisor) whose float32 logits, rows x T/K x V', fit `budget`
    bytes (`Kernels.ce_budget`); `rows` is the batch one device holds at a time (micro-batch /
    data shards).

    The budget is never taken below the head's gradient, V' x D float32: each extra slice adds
    its own into that sum, which costs more than a slice of logits that size saves. The
    policy's budgets, measured on a Xeon: 1 GiB (a memory bound) where whole logits are as
    fast or faster (float32 on a CPU, with its unpadded head: tiny 4 x 128 165 ms whole, 194 in
    4 slices; 16 x 256 1.24 s, 1.40-1.49 s in 2-8; 124M 8 x 256 7.9 s, 8.2 s in 4, and less
    memory); 32 MiB (a cache bound) for bf16 on AMX, where slicing is a speed-up (tiny, B 4 x
    T 128, 125 ms in 4 slices, 140 whole)."""
    Vp = padded_vocab(V)
    fits = max(budget, Vp * D * 4)
    size = rows * T * Vp * 4
    return next((k for k in range(1, T + 1) if T % k == 0 and size / k <= fits), T)
