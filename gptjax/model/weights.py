"""Weight formats for decoding: fp32 (exact), and the narrow bf16 and int8, a scale per output
channel.

Decoding one token reads every weight once, so on a CPU its speed is the memory bandwidth over
the bytes of the weights; fewer bytes per weight is the only way past that floor. `quantize`
turns a parameter tree into a format once, before decoding; the model runs whatever tree it is
given, so generation, the batching engine and the server need no second code path.

A narrow tree keeps OpenAI's names: each Dense `kernel` is stored transposed, [out, in], in the
narrow type beside a new `kernel_scale` [out] (kernel.T ~= narrow x scale, row by row); the
token table `wte/embedding` [V, D] (already [out, in] as the tied head) beside
`embedding_scale` [V]; an untied `lm_head` likewise with `lm_head_scale`. Norms, biases and
`wpe` stay float32. bf16 rows are scaled to a largest entry of 1, which costs bf16 nothing.

The matmul: XLA's CPU backend streams narrow weights through its library kernels only as the
left operand of a dot of two rows or more; a float dot of converted weights reads or
materialises wide ones (on a Xeon, 48 GEMVs of [1, 768] x [768, 3072]: fp32 18 ms; int8
weights converted in the jit 115-168 ms; int8 x int8 at 1 row 118 ms, at 2 rows 7.7 ms with
the weights on the left, 11 ms on the right; bf16 at 2 rows 11.5 ms). So each activation row
goes in as two digits in the weights' type, stacked as two rows of one dot: int8 digits of
16 bits against the row's largest value (exact int32 sums; error <= 1/65278 of that value),
or bf16's high part and remainder (16 significant bits). The quality is that of the narrow
weights alone.

Shapes: K contracted width, N output width, M rows, V vocabulary, D model width.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util
from jax import lax

from gptjax.kernels import cpu

NARROW = {"bf16": jnp.bfloat16, "int8": jnp.int8}
WEIGHTS = ("fp32", *NARROW)
DIGITS = 32639  # largest |x| / step: the high digit (x + 128) >> 8 stays within int8's 127
SCALED = {"kernel": "kernel_scale", "embedding": "embedding_scale", "lm_head": "lm_head_scale"}


def is_narrow(params: dict) -> bool:
    """Whether `params` are in a narrow format (`quantize` left scale leaves in them)."""
    scales = set(SCALED.values())
    return any(path[-1] in scales for path in traverse_util.flatten_dict(params))


def weights_of(params: dict) -> str:
    """The format of `params`: a key of NARROW, or fp32."""
    if not is_narrow(params):
        return "fp32"
    dtypes = {leaf.dtype for leaf in jax.tree.leaves(params)}
    return next(name for name, dtype in NARROW.items() if jnp.dtype(dtype) in dtypes)


def compute_params(params, dtype):
    """`params` with every matrix (>= 2-D) cast to the compute dtype; norms and biases stay
    float32. For decoding, which reads every weight once per token and so is bound by memory
    bandwidth: cast once, not at every step. Narrow params stay as they are."""
    if is_narrow(params):
        return params
    return jax.tree.map(lambda p: p.astype(dtype) if p.ndim >= 2 else p, params)


def narrow(w: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    """w [out, in] float -> (w in `dtype` [out, in], float32 scale [out]), one symmetric scale
    per output channel: w ~= q * scale[:, None]; int8 |q| <= 127, bf16 |q| <= 1."""
    w = w.astype(jnp.float32)
    top = 127.0 if dtype == jnp.int8 else 1.0
    scale = jnp.max(jnp.abs(w), axis=1) / top
    scale = jnp.where(scale > 0, scale, 1.0)  # an all-zero channel stays zero
    q = w / scale[:, None]
    if dtype == jnp.int8:
        q = jnp.clip(jnp.round(q), -127, 127)
    return q.astype(dtype), scale


def decoded_matrix(path: tuple[str, ...]) -> bool:
    """Whether a narrow format takes the leaf at `path`: a Dense kernel (not a classifier's
    `score`), the token table `wte/embedding`, an untied `lm_head`. Not `wpe`: a step gathers
    one row of it."""
    if path[-1] == "kernel":
        return path[-2:-1] != ("score",)
    return path in (("wte", "embedding"), ("lm_head",))


def quantize(params: dict, weights: str) -> dict:
    """`params` in a weight format (`WEIGHTS`): fp32 unchanged; bf16 or int8 every decoded
    matrix (`decoded_matrix`; kernels transposed to [out, in]) with a scale per output channel
    in a leaf beside it. Pure; params already narrow are refused."""
    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; expected one of: {', '.join(WEIGHTS)}")
    if weights == "fp32":
        return params
    if is_narrow(params):
        raise ValueError(f"params are already {weights_of(params)}; quantize fp32 params")
    flat = traverse_util.flatten_dict(params)
    out = dict(flat)
    for path, leaf in flat.items():
        if decoded_matrix(path) and jnp.ndim(leaf) == 2:
            w = leaf.T if path[-1] == "kernel" else leaf
            out[path], out[(*path[:-1], SCALED[path[-1]])] = narrow(w, NARROW[weights])
    return traverse_util.unflatten_dict(out)


def digits(x: jax.Array, dtype) -> tuple[jax.Array, float, jax.Array]:
    """x [M, K] float32 -> (two digits per row stacked [2M, K] in `dtype`, the weight of the
    high digit relative to the low one, the rows' step [M, 1]): x ~= (high w + low) step."""
    if dtype == jnp.int8:
        step = jnp.max(jnp.abs(x), axis=-1, keepdims=True) / DIGITS
        step = jnp.where(step > 0, step, 1.0)
        xi = jnp.round(x / step).astype(jnp.int32)
        high = (xi + 128) >> 8  # floor: the low digit xi - 256 high is in [-128, 127]
        return jnp.concatenate([high, xi - (high << 8)]).astype(dtype), 256.0, step
    high = x.astype(dtype)
    low = (x - high.astype(jnp.float32)).astype(dtype)
    return jnp.concatenate([high, low]), 1.0, jnp.ones_like(x[:, :1])


def narrow_matmul(x: jax.Array, q: jax.Array, scale: jax.Array) -> jax.Array:
    """x [..., K] float times the narrow matrix q [N, K] (output channel first) scaled per
    channel by scale [N] -> [..., N] float32."""
    lead, K = x.shape[:-1], x.shape[-1]
    x = x.reshape(-1, K).astype(jnp.float32)  # [M, K]
    M = x.shape[0]
    d, weight, step = digits(x, q.dtype)
    exact = jnp.int32 if q.dtype == jnp.int8 else jnp.float32
    # The weights as the left operand: the library kernel then streams them in place.
    y = lax.dot_general(q, d, (((1,), (1,)), ((), ())), preferred_element_type=exact)
    y = y.astype(jnp.float32)  # [N, 2M]
    y = (y[:, :M] * weight + y[:, M:]).T * step * scale  # [M, N]
    return y.reshape(*lead, -1)


class Dense(nn.Dense):
    """`nn.Dense` (same parameters, same float math) that also runs a narrow kernel with its
    `kernel_scale`, as `quantize` leaves them, and the policy's dense kernel (`impl`, a
    `Kernels.dense`). One `__call__` (not one that calls `nn.Dense.__call__`), so a method
    interceptor sees each layer once."""

    impl: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.has_variable("params", "kernel_scale"):
            kernel, scale = (self.get_variable("params", n) for n in ("kernel", "kernel_scale"))
            y = narrow_matmul(x, kernel, scale).astype(self.dtype or x.dtype)
            bias = self.get_variable("params", "bias") if self.use_bias else None
        else:
            shape = (x.shape[-1], self.features)
            kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
            bias = None
            if self.use_bias:
                bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.impl == "cpu-bf16":  # every dot on an AMX CPU's bf16 kernel
                return cpu.dense(x.astype(self.dtype), kernel, bias)
            x, kernel, bias = self.promote_dtype(x, kernel, bias, dtype=self.dtype)
            dims = (((x.ndim - 1,), (0,)), ((), ()))
            y = lax.dot_general(x, kernel, dims, precision=self.precision)
        return y if bias is None else y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))


class Embed(nn.Embed):
    """`nn.Embed` that also looks rows up in a narrow table with its `embedding_scale`."""

    @property
    def scale(self) -> jax.Array | None:
        """The per-row scale [V] of a narrow table, else None."""
        return self.get_variable("params", "embedding_scale")

    def __call__(self, tokens: jax.Array) -> jax.Array:
        scale = self.scale
        if scale is None:  # rows taken, then cast: casting the table would read all of it
            (rows,) = self.promote_dtype(
                jnp.take(self.embedding, tokens, axis=0), dtype=self.dtype, inexact=False
            )
            return rows
        rows = jnp.take(self.embedding, tokens, axis=0).astype(jnp.float32)
        return (rows * jnp.take(scale, tokens, axis=0)[..., None]).astype(self.dtype)
