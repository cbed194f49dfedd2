"""The modern recipe's switches, one at a time and all together: each keeps the model causal,
KV-cache decoding equal to recomputation (window included), padded rows equal to rows alone; and
each does what it says (the window hides old keys, rotary scores depend on distance only, the
soft cap bounds the logits, document masking keeps each document to itself)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax import GPT, GPTConfig, generate, init_params
from gptjax.data.tokenizer import EOT_ID
from gptjax.model import lora
from gptjax.model.attention import rotary
from gptjax.model.params import zero_projections
from gptjax.training.cross_entropy import cross_entropy_sum, sliced_cross_entropy_sum
from gptjax.training.finetune import trainable_paths, with_adapters
from gptjax.training.steps import documents, loss_sum, muon_labels, split

BASE = GPTConfig(vocab_size=97, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0)
SWITCHES = {
    "rotary": dict(position="rotary"),
    "rmsnorm": dict(norm="rmsnorm"),
    "qk_norm": dict(qk_norm=True),
    "relu2": dict(activation="relu2"),
    "softcap": dict(logit_softcap=3.0),
    "window": dict(window=4),
    "modern": dict(
        position="rotary",
        norm="rmsnorm",
        qk_norm=True,
        activation="relu2",
        logit_softcap=5.0,
        window=6,
        qkv_bias=False,
        tie_embeddings=False,
    ),
}


@pytest.fixture(scope="module", params=list(SWITCHES))
def model(request):
    cfg = dataclasses.replace(BASE, **SWITCHES[request.param])
    return cfg, init_params(cfg, jax.random.key(0))


def tokens(B=2, T=12, seed=1, V=97):
    return jax.random.randint(jax.random.key(seed), (B, T), 0, V)


def test_causal(model):
    cfg, params = model
    x = tokens(B=1)
    forward = jax.jit(lambda x: GPT(cfg).apply({"params": params}, x))
    base = forward(x)
    for t in (0, 5, 11):
        changed = forward(x.at[0, t].set((x[0, t] + 1) % cfg.vocab_size))
        np.testing.assert_allclose(changed[:, :t], base[:, :t], atol=1e-6)
        assert not np.allclose(changed[:, t], base[:, t])


def test_cached_decode_equals_full_recompute(model):
    cfg, params = model
    x = tokens(T=12)
    gpt = GPT(cfg)
    full = gpt.apply({"params": params}, x)
    step = jax.jit(lambda x, cache, pos: gpt.apply({"params": params}, x, cache=cache, pos=pos))
    logits, cache = step(x[:, :5], gpt.init_cache(2, 12), 0)
    steps = [logits]
    for t in range(5, 12):
        logits, cache = step(x[:, t : t + 1], cache, t)
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, 1), full, rtol=1e-5, atol=1e-5)


def test_padded_rows_generate_as_they_would_alone():
    """Left padding shifts positions (rotary's angles, the window's reach) per row."""
    cfg = dataclasses.replace(BASE, **SWITCHES["modern"])
    params = init_params(cfg, jax.random.key(0))
    prompts = [[5, 9, 2, 7, 1, 3, 8], [4, 6]]
    together = generate(cfg, params, prompts, max_new_tokens=6)
    for prompt, row in zip(prompts, together, strict=True):
        alone = generate(cfg, params, [prompt], max_new_tokens=6)[0]
        np.testing.assert_array_equal(row, alone)


def test_the_window_hides_keys_older_than_it():
    cfg = dataclasses.replace(BASE, n_layers=1, window=4)  # one layer: no reach through others
    params = init_params(cfg, jax.random.key(0))
    x = tokens(B=1)
    forward = jax.jit(lambda x: GPT(cfg).apply({"params": params}, x))
    base = forward(x)
    bumped = forward(x.at[0, 3].set((x[0, 3] + 1) % cfg.vocab_size))
    np.testing.assert_allclose(bumped[:, 7:], base[:, 7:], atol=1e-6)  # 3 is outside 7's window
    assert not np.allclose(bumped[:, 6], base[:, 6])  # 6 sees 3..6


def test_rotary_scores_depend_on_distance_only():
    q, k = jax.random.normal(jax.random.key(0), (2, 1, 5, 2, 8))
    pos = jnp.arange(5)
    scores = lambda shift: jnp.einsum(
        "btnh,bsnh->bnts", rotary(q, pos + shift, 100.0), rotary(k, pos + shift, 100.0)
    )
    np.testing.assert_allclose(scores(0), scores(37), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(rotary(q, pos * 0, 100.0), q, atol=1e-6)  # position 0: as is


def test_the_soft_cap_bounds_logits_and_the_sliced_loss_agrees():
    cfg = dataclasses.replace(BASE, logit_softcap=2.0)
    params = init_params(cfg, jax.random.key(0))
    params["wte"]["embedding"] *= 50  # logits far beyond the cap without it
    logits = GPT(cfg).apply({"params": params}, tokens())
    assert 1.9 < float(jnp.abs(logits).max()) <= 2.0
    batch = {"inputs": tokens(T=8), "targets": tokens(T=8, seed=2)}
    loss = lambda chunks: jax.jit(
        jax.value_and_grad(
            lambda p: loss_sum(p, cfg, batch, None, train=False, ce_chunks=chunks)[0]
        )
    )
    (whole, g_whole), (sliced, g_sliced) = loss(1)(params), loss(4)(params)
    np.testing.assert_allclose(sliced, whole, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g_whole), jax.tree.leaves(g_sliced), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    x = jax.random.normal(jax.random.key(3), (2, 8, 32))
    head = params["wte"]["embedding"]
    capped = sliced_cross_entropy_sum(x, head, batch["targets"], jnp.float32, 2, 2.0)
    plain = cross_entropy_sum(2.0 * jnp.tanh(x @ head.T / 2.0), batch["targets"])
    np.testing.assert_allclose(capped[0], plain[0], rtol=1e-5)


def test_document_masking_keeps_each_document_to_itself():
    """With rotary positions a document's logits do not depend on where it starts, so the second
    document of a packed row computes exactly what it computes alone."""
    packed = jnp.array([[11, 12, 13, EOT_ID, 21, 22, 23, 24]])  # the EOT opens the second
    np.testing.assert_array_equal(documents(packed), [[0, 0, 0, 1, 1, 1, 1, 1]])
    cfg = dataclasses.replace(BASE, position="rotary")
    params = init_params(cfg, jax.random.key(0))
    first, second = [11, 12, 13], [96, 21, 22, 23, 24, 25]
    row, seg = jnp.array([first + second]), jnp.array([[0] * 3 + [1] * 6])
    forward = jax.jit(lambda x, seg: GPT(cfg).apply({"params": params}, x, segments=seg))
    packed = forward(row, seg)
    alone = forward(jnp.array([second]), None)
    np.testing.assert_allclose(packed[0, 3:], alone[0], rtol=1e-4, atol=1e-4)
    unmasked = forward(row, None)
    assert not np.allclose(unmasked[0, 3:], alone[0], atol=1e-3)


def test_zero_projections_start_each_block_as_the_identity():
    params = zero_projections(init_params(BASE, jax.random.key(0)))
    assert all(
        not params[f"h_{i}"][m]["c_proj"]["kernel"].any() for i in range(2) for m in ("attn", "mlp")
    )
    x = tokens()
    cut = dataclasses.replace(BASE, n_layers=1)
    one = {k: v for k, v in params.items() if k != "h_1"}
    np.testing.assert_allclose(
        GPT(BASE).apply({"params": params}, x), GPT(cut).apply({"params": one}, x), atol=1e-5
    )


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    cfg = dataclasses.replace(BASE, tie_embeddings=False)
    labels = muon_labels(init_params(cfg, jax.random.key(0)))
    assert labels["h_0"]["attn"]["c_attn"] == {"kernel": "muon", "bias": "adamw"}
    assert labels["h_1"]["mlp"]["c_proj"]["kernel"] == "muon"
    assert labels["wte"]["embedding"] == labels["lm_head"] == labels["wpe"]["embedding"] == "adamw"
    assert labels["h_0"]["ln_1"] == {"scale": "adamw", "bias": "adamw"}
    lcfg = lora.LoRAConfig(rank=2)
    params = init_params(cfg, jax.random.key(0))
    tree = with_adapters(params, lcfg, jax.random.key(1))  # what a LoRA run trains from
    labels = muon_labels(split(tree, trainable_paths("lora", cfg, lcfg))[0])
    assert labels["lora"]["h_0"]["attn"]["c_attn"] == {"lora_a": "muon", "lora_b": "muon"}


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("position", "alibi", "GPTConfig.position must be one of 'learned', 'rotary'"),
        ("norm", "batchnorm", "GPTConfig.norm must be one of"),
        ("activation", "swiglu", "GPTConfig.activation must be one of"),
        ("window", 0, "GPTConfig.window must be positive, got 0"),
        ("logit_softcap", -1.0, "GPTConfig.logit_softcap must be positive"),
    ],
)
def test_bad_switches_are_named(field, value, needle):
    with pytest.raises(ValueError, match=needle):
        dataclasses.replace(BASE, **{field: value})


def test_gpt2_has_no_switches():
    assert GPTConfig().switches() == {} and GPTConfig.preset("124M").switches() == {}
    cfg = dataclasses.replace(BASE, position="rotary", window=8)
    assert cfg.switches() == {"position": "rotary", "window": 8}


def test_lm_eval_scores_a_capped_model_by_its_capped_logits():
    from gptjax.eval.harness import score_rows

    cfg = dataclasses.replace(BASE, **SWITCHES["modern"])
    params = init_params(cfg, jax.random.key(0))
    params["lm_head"] *= 300  # logits well past the cap of 5
    x = tokens(B=1, T=9)
    inputs, targets = x[:, :-1], x[:, 1:]
    mask = jnp.arange(8)[None] >= 5  # the last 3 targets are the continuation
    got, _ = score_rows(cfg, jnp.float32, params, inputs, jnp.zeros(1, int), targets, mask, 3)
    logp = jax.nn.log_softmax(jax.jit(GPT(cfg).apply)({"params": params}, inputs), -1)
    want = jnp.take_along_axis(logp, targets[..., None], -1)[0, 5:, 0].sum()
    np.testing.assert_allclose(got[0], want, rtol=1e-5)


def test_bfloat16_compute_is_close_to_float32():
    cfg = dataclasses.replace(BASE, **SWITCHES["modern"])
    params = init_params(cfg, jax.random.key(0))
    x = tokens()
    f32 = jax.jit(GPT(cfg).apply)({"params": params}, x)
    bf16 = jax.jit(GPT(cfg, dtype=jnp.bfloat16).apply)({"params": params}, x)
    assert bf16.dtype == jnp.float32
    np.testing.assert_allclose(bf16, f32, atol=0.05)
