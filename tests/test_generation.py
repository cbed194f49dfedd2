"""The jitted KV-cache generator agrees token for token with a naive full-recompute loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from gptjax import GPT, GPTConfig, generate, init_params
from gptjax.inference.generation import check_sampling, next_token

CFG = GPTConfig(vocab_size=61, context_length=24, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)


@pytest.fixture(scope="module")
def params():
    # Larger weights than the init so the distribution is peaked and samples are varied.
    p = init_params(CFG, jax.random.key(0))
    return jax.tree.map(lambda x: x * 3.0, p)


@jax.jit
def full_recompute_logits(params, seq, t):
    """Logits [B, V] of position t - 1, recomputing every position of seq [B, context_length]
    without a cache. Its tokens from t on are padding, which a causal model does not read: one
    compilation serves every length."""
    return lax.dynamic_index_in_dim(GPT(CFG).apply({"params": params}, seq), t - 1, 1, False)


def naive_generate(params, prompt, n, rng, temperature=0.0, top_k=None, top_p=None, eos=None):
    """The reference: recompute the whole sequence for every new token, no cache. Row b's n-th
    token is drawn with fold_in(fold_in(rng, b), n), as documented by `generate`."""
    sampling = check_sampling(CFG, temperature, top_k, top_p)
    prompt = np.asarray(prompt, np.int32)
    (B, T0), eos_id = prompt.shape, -1 if eos is None else eos
    seq = np.zeros((B, CFG.context_length), np.int32)
    seq[:, :T0] = prompt
    done = np.zeros(B, bool)
    rows = [jax.random.fold_in(rng, b) for b in range(B)]
    for i in range(n):
        logits = full_recompute_logits(params, seq, T0 + i)
        keys = jnp.stack([jax.random.fold_in(k, i) for k in rows])
        tok = next_token(
            logits, keys, sampling, jnp.float32(temperature or 1.0), jnp.float32(top_p or 1.0)
        )
        tok = np.where(done, eos_id, tok)
        done = done | (tok == eos_id)
        seq[:, T0 + i] = tok
    return seq[:, : T0 + n]


PROMPT = np.array([[3, 14, 15, 9], [2, 6, 5, 35]])


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(temperature=1.0),
        dict(temperature=0.7, top_k=5),
        dict(temperature=1.3, top_p=0.8),
        dict(temperature=1.0, top_k=10, top_p=0.5),
    ],
    ids=["greedy", "sample", "top-k", "top-p", "top-k+top-p"],
)
def test_cache_generation_matches_naive_loop(params, kw):
    rng = jax.random.key(7)
    out = generate(CFG, params, PROMPT, max_new_tokens=12, rng=rng, **kw)
    ref = naive_generate(params, PROMPT, 12, rng, **kw)
    assert out.shape == (2, 16) and out.dtype == jnp.int32
    np.testing.assert_array_equal(out, ref)


def test_sampling_depends_on_the_key(params):
    a = generate(CFG, params, PROMPT, max_new_tokens=12, temperature=1.0, rng=jax.random.key(1))
    b = generate(CFG, params, PROMPT, max_new_tokens=12, temperature=1.0, rng=jax.random.key(2))
    assert not np.array_equal(a, b)


def test_top_k_one_and_tiny_top_p_are_greedy(params):
    greedy = generate(CFG, params, PROMPT, max_new_tokens=8)
    for kw in (dict(top_k=1), dict(top_p=1e-6)):
        out = generate(CFG, params, PROMPT, max_new_tokens=8, temperature=2.0, **kw)
        np.testing.assert_array_equal(out, greedy)


def test_eos_repeats_after_it_is_emitted(params):
    greedy = np.asarray(generate(CFG, params, PROMPT, max_new_tokens=10))
    eos = int(greedy[0, 6])  # row 0 emits this at step 3
    out = np.asarray(generate(CFG, params, PROMPT, max_new_tokens=10, eos_id=eos))
    np.testing.assert_array_equal(
        out, naive_generate(params, PROMPT, 10, jax.random.key(0), eos=eos)
    )
    first = 4 + list(out[0, 4:]).index(eos)
    assert (out[0, first:] == eos).all()


def test_long_prompt_is_cut_to_fit(params):
    long = np.arange(40).reshape(1, 40) % CFG.vocab_size
    out = generate(CFG, params, long, max_new_tokens=4)
    assert out.shape == (1, CFG.context_length)
    np.testing.assert_array_equal(out[:, :20], long[:, -20:])
    np.testing.assert_array_equal(out, naive_generate(params, long[:, -20:], 4, jax.random.key(0)))


def test_bad_requests_are_clear_errors(params):
    with pytest.raises(ValueError, match="max_new_tokens=24 does not fit"):
        generate(CFG, params, PROMPT, max_new_tokens=24)
    with pytest.raises(ValueError, match="temperature"):
        generate(CFG, params, PROMPT, max_new_tokens=2, temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        generate(CFG, params, PROMPT, max_new_tokens=2, temperature=1.0, top_p=0.0)
    with pytest.raises(ValueError, match="prompt"):
        generate(CFG, params, np.zeros((1, 0), np.int32), max_new_tokens=2)


@pytest.mark.parametrize("kw", [dict(), dict(temperature=1.0, top_k=8)], ids=["greedy", "sampled"])
def test_ragged_prompts_equal_each_prompt_alone(params, kw):
    prompts = [[3, 14, 15, 9, 2, 6], [5], [35, 8, 9]]
    keys = jax.random.split(jax.random.key(3), 3)
    out = generate(CFG, params, prompts, max_new_tokens=9, rng=keys, eos_id=7, **kw)
    assert isinstance(out, list) and [len(r) for r in out] == [15, 10, 12]
    for i, p in enumerate(prompts):
        alone = generate(CFG, params, [p], max_new_tokens=9, rng=keys[i : i + 1], eos_id=7, **kw)
        np.testing.assert_array_equal(out[i], alone[0])
        assert out[i][: len(p)].tolist() == p
    if not kw:  # greedy needs no key: the rows also equal the naive loop on each prompt alone
        for i, p in enumerate(prompts):
            ref = naive_generate(params, [p], 9, jax.random.key(0), eos=7)
            np.testing.assert_array_equal(out[i], ref[0])


def test_ragged_long_prompt_is_cut_per_row(params):
    long, short = list(np.arange(30) % CFG.vocab_size), [4, 5]
    out = generate(CFG, params, [long, short], max_new_tokens=6)
    assert out[0][:18].tolist() == long[-18:] and len(out[0]) == 24 and len(out[1]) == 8
