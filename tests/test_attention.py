"""Each attention step reduces to the one before it under matching weights, and all are causal."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax.kernels import Kernels, resolve
from gptjax.kernels.policy import cudnn_works
from gptjax.model.attention import (
    CausalAttention,
    KVCache,
    MultiHeadAttention,
    SelfAttention,
    simple_attention,
)

B, T, D = 2, 6, 8


@pytest.fixture
def x():
    return jax.random.normal(jax.random.key(0), (B, T, D))


def dense(kernel, bias=None):
    return {"kernel": kernel} if bias is None else {"kernel": kernel, "bias": bias}


def test_simple_attention_is_a_softmax_mix():
    x = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    w = jax.nn.softmax(x @ x.T, axis=-1)
    np.testing.assert_allclose(simple_attention(x), w @ x, rtol=1e-6)
    np.testing.assert_allclose(simple_attention(x).sum(), x.sum() * 1.0, rtol=0.5)  # a mix


def test_self_attention_reduces_to_simple_attention(x):
    # (x Wq)(x Wk)^T / sqrt(D) = x x^T when Wq = Wk = D^(1/4) I; Wv = I returns the inputs.
    eye = jnp.eye(D)
    params = {
        "W_query": dense(eye * D**0.25),
        "W_key": dense(eye * D**0.25),
        "W_value": dense(eye),
    }
    out = SelfAttention(d_out=D).apply({"params": params}, x)
    np.testing.assert_allclose(out, simple_attention(x), rtol=1e-5, atol=1e-6)


def test_causal_attention_is_self_attention_over_the_prefix(x):
    params = SelfAttention(d_out=5).init(jax.random.key(1), x)
    causal = CausalAttention(d_out=5).apply(params, x)
    for t in range(T):
        prefix = SelfAttention(d_out=5).apply(params, x[:, : t + 1])
        np.testing.assert_allclose(causal[:, t], prefix[:, t], rtol=1e-5, atol=1e-6)


def test_causal_attention_dropout_only_when_training(x):
    module = CausalAttention(d_out=5, drop_rate=0.5)
    params = module.init(jax.random.key(1), x)
    eval_out = module.apply(params, x)
    np.testing.assert_array_equal(eval_out, module.apply(params, x, deterministic=True))
    train_out = module.apply(params, x, deterministic=False, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(train_out, eval_out)


def mha_params(wq, wk, wv, wo):
    qkv = jnp.concatenate([wq, wk, wv], axis=1)
    return {"c_attn": dense(qkv), "c_proj": dense(wo, jnp.zeros(wo.shape[1]))}


def test_one_head_equals_causal_attention(x):
    causal = CausalAttention(d_out=D)
    p = causal.init(jax.random.key(3), x)["params"]
    wq, wk, wv = (p[n]["kernel"] for n in ("W_query", "W_key", "W_value"))
    mha = MultiHeadAttention(n_heads=1, qkv_bias=False)
    out, _ = mha.apply({"params": mha_params(wq, wk, wv, jnp.eye(D))}, x)
    np.testing.assert_allclose(out, causal.apply({"params": p}, x), rtol=1e-5, atol=1e-6)


def test_heads_are_causal_attentions_on_slices_of_the_projections(x):
    N, H = 2, D // 2
    keys = jax.random.split(jax.random.key(4), 4)
    wq, wk, wv, wo = (jax.random.normal(k, (D, D)) * 0.3 for k in keys)
    mha = MultiHeadAttention(n_heads=N, qkv_bias=False)
    out, _ = mha.apply({"params": mha_params(wq, wk, wv, wo)}, x)
    heads = []
    for n in range(N):
        cols = slice(n * H, (n + 1) * H)
        p = {
            "W_query": dense(wq[:, cols]),
            "W_key": dense(wk[:, cols]),
            "W_value": dense(wv[:, cols]),
        }
        heads.append(CausalAttention(d_out=H).apply({"params": p}, x))
    np.testing.assert_allclose(out, jnp.concatenate(heads, -1) @ wo, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "module",
    [CausalAttention(d_out=D), MultiHeadAttention(n_heads=2)],
    ids=["causal", "multi-head"],
)
def test_changing_token_t_never_changes_outputs_before_t(module, x):
    params = module.init(jax.random.key(5), x)
    run = lambda inp: jax.tree.leaves(module.apply(params, inp))[0]
    base = run(x)
    for t in range(T):
        changed = run(x.at[:, t].add(3.0))
        np.testing.assert_array_equal(changed[:, :t], base[:, :t])
        assert not np.allclose(changed[:, t:], base[:, t:])


def test_cached_decoding_equals_full_attention(x):
    mha = MultiHeadAttention(n_heads=2)
    params = mha.init(jax.random.key(6), x)
    full, _ = mha.apply(params, x)
    cache = KVCache.zeros(B, T, 2, D // 2)
    _, cache = mha.apply(params, x[:, :3], cache=cache, pos=0)
    outs = []
    for t in range(3, T):
        o, cache = mha.apply(params, x[:, t : t + 1], cache=cache, pos=t)
        outs.append(o)
    np.testing.assert_allclose(jnp.concatenate(outs, 1), full[:, 3:], rtol=1e-5, atol=1e-6)


# Every kernel a CPU can run, chosen by the policy: XLA's; Pallas's Triton kernel (interpreted
# on CPU); the CPU's grouped kernel (kernels/cpu.py, here in float32). Each must equal the
# reference einsums.
KERNELS = ["xla", "pallas", "cpu-bf16"]


def mha_with(impl):
    return MultiHeadAttention(n_heads=2, kernels=Kernels(attention=impl))


@pytest.mark.parametrize("impl", KERNELS)
def test_fused_kernels_equal_the_reference_in_training(impl):
    x = jax.random.normal(jax.random.key(7), (B, 16, D))
    params = mha_with("reference").init(jax.random.key(8), x)
    loss = lambda m: lambda p, x: jnp.sum(jnp.sin(m.apply(p, x)[0]))
    ref, ref_grads = jax.value_and_grad(loss(mha_with("reference")), argnums=(0, 1))(params, x)
    out, grads = jax.value_and_grad(loss(mha_with(impl)), argnums=(0, 1))(params, x)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", KERNELS)
def test_fused_kernels_equal_the_reference_in_prefill_and_decode(impl, x):
    modules = [mha_with("reference"), mha_with(impl)]
    params = modules[0].init(jax.random.key(9), x)
    pads = jnp.array([0, 2])  # row 1 is left-padded: its first two keys are hidden
    key_mask = jnp.arange(T)[None, :] >= pads[:, None]
    for pos in (0, jnp.array([0, 1])):  # one position for all rows, or one per row

        def decode(m, pos=pos):
            cache, outs = KVCache.zeros(B, T, 2, D // 2), []
            for t0, t1 in ((0, 3), (3, 4), (4, 5)):  # a prefill, then one token at a time
                o, cache = m.apply(
                    params, x[:, t0:t1], cache=cache, pos=pos + t0, key_mask=key_mask
                )
                outs.append(o)
            return jnp.concatenate(outs, 1)

        ref, out = (decode(m) for m in modules)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_unknown_implementation_is_named():
    with pytest.raises(ValueError, match="unknown attention='flash'; choices: reference, xla"):
        mha_with("flash")
    with pytest.raises(ValueError, match="unknown attention implementation 'flash'"):
        resolve(dtype=jnp.float32, attention="flash")


def test_cudnn_probe_failure_falls_back_with_one_line(capsys):
    cudnn_works.cache_clear()
    if jax.default_backend() == "gpu":
        pytest.skip("the probe's failure path needs a machine without cuDNN")
    assert cudnn_works() is False
    assert "cuDNN attention unavailable" in capsys.readouterr().err
    assert resolve(dtype=jnp.float32, attention="cudnn").attention == "xla"  # no float32 kernel
    with pytest.raises(ValueError, match="attention=cudnn cannot run on cpu; choices there"):
        resolve(dtype=jnp.bfloat16, attention="cudnn")


def test_the_tpu_flash_kernel_equals_the_reference():
    """Pallas's TPU flash attention (the TPU's `auto`): natively on a TPU, else in Pallas's TPU
    interpret mode; forward and gradients equal XLA's attention."""
    import contextlib

    from jax.experimental.pallas import tpu as pltpu

    from gptjax.model.attention import tpu_flash_attention, tpu_flash_fits

    assert tpu_flash_fits(128) and tpu_flash_fits(1024)
    assert not tpu_flash_fits(64) and not tpu_flash_fits(200)
    q, k, v = jax.random.normal(jax.random.key(3), (3, 1, 128, 2, 64))
    xla = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True)
    on_tpu = jax.default_backend() == "tpu"
    with contextlib.nullcontext() if on_tpu else pltpu.force_tpu_interpret_mode():
        out = tpu_flash_attention(q, k, v)
        grads = jax.grad(lambda *a: jnp.sum(jnp.sin(tpu_flash_attention(*a))), (0, 1, 2))(q, k, v)
    want = jax.grad(lambda *a: jnp.sum(jnp.sin(xla(*a))), (0, 1, 2))(q, k, v)
    np.testing.assert_allclose(out, xla(q, k, v), atol=1e-5)
    for g, w in zip(grads, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5)
