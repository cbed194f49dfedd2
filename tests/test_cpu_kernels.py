"""The CPU kernels (`gptjax.kernels.cpu`): bf16 layers and attention for AMX CPUs give the values
and gradients of the plain layers and the reference einsums, float32 weight gradients, and a
batch sharded over devices stays sharded through them. (The whole model under every policy:
tests/test_kernels.py.)"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax.kernels import cpu
from gptjax.model.attention import causal_mask, masked_softmax
from tests.conftest import ROOT

BF16 = jnp.bfloat16


def exact_bf16(key, shape) -> jax.Array:
    """float32 values that bf16 holds exactly: products of two are exact in float32."""
    return jax.random.normal(key, shape).astype(BF16).astype(jnp.float32)


def grads(f, probe, *args):
    return jax.grad(lambda *a: jnp.sum(f(*a).astype(jnp.float32) * probe), range(len(args)))(*args)


def test_dense_and_its_gradients_equal_the_plain_layer():
    k = jax.random.split(jax.random.key(0), 4)
    x, kernel = exact_bf16(k[0], (2, 3, 16)), exact_bf16(k[1], (16, 24))
    bias, probe = exact_bf16(k[2], (24,)), exact_bf16(k[3], (2, 3, 24))
    plain = lambda x, w, b: x @ w + b  # float32 on bf16-exact values
    ours = lambda x, w, b: cpu.dense(x.astype(BF16), w, b)
    y = ours(x, kernel, bias)
    assert y.dtype == BF16 and y.shape == (2, 3, 24)
    # the float32 sum plus the bias, rounded once
    np.testing.assert_array_equal(y, plain(x, kernel, bias).astype(BF16))
    dx, dw, db = grads(ours, probe, x, kernel, bias)
    rx, rw, rb = grads(plain, probe, x, kernel, bias)
    # weight and bias gradients in the params' float32, unrounded
    assert dw.dtype == db.dtype == jnp.float32
    np.testing.assert_allclose(dw, rw, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(db, rb, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dx, rx.astype(BF16).astype(jnp.float32), rtol=1e-2, atol=1e-2)
    _, dw = grads(lambda x, w: cpu.dense(x.astype(BF16), w, None), probe, x, kernel)
    np.testing.assert_allclose(dw, rw, rtol=1e-6, atol=1e-6)  # no bias: the same kernel's


@pytest.mark.parametrize("pad", [0, 4])
def test_head_pads_with_zero_columns_and_returns_the_heads_gradient(pad):
    k = jax.random.split(jax.random.key(1), 3)
    x, head = exact_bf16(k[0], (2, 3, 16)), exact_bf16(k[1], (20, 16))
    probe = exact_bf16(k[2], (2, 3, 20 + pad))
    logits = cpu.head(x.astype(BF16), head, pad)
    assert logits.dtype == jnp.float32 and logits.shape == (2, 3, 20 + pad)
    np.testing.assert_allclose(logits[..., :20], x @ head.T, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(logits[..., 20:], 0.0)
    dx, dh = grads(lambda x, h: cpu.head(x.astype(BF16), h, pad), probe, x, head)
    rx, rh = grads(lambda x, h: x @ h.T, probe[..., :20], x, head)
    assert dh.dtype == jnp.float32 and dh.shape == head.shape
    np.testing.assert_allclose(dh, rh, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dx, rx.astype(BF16).astype(jnp.float32), rtol=1e-2, atol=1e-2)


def reference_attention(q, k, v, mask):
    """The model's reference einsums (attention.MultiHeadAttention) on bf16 q, k, v."""
    scores = jnp.einsum("btnh,bsnh->bnts", q, k, preferred_element_type=jnp.float32)
    weights = masked_softmax(scores / jnp.sqrt(q.shape[-1]).astype(jnp.float32), mask)
    return jnp.einsum("bnts,bsnh->btnh", weights.astype(BF16), v)


@pytest.mark.parametrize("masking", ["causal", "offset", "keys"])
def test_attention_and_its_gradients_equal_the_reference_einsums(masking):
    """Causal self-attention, a query block at an offset into longer keys (a prefill after a
    cache), and a per-row key mask [B, 1, T, S] with one row hiding every key."""
    B, T, S, N, H = 2, 5, 8 if masking == "offset" else 5, 3, 4
    k = jax.random.split(jax.random.key(2), 4)
    q, kk, v = (exact_bf16(k[i], (B, n, N, H)).astype(BF16) for i, n in enumerate((T, S, S)))
    probe = exact_bf16(k[3], (B, T, N, H))
    mask = causal_mask(T, S, S - T)
    if masking == "keys":
        keys = jnp.arange(S) < jnp.array([[3], [0]])  # row 1 sees no key at all
        mask = mask & keys[:, None, None, :]
    ours = lambda q, k, v: cpu.attention(q, k, v, mask)
    plain = lambda q, k, v: reference_attention(q, k, v, mask)
    y = ours(q, kk, v)
    assert y.dtype == BF16 and y.shape == (B, T, N, H)
    np.testing.assert_array_equal(y, plain(q, kk, v))
    for a, b in zip(grads(ours, probe, q, kk, v), grads(plain, probe, q, kk, v), strict=True):
        assert a.dtype == BF16
        a, b = a.astype(jnp.float32), b.astype(jnp.float32)
        np.testing.assert_allclose(a, b, atol=0.02 * float(jnp.abs(b).max()) + 1e-6)


SHARDED = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from gptjax import init_params
from gptjax.config import GPTConfig
from gptjax.kernels import Kernels
from gptjax.training.steps import lm_loss
amx = Kernels(dense="cpu-bf16", head="cpu-padded", attention="cpu-bf16")  # the CPU kernels
cfg = GPTConfig(vocab_size=200, context_length=16, emb_dim=32, n_heads=2, n_layers=2)
mesh = Mesh(np.array(jax.devices()), ("data",))
params = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                      sharding=NamedSharding(mesh, P())), params)
ids = jax.ShapeDtypeStruct((8, 16), jnp.int32, sharding=NamedSharding(mesh, P("data")))
loss = lm_loss(cfg, jnp.bfloat16, kernels=amx)
grad = jax.jit(jax.grad(lambda p, b: loss(p, b, None, False)[0]))
print(grad.lower(params, {"inputs": ids, "targets": ids}).compile().as_text().count("all-gather("))
"""


def test_a_batch_sharded_over_devices_stays_sharded_in_the_backward():
    """The weight gradient's transposed input keeps the batch axis whole, so data parallelism
    needs no all-gather of activations (flattening it needed one per layer input)."""
    forced = "--xla_force_host_platform_device_count=4"
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {forced}".strip())
    run = subprocess.run(
        [sys.executable, "-c", SHARDED], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split()[-1] == "0"
