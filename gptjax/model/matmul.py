"""bfloat16 matmuls that stay on XLA's CPU bf16 kernels in the backward pass too.

XLA's CPU backend (jaxlib 0.10.2) hands a bf16 dot to its library kernel, which uses AMX where
the chip has it, only when the result is float32 and neither operand is contracted over its
leading axis; any other dot is converted to float32 and run there. Measured on a Xeon with AMX,
[512, 768] x [768, 3072]: float32 8.4 ms; bf16 with a float32 result 1.6 ms, with a bf16 result
8.7 ms; the weight gradient (x^T dy, contracting the rows) 10.2 ms either way. Autodiff of a
bf16 layer gives bf16 results, and float32 cotangents against bf16 weights, so every dot of a
bf16 step ran in float32. `matmul` asks for a float32 result and rounds after, and its VJP casts
the cotangent to bf16 first, so the forward and input-gradient dots run on the bf16 kernel (the
values are those of the plain dots: XLA's CPU sums bf16 products in float32 either way); the
weight gradient stays where XLA puts it.

Shapes: M rows, K contracted width, N output width.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from gptjax.accelerator import cpu_flags


def wanted(x: jax.Array, w: jax.Array) -> bool:
    """Whether x times w should go through `matmul`: both bfloat16, compiled for a CPU with
    AMX (measured there; a CPU without it keeps the plain dots)."""
    if x.dtype != jnp.bfloat16 or w.dtype != jnp.bfloat16 or jax.default_backend() != "cpu":
        return False
    return "amx_bf16" in cpu_flags()


def _dot(a, b, contract: tuple[int, int]) -> jax.Array:
    dims = (((contract[0],), (contract[1],)), ((), ()))
    return lax.dot_general(a, b, dims, preferred_element_type=jnp.float32)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def matmul(x: jax.Array, w: jax.Array, w_rows_out: bool, out_dtype) -> jax.Array:
    """x [M, K] times w -> [M, N] in `out_dtype`, summed in float32. w is [K, N], or [N, K]
    with `w_rows_out` (an output head [V, D])."""
    return _dot(x, w, (1, 1 if w_rows_out else 0)).astype(out_dtype)


def _forward(x, w, w_rows_out, out_dtype):
    return matmul(x, w, w_rows_out, out_dtype), (x, w)


def _backward(w_rows_out, out_dtype, saved, ct):
    x, w = saved
    ct = ct.astype(x.dtype)  # [M, N]
    dx = _dot(ct, w, (1, 0 if w_rows_out else 1))  # [M, K]
    dw = _dot(ct, x, (0, 0)) if w_rows_out else _dot(x, ct, (0, 0))  # [N, K] or [K, N]
    return dx.astype(x.dtype), dw.astype(w.dtype)


matmul.defvjp(_forward, _backward)


def rows_times(x: jax.Array, w: jax.Array, w_rows_out: bool, out_dtype) -> jax.Array:
    """`matmul` over x [..., K]: the leading axes flattened into M and restored."""
    y = matmul(x.reshape(-1, x.shape[-1]), w, w_rows_out, out_dtype)
    return y.reshape(*x.shape[:-1], y.shape[-1])
