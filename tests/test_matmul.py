"""bf16 matmuls for CPUs (`gptjax.model.matmul`): the values and gradients of the plain dots."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax.accelerator import cpu_flags
from gptjax.model.matmul import matmul, wanted


@pytest.mark.parametrize("w_rows_out", [False, True])
def test_matmul_and_its_gradients_equal_the_plain_dots(w_rows_out):
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (6, 16)).astype(jnp.bfloat16)
    w = jax.random.normal(keys[1], (24, 16) if w_rows_out else (16, 24)).astype(jnp.bfloat16)
    # A cotangent bf16 holds exactly: the VJP rounds it to bf16 before its dots.
    probe = jax.random.normal(keys[2], (6, 24)).astype(jnp.bfloat16).astype(jnp.float32)
    spec = "mk,nk->mn" if w_rows_out else "mk,kn->mn"
    plain = lambda x, w: jnp.einsum(spec, x.astype(jnp.float32), w.astype(jnp.float32))
    ours = lambda x, w: matmul(x, w, w_rows_out, jnp.float32)
    # Taken for bf16 on a CPU with AMX (where it was measured), never for float32.
    assert wanted(x, w) == ("amx_bf16" in cpu_flags()) and not wanted(x.astype(jnp.float32), w)
    np.testing.assert_allclose(ours(x, w), plain(x, w), rtol=1e-5, atol=1e-5)
    loss = lambda f: lambda x, w: jnp.sum(f(x, w) * probe)
    got = jax.grad(loss(ours), (0, 1))(x, w)
    want = jax.grad(loss(plain), (0, 1))(x.astype(jnp.float32), w.astype(jnp.float32))
    for g, r in zip(got, want, strict=True):
        assert g.dtype == jnp.bfloat16 and g.shape == r.shape
        np.testing.assert_allclose(g.astype(jnp.float32), r, rtol=1e-2, atol=1e-2)
    # A bf16 result is the float32 one rounded once.
    np.testing.assert_array_equal(
        matmul(x, w, w_rows_out, jnp.bfloat16), ours(x, w).astype(jnp.bfloat16)
    )
