"""CPU kernels: bfloat16 layers for CPUs with AMX (every dot of the step on XLA's bf16 kernel,
float32 weight gradients), and the float32 head's cheaper weight gradient. `policy.Kernels`
chooses them ("cpu-bf16", "cpu", "cpu-padded"); each has the interface of the plain XLA version
it replaces (`weights.Dense`, `head.lm_logits`, attention's reference einsums).

XLA's CPU backend (jaxlib 0.10.2) hands a bf16 dot to its library kernel, which uses AMX where
the chip has it, only when the result is float32 and the left operand is not contracted over
its leading axis, in memory; any other dot is converted to float32 and run there. Measured on a
Xeon with AMX, [512, 768] x [768, 3072]: float32 8.4 ms; bf16 with a float32 result 1.6 ms,
with a bf16 result 8.7 ms; the weight gradient x^T dy 10.2 ms, 1.7 ms with x's rows written
out transposed first (`_rows_first`). Autodiff of a bf16 layer gives bf16 results, float32
cotangents against bf16 weights and x^T dy, so every dot of a bf16 step ran in float32.

Here one custom VJP holds a whole layer: the float32 weights are cast (and a head padded)
inside, the forward and input-gradient dots ask for float32 results, the cotangent is cast to
bf16 before its dots, and the weight and bias gradients come back in the weights' own dtype,
unrounded. The bias is added in float32 and its gradient summed in float32 (a bf16 bias
gradient became a reduce-window XLA ran at 5 ms per [512, 3072] instead of 0.3 ms).

`attention` does the same for softmax(q k^T / sqrt(H)) v: XLA's bf16 kernel takes a batched
dot with one batch axis over operands it can read in place, so the heads are laid out as
G = B * N groups [G, T, H] and the backward pass writes out the transposes its dots contract.
Measured on the Xeon, B 4, T 128, N 12, H 64: forward and backward 7.8 ms in the reference
einsums (all float32 dots), 3.3 ms here.

`head` also serves float32 on any CPU (the policy's head "cpu"), unpadded: there autodiff's
weight gradient dlogits^T x had XLA write out dlogits [M, V] transposed, and `rows_contracted`
computes (x^T dlogits)^T instead, writing out x [M, K].

Shapes: M rows, K contracted width, N output width, V head rows; in `attention` B batch,
T queries, S keys, N heads, H head width, G = B * N.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax


def _dot(a, b, contract: tuple[int, int]) -> jax.Array:
    """a and b contracted over one axis each -> float32: 2-D, or 3-D batched over their leading
    axis G."""
    batch = ((0,), (0,)) if a.ndim == 3 else ((), ())
    dims = (((contract[0],), (contract[1],)), batch)
    return lax.dot_general(a, b, dims, preferred_element_type=jnp.float32)


def _rows_first(a: jax.Array) -> jax.Array:
    """a [..., M, C] with its last two axes swapped, [..., C, M], in memory. A plain transpose
    only relabels the layout, and XLA then hands the dot that contracts M to its float32 loop;
    a unit axis added behind a barrier makes XLA write the transposed rows out (and leaves M
    whole, so a batch sharded over M stays sharded)."""
    return lax.optimization_barrier(jnp.swapaxes(a, -1, -2)[..., None])[..., 0]


def rows_contracted(a: jax.Array, b: jax.Array) -> jax.Array:
    """a [..., P] and b [..., Q] with the same leading axes -> a^T b [P, Q] float32, summed
    over all of them: a weight gradient. In bf16 (AMX) the rows of a are written out
    transposed first, so the dot runs on the bf16 kernel (`_rows_first`). In float32 XLA
    writes out the left operand transposed: where a is the wider (a head's [M, V] against
    [M, D]) the product is b^T a, transposed after, so [D, M] is written instead of [V, M]
    (a 124M head's weight gradient: 31 ms less)."""
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    if a.dtype == jnp.bfloat16:
        return _dot(_rows_first(a), b, (1, 0))
    if a.shape[1] > b.shape[1]:
        return _dot(b, a, (0, 0)).T
    return _dot(a, b, (0, 0))


def _weights(w: jax.Array, dtype, pad: int | None) -> jax.Array:
    """w in the compute dtype; a head [V, K] with `pad` zero rows after (None: a kernel)."""
    w = w.astype(dtype)
    return jnp.pad(w, ((0, pad), (0, 0))) if pad else w


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _layer(x, w, b, pad, out_dtype, grad_dtypes):
    """x [M, K] times w (pad None: a kernel [K, N]; else a head [V, K] and `pad` zero rows,
    N = V + pad) plus b [N] or None -> [M, N] in out_dtype; grad_dtypes: those of w and b."""
    return _forward(x, w, b, pad, out_dtype, grad_dtypes)[0]


def _forward(x, w, b, pad, out_dtype, grad_dtypes):
    wc = _weights(w, x.dtype, pad)
    y = _dot(x, wc, (1, 0 if pad is None else 1))  # [M, N] float32
    if b is not None:
        y = y + b.astype(jnp.float32)
    return y.astype(out_dtype), (x, wc)


def _backward(pad, out_dtype, grad_dtypes, saved, ct):
    (x, wc), (w_dtype, b_dtype) = saved, grad_dtypes
    db = None if b_dtype is None else ct.astype(jnp.float32).sum(0).astype(b_dtype)
    ct = ct.astype(x.dtype)  # [M, N]
    if pad is None:  # wc [K, N]
        dx = _dot(ct, wc, (1, 1))
        dw = rows_contracted(x, ct)  # [K, N]
    else:  # wc [V + pad, K]
        dx = _dot(ct, wc, (1, 0))
        dw = rows_contracted(ct, x)[: wc.shape[0] - pad]  # [V, K]
    return dx.astype(x.dtype), dw.astype(w_dtype), db


_layer.defvjp(_forward, _backward)


def _rows(f, x: jax.Array, *args) -> jax.Array:
    """f over x [..., K] with the leading axes flattened into M and restored."""
    y = f(x.reshape(-1, x.shape[-1]), *args)
    return y.reshape(*x.shape[:-1], y.shape[-1])


def dense(x: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
    """x [..., K] bf16 times kernel [K, N] plus bias [N] -> [..., N] bf16, summed in float32.
    kernel and bias stay in their own dtype (float32 params) and get gradients in it."""
    dtypes = (kernel.dtype, None if bias is None else bias.dtype)
    return _rows(lambda x: _layer(x, kernel, bias, None, x.dtype, dtypes), x)


def head(x: jax.Array, w: jax.Array, padded_rows: int) -> jax.Array:
    """x [..., K] bf16 times an output head w [V, K] padded with `padded_rows` zero rows ->
    float32 logits [..., V + padded_rows]; w's gradient [V, K] in w's own dtype."""
    return _rows(lambda x: _layer(x, w, None, padded_rows, jnp.float32, (w.dtype, None)), x)


def _groups(x: jax.Array) -> jax.Array:
    """x [B, T, N, H] -> [G, T, H]."""
    B, T, N, H = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B * N, T, H)


def _ungroups(x: jax.Array, B: int) -> jax.Array:
    """x [G, T, H] -> [B, T, N, H]."""
    G, T, H = x.shape
    return x.reshape(B, G // B, T, H).transpose(0, 2, 1, 3)


def _group_mask(mask: jax.Array, B: int, N: int) -> jax.Array:
    """mask [T, S] or broadcastable to [B, N, T, S] -> [1, T, S] or [G, T, S]."""
    if mask.ndim == 2:
        return mask[None]
    return jnp.broadcast_to(mask, (B, N, *mask.shape[-2:])).reshape(B * N, *mask.shape[-2:])


@jax.custom_vjp
def attention(q, k, v, mask):
    """softmax(q k^T / sqrt(H), where mask) v for q [B, T, N, H] and k, v [B, S, N, H] in bf16,
    mask bool [T, S] or broadcastable to [B, N, T, S] -> [B, T, N, H] bf16: the reference
    einsums' values (float32 scores and softmax, the weights rounded to bf16 before the
    product), every dot of the forward and backward pass on the bf16 kernel."""
    return _attention_forward(q, k, v, mask)[0]


def _attention_forward(q, k, v, mask):
    B, N, H = q.shape[0], q.shape[2], q.shape[3]
    qg, kg, vg = _groups(q), _groups(k), _groups(v)
    scores = _dot(qg, kg, (2, 2)) / jnp.sqrt(jnp.float32(H))  # [G, T, S]
    mask = _group_mask(mask, B, N)
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    p = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
    out = _dot(p, vg, (2, 1)).astype(q.dtype)  # [G, T, H]
    return _ungroups(out, B), (qg, kg, vg, p, out, mask)


def _attention_backward(saved, d_out):
    qg, kg, vg, p, out, mask = saved
    B, dtype = d_out.shape[0], qg.dtype
    d_out = _groups(d_out.astype(dtype))
    dv = _dot(_rows_first(p), d_out, (2, 1))  # [G, S, H]
    dp = _dot(d_out, vg, (2, 2))  # [G, T, S]
    rows = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), -1, keepdims=True)
    ds = p.astype(jnp.float32) * (dp - rows) / jnp.sqrt(jnp.float32(qg.shape[-1]))
    # a row that sees no key has uniform weights but, as in the reference, no score gradient
    ds = jnp.where(mask, ds, 0.0).astype(dtype)
    dq = _dot(ds, kg, (2, 1))
    dk = _dot(_rows_first(ds), qg, (2, 1))
    back = lambda g: _ungroups(g, B).astype(dtype)
    return back(dq), back(dk), back(dv), None


attention.defvjp(_attention_forward, _attention_backward)
