import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax import GPT, GPTConfig, Kernels, init_params
from gptjax.model import head
from gptjax.model.gpt import LayerNorm, gelu
from gptjax.training.cross_entropy import cross_entropy_sum

CFG = GPTConfig(vocab_size=97, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.1)


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.key(0))


def tokens(B=2, T=10, seed=1):
    return jax.random.randint(jax.random.key(seed), (B, T), 0, CFG.vocab_size)


def test_logits_shape_and_dtype(params):
    logits = GPT(CFG).apply({"params": params}, tokens())
    assert logits.shape == (2, 10, CFG.vocab_size) and logits.dtype == jnp.float32


def test_layer_norm_and_gelu():
    x = jax.random.normal(jax.random.key(0), (3, 7)) * 5 + 2
    y = LayerNorm().apply({"params": {"scale": jnp.ones(7), "bias": jnp.zeros(7)}}, x)
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(-1), 1, atol=1e-3)
    v = jnp.array([-3.0, 0.0, 1.0, 3.0])
    ref = 0.5 * v * (1 + jnp.tanh(jnp.sqrt(2 / jnp.pi) * (v + 0.044715 * v**3)))
    np.testing.assert_allclose(gelu(v), ref, rtol=1e-6, atol=1e-6)


def test_causal(params):
    x = tokens(B=1)
    forward = jax.jit(GPT(CFG).apply)
    base = forward({"params": params}, x)
    for t in (0, 4, 9):
        changed = forward({"params": params}, x.at[0, t].set((x[0, t] + 1) % 97))
        np.testing.assert_allclose(changed[:, :t], base[:, :t], atol=1e-6)
        assert not np.allclose(changed[:, t], base[:, t])


def test_head_is_tied_to_wte(params):
    bumped = jax.tree.map(lambda x: x, params)
    bumped["wte"] = {"embedding": params["wte"]["embedding"].at[5].add(1.0)}
    a = GPT(CFG).apply({"params": params}, tokens())
    b = GPT(CFG).apply({"params": bumped}, tokens())
    assert not np.allclose(a[..., 5], b[..., 5])  # token 5's logit moved with its embedding


def test_dropout_only_when_training(params):
    x = tokens()
    model = GPT(CFG)
    a = model.apply({"params": params}, x)
    np.testing.assert_array_equal(a, model.apply({"params": params}, x, deterministic=True))
    rngs = {"dropout": jax.random.key(3)}
    b = model.apply({"params": params}, x, deterministic=False, rngs=rngs)
    assert not np.allclose(a, b)


def test_bfloat16_compute_is_close_and_keeps_float32_params_and_logits(params):
    x = tokens()
    f32 = GPT(CFG).apply({"params": params}, x)
    variables = jax.jit(GPT(CFG, dtype=jnp.bfloat16).init)(jax.random.key(0), x)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
    bf16 = jax.jit(GPT(CFG, dtype=jnp.bfloat16).apply)({"params": params}, x)
    assert bf16.dtype == jnp.float32
    np.testing.assert_allclose(bf16, f32, atol=0.05)


def test_cached_decode_equals_full_recompute(params):
    x = tokens(T=12)
    model = GPT(CFG)
    full = jax.jit(model.apply)({"params": params}, x)
    cache = model.init_cache(2, 12)
    step = jax.jit(lambda x, cache, pos: model.apply({"params": params}, x, cache=cache, pos=pos))
    logits, cache = step(x[:, :5], cache, 0)
    steps = [logits]
    for t in range(5, 12):
        logits, cache = step(x[:, t : t + 1], cache, t)  # one program for every position
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, 1), full, rtol=1e-5, atol=1e-5)


def test_torch_init_draws_like_pytorch_defaults():
    """The book's model: N(0, 1) embeddings, U(+-1/sqrt(fan_in)) Linear weights and biases."""
    cfg = GPTConfig(
        vocab_size=500,
        context_length=64,
        emb_dim=64,
        n_heads=4,
        n_layers=2,
        qkv_bias=False,
        tie_embeddings=False,
    )
    p = init_params(cfg, jax.random.key(0), init="torch")
    assert abs(float(np.std(p["wte"]["embedding"])) - 1.0) < 0.02
    assert abs(float(np.std(p["wpe"]["embedding"])) - 1.0) < 0.05
    fc, proj = p["h_0"]["mlp"]["c_fc"], p["h_0"]["mlp"]["c_proj"]
    for leaf, fan_in in (
        (fc["kernel"], 64),
        (fc["bias"], 64),
        (proj["kernel"], 256),
        (p["lm_head"], 64),
    ):
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(leaf).max() <= bound and np.abs(leaf).max() > 0.95 * bound
    assert "bias" not in p["h_0"]["attn"]["c_attn"]
    np.testing.assert_array_equal(p["h_1"]["ln_2"]["scale"], np.ones(64))
    with pytest.raises(ValueError, match="unknown init 'xavier'"):
        init_params(cfg, jax.random.key(0), init="xavier")


@pytest.mark.parametrize("B", [2, 8], ids=["few-rows", "many-rows"])  # logits / head padded
@pytest.mark.parametrize("route", ["cpu", "padded"])
def test_padded_vocabulary_changes_no_logit_no_loss_and_no_gradient(params, B, route):
    """V = 97: the policy's head "cpu" (float32 on a CPU) computes 97 columns through
    kernels.cpu.head; "padded" (GPUs, TPUs) computes a matmul of many rows as 128, the extra 31
    -inf. Checkpoints keep 97 rows."""
    x, y = tokens(B=B, T=16), tokens(B=B, T=16, seed=2)
    logits = APPLY(GPT(CFG, kernels=Kernels()), params, x)
    grad = lambda kernels: GRAD(params, GPT(CFG, kernels=kernels, padded_logits=True), x, y)
    want_grads = grad(Kernels())  # the reference: XLA's product, unpadded (compiled once a B)
    padded = APPLY(GPT(CFG, kernels=Kernels(head=route), padded_logits=True), params, x)
    V = 128 if route == "padded" and B * 16 >= head.VOCAB_MULTIPLE else 97
    assert params["wte"]["embedding"].shape == (97, 32) and padded.shape == (B, 16, V)
    np.testing.assert_allclose(padded[..., :97], logits, rtol=1e-6, atol=1e-6)
    assert np.all(padded[..., 97:] == -np.inf)
    want = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[..., None], -1).sum()
    np.testing.assert_allclose(cross_entropy_sum(padded, y)[0], want, rtol=1e-6)
    for g, w in zip(
        jax.tree.leaves(grad(Kernels(head=route))), jax.tree.leaves(want_grads), strict=True
    ):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6 * np.abs(w).max())  # sums of +-10


def loss_of(params, model, x=None, y=None, **kw):
    x = tokens(T=16) if x is None else x
    y = tokens(T=16, seed=3) if y is None else y
    return cross_entropy_sum(model.apply({"params": params}, x, **kw), y)[0]


# one jitted function each, so a model and shapes seen before are not compiled again
APPLY = jax.jit(lambda model, params, x: model.apply({"params": params}, x), static_argnums=0)
GRAD = jax.jit(jax.grad(loss_of), static_argnums=1)


def test_gradient_fence_stores_each_blocks_gradient_and_changes_no_value(params):
    grad_of = lambda fence: jax.jit(
        jax.value_and_grad(lambda p: loss_of(p, GPT(CFG, kernels=Kernels(fence=fence))))
    )
    fenced = grad_of("cpu")
    # One conditional per block: XLA keeps it, so each gradient is stored, not re-added.
    assert fenced.lower(params).compile().as_text().count("conditional(") == CFG.n_layers
    assert "conditional(" not in grad_of("none").lower(params).compile().as_text()
    (want, want_g), (got, got_g) = grad_of("none")(params), fenced(params)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(got_g), jax.tree.leaves(want_g), strict=True):
        assert np.max(np.abs(a - b)) <= 1e-6 * max(1.0, np.max(np.abs(b)))


@pytest.mark.parametrize("remat", ["block", "dots"])
def test_remat_equals_no_remat(params, remat):
    rng = {"dropout": jax.random.key(4)}  # with dropout: remat must redraw the same masks
    grad = lambda m: jax.jit(
        jax.value_and_grad(lambda p: loss_of(p, m, deterministic=False, rngs=rng))
    )(params)
    (want, want_g), (got, got_g) = grad(GPT(CFG)), grad(GPT(CFG, remat=remat))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # Gradients differ only by the summation order of the recomputed fusions.
    for a, b in zip(jax.tree.leaves(got_g), jax.tree.leaves(want_g), strict=True):
        assert np.max(np.abs(a - b)) <= 1e-6 * max(1.0, np.max(np.abs(b)))
